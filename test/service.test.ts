import t from 'tap'
import Fastify from 'fastify'
import app, { optionsFromEnv } from '../app.js'
import { TestClient, wsUrl, plain } from './helpers/client.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import { startService } from './helpers/service.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('two `fastify start` processes on one Redis deliver each other\'s publishes', async (t) => {
  const [one, two] = await Promise.all([
    startService(t, { REDIS_URL: redis.url }),
    startService(t, { REDIS_URL: redis.url })
  ])
  t.match(one.output(), /using the Redis bus/, 'the start log names the bus')
  const onOne = await TestClient.connect(wsUrl(one.url, '?channels=news'))
  const onTwo = await TestClient.connect(wsUrl(two.url, '?channels=news'))
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
  t.same(plain(await onOne.messages(50)), expected)
  t.same(plain(await onTwo.messages(50)), expected)
})

t.test('`fastify start` without REDIS_URL serves a single instance on the in-process bus', async (t) => {
  const service = await startService(t, { REDIS_URL: '' })
  t.same(await (await fetch(`${service.url}/health`)).json(), { status: 'ok', bus: 'memory', checks: { bus: 'running' } })
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
    t.match(response.json(), { status: 'ok', bus }, `REDIS_URL=${String(value)}`)
    await server.close()
  }
  const closed = await freePort()
  process.env.REDIS_URL = `redis://127.0.0.1:${closed}`
  const server = Fastify({ logger: false, pluginTimeout: 2500 })
  await t.rejects(async () => await server.register(app).ready(),
    { code: 'FRB_BUS_UNAVAILABLE', message: new RegExp(`Redis at 127.0.0.1:${closed} did not become ready within 1500 ms`) },
    'an unreachable REDIS_URL fails with the plugin\'s message')
  await server.close()
})

