import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
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

// Messages streamed to every reader before one stops reading: the server's heap sizes itself for
// 6.4 MB/s of 64 KiB messages in the first seconds, and that growth is not what is measured. Each
// message also leaves ~4 garbage Buffers outside the JS heap (request body, Redis reply, socket
// writes), which V8 collects only every few tens of MiB: RSS saws up and down by that much with
// every client reading. So the baseline is the highest RSS of a steady stretch (7.5 s) of the
// warm-up, and the peak with a client that stopped reading (10 s) is compared with it.
const WARM_UP = 1000

t.test('a client that stops reading is closed with 4008 while 50 others get every 64 KiB message in order', async (t) => {
  // The service runs as users run it, in its own process, so its RSS is the server's alone; the
  // 50 readers run in another. A long close timeout keeps the slow client's 4008 frame queued
  // until the end of the stream, when the client reads again.
  const service = await startService(t, { REDIS_URL: redis.url, PUBLISH_BODY_LIMIT: '131072', CLOSE_TIMEOUT: '30000' })
  const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${service.process.pid as number}/status`, 'utf8'))?.[1]) * 1024
  const readers = spawn(process.execPath, [fileURLToPath(new URL('fixtures/readers.mjs', import.meta.url)), wsUrl(service.url, '?channels=feed'), '50', String(WARM_UP + 1000)])
  t.teardown(() => readers.kill())
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
  let phase: 'starting' | 'warm' | 'paused' = 'starting'
  let baseline = 0
  let peak = 0
  const sampler = setInterval(() => {
    if (phase === 'warm') baseline = Math.max(baseline, rss())
    else if (phase === 'paused') peak = Math.max(peak, rss())
  }, 50)
  const answers: Array<Promise<number>> = []
  // The stream runs with every client reading first (WARM_UP), so the server's heap has sized itself
  // for this traffic; then one client stops reading, and the growth from there is measured.
  const started = Date.now()
  for (let seq = 0; seq < WARM_UP + 1000; seq++) {
    const due = started + seq * 10
    if (due > Date.now()) await sleep(due - Date.now())
    if (seq === WARM_UP / 4) phase = 'warm'
    if (seq === WARM_UP) {
      slow.pause()
      baseline = Math.max(baseline, rss())
      phase = 'paused'
    }
    answers.push(post(`${service.url}/publish`, JSON.stringify({ channel: 'feed', data: { seq, padding } }), publishes))
  }
  t.same([...new Set(await Promise.all(answers))], [202], `${WARM_UP + 1000} publishes accepted`)
  const report = JSON.parse((await lines.next()).value as string) as Array<{ next: number, outOfOrder: number }>
  clearInterval(sampler)
  t.equal(report.length, 50)
  const short = report.filter((r) => r.next !== WARM_UP + 1000 || r.outOfOrder !== 0)
  t.same(short, [], `every reader got all ${WARM_UP + 1000} messages, in order`)
  if (short.length > 0) t.comment(service.output().slice(-4000))
  slow.resume()
  t.equal((await slowClosed)[0], 4008, 'the slow client was closed with 4008')
  t.equal(service.output().match(/closing a slow consumer \(4008\)/g)?.length, 1, 'logged once')
  const growth = (peak - baseline) / 2 ** 20
  t.comment(`DEBUG baseline ${(baseline / 2 ** 20).toFixed(1)} MiB peak ${(peak / 2 ** 20).toFixed(1)} MiB stream ${Date.now() - started} ms`)
  t.ok(growth < 32, `server RSS grew by ${growth.toFixed(1)} MiB while 3.2 GB went out past a client that stopped reading`)
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
  await sleep(100)
  t.same(await admin.call('PUBSUB', 'NUMSUB', 'frb:c:silent'), ['frb:c:silent', 0], 'and its channel was left')
  await sleep(1200)
  t.equal(alive.socket.readyState, WebSocket.OPEN, 'a client that answers pings stays through several rounds')
  t.equal(app.broadcastStats().heartbeatTimeouts, 1)
})
