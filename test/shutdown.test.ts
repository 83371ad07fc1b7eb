import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import redisBroadcast from '../plugin/index.js'
import { createServer, type RequestListener } from 'node:http'
import { connect as tcpConnect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { plain, refusedUpgrade, TestClient, type Frame } from './helpers/client.js'
import { RawSocket } from './helpers/raw-socket.js'
import { busOptions, BUS_KINDS } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

async function pluginConnections (): Promise<string[]> {
  const list = await admin.client('LIST') as string
  return list.split('\n').filter((line) => line.includes('name=fastify-redis-broadcast'))
}

for (const kind of BUS_KINDS) {
  t.test(`on the ${kind} bus, app.close() closes every socket with 1001`, async (t) => {
    const app = Fastify({ logger: false })
    await app.register(redisBroadcast, busOptions(kind, redis.url))
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as { port: number }
    const clients = await Promise.all(Array.from({ length: 5 }, async () => await TestClient.connect(`ws://127.0.0.1:${port}/ws?channels=news`)))
    await Promise.all(clients.map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
    if (kind === 'redis') t.equal((await pluginConnections()).length, 2, 'a publisher and a subscriber connection while running')
    await app.close()
    for (const client of clients) t.same(await client.closed, { code: 1001, reason: 'server shutting down' })
    t.equal(app.broadcastConnections.size, 0, 'the connection set is empty')
    if (kind === 'redis') t.same(await pluginConnections(), [], 'both Redis connections the plugin made are closed')
  })

  t.test(`on the ${kind} bus, a closed app leaves no open handle behind`, async (t) => {
    const script = fileURLToPath(new URL('./fixtures/close-exits.mjs', import.meta.url))
    const env: Record<string, string | undefined> = { ...process.env, REDIS_URL: kind === 'redis' ? redis.url : '' }
    delete env.NODE_V8_COVERAGE
    const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'inherit'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    // A hang detector, not a timing: generous, so a loaded machine's slow start never reads as a hang.
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    const [code, signal] = await once(child, 'exit') as [number | null, string | null]
    clearTimeout(timer)
    t.equal(signal, null, 'the process exited by itself, without being killed')
    t.equal(code, 0)
    t.equal(output.trim(), 'closed 1001')
  })
}

t.test('a Redis client passed in by the user is used and never closed', async (t) => {
  const client = redis.client()
  await client.ping()
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: client })
  await app.ready()
  await app.broadcast('hello')
  await app.close()
  t.equal(client.status, 'ready', 'the user\'s client is still connected')
  t.equal(await client.ping(), 'PONG')
})

t.test('an @fastify/redis client already on the instance is picked up', async (t) => {
  const client = redis.client()
  const app = Fastify({ logger: false })
  app.decorate('redis', client as never)
  await app.register(redisBroadcast)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const health = await (await fetch(`http://127.0.0.1:${port}/health`)).json()
  t.same(health, { status: 'ok', bus: 'redis', topology: 'standalone', checks: { publisher: 'ready', subscriber: 'ready' } })
  await app.close()
  t.equal(client.status, 'ready', 'and it is left open for its owner to close')
})

t.test('ioredis options are accepted in place of a URL', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: { host: '127.0.0.1', port: redis.port } })
  await app.ready()
  t.equal((await app.inject({ url: '/health' })).json().bus, 'redis')
  await app.close()
  t.same(await pluginConnections(), [], 'and the clients it made from them are closed')
})

