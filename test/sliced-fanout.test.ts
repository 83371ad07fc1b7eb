import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import { build, type TestApp } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'

// A fan-out to thousands of sockets is written in slices, the event loop free between them: each
// socket still gets every message once and in order, across channels, and pings, publishes, slow
// consumers and shutdown are handled in the middle of one.

const redis = await startRedis()
t.teardown(() => redis.stop())

const CHANNELS = ['a', 'b', 'c']

/** A plain ws client that records the seq of every message it gets, and its close code. */
class Listener {
  readonly seqs: number[] = []
  subscribed = 0
  closeCode: number | undefined
  constructor (readonly socket: WebSocket, readonly channels: string[]) {
    socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string, data?: { seq: number } }
      if (frame.type === 'subscribed') this.subscribed++
      else if (frame.type === 'message' && typeof frame.data?.seq === 'number') this.seqs.push(frame.data.seq)
    })
    socket.on('close', (code) => { this.closeCode = code })
  }
}

/** Opens `count` sockets, 100 at a time; socket i is on `channelsOf(i)`. Resolves once all are subscribed. */
async function openMany (t: Test, url: string, count: number, channelsOf: (i: number) => string[]): Promise<Listener[]> {
  const listeners: Listener[] = []
  for (let first = 0; first < count; first += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - first) }, async (_, k) => {
      const channels = channelsOf(first + k)
      const socket = new WebSocket(`${url.replace('http', 'ws')}/ws?channels=${channels.join(',')}`, { perMessageDeflate: false })
      const listener = new Listener(socket, channels)
      listeners.push(listener)
      await waitUntil(() => listener.subscribed === channels.length, 30_000)
    }))
  }
  t.teardown(() => { for (const listener of listeners) listener.socket.terminate() })
  return listeners
}

/** Resolves once `done` holds, checking every turn: a poll between the slices of a fan-out. */
async function untilTurn (done: () => boolean, timeout: number): Promise<boolean> {
  const deadline = Date.now() + timeout
  while (!done() && Date.now() < deadline) await nextTurn()
  return done()
}

const pad = 'x'.repeat(1024)

t.test('three channels, interleaved publishes, 2,000 sockets each: every socket gets each of its messages once, in publish order', async (t) => {
  const { app, url } = await build(t, { redis: redis.url })
  // Socket i is on the two channels other than CHANNELS[i % 3]: each channel has 2,000 sockets.
  const listeners = await openMany(t, url, 3000, (i) => CHANNELS.filter((_, c) => c !== i % 3))
  const { writesSliced: slicedBefore, messagesOut: outBefore } = app.broadcastStats()
  const messages = 150
  await Promise.all(Array.from({ length: messages }, async (_, seq) => await app.broadcast({ seq, pad }, { channel: CHANNELS[seq % 3] })))
  const due = (listener: Listener): number[] =>
    Array.from({ length: messages }, (_, seq) => seq).filter((seq) => listener.channels.includes(CHANNELS[seq % 3] as string))
  await waitUntil(() => listeners.every((listener) => listener.seqs.length >= 100), 60_000)
  const wrong = listeners.filter((listener) => JSON.stringify(listener.seqs) !== JSON.stringify(due(listener)))
  t.equal(wrong.length, 0, `every socket got exactly its 100 messages in order${wrong.length > 0 ? `; first wrong: ${JSON.stringify(wrong[0]?.seqs.slice(0, 20))}` : ''}`)
  t.equal(app.broadcastStats().messagesOut - outBefore, 300_000, 'each delivery counted once')
  t.ok(app.broadcastStats().writesSliced > slicedBefore, `the writes went in slices (${app.broadcastStats().writesSliced - slicedBefore} times)`)
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.equal(Number(/^frb_writes_sliced_total (\d+)$/m.exec(metrics)?.[1]), app.broadcastStats().writesSliced, 'and /metrics counts them as broadcastStats() does')
})

/** Publishes `messages` to channel a without waiting; resolves once the fan-out is under way, in slices. */
async function burstInProgress (t: Test, test: TestApp, listeners: Listener[], messages: number): Promise<{ total: number, received: () => number }> {
  const slicedBefore = test.app.broadcastStats().writesSliced
  const publishes = Array.from({ length: messages }, async (_, seq) => await test.app.broadcast({ seq, pad }, { channel: 'a' }))
  t.teardown(async () => {
    const failed = (await Promise.allSettled(publishes)).filter((outcome) => outcome.status === 'rejected').length
    if (failed > 0) throw new Error(`${failed} publishes failed`)
  })
  const received = (): number => listeners.reduce((sum, listener) => sum + listener.seqs.length, 0)
  t.ok(await untilTurn(() => test.app.broadcastStats().writesSliced > slicedBefore, 30_000), 'the fan-out is under way, in slices')
  return { total: messages * listeners.length, received }
}

