import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain } from './helpers/client.js'

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

async function numsub (channel: string): Promise<number> {
  const reply = await admin.pubsub('NUMSUB', `frb:c:${channel}`) as [string, number]
  return Number(reply[1])
}

async function waitForNumsub (channel: string, expected: number): Promise<number> {
  const deadline = Date.now() + 3000
  let count = await numsub(channel)
  while (count !== expected && Date.now() < deadline) {
    await sleep(10)
    count = await numsub(channel)
  }
  return count
}

t.test('a publish on one instance reaches the right clients on every instance', async (t) => {
  const a = await build(t, { redis: redis.url })
  const b = await build(t, { redis: redis.url })
  const newsOnA = await a.connect('?channels=news')
  const newsOnB = await b.connect('?channels=news')
  const sportOnB = await b.connect('?channels=sport')
  const nothingOnA = await a.connect()
  for (const client of [newsOnA, newsOnB, sportOnB]) await client.waitFor((f) => f.type === 'subscribed')

  t.equal((await a.publish({ channel: 'news', data: 'from A' })).status, 202)
  t.equal((await b.publish({ channel: 'sport', data: 'from B' })).status, 202)
  t.equal((await a.publish({ data: 'to all' })).status, 202)

  t.same(plain(await newsOnA.messages(2)), [
    { type: 'message', channel: 'news', data: 'from A' },
    { type: 'message', data: 'to all' }
  ])
  t.same(plain(await newsOnB.messages(2)), [
    { type: 'message', channel: 'news', data: 'from A' },
    { type: 'message', data: 'to all' }
  ])
  t.same(plain(await sportOnB.messages(2)), [
    { type: 'message', channel: 'sport', data: 'from B' },
    { type: 'message', data: 'to all' }
  ])
  t.same(plain(await nothingOnA.messages(1)), [{ type: 'message', data: 'to all' }])
  await sleep(100)
  for (const client of [newsOnA, newsOnB, sportOnB]) t.equal(client.received().length, 2, 'no stray or duplicate message')
})

t.test('Redis subscriptions are reference-counted per instance', async (t) => {
  const a = await build(t, { redis: redis.url })
  const b = await build(t, { redis: redis.url })
  t.equal(await numsub('room'), 0, 'nobody listens before the first client joins')

  const first = await a.connect()
  const second = await a.connect()
  await first.subscribe('room')
  t.equal(await numsub('room'), 1, 'the first local client subscribes its instance')
  await second.subscribe('room')
  t.equal(await numsub('room'), 1, 'a second client on the same instance adds no Redis subscription')

  const onB = await b.connect('?channels=room')
  await onB.waitFor((f) => f.type === 'subscribed')
  t.equal(await numsub('room'), 2, 'each instance subscribes once')

  await first.unsubscribe('room')
  t.equal(await waitForNumsub('room', 2), 2, 'the instance stays subscribed while a local client listens')
  await second.close()
  t.equal(await waitForNumsub('room', 1), 1, 'the last local client leaving (by closing) unsubscribes its instance')
  await onB.unsubscribe('room')
  t.equal(await waitForNumsub('room', 0), 0, 'no instance listens once every client left')

  const all = await admin.pubsub('NUMSUB', 'frb:all') as [string, number]
  t.equal(Number(all[1]), 2, 'every instance listens on the broadcast-to-all channel')
})

t.test('a client that subscribes again right after leaving keeps receiving', async (t) => {
  const a = await build(t, { redis: redis.url })
  const client = await a.connect()
  for (let i = 0; i < 20; i++) {
    client.send({ type: 'subscribe', channel: 'flap' })
    client.send({ type: 'unsubscribe', channel: 'flap' })
  }
  client.send({ type: 'subscribe', channel: 'flap' })
  // Wait for every reply, not just the first `subscribed`: the last command must have run.
  await client.waitFor(() => client.frames.length >= 41)
  t.same(client.frames.map((f) => f.type), [...Array.from({ length: 20 }, () => ['subscribed', 'unsubscribed']).flat(), 'subscribed'],
    'replies come in the order the frames were sent')
  t.equal(await numsub('flap'), 1, 'the last command wins: subscribed')
  await a.publish({ channel: 'flap', data: 'landed' })
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'flap', data: 'landed' }])
})

t.test('every Redis name carries the configured prefix', async (t) => {
  const a = await build(t, { redis: redis.url, redisPrefix: 'tenant1:' })
  const b = await build(t, { redis: redis.url, redisPrefix: 'tenant2:' })
  const onA = await a.connect('?channels=news')
  const onB = await b.connect('?channels=news')
  await onA.waitFor((f) => f.type === 'subscribed')
  await onB.waitFor((f) => f.type === 'subscribed')
  const channels = (await admin.pubsub('CHANNELS', 'tenant*') as string[]).sort()
  t.same(channels, ['tenant1:all', 'tenant1:c:news', 'tenant2:all', 'tenant2:c:news'])
  await a.publish({ channel: 'news', data: 'only tenant1' })
  await onA.messages(1)
  await sleep(100)
  t.same(plain(onB.received()), [], 'another prefix is another namespace')
})
