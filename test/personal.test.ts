import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build, type TestApp } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { TestClient, wsUrl, type Frame } from './helpers/client.js'
import { personalChannel } from '../plugin/personal.js'

// `@<identity>`: the channel of one identity, joined at connect by every connection of it, on
// every instance, and nobody else's to read.

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'a-test-secret-of-32-characters!!'
const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
const options = { redis: redis.url, jwt: { secret: SECRET } }

async function connectAs (app: TestApp, sub: string, channels: string[] = []): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl(app.url), { headers: { authorization: `Bearer ${sign({ sub, channels })}` } })
  t.teardown(() => client.close())
  return client
}

t.test('a personal message reaches every connection of that user on both instances, and no one else', async (t) => {
  const [a, b] = await Promise.all([build(t, options), build(t, options)])
  const tabs = [await connectAs(a, '42'), await connectAs(b, '42')]
  const other = await connectAs(a, '7', ['*'])
  for (const tab of tabs) t.match(await tab.waitFor((f) => f.type === 'subscribed'), { channel: '@42' }, 'announced at connect')
  await other.waitFor((f) => f.type === 'subscribed' && f.channel === '@7')
  const result = await b.app.broadcast({ note: 'hello 42' }, { channel: '@42' })
  t.equal(result.offset, 1, 'an ordinary channel: history and offsets')
  for (const tab of tabs) t.same((await tab.messages(1)).map((m) => m.data), [{ note: 'hello 42' }])
  const from = other.frames.length
  other.send({ type: 'subscribe', channel: '@42' })
  t.match(await other.waitFor((f) => f.type === 'error', { from }), { code: 'FRB_CHANNEL_FORBIDDEN', channel: '@42' }, 'not even with a * grant')
  t.same(other.received(), [])
  const history = await fetch(`${a.url}/history/@42`, { headers: { authorization: `Bearer ${sign({ sub: '7', channels: ['*'] })}` } })
  t.equal(history.status, 403, 'nor its history')
  const own = await fetch(`${a.url}/history/@42`, { headers: { authorization: `Bearer ${sign({ sub: '42' })}` } })
  t.same(((await own.json()) as { messages: Frame[] }).messages.map((m) => m.data), [{ note: 'hello 42' }], 'the owner reads it')
})

t.test('a user offline for a while gets the notifications it missed, resuming its personal channel', async (t) => {
  const app = await build(t, options)
  await app.app.broadcast('welcome', { channel: '@carol' })
  const first = await connectAs(app, 'carol')
  const joined = await first.waitFor((f) => f.type === 'subscribed' && f.channel === '@carol')
  await first.close()
  await app.app.broadcastMany([{ channel: '@carol', data: 'one' }, { channel: '@carol', data: 'two' }])
  const back = await connectAs(app, 'carol')
  await back.waitFor((f) => f.type === 'subscribed' && f.channel === '@carol')
  t.equal(joined.offset, 1, 'the history of the personal channel, as of the first connection')
  back.send({ type: 'subscribe', channel: '@carol', since: joined.offset, epoch: joined.epoch })
  t.match(await back.waitFor((f) => f.type === 'subscribed' && f.recovered !== undefined), { recovered: true })
  t.same((await back.messages(2)).map((m) => m.data), ['one', 'two'])
})

t.test('identities outside the channel alphabet map to ~XX bytes and work', async (t) => {
  t.equal(personalChannel({ sub: 'auth0|123' }), '@auth0~7C123')
  t.equal(personalChannel({ sub: 'a@b.example' }), '@a~40b.example')
  t.equal(personalChannel({ sub: 'ü~' }), '@~C3~BC~7E')
  t.equal(personalChannel(42), '@42', 'a number identity from authorize()')
  t.equal(personalChannel('x'.repeat(200)), undefined, 'too long to name: no personal channel')
  t.equal(personalChannel({ name: 'no sub' }), undefined)
  t.equal(personalChannel(undefined), undefined)
  const app = await build(t, options)
  for (const sub of ['auth0|123', 'a@b.example']) {
    const client = await connectAs(app, sub)
    const channel = personalChannel({ sub }) as string
    await client.waitFor((f) => f.type === 'subscribed' && f.channel === channel)
    const response = await app.publish({ channel, data: sub })
    t.equal(response.status, 202, `POST /publish to ${channel}`)
    t.same((await client.messages(1)).map((m) => m.data), [sub])
  }
})

t.test('personalChannels: false joins nothing at connect; anonymous connections have no personal channel', async (t) => {
  const off = await build(t, { ...options, personalChannels: false })
  const client = await connectAs(off, 'dave', ['news'])
  client.send({ type: 'subscribe', channel: 'news' })
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'news')
  t.same(client.frames.filter((f) => f.channel === '@dave'), [], 'not joined at connect')
  client.send({ type: 'subscribe', channel: '@dave' })
  t.match(await client.waitFor((f) => f.channel === '@dave'), { type: 'subscribed' }, 'but still its own to subscribe to')
  const open = await build(t, { redis: redis.url })
  const anonymous = await open.connect()
  anonymous.send({ type: 'subscribe', channel: '@dave' })
  t.match(await anonymous.waitFor((f) => f.channel === '@dave'), { type: 'error', code: 'FRB_CHANNEL_FORBIDDEN' })
})
