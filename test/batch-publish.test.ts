import t from 'tap'
import { build, busOptions, BUS_KINDS } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'

// POST /publish with a JSON array: many messages in one request and one Redis round trip.

const redis = await startRedis()
t.teardown(() => redis.stop())

for (const kind of BUS_KINDS) {
  t.test(`on the ${kind} bus, a batch of 100 arrives in order, each message on its own channel`, async (t) => {
    const { connect, publish } = await build(t, busOptions(kind, redis.url))
    const even = await connect('?channels=even')
    const everyone = await connect('?channels=odd')
    await Promise.all([even, everyone].map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
    const batch = Array.from({ length: 100 }, (_, i) => i % 10 === 9
      ? { data: { seq: i } }
      : { channel: i % 2 === 0 ? 'even' : 'odd', data: { seq: i } })
    const response = await publish(batch)
    t.equal(response.status, 202)
    const accepted = await response.json() as { status: string, count: number, results: Array<{ offset?: number }> }
    t.match(accepted, { status: 'accepted', count: 100 })
    t.same(accepted.results.map((r) => r.offset), batch.map((m) => m.channel === undefined ? undefined : batch.filter((n, i) => n.channel === m.channel && i <= batch.indexOf(m)).length),
      'each message is answered in order: consecutive offsets per channel, none for a broadcast to all')
    const seqs = (frames: Array<{ data?: unknown }>): number[] => frames.map((f) => (f.data as { seq: number }).seq)
    const expectedEven = batch.filter((m, i) => m.channel === 'even' || i % 10 === 9).map((m) => m.data.seq)
    const expectedOdd = batch.filter((m, i) => m.channel === 'odd' || i % 10 === 9).map((m) => m.data.seq)
    t.same(seqs(await even.messages(expectedEven.length)), expectedEven, 'the even channel and the broadcasts, in order')
    t.same(seqs(await everyone.messages(expectedOdd.length)), expectedOdd, 'the odd channel and the broadcasts, in order')
  })
}

t.test('a batch with one bad message is refused whole: nothing is published', async (t) => {
  const { app, connect, publish } = await build(t, { redis: redis.url, maxMessageBytes: 256 })
  const client = await connect('?channels=c')
  await client.waitFor((f) => f.type === 'subscribed')
  const response = await publish([{ channel: 'c', data: 'fine' }, { channel: 'c', data: 'x'.repeat(300) }])
  t.equal(response.status, 413)
  t.match(await response.json(), { code: 'FRB_MESSAGE_TOO_LARGE', message: /^message 1: / })
  await app.broadcast('marker', { channel: 'c' })
  t.same((await client.messages(1)).map((m) => m.data), ['marker'], 'the good message of the refused batch never went out')
  t.equal(app.broadcastStats().published, 1)
})

t.test('a batch must hold 1 to maxBatchSize valid publications', async (t) => {
  const { app, publish } = await build(t, { maxBatchSize: 3 })
  t.equal((await publish([])).status, 400, 'empty')
  t.equal((await publish([{ data: 1 }, { data: 2 }, { data: 3 }, { data: 4 }])).status, 400, 'over maxBatchSize')
  t.equal((await publish([{ data: 1 }, { channel: 'bad name', data: 2 }])).status, 400, 'a bad channel in it')
  t.equal((await publish([{ data: 1 }, { channel: 'c' }])).status, 400, 'an entry without data')
  t.equal((await publish([{ data: 1 }, { data: 2 }, { data: 3 }])).status, 202)
  await t.rejects(app.broadcastMany(Array.from({ length: 4 }, (_, i) => ({ data: i }))), { code: 'FRB_INVALID_DATA', message: /at most 3/ },
    'broadcastMany() keeps the same cap')
  await app.broadcastMany([])
  t.equal(app.broadcastStats().published, 3, 'an empty broadcastMany() publishes nothing')
})
