import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { build } from './helpers/app.js'
import { TestClient, refusedUpgrade, wsUrl, plain } from './helpers/client.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-test-secret-of-32-characters!!'
const AUDIENCE = 'hub.example.com'
const sign = createSigner({ key: SECRET, aud: AUDIENCE, expiresIn: 60_000 })
const jwtOptions = { redis: redis.url, jwt: { secret: SECRET, audience: AUDIENCE } }

t.test('upgrades with a missing, expired, badly signed or wrong-audience token get 401 before the upgrade', async (t) => {
  const { url } = await build(t, jwtOptions)
  const tokens: Record<string, string | undefined> = {
    missing: undefined,
    expired: createSigner({ key: SECRET, aud: AUDIENCE })({ sub: 'u1', exp: Math.floor(Date.now() / 1000) - 10 }),
    'bad signature': createSigner({ key: 'another-secret-of-32-characters!', aud: AUDIENCE, expiresIn: 60_000 })({ sub: 'u1' }),
    'wrong audience': createSigner({ key: SECRET, aud: 'elsewhere', expiresIn: 60_000 })({ sub: 'u1' }),
    'no expiry': createSigner({ key: SECRET, aud: AUDIENCE })({ sub: 'u1' }),
    garbage: 'not.a.jwt'
  }
  t.equal((await refusedUpgrade(wsUrl(url), { authorization: `Basic ${sign({ sub: 'u1' })}` })).status, 401, 'a token under another scheme')
  for (const [name, token] of Object.entries(tokens)) {
    const refusal = await refusedUpgrade(wsUrl(url), token === undefined ? {} : { authorization: `Bearer ${token}` })
    t.equal(refusal.status, 401, name)
    t.match(JSON.parse(refusal.body), { code: 'FRB_UNAUTHORIZED' }, name)
  }
})

t.test('with an audience configured, a token without aud is refused at connect, at refresh and on GET /history', async (t) => {
  const { url } = await build(t, jwtOptions)
  const noAudience = createSigner({ key: SECRET, expiresIn: 60_000 })({ sub: 'u1', channels: ['*'] })
  const refusal = await refusedUpgrade(wsUrl(url), { authorization: `Bearer ${noAudience}` })
  t.equal(refusal.status, 401, 'connect')
  t.match(JSON.parse(refusal.body), { code: 'FRB_UNAUTHORIZED', message: /aud/ })
  const history = await fetch(`${url}/history/news`, { headers: { authorization: `Bearer ${noAudience}` } })
  t.equal(history.status, 401, 'GET /history')
  const client = await TestClient.connect(wsUrl(url, '?channels=news'), { headers: { authorization: `Bearer ${sign({ sub: 'u1', channels: ['news'] })}` } })
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed')
  client.send({ type: 'refresh', token: noAudience })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_UNAUTHORIZED' }, 'refresh: the wider grants are not taken')
  client.send({ type: 'subscribe', channel: 'other' })
  t.match(await client.waitFor((f) => f.type === 'error' && f.code === 'FRB_CHANNEL_FORBIDDEN'), { channel: 'other' })
})

t.test('a token whose iat is in the future is refused; a little clock skew is allowed', async (t) => {
  const { url } = await build(t, jwtOptions)
  const now = Math.floor(Date.now() / 1000)
  const future = sign({ sub: 'u1', iat: now + 600 })
  const refusal = await refusedUpgrade(wsUrl(url), { authorization: `Bearer ${future}` })
  t.equal(refusal.status, 401)
  t.match(JSON.parse(refusal.body), { code: 'FRB_UNAUTHORIZED', message: /iat/ })
  const skewed = await TestClient.connect(wsUrl(url), { headers: { authorization: `Bearer ${sign({ sub: 'u1', iat: now + 2 })}` } })
  t.teardown(() => skewed.close())
  t.equal(skewed.socket.readyState, 1, 'iat 2 s ahead is clock skew, accepted')
})

