import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain } from './helpers/client.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('/health says which bus serves the instance', async (t) => {
  const memory = await build(t, {})
  const onRedis = await build(t, { redis: redis.url })
  for (const [app, bus] of [[memory, 'memory'], [onRedis, 'redis']] as const) {
    const response = await fetch(`${app.url}/health`)
    t.equal(response.status, 200)
    t.same(await response.json(), {
      status: 'ok',
      bus,
      ...bus === 'redis' && { topology: 'standalone' },
      checks: bus === 'memory' ? { bus: 'running' } : { publisher: 'ready', subscriber: 'ready' }
    }, 'the topology only for the Redis bus')
  }
})

t.test('while Redis is down, /health answers 503 with the reason, publish answers 503, and both recover', async (t) => {
  const { url, connect, publish } = await build(t, { redis: redis.url })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')

  await redis.kill()
  let health = await fetch(`${url}/health`)
  for (let i = 0; i < 100 && health.status === 200; i++) {
    await sleep(20)
    health = await fetch(`${url}/health`)
  }
  t.equal(health.status, 503)
  t.match(await health.json(), { status: 'unavailable', bus: 'redis', reason: /Redis (publisher|subscriber) connection is/ })

  const refused = await publish({ channel: 'news', data: 'lost' })
  t.equal(refused.status, 503, 'a publish that cannot reach Redis is refused, never accepted')
  t.match(await refused.json(), { code: 'FRB_BUS_UNAVAILABLE' })

  await redis.start()
  const deadline = Date.now() + 10_000
  while ((await fetch(`${url}/health`)).status !== 200 && Date.now() < deadline) await sleep(50)
  t.equal((await fetch(`${url}/health`)).status, 200, 'healthy again once Redis is back')
  t.equal((await publish({ channel: 'news', data: 'back' })).status, 202)
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'news', data: 'back' }], 'the channel was subscribed again')
})

t.test('startup fails with a clear error when Redis cannot be reached in time', async (t) => {
  const Fastify = (await import('fastify')).default
  const redisBroadcast = (await import('../plugin/index.js')).default
  const { freePort } = await import('./helpers/redis-server.js')
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: `redis://127.0.0.1:${await freePort()}`, redisReadyTimeout: 300 })
  await t.rejects(async () => await app.ready(), { code: 'FRB_BUS_UNAVAILABLE', message: /did not become ready within 300 ms/ })
  await app.close()
})
