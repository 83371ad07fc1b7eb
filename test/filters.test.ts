import t from 'tap'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import type { Frame, TestClient } from './helpers/client.js'
import { sessionsOf } from './helpers/sessions.js'

// Tags on messages and filters on subscriptions: a filtered subscriber gets exactly the messages
// whose tags match, live and in a replay; offsets keep counting every message of the channel.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'AAPL', 'TSLA', 'MSFT']

async function subscribed (client: TestClient, frame: Record<string, unknown>): Promise<Frame> {
  const from = client.frames.length
  client.send({ type: 'subscribe', ...frame })
  return await client.waitFor((f) => f.channel === frame.channel && (f.type === 'subscribed' || f.type === 'error'), { from })
}

t.test('a filtered subscriber gets only the messages whose tags match, across instances; frames carry the tags', async (t) => {
  const [a, b] = await Promise.all([build(t, { redis: redis.url }), build(t, { redis: redis.url })])
  const watcher = await a.connect()
  const everything = await b.connect()
  t.match(await subscribed(watcher, { channel: 'prices', filter: { symbol: ['AAPL', 'MSFT'] } }), { type: 'subscribed' })
  t.match(await subscribed(everything, { channel: 'prices' }), { type: 'subscribed' })
  for (const [i, symbol] of SYMBOLS.entries()) {
    const response = await b.publish({ channel: 'prices', data: i, tags: { symbol, venue: 'XNAS' } })
    t.equal(response.status, 202)
  }
  const all = await everything.messages(6)
  t.same(all.map((m) => m.tags), SYMBOLS.map((symbol) => ({ symbol, venue: 'XNAS' })), 'the frames carry their tags')
  const mine = await watcher.messages(4)
  t.same(mine.map((m) => m.data), [0, 1, 3, 5], 'AAPL and MSFT only')
  t.same(mine.map((m) => m.offset), [1, 2, 4, 6], 'offsets count every message of the channel: the holes are the filtered ones')
  await a.app.broadcast('untagged', { channel: 'prices' })
  await everything.messages(7)
  t.equal(watcher.received().length, 4, 'a message without the tag does not pass')
})

t.test('a resume replays only the matching messages; subscribing again replaces the filter', async (t) => {
  const app = await build(t, { redis: redis.url })
  const results = await app.app.broadcastMany(SYMBOLS.map((symbol, i) => ({ channel: 'ticks', data: i, tags: { symbol } })))
  const client = await app.connect()
  t.match(await subscribed(client, { channel: 'ticks', since: 0, epoch: results[0].epoch, filter: { symbol: ['MSFT'] } }), { recovered: true, offset: 6 })
  t.same((await client.messages(2)).map((m) => m.offset), [2, 6], 'the replay, filtered')
  t.match(await subscribed(client, { channel: 'ticks', filter: { symbol: ['TSLA', 'GOOG'] } }), { type: 'subscribed' })
  await app.app.broadcast('t', { channel: 'ticks', tags: { symbol: 'TSLA' } })
  await app.app.broadcast('m', { channel: 'ticks', tags: { symbol: 'MSFT' } })
  await client.waitFor((f) => f.type === 'message' && f.data === 't')
  t.match(await subscribed(client, { channel: 'ticks' }), { type: 'subscribed' }, 'and without one, drops it')
  await app.app.broadcast('any', { channel: 'ticks', tags: { symbol: 'IBM' } })
  await client.waitFor((f) => f.type === 'message' && f.data === 'any')
  t.same(client.received().map((m) => m.data), [1, 5, 't', 'any'], 'MSFT after the change was filtered out')
})

t.test('subscribers with the same filter share one, judged once per message; filters go with their subscriptions', async (t) => {
  const app = await build(t, { redis: redis.url })
  const clients = await Promise.all(Array.from({ length: 6 }, async () => await app.connect()))
  for (const [i, client] of clients.entries()) {
    await subscribed(client, { channel: 'shared', filter: i % 2 === 0 ? { a: ['1'], b: ['2', '3'] } : { b: ['3', '2'], a: ['1'] } })
  }
  await subscribed(clients[0], { channel: 'other', filter: { a: ['9'] } })
  // The hub's pool of filters, seen through a session (test-only).
  const hub = (sessionsOf(app.app)[0] as unknown as { context: { hub: { filterCount: number } } }).context.hub
  t.equal(hub.filterCount, 2, 'six subscriptions, two filters: the same rules in another order are the same filter')
  await app.app.broadcast(1, { channel: 'shared', tags: { a: '1', b: '3' } })
  await app.app.broadcast(2, { channel: 'shared', tags: { a: '1', b: '4' } })
  for (const client of clients) t.same((await client.messages(1)).map((m) => m.data), [1])
  clients[1].send({ type: 'unsubscribe', channel: 'shared' })
  await clients[1].waitFor((f) => f.type === 'unsubscribed')
  await clients[0].close()
  t.ok(await waitUntil(() => hub.filterCount === 1, 3000), 'a filter goes with the last subscription that held it')
  for (const client of clients.slice(2)) await client.close()
  t.ok(await waitUntil(() => hub.filterCount === 0, 3000), 'and none is left behind')
})

t.test('bad filters get FRB_INVALID_FILTER naming the channel; bad tags are refused naming the tag', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = await app.connect()
  for (const filter of [[], { symbol: 'AAPL' }, { symbol: [] }, { symbol: [1] }, {}, { 'bad key': ['x'] }, { s: ['x'.repeat(300)] }]) {
    t.match(await subscribed(client, { channel: 'prices', filter }), { type: 'error', code: 'FRB_INVALID_FILTER', channel: 'prices' }, JSON.stringify(filter).slice(0, 40))
  }
  t.match(await subscribed(client, { channel: 'prices', filter: { symbol: ['AAPL'] } }), { type: 'subscribed' }, 'the connection goes on')
  const bad: Array<[unknown, RegExp]> = [
    [{ 'bad key': 'x' }, /tag "bad key"/],
    [{ symbol: 1 }, /"tags\.symbol" is invalid/],
    [Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])), /"tags" is invalid/]
  ]
  for (const [tags, message] of bad) {
    const response = await app.publish({ channel: 'prices', data: 1, tags })
    t.equal(response.status, 400, JSON.stringify(tags).slice(0, 40))
    t.match(await response.json(), { code: /^FRB_INVALID_(PUBLISH|TAGS)$/, message }, 'the answer names the tag')
  }
  await t.rejects(app.app.broadcast(1, { channel: 'prices', tags: { symbol: 'é'.repeat(200) } }), { code: 'FRB_INVALID_TAGS', message: /tag "symbol": its value is over 256 bytes/ })
  await t.rejects(app.app.broadcast(1, { channel: 'prices', tags: { 'a b': 'x' } }), { code: 'FRB_INVALID_TAGS', message: /tag "a b"/ })
  await t.rejects(app.app.broadcast(1, { channel: 'prices', tags: { a: 1 } as never }), { code: 'FRB_INVALID_TAGS', message: /must be a string/ })
  await t.rejects(app.app.broadcast(1, { channel: 'prices', tags: [] as never }), { code: 'FRB_INVALID_TAGS' })
  await t.rejects(app.app.broadcast(1, { channel: 'prices', tags: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }), { code: 'FRB_INVALID_TAGS', message: /at most 16/ })
})
