import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import calculateSlot from 'cluster-key-slot'
import { Cluster } from 'ioredis'
import { optionsFromEnv } from '../app.js'
import { addressOf, quit, topologyOf } from '../plugin/redis/client.js'
import { RedisKeys } from '../plugin/redis/keys.js'
import { ShardServers } from '../plugin/redis/shard-servers.js'
import { build } from './helpers/app.js'
import { TestClient } from './helpers/client.js'
import { startService } from './helpers/service.js'
import { waitUntil } from './helpers/wait.js'
import { startRedisCluster } from './helpers/redis-cluster.js'

// Redis Cluster (three masters, a replica each, real processes): channels go through sharded
// Pub/Sub on the master that owns their slot, every name of a channel lives in that slot, and
// two instances deliver each other's messages.

const topology = await startRedisCluster()
t.teardown(() => topology.stop())
const redis = { cluster: topology.nodes }

t.test('REDIS_CLUSTER_NODES becomes cluster seed nodes; one topology at a time', async (t) => {
  t.same(optionsFromEnv({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, [::1]:7001', REDIS_PASSWORD: 'p' }).redis, {
    cluster: [{ host: '10.0.0.1', port: 7000 }, { host: '::1', port: 7001 }], redisOptions: { password: 'p' }
  })
  t.same(optionsFromEnv({ REDIS_CLUSTER_NODES: 'h:7000' }).redis, { cluster: [{ host: 'h', port: 7000 }] })
  t.throws(() => optionsFromEnv({ REDIS_CLUSTER_NODES: 'h' }), /REDIS_CLUSTER_NODES takes host:port entries, got "h"/)
  t.throws(() => optionsFromEnv({ REDIS_CLUSTER_NODES: 'h:1', REDIS_URL: 'redis://h' }), /not REDIS_URL and REDIS_CLUSTER_NODES/)
})

t.test('a prefix with a brace is refused on a cluster, where braces make the hash tag', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: redisBroadcast } = await import('../plugin/index.js')
  const app = Fastify()
  const client = new Cluster(topology.nodes, { lazyConnect: true })
  t.teardown(() => { client.disconnect() })
  await t.rejects(async () => { await app.register(redisBroadcast, { redis: client, redisPrefix: 'a{b}:' }).ready() }, { code: 'FRB_INVALID_OPTION', message: /"redisPrefix" cannot hold \{ or \}/ })
})

t.test('two instances on the cluster: messages on channels of every master reach both, in order, with offsets; /health says cluster', async (t) => {
  const [one, two] = await Promise.all([build(t, { redis }), build(t, { redis })])
  t.match((await one.app.inject('/health')).json(), { status: 'ok', bus: 'redis', topology: 'cluster' })
  const keys = new RedisKeys('frb:', true)
  const masters = await topology.masters()
  // Channels whose slots fall on each of the three masters.
  const owner = (channel: string): number => masters.find((m) => m.slots.some(([from, to]) => keys.slot(channel) >= from && keys.slot(channel) <= to))?.port as number
  const channels = Array.from({ length: 30 }, (_, i) => `room.${i}`)
  t.equal(new Set(channels.map(owner)).size, 3, 'the channels are spread over the three masters')
  const clients = await Promise.all([one, two].map(async (instance) => await instance.connect(`?channels=${channels.join(',')}`)))
  for (const client of clients) await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'room.29')

  for (let i = 1; i <= 3; i++) {
    for (const [n, channel] of channels.entries()) {
      const response = await (n % 2 === 0 ? one : two).publish({ channel, data: i })
      t.equal(response.status, 202)
    }
  }
  const toAll = await one.publish({ data: 'everyone' })
  t.equal(toAll.status, 202)
  for (const client of clients) {
    await client.waitFor((f) => f.type === 'message' && f.data === 'everyone')
    await client.waitFor(() => client.received().filter((m) => m.channel !== undefined).length === 90)
    for (const channel of channels) {
      t.same(client.received().filter((m) => m.channel === channel).map((m) => [m.offset, m.data]), [[1, 1], [2, 2], [3, 3]], `${channel}: all three, in order`)
    }
  }
  t.equal(one.app.broadcastStats().messagesOut + two.app.broadcastStats().messagesOut, 2 * 91, 'each instance delivered every message once')
})

