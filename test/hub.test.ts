import t from 'tap'
import Fastify from 'fastify'
import { Hub } from '../plugin/hub.js'
import { MemoryBus } from '../plugin/bus/memory.js'

t.test('a message for a channel nobody here listens on is delivered to no one', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log)
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  t.equal(hub.deliver('nobody', Buffer.from('{}')), 0)
  t.equal(hub.deliver(null, Buffer.from('{}')), 0, 'nor a broadcast when there are no connections')
  await bus.close()
})
