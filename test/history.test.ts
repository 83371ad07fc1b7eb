import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { build, BUS_KINDS, busOptions } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain, type Frame } from './helpers/client.js'

// Every message of a channel with history gets the channel's next offset, in one step with its
// PUBLISH, and can be read back: in the publisher's reply, in every frame, and over HTTP.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

interface Accepted { status: 'accepted', offset?: number, epoch?: string, duplicate?: true, count?: number, results?: Accepted[] }
interface HistoryBody { channel: string, epoch: string | null, offset: number, messages: Frame[] }

const offsets = (frames: Array<{ offset?: number }>): Array<number | undefined> => frames.map((f) => f.offset)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

for (const kind of BUS_KINDS) {
  t.test(`on the ${kind} bus`, async (t) => {
    t.test('each publish gets the next offset of its channel: in the reply, in the frame, in the subscribed reply', async (t) => {
      const { app, connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=news')
      t.same((await client.waitFor((f) => f.type === 'subscribed')), { type: 'subscribed', channel: 'news' },
        'a channel nothing was published on has no position yet')
      const replies: Accepted[] = []
      for (const n of [1, 2, 3]) replies.push(await (await publish({ channel: 'news', data: { n } })).json() as Accepted)
      const [{ epoch }] = replies
      t.match(epoch, /^[0-9a-f]{8,64}$/, 'the epoch is an opaque token')
      t.same(replies, [1, 2, 3].map((offset) => ({ status: 'accepted', offset, epoch })), 'offsets grow by one, in one epoch')
      t.same(await client.messages(3), [1, 2, 3].map((n) => ({ type: 'message', channel: 'news', offset: n, epoch, data: { n } })))
      t.same((await (await publish({ channel: 'sport', data: 0 })).json() as Accepted).offset, 1, 'each channel counts on its own')
      t.same(await (await publish({ data: 'to everyone' })).json(), { status: 'accepted' }, 'a broadcast to all has no history')
      t.same(await app.broadcast('from code', { channel: 'news' }), { offset: 4, epoch, duplicate: false }, 'broadcast() says it too')

      const late = await connect()
      late.send({ type: 'subscribe', channel: 'news' })
      t.same(await late.waitFor((f) => f.type === 'subscribed'), { type: 'subscribed', channel: 'news', epoch, offset: 4 },
        'a new subscriber learns where the channel stands, to resume from there later')
      await app.broadcast('next', { channel: 'news' })
      t.same(offsets(await late.messages(1)), [5], 'and gets what follows')
    })

    t.test('GET /history/:channel returns what the channel holds, oldest first, or newest first with reverse', async (t) => {
      const { connect, url, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=log')
      await client.waitFor((f) => f.type === 'subscribed')
      await publish(range(1, 10).map((n) => ({ channel: 'log', data: { n } })))
      const live = await client.messages(10)
      const get = async (query: string): Promise<Response> => await fetch(`${url}/history/log${query}`)
      const all = await (await get('')).json() as HistoryBody
      t.same(all, { channel: 'log', epoch: live[0].epoch, offset: 10, messages: live }, 'the frames as subscribers received them')
      t.same(offsets((await (await get('?since=7')).json() as HistoryBody).messages), [8, 9, 10], 'since: what came after')
      t.same(offsets((await (await get('?limit=2')).json() as HistoryBody).messages), [1, 2], 'limit: the oldest first')
      t.same(offsets((await (await get('?reverse=1&limit=3')).json() as HistoryBody).messages), [10, 9, 8], 'reverse: the newest first')
      t.same(offsets((await (await get('?since=4&limit=2&reverse=true')).json() as HistoryBody).messages), [10, 9])
      t.same((await (await get('?since=10')).json() as HistoryBody).messages, [], 'nothing after the latest')
      t.same(await (await fetch(`${url}/history/quiet`)).json(), { channel: 'quiet', epoch: null, offset: 0, messages: [] },
        'a channel with nothing kept has no epoch')
      for (const bad of ['/history/bad%20name', '/history/log?since=-1', '/history/log?limit=x', '/history/log?reverse=2', '/history/log?other=1']) {
        const response = await fetch(`${url}${bad}`)
        t.equal(response.status, 400, `${bad} is refused`)
        t.match(await response.json(), { code: 'FST_ERR_VALIDATION' })
      }
    })

    t.test('a publish retried with its idempotencyKey is published once and answered with the first result', async (t) => {
      const { app, connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=orders,other')
      await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'other')
      const order = { channel: 'orders', data: { id: 7 }, idempotencyKey: 'order-7' }
      const replies = []
      for (let i = 0; i < 3; i++) replies.push(await (await publish(order)).json() as Accepted)
      const { epoch } = replies[0]
      t.same(replies, [
        { status: 'accepted', offset: 1, epoch },
        { status: 'accepted', offset: 1, epoch, duplicate: true },
        { status: 'accepted', offset: 1, epoch, duplicate: true }
      ], 'the retries get the first answer, marked duplicate')
      t.same((await (await publish({ ...order, idempotencyKey: 'order-8' })).json() as Accepted).offset, 2, 'another key publishes')
      t.same((await (await publish({ ...order, channel: 'other' })).json() as Accepted).offset, 1, 'the same key on another channel publishes')
      t.same(await app.broadcast({ id: 7 }, { channel: 'orders', idempotencyKey: 'order-7' }), { offset: 1, epoch, duplicate: true })
      const everyone = { data: 'all', idempotencyKey: 'all-1' }
      t.same(await (await publish(everyone)).json(), { status: 'accepted' })
      t.same(await (await publish(everyone)).json(), { status: 'accepted', duplicate: true }, 'a broadcast to all is deduplicated too')
      await sleep(100)
      t.same(plain(client.received()).map((f) => [f.channel, f.data]), [['orders', { id: 7 }], ['orders', { id: 7 }], ['other', { id: 7 }], [undefined, 'all']],
        'one message per key and channel reached the client')
      for (const key of ['', 'has space', 'x'.repeat(129), 'é']) {
        const response = await publish({ ...order, idempotencyKey: key })
        t.equal(response.status, 400, `idempotencyKey ${JSON.stringify(key.slice(0, 12))} is refused`)
      }
      await t.rejects(app.broadcast(1, { channel: 'orders', idempotencyKey: 'no spaces' }), { code: 'FRB_INVALID_IDEMPOTENCY_KEY', statusCode: 400 })
    })

    t.test('a batch of 100 gets 100 consecutive offsets, answered in order', async (t) => {
      const { app, connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=bulk')
      await client.waitFor((f) => f.type === 'subscribed')
      await app.broadcast('first', { channel: 'bulk' })
      const reply = await (await publish(range(1, 100).map((n) => ({ channel: 'bulk', data: n })))).json() as Accepted
      t.equal(reply.count, 100)
      t.same(offsets(reply.results ?? []), range(2, 101), 'offsets 2 … 101, in the order of the batch')
      const received = await client.messages(101)
      t.same(received.map((f) => [f.offset, f.data]), [[1, 'first'], ...range(1, 100).map((n) => [n + 1, n])], 'delivered in that order')
      const again = await app.broadcastMany([{ channel: 'bulk', data: 'x', idempotencyKey: 'b1' }, { channel: 'bulk', data: 'x', idempotencyKey: 'b1' }])
      t.same(again.map((r) => [r.offset, r.duplicate]), [[102, false], [102, true]], 'a key repeated inside one batch publishes once')
    })

    t.test('history settings per channel pattern: size, and no history at all', async (t) => {
      const { connect, publish, url } = await build(t, {
        ...busOptions(kind, redis.url),
        history: { rules: [{ channels: 'live.*', size: 0, ttl: 1000 }, { channels: 'short', size: 3, ttl: 60000 }] }
      })
      const client = await connect('?channels=live.scores')
      await client.waitFor((f) => f.type === 'subscribed')
      t.same(await (await publish({ channel: 'live.scores', data: 1 })).json(), { status: 'accepted' }, 'no offset without history')
      t.same(await client.messages(1), [{ type: 'message', channel: 'live.scores', data: 1 }], 'nor in the frame')
      const response = await fetch(`${url}/history/live.scores`)
      t.equal(response.status, 404)
      t.match(await response.json(), { code: 'FRB_NO_HISTORY' })
      client.send({ type: 'subscribe', channel: 'live.other', since: 3, epoch: 'abc' })
      t.same(await client.waitFor((f) => f.channel === 'live.other'), { type: 'subscribed', channel: 'live.other', recovered: false },
        'resuming a channel without history cannot recover anything')
      // Redis trims whole stream nodes (MAXLEN ~), so it keeps at least `size`; the memory bus exactly `size`.
      await publish(range(1, 250).map((n) => ({ channel: 'short', data: n })))
      const kept = offsets((await (await fetch(`${url}/history/short?limit=1000`)).json() as HistoryBody).messages)
      t.ok(kept.length >= 3 && kept.length < 250, `${kept.length} messages kept of 250`)
      t.same(kept, range(251 - kept.length, 250), 'the latest ones, in order')
    })
  })
}

t.test('on Redis, a channel\'s history is a stream beside its position, both expiring after the last publish', async (t) => {
  const { app } = await build(t, { redis: redis.url, history: { size: 100, ttl: 60000 } })
  await app.broadcast('a', { channel: 'kept' })
  await app.broadcast('b', { channel: 'kept' })
  t.equal(await admin.xlen('frb:h:stream:kept'), 2)
  const { epoch } = await app.broadcast('c', { channel: 'kept' })
  t.match(await admin.hgetall('frb:h:meta:kept'), { epoch, top: '3', server: /^[0-9a-f]{40}$/ }, 'its position, and the server that wrote it')
  for (const key of ['frb:h:stream:kept', 'frb:h:meta:kept']) {
    const ttl = await admin.pttl(key)
    t.ok(ttl > 59000 && ttl <= 60000, `${key} expires in ${ttl} ms`)
  }
})

t.test('the history is lost (DEL, expiry): the next publish starts a new epoch at offset 1', async (t) => {
  const { app } = await build(t, { redis: redis.url, history: { size: 100, ttl: 300, rules: [] } })
  const first = await app.broadcast('a', { channel: 'fragile' })
  await app.broadcast('b', { channel: 'fragile' })
  await admin.del('frb:h:stream:fragile')
  const afterDel = await app.broadcast('c', { channel: 'fragile' })
  t.equal(afterDel.offset, 1, 'the offsets start again')
  t.not(afterDel.epoch, first.epoch, 'under a new epoch, so an old offset is never taken for a new one')
  await sleep(400)
  const afterExpiry = await app.broadcast('d', { channel: 'fragile' })
  t.equal(afterExpiry.offset, 1)
  t.not(afterExpiry.epoch, afterDel.epoch, 'expiry starts a new epoch too')
})

t.test('a history written on another Redis server (taken over in a failover) starts a new epoch, and a subscriber hears of it', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url })
  const client = await connect('?channels=ledger')
  await client.waitFor((f) => f.type === 'subscribed')
  const before = await app.broadcast('a', { channel: 'ledger' })
  await app.broadcast('b', { channel: 'ledger' })
  // As a promoted replica would hold it: the writes replicated so far (without the last one, lost
  // with the old master), under the old master's replication ID.
  const [[, [, kept]]] = await admin.xrange('frb:h:stream:ledger', '1-0', '1-0') as Array<[string, string[]]>
  await admin.del('frb:h:stream:ledger')
  await admin.xadd('frb:h:stream:ledger', '1-0', 'f', kept as string)
  await admin.hset('frb:h:meta:ledger', 'top', '1', 'server', 'f'.repeat(40))
  const after = await app.broadcast('c', { channel: 'ledger' })
  t.equal(after.offset, 1, 'offset 2 is not given a second time')
  t.not(after.epoch, before.epoch, 'a new epoch')
  const messages = await client.messages(3)
  t.same(messages.map((m) => [m.data, m.offset, m.epoch === before.epoch]), [['a', 1, true], ['b', 2, true], ['c', 1, false]],
    'the subscriber sees the new epoch with the message')
})

