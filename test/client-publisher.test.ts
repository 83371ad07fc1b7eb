import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import redisBroadcast, { type RedisBroadcastOptions } from '../plugin/index.js'
import { createPublisher } from '../client/index.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import { hubUrl, recordingClient, until } from './helpers/recording-client.js'

// createPublisher() against a real hub: what it answers, what it retries (with the same
// idempotency key, so a retried message is delivered once) and what it throws.

const redis = await startRedis()
t.teardown(() => redis.stop())

const KEY = 'a-publish-key-of-32-characters!!'

/** A hub that records the body of every publish request that reaches its route. */
async function hub (t: Test, options: RedisBroadcastOptions): Promise<{ url: string, bodies: Array<Record<string, unknown>> }> {
  const bodies: Array<Record<string, unknown>> = []
  const app = Fastify()
  app.addHook('preHandler', async (request) => {
    if (request.url === '/publish') bodies.push(...[request.body as Record<string, unknown>].flat())
  })
  await app.register(redisBroadcast, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return { url: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, bodies }
}

t.test('publish and publishMany answer with the position; every message carries an idempotency key, the given one or a new one', async (t) => {
  const { url, bodies } = await hub(t, { redis: redis.url, publishKeys: [KEY] })
  const client = recordingClient(t, hubUrl(url))
  await client.subscribe('news').ready
  const publisher = createPublisher({ url, key: KEY })
  const first = await publisher.publish('news', { n: 1 })
  t.match(first, { offset: 1, epoch: String })
  t.notOk('duplicate' in first)
  t.same(await publisher.publish('news', { n: 2 }, { idempotencyKey: 'order-2' }), { offset: 2, epoch: first.epoch })
  t.same(await publisher.publish('news', { n: 2 }, { idempotencyKey: 'order-2' }), { offset: 2, epoch: first.epoch, duplicate: true },
    'the same key again publishes nothing and answers the first publish\'s offset')
  t.same(await publisher.publish(undefined, 'to everyone'), { offset: undefined, epoch: undefined })
  t.same(await publisher.publishMany([{ channel: 'news', data: { n: 3 } }, { data: 'all', idempotencyKey: 'all-1' }]),
    [{ offset: 3, epoch: first.epoch }, {}])
  await until(() => client.received('news').length === 3 && client.everyone.length === 2, 5000, 'every message')
  t.same(client.received('news'), [{ n: 1 }, { n: 2 }, { n: 3 }])
  t.same(bodies.map((body) => typeof body.idempotencyKey === 'string' && body.idempotencyKey.length),
    [36, 7, 7, 36, 36, 5], 'a UUID where none was given')
  t.equal(new Set(bodies.map((body) => body.idempotencyKey)).size, 5)
})

t.test('a 503 is retried after Retry-After with the same idempotency key, and the message is delivered once', async (t) => {
  const { url, bodies } = await hub(t, { redis: redis.url, publishTimeout: 300 })
  const client = recordingClient(t, hubUrl(url), { minReconnectDelay: 50, maxReconnectDelay: 500 })
  await client.subscribe('orders').ready
  await redis.kill()
  const publishing = createPublisher({ url, retries: 20 }).publish('orders', { id: 7 })
  await until(() => bodies.length >= 2, 10_000, 'two attempts while Redis is down')
  await redis.start()
  t.match(await publishing, { offset: 1, epoch: String }, 'accepted once Redis is back')
  t.ok(bodies.length >= 2, `${bodies.length} attempts`)
  t.same(new Set(bodies.map((body) => body.idempotencyKey)).size, 1, 'all with one idempotency key')
  await until(() => client.received('orders').length === 1, 10_000, 'the message')
  await sleep(300)
  t.same(client.received('orders'), [{ id: 7 }], 'delivered once')
})

t.test('a 429 is retried after Retry-After; a network error with back-off, a bounded number of times', async (t) => {
  const { url } = await hub(t, { redis: redis.url, rateLimit: { publish: { max: 2, timeWindow: 1000 } } })
  const publisher = createPublisher({ url, minRetryDelay: 10 })
  const results = await Promise.all([1, 2, 3].map(async (n) => await publisher.publish('limited', n)))
  t.same(results.map((result) => result.offset).sort(), [1, 2, 3], 'all three accepted, the one over the limit after its Retry-After')

  const nowhere = createPublisher({ url: `http://127.0.0.1:${await freePort()}`, retries: 2, minRetryDelay: 10 })
  await t.rejects(nowhere.publish('x', 1), TypeError, 'the network error, after the retries')
})

t.test('refusals are not retried: they throw with the status and the hub\'s code', async (t) => {
  const { url, bodies } = await hub(t, { redis: redis.url, publishKeys: [KEY], maxMessageBytes: 1024 })
  await t.rejects(createPublisher({ url, key: 'a-wrong-key-of-32-characters!!!!' }).publish('news', 1),
    { name: 'BroadcastError', status: 401, code: 'FRB_UNAUTHORIZED' })
  const publisher = createPublisher({ url: `${url}/publish`, key: KEY })
  await t.rejects(publisher.publish('bad channel', 1), { status: 400, code: 'FRB_INVALID_PUBLISH' })
  await t.rejects(publisher.publish('news', 'x'.repeat(2000)), { status: 413, code: 'FRB_MESSAGE_TOO_LARGE' })
  t.equal(bodies.length, 1, 'one request each (the 401 and 400 never reach the handler)')
})
