import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { build, type TestApp } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { TestClient, wsUrl } from './helpers/client.js'

// The back end's say over connections by identity, on every instance: join a room, leave it, be
// disconnected; across two instances on one Redis, and for connections still connecting.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-test-secret-of-32-characters!!'
const sign = createSigner({ key: SECRET, expiresIn: 60_000 })

async function connectAs (app: TestApp, sub: string): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl(app.url), { headers: { authorization: `Bearer ${sign({ sub })}` } })
  t.teardown(() => client.close())
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === `@${sub}`)
  return client
}

async function command (app: TestApp, method: string, path: string, body: unknown): Promise<Response> {
  return await fetch(`${app.url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

t.test('POST and DELETE /subscriptions move every connection of an identity, on every instance, and no other', async (t) => {
  const options = { redis: redis.url, jwt: { secret: SECRET } }
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  const tabs = [await connectAs(a, '42'), await connectAs(b, '42')]
  const other = await connectAs(a, '7')
  const joined = await command(b, 'POST', '/subscriptions', { identity: '42', channel: 'room:7' })
  t.equal(joined.status, 202)
  t.same(await joined.json(), { status: 'accepted' })
  for (const tab of tabs) t.match(await tab.waitFor((f) => f.type === 'subscribed' && f.channel === 'room:7'), { channel: 'room:7' }, 'no grant needed: the back end decided')
  await a.app.broadcast('in the room', { channel: 'room:7' })
  for (const tab of tabs) t.same((await tab.messages(1)).map((m) => m.data), ['in the room'])
  t.equal((await command(a, 'DELETE', '/subscriptions', { identity: '42', channel: 'room:7' })).status, 202)
  for (const tab of tabs) await tab.waitFor((f) => f.type === 'unsubscribed' && f.channel === 'room:7')
  await a.app.broadcast('after', { channel: 'room:7' })
  await sleep(200)
  for (const tab of tabs) t.equal(tab.received().length, 1, 'nothing after leaving')
  t.same(other.frames.filter((f) => f.channel === 'room:7'), [], 'another identity is untouched')
})

t.test('POST /disconnect closes every connection of an identity, with its code, even one still connecting', async (t) => {
  let hold: Promise<void> | undefined
  const options = {
    redis: redis.url,
    jwt: { secret: SECRET },
    authorize: async (_request: unknown, auth: unknown) => { await hold; return auth as never }
  }
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  const tabs = [await connectAs(a, 'mallory'), await connectAs(b, 'mallory')]
  const bystander = await connectAs(a, 'bob')
  let release: () => void = () => {}
  hold = new Promise((resolve) => { release = resolve })
  const connecting = TestClient.connect(wsUrl(b.url), { headers: { authorization: `Bearer ${sign({ sub: 'mallory' })}` } })
  await sleep(100)
  t.equal((await command(a, 'POST', '/disconnect', { identity: 'mallory', code: 4409, reason: 'banned' })).status, 202)
  for (const tab of tabs) t.same(await tab.closed, { code: 4409, reason: 'banned' })
  release()
  hold = undefined
  const late = await connecting
  t.teardown(() => late.close())
  t.same(await late.closed, { code: 4409, reason: 'banned' }, 'the one in its upgrade is closed once it joins')
  t.equal((await command(a, 'POST', '/disconnect', { identity: 'bob' })).status, 202)
  t.same(await bystander.closed, { code: 4403, reason: 'disconnected by the server' }, 'the default code')
})

t.test('the commands are guarded like publishing and check their bodies', async (t) => {
  const app = await build(t, { redis: redis.url, publishKeys: ['commands-key-0123456789'] })
  t.equal((await command(app, 'POST', '/disconnect', { identity: 'x' })).status, 401)
  const authorized = async (path: string, body: unknown): Promise<number> => (await fetch(`${app.url}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer commands-key-0123456789' }, body: JSON.stringify(body)
  })).status
  t.equal(await authorized('/disconnect', { identity: 'x', code: 1000 }), 400, 'a code outside 4000-4999')
  t.equal(await authorized('/subscriptions', { identity: 'x', channel: 'bad name' }), 400)
  t.equal(await authorized('/subscriptions', { identity: '', channel: 'ok' }), 400)
  t.equal(await authorized('/subscriptions', { identity: 'x', channel: 'ok' }), 202)
  t.equal(await authorized('/disconnect', { identity: 'x'.repeat(200) }), 202, 'an identity too long for any connection to have: nobody is touched')
})

