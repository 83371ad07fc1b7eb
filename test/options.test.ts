import t from 'tap'
import Fastify from 'fastify'
import redisBroadcast, { redisBroadcast as named } from '../plugin/index.js'
import { build } from './helpers/app.js'
import { TestClient, refusedUpgrade, wsUrl, plain } from './helpers/client.js'

t.test('the plugin is the default export and the named export', async (t) => {
  t.equal(named, redisBroadcast)
})

t.test('a bad option fails registration with a sentence naming it', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ publishPath: 'publish' }, /option "publishPath"/],
    [{ websocketPath: true }, /option "websocketPath"/],
    [{ publishBodyLimit: -1 }, /option "publishBodyLimit"/],
    [{ redisPrefix: 7 }, /option "redisPrefix"/],
    [{ redis: 42 }, /option "redis" must be a redis:\/\/ URL/],
    [{ redis: null }, /option "redis"/],
    [{ channelz: 'typo' }, /option "channelz"/],
    [{ jwt: {} }, /option "jwt" needs exactly one of secret and publicKey/],
    [{ jwt: { secret: 'a-secret-of-16-chars+', publicKey: 'pem' } }, /option "jwt" needs exactly one/],
    [{ jwt: { secret: 'short' } }, /option "jwt.secret"/],
    [{ publishKeys: ['short'] }, /option "publishKeys.0"/],
    [{ authorize: 'yes' }, /option "authorize" must be a function/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify({ logger: false })
    await t.rejects(async () => await app.register(redisBroadcast, options as never).ready(), { code: 'FRB_INVALID_OPTION', message }, JSON.stringify(options))
    await app.close()
  }
})

t.test('an option error never shows a secret\'s value', async (t) => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ publishKeys: ['Sup3rS3cret15ch'] }, 'Sup3rS3cret15ch', /option "publishKeys.0" is invalid: .* \(got a string of 15 characters\)/],
    [{ jwt: { secret: 'Sup3rS3cret15ch' } }, 'Sup3rS3cret15ch', /option "jwt.secret" is invalid: .* \(got a string of 15 characters\)/],
    [{ jwt: { secret: 'a-long-enough-secret-value', extra: 'x' } }, 'a-long-enough-secret-value', /option "jwt.extra"/],
    [{ jwt: 'a-long-enough-secret-value' }, 'a-long-enough-secret-value', /option "jwt" is invalid: .* \(got a string of 26 characters\)/],
    [{ publishKeys: [null] }, 'no-such-value', /option "publishKeys.0" is invalid: .* \(got null\)/],
    [{ jwt: 42 }, 'no-such-value', /option "jwt" is invalid: .* \(got 42\)/],
    [{ publishKey: 'Sup3rS3cret15ch' }, 'Sup3rS3cret15ch', /option "publishKey" is invalid: .* \(got a string of 15 characters\)/],
    [{ jwt: { secret: 42 } }, 'no-such-value', /option "jwt.secret" is invalid/],
    [{ jwt: { secret: { value: 'Sup3rS3cret15ch' } } }, 'Sup3rS3cret15ch', /option "jwt.secret" is invalid: .* \(got an object\)/],
    [{ publishKeys: [['Sup3rS3cret15ch']] }, 'Sup3rS3cret15ch', /option "publishKeys.0" is invalid: .* \(got an array\)/],
    [{ rateLimit: { publish: { max: 0, timeWindow: 1 } } }, 'no-such-value', /option "rateLimit.publish.max" is invalid: .* \(got 0\)/]
  ]
  for (const [options, secret, message] of cases) {
    const app = Fastify({ logger: false })
    const err = await app.register(redisBroadcast, options as never).ready().then(() => undefined, (err: Error) => err)
    await app.close()
    t.match(err, { code: 'FRB_INVALID_OPTION', message }, message.source)
    t.notMatch(err?.message, secret, 'the value is not in the message')
  }
})

t.test('channel patterns in options follow the grant grammar', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ presence: { channels: ['room:1*'] } }, /option "presence.channels.0" is not a channel pattern: "room:1\*"/],
    [{ presence: { events: ['*', 'lobby*'] } }, /option "presence.events.1"/],
    [{ history: { rules: [{ channels: 'a:*:*', size: 1, ttl: 1000 }] } }, /option "history.rules.0.channels"/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify({ logger: false })
    await t.rejects(async () => await app.register(redisBroadcast, options as never).ready(), { code: 'FRB_INVALID_OPTION', message }, JSON.stringify(options))
    await app.close()
  }
})

t.test('registering the plugin twice is refused', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast)
  await t.rejects(async () => await app.register(redisBroadcast).ready(), { code: 'FRB_ALREADY_REGISTERED' })
  await app.close()
})

t.test('Fastify\'s own register options are not taken for plugin options', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { prefix: '/api', logLevel: 'warn' } as never)
  await app.ready()
  t.ok(app.hasRoute({ method: 'POST', url: '/publish' }))
  await app.close()
})

t.test('each route path is configurable and each route can be left out', async (t) => {
  const { app, url } = await build(t, { websocketPath: '/live', publishPath: '/api/send', healthPath: false })
  t.ok(app.hasRoute({ method: 'POST', url: '/api/send' }))
  t.notOk(app.hasRoute({ method: 'POST', url: '/publish' }))
  t.notOk(app.hasRoute({ method: 'GET', url: '/health' }))
  const client = await TestClient.connect(wsUrl(url, '?channels=x', '/live'))
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed')
  const response = await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"channel":"x","data":1}' })
  t.equal(response.status, 202)
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'x', data: 1 }])
  t.equal((await refusedUpgrade(wsUrl(url))).status, 404)

  const { app: reads } = await build(t, { historyPath: '/api/history', presencePath: false })
  t.ok(reads.hasRoute({ method: 'GET', url: '/api/history/:channel' }))
  t.notOk(reads.hasRoute({ method: 'GET', url: '/history/:channel' }))
  t.notOk(reads.hasRoute({ method: 'GET', url: '/presence/:channel' }))

  const { app: bare } = await build(t, { websocketPath: false, publishPath: false })
  t.notOk(bare.hasRoute({ method: 'GET', url: '/ws' }))
  t.notOk(bare.hasRoute({ method: 'POST', url: '/publish' }))
  t.type(bare.broadcast, 'function', 'broadcast() stays available without routes')
})

t.test('an app that registered @fastify/websocket itself keeps its own setup', async (t) => {
  const websocket = (await import('@fastify/websocket')).default
  const app = Fastify({ logger: false })
  await app.register(websocket)
  await app.register(redisBroadcast)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const client = await TestClient.connect(`ws://127.0.0.1:${port}/ws`)
  client.send({ type: 'ping' })
  await client.waitFor((f) => f.type === 'pong')
  await client.close()
  await app.close()
})
