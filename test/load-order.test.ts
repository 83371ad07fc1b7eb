import t from 'tap'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { wsUrl } from './helpers/client.js'

// The ordering promise under load: one publisher, three instances, 300 clients, 10,000 messages.

const redis = await startRedis()
t.teardown(() => redis.stop())
const READERS = fileURLToPath(new URL('fixtures/readers.mjs', import.meta.url))

t.test('3 instances × 100 clients: 10,000 messages published through one arrive at every client exactly once, in order', async (t) => {
  const instances = await Promise.all([0, 1, 2].map(async () => await build(t, { redis: redis.url })))
  // The clients run in child processes, one per instance, so they do not share the servers' event loop.
  const readers = instances.map(({ url }) => {
    const child = spawn(process.execPath, [READERS, wsUrl(url, '?channels=seq'), '100', '10000'])
    t.teardown(() => child.kill())
    return createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  })
  for (const lines of readers) t.equal((await lines.next()).value, 'ready')

  const [a] = instances
  // Batches of 100, one after another: the order of a batch and of awaited publishes is guaranteed.
  for (let seq = 0; seq < 10_000; seq += 100) {
    await a.app.broadcastMany(Array.from({ length: 100 }, (_, i) => ({ channel: 'seq', data: { seq: seq + i } })))
  }
  const reports = await Promise.all(readers.map(async (lines) =>
    JSON.parse((await lines.next()).value as string) as Array<{ next: number, outOfOrder: number }>))
  reports.forEach((report, i) => {
    t.equal(report.length, 100, `instance ${'ABC'[i]}: 100 clients reported`)
    t.same(report.filter((r) => r.next !== 10_000 || r.outOfOrder !== 0), [], `instance ${'ABC'[i]}: all 10,000, in order, no duplicate`)
  })
  t.same(instances.map(({ app }) => app.broadcastStats().messagesIn), [10_000, 10_000, 10_000], 'each instance took each message once from Redis')
})
