import t from 'tap'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket } from 'ws'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import { TestClient, wsUrl } from './helpers/client.js'

// Clients that stop reading or vanish: each is closed or terminated on its own, the others keep
// every message, and the server's memory stays bounded.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

t.test('a client that stops reading is closed with 4008 while 50 others get every 64 KiB message in order', async (t) => {
  const { app, url, connect } = await build(t, { redis: redis.url })
  // The 50 readers run in a child process, so this process's RSS is the server's alone.
  const readers = spawn(process.execPath, [fileURLToPath(new URL('fixtures/readers.mjs', import.meta.url)), wsUrl(url, '?channels=feed'), '50', '1000'])
  t.teardown(() => readers.kill())
  const lines = createInterface({ input: readers.stdout })[Symbol.asyncIterator]()
  t.equal((await lines.next()).value, 'ready', '50 readers subscribed')
  const slow = await connect('?channels=feed')
  await slow.waitFor((f) => f.type === 'subscribed')
  slow.socket.pause()

  const padding = 'x'.repeat(64 * 1024 - 64)
  const baseline = process.memoryUsage().rss
  let peak = baseline
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 50)
  let slowClosedAt = -1
  const started = Date.now()
  for (let seq = 0; seq < 1000; seq++) {
    const due = started + seq * 10
    if (due > Date.now()) await sleep(due - Date.now())
    await app.broadcast({ seq, padding }, { channel: 'feed' })
    if (slowClosedAt < 0 && app.broadcastStats().slowConsumerCloses > 0) {
      slowClosedAt = seq
      slow.socket.resume()
    }
  }
  const report = JSON.parse((await lines.next()).value as string) as Array<{ next: number, outOfOrder: number }>
  clearInterval(sampler)
  t.equal(report.length, 50)
  t.same(report.filter((r) => r.next !== 1000 || r.outOfOrder !== 0), [], 'every reader got all 1,000 messages, in order')
  t.ok(slowClosedAt >= 0, `the slow client was closed after message ${slowClosedAt} (${slowClosedAt * 64} KiB)`)
  t.equal((await slow.closed).code, 4008, 'with close code 4008')
  t.equal(app.broadcastStats().slowConsumerCloses, 1, 'counted once')
  const growth = (peak - baseline) / 2 ** 20
  t.ok(growth < 32, `server RSS grew by ${growth.toFixed(1)} MiB while 3.2 GB went out`)
})

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
  const { app, url, connect } = await build(t, { redis: redis.url, heartbeatInterval: 150, heartbeatTimeout: 150 })
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
  await sleep(600)
  t.equal(alive.socket.readyState, WebSocket.OPEN, 'a client that answers pings stays through several rounds')
  t.equal(app.broadcastStats().heartbeatTimeouts, 1)
})