t.test('a valid token is accepted from the header, ?token= or a bearer subprotocol', async (t) => {
  const { url, publish } = await build(t, jwtOptions)
  const token = sign({ sub: 'u1', channels: ['news'] })
  const viaHeader = await TestClient.connect(wsUrl(url, '?channels=news'), { headers: { authorization: `Bearer ${token}` } })
  const viaQuery = await TestClient.connect(wsUrl(url, `?channels=news&token=${token}`))
  const viaProtocol = await TestClient.connect(wsUrl(url, '?channels=news'), {}, ['bearer', token])
  t.teardown(async () => { await viaHeader.close(); await viaQuery.close(); await viaProtocol.close() })
  t.equal(viaProtocol.socket.protocol, 'bearer', 'the server echoes the bearer subprotocol, as browsers require')
  for (const client of [viaHeader, viaQuery, viaProtocol]) await client.waitFor((f) => f.type === 'subscribed')
  await publish({ channel: 'news', data: 'hi' })
  for (const client of [viaHeader, viaQuery, viaProtocol]) t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'news', data: 'hi' }])
})

t.test('a token in ?token= is redacted from the logs', async (t) => {
  const lines: string[] = []
  const Fastify = (await import('fastify')).default
  const redisBroadcast = (await import('../plugin/index.js')).default
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { lines.push(line) } } } })
  await app.register(redisBroadcast, { jwt: { secret: SECRET, audience: AUDIENCE } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const token = sign({ sub: 'u1' })
  const client = await TestClient.connect(wsUrl(`http://127.0.0.1:${(app.server.address() as { port: number }).port}`, `?token=${token}`))
  await client.close()
  await app.close()
  t.ok(lines.some((line) => line.includes('token=[redacted]')), 'the request was logged, redacted')
  t.notOk(lines.some((line) => line.includes(token.split('.')[2])), 'no line holds the token')
})

t.test('an RS256 public key verifies tokens signed with its private key', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const { url } = await build(t, { jwt: { publicKey: pem } })
  const token = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256', expiresIn: 60_000 })({ sub: 'u1', channels: ['a'] })
  const client = await TestClient.connect(wsUrl(url, '?channels=a'), { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => client.close())
  t.same(await client.waitFor((f) => f.type !== 'x'), { type: 'subscribed', channel: 'a' })
  const forged = createSigner({ key: SECRET, expiresIn: 60_000 })({ sub: 'u1' })
  t.equal((await refusedUpgrade(wsUrl(url), { authorization: `Bearer ${forged}` })).status, 401, 'an HS256 token signed with a guess is refused')
})

t.test('1,000 refused upgrades leave the open socket count at its baseline within 1 s', async (t) => {
  const { app, url } = await build(t, jwtOptions)
  const count = async (): Promise<number> => await new Promise((resolve, reject) => app.server.getConnections((err, n) => err === null ? resolve(n) : reject(err)))
  const baseline = await count()
  for (let batch = 0; batch < 10; batch++) {
    const refusals = await Promise.all(Array.from({ length: 100 }, async () => await refusedUpgrade(wsUrl(url), { authorization: 'Bearer nope' })))
    t.ok(refusals.every((r) => r.status === 401))
  }
  const deadline = Date.now() + 1000
  while (await count() > baseline && Date.now() < deadline) await sleep(20)
  t.equal(await count(), baseline)
  t.equal(app.broadcastConnections.size, 0)
})

t.test('a live connection whose token expires is closed with 4401', async (t) => {
  const { url } = await build(t, jwtOptions)
  const token = createSigner({ key: SECRET, aud: AUDIENCE })({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 1 })
  const client = await TestClient.connect(wsUrl(url), { headers: { authorization: `Bearer ${token}` } })
  t.same(await client.closed, { code: 4401, reason: 'token expired' })
})

