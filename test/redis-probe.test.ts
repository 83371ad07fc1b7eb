import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import Fastify from 'fastify'
import redisBroadcast from '../plugin/index.js'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'
import type { TestClient } from './helpers/client.js'

// Links that die without a word: a half-open subscriber connection only a probe can find, and
// publishes that must be refused at once, never left waiting, while Redis cannot be reached.

const redis = await startRedis()
t.teardown(() => redis.stop())
const direct = redis.client()

function message (seq: number): string {
  return `{"type":"message","channel":"news","data":${seq}}`
}

t.test('a blackholed subscriber link is found by the probe and replaced; without the probe delivery stays dead', async (t) => {
  const proxy = await startTcpProxy(redis.port)
  t.teardown(() => proxy.close())
  const interval = 300
  const probed = await build(t, { redis: proxy.url, probeInterval: interval, probeTimeout: 200 })
  const unprobed = await build(t, { redis: proxy.url, probeInterval: 0 })
  const watched = await probed.connect('?channels=news')
  const blind = await unprobed.connect('?channels=news')
  await Promise.all([watched, blind].map(async (c: TestClient) => await c.waitFor((f) => f.type === 'subscribed')))
  await direct.publish('frb:c:news', message(0))
  await Promise.all([watched.messages(1), blind.messages(1)])

  proxy.blackhole()
  const cutAt = Date.now()
  t.ok(await waitUntil(() => probed.app.broadcastStats().probeFailures > 0, 4 * interval), 'the probe failed')
  const detectedIn = Date.now() - cutAt
  t.ok(detectedIn <= 2 * interval + 200, `detected ${detectedIn} ms after the link went silent (probe every ${interval} ms)`)
  const health = await probed.app.inject({ url: '/health' })
  t.equal(health.statusCode, 503, 'the probed instance no longer claims to be healthy')
  t.match(health.json(), { status: 'degraded', reason: /subscriber probe failed \(no reply within 200 ms\)/, checks: { probe: /no reply within 200 ms/ } },
    'the failed probe is in the health checks')
  t.equal((await unprobed.app.inject({ url: '/health' })).statusCode, 200, 'the unprobed one believes it is fine')
  t.ok(await waitUntil(() => probed.app.broadcastStats().probeFailures > 1, 6 * interval),
    'a new connection stuck in its handshake behind the dead link is torn down too')

  proxy.pass()
  let seq = 1
  const resumed = await waitUntil(() => {
    if (watched.received().length < 2) void direct.publish('frb:c:news', message(seq++))
    return watched.received().length >= 2
  }, 5000)
  t.ok(resumed, 'the probed instance delivers again once the link passes traffic')
  await sleep(100)
  const before = watched.received().length
  for (let i = 0; i < 10; i++) {
    await direct.publish('frb:c:news', message(seq++))
    await sleep(100)
  }
  t.equal(blind.received().length, 1, 'the unprobed instance received nothing after the cut: its delivery stayed dead')
  await waitUntil(() => watched.received().length === before + 10, 1000)
  t.equal(watched.received().length - before, 10, 'while the probed one received every later message')
  t.ok(probed.logs.some((line) => /probe failed/.test(line.msg)), 'the failure is logged')
})

t.test('while Redis is unreachable, POST /publish answers 503 with Retry-After within 1.5 s and broadcast() rejects', async (t) => {
  const proxy = await startTcpProxy(redis.port)
  t.teardown(() => proxy.close())
  const { app, publish } = await build(t, { redis: proxy.url, probeInterval: 0 })
  t.equal((await publish({ channel: 'news', data: 'ok' })).status, 202)

  proxy.blackhole()
  let started = Date.now()
  const response = await publish({ channel: 'news', data: 'into the void' })
  t.equal(response.status, 503, 'a half-open link: the publish is not confirmed, so it is refused')
  t.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms`)
  t.equal(response.headers.get('retry-after'), '1')
  t.match(await response.json(), { code: 'FRB_BUS_UNAVAILABLE', message: /did not confirm the publish within 1000 ms/ })
  started = Date.now()
  await t.rejects(app.broadcast('again'), { code: 'FRB_BUS_UNAVAILABLE', statusCode: 503 })
  t.ok(Date.now() - started < 1500, 'broadcast() rejects as quickly')
  t.equal(app.broadcastStats().publishFailures, 2, 'both failures are counted')
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 503, '/health no longer says ok once publishes go unconfirmed')
  // The unconfirmed publish tore its connection down: /health names that, or (the socket's close
  // not yet seen) the publishes Redis did not confirm.
  t.match(health.json(), { reasons: [/Redis publisher connection is|Redis did not confirm the last \d+ publish/] })
  t.equal(app.broadcastStats().published, 1)
})

t.test('a user-supplied client with an offline queue never holds a publish: 503 at once while Redis is down', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const client = new Redis(own.url)
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: client })
  await app.ready()
  t.teardown(() => app.close())

  await own.kill()
  await waitUntil(() => client.status !== 'ready', 2000)
  const started = Date.now()
  const response = await app.inject({ method: 'POST', url: '/publish', payload: { data: 'lost?' } })
  t.equal(response.statusCode, 503)
  t.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms`)
  t.equal(response.headers['retry-after'], '1')
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 503)
  t.match(health.json(), { status: 'unavailable', reasons: [/publisher/, /subscriber/] })

  await own.start()
  t.ok(await waitUntil(() => client.status === 'ready', 5000), 'the client reconnects')
  const seen: string[] = []
  const listener = own.client()
  await listener.subscribe('frb:all')
  listener.on('message', (_channel: string, text: string) => seen.push(text))
  t.equal((await app.inject({ method: 'POST', url: '/publish', payload: { data: 'now' } })).statusCode, 202)
  await waitUntil(() => seen.length > 0, 2000)
  t.same(seen, ['{"type":"message","data":"now"}'], 'the refused message was never sent late; only the accepted one was')
})

t.test('a user-supplied client on a half-open link: publishes time out with 503 and /health reports it', async (t) => {
  const proxy = await startTcpProxy(redis.port)
  t.teardown(() => proxy.close())
  const client = new Redis(proxy.url, { maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: client, probeInterval: 0 })
  await app.ready()
  t.teardown(() => app.close())
  proxy.blackhole()
  t.equal((await app.inject({ method: 'POST', url: '/publish', payload: { data: 'lost' } })).statusCode, 503)
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 503, 'the client still says ready, but /health does not')
  t.match(health.json(), { status: 'degraded', reasons: [/did not confirm the last 1 publish/] })
})

t.test('a Redis that is slow but answers is no probe failure, and probes do not pile up meanwhile', async (t) => {
  const { app } = await build(t, { redis: redis.url, probeInterval: 50, probeTimeout: 3000 })
  // A script that spins for 600 ms blocks the server: the probe in flight waits, and the ticks meanwhile skip.
  const spin = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] " +
    "while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > 600000 then break end end return 1"
  await direct.eval(spin, 0)
  await sleep(300)
  t.equal(app.broadcastStats().probeFailures, 0)
  t.equal(app.broadcastStats().subscriberReconnects, 0, 'the connection was kept')
  t.equal((await app.inject('/health')).statusCode, 200)
})
