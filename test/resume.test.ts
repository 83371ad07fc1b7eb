import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { build, type TestApp } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import { TestClient, wsUrl, type Frame } from './helpers/client.js'

// A client that blinks resumes from the last offset it saw, on any instance, and loses nothing:
// the replay and the live stream meet without a gap or a duplicate. And an instance whose own
// link to Redis blinked reads back what it missed before its clients notice.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

const offsets = (frames: Frame[]): Array<number | undefined> => frames.map((f) => f.offset)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Subscribes with a resume position and returns the subscribed reply. */
async function resume (client: TestClient, channel: string, since: number, epoch: string | undefined): Promise<Frame> {
  const from = client.frames.length
  client.send({ type: 'subscribe', channel, since, epoch })
  return await client.waitFor((f) => f.channel === channel && (f.type === 'subscribed' || f.type === 'error'), { from })
}

t.test('a client cut off in the middle of 1,000 messages resumes on the other instance: all 1,000, in order, once each', async (t) => {
  const options = { redis: redis.url, history: { size: 2000, maxReplay: 1000 } }
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  const first = await a.connect('?channels=feed')
  await first.waitFor((f) => f.type === 'subscribed')
  const publishing = (async () => {
    for (let n = 0; n < 1000; n += 10) {
      await a.app.broadcastMany(range(n, n + 9).map((seq) => ({ channel: 'feed', data: seq })))
      await sleep(2)
    }
  })()
  await waitUntil(() => first.received().length >= 300, 10_000)
  first.socket.terminate()
  const seen = first.received()
  const last = seen[seen.length - 1]
  const second = await b.connect()
  const reply = await resume(second, 'feed', last.offset as number, last.epoch)
  t.same(reply, { type: 'subscribed', channel: 'feed', recovered: true, epoch: last.epoch, offset: reply.offset }, 'recovered: true')
  await publishing
  await second.messages(1000 - seen.length, 10_000)
  const all = [...seen, ...second.received()].map((f) => f.data)
  t.same(all, range(0, 999), `all 1,000 in order, once each (${seen.length} before the cut, ${second.received().length} after)`)
  t.same(offsets(second.received()), range((last.offset as number) + 1, 1000), 'offsets without a gap')
  t.equal(b.app.broadcastStats().resumed, 1, 'the resume is counted')
})

t.test('resume is refused whole, never partial, when the history cannot give everything after the offset', async (t) => {
  const app = await build(t, { redis: redis.url, history: { maxReplay: 50, rules: [{ channels: 'short', size: 5, ttl: 60000 }] } })
  const client = await app.connect()
  const publishMany = async (channel: string, count: number): Promise<Array<{ offset?: number, epoch?: string }>> =>
    await app.app.broadcastMany(range(1, count).map((n) => ({ channel, data: n })))

  // Trimmed: Redis keeps whole stream nodes of 100, so 250 messages with size 5 lose the first ones.
  const [{ epoch: shortEpoch }] = await publishMany('short', 250)
  t.same(await resume(client, 'short', 2, shortEpoch), { type: 'subscribed', channel: 'short', recovered: false, epoch: shortEpoch, offset: 250 },
    'trimmed away: recovered false, with where the channel stands now')

  const [{ epoch }] = await publishMany('capped', 100)
  t.same(await resume(client, 'capped', 10, epoch), { type: 'subscribed', channel: 'capped', recovered: false, epoch, offset: 100 },
    'more than maxReplay (50) behind: recovered false')
  t.same(await resume(client, 'capped', 60, epoch), { type: 'subscribed', channel: 'capped', recovered: true, epoch, offset: 100 },
    'within maxReplay: recovered')
  t.same(offsets(await client.messages(40)), range(61, 100), 'and replayed')
  t.same(await resume(client, 'capped', 101, epoch), { type: 'subscribed', channel: 'capped', recovered: false, epoch, offset: 100 },
    'an offset the channel never reached: recovered false')
  t.same(await resume(client, 'capped', 90, 'another-epoch'), { type: 'subscribed', channel: 'capped', recovered: false, epoch, offset: 100 },
    'another epoch: recovered false')

  await publishMany('deleted', 3)
  const [{ epoch: before }] = await publishMany('deleted', 1)
  await admin.del('frb:h:stream:deleted')
  t.same(await resume(client, 'deleted', 2, before), { type: 'subscribed', channel: 'deleted', recovered: false },
    'the stream was deleted: recovered false, and no position until the next publish')
  const [{ epoch: after }] = await publishMany('deleted', 1)
  // The client is subscribed since the resume above: let the message arrive before resuming again,
  // or it may fall in that resume's window and (offset ≤ the reply's) be left to the reload.
  await client.waitFor((f) => f.type === 'message' && f.channel === 'deleted')
  t.same(await resume(client, 'deleted', 2, before), { type: 'subscribed', channel: 'deleted', recovered: false, epoch: after, offset: 1 },
    'after the next publish: a new epoch, so the old offset cannot be mistaken for a new one')
  await sleep(100)
  t.same(client.received().map((f) => [f.channel, f.offset]), [...range(61, 100).map((n) => ['capped', n]), ['deleted', 1]],
    'nothing partial was ever replayed: only the recovered resume, and what was published after a subscribe')
  t.equal(app.app.broadcastStats().resumeFailures, 6)

  for (const frame of [{ since: -1, epoch }, { since: 1.5, epoch }, { since: '3', epoch }, { since: 3 }, { epoch }, { since: 3, epoch: 'e'.repeat(65) }]) {
    client.send({ type: 'subscribe', channel: 'capped', ...frame })
    t.match(await client.waitFor((f) => f.type === 'error', { from: client.frames.length - 1 }), { code: 'FRB_INVALID_RESUME' },
      `${JSON.stringify(frame).slice(0, 40)} is refused`)
  }
})

