import t from 'tap'
import { spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket } from 'ws'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import { TestClient, wsUrl } from './helpers/client.js'
import { startService } from './helpers/service.js'

// Clients that stop reading or vanish: each is closed or terminated on its own, the others keep
// every message, and the server's memory stays bounded.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

// Messages streamed to every reader before one stops reading, so the server has carried the same
// traffic, and sized its heap for it, before one client stops reading and its cost is measured.
const WARM_UP = 1000

// What the server holds for a client that stopped reading is the memory it still has when nothing
// else is in flight: its RSS while streaming moves with how far each of the 50 readers is behind
// (up to slowConsumerBytes, 1 MiB, each, not closed for it: 50 MiB on a busy machine) and with
// when V8 collects the ~4 garbage Buffers each message leaves outside the JS heap. So the service
// gets a test-only hook: on SIGWINCH it runs a full GC and prints its heap and Buffer bytes.
// (Not SIGUSR2: fastify-cli's close-with-grace shuts the service down on it.)
const MEMORY_PROBE = 'process.on("SIGWINCH", () => { globalThis.gc(); const m = process.memoryUsage(); process.stderr.write("\\nmemory-probe " + (m.heapUsed + m.external) + "\\n") })'

t.test('a client that stops reading is closed with 4008 while 50 others get every 64 KiB message in order', async (t) => {
  // The service runs as users run it, in its own process, so its memory is the server's alone;
  // the 50 readers run in another. A long close timeout keeps the slow client's 4008 frame queued
  // until the end of the stream, when the client reads again.
  // The stream is 6.4 MB a second from Redis to the service. On a loaded machine the service may
  // fall seconds behind reading it, and Redis would then drop its subscriber connection at the
  // default 32 MB (client-output-buffer-limit pubsub): a gap for every reader, which is not what
  // this test is about (test/redis-restart.test.ts is). This Redis is the test's own.
  await admin.call('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 0 0 0')
  const service = await startService(t, {
    REDIS_URL: redis.url,
    PUBLISH_BODY_LIMIT: '131072',
    CLOSE_TIMEOUT: '30000',
    // What is measured here is the byte bound. On a loaded machine the run takes a minute and a
    // reader process may stall for seconds: neither the heartbeat (the paused client cannot
    // answer a ping) nor the stuck-time bound may close anyone before the bytes do.
    HEARTBEAT_INTERVAL: '0',
    SLOW_CONSUMER_TIMEOUT: '60000',
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --import=data:text/javascript;base64,${Buffer.from(MEMORY_PROBE).toString('base64')}`
  })
  /** The server's heap and Buffer bytes after a full GC, in MiB. */
  const retained = async (): Promise<number> => {
    const probes = (): string[] => [...service.output().matchAll(/memory-probe (\d+)\n/g)].map((m) => m[1])
    const before = probes().length
    service.process.kill('SIGWINCH')
    t.ok(await waitUntil(() => probes().length > before, 10_000), 'the service answered the memory probe')
    return Number(probes()[before]) / 2 ** 20
  }
  const readers = spawn(process.execPath, [fileURLToPath(new URL('fixtures/readers.mjs', import.meta.url)), wsUrl(service.url, '?channels=feed'), '50', String(WARM_UP + 1000)])
  t.teardown(() => readers.kill())
  const readersExited = once(readers, 'exit')
  const lines = createInterface({ input: readers.stdout })[Symbol.asyncIterator]()
  t.equal((await lines.next()).value, 'ready', '50 readers subscribed')
  // A bare client that keeps nothing it reads.
  const slow = new WebSocket(wsUrl(service.url, '?channels=feed'))
  t.teardown(() => slow.terminate())
  await once(slow, 'message')
  const slowClosed = once(slow, 'close')

  const padding = 'x'.repeat(64 * 1024 - 64)
  const publishes = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => publishes.destroy())
  const answers: Array<Promise<number>> = []
  // The stream runs with every client reading first (WARM_UP); then one client stops reading.
  const started = Date.now()
  for (let seq = 0; seq < WARM_UP + 1000; seq++) {
    const due = started + seq * 10
    if (due > Date.now()) await sleep(due - Date.now())
    if (seq === WARM_UP) slow.pause()
    answers.push(post(`${service.url}/publish`, JSON.stringify({ channel: 'feed', data: { seq, padding } }), publishes))
  }
  t.same([...new Set(await Promise.all(answers))], [202], `${WARM_UP + 1000} publishes accepted`)
  const report = JSON.parse((await lines.next()).value as string) as Array<{ next: number, outOfOrder: number }>
  t.equal(report.length, 50)
  const short = report.filter((r) => r.next !== WARM_UP + 1000 || r.outOfOrder !== 0)
  t.same(short, [], `every reader got all ${WARM_UP + 1000} messages, in order`)
  if (short.length > 0) t.comment(service.output().slice(-4000))
  // The readers have everything and are gone: what the server still holds beyond its baseline is
  // what it keeps for the client that stopped reading 1000 messages (64 MiB) ago, and that never
  // shrinks while the client stays stuck, so this is its peak.
  await readersExited
  const stuck = await retained()
  slow.resume()
  const [code] = await Promise.race([slowClosed, sleep(20_000, [0])])
  t.equal(code, 4008, 'the slow client was closed with 4008')
  t.equal(service.output().match(/closing a slow consumer \(4008\)/g)?.length, 1, 'logged once')
  // The baseline: the same process after the same stream, with the slow client gone, in the same
  // quiet state and measured the same way.
  const baseline = await retained()
  const growth = stuck - baseline
  t.comment(`retained after a full GC: ${stuck.toFixed(1)} MiB with the client stuck, ${baseline.toFixed(1)} MiB once it was closed`)
  t.ok(growth < 32, `the server held ${growth.toFixed(1)} MiB for a client that stopped reading while 3.2 GB went out past it`)
})

/** POST with a keep-alive agent; resolves with the status code. */
async function post (url: string, body: string, agent: Agent): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body)
  })
}

for (const compression of [false, true]) {
  t.test(`a client whose writes stay stuck longer than slowConsumerTimeout is closed with 4008, even under the byte bound${compression ? ' (permessage-deflate)' : ''}`, async (t) => {
    const { app, connect } = await build(t, { slowConsumerBytes: 512 * 2 ** 20, slowConsumerTimeout: 300, compression })
    const stuck = await connect('?channels=feed')
    await stuck.waitFor((f) => f.type === 'subscribed')
    t.equal(stuck.socket.extensions.includes('permessage-deflate'), compression)
    stuck.socket.pause()
    // Random padding: compression must not shrink it to nothing.
    const padding = randomBytes(45 * 1024).toString('base64')
    let seq = 0
    while (app.broadcastStats().slowConsumerCloses === 0 && seq < 2000) {
      await app.broadcast({ seq: seq++, padding }, { channel: 'feed' })
      await sleep(5)
    }
    t.equal(app.broadcastStats().slowConsumerCloses, 1)
    stuck.socket.resume()
    t.equal((await stuck.closed).code, 4008)
  })
}

t.test('a client that does not answer pings is terminated; it leaves its channels and the count returns to baseline', async (t) => {
  const { app, url, connect } = await build(t, { redis: redis.url, heartbeatInterval: 400, heartbeatTimeout: 400 })
  const alive = await connect('?channels=alive')
  const silent = await TestClient.connect(wsUrl(url, '?channels=silent'), { autoPong: false })
  t.teardown(() => silent.close())
  await Promise.all([alive, silent].map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
  t.same(await admin.call('PUBSUB', 'NUMSUB', 'frb:c:silent'), ['frb:c:silent', 1])

  const { code } = await silent.closed
  t.equal(code, 1006, 'the silent client was terminated (no close handshake)')
  t.ok(await waitUntil(() => app.broadcastConnections.size === 1, 1000), 'the connection count is back to the one live client')
  // The unsubscribe reaches Redis on its own schedule: wait for it, with a deadline.
  const subscribers = async (): Promise<unknown> => await admin.call('PUBSUB', 'NUMSUB', 'frb:c:silent')
  const deadline = Date.now() + 5000
  while (JSON.stringify(await subscribers()) !== '["frb:c:silent",0]' && Date.now() < deadline) await sleep(20)
  t.same(await subscribers(), ['frb:c:silent', 0], 'and its channel was left')
  await sleep(1200)
  t.equal(alive.socket.readyState, WebSocket.OPEN, 'a client that answers pings stays through several rounds')
  t.equal(app.broadcastStats().heartbeatTimeouts, 1)
})
