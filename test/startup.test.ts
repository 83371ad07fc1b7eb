import t from 'tap'
import Fastify from 'fastify'
import fastifyRedis from '@fastify/redis'
import { Redis as Redis5 } from 'ioredis5'
import redisBroadcast from '../plugin/index.js'
import { readyTimeout } from '../plugin/bus/create.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import type { LogLine } from './helpers/app.js'

// Mistakes a new user makes at start-up, each answered with what to do, never with a silent
// fallback to somewhere else.

const redis = await startRedis()
t.teardown(() => redis.stop())

function loggedApp (options: Record<string, unknown> = {}): { app: ReturnType<typeof Fastify>, logs: LogLine[] } {
  const logs: LogLine[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { logs.push(JSON.parse(line) as LogLine) } } }, ...options })
  return { app, logs }
}

t.test('a client of another ioredis major is used as a client, not spread as options', async (t) => {
  const client = new Redis5(redis.url)
  t.teardown(() => client.disconnect())
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(redisBroadcast, { redis: client as never })
  await app.ready()
  const result = await app.broadcast('hi', { channel: 'five' })
  t.equal(result.offset, 1)
  t.equal(await redis.client().exists('frb:h:stream:five'), 1, 'the history is in the Redis the client names')
})

t.test('registered before @fastify/redis: start-up fails saying what to do', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(redisBroadcast)
  await app.register(fastifyRedis, { url: redis.url })
  await t.rejects(async () => await app.ready(), { code: 'FRB_REGISTERED_BEFORE_REDIS', message: /register @fastify\/redis first/ })
})

t.test('@fastify/redis registered first is used; a namespaced client is chosen by name', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(fastifyRedis, { url: redis.url, namespace: 'hub' })
  await app.register(fastifyRedis, { url: redis.url, namespace: 'cache', db: 3 })
  await app.register(redisBroadcast, { redisNamespace: 'hub' })
  await app.ready()
  t.equal((await app.broadcast(1, { channel: 'named' })).offset, 1)
  t.equal(await redis.client().exists('frb:h:stream:named'), 1, 'the hub client\'s database (0)')

  const wrong = Fastify({ logger: false })
  t.teardown(() => wrong.close())
  await wrong.register(fastifyRedis, { url: redis.url, namespace: 'hub' })
  await t.rejects(async () => await wrong.register(redisBroadcast, { redisNamespace: 'nope' }).ready(),
    { code: 'FRB_INVALID_OPTION', message: /redisNamespace/ })
  const none = Fastify({ logger: false })
  t.teardown(() => none.close())
  await t.rejects(async () => await none.register(redisBroadcast, { redisNamespace: 'hub' }).ready(),
    { code: 'FRB_INVALID_OPTION', message: /needs @fastify\/redis/ })
})

t.test('a Redis that is down at start-up fails with the plugin\'s message before Fastify\'s plugin time-out, one log line a second at most', async (t) => {
  const port = await freePort()
  const { app, logs } = loggedApp({ pluginTimeout: 3000 })
  t.teardown(() => app.close())
  await app.register(redisBroadcast, { redis: `redis://127.0.0.1:${port}` })
  const started = Date.now()
  await t.rejects(async () => await app.ready(), { code: 'FRB_BUS_UNAVAILABLE', message: new RegExp(`Redis at 127.0.0.1:${port} did not become ready within 2000 ms`) })
  const elapsed = Date.now() - started
  const errors = logs.filter((line) => /redis connection error/.test(line.msg))
  t.ok(errors.length >= 1 && errors.length <= Math.ceil(elapsed / 1000) + 1, `${errors.length} error lines in ${elapsed} ms`)
  t.notOk(errors.some((line) => 'err' in line), 'no stack traces')
})

t.test('start-up waits for Redis redisReadyTimeout, within Fastify\'s pluginTimeout', async (t) => {
  t.equal(readyTimeout(5000, undefined), 5000)
  t.equal(readyTimeout(5000, 0), 5000, 'pluginTimeout 0: no limit of Fastify\'s')
  t.equal(readyTimeout(20000, 10000), 9000, 'a second before Fastify would give up')
  t.equal(readyTimeout(300, 10000), 300)
})
