import t from 'tap'
import { execFileSync } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { build, type LogLine } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { waitUntil } from './helpers/wait.js'
import type { TestClient } from './helpers/client.js'

// Redis goes away in its three common ways (the server dies, only the subscriber connection is
// killed, Redis drops a subscriber that fell behind); each time the plugin reconnects,
// re-subscribes what it had and delivers again, without crashing.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

async function numsub (...channels: string[]): Promise<number[]> {
  const reply = await admin.call('PUBSUB', 'NUMSUB', ...channels) as Array<string | number>
  return reply.filter((_, i) => i % 2 === 1).map(Number)
}

/** Broadcasts `probe` messages every 50 ms until every client has one; returns when the last arrived. */
async function untilDelivered (broadcast: (seq: number) => Promise<unknown>, clients: TestClient[], timeout: number): Promise<number> {
  const deadline = Date.now() + timeout
  const firstAt = new Map<TestClient, number>()
  const counts = clients.map((client) => client.received().length)
  let seq = 0
  while (firstAt.size < clients.length && Date.now() < deadline) {
    await broadcast(seq++).catch(() => {})
    await sleep(50)
    clients.forEach((client, i) => {
      if (!firstAt.has(client) && client.received().length > counts[i]) firstAt.set(client, Date.now())
    })
  }
  if (firstAt.size < clients.length) throw new Error(`only ${firstAt.size} of ${clients.length} clients received within ${timeout} ms`)
  return Math.max(...firstAt.values())
}

for (const how of ['SIGKILL', 'SHUTDOWN NOSAVE'] as const) {
  t.test(`Redis restarted (${how}) two seconds later: every channel is subscribed again and delivers within 2.5 s`, async (t) => {
    const { app, connect, logs } = await build(t, { redis: redis.url })
    const channels = ['alpha', 'beta', 'gamma']
    const clients = await Promise.all(channels.map(async (channel) => await connect(`?channels=${channel}`)))
    await Promise.all(clients.map(async (client) => await client.waitFor((f) => f.type === 'subscribed')))
    const everyone = await connect()

    if (how === 'SIGKILL') {
      await redis.kill()
    } else {
      await admin.call('SHUTDOWN', 'NOSAVE').catch(() => {})
      await redis.kill()
    }
    await sleep(2000)
    await redis.start()
    const acceptingAt = Date.now()

    const lastArrival = await untilDelivered(async (seq) => {
      await Promise.all(channels.map(async (channel) => await app.broadcast({ seq }, { channel })))
    }, clients, 5000)
    t.ok(lastArrival - acceptingAt <= 2500, `delivering again ${lastArrival - acceptingAt} ms after Redis accepted connections`)
    t.same(await numsub(...channels.map((c) => `frb:c:${c}`), 'frb:all'), [1, 1, 1, 1],
      'the plugin re-subscribed every channel it had, and the broadcast channel')
    await untilDelivered(async (seq) => await app.broadcast({ seq }), [everyone], 2000)
    t.equal(app.broadcastStats().subscriberReconnects, 1, 'the reconnect is counted')
    t.ok(logs.some((line) => /redis subscriber reconnected/.test(line.msg)), 'and logged')
    t.ok(clients.every((client) => client.socket.readyState === 1), 'no client was dropped')
  })
}

