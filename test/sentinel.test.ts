import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { optionsFromEnv } from '../app.js'
import { reconnectWhenReadonly } from '../plugin/redis/client.js'
import { build } from './helpers/app.js'
import { waitUntil } from './helpers/wait.js'
import { DOWN_AFTER_MS, startSentinelTopology } from './helpers/sentinel.js'

// Redis behind Sentinel (a master, a replica, three sentinels, real processes): the service finds
// the master through the sentinels, says so in /health, and follows the master through a failover.

const topology = await startSentinelTopology()
t.teardown(() => topology.stop())

t.test('REDIS_SENTINELS and REDIS_SENTINEL_MASTER become Sentinel options; bad ones are refused with the variable named', async (t) => {
  t.same(optionsFromEnv({ REDIS_SENTINELS: '10.0.0.1:26379, [::1]:26380', REDIS_SENTINEL_MASTER: 'main', REDIS_PASSWORD: 'p', REDIS_SENTINEL_PASSWORD: 's' }).redis, {
    sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '::1', port: 26380 }], name: 'main', password: 'p', sentinelPassword: 's'
  })
  t.same(optionsFromEnv({ REDIS_SENTINELS: 'h:1', REDIS_SENTINEL_MASTER: 'm' }).redis, { sentinels: [{ host: 'h', port: 1 }], name: 'm' })
  t.throws(() => optionsFromEnv({ REDIS_SENTINELS: 'h:1' }), /REDIS_SENTINEL_MASTER/)
  t.throws(() => optionsFromEnv({ REDIS_SENTINELS: 'h:1', REDIS_SENTINEL_MASTER: 'm', REDIS_URL: 'redis://h' }), /not both/)
  for (const bad of ['h', 'h:0', 'h:70000', ':1']) t.throws(() => optionsFromEnv({ REDIS_SENTINELS: bad, REDIS_SENTINEL_MASTER: 'm' }), /REDIS_SENTINELS takes host:port/, bad)
})

t.test('a write refused with READONLY (a demoted master) reconnects, through the sentinels; other errors do not', async (t) => {
  t.equal(reconnectWhenReadonly(new Error('READONLY You can\'t write against a read only replica.')), 1, 'reconnect, without resending')
  t.equal(reconnectWhenReadonly(new Error('NOPERM this user has no permissions')), false)
})

t.test('a master lost to SIGKILL: the replica is promoted, and publishes and deliveries go on through it', async (t) => {
  const sentinels = topology.sentinels.map((port) => ({ host: '127.0.0.1', port }))
  const { app, connect, logs } = await build(t, { redis: { sentinels, name: topology.masterName }, publishTimeout: 500 })
  const health = await app.inject('/health')
  t.match(health.json(), { status: 'ok', bus: 'redis', topology: 'sentinel' }, '/health names the topology')
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  t.match(await app.broadcast('before', { channel: 'news' }), { offset: 1 })
  await client.waitFor((f) => f.type === 'message' && f.data === 'before')

  await topology.killMaster()
  const killedAt = Date.now()
  // Publish every 50 ms until one published after the kill is delivered.
  const refusals: string[] = []
  const accepted: string[] = []
  let delivered = false
  let seq = 0
  while (!delivered && Date.now() - killedAt < 30_000) {
    const data = `after ${seq++}`
    try {
      await app.broadcast(data, { channel: 'news' })
      accepted.push(data)
      delivered = await client.waitFor((f) => f.type === 'message' && f.data === data, { timeout: 1000 }).then(() => true, () => false)
    } catch (err) {
      refusals.push((err as { code: string }).code)
      await sleep(50)
    }
  }
  const resumedIn = Date.now() - killedAt
  t.ok(delivered, `delivering again ${resumedIn} ms after the master was killed`)
  t.ok(resumedIn <= DOWN_AFTER_MS + 9000, `within the detection time (${DOWN_AFTER_MS} ms) and the failover (${resumedIn} ms)`)
  t.same([...new Set(refusals)].filter((code) => code !== 'FRB_BUS_UNAVAILABLE'), [], 'publishes in the window were refused as unavailable (503)')
  const received = (): unknown[] => client.received().map((m) => m.data)
  t.ok(await waitUntil(() => accepted.every((data) => received().includes(data)), 5000),
    `every publish accepted after the kill was delivered (${accepted.length} accepted, ${refusals.length} refused)`)
  t.equal(await topology.currentMaster(), topology.replica, 'the sentinels promoted the replica')
  t.match((await app.inject('/health')).json(), { status: 'ok', topology: 'sentinel' }, 'healthy again')
  t.ok(logs.some((line) => /redis subscriber reconnected/.test(line.msg)), 'the subscriber followed the master')
})