t.test('on the memory bus, history and idempotency keys expire too', async (t) => {
  const { app, url } = await build(t, { idempotencyWindow: 100, history: { size: 10, ttl: 100, rules: [] } })
  const first = await app.broadcast('a', { channel: 'c', idempotencyKey: 'k' })
  t.same(await app.broadcast('a', { channel: 'c', idempotencyKey: 'k' }), { ...first, duplicate: true })
  await sleep(200)
  const later = await app.broadcast('a', { channel: 'c', idempotencyKey: 'k' })
  t.same([later.offset, later.duplicate], [1, false], 'after the window the key publishes again, in a new history')
  t.not(later.epoch, first.epoch)
  t.equal((await (await fetch(`${url}/history/c`)).json() as HistoryBody).offset, 1)
})

t.test('GET /history has the same auth as subscribing', async (t) => {
  const secret = 'a-secret-of-at-least-32-characters!!'
  const { app, url } = await build(t, { redis: redis.url, jwt: { secret } })
  await app.broadcast('for members', { channel: 'members' })
  const sign = createSigner({ key: secret, expiresIn: 60_000 })
  const token = sign({ sub: 'ann', channels: ['members'] })
  t.equal((await fetch(`${url}/history/members`)).status, 401, 'no token: 401')
  const ok = await fetch(`${url}/history/members`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(ok.status, 200, 'a token that grants the channel: 200')
  t.equal((await ok.json() as HistoryBody).messages.length, 1)
  t.equal((await fetch(`${url}/history/members?token=${token}`)).status, 200, 'the token may ride in the query, as for the WebSocket')
  const denied = await fetch(`${url}/history/staff`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(denied.status, 403, 'a channel the token does not grant: 403')
  t.match(await denied.json(), { code: 'FRB_CHANNEL_FORBIDDEN' })
})

t.test('half a history is no history: the position hash lost alone starts a new epoch, and publishes go on', async (t) => {
  const { app } = await build(t, { redis: redis.url })
  const first = await app.broadcast('a', { channel: 'halved' })
  await app.broadcast('b', { channel: 'halved' })
  await admin.del('frb:h:meta:halved')
  const after = await app.broadcast('c', { channel: 'halved' })
  t.same([after.offset, after.epoch === first.epoch], [1, false], 'offset 1 of a new epoch, not a refused publish')
  t.equal(await admin.xlen('frb:h:stream:halved'), 1, 'the old stream went with it')
  t.same((await app.broadcast('d', { channel: 'halved' })).offset, 2)
})

t.test('idempotency keys of different channels never collide, whatever their names', async (t) => {
  const { app } = await build(t, { redis: redis.url })
  const one = await app.broadcast(1, { channel: 'room', idempotencyKey: '42:a' })
  const two = await app.broadcast(2, { channel: 'room:42', idempotencyKey: 'a' })
  t.same([one.duplicate, two.duplicate, two.offset], [false, false, 1])
})

t.test('a message right at maxMessageBytes is delivered: the room its position takes is allowed for', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, maxMessageBytes: 256 })
  const client = await connect('?channels=edge')
  await client.waitFor((f) => f.type === 'subscribed')
  const envelope = Buffer.byteLength('{"type":"message","channel":"edge","data":""}')
  const data = 'x'.repeat(256 - envelope)
  await app.broadcast(data, { channel: 'edge' })
  t.same((await client.messages(1)).map((f) => f.data), [data])
  await t.rejects(app.broadcast(data + 'x', { channel: 'edge' }), { code: 'FRB_MESSAGE_TOO_LARGE' }, 'one byte more is refused')
  t.equal(app.broadcastStats().droppedForeignPayloads, 0)
})