t.test('every name of a channel lives in its slot, on the master that owns it, and a batch across slots is delivered per channel in order', async (t) => {
  const { app, connect } = await build(t, { redis, presence: { channels: ['*'], anonymous: true } })
  const keys = new RedisKeys('frb:', true)
  const client = await connect('?channels=alpha,beta,gamma')
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'gamma')
  const results = await app.broadcastMany([
    { channel: 'alpha', data: 1 }, { channel: 'beta', data: 1 }, { channel: 'gamma', data: 1 },
    { channel: 'alpha', data: 2, idempotencyKey: 'k-a2' }, { channel: 'beta', data: 2 }
  ])
  t.same(results.map((r) => r.offset), [1, 1, 1, 2, 2], 'offsets per channel')
  await client.waitFor(() => client.received().length === 5)
  for (const channel of ['alpha', 'beta']) {
    t.same(client.received().filter((m) => m.channel === channel).map((m) => m.data), [1, 2], `${channel} in order`)
  }
  for (const channel of ['alpha', 'beta', 'gamma']) {
    const port = await topology.masterOfSlot(keys.slot(channel))
    const node = topology.client(port)
    const names = [keys.history(channel).meta, keys.history(channel).stream, keys.presence(channel).members, keys.presence(channel).counts]
    t.same(new Set(names.map((name) => calculateSlot(name))), new Set([keys.slot(channel)]), `${channel}: one slot for all its names`)
    // Presence is written in batches, a moment after the subscribe: waited for, not raced.
    const exists = async (): Promise<number[]> => await Promise.all(names.map(async (name) => await node.exists(name)))
    for (let tries = 0; tries < 100 && (await exists()).includes(0); tries++) await sleep(20)
    t.same(await exists(), [1, 1, 1, 1], `${channel}: history and presence are on its master (${port})`)
  }
  t.equal(calculateSlot(keys.idempotency('alpha', 'k-a2')), keys.slot('alpha'), 'idempotency keys too')
  const again = await app.broadcast(2, { channel: 'alpha', idempotencyKey: 'k-a2' })
  t.match(again, { offset: 2, duplicate: true }, 'a repeated idempotency key is a duplicate')

  // History reads and resumes run on the channel's shard.
  const history = await app.inject('/history/beta?since=0')
  t.same(history.json().messages.map((m: { data: unknown }) => m.data), [1, 2])
  const late = await connect()
  late.send({ type: 'subscribe', channel: 'alpha', since: 1, epoch: results[0].epoch })
  await late.waitFor((f) => f.type === 'subscribed' && f.channel === 'alpha' && f.recovered === true)
  await late.waitFor((f) => f.type === 'message' && f.data === 2)
})

t.test('1,000 channels spread over the three masters: the busiest owns no more than 1.25x the average share', async (t) => {
  const keys = new RedisKeys('frb:', true)
  const masters = await topology.masters()
  const counts = masters.map(() => 0)
  for (let i = 0; i < 1000; i++) {
    const slot = keys.slot(`channel-${i}`)
    counts[masters.findIndex((m) => m.slots.some(([from, to]) => slot >= from && slot <= to))]++
  }
  t.equal(counts.reduce((a, b) => a + b, 0), 1000)
  t.ok(Math.max(...counts) <= 1.25 * 1000 / 3, `channels per master: ${counts.join(', ')}`)
})

t.test('an instance receives from Redis only the channels its clients hold', async (t) => {
  const [one, two] = await Promise.all([build(t, { redis }), build(t, { redis })])
  const a = await one.connect('?channels=only-one')
  const b = await two.connect('?channels=only-two')
  await a.waitFor((f) => f.type === 'subscribed')
  await b.waitFor((f) => f.type === 'subscribed')
  const before = [one.app.broadcastStats().messagesIn, two.app.broadcastStats().messagesIn]
  for (let i = 0; i < 20; i++) await one.app.broadcast(i, { channel: 'only-one' })
  for (let i = 0; i < 5; i++) await one.app.broadcast(i, { channel: 'only-two' })
  await a.waitFor(() => a.received().length === 20)
  await b.waitFor(() => b.received().length === 5)
  t.same([one.app.broadcastStats().messagesIn - before[0], two.app.broadcastStats().messagesIn - before[1]], [20, 5],
    'each instance took in its own channels\' messages only')
})

