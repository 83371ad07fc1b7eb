import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { startRedis } from './helpers/redis-server.js'
import { startBalancer, startHubProcess, type HubProcess } from './helpers/hub-processes.js'
import { recordingClient } from './helpers/recording-client.js'
import { CHANNELS, publishSteadily, settled, verify, type Published } from './helpers/steady-publisher.js'

// The client's promise, tested as users meet it: three instances of the built service behind a
// load balancer, one Redis, messages published at a steady rate to varying instances, and faults
// while they flow. Every message answered 202 reaches every client exactly once and in offset
// order, or the client was told with onReset for that channel; both are counted.

const SECRET = 'a-client-faults-secret-of-32-ch'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('instances killed and restarted, the Redis subscribers killed, sockets dropped, tokens expiring: nothing accepted is lost, nothing is delivered twice', async (t) => {
  const env = { REDIS_URL: redis.url, JWT_SECRET: SECRET }
  const hubs = await Promise.all([0, 1, 2].map(async () => await startHubProcess(t, env)))
  const balancer = await startBalancer(hubs.map((hub) => hub.port))
  t.teardown(() => balancer.close())

  const lasting = createSigner({ key: SECRET, expiresIn: 600_000 })
  const brief = createSigner({ key: SECRET, expiresIn: 4000 })
  let refresherTokens = 0
  let rotations = 0
  const options = { minReconnectDelay: 100, maxReconnectDelay: 1000, pingInterval: 3000, pongTimeout: 3000 }
  const clients = [
    recordingClient(t, balancer.url, { ...options, token: async () => lasting({ sub: 'steady', channels: ['*'] }) }),
    // Refreshed over the open socket before each expiry.
    recordingClient(t, balancer.url, { ...options, token: async () => { refresherTokens++; return brief({ sub: 'refresher', channels: ['*'] }) } }),
    // Each token names another subject, so the hub refuses every refresh and closes with 4401 at expiry.
    recordingClient(t, balancer.url, { ...options, token: async () => brief({ sub: `rotating-${rotations++}`, channels: ['*'] }) })
  ]
  await Promise.all(clients.flatMap((client) => CHANNELS.map(async (channel) => await client.subscribe(channel).ready)))

  const publisher = publishSteadily(hubs, 15)
  await sleep(1500)
  const [busiest] = [...balancer.links()].sort((a, b) => b[1] - a[1])[0]
  const victim = hubs.find((hub) => hub.port === busiest) as HubProcess
  await victim.kill()
  await sleep(1000)
  await victim.start()
  await sleep(1500)
  t.equal(Number(await redis.client().call('CLIENT', 'KILL', 'TYPE', 'pubsub')), 3, 'the three subscriber connections killed')
  await sleep(2000)
  balancer.dropAll()
  await sleep(3000)
  await publisher.stop()
  await settled(clients, publisher.published)

  const accepted = CHANNELS.reduce((sum, channel) => sum + (publisher.published.get(channel) as Published[]).length, 0)
  t.ok(accepted > 300, `${accepted} messages accepted, ${publisher.refused()} refused while an instance was down`)
  let resets = 0
  let missing = 0
  clients.forEach((client, index) => {
    for (const channel of CHANNELS) {
      const channelResets = (client.resets.get(channel) ?? []).length
      resets += channelResets
      missing += verify(t, `client ${index}, ${channel}`, client.messages.get(channel) ?? [], publisher.published.get(channel) as Published[], channelResets)
    }
    t.ok(client.count('connected') >= 2, `client ${index} reconnected (${client.count('connected') - 1} times)`)
  })
  t.comment(`resets: ${resets}; accepted messages not delivered to a client that was reset: ${missing}`)
  t.ok(refresherTokens > clients[1].count('connected'), `the refresher asked for ${refresherTokens} tokens over ${clients[1].count('connected')} connections: it refreshed`)
  t.ok(clients[2].events.some((e) => e.event === 'disconnected' && e.code === 4401), 'the rotating client was closed with 4401 and came back')
  t.ok(clients[2].errors().some((error) => error.code === 'FRB_FORBIDDEN'), 'its refused refresh was reported')
  t.notOk(clients[0].errors().length + clients[1].errors().length, 'no error for the others')
})