t.test('on the memory bus, the history of a channel nobody publishes to any more is swept away', async (t) => {
  const { app, url } = await build(t, { history: { size: 10, ttl: 100 } })
  await app.broadcast('old', { channel: 'abandoned' })
  await sleep(1100)
  await app.broadcast('new', { channel: 'active' })
  t.same(await (await fetch(`${url}/history/abandoned`)).json(), { channel: 'abandoned', epoch: null, offset: 0, messages: [] })
})

t.test('a batch Redis refuses midway publishes nothing, and the channels it touched start a new history', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url })
  const client = await connect('?channels=steady')
  await client.waitFor((f) => f.type === 'subscribed')
  const before = await app.broadcast('before', { channel: 'steady' })
  // A key of the wrong type where the second message's idempotency key goes.
  await admin.lpush('frb:i:other|clash', 'not a string')
  await t.rejects(app.broadcastMany([
    { channel: 'steady', data: 'never' },
    { channel: 'other', data: 'never', idempotencyKey: 'clash' }
  ]), { code: 'FRB_BUS_REFUSED', message: /WRONGTYPE/ })
  const after = await app.broadcast('after', { channel: 'steady' })
  t.same([after.offset, after.epoch === before.epoch], [1, false], 'the next publish starts a new epoch, not a blocked channel')
  t.same((await client.messages(2)).map((f) => [f.data, f.offset]), [['before', 1], ['after', 1]], 'nothing of the refused batch went out')
})

t.test('GET /history returns at most 1000 messages, whatever limit asks', async (t) => {
  const { app, url } = await build(t, { redis: redis.url, history: { rules: [{ channels: 'long', size: 2000, ttl: 60000 }] } })
  for (let n = 0; n < 1200; n += 600) await app.broadcastMany(range(n + 1, n + 600).map((data) => ({ channel: 'long', data })))
  const body = await (await fetch(`${url}/history/long?limit=9999`)).json() as HistoryBody
  t.same([body.offset, offsets(body.messages)], [1200, range(1, 1000)])
})