t.test('after a Redis restart without persistence the epoch is new: resume says recovered false', async (t) => {
  const app = await build(t, { redis: redis.url })
  const { epoch } = await app.app.broadcast('before', { channel: 'volatile' })
  await redis.kill()
  await redis.start()
  let after: { epoch?: string } | undefined
  while (after === undefined) after = await app.app.broadcast('after', { channel: 'volatile' }).catch(async () => { await sleep(50); return undefined })
  t.not(after.epoch, epoch)
  const client = await app.connect()
  t.same(await resume(client, 'volatile', 1, epoch), { type: 'subscribed', channel: 'volatile', recovered: false, epoch: after.epoch, offset: 1 })
})

t.test('messages published while a resume replays are neither lost nor duplicated (30 runs, random timing)', async (t) => {
  const options = { redis: redis.url, history: { size: 5000, maxReplay: 1000 } }
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  for (let run = 0; run < 30; run++) {
    const channel = `race${run}`
    const published = await a.app.broadcastMany(range(1, 50).map((n) => ({ channel, data: n })))
    const { epoch } = published[0]
    let next = 51
    // Stopped from outside the loop, across awaits: an abort signal says so (a plain flag reads as never changing).
    const stopped = new AbortController()
    // A publisher that keeps going, with a random pause, while the client resumes.
    const publishing = (async () => {
      while (!stopped.signal.aborted) {
        await a.app.broadcast(next++, { channel })
        if (Math.random() < 0.5) await sleep(Math.floor(Math.random() * 3))
      }
    })()
    await sleep(Math.floor(Math.random() * 10))
    const since = 1 + Math.floor(Math.random() * 40)
    const client = await b.connect()
    const reply = await resume(client, channel, since, epoch)
    await sleep(Math.floor(Math.random() * 10))
    stopped.abort()
    await publishing
    const top = next - 1
    await client.messages(top - since, 5000)
    await sleep(20)
    const got = offsets(client.received())
    if (reply.recovered !== true || got.length !== top - since || got.some((offset, i) => offset !== since + 1 + i)) {
      t.fail(`run ${run}: resumed after ${since}, ${top} published: got ${JSON.stringify(got.slice(0, 20))}… (${got.length})`)
    }
    t.same(client.received().map((f) => f.data), range(since + 1, top), `run ${run}: ${top - since} messages after ${since}, once each, in order`)
    await client.close()
  }
})

/** An instance with a client on `channel` that has received message 1; `admin` plays with the history behind its back. */
async function listening (app: TestApp, channel: string): Promise<TestClient> {
  const client = await app.connect(`?channels=${channel}`)
  await client.waitFor((f) => f.type === 'subscribed')
  await app.app.broadcast(1, { channel })
  await client.messages(1)
  return client
}

