import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { RedisKeys } from '../plugin/redis/keys.js'
import { build } from './helpers/app.js'
import { CLUSTER_NODE_TIMEOUT_MS, startRedisCluster } from './helpers/redis-cluster.js'
import { waitUntil } from './helpers/wait.js'

// A Redis Cluster master lost to SIGKILL while two instances deliver 100 channels at a steady
// rate: its replica is promoted, the channels it owned move to it on their own, publishes in the
// window are refused with 503 and Retry-After, and nothing answered 202 goes missing unannounced.

const topology = await startRedisCluster()
t.teardown(() => topology.stop())

interface Accepted { channel: string, data: string, offset: number, epoch: string }

t.test('a master killed: every channel on both instances delivers again within 2 s of the promotion of its replica, refusals are 503 with Retry-After, and a message answered 202 is delivered or announced as a gap', async (t) => {
  const options = { redis: { cluster: topology.nodes }, publishTimeout: 500 }
  const [one, two] = await Promise.all([build(t, options), build(t, options)])
  const channels = Array.from({ length: 100 }, (_, i) => `ch${i}`)
  const clients = await Promise.all([one, two].map(async (instance) => await instance.connect(`?channels=${channels.join(',')}`)))
  for (const client of clients) await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'ch99')
  const keys = new RedisKeys('frb:', true)
  const victim = await topology.masterOfSlot(keys.slot('ch0'))
  const victimSlots = (await topology.masters()).find((master) => master.port === victim)?.slots ?? []
  const onVictim = channels.filter((channel) => victimSlots.some(([from, to]) => keys.slot(channel) >= from && keys.slot(channel) <= to))

  const starts = new Map<string, { offset: number, epoch: string }>()
  for (const channel of channels) starts.set(channel, await one.app.broadcast('start', { channel }) as { offset: number, epoch: string })

  // Every 100 ms one publish on each channel, over HTTP, half of them through each instance.
  const accepted: Accepted[] = []
  const refusals = { count: 0, other: [] as string[], messages: [] as string[] }
  const flow = { round: 0, running: true }
  const publishing = (async () => {
    while (flow.running) {
      const data = `r${++flow.round}`
      await Promise.all(channels.map(async (channel, i) => {
        const response = await (i % 2 === 0 ? one : two).publish({ channel, data })
        const body = await response.json() as { offset: number, epoch: string, code?: string }
        if (response.status === 202) {
          accepted.push({ channel, data, offset: body.offset, epoch: body.epoch })
        } else if (response.status === 503 && response.headers.get('retry-after') !== null) {
          refusals.count++
          refusals.messages.push(`${channel} ${data}`)
        } else {
          refusals.other.push(`${response.status} ${String(body.code)} retry-after=${String(response.headers.get('retry-after'))}`)
        }
      }))
      await sleep(100)
    }
  })()
  await sleep(500)
  await topology.kill(victim)
  const killedAt = Date.now()
  const killRound = flow.round
  // When every node agrees the replica took over: Redis's own part, slower on a busy machine.
  const promoted = topology.waitForFailover(victim, 30_000).then(() => Date.now() - killedAt)
  // Meanwhile /health names the shard that is down, and a client subscribes to a channel of the
  // lost master that no one here holds yet.
  let health = { statusCode: 200, reason: '' }
  for (let tries = 0; tries < 100 && !health.reason.includes(`shard 127.0.0.1:${victim}`); tries++) {
    const response = await one.app.inject('/health')
    health = { statusCode: response.statusCode, reason: (response.json() as { reason?: string }).reason ?? '' }
    if (tries > 0) await sleep(20)
  }
  t.comment(`health seen ${Date.now() - killedAt} ms after the kill`)
  let fresh = 0
  while (!victimSlots.some(([from, to]) => keys.slot(`fresh${fresh}`) >= from && keys.slot(`fresh${fresh}`) <= to)) fresh++
  const newcomer = await two.connect()
  newcomer.send({ type: 'subscribe', channel: `fresh${fresh}` })
  const subscribeAnswer = newcomer.waitFor((f) => f.type === 'error' || f.type === 'subscribed', { timeout: 15_000 })
  const deliveredAgain = (): boolean => clients.every((client) => channels.every((channel) =>
    client.received().some((m) => m.channel === channel && Number((m.data as string).slice(1)) > killRound + 1)))
  const done = await waitUntil(deliveredAgain, 30_000)
  const resumedIn = Date.now() - killedAt
  await sleep(500)
  flow.running = false
  await publishing
  t.ok(done, `every channel delivering again on both instances ${resumedIn} ms after the kill (${onVictim.length} channels were on the killed master)`)
  const promotedIn = await promoted
  // The plugin's part: the slot map is read every 200 ms while a shard is down, channels move at once.
  t.ok(resumedIn <= promotedIn + 2000, `within 2 s of the promotion (${promotedIn} ms after the kill, node timeout ${CLUSTER_NODE_TIMEOUT_MS} ms): ${resumedIn} ms`)
  t.same(refusals.other, [], 'every refusal was 503 with Retry-After')
  t.ok(refusals.count > 0, `publishes to the lost master were refused meanwhile (${refusals.count} refused, ${accepted.length} accepted)`)
  t.not(await topology.masterOfSlot(keys.slot('ch0')), victim, 'the replica owns the slots now')

  // Each message answered 202 reached both instances' clients, or the client was told it may
  // have missed messages: a gap frame, or the channel's next messages in a new epoch (a reset, as
  // the client SDK's onReset reports). A master that dies right after it accepted a message may
  // not have sent it to every subscriber nor replicated it: that is the loss the epochs announce.
  await sleep(500)
  const lost: string[] = []
  for (const [n, client] of clients.entries()) {
    const received = new Set(client.received().map((m) => `${String(m.channel)} ${String(m.data)}`))
    const gaps = new Set(client.frames.filter((f) => f.type === 'gap').map((f) => f.channel))
    for (const message of accepted) {
      if (received.has(`${message.channel} ${message.data}`)) continue
      lost.push(`${n}:${message.channel}:${message.data}`)
      const reset = client.received().some((m) => m.channel === message.channel && m.epoch !== message.epoch)
      t.ok(gaps.has(message.channel) || reset, `instance ${n}: ${message.channel} ${message.data} was accepted and not delivered: the client was told (${reset ? 'new epoch' : 'gap frame'})`)
    }
  }
  // A 503 says Redis did not confirm the message in time, not that it never ran: on a busy machine
  // a publish can time out and still be published (retry with an idempotencyKey). Counted, not asserted.
  const delivered = new Set(clients.flatMap((client) => client.received().map((m) => `${String(m.channel)} ${String(m.data)}`)))
  t.comment(`answered 503 and delivered all the same (timed out, ran late): ${refusals.messages.filter((message) => delivered.has(message)).length} of ${refusals.count}`)
  t.comment(`accepted and not delivered (announced by a new epoch or a gap): ${lost.length} of ${2 * accepted.length} deliveries: ${lost.join(', ')}`)
  // The subscribe waited for the promoted replica (a client is never told it is subscribed while
  // nothing can arrive), then was answered, and messages flow.
  t.match(await subscribeAnswer, { type: 'subscribed', channel: `fresh${fresh}` }, 'a subscribe on the lost master is answered once the replica took over')
  await one.app.broadcast('fresh', { channel: `fresh${fresh}` })
  await newcomer.waitFor((f) => f.type === 'message' && f.data === 'fresh')
  t.equal(health.statusCode, 503, '/health answered 503 while the shard was down')
  t.match(health.reason, 'subscriber connection is', `and named the lost shard: ${health.reason}`)
  t.match(health.reason, `shard 127.0.0.1:${victim}`)
  t.match((await one.app.inject('/health')).json(), { status: 'ok', topology: 'cluster' }, 'healthy again')

  // A client that was away resumes the lost master's channels from before the kill: the promoted
  // replica has a replication ID of its own, so each history starts a new epoch (it may lack the
  // last entries the master took with it) and the resume is answered recovered:false under it,
  // never with offsets given twice.
  const late = await one.connect()
  const resumed = onVictim.slice(0, 10)
  for (const channel of resumed) {
    const before = starts.get(channel) as { offset: number, epoch: string }
    late.send({ type: 'subscribe', channel, since: before.offset, epoch: before.epoch })
    const reply = await late.waitFor((f) => f.type === 'subscribed' && f.channel === channel)
    t.equal(reply.recovered, false, `${channel}: a resume from before the failover is not recovered`)
    t.not(reply.epoch, before.epoch, `${channel}: and is answered under the new epoch`)
  }
  t.ok(resumed.length > 0, 'the lost master owned channels to resume')
  await topology.restart(victim)
})
