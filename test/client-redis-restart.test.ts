import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { startRedis } from './helpers/redis-server.js'
import { startBalancer, startHubProcess } from './helpers/hub-processes.js'
import { recordingClient } from './helpers/recording-client.js'
import { CHANNELS, publishSteadily, settled, verify, type Published } from './helpers/steady-publisher.js'

// Redis restarted (without persistence, so every history is lost and every epoch changes) while
// messages flow, and the clients' sockets dropped during the outage, so they reconnect and
// subscribe while Redis is down. They must come back without reconnecting again once Redis
// does, and every message accepted after that reaches them; what the restart lost is a reset.

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('Redis restarted while clients resubscribe: messages accepted before and after reach every client, the lost history is a reset', async (t) => {
  const hubs = await Promise.all([0, 1, 2].map(async () => await startHubProcess(t, { REDIS_URL: redis.url })))
  const balancer = await startBalancer(hubs.map((hub) => hub.port))
  t.teardown(() => balancer.close())
  const options = { minReconnectDelay: 100, maxReconnectDelay: 1000 }
  const clients = [0, 1, 2].map(() => recordingClient(t, balancer.url, options))
  await Promise.all(clients.flatMap((client) => CHANNELS.map(async (channel) => await client.subscribe(channel).ready)))

  const publisher = publishSteadily(hubs, 15)
  await sleep(1500)
  await redis.kill()
  await sleep(500)
  balancer.dropAll()
  await sleep(1500)
  await redis.start()
  const back = Date.now()
  // A client still on its way back from the dropped socket may connect once more, no client twice.
  const connectedBefore = clients.map((client) => client.count('connected') + (client.client.state === 'connected' ? 0 : 1))
  await sleep(5000)
  await publisher.stop()
  await settled(clients, publisher.published)

  clients.forEach((client, index) => {
    t.ok(client.count('connected') <= connectedBefore[index], `client ${index} did not have to reconnect once Redis was back`)
    for (const channel of CHANNELS) {
      const published = publisher.published.get(channel) as Published[]
      const resets = client.resets.get(channel) ?? []
      verify(t, `client ${index}, ${channel}`, client.messages.get(channel) ?? [], published, resets.length)
      const epochs = [...new Set(published.map((message) => message.epoch))]
      t.equal(epochs.length, 2, `${channel}: the restart started a new history`)
      t.ok(resets.length >= 1, `client ${index}, ${channel}: told of the lost history (${resets.length})`)
      const after = published.filter((message) => message.epoch === epochs[1])
      const delivered = new Set((client.messages.get(channel) ?? []).map((d) => `${d.epoch}:${d.offset}`))
      t.equal(after.filter((message) => !delivered.has(`${message.epoch}:${message.offset}`)).length, 0,
        `client ${index}, ${channel}: all ${after.length} messages accepted after the restart arrived`)
    }
  })
  t.comment(`Redis back ${Date.now() - back} ms before the end; ${publisher.refused()} publishes refused during the outage`)
})
