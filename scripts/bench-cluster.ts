// `npm run bench:cluster`: our service on a Redis Cluster. Starts a private cluster (three masters, a
// replica each, free loopback ports), two instances of the service with REDIS_CLUSTER_NODES, one
// WebSocket client per channel (instance A holds the first tenth of the channels, B the rest), and
// publishes spread evenly over every channel through both instances. It shows each master's share of
// Redis's CPU, and that each instance receives from Redis only its own channels' messages; and checks
// that every accepted message reached its client. scripts/README.md describes it.
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'
import type { Redis } from 'ioredis'
import { startRedisCluster, type RedisClusterTopology } from '../test/helpers/redis-cluster.js'
import { RedisKeys } from '../plugin/redis/keys.js'
import { Histogram, summarise } from './bench/histogram.js'
import { machineCpu, machineInfo, openFileLimit, processCpu } from './bench/proc.js'
import { installCleanup, sleep, withTimeout } from './bench/processes.js'
import { CommandTime, redisVersion } from './bench/redis.js'
import { startServer, type ServerHandle } from './bench/servers.js'
import { Worker } from './bench/workers.js'
import { ClusterClients, type ClientGroup } from './bench/cluster-clients.js'
import {
  BitSet, channelName, channelOf, instanceOf,
  type ClusterPublisherConfig, type ClusterPublisherStats, type FromClusterPublisher, type ToClusterPublisher
} from './bench/cluster-protocol.js'
import { markdown, type ClusterRunResult, type InstanceResult, type MasterResult } from './bench/cluster-report.js'
import { settingsOrExitCode } from './bench/cli.js'

/** The build this script is part of (dist/, from dist/scripts/bench-cluster.js). */
const distDir = fileURLToPath(new URL('../', import.meta.url))

const USAGE = `Usage: npm run bench:cluster -- [flags]   (or: node dist/scripts/bench-cluster.js [flags] after npm run build)

  --duration SECONDS   length of the measured run (default 10)
  --rate R             publishes per second over all channels, both instances together (default 1500)
  --lanes L            publish requests in flight at most (default 32)
  --channels N         channels, one WebSocket client each (default 1000)
  --first N            channels held by instance A, ch0 … ch<N-1>; B holds the others (default channels / 10)
  --size S             bytes of each message's data JSON (default 128)
  --warmup SECONDS     publishing before the measured run, left out of the figures (default 2)
  --output FILE        JSON results (default bench-cluster-results.json)
  --help`

interface Settings {
  durationS: number
  rate: number
  lanes: number
  channels: number
  first: number
  size: number
  warmupS: number
  output: string
}

function parseSettings (argv: string[]): Settings | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      duration: { type: 'string' },
      rate: { type: 'string' },
      lanes: { type: 'string' },
      channels: { type: 'string' },
      first: { type: 'string' },
      size: { type: 'string' },
      warmup: { type: 'string' },
      output: { type: 'string' },
      help: { type: 'boolean' }
    }
  })
  if (values.help === true) return 'help'
  const number = (name: keyof typeof values, fallback: number, min: number, max: number): number => {
    const text = values[name]
    if (text === undefined) return fallback
    const value = Number(text)
    if (typeof text !== 'string' || !Number.isFinite(value) || value < min || value > max) {
      throw new Error(`--${name} takes a number from ${min} to ${max}, got ${JSON.stringify(text)}`)
    }
    return value
  }
  const channels = Math.round(number('channels', 1000, 2, 5000))
  const first = Math.round(number('first', Math.round(channels / 10), 1, channels - 1))
  const durationS = number('duration', 10, 1, 600)
  const rate = number('rate', 1500, 1, 100_000)
  if (rate * durationS < channels) throw new Error(`--rate × --duration must be at least --channels (${channels}): every channel gets messages`)
  return {
    durationS,
    rate,
    lanes: Math.round(number('lanes', 32, 1, 1024)),
    channels,
    first,
    size: Math.round(number('size', 128, 1, 65_536)),
    warmupS: number('warmup', 2, 0, 60),
    output: values.output ?? 'bench-cluster-results.json'
  }
}

function log (line: string): void {
  process.stderr.write(`bench:cluster: ${line}\n`)
}

