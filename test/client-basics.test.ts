import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { sessionsOf } from './helpers/sessions.js'
import { hubUrl, recordingClient, until } from './helpers/recording-client.js'
import type { BroadcastError, PresenceEvent, SubscribedInfo } from '../client/index.js'

// The client against a real hub on a real Redis: what a user sees when everything works, when
// the hub refuses something, and when a connection drops and comes back.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-client-test-secret-of-32-chars'
const FAST = { minReconnectDelay: 50, maxReconnectDelay: 500 }

/** A token function whose second and later calls (the reconnects) wait for `reopen()`. */
function heldToken (channels: string[]): { token: () => Promise<string>, reopen: () => void } {
  const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
  let reopen = (): void => {}
  const published = new Promise<void>((resolve) => { reopen = resolve })
  let calls = 0
  const token = async (): Promise<string> => {
    if (calls++ > 0) await published
    return sign({ sub: 'ann', channels })
  }
  return { token, reopen: () => { reopen() } }
}

t.test('a subscription is ready at its subscribed reply, receives each message with its position, in order, and stops at unsubscribe', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = recordingClient(t, hubUrl(app.url), FAST)
  const subscribed: SubscribedInfo[] = []
  const news = client.subscribe('news', { onSubscribed: (info) => subscribed.push(info) })
  t.same(await news.ready, { channel: 'news' }, 'a channel with no history yet has no position')
  t.equal(client.client.state, 'connected')
  await app.publish({ channel: 'news', data: { n: 1 } })
  await app.publish({ channel: 'news', data: { n: 2 } })
  await app.publish({ data: 'to everyone' })
  await until(() => client.received('news').length === 2 && client.everyone.length === 1, 5000, 'two messages and one broadcast')
  const [first] = client.messages.get('news') ?? []
  t.match(client.messages.get('news'), [{ data: { n: 1 }, offset: 1, epoch: String }, { data: { n: 2 }, offset: 2, epoch: first.epoch }])
  t.same(client.everyone, ['to everyone'], 'a message with no channel is a client-level message event')
  t.same(news.position, { offset: 2, epoch: first.epoch }, 'the position is the last message seen')

  const later = client.subscribe('later')
  t.match(await later.ready, { channel: 'later' }, 'a subscription made while connected is sent at once')
  t.throws(() => client.client.subscribe('news'), { name: 'BroadcastError', channel: 'news' }, 'one subscription per channel')
  news.unsubscribe()
  news.unsubscribe()
  await until(() => app.app.broadcastConnections.size === 1 && [...app.app.broadcastConnections][0].channels.size === 1, 5000, 'the hub dropped the channel')
  await app.publish({ channel: 'news', data: { n: 3 } })
  await app.publish({ channel: 'later', data: 'after' })
  await until(() => client.received('later').length === 1, 5000, 'the other channel still receives')
  t.same(client.received('news'), [{ n: 1 }, { n: 2 }], 'nothing after unsubscribe')
  t.equal(subscribed.length, 1)
  t.same(client.events.map((e) => e.event), ['connecting', 'connected'])
})

t.test('a dropped socket is replaced and every channel resumes from its last offset: what was published meanwhile arrives once, in order', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  // The token function holds the reconnect back until everything below was published.
  const { token, reopen } = heldToken(['*'])
  const client = recordingClient(t, hubUrl(app.url), { ...FAST, token })
  const subscribed: SubscribedInfo[] = []
  await Promise.all(['a', 'b'].map(async (channel) => await client.subscribe(channel, { onSubscribed: (info) => subscribed.push(info) }).ready))
  for (let n = 1; n <= 3; n++) await app.publish({ channel: 'a', data: n })
  await until(() => client.received('a').length === 3, 5000, 'the first three')

  for (const session of sessionsOf(app.app)) session.socket.terminate()
  for (let n = 4; n <= 6; n++) await app.publish({ channel: 'a', data: n })
  await app.publish({ channel: 'b', data: 'b1' })
  reopen()
  await until(() => client.received('a').length === 6 && client.received('b').length === 1, 10_000, 'everything, after the reconnect',
    () => client.events)
  t.same(client.received('a'), [1, 2, 3, 4, 5, 6], 'once each, in order')
  t.same(client.received('b'), ['b1'])
  t.match(client.events.map((e) => e.event), ['connecting', 'connected', 'disconnected', 'connecting', 'connected'])
  t.equal(client.events[2].code, 1006)
  t.match(subscribed.slice(2).find((info) => info.channel === 'a'), { recovered: true, offset: Number }, 'a resumed from its offset')
  t.match(subscribed.slice(2).filter((info) => info.channel === 'b'), [{ recovered: true, offset: 1 }],
    'b had no history when it subscribed and has one now: it resumed from the start of it')
  t.same([...client.resets.values()].flat(), [], 'no reset')
})

