import t from 'tap'
import { Redis } from 'ioredis'
import { waitUntil } from './helpers/wait.js'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import type { Frame, TestClient } from './helpers/client.js'

// Cheap frames must not buy expensive history reads: a resume reads entries only when it can be
// honoured, a read stops at a byte cap, a replay counts against the slow-consumer budget before
// it is written, and resumes have a budget per connection.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

const BIG = 'x'.repeat(63_000)

/** Bytes Redis has sent to all of its clients so far. */
async function redisOutput (): Promise<number> {
  const info = await admin.info('stats')
  return Number(/total_net_output_bytes:(\d+)/.exec(info)?.[1])
}

async function resume (client: TestClient, channel: string, since: number, epoch: string): Promise<Frame> {
  const from = client.frames.length
  client.send({ type: 'subscribe', channel, since, epoch })
  return await client.waitFor((f) => f.channel === channel && (f.type === 'subscribed' || f.type === 'error'), { from })
}

t.test('50 resumes with a wrong epoch, or from too far back, make Redis send next to nothing', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, history: { size: 200, maxReplay: 50 } })
  const results = await app.broadcastMany(Array.from({ length: 100 }, () => ({ channel: 'big', data: BIG })))
  const { epoch } = results[0]
  const client = await connect()
  const before = await redisOutput()
  for (let i = 0; i < 50; i++) {
    t.match(await resume(client, 'big', 1, 'not-the-epoch'), { type: 'subscribed', recovered: false, offset: 100 })
  }
  t.match(await resume(client, 'big', 1, epoch as string), { type: 'subscribed', recovered: false }, '99 behind, maxReplay 50')
  const sent = await redisOutput() - before
  // Before: each resume read all 99 entries, 6 MB, so 300 MB in all.
  t.ok(sent < 1_000_000, `Redis sent ${sent} bytes for 51 resumes that could not be honoured`)
  t.equal(client.received().length, 0, 'and no message was replayed')
})

t.test('a replay larger than history.maxReadBytes is refused (recovered: false), read only up to the cap', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, history: { size: 200, maxReplay: 300, maxReadBytes: 200_000 } })
  const results = await app.broadcastMany(Array.from({ length: 20 }, () => ({ channel: 'wide', data: BIG })))
  const { epoch } = results[0]
  const client = await connect()
  const before = await redisOutput()
  t.match(await resume(client, 'wide', 0, epoch as string), { recovered: false, offset: 20 }, '20 × 63 KB do not fit in 200 KB')
  t.ok(await redisOutput() - before < 400_000, 'Redis stopped near the cap')
  t.match(await resume(client, 'wide', 17, epoch as string), { recovered: true, offset: 20 }, 'three fit')
  t.same((await client.messages(3)).map((m) => m.offset), [18, 19, 20])
})

t.test('a replay that would pass slowConsumerBytes closes the connection with 4008 before it is written', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, slowConsumerBytes: 100_000, history: { size: 200 } })
  const results = await app.broadcastMany(Array.from({ length: 5 }, () => ({ channel: 'heavy', data: BIG })))
  const client = await connect()
  client.send({ type: 'subscribe', channel: 'heavy', since: 0, epoch: results[0].epoch })
  t.same(await client.closed, { code: 4008, reason: 'slow consumer' })
  t.equal(client.received().length, 0, 'no part of the replay was sent')
  t.equal(app.broadcastStats().slowConsumerCloses, 1)
})

t.test('resumes beyond the budget (a burst of maxChannelsPerConnection, then clientResumeRate a second) read no history', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, maxChannelsPerConnection: 8, clientResumeRate: 1, history: { size: 200 } })
  const results = await app.broadcastMany(Array.from({ length: 3 }, (_, i) => ({ channel: 'calm', data: i })))
  const { epoch } = results[0]
  const client = await connect()
  const answers: Frame[] = []
  for (let i = 0; i < 12; i++) answers.push(await resume(client, 'calm', 2, epoch as string))
  t.same(answers.map((f) => f.recovered), [...Array(8).fill(true), ...Array(4).fill(false)], 'eight honoured, then refused')
  t.same(client.received().map((m) => m.offset), Array(8).fill(3), 'each honoured resume replayed offset 3 once')
  t.equal(answers.at(-1)?.offset, 3, 'a refused resume still gives the position')
})

t.test('GET /history stops at maxReadBytes and says so', async (t) => {
  const { app, url } = await build(t, { redis: redis.url, history: { size: 200, maxReadBytes: 300_000 } })
  await app.broadcastMany(Array.from({ length: 100 }, () => ({ channel: 'paged', data: BIG })))
  const response = await fetch(`${url}/history/paged?limit=1000`)
  const text = await response.text()
  t.ok(text.length < 300_000 + 2_000, `the answer is ${text.length} bytes`)
  const body = JSON.parse(text) as { truncated?: boolean, messages: Frame[] }
  t.equal(body.truncated, true)
  t.same(body.messages.map((m) => m.offset), [1, 2, 3, 4], 'whole messages, in order')
  const next = JSON.parse(await (await fetch(`${url}/history/paged?since=4&limit=2`)).text()) as { truncated?: boolean, messages: Frame[] }
  t.same(next.messages.map((m) => m.offset), [5, 6], 'the next page goes on from the last offset')
  t.equal(next.truncated, undefined, 'a page within the cap says nothing')
})

t.test('live messages held for a subscribe that waits for a history read count against slowConsumerBytes', async (t) => {
  const ownClient = new Redis(redis.url, { enableOfflineQueue: false })
  t.teardown(() => ownClient.disconnect())
  const held = await build(t, { redis: ownClient, slowConsumerBytes: 200_000 })
  const other = await build(t, { redis: redis.url })
  const client = await held.connect()
  // The publisher link goes (history reads fail); the subscriber link stays (live messages come).
  ownClient.disconnect()
  client.send({ type: 'subscribe', channel: 'piling' })
  await waitUntil(() => held.app.broadcastStats().subscribesDeferred === 1, 5000)
  for (let i = 0; i < 5; i++) await other.app.broadcast(BIG, { channel: 'piling' })
  t.same(await client.closed, { code: 4008, reason: 'slow consumer' }, 'closed once 5 × 63 KB were held')
})
