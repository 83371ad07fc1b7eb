import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { optionsFromEnv } from '../app.js'
import { createPublisherClient, reconnectWhenReadonly } from '../plugin/redis/client.js'
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
  t.throws(() => optionsFromEnv({ REDIS_SENTINELS: 'h:1', REDIS_SENTINEL_MASTER: 'm', REDIS_URL: 'redis://h' }), /set one of REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES, not REDIS_URL and REDIS_SENTINELS/)
  for (const bad of ['h', 'h:0', 'h:70000', ':1']) t.throws(() => optionsFromEnv({ REDIS_SENTINELS: bad, REDIS_SENTINEL_MASTER: 'm' }), /REDIS_SENTINELS takes host:port/, bad)
})

t.test('a write refused with READONLY (a demoted master) reconnects, through the sentinels; other errors do not', async (t) => {
  t.equal(reconnectWhenReadonly(new Error('READONLY You can\'t write against a read only replica.')), 1, 'reconnect, without resending')
  t.equal(reconnectWhenReadonly(new Error('NOPERM this user has no permissions')), false)
  // And a client made from Sentinel options carries it, with the +switch-master listener; the user's settings win.
  const sentinels = topology.sentinels.map((port) => ({ host: '127.0.0.1', port }))
  const client = createPublisherClient({ sentinels, name: topology.masterName, lazyConnect: true })
  t.equal(client.options.reconnectOnError, reconnectWhenReadonly)
  t.equal(client.options.failoverDetector, true)
  const own = createPublisherClient({ sentinels, name: topology.masterName, lazyConnect: true, failoverDetector: false })
  t.equal(own.options.failoverDetector, false, 'a user\'s own setting is kept')
  client.disconnect()
  own.disconnect()
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

  const master = await topology.currentMaster()
  await topology.killMaster()
  const killedAt = Date.now()
  // When the sentinels name the new master: their part, slower on a busy machine (a split vote
  // waits out failover-timeout before the next election).
  const promoted = topology.waitForPromotion(master, 30_000).then(() => Date.now() - killedAt)
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
  const promotedIn = await promoted
  t.ok(resumedIn <= promotedIn + 3000, `within 3 s of the promotion (${promotedIn} ms after the kill; detection time ${DOWN_AFTER_MS} ms)`)
  t.same([...new Set(refusals)].filter((code) => code !== 'FRB_BUS_UNAVAILABLE'), [], 'publishes in the window were refused as unavailable (503)')
  // A publish the new master took before the subscriber was back on it is not received live; the
  // catch-up then finds the history in a new epoch (a failover starts one) and sends a gap frame,
  // followed by the new epoch's messages while the history holds them all (test/new-epoch.test.ts
  // pins that order). Here the promise checked is the documented one: delivered, or announced.
  const received = (): unknown[] => client.received().map((m) => m.data)
  const told = (): boolean => client.frames.some((f) => f.type === 'gap' && f.channel === 'news')
  await waitUntil(() => accepted.every((data) => received().includes(data)), 5000)
  const missing = accepted.filter((data) => !received().includes(data))
  t.ok(missing.length === 0 || told(),
    `every publish accepted after the kill was delivered, or the client was sent a gap (${accepted.length} accepted, ${refusals.length} refused, ${missing.length} announced by a gap)`)
  t.equal(await topology.currentMaster(), topology.replica, 'the sentinels promoted the replica')
  t.match((await app.inject('/health')).json(), { status: 'ok', topology: 'sentinel' }, 'healthy again')
  t.ok(logs.some((line) => /redis subscriber reconnected/.test(line.msg)), 'the subscriber followed the master')
  await topology.restore()
})

t.test('two instances, 100 channels at a steady rate, the new master lost too: every channel delivers again, and a resume gets what it missed or recovered:false', async (t) => {
  const master = await topology.currentMaster()
  const sentinels = topology.sentinels.map((port) => ({ host: '127.0.0.1', port }))
  const options = { redis: { sentinels, name: topology.masterName }, publishTimeout: 500 }
  const [one, two] = await Promise.all([build(t, options), build(t, options)])
  const channels = Array.from({ length: 100 }, (_, i) => `ch${i}`)
  // Each instance's client on every channel: a message published on either reaches both.
  const clients = await Promise.all([one, two].map(async (instance) => await instance.connect(`?channels=${channels.join(',')}`)))
  for (const client of clients) await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'ch99')
  const epochs = new Map<string, string>()
  for (const channel of channels) epochs.set(channel, (await one.app.broadcast('start', { channel })).epoch as string)

  // Publishes keep flowing: every 100 ms one on each channel, half of them through each instance.
  const flow = { round: 0, running: true, accepted: 0, refused: 0 }
  const publishing = (async () => {
    while (flow.running) {
      const data = `r${++flow.round}`
      await Promise.all(channels.map(async (channel, i) => {
        await (i % 2 === 0 ? one : two).app.broadcast(data, { channel }).then(() => { flow.accepted++ }, () => { flow.refused++ })
      }))
      await sleep(100)
    }
  })()
  await sleep(500)
  t.equal(await topology.currentMaster(), master)
  const killedAt = Date.now()
  await topology.killCurrentMaster()
  const promoted = topology.waitForPromotion(master, 30_000).then(() => Date.now() - killedAt)
  const killRound = flow.round
  // Every channel, on both instances, must deliver a message published after the kill.
  const deliveredAgain = (): boolean => clients.every((client) => channels.every((channel) =>
    client.received().some((m) => m.channel === channel && typeof m.data === 'string' && Number((m.data as string).slice(1)) > killRound)))
  const done = await waitUntil(deliveredAgain, 30_000)
  const resumedIn = Date.now() - killedAt
  flow.running = false
  await publishing
  t.ok(done, `every channel delivering again on both instances ${resumedIn} ms after the kill`)
  const promotedIn = await promoted
  t.ok(resumedIn <= promotedIn + 3000, `within 3 s of the promotion (${promotedIn} ms after the kill; detection time ${DOWN_AFTER_MS} ms)`)
  t.ok(flow.refused > 0 && flow.accepted > 0, `publishes went on around the failover (${flow.accepted} accepted, ${flow.refused} refused with 503)`)

  // A client that was away resumes each channel from where it was before the kill. Every channel
  // was published to on the promoted replica, whose replication ID differs: a new epoch each, so
  // a resume in the old one is told it was not recovered, never handed reused offsets.
  const late = await one.connect()
  const answers: Array<{ recovered: unknown, newEpoch: boolean }> = []
  for (const channel of channels.slice(0, 20)) {
    late.send({ type: 'subscribe', channel, since: 1, epoch: epochs.get(channel) })
    const reply = await late.waitFor((f) => f.type === 'subscribed' && f.channel === channel)
    answers.push({ recovered: reply.recovered, newEpoch: typeof reply.epoch === 'string' && reply.epoch !== epochs.get(channel) })
  }
  t.same(answers, Array.from({ length: 20 }, () => ({ recovered: false, newEpoch: true })), 'every resume in the old epoch: recovered:false, and a new epoch')
})