t.test('a refresh over the socket keeps it open past the first token\'s expiry', async (t) => {
  const { url, publish } = await build(t, jwtOptions)
  const short = createSigner({ key: SECRET, aud: AUDIENCE })({ sub: 'u1', channels: ['news', 'extra'], exp: Math.floor(Date.now() / 1000) + 1 })
  const client = await TestClient.connect(wsUrl(url, '?channels=news,extra'), { headers: { authorization: `Bearer ${short}` } })
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'extra')

  client.send({ type: 'refresh', token: 'garbage' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_UNAUTHORIZED' }, 'a bad refresh token is refused')
  let from = client.frames.length
  client.send({ type: 'refresh', token: sign({ sub: 'someone-else', channels: ['news'] }) })
  t.match(await client.waitFor((f) => f.type === 'error', { from }), { code: 'FRB_FORBIDDEN' }, 'another subject\'s token is refused')

  from = client.frames.length
  client.send({ type: 'refresh', token: sign({ sub: 'u1', channels: ['news'] }) })
  await client.waitFor((f) => f.type === 'refreshed', { from })
  t.match(await client.waitFor((f) => f.type === 'error', { from }), { code: 'FRB_CHANNEL_FORBIDDEN', message: /extra/ }, 'a channel no longer granted is dropped')
  await sleep(1500)
  t.equal(client.socket.readyState, client.socket.OPEN, 'still open after the first token expired')
  await publish({ channel: 'news', data: 'kept' })
  await publish({ channel: 'extra', data: 'dropped' })
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'news', data: 'kept' }])
  await sleep(200)
  t.equal(client.received().length, 1)
})