t.test('the subscriber connection alone is killed: delivery resumes within 1 s, counted and logged', async (t) => {
  const { app, connect, logs } = await build(t, { redis: redis.url })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  await untilDelivered(async (seq) => await app.broadcast({ seq }, { channel: 'news' }), [client], 2000)

  t.equal(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')), 1, 'one subscriber connection killed')
  const killedAt = Date.now()
  const resumedAt = await untilDelivered(async (seq) => await app.broadcast({ seq }, { channel: 'news' }), [client], 3000)
  t.ok(resumedAt - killedAt <= 1000, `delivery resumed ${resumedAt - killedAt} ms after the kill`)
  t.equal(app.broadcastStats().subscriberReconnects, 1)
  t.ok(logs.some((line) => /redis subscriber connection lost/.test(line.msg)), 'the loss is logged')
  t.ok(logs.some((line) => /messages published while it was away were not received/.test(line.msg)), 'and the possible gap')
})

t.test('Redis drops the plugin as a slow subscriber: it reconnects, re-subscribes and keeps serving; the gap is counted', async (t) => {
  await admin.call('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 1mb 256kb 5')
  t.teardown(async () => { await admin.call('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 32mb 8mb 60') })
  const { app, connect, logs } = await build(t, { redis: redis.url })
  const client = await connect('?channels=big')
  await client.waitFor((f) => f.type === 'subscribed')

  // 5 MiB published while this process's event loop is blocked (execFileSync blocks it), so
  // the subscriber cannot read and Redis's output buffer for it passes the 1 MiB hard limit.
  const script = `local m = '{"type":"message","channel":"big","data":"' .. string.rep('x', 65536) .. '"}'
    for i = 1, 80 do redis.call('PUBLISH', KEYS[1], m) end return 80`
  execFileSync('redis-cli', ['-p', String(redis.port), 'EVAL', script, '1', 'frb:c:big'])

  await untilDelivered(async (seq) => await app.broadcast({ seq }, { channel: 'big' }), [client], 5000)
  const big = client.received().filter((m) => typeof m.data === 'string').length
  t.ok(big < 80, `Redis dropped the connection: ${big} of the 80 big messages arrived`)
  t.equal(app.broadcastStats().subscriberReconnects, 1, 'the dropped subscriber is counted')
  t.ok(logs.some((line) => /messages published while it was away were not received/.test(line.msg)), 'and the gap logged')
  t.same(await numsub('frb:c:big'), [1], 're-subscribed')
  t.equal(client.socket.readyState, 1, 'the client is still connected')
  const last = client.received().at(-1)
  t.match(last, { type: 'message', channel: 'big', data: { seq: Number } }, 'and receives what is published now')
})

t.test('a channel Redis refuses after a reconnect is logged, and the other channels keep working', async (t) => {
  const { app, connect, logs } = await build(t, { redis: redis.url })
  const kept = await connect('?channels=kept')
  const revoked = await connect('?channels=revoked')
  await Promise.all([kept, revoked].map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
  await admin.call('ACL', 'SETUSER', 'default', 'resetchannels', '&frb:all', '&frb:c:kept')
  t.teardown(async () => { await admin.call('ACL', 'SETUSER', 'default', 'allchannels') })
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await untilDelivered(async (seq) => await app.broadcast({ seq }, { channel: 'kept' }), [kept], 3000)
  const refusal = (line: LogLine): boolean => line.channel === 'frb:c:revoked' && /re-subscribing after a reconnect failed/.test(line.msg)
  t.ok(await waitUntil(() => logs.some(refusal), 2000), 'the refused channel is named in an error log')
  t.same(await numsub('frb:c:kept', 'frb:c:revoked', 'frb:all'), [1, 0, 1], 'the other channels are subscribed again')
})

t.test('a subscribe made while Redis is down is answered once it is back, and delivers, without a reconnect', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url, history: { rules: [{ channels: 'plain', size: 0, ttl: 1000 }] } })
  const client = await connect('?channels=before')
  const first = await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'before')
  await redis.kill()
  await sleep(300)
  client.send({ type: 'subscribe', channel: 'during' })
  client.send({ type: 'subscribe', channel: 'resumed', since: 3, epoch: first.epoch ?? 'e' })
  client.send({ type: 'subscribe', channel: 'plain' })
  client.send({ type: 'subscribe', channel: 'dropped' })
  client.send({ type: 'unsubscribe', channel: 'dropped' })
  await client.waitFor((f) => f.type === 'unsubscribed' && f.channel === 'dropped')
  await sleep(1500)
  const waiting = ['during', 'resumed', 'plain']
  t.same(client.frames.filter((f) => waiting.includes(f.channel as string)), [], 'no answer while Redis is down: neither subscribed nor an error')
  t.ok(app.broadcastStats().subscribesDeferred >= 3, 'the waiting subscribes are counted')

  await redis.start()
  const acceptingAt = Date.now()
  const delivered = (channel: string): boolean => client.received().some((m) => m.channel === channel)
  let seq = 0
  while (!waiting.every(delivered) && Date.now() - acceptingAt < 10_000) {
    await Promise.all(waiting.map(async (channel) => await app.broadcast({ seq }, { channel }).catch(() => {})))
    seq++
    await sleep(50)
  }
  const elapsed = Date.now() - acceptingAt
  t.ok(waiting.every(delivered), 'every waiting channel delivers')
  t.ok(elapsed <= 5000, `all three delivering ${elapsed} ms after Redis came back`)
  const answers = Object.fromEntries(waiting.map((channel) => [channel, client.frames.find((f) => f.type === 'subscribed' && f.channel === channel)]))
  t.match(answers.during, { type: 'subscribed', channel: 'during' })
  t.match(answers.resumed, { type: 'subscribed', channel: 'resumed', recovered: false }, 'the resume is judged against the since it gave')
  t.same(answers.plain, { type: 'subscribed', channel: 'plain' })
  for (const channel of waiting) {
    const at = client.frames.findIndex((f) => f.type === 'subscribed' && f.channel === channel)
    t.ok(client.frames.findIndex((f) => f.type === 'message' && f.channel === channel) > at, `${channel}: subscribed comes before its messages`)
  }
  t.equal(client.socket.readyState, 1, 'the client never reconnected')
  t.same(client.frames.filter((f) => f.channel === 'dropped' && f.type !== 'unsubscribed'), [], 'a subscribe withdrawn meanwhile is never answered')
  t.same(await numsub('frb:c:dropped', 'frb:c:during'), [0, 1], 'nor subscribed in Redis')
})
