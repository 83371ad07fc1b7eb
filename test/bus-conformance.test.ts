import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import type { Bus, HistoryQuery } from '../plugin/bus/bus.js'
import { MemoryBus } from '../plugin/bus/memory.js'
import { RedisBus } from '../plugin/redis/bus.js'
import { startRedis } from './helpers/redis-server.js'

// The one contract both buses keep (plugin/bus/bus.ts); the plugin relies on nothing else.

const redis = await startRedis()
t.teardown(() => redis.stop())
const log = Fastify({ logger: false }).log

interface Received { channel: string | null, payload: string }

const factories: Record<string, () => Bus> = {
  memory: () => new MemoryBus(),
  redis: () => new RedisBus({ publisher: redis.client(), ownsPublisher: true, prefix: 'conf:', readyTimeout: 5000, log })
}

for (const [kind, create] of Object.entries(factories)) {
  t.test(`${kind} bus`, async (t) => {
    const bus = create()
    const received: Received[] = []
    await bus.start((channel, payload) => received.push({ channel, payload: payload.toString() }), () => {})
    t.teardown(() => bus.close())

    async function settle (count: number): Promise<void> {
      const deadline = Date.now() + 3000
      while (received.length < count && Date.now() < deadline) await sleep(5)
      await sleep(kind === 'redis' ? 50 : 0)
    }

    t.equal(bus.kind, kind)
    t.match(bus.health(), { state: 'ok', reasons: [] }, 'is ready once started')
    t.same(await bus.publish('news', 'before any subscriber'), undefined, 'publishing to nobody is fine')

    t.test('delivers a subscribed channel, byte for byte', async (t) => {
      received.length = 0
      await bus.subscribe('news')
      await bus.publish('news', '{"text":"héllo"}')
      await settle(1)
      t.same(received, [{ channel: 'news', payload: '{"text":"héllo"}' }])
    })

    t.test('ignores channels that are not subscribed', async (t) => {
      received.length = 0
      await bus.publish('elsewhere', 'x')
      await bus.publish('news', 'y')
      await settle(1)
      t.same(received, [{ channel: 'news', payload: 'y' }])
    })

    t.test('always delivers the broadcast-to-all channel', async (t) => {
      received.length = 0
      await bus.publish(null, 'all')
      await settle(1)
      t.same(received, [{ channel: null, payload: 'all' }])
    })

    t.test('stops delivering after unsubscribe', async (t) => {
      received.length = 0
      await bus.unsubscribe('news')
      await bus.publish('news', 'gone')
      await bus.publish(null, 'marker')
      await settle(1)
      t.same(received, [{ channel: null, payload: 'marker' }])
    })

    t.test('keeps publish order', async (t) => {
      received.length = 0
      await bus.subscribe('seq')
      await Promise.all(Array.from({ length: 500 }, (_, i) => bus.publish('seq', String(i))))
      await settle(500)
      t.same(received.map((r) => Number(r.payload)), Array.from({ length: 500 }, (_, i) => i))
    })

    t.test('reads history only as far as a reader can use it', async (t) => {
      const history = { size: 100, ttl: 60_000 }
      const frames = Array.from({ length: 10 }, (_, i) => `{"type":"message","channel":"kept","data":"${String(i).padStart(8, '0')}"}`)
      const results = await bus.publishMany(frames.map((payload) => ({ channel: 'kept', payload, history })))
      const epoch = results[0].position?.epoch as string
      const size = (await bus.readHistory('kept', { since: 0, limit: 1 }))?.messages[0].frame.length as number
      const read = async (query: Partial<HistoryQuery>): Promise<number[] | undefined> =>
        (await bus.readHistory('kept', { since: 0, limit: 100, ...query }))?.messages.map((m) => m.offset)
      t.same(await read({}), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      t.same(await read({ reverse: true, limit: 3 }), [10, 9, 8])
      t.same(await read({ epoch }), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'the right epoch')
      t.same(await read({ epoch: 'other' }), [], 'another epoch: no entry')
      t.same(await read({ since: 2, limit: 5, whole: true }), [], 'whole: 8 after since do not fit in 5')
      t.same(await read({ since: 5, limit: 5, whole: true }), [6, 7, 8, 9, 10])
      const cut = await bus.readHistory('kept', { since: 0, limit: 100, maxBytes: size * 3 + 1 })
      t.same(cut?.messages.map((m) => m.offset), [1, 2, 3], 'stops at the byte cap')
      t.equal(cut?.truncated, true)
      const over = await bus.readHistory('kept', { since: 0, limit: 100, maxBytes: 10 })
      t.same(over?.messages.map((m) => m.offset), [1], 'a message over the cap alone still comes, so a reader can page past it')
      t.equal(over?.truncated, true)
      const cutBack = await bus.readHistory('kept', { since: 0, limit: 100, reverse: true, maxBytes: size * 20 })
      t.equal(cutBack?.truncated, false, 'all fit')
      t.equal(cutBack?.messages.length, 10)
    })

    t.test('refuses to publish once closed', async (t) => {
      await bus.close()
      t.equal(bus.health().state, 'unavailable')
      t.match(bus.health().reasons, [/clos/])
      await t.rejects(bus.publish('news', 'late'), { code: 'FRB_BUS_UNAVAILABLE', statusCode: 503 })
      await t.rejects(bus.subscribe('late'), { code: 'FRB_BUS_UNAVAILABLE' })
      await bus.unsubscribe('news')
      t.pass('unsubscribing from a closed bus is a quiet no-op: sockets may still be closing')
      await bus.close()
    })
  })
}

t.test('a Redis bus that has not started says why it is not ready', async (t) => {
  const publisher = redis.client()
  const bus = new RedisBus({ publisher, ownsPublisher: false, prefix: 'conf:', readyTimeout: 5000, log })
  t.match(bus.health().reasons.join('; '), /Redis (publisher connection is connecting|subscriber connection is not started)/)
  await publisher.ping()
  t.same(bus.health(), {
    state: 'degraded',
    reasons: ['Redis subscriber connection is not started'],
    checks: { publisher: 'ready', subscriber: 'not started' },
    topology: 'standalone'
  }, 'a publisher alone is a degraded bus')
  await bus.close()
  t.equal(publisher.status, 'ready', 'a publisher it does not own stays open')
})

t.test('a subscribe waiting for Redis to come back fails as soon as the bus closes, not at its timeout', async (t) => {
  const lost = await startRedis()
  t.teardown(() => lost.stop())
  const bus = new RedisBus({ publisher: lost.client(), ownsPublisher: true, prefix: 'conf:', readyTimeout: 5000, commandTimeout: 60_000, log })
  await bus.start(() => {}, () => {})
  await lost.kill()
  const waiting = bus.subscribe('while-away')
  const settled = waiting.then(() => 'confirmed', () => 'rejected')
  t.equal(await Promise.race([settled, sleep(300, 'waiting')]), 'waiting',
    'queued while Redis is away')
  const closing = bus.close()
  await t.rejects(waiting, { code: 'FRB_BUS_UNAVAILABLE', message: /closed before it confirmed the subscription/ },
    'refused by the close, well before its 60 s timeout')
  await closing
})