t.test('a slot migrated to another master: its channel\'s subscription moves there on its own, and messages go on', async (t) => {
  const [one, two] = await Promise.all([build(t, { redis }), build(t, { redis })])
  // A third instance on a client of the user's that never refreshes its slot map by itself.
  const stale = new Cluster(topology.nodes, { slotsRefreshInterval: 0 })
  t.teardown(() => { stale.disconnect() })
  const three = await build(t, { redis: stale })
  const keys = new RedisKeys('frb:', true)
  const channel = 'migrating'
  const slot = keys.slot(channel)
  let mate = 0
  while (keys.slot(`mate${mate}`) !== slot) mate++
  const client = await two.connect(`?channels=${channel}`)
  await client.waitFor((f) => f.type === 'subscribed')
  const first = await one.app.broadcast('before', { channel })
  await client.waitFor((f) => f.type === 'message' && f.data === 'before')

  const from = await topology.masterOfSlot(slot)
  const to = (await topology.masters()).find((master) => master.port !== from)?.port as number
  // A publish while the slot is marked as moving runs where the channel's keys are (the script
  // declares them all), so the history stays whole and the keys can still be moved.
  let during: Awaited<ReturnType<typeof one.app.broadcast>> | undefined
  await migrateSlot(slot, from, to, async () => { during = await one.app.broadcast('during', { channel }) })
  t.match(during, { offset: 2, epoch: first.epoch }, 'published during the move: the next offset, in the same history')
  await client.waitFor((f) => f.type === 'message' && f.data === 'during')
  t.equal(await topology.masterOfSlot(slot), to, `slot ${slot} is on ${to} now`)

  // The publisher learns of the move from a MOVED reply; the subscriber from Redis dropping the
  // subscription (an unasked SUNSUBSCRIBE) or the next slot refresh.
  let delivered = false
  for (let i = 0; i < 40 && !delivered; i++) {
    await one.app.broadcast(`after ${i}`, { channel })
    delivered = await client.waitFor((f) => f.type === 'message' && f.data === `after ${i}`, { timeout: 250 }).then(() => true, () => false)
  }
  t.ok(delivered, 'a message published after the migration is delivered')
  t.ok(two.logs.some((line) => /redis cluster slots moved/.test(line.msg)), 'the subscription moved to the new master')
  // The history moved with the slot's keys; written now on another server, it starts a new epoch.
  const page = (await one.app.inject(`/history/${channel}`)).json() as { epoch: string }
  t.not(page.epoch, first.epoch, 'a new epoch on the new master: a resume from before the move is told recovered:false')

  // The stale instance subscribes to another channel of the slot: the old master answers MOVED,
  // and the subscription is placed again from a fresh map.
  const late = await three.connect(`?channels=mate${mate}`)
  await late.waitFor((f) => f.type === 'subscribed')
  await one.app.broadcast('to the mate', { channel: `mate${mate}` })
  await late.waitFor((f) => f.type === 'message' && f.data === 'to the mate')
})

/** Moves one slot and its keys from one master to another, as `redis-cli --cluster reshard` does; `meanwhile` runs once the slot is marked as moving. */
async function migrateSlot (slot: number, from: number, to: number, meanwhile = async (): Promise<void> => {}): Promise<void> {
  const source = topology.client(from)
  const target = topology.client(to)
  const sourceId = await source.call('CLUSTER', 'MYID') as string
  const targetId = await target.call('CLUSTER', 'MYID') as string
  await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId)
  await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId)
  await meanwhile()
  for (;;) {
    const names = await source.call('CLUSTER', 'GETKEYSINSLOT', slot, 100) as string[]
    if (names.length === 0) break
    await source.call('MIGRATE', '127.0.0.1', to, '', 0, 5000, 'KEYS', ...names)
  }
  for (const master of await topology.masters()) {
    await topology.client(master.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId)
  }
}

t.test('the probe covers every shard connection, and /health reports each by address', async (t) => {
  const { app, connect } = await build(t, { redis, probeInterval: 100 })
  const channels = Array.from({ length: 30 }, (_, i) => `probed.${i}`)
  const client = await connect(`?channels=${channels.join(',')}`)
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'probed.29')
  const masters = (await topology.masters()).map((master) => master.port)
  let probe = ''
  for (let tries = 0; tries < 50 && !masters.every((port) => probe.includes(`127.0.0.1:${port}: ok in`)); tries++) {
    probe = ((await app.inject('/health')).json() as { checks: { probe?: string } }).checks.probe ?? ''
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  for (const port of masters) t.match(probe, `127.0.0.1:${port}: ok in`, `the shard on ${port} was probed`)
})

