import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createSigner } from 'fast-jwt'
import { build, type TestApp } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { startService } from './helpers/service.js'
import { TestClient, wsUrl, type Frame } from './helpers/client.js'
import { waitUntil } from './helpers/wait.js'
import { presenceIdentity } from '../plugin/presence/presence.js'

// Who is on a channel, across instances: an identity counts once however many tabs it has open,
// a clean close removes it at once, a crashed instance's users disappear within the TTL.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-presence-secret-of-32-characters'
const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
const tokenFor = (sub: string): string => sign({ sub, channels: ['room', 'quiet', 'secret-room'] })

interface PresenceBody { channel: string, count: number, members: Array<string | number> }

async function presenceOf (app: TestApp, channel: string, token = tokenFor('reader')): Promise<PresenceBody> {
  const response = await fetch(`${app.url}/presence/${channel}`, { headers: { authorization: `Bearer ${token}` } })
  return await response.json() as PresenceBody
}

/** Connects as `sub` to `channel` and waits until it is subscribed. */
async function join (app: TestApp, sub: string, channel = 'room'): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl(app.url, `?channels=${channel}`), { headers: { authorization: `Bearer ${tokenFor(sub)}` } })
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed')
  return client
}

const events = (client: TestClient): Array<[string, unknown]> =>
  client.frames.filter((f: Frame) => f.type === 'join' || f.type === 'leave').map((f) => [f.type, f.identity])

t.test('two tabs of one identity on two instances count once; join and leave frames arrive once', async (t) => {
  const options = { redis: redis.url, jwt: { secret: SECRET }, presence: { events: ['room'] } }
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  const watcher = await join(a, 'carol')
  const aliceOnA = await join(a, 'alice')
  const aliceOnB = await join(b, 'alice')
  const bob = await join(b, 'bob')
  t.ok(await waitUntil(() => events(watcher).length >= 3, 2000), 'the joins arrived')
  const present = await presenceOf(a, 'room')
  t.same([present.count, [...present.members].sort()], [3, ['alice', 'bob', 'carol']], 'alice counts once for her two tabs')
  t.same(await presenceOf(b, 'room'), present, 'and every instance says so')

  await aliceOnA.close()
  await sleep(200)
  t.same((await presenceOf(b, 'room')).count, 3, 'one of two tabs closed: alice is still there')
  await aliceOnB.close()
  t.ok(await waitUntil(() => events(watcher).some(([type]) => type === 'leave'), 2000), 'her last tab closed: a leave frame')
  t.same((await presenceOf(a, 'room')).members.sort(), ['bob', 'carol'])
  await sleep(200)
  t.same(events(watcher), [['join', 'carol'], ['join', 'alice'], ['join', 'bob'], ['leave', 'alice']],
    'each arrival and departure of an identity once, across instances and tabs')
  t.same(events(bob).filter(([, who]) => who === 'alice'), [['leave', 'alice']], 'subscribers on the other instance hear it too')
})

t.test('without events for a channel, presence is tracked but no frame is sent', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const one = await join(app, 'dan', 'quiet')
  await join(app, 'eve', 'quiet')
  t.same((await presenceOf(app, 'quiet')).members.sort(), ['dan', 'eve'])
  await sleep(100)
  t.same(events(one), [], 'no join frames')
})

t.test('a clean close removes the instance\'s users at once; a kill -9 removes them within the TTL', async (t) => {
  const observer = await build(t, { redis: redis.url, presence: { events: ['lobby'], ttl: 1000, anonymous: true } })
  const watcher = await observer.connect('?channels=lobby')
  await watcher.waitFor((f) => f.type === 'subscribed')

  const clean = await build(t, { redis: redis.url, presence: { ttl: 1000, anonymous: true } })
  const guest = await clean.connect('?channels=lobby')
  await guest.waitFor((f) => f.type === 'subscribed')
  t.equal((await presenceOf(observer, 'lobby')).count, 2, 'anonymous clients count by connection')
  await clean.app.close()
  t.equal((await presenceOf(observer, 'lobby')).count, 1, 'a closed instance\'s users are gone as soon as close() resolves')

  const service = await startService(t, { REDIS_URL: redis.url, PRESENCE_TTL: '1000', PRESENCE_ANONYMOUS: 'true' })
  const doomed = await Promise.all([0, 1, 2].map(async () => await TestClient.connect(wsUrl(service.url, '?channels=lobby'))))
  await Promise.all(doomed.map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
  t.equal((await presenceOf(observer, 'lobby')).count, 4)
  const leavesBefore = events(watcher).filter(([type]) => type === 'leave').length
  service.process.kill('SIGKILL')
  const killedAt = Date.now()
  let count = 4
  while (count > 1 && Date.now() - killedAt < 3000) {
    count = (await presenceOf(observer, 'lobby')).count
    await sleep(50)
  }
  const after = Date.now() - killedAt
  t.equal(count, 1, `the killed instance's 3 users are gone ${after} ms after the kill`)
  t.ok(after <= 1000 + 500, 'within the TTL (1 s) and one poll')
  t.ok(await waitUntil(() => events(watcher).filter(([type]) => type === 'leave').length === leavesBefore + 3, 2000),
    'and a leave frame for each reached the remaining subscribers')
})

t.test('GET /presence has the same auth as subscribing, and says which channels are not tracked', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET }, presence: { channels: ['room', 'secret-room'] } })
  t.equal((await fetch(`${app.url}/presence/room`)).status, 401)
  const denied = await fetch(`${app.url}/presence/staff`, { headers: { authorization: `Bearer ${tokenFor('x')}` } })
  t.equal(denied.status, 403)
  const untracked = await fetch(`${app.url}/presence/quiet`, { headers: { authorization: `Bearer ${tokenFor('x')}` } })
  t.equal(untracked.status, 404)
  t.match(await untracked.json(), { code: 'FRB_NO_PRESENCE' })
  t.same(await presenceOf(app, 'room'), { channel: 'room', count: 0, members: [] })
})