t.test('a message whose predecessor never arrived: the instance reads the missing one back and delivers both in order', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = await listening(app, 'holes')
  const [first] = client.received()
  // A message Redis kept but whose PUBLISH this instance never received, as when its link blinked.
  await admin.hincrby('frb:h:meta:holes', 'top', 1)
  await admin.xadd('frb:h:stream:holes', '2-0', 'f', `{"type":"message","channel":"holes","offset":2,"epoch":"${first.epoch as string}","data":2}`)
  await app.app.broadcast(3, { channel: 'holes' })
  t.same((await client.messages(3)).map((f) => [f.offset, f.data]), [[1, 1], [2, 2], [3, 3]], 'offset 2 was read back and came first')
  t.equal(app.app.broadcastStats().gapsRepaired, 1)
  await app.app.broadcast(4, { channel: 'holes' })
  t.same(offsets(await client.messages(4)), [1, 2, 3, 4], 'and the channel goes on')
})

t.test('a second gap among the messages held behind a first: each is repaired or reported, and the order holds', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = await listening(app, 'holes2')
  const epoch = client.received()[0].epoch as string
  const text = (offset: number): string => `{"type":"message","channel":"holes2","offset":${offset},"epoch":"${epoch}","data":${offset}}`
  // Redis kept offset 2 but its PUBLISH was lost; offset 4 is lost for good. Offsets 3, 5 and 6
  // arrive together, so 5 and 6 wait behind the repair of 2, and 6 behind the gap at 4.
  await admin.hset('frb:h:meta:holes2', 'top', 6)
  await admin.xadd('frb:h:stream:holes2', '2-0', 'f', text(2))
  await admin.pipeline().publish('frb:c:holes2', text(3)).publish('frb:c:holes2', text(5)).publish('frb:c:holes2', text(6)).exec()
  await client.messages(5)
  t.same(client.frames.filter((f) => f.type !== 'subscribed').map((f) => [f.type, f.offset]),
    [['message', 1], ['message', 2], ['message', 3], ['gap', undefined], ['message', 5], ['message', 6]])
  t.same([app.app.broadcastStats().gapsRepaired, app.app.broadcastStats().gapsReported], [1, 1])
})

t.test('a gap the history cannot fill: the clients get a gap frame, then the messages that follow', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = await listening(app, 'lost')
  // Offset 2 was counted but never stored: nothing can bring it back.
  await admin.hincrby('frb:h:meta:lost', 'top', 1)
  await app.app.broadcast(3, { channel: 'lost' })
  await client.messages(2)
  t.same(client.frames.filter((f) => f.type !== 'subscribed').map((f) => [f.type, f.offset]), [['message', 1], ['gap', undefined], ['message', 3]])
  t.same(client.frames.find((f) => f.type === 'gap'), { type: 'gap', channel: 'lost' })
  t.equal(app.app.broadcastStats().gapsReported, 1)
  t.ok(app.logs.some((line) => /could not be read back/.test(line.msg)), 'logged')
})

t.test('a gap while the history cannot be read (the publisher link is down): a gap frame, and delivery goes on', async (t) => {
  const ownClient = new Redis(redis.url, { enableOfflineQueue: false })
  t.teardown(() => ownClient.disconnect())
  const app = await build(t, { redis: ownClient })
  const client = await listening(app, 'unreadable')
  const other = await build(t, { redis: redis.url })
  ownClient.disconnect()
  await admin.hincrby('frb:h:meta:unreadable', 'top', 1)
  await other.app.broadcast(3, { channel: 'unreadable' })
  await client.messages(2)
  t.same(client.frames.filter((f) => f.type !== 'subscribed').map((f) => [f.type, f.offset]), [['message', 1], ['gap', undefined], ['message', 3]])
  t.ok(app.logs.some((line) => /reading back missed messages failed/.test(line.msg)), 'the failed read is logged')
})

t.test('the subscriber connection is killed while messages flow: every client still gets every message, in order', async (t) => {
  const [a, b] = await Promise.all([build(t, { redis: redis.url }), build(t, { redis: redis.url })])
  const clients = await Promise.all([b.connect('?channels=flow'), b.connect('?channels=flow')])
  await Promise.all(clients.map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
  await a.app.broadcast(0, { channel: 'flow' })
  await Promise.all(clients.map(async (c) => await c.messages(1)))
  const publishing = (async () => {
    for (let n = 1; n < 300; n++) {
      await a.app.broadcast(n, { channel: 'flow' })
      await sleep(1)
    }
  })()
  await sleep(50)
  t.ok(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) >= 1, 'subscriber connections killed mid-stream')
  await publishing
  for (const client of clients) {
    t.same((await client.messages(300, 5000)).map((f) => f.data), range(0, 299), 'all 300, in order, once each')
    t.equal(client.frames.filter((f) => f.type === 'gap').length, 0, 'without a gap frame: the instance repaired it')
  }
  t.ok(b.app.broadcastStats().gapsRepaired >= 1, `repairs: ${b.app.broadcastStats().gapsRepaired}`)
})

