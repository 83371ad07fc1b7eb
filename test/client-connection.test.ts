import t from 'tap'
import { createSigner } from 'fast-jwt'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'
import { hubUrl, recordingClient, until } from './helpers/recording-client.js'
import { WebSocket } from 'ws'
import { BroadcastClient } from '../client/index.js'
import { sessionsOf } from './helpers/sessions.js'

// The connection loop against a real hub: what it retries, what stops it, and how it notices a
// link that went silent.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-client-conn-secret-of-32-chars'
const FAST = { minReconnectDelay: 50, maxReconnectDelay: 300 }
const sign = createSigner({ key: SECRET, expiresIn: 60_000 })

t.test('an upgrade refused with 401 stops a static token at once, a token function after one more try; connect() starts again', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const fixed = recordingClient(t, hubUrl(app.url), { ...FAST, token: 'not-a-token' })
  await until(() => fixed.count('error') === 1, 5000, 'the refusal')
  t.match(fixed.errors(), [{ name: 'BroadcastError', status: 401 }])
  t.match(fixed.events[1], { event: 'disconnected', code: 1006, reason: /401/ })

  let good = false
  const minted = recordingClient(t, hubUrl(app.url), { ...FAST, token: async () => good ? sign({ sub: 'ann', channels: ['*'] }) : 'expired' })
  const sub = minted.subscribe('news')
  await until(() => minted.count('error') === 1, 5000, 'the refusal')
  await sleep(500)
  t.equal(minted.count('connecting'), 2, 'one retry with a fresh token, then no more')
  t.equal(fixed.count('connecting'), 1)
  t.equal(minted.client.state, 'disconnected')
  good = true
  minted.client.connect()
  minted.client.connect()
  await sub.ready
  t.equal(minted.count('connecting'), 3, 'connect() started it again, once')
})

t.test('an upgrade refused for another reason stops (404) or backs off (503 until a place is free)', async (t) => {
  const app = await build(t, { redis: redis.url, maxConnections: 1 })
  const lost = recordingClient(t, hubUrl(app.url, '/nowhere'), FAST)
  await until(() => lost.count('error') === 1, 5000, 'the refusal')
  t.match(lost.errors(), [{ status: 404 }])
  const first = recordingClient(t, hubUrl(app.url), FAST)
  await first.subscribe('a').ready
  const second = recordingClient(t, hubUrl(app.url), FAST)
  const waiting = second.subscribe('a')
  await until(() => second.count('disconnected') >= 3, 10_000, 'three refusals')
  t.ok(second.events.filter((e) => e.event === 'disconnected').every((e) => /503/.test(e.reason ?? '')), 'each a 503')
  first.client.close()
  await waiting.ready
  t.same(second.errors(), [], 'no error: it waited its turn')
})

t.test('closes that retrying will not change stop the client: 1008 (frame rate) and 1009 (frame size)', async (t) => {
  const limited = await build(t, { redis: redis.url, clientFrameRate: 1, clientFrameBurst: 1 })
  const chatty = recordingClient(t, hubUrl(limited.url), FAST)
  for (const channel of ['a', 'b', 'c', 'd']) chatty.subscribe(channel)
  await until(() => chatty.count('error') === 1, 5000, 'the close')
  t.match(chatty.events.find((e) => e.event === 'disconnected'), { code: 1008 })
  t.match(chatty.errors(), [{ message: /1008/ }])

  const small = await build(t, { redis: redis.url, maxPayload: 64 })
  const wordy = recordingClient(t, hubUrl(small.url), FAST)
  wordy.subscribe('c'.repeat(100))
  await until(() => wordy.count('error') === 1, 5000, 'the close')
  t.match(wordy.events.find((e) => e.event === 'disconnected'), { code: 1009 })
  await sleep(300)
  t.equal(chatty.count('connecting') + wordy.count('connecting'), 2, 'neither tried again')
})

t.test('a token function that fails is reported and tried again with back-off', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  let calls = 0
  const client = recordingClient(t, hubUrl(app.url), {
    ...FAST,
    token: async () => {
      if (calls++ === 0) throw new Error('auth server down')
      return sign({ sub: 'ann', channels: ['*'] })
    }
  })
  await client.subscribe('news').ready
  t.match(client.errors(), [{ message: 'token() failed: auth server down' }])
  t.same(client.events.map((e) => e.event), ['connecting', 'error', 'disconnected', 'connecting', 'connected'])
})

