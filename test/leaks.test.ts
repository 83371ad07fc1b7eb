import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket } from 'ws'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { RawSocket } from './helpers/raw-socket.js'
import { wsUrl } from './helpers/client.js'

// Connections that end badly must leave nothing behind: not in the connection set, not in the
// channel map, not as a Redis subscription.

const redis = await startRedis()
t.teardown(() => redis.stop())
const admin = redis.client()

async function redisChannels (): Promise<string[]> {
  return (await admin.call('PUBSUB', 'CHANNELS', 'frb:c:*') as string[]).sort()
}

async function settled (read: () => { connections: number, channels: number }): Promise<{ connections: number, channels: number }> {
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    const { connections, channels } = read()
    if (connections === 0 && channels === 0) break
    await sleep(20)
  }
  await sleep(100)
  const { connections, channels } = read()
  return { connections, channels }
}

t.test('2,000 connections opened, subscribed and dropped without a close frame leave nothing behind', async (t) => {
  const { app, url } = await build(t, { redis: redis.url })
  for (let batch = 0; batch < 10; batch++) {
    const sockets = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const socket = new WebSocket(wsUrl(url, `?channels=room${(batch * 200 + i) % 50},all-${batch}`))
      socket.on('error', () => {})
      let subscribed = 0
      await new Promise<void>((resolve) => socket.on('message', () => { if (++subscribed === 2) resolve() }))
      return socket
    }))
    t.equal(app.broadcastStats().connections, 200, `batch ${batch + 1}: 200 connections in`)
    for (const socket of sockets) socket.terminate()
    t.same(await settled(() => app.broadcastStats()), { connections: 0, channels: 0 }, `batch ${batch + 1}: and all gone`)
  }
  t.same(await redisChannels(), [], 'no Redis subscription is left')
})

t.test('clients that hang up mid-handshake are never registered', async (t) => {
  const { app } = await build(t, { redis: redis.url })
  const { port } = app.server.address() as { port: number }
  await Promise.all(Array.from({ length: 100 }, async () => { await RawSocket.abandonHandshake(port, '/ws?channels=half') }))
  // And a client that sends a whole upgrade request but is gone before the answer.
  await Promise.all(Array.from({ length: 100 }, async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?channels=half`)
    socket.on('error', () => {})
    socket.on('upgrade', () => socket.terminate())
    await new Promise((resolve) => socket.once('close', resolve))
  }))
  t.same(await settled(() => app.broadcastStats()), { connections: 0, channels: 0 })
  t.same(await redisChannels(), [])
})

t.test('10,000 subscribe and unsubscribe frames in a burst: every reply in order, and the state back to empty', async (t) => {
  const { app, connect } = await build(t, {
    redis: redis.url, clientFrameRate: 100_000, clientFrameBurst: 20_000, clientByteRate: 10 * 2 ** 20
  })
  const client = await connect()
  const expected: string[] = []
  for (let i = 0; i < 5000; i++) {
    const channel = `burst${i % 100}`
    client.send({ type: 'subscribe', channel })
    client.send({ type: 'unsubscribe', channel })
    expected.push(`subscribed:${channel}`, `unsubscribed:${channel}`)
  }
  const deadline = Date.now() + 30_000
  while (client.frames.length < 10_000 && Date.now() < deadline) await sleep(20)
  t.same(client.frames.map((f) => `${f.type}:${f.channel ?? ''}`), expected, '10,000 replies, in order')
  t.same(await settled(() => app.broadcastStats()).then(() => app.broadcastStats().channels), 0, 'no channel left')
  t.same(await redisChannels(), [], 'no Redis subscription left')
})

t.test('the same burst under the default frame limit closes the client with 1008 and still leaks nothing', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url })
  const client = await connect()
  for (let i = 0; i < 5000; i++) {
    client.send({ type: 'subscribe', channel: `burst${i % 100}` })
    client.send({ type: 'unsubscribe', channel: `burst${i % 100}` })
  }
  t.equal((await client.closed).code, 1008)
  t.same(await settled(() => app.broadcastStats()), { connections: 0, channels: 0 })
  t.same(await redisChannels(), [])
})