t.test('a resume the history cannot honour calls onReset with the new position, and the messages after it follow', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET }, history: { size: 5, maxReplay: 5 } })
  // The token function holds the reconnect back until 20 messages went by, more than the history keeps.
  const { token, reopen } = heldToken(['busy'])
  const client = recordingClient(t, hubUrl(app.url), { ...FAST, token })
  const sub = client.subscribe('busy')
  await sub.ready
  await app.publish({ channel: 'busy', data: 1 })
  await until(() => client.received('busy').length === 1, 5000, 'the first message')
  const epoch = sub.position?.epoch

  for (const session of sessionsOf(app.app)) session.socket.terminate()
  for (let n = 2; n <= 21; n++) await app.publish({ channel: 'busy', data: n })
  reopen()
  await until(() => (client.resets.get('busy') ?? []).length === 1, 10_000, 'a reset')
  t.same(client.resets.get('busy'), [{ channel: 'busy', offset: 21, epoch }], 'the reset says where the channel stands')
  await app.publish({ channel: 'busy', data: 22 })
  await until(() => client.received('busy').length === 2, 5000, 'the next message')
  t.same(client.received('busy'), [1, 22], 'nothing replayed, the live ones follow')
})

t.test('presence() and history() read the HTTP routes with the token; join and leave frames reach the subscription', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET }, presence: { events: ['room'] } })
  const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
  const ann = recordingClient(t, hubUrl(app.url), { ...FAST, token: sign({ sub: 'ann', channels: ['room'] }) })
  const events: Array<[string, PresenceEvent]> = []
  await ann.subscribe('room', {
    onJoin: (event) => events.push(['join', event]),
    onLeave: (event) => events.push(['leave', event])
  }).ready
  const bob = recordingClient(t, hubUrl(app.url), { ...FAST, token: async () => sign({ sub: 'bob', channels: ['room'] }) })
  await bob.subscribe('room').ready
  await until(() => events.length === 2, 5000, 'two joins')
  const presence = await ann.client.presence('room')
  t.same([presence.count, presence.members.sort()], [2, ['ann', 'bob']])
  bob.client.close()
  await until(() => events.length === 3, 5000, 'a leave')
  t.same(events, [['join', { channel: 'room', identity: 'ann' }], ['join', { channel: 'room', identity: 'bob' }], ['leave', { channel: 'room', identity: 'bob' }]])

  await app.publish({ channel: 'room', data: 'kept' })
  t.match(await ann.client.history('room'), { channel: 'room', offset: 1, messages: [{ type: 'message', channel: 'room', offset: 1, data: 'kept' }] })
  t.match(await ann.client.history('room', { since: 1, limit: 10, reverse: true }), { offset: 1, messages: [] })
  const stranger = recordingClient(t, hubUrl(app.url), { token: async () => sign({ sub: 'eve', channels: [] }) })
  await t.rejects(stranger.client.presence('room'), { name: 'BroadcastError', code: 'FRB_CHANNEL_FORBIDDEN', status: 403, channel: 'room' },
    'before any connection, the token function is asked for a token')
  const anonymous = recordingClient(t, hubUrl(app.url))
  anonymous.client.close()
  await t.rejects(anonymous.client.history('room'), { name: 'BroadcastError', status: 401 }, 'no token, no Authorization header')
})

t.test('a subscription the hub refuses rejects ready and calls onError; the other channels go on', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
  const client = recordingClient(t, hubUrl(app.url), { ...FAST, token: sign({ sub: 'ann', channels: ['open'] }) })
  const errors: BroadcastError[] = []
  const closed = client.subscribe('closed', { onError: (error) => errors.push(error) })
  const unawaited = client.subscribe('closed.too')
  const open = client.subscribe('open')
  await t.rejects(closed.ready, { name: 'BroadcastError', code: 'FRB_CHANNEL_FORBIDDEN', channel: 'closed' })
  await t.rejects(unawaited.ready, { code: 'FRB_CHANNEL_FORBIDDEN', channel: 'closed.too' })
  await open.ready
  t.equal(errors.length, 1, 'onError once')
  t.same(client.errors(), [], 'no client-level error')
  const again = client.subscribe('closed')
  await t.rejects(again.ready, { code: 'FRB_CHANNEL_FORBIDDEN' }, 'a refused channel may be asked for again')
  await app.publish({ channel: 'open', data: 1 })
  await until(() => client.received('open').length === 1, 5000, 'the allowed channel receives')

  const pending = client.subscribe('pending')
  pending.unsubscribe()
  await t.rejects(pending.ready, { message: 'unsubscribed' }, 'unsubscribed before its reply: ready rejects')
  const last = client.subscribe('last')
  client.client.close()
  await t.rejects(last.ready, { message: 'the client was closed' })
  client.client.close()
  t.same(client.events.map((e) => e.event), ['connecting', 'connected', 'disconnected'], 'a second close changes nothing')
  t.match(client.events[2], { code: 1000, reason: 'closed by the client' })
})