t.test('after a reconnect, missed messages are read back even when nothing more is published', async (t) => {
  const [a, b] = await Promise.all([build(t, { redis: redis.url }), build(t, { redis: redis.url, history: { maxReplay: 20 } })])
  const client = await listening(b, 'quiet')
  const lossy = await listening(b, 'busy')
  const expired = await listening(b, 'expiring')
  await admin.pexpire('frb:h:meta:expiring', 1)
  await admin.pexpire('frb:h:stream:expiring', 1)
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  // Published while b's subscriber is away: b hears none of it live.
  await a.app.broadcastMany(range(2, 6).map((n) => ({ channel: 'quiet', data: n })))
  await a.app.broadcastMany(range(2, 40).map((n) => ({ channel: 'busy', data: n })))
  t.same((await client.messages(6)).map((f) => f.data), range(1, 6), 'the missed messages arrive once the subscriber is back')
  t.same(await lossy.waitFor((f) => f.type === 'gap'), { type: 'gap', channel: 'busy' }, 'more than maxReplay missed: a gap frame')
  const last = lossy.received()[0]
  t.same(await resume(lossy, 'busy', last.offset as number, last.epoch),
    { type: 'subscribed', channel: 'busy', recovered: false, epoch: last.epoch, offset: 40 }, 'and resuming tells the client to reload')
  await sleep(100)
  t.same(expired.frames.filter((f) => f.type !== 'subscribed').length, 1, 'a channel whose history expired had nothing to read back')
})

t.test('subscribing again to a channel already subscribed loses nothing, and a failed read keeps the subscription', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = await listening(app, 'again')
  let next = 2
  const stopped = new AbortController()
  const publishing = (async () => {
    while (!stopped.signal.aborted) {
      await app.app.broadcast(next++, { channel: 'again' })
      await sleep(1)
    }
  })()
  for (let i = 0; i < 5; i++) {
    const from = client.frames.length
    client.send({ type: 'subscribe', channel: 'again' })
    await client.waitFor((f) => f.type === 'subscribed', { from })
  }
  stopped.abort()
  await publishing
  const top = next - 1
  t.same((await client.messages(top)).map((f) => f.data), range(1, top), `all ${top} messages, in order, once each`)

  const ownClient = new Redis(redis.url, { enableOfflineQueue: false })
  t.teardown(() => ownClient.disconnect())
  const cut = await build(t, { redis: ownClient })
  const member = await listening(cut, 'kept')
  ownClient.disconnect()
  member.send({ type: 'subscribe', channel: 'kept', since: 0, epoch: member.received()[0].epoch })
  t.match(await member.waitFor((f) => f.type === 'error'), { code: 'FRB_BUS_UNAVAILABLE' }, 'the resume fails: the history cannot be read')
  await app.app.broadcast(2, { channel: 'kept' })
  t.same((await member.messages(2)).map((f) => f.data), [1, 2], 'but the subscription it had still delivers')
})

t.test('a channel that had no live message yet is read back after a reconnect too', async (t) => {
  const [a, b] = await Promise.all([build(t, { redis: redis.url }), build(t, { redis: redis.url })])
  await a.app.broadcastMany(range(1, 3).map((n) => ({ channel: 'calm', data: n })))
  const client = await b.connect('?channels=calm')
  t.match(await client.waitFor((f) => f.type === 'subscribed'), { offset: 3 })
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await a.app.broadcastMany(range(4, 6).map((n) => ({ channel: 'calm', data: n })))
  t.same((await client.messages(3)).map((f) => f.data), [4, 5, 6], 'what was published while the subscriber was away arrives')
})

t.test('a connection closed as a slow consumer in the middle of its replay is simply gone', async (t) => {
  // With compression, ws deflates each frame and holds it meanwhile: the second replayed message
  // already finds more than slowConsumerBytes (1) unsent.
  const app = await build(t, { redis: redis.url, compression: true, slowConsumerBytes: 1 })
  const { epoch } = (await app.app.broadcastMany(range(1, 5).map((n) => ({ channel: 'heavy', data: n }))))[0]
  const client = await TestClient.connect(wsUrl(app.url), { perMessageDeflate: true })
  t.teardown(() => client.close())
  client.send({ type: 'subscribe', channel: 'heavy', since: 0, epoch })
  t.equal((await client.closed).code, 4008)
  t.equal(app.app.broadcastStats().slowConsumerCloses, 1)
  t.equal(app.app.broadcastConnections.size, 0)
})