/** used_cpu_user + used_cpu_sys of a Redis server: all its threads, since it started. */
async function redisCpu (client: Redis): Promise<number> {
  const text = await withTimeout(client.info('cpu'), 5000, 'INFO cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)?.[1] ?? NaN)
  return field('used_cpu_user') + field('used_cpu_sys')
}

/** The counters of an instance's /metrics that the benchmark reads. */
async function metricsOf (port: number): Promise<Record<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
  if (response.status !== 200) throw new Error(`GET /metrics on ${port} answered ${response.status}`)
  const text = await response.text()
  const read = (series: string): number => {
    const escaped = series.replace(/[{}"=]/g, (c) => `\\${c}`)
    return Number(new RegExp(`^${escaped} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? NaN)
  }
  return {
    received: read('frb_messages_received_total'),
    accepted: read('frb_publishes_total{result="accepted"}'),
    failed: read('frb_publishes_total{result="failed"}'),
    gapsReported: read('frb_gaps_total{outcome="reported"}'),
    reconnects: read('frb_redis_subscriber_reconnects_total'),
    channels: read('frb_channels'),
    connections: read('frb_connections')
  }
}

async function health (port: number): Promise<unknown> {
  const response = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(5000) })
  return await response.json()
}

function cpuSeconds (pid: number): number {
  const times = processCpu(pid)
  return times === undefined ? NaN : times.user + times.system
}

function ownCpu (): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1e6
}

interface Snapshot {
  at: number
  masterCpu: number[]
  replicaCpu: number[]
  metrics: Array<Record<string, number>>
  instanceCpu: number[]
  publisherCpu: number
  clientsCpu: number
  machineBusy: number
}

type PublisherWorker = Worker<ToClusterPublisher, FromClusterPublisher>

async function publish (publisher: PublisherWorker, config: ClusterPublisherConfig): Promise<ClusterPublisherStats> {
  publisher.send({ type: 'run', config })
  return (await publisher.waitFor('done', config.timeoutMs + 20_000)).stats
}

/** Waits until the clients hold `expected` measured messages, or `timeoutMs` passed. */
async function drain (count: () => number, expected: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (count() < expected && Date.now() < deadline) await sleep(50)
}

async function run (settings: Settings): Promise<{ result: ClusterRunResult, failed: boolean }> {
  const startedAt = new Date()
  const machine = machineInfo()
  const version = redisVersion()
  const keys = new RedisKeys('frb:', true)
  const servers: ServerHandle[] = []
  const commandTimes: CommandTime[] = []
  let topology: RedisClusterTopology | undefined
  let publisher: PublisherWorker | undefined
  let clients: ClusterClients | undefined
  let clusterDir: string | undefined
  // Whatever ends this process (Ctrl-C, the deadline, a crash) kills the cluster's nodes too:
  // processes.ts stops the children it tracks, and the cluster helper's nodes are not among them.
  const killCluster = (): void => {
    for (const { pid } of topology?.processes() ?? []) {
      if (pid !== undefined) try { process.kill(pid, 'SIGKILL') } catch {}
    }
    if (clusterDir !== undefined) rmSync(clusterDir, { recursive: true, force: true })
  }
  process.on('exit', killCluster)

  try {
    log('starting a Redis Cluster: 3 masters, 3 replicas')
    topology = await withTimeout(startRedisCluster(), 90_000, 'the Redis Cluster did not start')
    const ports = topology.processes().map((node) => node.port)
    if (ports.includes(6379)) throw new Error('the cluster got port 6379: refusing to go on beside the system\'s Redis')
    const masters = await topology.masters()
    if (masters.length !== 3) throw new Error(`expected 3 masters, found ${masters.length}`)
    const masterClients = masters.map((master) => (topology as RedisClusterTopology).client(master.port))
    const replicaPorts = ports.filter((port) => !masters.some((master) => master.port === port))
    const replicaClients = replicaPorts.map((port) => (topology as RedisClusterTopology).client(port))
    const dir = await withTimeout(masterClients[0]?.config('GET', 'dir') as Promise<unknown>, 5000, 'CONFIG GET dir') as string[]
    clusterDir = dir[1]
    log(`masters ${masters.map((m) => m.port).join(', ')}; replicas ${replicaPorts.join(', ')}`)

    // Which master owns each channel, by the plugin's own names (`frb:c:{ch<c>}`).
    const ownerOf = (channel: number): number => {
      const slot = keys.slot(channelName(channel))
      const index = masters.findIndex((master) => master.slots.some(([from, to]) => from <= slot && slot <= to))
      if (index < 0) throw new Error(`no master owns slot ${slot} of ${channelName(channel)}`)
      return index
    }
    const owners = Array.from({ length: settings.channels }, (_, channel) => ownerOf(channel))

    log('starting two instances of the service (fastify start dist/app.js, REDIS_CLUSTER_NODES)')
    const serviceEnv = { REDIS_CLUSTER_NODES: topology.nodesEnv, REDIS_SENTINELS: '' }
    for (let i = 0; i < 2; i++) servers.push(await startServer('ours', '', serviceEnv))
    for (const server of servers) {
      const state = await health(server.port) as { topology?: string }
      if (state.topology !== 'cluster') throw new Error(`instance on ${server.port} is not on the cluster: /health says ${JSON.stringify(state)}`)
    }
    const [a, b] = servers as [ServerHandle, ServerHandle]
    const groups: ClientGroup[] = [
      { name: 'A', port: a.port, from: 0, to: settings.first },
      { name: 'B', port: b.port, from: settings.first, to: settings.channels }
    ]
    const groupOf = (channel: number): number => channel < settings.first ? 0 : 1

    // Whole rounds of the channels: each channel gets the same number of messages.
    const rounds = (seconds: number): number => Math.round(settings.rate * seconds / settings.channels)
    const warmupMessages = (settings.warmupS > 0 ? Math.max(1, rounds(settings.warmupS)) : 0) * settings.channels
    const messages = Math.max(1, rounds(settings.durationS)) * settings.channels
    publisher = new Worker<ToClusterPublisher, FromClusterPublisher>('./cluster-publisher.js', 'publisher')
    await publisher.waitFor('ready', 10_000)

    log(`connecting ${settings.channels} WebSocket clients: ${settings.first} to A, ${settings.channels - settings.first} to B`)
    clients = new ClusterClients(groups, settings.channels, Math.max(warmupMessages, 1))
    await clients.connect(60_000)
    for (const [index, server] of servers.entries()) {
      const metrics = await metricsOf(server.port)
      const group = groups[index] as ClientGroup
      log(`instance ${group.name} on ${server.port}: ${metrics.connections} connections, ${metrics.channels} channels`)
    }

    const base: Omit<ClusterPublisherConfig, 'phase' | 'messages' | 'timeoutMs'> = {
      urls: servers.map((server) => server.publishUrl),
      channels: settings.channels,
      rate: settings.rate,
      lanes: settings.lanes,
      size: settings.size
    }
    let warmup: ClusterPublisherStats | undefined
    if (warmupMessages > 0) {
      log(`warm-up: ${warmupMessages} publishes`)
      warmup = await publish(publisher, { ...base, phase: 0, messages: warmupMessages, timeoutMs: warmupMessages / settings.rate * 1000 + 10_000 })
      const expected = warmup.accepted
      await drain(() => clients?.counts.reduce((sum, count) => sum + count.warmup, 0) ?? 0, expected, 10_000)
      await sleep(500)
    }
    clients.reset(messages)

    const publisherPid = publisher.pid
    const snapshot = async (): Promise<Snapshot> => ({
      at: performance.now(),
      masterCpu: await Promise.all(masterClients.map(redisCpu)),
      replicaCpu: await Promise.all(replicaClients.map(redisCpu)),
      metrics: await Promise.all(servers.map(async (server) => await metricsOf(server.port))),
      instanceCpu: servers.map((server) => cpuSeconds(server.pid)),
      publisherCpu: cpuSeconds(publisherPid),
      clientsCpu: ownCpu(),
      machineBusy: machineCpu().busy
    })

    for (const master of masters) {
      const time = new CommandTime(`redis://127.0.0.1:${master.port}`)
      commandTimes.push(time)
      await withTimeout(time.reset(), 5000, `CONFIG RESETSTAT on ${master.port}`)
    }
    const before = await snapshot()
    log(`measured run: ${messages} publishes over ${settings.channels} channels, ${settings.rate}/s (${(messages / settings.rate).toFixed(1)} s)`)
    const stats = await publish(publisher, { ...base, phase: 1, messages, timeoutMs: messages / settings.rate * 1000 + 5_000 })
    log(`published: ${stats.accepted} accepted, ${stats.failed} refused or failed; waiting for the clients`)
    await drain(() => clients?.total() ?? 0, stats.accepted, 10_000)
    // Late duplicates, if any, and the last counters.
    await sleep(300)
    const after = await snapshot()
    const commandStats = await Promise.all(commandTimes.map(async (time) => await withTimeout(time.read(), 5000, 'INFO commandstats')))

    // ---- figures -------------------------------------------------------------------------------
    const accepted = BitSet.fromBase64(messages, stats.acceptedBits)
    const expectedByMaster = masters.map(() => 0)
    const expectedByInstance = servers.map(() => 0)
    let missing = 0
    const missingSamples: string[] = []
    const missingByInstance = servers.map(() => 0)
    for (let index = 0; index < messages; index++) {
      if (!accepted.has(index)) continue
      const channel = channelOf(index, settings.channels)
      expectedByMaster[owners[channel] as number]++
      expectedByInstance[groupOf(channel)]++
      if (!clients.has(index)) {
        missing++
        missingByInstance[groupOf(channel)]++
        if (missingSamples.length < 5) {
          missingSamples.push(`message ${index} on ${channelName(channel)} (master ${masters[owners[channel] as number]?.port}, ` +
            `published through ${(groups[instanceOf(index, settings.channels, servers.length)] as ClientGroup).name}, ` +
            `held by ${(groups[groupOf(channel)] as ClientGroup).name}) was accepted but never delivered`)
        }
      }
    }

    const masterCpu = masters.map((_, i) => (after.masterCpu[i] as number) - (before.masterCpu[i] as number))
    const mastersCpu = masterCpu.reduce((sum, value) => sum + value, 0)
    const masterResults: MasterResult[] = masters.map((master, i) => {
      const commands = commandStats[i] as Record<string, { calls: number, usec: number }>
      const calls = (name: string): number => commands[name]?.calls ?? 0
      const channels = owners.filter((owner) => owner === i).length
      return {
        port: master.port,
        slots: master.slots,
        slotCount: master.slots.reduce((sum, [from, to]) => sum + to - from + 1, 0),
        channels,
        expectedPublishes: expectedByMaster[i] as number,
        spublish: calls('spublish'),
        scripts: calls('evalsha') + calls('eval'),
        scriptSeconds: ((commands.evalsha?.usec ?? 0) + (commands.eval?.usec ?? 0)) / 1e6,
        commands,
        cpuSeconds: masterCpu[i] as number,
        cpuShare: (masterCpu[i] as number) / mastersCpu,
        channelShare: channels / settings.channels
      }
    })
    const average = 1 / masters.length
    const busiestOverAverage = Math.max(...masterResults.map((m) => m.cpuShare)) / average
    const channelsBusiestOverAverage = Math.max(...masterResults.map((m) => m.channelShare)) / average

    const instanceResults: InstanceResult[] = servers.map((server, i) => {
      const group = groups[i] as ClientGroup
      const delta = (name: string): number => (after.metrics[i]?.[name] as number) - (before.metrics[i]?.[name] as number)
      const received = delta('received')
      return {
        name: group.name,
        port: server.port,
        pid: server.pid,
        channels: group.to - group.from,
        publishedThrough: stats.acceptedBy[i] as number,
        receivedFromRedis: received,
        expectedFromRedis: expectedByInstance[i] as number,
        measuredShare: received / stats.accepted,
        expectedShare: (group.to - group.from) / settings.channels,
        deliveries: clients?.counts[i]?.received ?? 0,
        cpuSeconds: (after.instanceCpu[i] as number) - (before.instanceCpu[i] as number),
        gapsReported: delta('gapsReported'),
        subscriberReconnects: delta('reconnects'),
        publishFailures: delta('failed')
      }
    })

    const latency = new Histogram()
    latency.merge(stats.latency, stats.maxLatencyUs)
    const latencyMs = summarise(latency)
    const durationS = Math.max(0.001, (stats.lastAckUs - stats.firstSendUs) / 1e6)
    const elapsedS = Math.max(0.001, (after.at - before.at) / 1000)
    const sum = (values: number[]): number => values.reduce((total, value) => total + value, 0)
    const problems = clients.problems
    const cpu = {
      masters: mastersCpu,
      replicas: sum(replicaPorts.map((_, i) => (after.replicaCpu[i] as number) - (before.replicaCpu[i] as number))),
      instances: sum(instanceResults.map((i) => i.cpuSeconds)),
      publisher: after.publisherCpu - before.publisherCpu,
      clients: after.clientsCpu - before.clientsCpu
    }
    const machineCores = (after.machineBusy - before.machineBusy) / elapsedS
    const result: ClusterRunResult = {
      startedAt: startedAt.toISOString(),
      command: `node dist/scripts/bench-cluster.js ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cores: machine.cores, cpuModel: machine.cpuModel, node: machine.node, redis: version },
      settings: {
        channels: settings.channels,
        firstInstanceChannels: settings.first,
        rate: settings.rate,
        lanes: settings.lanes,
        size: settings.size,
        durationS: settings.durationS,
        warmupS: settings.warmupS
      },
      masters: masterResults,
      busiestOverAverage,
      channelsBusiestOverAverage,
      instances: instanceResults,
      totals: {
        durationS,
        sent: stats.sent,
        accepted: stats.accepted,
        refused: stats.failed,
        failures: stats.failures,
        reachedRate: stats.accepted / durationS,
        publishLatencyMs: { p50: latencyMs.p50, p99: latencyMs.p99, max: latencyMs.max },
        deliveries: clients.total(),
        missing,
        duplicates: problems.duplicates,
        misrouted: problems.misrouted,
        otherFrames: problems.otherFrames,
        clientsClosed: problems.closed,
        samples: [
          ...problems.samples,
          ...instanceResults.filter((i) => i.gapsReported > 0 || i.subscriberReconnects > 0 || i.publishFailures > 0).map((i) =>
            `instance ${i.name}: ${i.gapsReported} gaps reported, ${i.subscriberReconnects} subscriber reconnects, ${i.publishFailures} failed publishes (its /metrics)`),
          ...instanceResults.filter((i) => i.receivedFromRedis !== i.expectedFromRedis).map((i) =>
            `instance ${i.name} received ${i.receivedFromRedis} messages from Redis, ${i.expectedFromRedis} expected`),
          ...missingByInstance.flatMap((n, i) => n > 0 ? [`${n} of the missing messages were on channels held by ${(groups[i] as ClientGroup).name}`] : [])
        ],
        missingSamples,
        warmupAccepted: warmup?.accepted ?? 0,
        warmupDelivered: sum(clients.counts.map((count) => count.warmup)),
        cpu,
        machineCores,
        foreignCores: Math.max(0, machineCores - sum(Object.values(cpu)) / elapsedS)
      }
    }
    const failed = missing > 0 || problems.duplicates > 0 || problems.misrouted > 0
    return { result, failed }
  } finally {
    log('stopping everything')
    await clients?.close().catch(() => {})
    for (const time of commandTimes) await time.close()
    await publisher?.stop().catch(() => {})
    for (const server of servers) await server.stop().catch(() => {})
    await topology?.stop().catch(() => {})
    process.off('exit', killCluster)
  }
}

async function main (): Promise<number> {
  const settings = settingsOrExitCode(parseSettings, USAGE)
  if (typeof settings === 'number') return settings
  if (!existsSync('/proc/self/stat')) throw new Error('the benchmark reads /proc: it runs on Linux only')
  if (!existsSync(`${distDir}app.js`)) throw new Error(`${distDir}app.js is missing: run npm run build first (npm run bench:cluster does)`)
  const major = Number(redisVersion().split('.')[0])
  if (!(major >= 7)) throw new Error(`sharded Pub/Sub needs Redis 7 or newer; redis-server is ${redisVersion()}`)
  const limit = openFileLimit()
  if (limit.soft < 2 * settings.channels + 512) {
    throw new Error(`the open-file limit (ulimit -n) is ${limit.soft}; ${settings.channels} clients need ${2 * settings.channels + 512}: raise it (ulimit -n 16384)`)
  }
  // Everything started is stopped by pid on exit, Ctrl-C and after this deadline at the latest.
  installCleanup((settings.warmupS + settings.durationS) * 2000 + 5 * 60_000)

  const { result, failed } = await run(settings)
  writeFileSync(settings.output, `${JSON.stringify(result, null, 2)}\n`)
  log(`JSON results in ${settings.output}`)
  process.stdout.write(`${markdown(result)}\n`)
  if (failed) {
    process.stderr.write(`\nbench:cluster: FAILED: ${result.totals.missing} messages lost, ${result.totals.duplicates} duplicated, ` +
      `${result.totals.misrouted} misrouted (exit code 1)\n`)
    return 1
  }
  return 0
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench:cluster: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