t.test('the service app maps every environment variable to its option', async (t) => {
  t.same(optionsFromEnv({}), { rateLimit: {}, history: {}, presence: {} }, 'nothing set: every default stays')
  t.same(optionsFromEnv({
    REDIS_URL: 'redis://r:6379',
    PUBLISH_KEY: 'key-one-0123456789, key-two-0123456789',
    INSECURE_PUBLISH: 'true',
    JWT_SECRET: 'secret-of-at-least-16',
    JWT_AUDIENCE: 'hub',
    ALLOWED_ORIGINS: 'https://a.example.com,https://*.example.org',
    REQUIRE_ORIGIN: 'true',
    PERSONAL_CHANNELS: 'false',
    MAX_PAYLOAD: '1024',
    MAX_CHANNELS_PER_CONNECTION: '10',
    MAX_CONNECTIONS: '1000',
    MAX_CONNECTIONS_PER_IP: '20',
    CLIENT_FRAME_RATE: '50',
    CLIENT_FRAME_BURST: '100',
    PUBLISH_TIMEOUT: '2000',
    REDIS_TIMEOUT: '3000',
    HANDSHAKE_TIMEOUT: '4000',
    UPGRADE_RATE_LIMIT: '60',
    PUBLISH_RATE_LIMIT: '600',
    HISTORY_SIZE: '500',
    HISTORY_TTL: '60000',
    MAX_REPLAY: '1000',
    MAX_HISTORY_BYTES: '100000',
    CLIENT_RESUME_RATE: '5',
    IDEMPOTENCY_WINDOW: '30000',
    PRESENCE_CHANNELS: 'room.*,lobby',
    PRESENCE_EVENTS: 'room.*',
    PRESENCE_TTL: '10000',
    PRESENCE_ANONYMOUS: 'true'
  }), {
    redis: 'redis://r:6379',
    publishKeys: ['key-one-0123456789', 'key-two-0123456789'],
    insecurePublish: true,
    jwt: { secret: 'secret-of-at-least-16', audience: 'hub' },
    allowedOrigins: ['https://a.example.com', 'https://*.example.org'],
    requireOrigin: true,
    personalChannels: false,
    maxPayload: 1024,
    maxChannelsPerConnection: 10,
    maxConnections: 1000,
    maxConnectionsPerIp: 20,
    clientFrameRate: 50,
    clientFrameBurst: 100,
    publishTimeout: 2000,
    redisTimeout: 3000,
    handshakeTimeout: 4000,
    rateLimit: { upgrade: { max: 60, timeWindow: 60_000 }, publish: { max: 600, timeWindow: 60_000 } },
    clientResumeRate: 5,
    history: { size: 500, ttl: 60000, maxReplay: 1000, maxReadBytes: 100000 },
    idempotencyWindow: 30000,
    presence: { channels: ['room.*', 'lobby'], events: ['room.*'], ttl: 10000, anonymous: true }
  })
  t.same(optionsFromEnv({ PRESENCE_CHANNELS: '-' }).presence, { channels: [] }, 'PRESENCE_CHANNELS=- tracks no channel')
  t.same(optionsFromEnv({ JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----' }).jwt,
    { publicKey: '-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----' }, 'a one-line PEM with \\n escapes is unfolded')
  t.throws(() => optionsFromEnv({ MAX_CONNECTIONS: 'lots' }), /MAX_CONNECTIONS must be a whole number/)
})

t.test('a service with PUBLISH_KEY refuses publishes without it', async (t) => {
  const service = await startService(t, { REDIS_URL: '', PUBLISH_KEY: 'service-key-0123456789' })
  const publish = async (headers: Record<string, string>): Promise<number> => (await fetch(`${service.url}/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"data":1}'
  })).status
  t.equal(await publish({}), 401)
  t.equal(await publish({ authorization: 'Bearer service-key-0123456789' }), 202)
})

t.test('the service logs no token from a query string, on any path, a 404 included', async (t) => {
  const service = await startService(t, { REDIS_URL: redis.url, JWT_SECRET: 'a-service-secret-of-32-characters' })
  const secret = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ'
  const signature = secret.split('.')[2]
  const paths = ['/ws/', '/WS', '//ws', '/health', '/publish', '/nowhere', '/history/news', '/presence/news']
  for (const path of paths) {
    await fetch(`${service.url}${path}?channels=a&token=${secret}`)
    await fetch(`${service.url}${path}?%74oken=${secret}&key=${secret}`)
  }
  await fetch(`${service.url}/publish?access_token=${secret}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"data":1}' })
  // Every request above is logged ("incoming request"), so the last one's line says all are in.
  const logged = (): string => service.output()
  for (let i = 0; i < 100 && !logged().includes('access_token=[redacted]'); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(logged().includes('token=[redacted]'), 'the requests were logged, redacted')
  t.ok(logged().includes('not found'), 'a 404 was logged')
  t.notOk(logged().includes(signature), 'no line holds the token')
})

t.test('npm start listens on IPv6 and IPv4 alike by default (FASTIFY_ADDRESS, else ::)', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, /--address \$\{FASTIFY_ADDRESS:-::\}/, 'the start script defaults the address to ::')
  const service = await startService(t, { REDIS_URL: redis.url, FASTIFY_ADDRESS: '::' })
  const port = new URL(service.url).port
  t.equal((await fetch(`http://[::1]:${port}/health`)).status, 200, 'over IPv6')
  t.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'over IPv4')
})

t.test('the service connects through @fastify/redis; a Redis that is down fails start-up with the plugin\'s message', async (t) => {
  const service = await startService(t, { REDIS_URL: redis.url })
  t.equal((await fetch(`${service.url}/health`)).status, 200)
  const clients = await redis.client().call('CLIENT', 'LIST') as string
  t.match(clients, /name=fastify-redis-broadcast:publisher/, 'fastify.redis is made with the plugin\'s settings')

  const closed = await freePort()
  const failed = await startService(t, { REDIS_URL: `redis://127.0.0.1:${closed}`, FASTIFY_PLUGIN_TIMEOUT: '3000' }).then(() => undefined, (err: Error) => err)
  t.match(failed?.message, new RegExp(`Redis at 127.0.0.1:${closed} did not become ready within 2000 ms`))
  const retries = failed?.message.match(/redis connection error/g) ?? []
  t.ok(retries.length <= 4, `${retries.length} connection error lines in 2 s`)
  t.notMatch(failed?.message, /Unhandled error event|at Socket|Plugin did not start in time/, 'no stacks, and not Fastify\'s time-out')
})

t.test('the service closes cleanly while Redis is down', async (t) => {
  const saved = process.env.REDIS_URL
  t.teardown(() => {
    if (saved === undefined) delete process.env.REDIS_URL
    else process.env.REDIS_URL = saved
  })
  process.env.REDIS_URL = redis.url
  const server = Fastify({ logger: false })
  await server.register(app)
  await server.ready()
  await redis.kill()
  t.teardown(async () => { await redis.start() })
  await t.resolves(async () => { await server.close() }, 'close() resolves: the client is disconnected, not sent a QUIT it cannot send')
})
