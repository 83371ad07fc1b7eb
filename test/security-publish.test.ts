import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain, type Frame } from './helpers/client.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const KEY = 'k1-0123456789abcdef'
const NEXT_KEY = 'k2-fedcba9876543210'

async function quietFor (client: { received: () => Frame[] }, ms = 500): Promise<Frame[]> {
  await sleep(ms)
  return client.received()
}

t.test('with keys configured, a publish without a key gets 401 and reaches nobody', async (t) => {
  const { connect, publish } = await build(t, { redis: redis.url, publishKeys: [KEY] })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  const response = await publish({ channel: 'news', data: 'sneaky' })
  t.equal(response.status, 401)
  t.match(await response.json(), { code: 'FRB_UNAUTHORIZED' })
  t.same(await quietFor(client), [])
})

t.test('a wrong key gets 401 and reaches nobody', async (t) => {
  const { connect, publish } = await build(t, { redis: redis.url, publishKeys: [KEY] })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  for (const authorization of [`Bearer ${KEY}x`, `Bearer ${KEY.slice(0, -1)}`, KEY, `Basic ${KEY}`, 'Bearer ']) {
    t.equal((await publish({ channel: 'news', data: 'x' }, { authorization })).status, 401, authorization)
  }
  t.same(await quietFor(client), [])
})