t.test('the service started with REDIS_CLUSTER_NODES (npm start) publishes and delivers through the cluster', async (t) => {
  const service = await startService(t, { REDIS_CLUSTER_NODES: topology.nodesEnv })
  t.match(await (await fetch(`${service.url}/health`)).json(), { status: 'ok', bus: 'redis', topology: 'cluster' })
  const client = await TestClient.connect(`${service.url.replace('http', 'ws')}/ws?channels=from-env`)
  t.teardown(async () => { await client.close() })
  await client.waitFor((f) => f.type === 'subscribed')
  const response = await fetch(`${service.url}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ channel: 'from-env', data: 'hi' }) })
  t.equal(response.status, 202)
  t.match(await client.waitFor((f) => f.type === 'message'), { channel: 'from-env', offset: 1, data: 'hi' })
})

t.test('names off a cluster keep their plain form; a cluster client is named by its seed nodes', async (t) => {
  const plain = new RedisKeys('frb:')
  t.same([plain.pubsub(null), plain.pubsub('a'), plain.idempotency(null, 'k'), plain.idempotency('a', 'k'), plain.history('a').meta, plain.presence('a').members],
    ['frb:all', 'frb:c:a', 'frb:i:|k', 'frb:i:a|k', 'frb:h:meta:a', 'frb:p:a'])
  const sharded = new RedisKeys('frb:', true)
  t.same([sharded.pubsub(null), sharded.pubsub('a'), sharded.idempotency(null, 'k'), sharded.idempotency('a', 'k'), sharded.history('a').meta, sharded.presence('a').members],
    ['frb:all:{*}', 'frb:c:{a}', 'frb:i:{*}|k', 'frb:i:{a}|k', 'frb:h:meta:{a}', 'frb:p:{a}'])
  t.same([sharded.channelOf('frb:c:{a.b}'), sharded.channelOf('frb:all:{*}'), plain.channelOf('frb:c:a.b')], ['a.b', null, 'a.b'])
  const client = new Cluster([{ host: '127.0.0.1', port: 7000 }, '10.0.0.1:7001', 7002], { lazyConnect: true })
  t.equal(addressOf(client), 'the cluster of 127.0.0.1:7000,10.0.0.1:7001,7002')
  t.equal(topologyOf(client), 'cluster')
  client.disconnect()
})

t.test('the publish script is told which master it meant, and does not read INFO on every call', async (t) => {
  const { app } = await build(t, { redis })
  const masters = (await topology.masters()).map((master) => topology.client(master.port))
  // The first publish to each master shows its IDs have been read.
  for (let i = 0; i < 30; i++) await app.broadcast('warm', { channel: `told.${i}` })
  await Promise.all(masters.map(async (master) => await master.config('RESETSTAT')))
  for (let i = 0; i < 30; i++) await app.broadcast(i, { channel: `told.${i}` })
  const stats = await Promise.all(masters.map(async (master) => await master.info('commandstats')))
  const calls = (name: string): number => stats.reduce((sum, text) => sum + Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(text)?.[1] ?? 0), 0)
  t.equal(calls('evalsha'), 30, 'one script call a publish')
  t.equal(calls('cluster\\|myid'), 30, 'each checked the node it ran on')
  t.equal(calls('info'), 0, 'none read INFO')
})

t.test('a master whose IDs are not known yet: the script is asked to read them itself', async (t) => {
  const client = new Cluster(topology.nodes, { lazyConnect: true })
  t.teardown(() => { client.disconnect() })
  const servers = new ShardServers(client)
  t.equal(servers.of(0), '?', 'no slot map yet')
  await client.connect()
  // A cluster client connects to a node when it first has a command for it.
  await Promise.all(client.nodes('master').map(async (node) => await node.ping()))
  await waitUntil(() => /^@\w+ \w+$/.test(servers.of(0)), 5000)
  const known = servers.of(0)
  t.match(known, /^@\w{40} \w{40}$/, 'read once connected: node ID and replication ID')
  servers.close()
  t.equal(servers.of(0), '?', 'forgotten once closed')
  // Made for a client already connected (a client of the user's), it reads them at once.
  const later = new ShardServers(client)
  await waitUntil(() => /^@\w+ \w+$/.test(later.of(0)), 5000)
  t.equal(later.of(0), known)
  later.close()
})

t.test('a shard\'s subscriber connection cut by the server: it reconnects, subscribes again, and reads back what it missed', async (t) => {
  const { app, connect, logs } = await build(t, { redis })
  const keys = new RedisKeys('frb:', true)
  const client = await connect('?channels=cut')
  await client.waitFor((f) => f.type === 'subscribed')
  await app.broadcast('before', { channel: 'cut' })
  await client.waitFor((f) => f.type === 'message' && f.data === 'before')
  const master = topology.client(await topology.masterOfSlot(keys.slot('cut')))
  await master.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  // Published while the connection is away: read back from the history once it is back.
  await app.broadcast('while away', { channel: 'cut' }).catch(() => {})
  await client.waitFor((f) => f.type === 'message' && f.data === 'while away', { timeout: 10_000 })
  await app.broadcast('after', { channel: 'cut' })
  await client.waitFor((f) => f.type === 'message' && f.data === 'after')
  t.same(client.received().map((m) => [m.offset, m.data]), [[1, 'before'], [2, 'while away'], [3, 'after']], 'every message once, in order')
  t.ok(logs.some((line) => /redis subscriber reconnected/.test(line.msg)), 'the shard connection reconnected')
  t.ok(app.broadcastStats().subscriberReconnects >= 1)
})

t.test('the publisher\'s connection to a master cut by the server (an idle timeout, CLIENT KILL): publishes to that master work again without waiting for the periodic slot refresh', async (t) => {
  // No periodic refresh within the test: only the plugin's own reaction can bring the master back.
  const { app } = await build(t, { redis: { cluster: topology.nodes, slotsRefreshInterval: 60_000 } })
  const keys = new RedisKeys('frb:', true)
  t.match(await app.broadcast('first', { channel: 'idle' }), { offset: 1 })
  const master = topology.client(await topology.masterOfSlot(keys.slot('idle')))
  const killed = await master.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes') as number
  t.ok(killed >= 1, `${killed} connections cut`)
  let refused = 0
  let back = false
  for (const deadline = Date.now() + 10_000; !back && Date.now() < deadline;) {
    back = await app.broadcast('again', { channel: 'idle' }).then(() => true, () => false)
    if (!back) {
      refused++
      await sleep(20)
    }
  }
  t.ok(back, `publishing again within 10 s (${refused} refused meanwhile, each with an error to its caller)`)
  t.match(await app.broadcast('then', { channel: 'idle' }), { duplicate: false }, 'and it stays so')
})

t.test('messages to everyone in a batch (nothing stored) go through the script on the slot of `all`', async (t) => {
  const { app, connect } = await build(t, { redis })
  const client = await connect()
  // The session is in the hub once it answers.
  client.send({ type: 'ping' })
  await client.waitFor((f) => f.type === 'pong')
  const results = await app.broadcastMany([{ data: 'one' }, { data: 'two' }])
  t.equal(results.length, 2)
  await client.waitFor(() => client.received().length === 2)
  t.same(client.received().map((m) => m.data), ['one', 'two'])
})

t.test('a boot that timed out waiting for a cluster client opens no subscriber connection when the client connects later', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: redisBroadcast } = await import('../plugin/index.js')
  const client = new Cluster(topology.nodes, { lazyConnect: true })
  t.teardown(() => { client.disconnect() })
  const app = Fastify({ logger: false })
  await app.register(redisBroadcast, { redis: client, redisReadyTimeout: 300 })
  await t.rejects(async () => { await app.ready() }, { code: 'FRB_BUS_UNAVAILABLE' })
  await client.connect()
  await new Promise((resolve) => setTimeout(resolve, 500))
  const masters = (await topology.masters()).map((master) => topology.client(master.port))
  const lists = await Promise.all(masters.map(async (master) => await master.call('CLIENT', 'LIST') as string))
  t.equal(lists.join('\n').split('\n').filter((line) => line.includes('name=fastify-redis-broadcast:subscriber')).length, 0, 'no subscriber connection')
})

t.test('a Redis user without INFO: publishes work, and the plugin warns that failovers will not start new epochs', async (t) => {
  const nodes = topology.processes().filter((node) => node.pid !== undefined).map((node) => topology.client(node.port))
  await Promise.all(nodes.map(async (node) => await node.call('ACL', 'SETUSER', 'noinfo', 'on', '>secret-password', '~*', '&*', '+@all', '-info')))
  t.teardown(async () => { await Promise.all(nodes.map(async (node) => await node.call('ACL', 'DELUSER', 'noinfo'))) })
  const { app, logs } = await build(t, { redis: { cluster: topology.nodes, redisOptions: { username: 'noinfo', password: 'secret-password' } } })
  t.match(await app.broadcast('still works', { channel: 'acl' }), { offset: 1 })
  t.ok(await waitUntil(() => logs.some((line) => /refused INFO replication or CLUSTER MYID/.test(line.msg)), 5000), 'warned')
  t.equal(logs.filter((line) => /refused INFO replication or CLUSTER MYID/.test(line.msg)).length, 1, 'once')
})

t.test('a process whose only work was the plugin on a cluster exits after app.close(), even with a slot refresh under way as it closed', async (t) => {
  // ioredis re-arms its periodic slot refresh when a refresh under way at close comes back: a
  // timer that would keep the process alive for good. Every node paused makes sure one is under way.
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import Fastify from 'fastify'
    import redisBroadcast from './dist/plugin/index.js'
    const app = Fastify()
    await app.register(redisBroadcast, { redis: { cluster: ${JSON.stringify(topology.nodes)}, slotsRefreshInterval: 20 } })
    await app.ready()
    process.stdout.write('ready\\n')
    process.stdin.once('data', async () => {
      process.stdin.destroy()
      await app.close()
      process.stdout.write('closed\\n')
    })
  `], { cwd: fileURLToPath(new URL('../', import.meta.url)), env: { ...process.env, NODE_V8_COVERAGE: undefined }, stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = once(child, 'exit')
  t.ok(await waitUntil(() => output.includes('ready'), 15_000), 'the plugin started on the cluster')
  const nodes = topology.processes().filter((node) => node.pid !== undefined).map((node) => topology.client(node.port))
  await Promise.all(nodes.map(async (node) => await node.call('CLIENT', 'PAUSE', 1000, 'ALL')))
  await sleep(200)
  child.stdin.write('close\n')
  t.ok(await waitUntil(() => output.includes('closed'), 15_000), 'app.close() returned')
  const [code] = await Promise.race([exited, sleep(5000).then(() => ['still running'])])
  t.equal(code, 0, 'and the process exited on its own')
})

t.test('quit() of a cluster client during a slot refresh leaves no refresh timer behind', async (t) => {
  const cluster = new Cluster(topology.nodes, { slotsRefreshInterval: 20 })
  await waitUntil(() => cluster.status === 'ready', 5000)
  const nodes = topology.processes().filter((node) => node.pid !== undefined).map((node) => topology.client(node.port))
  await Promise.all(nodes.map(async (node) => await node.call('CLIENT', 'PAUSE', 500, 'ALL')))
  await sleep(100)
  const internals = cluster as unknown as { isRefreshing: boolean, slotsTimer: NodeJS.Timeout | null }
  t.equal(internals.isRefreshing, true, 'a refresh is under way, held by the pause')
  await quit(cluster, 200)
  // The refresh comes back once the pause ends, and re-arms the timer; the plugin's callback clears it.
  t.ok(await waitUntil(() => !internals.isRefreshing, 5000), 'the refresh came back')
  t.equal(internals.slotsTimer, null, 'no timer left to keep the process alive')
})

t.test('a manual failover (CLUSTER FAILOVER), the demoted master still connected: the promoted master is read, with its new replication ID', async (t) => {
  const client = new Cluster(topology.nodes)
  t.teardown(() => { client.disconnect() })
  const servers = new ShardServers(client)
  t.teardown(() => { servers.close() })
  const slot = 0
  t.ok(await waitUntil(() => /^@\w+ \w+$/.test(servers.of(slot)), 5000), 'the master of slot 0 is read')
  const before = servers.of(slot)
  const master = topology.client(await topology.masterOfSlot(slot))
  const replicaPort = Number(/^slave0:.*port=(\d+)/m.exec(await master.info('replication'))?.[1])
  const replica = topology.client(replicaPort)
  await replica.call('CLUSTER', 'FAILOVER')
  const deadline = Date.now() + 10_000
  while (await topology.masterOfSlot(slot) !== replicaPort && Date.now() < deadline) await sleep(50)
  t.equal(await topology.masterOfSlot(slot), replicaPort, 'the replica took the slots over')
  // The demoted master's connection stays up: only the slot map tells its entry is stale.
  await new Promise((resolve) => { client.refreshSlotsCache(resolve) })
  const id = await replica.call('CLUSTER', 'MYID') as string
  t.ok(await waitUntil(() => servers.of(slot).startsWith(`@${id} `), 5000), 'the promoted master is read')
  t.not(servers.of(slot), before)
  t.match(servers.of(slot), new RegExp(`^@${id} ${/^master_replid:(\w+)/m.exec(await replica.info('replication'))?.[1] as string}$`), 'its node ID and its new replication ID')
})