t.test('refresh without JWT configured is refused with a code', async (t) => {
  const { connect } = await build(t, {})
  const client = await connect()
  client.send({ type: 'refresh', token: 'x' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_REFRESH_UNAVAILABLE' })
  client.send({ type: 'refresh' })
  t.match(await client.waitFor((f) => f.type === 'error' && f.code === 'FRB_BAD_JSON'), { code: 'FRB_BAD_JSON' })
})

t.test('channel grants: allowed, denied and pattern-allowed; a denied channel never delivers', async (t) => {
  const { url, publish } = await build(t, jwtOptions)
  const token = sign({ sub: 'u1', channels: ['news', 'room:*'] })
  const client = await TestClient.connect(wsUrl(url, '?channels=news,secret'), { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => client.close())
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_CHANNEL_FORBIDDEN', message: /secret/ }, 'denied at connect')
  await client.subscribe('room:42')
  const from = client.frames.length
  client.send({ type: 'subscribe', channel: 'admin' })
  t.match(await client.waitFor((f) => f.type === 'error', { from }), { type: 'error', code: 'FRB_CHANNEL_FORBIDDEN' }, 'denied by message')
  for (const channel of ['news', 'secret', 'room:42', 'admin']) await publish({ channel, data: channel })
  await client.messages(2)
  await sleep(300)
  t.same(client.received().map((m) => m.channel), ['news', 'room:42'])
})

t.test('a token without a channels claim may subscribe to nothing', async (t) => {
  const { url } = await build(t, jwtOptions)
  const client = await TestClient.connect(wsUrl(url), { headers: { authorization: `Bearer ${sign({ sub: 'u1' })}` } })
  t.teardown(() => client.close())
  client.send({ type: 'subscribe', channel: 'news' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_CHANNEL_FORBIDDEN' })
})

t.test('authorize() decides before the upgrade, and canSubscribe() decides each channel', async (t) => {
  const { url, publish } = await build(t, {
    redis: redis.url,
    authorize: async (request) => {
      const user = request.headers['x-user']
      if (user === 'banned') {
        const { ForbiddenError } = (await import('../plugin/errors.js'))
        throw new ForbiddenError('banned')
      }
      if (typeof user !== 'string') return null
      return { identity: { user } }
    },
    canSubscribe: (identity, channel) => channel === `user:${(identity as { user: string }).user}`
  })
  t.equal((await refusedUpgrade(wsUrl(url))).status, 403, 'authorize returning nothing refuses with 403')
  const banned = await refusedUpgrade(wsUrl(url), { 'x-user': 'banned' })
  t.equal(banned.status, 403)
  t.match(JSON.parse(banned.body), { code: 'FRB_FORBIDDEN' })
  const alice = await TestClient.connect(wsUrl(url), { headers: { 'x-user': 'alice' } })
  t.teardown(() => alice.close())
  await alice.subscribe('user:alice')
  alice.send({ type: 'subscribe', channel: 'user:bob' })
  t.match(await alice.waitFor((f) => f.type === 'error'), { code: 'FRB_CHANNEL_FORBIDDEN' })
  await publish({ channel: 'user:bob', data: 'private' })
  await publish({ channel: 'user:alice', data: 'mine' })
  t.same(plain(await alice.messages(1)), [{ type: 'message', channel: 'user:alice', data: 'mine' }])
})

t.test('authorize() sees the verified token when JWT is on too', async (t) => {
  const { url } = await build(t, { ...jwtOptions, authorize: (request, jwt) => ({ ...jwt, identity: { wrapped: jwt?.identity } }) })
  const client = await TestClient.connect(wsUrl(url, '?channels=news'), { headers: { authorization: `Bearer ${sign({ sub: 'u9', channels: ['news'] })}` } })
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed')
})

t.test('authorize() without channel grants and without canSubscribe allows no channel', async (t) => {
  const { url } = await build(t, { authorize: () => ({ identity: 'anyone' }) })
  const client = await TestClient.connect(wsUrl(url))
  t.teardown(() => client.close())
  client.send({ type: 'subscribe', channel: 'news' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_CHANNEL_FORBIDDEN' })
})

t.test('canSubscribe() decides even when no connect auth is configured', async (t) => {
  const { connect } = await build(t, { canSubscribe: (identity, channel) => channel !== 'secret' })
  const client = await connect()
  await client.subscribe('public')
  client.send({ type: 'subscribe', channel: 'secret' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_CHANNEL_FORBIDDEN' })
})

t.test('a canSubscribe() that throws refuses that subscription only; the connection keeps working', async (t) => {
  const { connect } = await build(t, {
    canSubscribe: (identity, channel) => {
      if (channel === 'broken') throw new Error('lookup failed')
      return true
    }
  })
  const client = await connect()
  client.send({ type: 'subscribe', channel: 'broken' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: 'FRB_INTERNAL', message: 'lookup failed' })
  await client.subscribe('fine')
  t.pass('a later subscription still works')
})

t.test('a refresh needs the same sub claim, and authorize() has its say again', async (t) => {
  const { url } = await build(t, {
    ...jwtOptions,
    authorize: (request, jwt) => (jwt?.identity as { banned?: boolean }).banned === true ? false : jwt
  })
  const anonymous = await TestClient.connect(wsUrl(url), { headers: { authorization: `Bearer ${sign({ channels: ['news'] })}` } })
  t.teardown(() => anonymous.close())
  anonymous.send({ type: 'refresh', token: sign({ channels: ['news'] }) })
  t.match(await anonymous.waitFor((f) => f.type === 'error'), { code: 'FRB_FORBIDDEN', message: /sub claim/ }, 'no sub, no refresh')

  const user = await TestClient.connect(wsUrl(url), { headers: { authorization: `Bearer ${sign({ sub: 'u1' })}` } })
  t.teardown(() => user.close())
  user.send({ type: 'refresh', token: sign({ sub: 'u1', banned: true }) })
  t.match(await user.waitFor((f) => f.type === 'error'), { code: 'FRB_FORBIDDEN', message: /authorize/ }, 'authorize() refuses the renewed token')
})