t.test('on the in-process bus too', async (t) => {
  const app = await build(t, { jwt: { secret: SECRET } })
  const tab = await connectAs(app, 'solo')
  t.equal((await command(app, 'POST', '/subscriptions', { identity: 'solo', channel: 'lobby' })).status, 202)
  await tab.waitFor((f) => f.type === 'subscribed' && f.channel === 'lobby')
  t.equal((await command(app, 'POST', '/disconnect', { identity: 'solo' })).status, 202)
  t.same(await tab.closed, { code: 4403, reason: 'disconnected by the server' })
})

t.test('a command the bus cannot carry is answered 503 with Retry-After, or 502 when Redis refuses it', async (t) => {
  const app = await build(t, { redis: redis.url })
  const admin = redis.client()
  await admin.call('ACL', 'SETUSER', 'default', 'resetchannels', '&frb:c:*')
  t.teardown(async () => { await admin.call('ACL', 'SETUSER', 'default', 'allchannels') })
  const refused = await command(app, 'POST', '/disconnect', { identity: 'x' })
  t.equal(refused.status, 502)
  t.match(await refused.json(), { code: 'FRB_BUS_REFUSED' })
  await admin.call('ACL', 'SETUSER', 'default', 'allchannels')
  const { Redis } = await import('ioredis')
  const own = new Redis(redis.url, { enableOfflineQueue: false })
  t.teardown(() => own.disconnect())
  const cut = await build(t, { redis: own })
  own.disconnect()
  const unavailable = await command(cut, 'POST', '/disconnect', { identity: 'x' })
  t.equal(unavailable.status, 503)
  t.equal(unavailable.headers.get('retry-after'), '1')
})

t.test('only the plugin\'s own command bytes are commands', async (t) => {
  const { parseCommand } = await import('../plugin/commands.js')
  t.equal(parseCommand(Buffer.from('{"type":"message","data":1}')), undefined)
  t.equal(parseCommand(Buffer.from('{"type":"comm')), undefined, 'too short')
  t.equal(parseCommand(Buffer.from('{"type":"command",broken')), undefined, 'not JSON')
  t.same(parseCommand(Buffer.from('{"type":"command","op":"disconnect","identity":"a","code":4403,"reason":"r"}')),
    { type: 'command', op: 'disconnect', identity: 'a', code: 4403, reason: 'r' })
})

t.test('channels the back end chose join at connect: the token\'s join claim, or authorize()\'s, with no grant needed', async (t) => {
  const app = await build(t, { redis: redis.url, jwt: { secret: SECRET } })
  const client = await TestClient.connect(wsUrl(app.url), {
    headers: { authorization: `Bearer ${sign({ sub: 'erin', channels: [], join: ['room:1', 'room:2', 'bad name', 42] })}` }
  })
  t.teardown(() => client.close())
  for (const channel of ['room:1', 'room:2']) await client.waitFor((f) => f.type === 'subscribed' && f.channel === channel)
  await app.app.broadcast('hi', { channel: 'room:2' })
  t.same((await client.messages(1)).map((m) => m.data), ['hi'])
  t.same(client.frames.filter((f) => f.type === 'error'), [], 'invalid entries are left out, not errors')
  const from = client.frames.length
  client.send({ type: 'subscribe', channel: 'room:3' })
  t.match(await client.waitFor((f) => f.channel === 'room:3', { from }), { type: 'error', code: 'FRB_CHANNEL_FORBIDDEN' }, 'joining is not a grant')

  const hooked = await build(t, { redis: redis.url, authorize: async () => ({ identity: 'frank', join: ['lobby'] }) })
  const guest = await hooked.connect()
  await guest.waitFor((f) => f.type === 'subscribed' && f.channel === 'lobby')
  t.pass('authorize() joins it too')
})