t.test('on the memory bus, presence works within the one instance', async (t) => {
  const app = await build(t, { jwt: { secret: SECRET }, presence: { events: ['room'], ttl: 150 } })
  const first = await join(app, 'fay')
  await join(app, 'fay')
  const gus = await join(app, 'gus')
  await join(app, 'hal', 'quiet')
  await sleep(120)
  t.same((await presenceOf(app, 'room')).members.sort(), ['fay', 'gus'], 'refreshes change nothing')
  t.same((await presenceOf(app, 'quiet')).members, ['hal'])
  await gus.close()
  t.ok(await waitUntil(() => events(first).length === 3, 2000))
  t.same(events(first), [['join', 'fay'], ['join', 'gus'], ['leave', 'gus']])
})

t.test('members deleted from Redis come back with the next refresh; an update Redis cannot take is logged', async (t) => {
  const app = await build(t, { redis: redis.url, presence: { ttl: 600, anonymous: true } })
  const client = await app.connect('?channels=flaky')
  await client.waitFor((f) => f.type === 'subscribed')
  await redis.client().del('frb:p:flaky', 'frb:pc:flaky')
  t.equal((await presenceOf(app, 'flaky')).count, 0, 'the entries are gone from Redis')
  await sleep(400)
  t.equal((await presenceOf(app, 'flaky')).count, 1, 'the refresh (every third of the TTL) restored them')

  const ownClient = new Redis(redis.url, { enableOfflineQueue: false })
  t.teardown(() => ownClient.disconnect())
  const cut = await build(t, { redis: ownClient, presence: { anonymous: true } })
  const other = await cut.connect()
  ownClient.disconnect()
  other.send({ type: 'subscribe', channel: 'elsewhere' })
  t.ok(await waitUntil(() => cut.app.broadcastStats().subscribesDeferred === 1, 3000), 'the subscribe waits for the bus: its history cannot be read')
  t.same(other.frames.filter((f) => f.channel === 'elsewhere'), [], 'nothing says it is subscribed meanwhile')
  t.ok(await waitUntil(() => cut.logs.some((line) => /presence update failed/.test(line.msg)), 2000), 'the failed presence update is logged')
})

t.test('a connection\'s presence identity: the token\'s sub, a plain identity, else the connection id', async (t) => {
  t.equal(presenceIdentity({ sub: 'ann', exp: 1 }, 'c1'), '"ann"', 'claims are not shown, only sub')
  t.equal(presenceIdentity('bob', 'c1'), '"bob"')
  t.equal(presenceIdentity(42, 'c1'), '42')
  t.equal(presenceIdentity(Number.NaN, 'c1'), '"c1"')
  t.equal(presenceIdentity({ sub: 7 }, 'c1'), '"c1"', 'a sub that is not a string is not an identity')
  t.equal(presenceIdentity(undefined, 'c1'), '"c1"', 'anonymous: the connection id')
})

t.test('by default, anonymous connections are not tracked: no presence work in Redis for an open service', async (t) => {
  const app = await build(t, { redis: redis.url })
  const clients = await Promise.all(Array.from({ length: 5 }, async () => await app.connect(`?channels=${Array.from({ length: 20 }, (_, i) => `anon-${i}`).join(',')}`)))
  for (const client of clients) await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'anon-19')
  t.equal((await presenceOf(app, 'anon-0')).count, 0, 'nobody is listed')
  t.same(await redis.client().keys('frb:p*:anon-*'), [], 'no presence key was written')
  const tracked = await build(t, { redis: redis.url, presence: { anonymous: true } })
  const client = await tracked.connect('?channels=anon-tracked')
  await client.waitFor((f) => f.type === 'subscribed')
  t.equal((await presenceOf(tracked, 'anon-tracked')).count, 1, 'presence.anonymous: true tracks them, by connection')
})

t.test('a client flapping its subscription does not flood the channel with join and leave frames', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET }, presence: { events: ['room'] } })
  const watcher = await join(app, 'watcher', 'room')
  const flapper = await join(app, 'flapper', 'quiet')
  // 3 s of subscribe and unsubscribe, as fast as the frame budget lets one client go (~170 a second).
  const until = Date.now() + 3000
  let frames = 0
  while (Date.now() < until) {
    flapper.send({ type: 'subscribe', channel: 'room' })
    flapper.send({ type: 'unsubscribe', channel: 'room' })
    frames += 2
    await sleep(12)
  }
  await flapper.waitFor((f) => f.type === 'unsubscribed' && f.channel === 'room', { from: flapper.frames.length - 1 })
  await sleep(1500)
  const seen = events(watcher).filter(([, identity]) => identity === 'flapper')
  t.ok(frames > 300, `the flapper sent ${frames} frames`)
  // A burst of 4 changes, then about one a second: at most 4 + 4.5 over 4.5 s, whatever the frame rate.
  t.ok(seen.length <= 10, `the watcher saw ${seen.length} presence frames of the flapper (259 + 259 before)`)
  t.equal(seen.length % 2, 0, 'joins and leaves pair up')
  t.same(seen.at(-1)?.[0] ?? 'leave', 'leave', 'the last word is a leave: the flapper is gone')
  t.same((await presenceOf(app, 'room')).members, ['watcher'], 'only the watcher is listed')
})
