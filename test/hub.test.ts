import t from 'tap'
import Fastify from 'fastify'
import { Hub } from '../plugin/hub.js'
import { BroadcastStats } from '../plugin/stats.js'
import type { WebSocket } from 'ws'
import { MemoryBus } from '../plugin/bus/memory.js'
import { Presence } from '../plugin/presence/presence.js'
import { MemoryPresenceStore } from '../plugin/presence/store.js'

const POLICY = { slowConsumerBytes: 1024, slowConsumerTimeout: 1000, historyOf: () => ({ size: 0, ttl: 1 }), maxReplay: 300 }

t.test('a message for a channel nobody here listens on is delivered to no one', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, new BroadcastStats())
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  t.equal(hub.deliver('nobody', Buffer.from('{}')), 0)
  hub.receive('nobody', Buffer.from('{"type":"message","channel":"nobody","offset":1,"epoch":"e","data":1}'))
  t.equal(hub.channelCount, 0, 'a message for a channel with no listener leaves nothing behind')
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

t.test('a connection that leaves while its subscription is being confirmed is never listed in presence', async (t) => {
  const bus = new MemoryBus()
  const log = Fastify({ logger: false }).log
  const hub = new Hub(bus, log, POLICY, new BroadcastStats())
  const store = new MemoryPresenceStore(async () => {})
  hub.presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 1000 }, log)
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  const connection = hub.open({ readyState: 1 } as unknown as WebSocket)
  const joining = hub.join(connection, 'news', undefined, () => {})
  hub.remove(connection)
  await joining
  t.same(await store.members('news'), [], 'not listed')
  t.equal(hub.channelCount, 0)

  // Two tabs of one identity: the one that never got listed leaves without taking the other along.
  const [first, second] = [0, 1].map(() => {
    const tab = hub.open({ readyState: 1 } as unknown as WebSocket)
    tab.identity = { sub: 'ann' }
    return tab
  })
  await hub.join(first, 'news', undefined, () => {})
  const late = hub.join(second, 'news', undefined, () => {})
  hub.remove(second)
  await late
  t.same(await store.members('news'), ['"ann"'], 'the listed tab keeps its identity there')
  await bus.close()
})
