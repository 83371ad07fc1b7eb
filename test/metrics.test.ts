import t from 'tap'
import { spawnSync } from 'node:child_process'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'

// GET /metrics: the Prometheus view of an instance. Its gauges are what the instance holds, its
// counters are broadcastStats(), and Prometheus's own checker accepts the exposition.

const redis = await startRedis()
t.teardown(() => redis.stop())

/** The value of one series in an exposition (`name` or `name{labels}`). */
function valueOf (exposition: string, series: string): number {
  const line = exposition.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1))
}

t.test('the gauges equal the open connections and channels; the counters equal broadcastStats()', async (t) => {
  const { app, url, connect, publish } = await build(t, { redis: redis.url })
  const clients = await Promise.all(['a,b', 'b,c', 'c', ''].map(async (channels) => await connect(channels === '' ? '' : `?channels=${channels}`)))
  await Promise.all(clients.slice(0, 3).map(async (client) => await client.waitFor((f) => f.type === 'subscribed')))
  await clients[0].waitFor((f) => f.type === 'subscribed' && f.channel === 'b')
  await clients[1].waitFor((f) => f.type === 'subscribed' && f.channel === 'c')
  for (const channel of ['a', 'b', 'c']) t.equal((await publish({ channel, data: 1 })).status, 202)
  await clients[1].messages(2)
  const response = await fetch(`${url}/metrics`)
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /^text\/plain; version=0.0.4/)
  const text = await response.text()
  const stats = app.broadcastStats()
  t.equal(valueOf(text, 'frb_connections'), 4, 'four open connections')
  t.equal(valueOf(text, 'frb_channels'), 3, 'three channels listened on')
  t.equal(stats.connections, 4)
  t.equal(valueOf(text, 'frb_publishes_total{result="accepted"}'), stats.published)
  t.equal(stats.published, 3)
  t.equal(valueOf(text, 'frb_deliveries_total'), stats.messagesOut)
  t.equal(valueOf(text, 'frb_publish_duration_seconds_count'), 3, 'each publish timed')
  t.ok(valueOf(text, 'frb_delivery_delay_seconds_count') >= 3, 'each message from the bus timed')
  t.ok(valueOf(text, 'process_cpu_seconds_total') > 0, 'the default process metrics are there')
  for (const line of text.split('\n').filter((l) => l.startsWith('frb_'))) {
    t.notMatch(line, /channel=|identity=|sub=/, 'no label of unbounded cardinality')
  }
  await clients[0].close()
  await clients[1].close()
  const after = await (await fetch(`${url}/metrics`)).text()
  t.equal(valueOf(after, 'frb_connections'), 2, 'the gauge follows closes')
  t.equal(valueOf(after, 'frb_channels'), 1, 'only c is still listened on')
})

t.test('promtool check metrics accepts the exposition', async (t) => {
  const which = spawnSync('promtool', ['--version'])
  if (which.error !== undefined) {
    t.fail('promtool is missing: install the Debian package `prometheus` (apt-get install prometheus); .ci/run does it')
    return
  }
  const { url, connect, publish } = await build(t, { redis: redis.url })
  const client = await connect('?channels=x')
  await client.waitFor((f) => f.type === 'subscribed')
  await publish({ channel: 'x', data: 1 })
  await client.messages(1)
  const exposition = await (await fetch(`${url}/metrics`)).text()
  const checked = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' })
  t.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`)
  t.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'no lint finding')
})

t.test('the metrics are guarded like publishing, or open to the scrape network', async (t) => {
  const key = 'metrics-key-0123456789'
  const keyed = await build(t, { redis: redis.url, publishKeys: [key] })
  t.equal((await fetch(`${keyed.url}/metrics`)).status, 401, 'no key')
  t.equal((await fetch(`${keyed.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).status, 200, 'the publish key')
  const scraped = await build(t, { redis: redis.url, publishKeys: [key], metricsAllow: ['127.0.0.0/8', '::1'] })
  t.equal((await fetch(`${scraped.url}/metrics`)).status, 200, 'from a network of metricsAllow, no key needed')
  const elsewhere = await build(t, { redis: redis.url, publishKeys: [key], metricsAllow: ['10.0.0.0/8'] })
  t.equal((await fetch(`${elsewhere.url}/metrics`)).status, 401, 'another network still needs the key')
  const local = await build(t, { redis: redis.url })
  t.equal((await fetch(`${local.url}/metrics`)).status, 200, 'no keys: local requests')
  t.equal((await fetch(`${local.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status, 401, 'a forwarded one is not local')
})

t.test('metricsPath: false leaves the route out; a bad metricsAllow entry fails registration', async (t) => {
  const { url, publish } = await build(t, { redis: redis.url, metricsPath: false })
  t.equal((await fetch(`${url}/metrics`)).status, 404)
  t.equal((await publish({ data: 'untimed' })).status, 202, 'publishing works without the metrics')
  const Fastify = (await import('fastify')).default
  const redisBroadcast = (await import('../plugin/index.js')).default
  for (const entry of ['10.0.0.0/33', 'lan', '10.0.0.0/8/1', '::1/129']) {
    const app = Fastify({ logger: false })
    await t.rejects(async () => await app.register(redisBroadcast, { metricsAllow: [entry] }).ready(),
      { code: 'FRB_INVALID_OPTION', message: /metricsAllow.0/ }, entry)
    await app.close()
  }
})
