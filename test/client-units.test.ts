import t from 'tap'
import { backoff } from '../client/backoff.js'
import { tokenExpiry } from '../client/token.js'
import { httpUrl } from '../client/url.js'
import { call, Emitter } from '../client/emitter.js'
import { BroadcastError } from '../client/index.js'

t.test('back-off: exponential from the minimum, capped, with full jitter between 0 and the cap of the attempt', async (t) => {
  t.same([0, 1, 2, 3, 4, 5, 6, 10].map((attempt) => backoff(attempt, 500, 20_000, () => 0.999999)),
    [499, 999, 1999, 3999, 7999, 15_999, 19_999, 19_999], 'the largest delay of each attempt')
  t.equal(backoff(3, 500, 20_000, () => 0), 0, 'the smallest is 0')
  t.equal(backoff(10_000, 500, 20_000, () => 0.5), 10_000, 'a huge attempt number does not overflow past the cap')
  const delays = Array.from({ length: 2000 }, () => backoff(4, 500, 20_000))
  t.ok(delays.every((delay) => Number.isInteger(delay) && delay >= 0 && delay < 8000), 'Math.random by default, within [0, 8000)')
  t.ok(new Set(delays.map((delay) => Math.floor(delay / 1000))).size === 8, 'spread over the whole range')
})

t.test('a JWT\'s exp is read without verifying it; anything else has none', async (t) => {
  const jwt = (payload: unknown): string => `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2ln`
  t.equal(tokenExpiry(jwt({ sub: 'ann', exp: 1_700_000_000 })), 1_700_000_000_000)
  t.equal(tokenExpiry(jwt({ sub: 'é?>~', exp: 1 })), 1000, 'base64url characters (- and _) in the payload')
  t.equal(tokenExpiry(jwt({ sub: 'ann' })), undefined, 'no exp')
  t.equal(tokenExpiry(jwt({ exp: '1700000000' })), undefined, 'an exp that is not a number')
  t.equal(tokenExpiry('opaque-session-key'), undefined, 'not a JWT')
  t.equal(tokenExpiry('a.b%c.d'), undefined, 'not base64')
  t.equal(tokenExpiry('a.bnVsbA.c'), undefined, 'a payload of null')
})

t.test('HTTP routes are found from the WebSocket URL', async (t) => {
  t.equal(httpUrl('ws://127.0.0.1:3000/ws?channels=a', '/presence/news'), 'http://127.0.0.1:3000/presence/news')
  t.equal(httpUrl('wss://hub.example.com/ws', '/presence/a%3Ab'), 'https://hub.example.com/presence/a%3Ab')
  t.equal(httpUrl('wss://hub.example.com/hub/ws', '/hub/history/news?since=1'), 'https://hub.example.com/hub/history/news?since=1')
  t.equal(httpUrl('wss://hub.example.com/ws', 'https://api.example.com/presence/news'), 'https://api.example.com/presence/news', 'a whole URL')
  t.throws(() => httpUrl('/ws', '/presence/news'), TypeError, 'a relative URL needs a page')
  const global = globalThis as { location?: { href: string } }
  global.location = { href: 'https://app.example.com/room/1' }
  t.teardown(() => { delete global.location })
  t.equal(httpUrl('/ws', '/presence/news'), 'https://app.example.com/presence/news', 'in a browser, relative to the page')
})

t.test('the emitter: on returns off; a listener that throws does not stop the others, its error comes on its own turn', async (t) => {
  type Events = { ping: [number] }
  class Pinger extends Emitter<Events> {
    ping (n: number): void { this.emit('ping', n) }
  }
  const pinger = new Pinger()
  pinger.ping(0)
  const heard: number[] = []
  const off = pinger.on('ping', (n) => heard.push(n))
  const second = (n: number): void => { heard.push(n * 10) }
  pinger.on('ping', second)
  pinger.ping(1)
  off()
  pinger.ping(2)
  pinger.off('ping', second)
  pinger.ping(3)
  t.same(heard, [1, 10, 20])

  // tap fails a test on an uncaught exception: its listeners step aside for this one.
  const listeners = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  const thrown = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve))
  let after = false
  call(() => { throw new Error('listener bug') })
  call(undefined)
  after = true
  const err = await thrown
  for (const listener of listeners) process.on('uncaughtException', listener)
  t.ok(after, 'the caller went on')
  t.match(err, { message: 'listener bug' })
})

t.test('BroadcastError carries the code, status and channel', async (t) => {
  const error = new BroadcastError('no', 'FRB_CHANNEL_FORBIDDEN', 403, 'news')
  t.match(error, { name: 'BroadcastError', message: 'no', code: 'FRB_CHANNEL_FORBIDDEN', status: 403, channel: 'news' })
  t.ok(error instanceof Error)
})