t.test('a URL no WebSocket can open stops the client; without a WebSocket class the constructor says what to pass', async (t) => {
  const client = recordingClient(t, 'not a url', FAST)
  await until(() => client.count('error') === 1, 5000, 'the error')
  t.equal(client.client.state, 'disconnected')
  const global = globalThis as { WebSocket?: unknown }
  const builtIn = global.WebSocket
  delete global.WebSocket
  t.teardown(() => { if (builtIn !== undefined) global.WebSocket = builtIn })
  t.throws(() => new BroadcastClient('ws://127.0.0.1/ws'), { name: 'TypeError', message: /pass the ws package/ })
})

/** A ws socket without terminate(), as a browser's WebSocket has none: close() is all there is. */
class BrowserLikeWebSocket extends WebSocket {
  constructor (url: string, protocols?: string[]) {
    super(url, protocols)
    Object.defineProperty(this, 'terminate', { value: undefined })
    // Nor does a browser's error event say anything.
    Object.defineProperty(this, 'onerror', {
      get: () => undefined,
      set: (handler: (event: object) => void) => { this.addEventListener('error', () => handler({})) }
    })
  }
}

for (const [kind, WebSocketClass] of [['ws', WebSocket], ['a browser-like WebSocket', BrowserLikeWebSocket]] as const) {
  t.test(`a link that goes silent is noticed by a ping, replaced, and what was published meanwhile arrives once (${kind})`, async (t) => {
    const app = await build(t, { redis: redis.url })
    const proxy = await startTcpProxy(Number(new URL(app.url).port))
    t.teardown(() => proxy.close())
    const client = recordingClient(t, `ws://127.0.0.1:${proxy.port}/ws`, {
      ...FAST, WebSocket: WebSocketClass, pingInterval: 300, pongTimeout: 300, connectTimeout: 600
    })
    await client.subscribe('news').ready
    await app.publish({ channel: 'news', data: 1 })
    await until(() => client.received('news').length === 1, 5000, 'the first message')
    proxy.blackhole()
    await app.publish({ channel: 'news', data: 2 })
    await until(() => client.events.some((e) => e.reason === 'no answer to a ping'), 10_000, 'the silent link dropped')
    await until(() => client.events.some((e) => e.reason === 'not open within connectTimeout'), 10_000, 'an upgrade that never answers given up')
    proxy.pass()
    await app.publish({ channel: 'news', data: 3 })
    await until(() => client.received('news').length === 3, 10_000, 'everything', () => client.events)
    t.same(client.received('news'), [1, 2, 3])
  })
}

t.test('closed while its token is on its way, the client opens nothing and reports nothing', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  let release = (_token: string): void => {}
  const late = recordingClient(t, hubUrl(app.url), { token: async () => await new Promise<string>((resolve) => { release = resolve }) })
  let fail = (_err: Error): void => {}
  const failing = recordingClient(t, hubUrl(app.url), { token: async () => await new Promise<string>((_resolve, reject) => { fail = reject }) })
  const never = recordingClient(t, hubUrl(app.url))
  never.client.close()
  await until(() => late.count('connecting') === 1 && failing.count('connecting') === 1, 5000, 'both waiting for a token')
  late.client.close()
  failing.client.close()
  release(sign({ sub: 'ann', channels: ['*'] }))
  fail(new Error('too late'))
  await sleep(300)
  t.same(late.events.map((e) => [e.event, e.code]), [['connecting', undefined], ['disconnected', 1000]])
  t.same(failing.events.map((e) => e.event), ['connecting', 'disconnected'])
  t.same(never.events, [], 'closed before it started: it never did')
  t.equal(app.app.broadcastConnections.size, 0)
})