t.test('app.close() with 100 clients on 127.0.0.1 and ::1, one never answering: 1001, a bounded wait, 503 meanwhile, nothing left open', async (t) => {
  const closeTimeout = 2000
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: redis.url, closeTimeout })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  // A second listener on ::1, wired the way Fastify wires one for a host name that resolves to both.
  const v6 = createServer(app.server.listeners('request')[0] as RequestListener)
  v6.on('upgrade', (...args) => app.server.emit('upgrade', ...args))
  v6.listen(0, '::1')
  await once(v6, 'listening')
  const v6Port = (v6.address() as { port: number }).port
  app.server.once('close', () => v6.close())

  const clients = await Promise.all(Array.from({ length: 99 }, async (_, i) => await TestClient.connect(i % 2 === 0
    ? `ws://127.0.0.1:${port}/ws?channels=news`
    : `ws://[::1]:${v6Port}/ws?channels=news`)))
  await Promise.all(clients.map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
  const deaf = await RawSocket.open(port, '/ws?channels=news')
  t.equal(app.broadcastConnections.size, 100)

  const started = Date.now()
  const closing = app.close()
  await sleep(200)
  t.equal((await refusedUpgrade(`ws://127.0.0.1:${port}/ws`)).status, 503, 'an upgrade during shutdown gets 503 on 127.0.0.1')
  t.equal((await refusedUpgrade(`ws://[::1]:${v6Port}/ws`)).status, 503, 'and on ::1')
  await closing
  const took = Date.now() - started
  t.ok(took >= closeTimeout - 50 && took <= closeTimeout + 1000, `close resolved in ${took} ms (close timeout ${closeTimeout} ms)`)
  const codes = await Promise.all(clients.map(async (c) => (await c.closed).code))
  t.same([...new Set(codes)], [1001], 'the 99 responsive clients got 1001')
  t.equal(await deaf.closeCode(), 1001, 'the deaf one was sent 1001 too')
  await deaf.ended
  t.pass('and was cut off after the close timeout')
  t.equal(app.broadcastConnections.size, 0)
  for (const [host, listening] of [['127.0.0.1', port], ['::1', v6Port]] as const) {
    const probe = tcpConnect({ host, port: listening })
    const [err] = await once(probe, 'error').catch((e: unknown) => [e]) as [NodeJS.ErrnoException]
    t.equal(err.code, 'ECONNREFUSED', `nothing listens on ${host} any more`)
  }
})

t.test('an upgrade still in its hooks while app.close() waits on others is closed with 1001 and does not hold the close', async (t) => {
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  let entered = (): void => {}
  const inHook = new Promise<void>((resolve) => { entered = resolve })
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, {
    closeTimeout: 1000,
    authorize: async (request) => {
      if (request.headers['x-late'] !== undefined) {
        entered()
        await gate
      }
      return { identity: 'someone', channels: ['news'] }
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  // A client that never answers the close frame keeps the close waiting for closeTimeout.
  const deaf = await RawSocket.open(port, '/ws?channels=news')
  const late = TestClient.connect(`ws://127.0.0.1:${port}/ws?channels=news`, { headers: { 'x-late': '1' } })
  await inHook
  const started = Date.now()
  const closing = app.close()
  await sleep(100)
  release()
  const client = await late
  t.equal((await client.closed).code, 1001, 'the late client is told the server is going away')
  await closing
  t.ok(Date.now() - started < 2500, `closed in ${Date.now() - started} ms: the late client did not hold it`)
  t.equal(app.broadcastConnections.size, 0)
  deaf.destroy()
})

t.test('app.injectWS() connections work without a TCP socket under them', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast)
  await app.ready()
  t.teardown(() => app.close())
  const socket = await app.injectWS('/ws?channels=news')
  const frames: string[] = []
  socket.on('message', (raw: Buffer) => frames.push(raw.toString()))
  // The subscribed frame may come before the listener above: wait on the hub instead.
  while ([...app.broadcastConnections].every((c) => !c.channels.has('news'))) await sleep(5)
  await app.broadcast('hi', { channel: 'news' })
  while (!frames.some((f) => f.includes('"data"'))) await sleep(5)
  t.same(plain(frames.filter((f) => f.includes('"data"')).map((f) => JSON.parse(f) as Frame)), [{ type: 'message', channel: 'news', data: 'hi' }])
  socket.terminate()
})
