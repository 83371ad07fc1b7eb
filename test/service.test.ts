import t from 'tap'
import Fastify from 'fastify'
import app from '../app.js'
import { TestClient } from './helpers/client.js'
import { startRedis } from './helpers/redis-server.js'
import { startService } from './helpers/service.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('two `fastify start` processes on one Redis deliver each other\'s publishes', async (t) => {
  const [one, two] = await Promise.all([
    startService(t, { REDIS_URL: redis.url }),
    startService(t, { REDIS_URL: redis.url })
  ])
  t.match(one.output(), /using the Redis bus/, 'the start log names the bus')
  const onOne = await TestClient.connect(`${one.url.replace('http', 'ws')}/ws?channels=news`)
  const onTwo = await TestClient.connect(`${two.url.replace('http', 'ws')}/ws?channels=news`)
  t.teardown(async () => { await onOne.close(); await onTwo.close() })
  await onOne.waitFor((f) => f.type === 'subscribed')
  await onTwo.waitFor((f) => f.type === 'subscribed')

  for (let i = 0; i < 50; i++) {
    const from = i % 2 === 0 ? one : two
    const response = await fetch(`${from.url}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'news', data: { i } })
    })
    t.equal(response.status, 202)
  }
  const expected = Array.from({ length: 50 }, (_, i) => ({ type: 'message', channel: 'news', data: { i } }))
  t.same(await onOne.messages(50), expected)
  t.same(await onTwo.messages(50), expected)
})

t.test('`fastify start` without REDIS_URL serves a single instance on the in-process bus', async (t) => {
  const service = await startService(t, { REDIS_URL: '' })
  t.same(await (await fetch(`${service.url}/health`)).json(), { status: 'ok', bus: 'memory' })
  t.match(service.output(), /using the in-process bus/)
})

t.test('the service app reads REDIS_URL from the environment', async (t) => {
  const saved = process.env.REDIS_URL
  t.teardown(() => {
    if (saved === undefined) delete process.env.REDIS_URL
    else process.env.REDIS_URL = saved
  })
  for (const [value, bus] of [[redis.url, 'redis'], ['', 'memory'], [undefined, 'memory']] as const) {
    if (value === undefined) delete process.env.REDIS_URL
    else process.env.REDIS_URL = value
    const server = Fastify({ logger: false })
    await server.register(app)
    const response = await server.inject({ method: 'GET', url: '/health' })
    t.same(response.json(), { status: 'ok', bus }, `REDIS_URL=${String(value)}`)
    await server.close()
  }
})
