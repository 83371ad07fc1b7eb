import t from 'tap'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'

// A channel's history can start again while an instance is not listening (a failover to a replica
// that lacked the last entries, keys lost or expired): a new epoch. None of its messages can have
// reached that instance live, so once it is back its clients get a gap frame (their resume point
// is gone) and then the new history from its first message, not from wherever it stands by then.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

t.test('a history that started again while the subscriber was away: a gap frame, then the new history from its first message', async (t) => {
  const proxy = await startTcpProxy(redis.port)
  t.teardown(() => proxy.close())
  const away = await build(t, { redis: proxy.url, probeInterval: 300, probeTimeout: 200 })
  const other = await build(t, { redis: redis.url })
  const client = await away.connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  const before = await other.app.broadcast('before', { channel: 'news' })
  await client.messages(1)

  // The instance's subscriber links go silent, a new one too, until pass() (its command link keeps
  // working, as when Redis drops a subscriber that fell behind): its probe finds out, and it
  // subscribes again once a link passes.
  proxy.blackholeSubscribers()
  await admin.del('frb:h:meta:news', 'frb:h:stream:news')
  const missed = [await other.app.broadcast('new 1', { channel: 'news' }), await other.app.broadcast('new 2', { channel: 'news' })]
  t.not(missed[0].epoch, before.epoch, 'the history started again: a new epoch')
  t.same(missed.map((m) => m.offset), [1, 2], 'from offset 1')
  t.same(client.received().map((f) => f.data), ['before'], 'which the instance did not receive live')
  proxy.pass()

  await client.waitFor((f) => f.data === 'new 2', { timeout: 15_000 })
  const live = await other.app.broadcast('live', { channel: 'news' })
  await client.waitFor((f) => f.data === 'live')
  const seen = client.frames.filter((f) => f.type === 'message' || f.type === 'gap')
    .map((f) => f.type === 'gap' ? 'gap' : `${String(f.data)} @${String(f.offset)} ${f.epoch === before.epoch ? 'old' : f.epoch === live.epoch ? 'new' : String(f.epoch)}`)
  t.same(seen, ['before @1 old', 'gap', 'new 1 @1 new', 'new 2 @2 new', 'live @3 new'],
    'the old history\'s message, the gap, the new history from its first message, then live ones, each once')
  t.ok(away.app.broadcastStats().gapsReported >= 1, 'the gap is counted')
})
