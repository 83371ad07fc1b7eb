import t from 'tap'
import Fastify from 'fastify'
import { Hub } from '../plugin/hub.js'
import { BroadcastStats } from '../plugin/stats.js'
import type { WebSocket } from 'ws'
import { MemoryBus } from '../plugin/bus/memory.js'

const POLICY = { slowConsumerBytes: 1024, slowConsumerTimeout: 1000, historyOf: () => ({ size: 0, ttl: 1 }), maxReplay: 300 }

t.test('a message for a channel nobody here listens on is delivered to no one', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, new BroadcastStats())
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  t.equal(hub.deliver('nobody', Buffer.from('{}')), 0)
  t.equal(hub.deliver(null, Buffer.from('{}')), 0, 'nor a broadcast when there are no connections')
  await bus.close()
})

t.test('a connection that already left joins nothing (its frames may still be queued)', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, new BroadcastStats())
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  // The registry never touches the socket on join; a closed stand-in is enough here.
  const gone = hub.open({ readyState: 3 } as unknown as WebSocket)
  hub.remove(gone)
  await hub.join(gone, 'news', undefined, () => t.fail('a connection that left is not answered'))
  t.same([...gone.channels], [], 'no channel recorded')
  t.equal(hub.deliver('news', Buffer.from('{}')), 0, 'and no listener added')
  await bus.close()
})