t.test('a refresh whose token function fails is reported, and the 4401 at expiry brings a new connection; one overtaken by a reconnect is dropped', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const brief = createSigner({ key: SECRET, expiresIn: 2000 })
  let calls = 0
  const client = recordingClient(t, hubUrl(app.url), {
    ...FAST,
    token: async () => {
      if (++calls === 2) throw new Error('refresh denied')
      return brief({ sub: 'ann', channels: ['*'] })
    }
  })
  await client.subscribe('news').ready
  await until(() => client.count('connected') === 2, 10_000, 'a second connection', () => client.events)
  t.match(client.errors(), [{ message: 'token() failed: refresh denied' }])
  t.ok(client.events.some((e) => e.event === 'disconnected' && e.code === 4401), 'the hub closed the expired connection with 4401')

  let open = (): void => {}
  let slowCalls = 0
  const slow = recordingClient(t, hubUrl(app.url), {
    ...FAST,
    token: async () => {
      if (++slowCalls === 2) await new Promise<void>((resolve) => { open = resolve })
      return brief({ sub: 'bob', channels: ['*'] })
    }
  })
  await slow.subscribe('news').ready
  await until(() => slowCalls === 2, 10_000, 'a refresh under way')
  for (const session of sessionsOf(app.app)) if (session.identity !== undefined && (session.identity as { sub: string }).sub === 'bob') session.socket.terminate()
  await until(() => slow.count('connected') === 2, 10_000, 'the reconnect')
  open()
  await sleep(200)
  t.same(slow.errors(), [], 'the refresh meant for the old connection went nowhere')
})

t.test('a subscribe the bus cannot serve (Redis down) is completed once Redis is back', async (t) => {
  const app = await build(t, { redis: redis.url, redisTimeout: 300 })
  const client = recordingClient(t, hubUrl(app.url), FAST)
  await client.subscribe('first').ready
  await redis.kill()
  const late = client.subscribe('late')
  await sleep(1000)
  await redis.start()
  await late.ready
  await until(() => app.app.broadcastStats().subscriberReconnects >= 1, 10_000, 'the hub back on Redis')
  await app.publish({ channel: 'late', data: 'arrived' })
  await until(() => client.received('late').length === 1, 10_000, 'the message')
  t.same(client.errors(), [], 'no error reached the application')
  t.equal(client.count('connected'), 1, 'without reconnecting')
})

t.test('a close by the back end (4403 from POST /disconnect: a logout, a ban) stops the client', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const client = recordingClient(t, hubUrl(app.url), { ...FAST, token: sign({ sub: '42', channels: ['*'] }) })
  await client.subscribe('news').ready
  const answer = await fetch(`${app.url}/disconnect`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ identity: '42' }) })
  t.equal(answer.status, 202)
  await until(() => client.count('error') === 1, 5000, 'the close')
  t.match(client.events.find((e) => e.event === 'disconnected'), { code: 4403 })
  t.match(client.errors(), [{ message: /4403/ }])
  await sleep(300)
  t.equal(client.count('connecting'), 1, 'it did not come back')
})

t.test('a subscription with a filter gets only the messages whose tags match, and the tags with them', async (t) => {
  const app = await build(t, { redis: redis.url })
  const client = recordingClient(t, hubUrl(app.url), FAST)
  const tags: unknown[] = []
  await client.subscribe('prices', { onMessage (_, info) { tags.push(info.tags) } }, { filter: { symbol: ['AAPL', 'MSFT'] } }).ready
  for (const symbol of ['AAPL', 'IBM', 'MSFT']) await app.app.broadcast(symbol, { channel: 'prices', tags: { symbol } })
  await until(() => client.received('prices').length === 2, 5000, 'the matching messages')
  await sleep(100)
  t.same(client.received('prices'), ['AAPL', 'MSFT'])
  t.same(tags, [{ symbol: 'AAPL' }, { symbol: 'MSFT' }])

  // The connection drops: the resubscribe carries the filter again, and its replay is filtered too.
  for (const session of sessionsOf(app.app)) session.socket.terminate()
  await until(() => client.count('connected') === 2, 5000, 'the reconnect')
  for (const symbol of ['IBM', 'AAPL']) await app.app.broadcast(symbol, { channel: 'prices', tags: { symbol } })
  await until(() => client.received('prices').length === 3, 5000, 'the next matching message')
  await sleep(100)
  t.same(client.received('prices'), ['AAPL', 'MSFT', 'AAPL'], 'still only the matching ones')
  t.same(client.resets.get('prices'), [], 'skipped offsets are not taken for losses')
})