t.test('a key in the query string is never accepted', async (t) => {
  const { url, connect } = await build(t, { redis: redis.url, publishKeys: [KEY] })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  for (const query of [`key=${KEY}`, `token=${KEY}`, `authorization=Bearer%20${KEY}`]) {
    const response = await fetch(`${url}/publish?${query}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"channel":"news","data":1}' })
    t.equal(response.status, 401, query)
  }
  t.same(await quietFor(client), [])
})

t.test('every configured key is accepted, so a key can be rotated', async (t) => {
  const { connect, publish } = await build(t, { redis: redis.url, publishKeys: [KEY, NEXT_KEY] })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  t.equal((await publish({ channel: 'news', data: 1 }, { authorization: `Bearer ${KEY}` })).status, 202)
  t.equal((await publish({ channel: 'news', data: 2 }, { authorization: `bearer ${NEXT_KEY}` })).status, 202)
  t.same((await client.messages(2)).map((m) => m.data), [1, 2])
})

t.test('without keys, a publish from a non-loopback peer gets 401 with how to configure a key', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  const response = await app.inject({
    method: 'POST',
    url: '/publish',
    remoteAddress: '203.0.113.7',
    payload: { channel: 'news', data: 'from afar' }
  })
  t.equal(response.statusCode, 401)
  t.match(response.json(), { code: 'FRB_PUBLISH_KEY_REQUIRED', message: /publishKeys option/ })
  const local = await app.inject({ method: 'POST', url: '/publish', remoteAddress: '127.0.0.1', payload: { channel: 'news', data: 'local' } })
  t.equal(local.statusCode, 202, 'loopback peers may publish without a key')
  t.same((await client.messages(1)).map((m) => m.data), ['local'])
  t.same(plain(await quietFor(client, 200)), [{ type: 'message', channel: 'news', data: 'local' }], 'the remote publish never arrived')
})

t.test('insecurePublish: true opts out of the loopback rule', async (t) => {
  const { app } = await build(t, { insecurePublish: true })
  const response = await app.inject({ method: 'POST', url: '/publish', remoteAddress: '203.0.113.7', payload: { data: 1 } })
  t.equal(response.statusCode, 202)
})

t.test('the publish key never appears in the logs', async (t) => {
  const lines: string[] = []
  const Fastify = (await import('fastify')).default
  const redisBroadcast = (await import('../plugin/index.js')).default
  const app = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } } })
  await app.register(redisBroadcast, { publishKeys: [KEY] })
  await app.ready()
  await app.inject({ method: 'POST', url: '/publish', headers: { authorization: `Bearer ${KEY}` }, payload: { data: 1 } })
  await app.inject({ method: 'POST', url: `/publish?key=${KEY}`, headers: { authorization: `Bearer ${KEY}x` }, payload: { data: 1 } })
  await app.close()
  t.ok(lines.length > 3, 'requests were logged')
  t.notOk(lines.some((line) => line.includes(KEY.slice(3))), 'no log line holds the key')
})

t.test('body limit, content type and schema are enforced after the key check', async (t) => {
  const { publish } = await build(t, { publishKeys: [KEY], publishBodyLimit: 1024 })
  const authorization = `Bearer ${KEY}`
  t.equal((await publish({ data: 'x'.repeat(2000) }, { authorization })).status, 413)
  t.equal((await publish('<data/>', { authorization, 'content-type': 'application/xml' })).status, 415)
  t.equal((await publish({ channel: '#bad', data: 1 }, { authorization })).status, 400)
  t.equal((await publish({ data: 'x'.repeat(2000) })).status, 401, 'without a key even an oversized body is a 401')
})

t.test('the publish rate limit answers 429 with Retry-After', async (t) => {
  const { publish } = await build(t, { rateLimit: { publish: { max: 3, timeWindow: 60_000 } } })
  const statuses: number[] = []
  let last: Response | undefined
  for (let i = 0; i < 5; i++) {
    last = await publish({ data: i })
    statuses.push(last.status)
  }
  t.same(statuses, [202, 202, 202, 429, 429])
  t.match(await last?.json(), { statusCode: 429, code: 'FRB_RATE_LIMITED' })
  t.ok(Number(last?.headers.get('retry-after')) > 0, 'Retry-After says when to come back')
})

t.test('an app that registered @fastify/rate-limit itself keeps it, and the publish limit still applies', async (t) => {
  const Fastify = (await import('fastify')).default
  const rateLimit = (await import('@fastify/rate-limit')).default
  const redisBroadcast = (await import('../plugin/index.js')).default
  const app = Fastify({ logger: false })
  await app.register(rateLimit, { global: false })
  await app.register(redisBroadcast, { rateLimit: { publish: { max: 1, timeWindow: 60_000 } } })
  const send = async (): Promise<number> => (await app.inject({ method: 'POST', url: '/publish', payload: { data: 1 } })).statusCode
  t.same([await send(), await send()], [202, 429])
  await app.close()
})

t.test('numbers JSON cannot carry are refused with a code, not published as null', async (t) => {
  const { connect, publish } = await build(t, { redis: redis.url })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  for (const body of ['{"channel":"news","data":1e309}', '{"channel":"news","data":[1,{"a":-1E+400}]}', '[{"channel":"news","data":1},{"channel":"news","data":1e999}]', `{"channel":"news","data":${'9'.repeat(400)}}`]) {
    const response = await publish(body)
    t.equal(response.status, 400, body.slice(0, 60))
    t.match(await response.json(), { code: 'FRB_INVALID_DATA', message: /1e309/ })
  }
  const proto = await publish('{"channel":"news","data":1,"__proto__":{"polluted":true}}')
  t.equal(proto.status, 400, 'Fastify\'s prototype-poisoning check still applies')
  for (const body of ['{"channel":"news","data":"1e309"}', '{"channel":"news","data":1e308}']) t.equal((await publish(body)).status, 202, body)
  t.same((await client.messages(2)).map((m) => m.data), ['1e309', 1e308], 'only the carryable ones arrived')
  t.same(plain(await quietFor(client, 200)).length, 2, 'and nothing else')
})

t.test('broadcast() in code refuses NaN and Infinity too, and keeps real nulls', async (t) => {
  const { app } = await build(t, { redis: redis.url })
  for (const data of [Number.NaN, { a: [1, Number.POSITIVE_INFINITY] }, [null, -Infinity]]) {
    await t.rejects(app.broadcast(data, { channel: 'news' }), { code: 'FRB_INVALID_DATA', message: /NaN or Infinity/ })
  }
  t.match(await app.broadcast({ a: null, b: [null] }, { channel: 'news' }), { offset: Number })
})