t.test('while a large fan-out is written, a ping is answered and a publish accepted', async (t) => {
  const test = await build(t, { redis: redis.url })
  const listeners = await openMany(t, test.url, 2000, () => ['a'])
  const { total, received } = await burstInProgress(t, test, listeners, 100)
  const startedAt = Date.now()
  const ponged = new Promise<number>((resolve) => { (listeners[0] as Listener).socket.once('pong', () => { resolve(received()) }) })
  ;(listeners[0] as Listener).socket.ping()
  const published = await test.publish({ channel: 'elsewhere', data: 'between slices' })
  const atPublish = received()
  const slicedAtPublish = test.app.broadcastStats().writesSliced
  const atPong = await ponged
  t.equal(published.status, 202)
  t.ok(atPublish < total && atPong < total, `answered before the fan-out was done (${atPong} and ${atPublish} of ${total} delivered, after ${Date.now() - startedAt} ms)`)
  t.ok(await waitUntil(() => received() === total, 60_000), 'and then every message arrives')
  t.ok(test.app.broadcastStats().writesSliced > slicedAtPublish, 'slices went on after the publish was answered')
  t.ok(listeners.every((listener) => listener.seqs.every((seq, i) => seq === i)), 'in order')
})

t.test('a slow consumer is closed (4008) while a large fan-out is written, and the others get everything', async (t) => {
  const test = await build(t, { redis: redis.url, slowConsumerBytes: 256 * 1024, slowConsumerTimeout: 60_000, maxMessageBytes: 1 << 20 })
  const listeners = await openMany(t, test.url, 2000, (i) => i === 1000 ? ['a', 'flood'] : ['a'])
  const stuck = listeners.find((listener) => listener.channels.includes('flood')) as Listener
  // It stops reading, and gets more than the kernel's buffers hold (a few MB on loopback): the
  // rest waits in the server's socket, past slowConsumerBytes, until its next write in the fan-out.
  const tcp = (stuck.socket as unknown as { _socket: import('node:net').Socket })._socket
  tcp.pause()
  await Promise.all(Array.from({ length: 16 }, async (_, i) => await test.app.broadcast({ flood: i, pad: 'x'.repeat(512 * 1024) }, { channel: 'flood' })))
  const { total } = await burstInProgress(t, test, listeners, 100)
  t.ok(await waitUntil(() => test.app.broadcastStats().slowConsumerCloses === 1, 60_000), 'the slow consumer is closed')
  tcp.resume()
  const others = listeners.filter((listener) => listener !== stuck)
  t.ok(await waitUntil(() => others.every((listener) => listener.seqs.length === 100), 60_000), 'every other socket gets every message')
  t.ok(others.every((listener) => listener.seqs.every((seq, i) => seq === i)), 'in order')
  t.ok(await waitUntil(() => stuck.closeCode !== undefined, 10_000))
  t.equal(stuck.closeCode, 4008)
  t.ok(stuck.seqs.length < total / listeners.length, `it got a part (${stuck.seqs.length}), in order`)
  t.ok(stuck.seqs.every((seq, i) => seq === i))
})

t.test('shutdown in the middle of a fan-out: every socket gets an unbroken run of messages, then 1001', async (t) => {
  const test = await build(t, { redis: redis.url })
  const listeners = await openMany(t, test.url, 2000, () => ['a'])
  await burstInProgress(t, test, listeners, 100)
  await test.app.close()
  t.ok(await waitUntil(() => listeners.every((listener) => listener.closeCode !== undefined), 20_000), 'every socket is closed')
  t.same([...new Set(listeners.map((listener) => listener.closeCode))], [1001])
  t.ok(listeners.every((listener) => listener.seqs.every((seq, i) => seq === i)), 'what each got is the first messages, in order, none missing between')
})

t.test('a turn that holds the event loop shows in broadcastStats().eventLoopDelay and in /metrics', async (t) => {
  const { app, url } = await build(t, { redis: redis.url })
  await sleep(100)
  const quiet = app.broadcastStats().eventLoopDelay
  t.ok(quiet.p50 < 50, `a quiet loop: p50 ${quiet.p50} ms`)
  const until = performance.now() + 200
  while (performance.now() < until) { /* a 200 ms turn */ }
  await sleep(50)
  const { eventLoopDelay } = app.broadcastStats()
  t.ok(eventLoopDelay.max >= 140 && eventLoopDelay.p99 >= 140, `the 200 ms turn is seen: p99 ${eventLoopDelay.p99} ms, max ${eventLoopDelay.max} ms`)
  const metrics = await (await fetch(`${url}/metrics`)).text()
  const max = Number(/^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(metrics)?.[1])
  t.ok(max >= 0.15, `and in /metrics: nodejs_eventloop_lag_max_seconds ${max}`)
})
