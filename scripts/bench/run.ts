// One run: start the server(s) under test, the load processes, measure, stop everything.
import { Histogram, summarise } from './histogram.js'
import { machineCpu, processCpu, processRss, type CpuTimes } from './proc.js'
import { sleep } from './processes.js'
import { expectedDeliveries } from './protocol.js'
import { CommandTime, topLevelUsec } from './redis.js'
import type {
  ClientConfig, ClientStats, FromClients, FromPublisher, PublisherConfig, PublisherStats, ToClients, ToPublisher
} from './protocol.js'
import type { Progress } from './progress.js'
import type { FanoutResult, IdleResult, PublishResult, Utilisation } from './results.js'
import type { Scenario } from './scenarios.js'
import { startServer, targetInfo, type LoopDelay, type ServerHandle, type ServiceBuild, type Target } from './servers.js'
import { Worker } from './workers.js'

type ClientWorker = Worker<ToClients, FromClients>
type PublisherWorker = Worker<ToPublisher, FromPublisher>

export interface RunEnvironment {
  redisUrl: string
  redisPid: number
  clientsPerProcess: number
  /** WebSocket clients per loopback source address; 0: all from the default one (there are ports enough). */
  perSourceAddress: number
  /** Our service's settings beyond its defaults. */
  serviceEnv: Record<string, string>
  /** Where the other builds of our service are (--compare-dist). */
  builds: ServiceBuild[]
  cores: number
  progress: Progress
  /** Pauses that let a fresh server settle: shorter in --quick runs. */
  settle: { beforeLoadMs: number, idleBeforeMs: number, idleAfterMs: number }
}

/** A process is saturated from this share of one core on. */
const SATURATED = 0.9

// ---- CPU accounting -----------------------------------------------------------------------------

interface Roles {
  server: number[]
  clients: number[]
  publisher: number[]
  redis: number[]
  bench: number[]
}

interface Snapshot {
  at: number
  cpu: Map<number, CpuTimes>
  machine: { busy: number, total: number }
}

function snapshot (roles: Roles): Snapshot {
  const cpu = new Map<number, CpuTimes>()
  for (const pid of Object.values(roles).flat()) {
    const times = processCpu(pid)
    if (times !== undefined) cpu.set(pid, times)
  }
  return { at: performance.now(), cpu, machine: machineCpu() }
}

function cpuOf (pids: number[], before: Snapshot, after: Snapshot): CpuTimes {
  let user = 0
  let system = 0
  for (const pid of pids) {
    const a = before.cpu.get(pid)
    const b = after.cpu.get(pid)
    if (a === undefined || b === undefined) continue
    user += b.user - a.user
    system += b.system - a.system
  }
  return { user, system }
}

/** The server processes' CPU time between the snapshots, how busy each role was, and which were saturated. */
function usage (
  roles: Roles, before: Snapshot, after: Snapshot, cores: number
): { serverCpu: CpuTimes, utilisation: Utilisation, saturated: string } {
  const seconds = Math.max(0.001, (after.at - before.at) / 1000)
  const cores1 = (pid: number): number => {
    const { user, system } = cpuOf([pid], before, after)
    return (user + system) / seconds
  }
  const busiest = (pids: number[]): number => Math.max(0, ...pids.map(cores1))
  const ours = Object.values(roles).flat().reduce((sum: number, pid: number) => sum + cores1(pid), 0)
  const machine = (after.machine.busy - before.machine.busy) / seconds
  const utilisation: Utilisation = {
    server: busiest(roles.server),
    clients: busiest(roles.clients),
    publisher: busiest(roles.publisher),
    redis: busiest(roles.redis),
    machine,
    foreign: Math.max(0, machine - ours)
  }
  const saturated: string[] = []
  if (utilisation.server >= SATURATED) saturated.push('server')
  if (utilisation.clients >= SATURATED) saturated.push('clients')
  if (utilisation.publisher >= SATURATED) saturated.push('publisher')
  if (utilisation.redis >= SATURATED) saturated.push('redis')
  if (machine >= SATURATED * cores) saturated.push('machine')
  return { serverCpu: cpuOf(roles.server, before, after), utilisation, saturated: saturated.length === 0 ? 'none' : saturated.join('+') }
}

function cpuSeconds ({ user, system }: CpuTimes): number {
  return user + system
}

function perMillion (cpu: CpuTimes, count: number): CpuTimes {
  return count === 0 ? { user: NaN, system: NaN } : { user: cpu.user / count * 1e6, system: cpu.system / count * 1e6 }
}

const mb = (bytes: number): number => bytes / 2 ** 20

// ---- pieces shared by the runs -------------------------------------------------------------------

async function startServers (target: Target, count: number, env: RunEnvironment, servers: ServerHandle[]): Promise<void> {
  for (let i = 0; i < count; i++) {
    env.progress.update(`starting ${targetInfo(target).label}${count > 1 ? ` instance ${i + 1}/${count}` : ''}`, true)
    servers.push(await startServer(target, env.redisUrl, env.serviceEnv, env.builds))
  }
}

/** Forks ⌈clients / clientsPerProcess⌉ load-client processes (while the servers start). */
function forkClients (scenario: Scenario, env: RunEnvironment, workers: ClientWorker[]): void {
  const processes = Math.max(1, Math.ceil(scenario.clients / env.clientsPerProcess))
  for (let i = 0; i < processes; i++) workers.push(new Worker('./clients.js', `load clients #${i + 1}`))
}

/** Has the client processes open their share of the connections; resolves once all are subscribed. */
async function connectClients (
  scenario: Scenario, target: Target, servers: ServerHandle[], env: RunEnvironment, workers: ClientWorker[]
): Promise<number> {
  const started = performance.now()
  let firstIndex = 0
  workers.forEach((worker, i) => {
    const count = Math.floor(scenario.clients / workers.length) + (i < scenario.clients % workers.length ? 1 : 0)
    const config: ClientConfig = {
      kind: targetInfo(target).clientKind,
      urls: servers.map((server) => server.connectUrl),
      count,
      messages: scenario.messages,
      lanes: scenario.lanes,
      connectConcurrency: 50,
      connectTimeoutMs: 30_000,
      perSourceAddress: scenario.clients > env.perSourceAddress ? env.perSourceAddress : 0,
      groups: scenario.groups,
      firstIndex
    }
    firstIndex += count
    worker.send({ type: 'config', config })
  })
  env.progress.update(`connecting ${scenario.clients.toLocaleString('en-US')} clients`, true)
  const replies = await Promise.all(workers.map(async (worker) => await worker.waitFor('connected', 60_000 + scenario.clients * 20)))
  const failed = replies.reduce((sum, reply) => sum + reply.failed, 0)
  if (failed > 0) {
    const firstError = replies.find((reply) => reply.firstError !== undefined)?.firstError ?? ''
    throw new Error(`${failed} of ${scenario.clients} clients could not connect: ${firstError}`)
  }
  return (performance.now() - started) / 1000
}

function forkPublisher (workers: Array<ClientWorker | PublisherWorker>): PublisherWorker {
  const publisher: PublisherWorker = new Worker('./publisher.js', 'publisher')
  workers.push(publisher)
  return publisher
}

async function stopAll (workers: Array<ClientWorker | PublisherWorker>, servers: ServerHandle[]): Promise<void> {
  for (const worker of workers) worker.send({ type: 'exit' })
  await Promise.all(workers.map(async (worker) => { await worker.stop() }))
  await Promise.all(servers.map(async (server) => { await server.stop() }))
}

function publisherConfig (scenario: Scenario, servers: ServerHandle[], timeoutMs: number): PublisherConfig {
  return {
    mode: scenario.mode,
    urls: servers.map((server) => server.publishUrl),
    messages: scenario.messages,
    size: scenario.size,
    lanes: scenario.lanes,
    rate: scenario.rate,
    durationMs: scenario.durationMs,
    timeoutMs,
    batch: scenario.batch,
    groups: scenario.groups
  }
}

/**
 * Resolves once every client has every message, or the publisher is done and nothing arrived for
 * `stallMs`, or at `timeoutMs`.
 */
async function awaitDeliveries (
  clients: ClientWorker[], publisher: PublisherWorker, expected: number, stallMs: number, timeoutMs: number, progress: Progress
): Promise<void> {
  const unique = new Array<number>(clients.length).fill(0)
  let complete = 0
  let publisherDone = false
  let lastChange = performance.now()
  let sent = 0
  const started = performance.now()
  await new Promise<void>((resolve) => {
    let finished = false
    const finish = (): void => {
      if (finished) return
      finished = true
      clearInterval(timer)
      resolve()
    }
    clients.forEach((worker, i) => worker.onMessage((message) => {
      if (message.type === 'progress' && message.unique !== unique[i]) {
        unique[i] = message.unique
        lastChange = performance.now()
        const total = unique.reduce((sum, n) => sum + n, 0)
        progress.update(`published ${sent.toLocaleString('en-US')}, delivered ${total.toLocaleString('en-US')}/${expected.toLocaleString('en-US')} (${(100 * total / expected).toFixed(0)} %)`)
      } else if (message.type === 'complete' && ++complete === clients.length) {
        finish()
      }
    }))
    publisher.onMessage((message) => {
      if (message.type === 'progress') sent = message.sent
      if (message.type === 'done') { publisherDone = true; lastChange = Math.max(lastChange, performance.now()) }
    })
    const timer = setInterval(() => {
      const now = performance.now()
      if ((publisherDone && now - lastChange > stallMs) || now - started > timeoutMs) finish()
    }, 100)
  })
}

// ---- the three kinds of run -------------------------------------------------------------------------

export async function runFanout (scenario: Scenario, target: Target, round: number, env: RunEnvironment): Promise<FanoutResult> {
  const servers: ServerHandle[] = []
  const workers: Array<ClientWorker | PublisherWorker> = []
  let rssTimer: NodeJS.Timeout | undefined
  try {
    // The load processes boot while the servers do.
    const clientWorkers: ClientWorker[] = []
    forkClients(scenario, env, clientWorkers)
    workers.push(...clientWorkers)
    const publisher = forkPublisher(workers)
    await startServers(target, scenario.instances, env, servers)
    const connectS = await connectClients(scenario, target, servers, env, clientWorkers)
    await publisher.waitFor('ready', 10_000)
    await sleep(env.settle.beforeLoadMs)

    const serverRss = (): number => servers.reduce((sum, server) => sum + (processRss(server.pid) ?? 0), 0)
    const rssStart = serverRss()
    let rssPeak = rssStart
    rssTimer = setInterval(() => { rssPeak = Math.max(rssPeak, serverRss()) }, 250)
    const roles: Roles = {
      server: servers.map((server) => server.pid),
      clients: clientWorkers.map((worker) => worker.pid),
      publisher: [publisher.pid],
      redis: [env.redisPid],
      bench: [process.pid]
    }
    const expected = expectedDeliveries(scenario.clients, scenario.messages, scenario.groups)
    // Generous bounds: a burst at 20,000 deliveries/s, a fixed rate 30 s past its schedule.
    const timeoutMs = scenario.mode === 'rate' ? scenario.durationMs + 30_000 : Math.max(60_000, expected / 20)
    // A scrape resets the servers' event-loop histograms: the next one covers the run alone.
    await Promise.all(servers.map(async (server) => await server.loopDelay()))
    const before = snapshot(roles)
    publisher.send({ type: 'run', config: publisherConfig(scenario, servers, timeoutMs) })
    await awaitDeliveries(clientWorkers, publisher, expected, 5000, timeoutMs + 10_000, env.progress)
    const after = snapshot(roles)
    const delays = (await Promise.all(servers.map(async (server) => await server.loopDelay())))
      .filter((delay): delay is LoopDelay => delay !== undefined)
    clearInterval(rssTimer)
    rssPeak = Math.max(rssPeak, serverRss())

    env.progress.update('collecting results', true)
    const published: PublisherStats = (await publisher.waitFor('done', 30_000)).stats
    const stats: ClientStats[] = await Promise.all(clientWorkers.map(async (worker) => {
      worker.send({ type: 'report' })
      return (await worker.waitFor('stats', 30_000)).stats
    }))

    const latency = new Histogram()
    for (const s of stats) latency.merge(s.latency, s.maxLatencyUs)
    const publishLatency = new Histogram()
    publishLatency.merge(published.latency, published.maxLatencyUs)
    const delivered = stats.reduce((sum, s) => sum + s.unique, 0)
    const lastReceiveUs = Math.max(...stats.map((s) => s.lastReceiveUs))
    const durationS = Math.max(1e-6, (lastReceiveUs - published.firstSendUs) / 1e6)
    const { serverCpu, utilisation, saturated } = usage(roles, before, after, env.cores)
    return {
      kind: 'fanout',
      scenario: scenario.name,
      target,
      round,
      clients: scenario.clients,
      instances: scenario.instances,
      mode: scenario.mode,
      messages: scenario.messages,
      size: scenario.size,
      expected: expectedDeliveries(scenario.clients, published.accepted, scenario.groups),
      delivered,
      lost: Math.max(0, expectedDeliveries(scenario.clients, published.accepted, scenario.groups) - delivered),
      duplicates: stats.reduce((sum, s) => sum + s.duplicates, 0),
      outOfOrder: stats.reduce((sum, s) => sum + s.outOfOrder, 0),
      unexpected: stats.reduce((sum, s) => sum + s.unexpected, 0),
      closed: stats.reduce((sum, s) => sum + s.closed, 0),
      publishFailures: published.failed + (scenario.messages - published.sent),
      durationS,
      deliveriesPerSecond: delivered / durationS,
      messagesPerSecond: published.accepted / Math.max(1e-6, (published.lastAckUs - published.firstSendUs) / 1e6),
      latencyMs: summarise(latency),
      publishLatencyMs: summarise(publishLatency),
      serverCpu,
      cpuPerMillion: perMillion(serverCpu, delivered),
      utilisation,
      saturated,
      serverRssMb: { start: mb(rssStart), peak: mb(rssPeak) },
      connectS,
      ...(delays.length === 0
        ? {}
        : { loopDelayMs: { p99: Math.max(...delays.map((delay) => delay.p99Ms)), max: Math.max(...delays.map((delay) => delay.maxMs)) } })
    }
  } finally {
    clearInterval(rssTimer)
    await stopAll(workers, servers)
  }
}

export async function runIdle (scenario: Scenario, target: Target, round: number, env: RunEnvironment): Promise<IdleResult> {
  const servers: ServerHandle[] = []
  const workers: ClientWorker[] = []
  try {
    forkClients(scenario, env, workers)
    await startServers(target, 1, env, servers)
    const server = servers[0] as ServerHandle
    await sleep(env.settle.idleBeforeMs)
    const roles: Roles = { server: [server.pid], clients: [], publisher: [], redis: [], bench: [] }
    const rssBefore = processRss(server.pid) ?? NaN
    const before = snapshot(roles)
    const connectS = await connectClients(scenario, target, servers, env, workers)
    const after = snapshot(roles)
    env.progress.update('connected; letting the server settle', true)
    await sleep(env.settle.idleAfterMs)
    const rssAfter = processRss(server.pid) ?? NaN
    const cpu = cpuOf(roles.server, before, after)
    return {
      kind: 'idle',
      scenario: scenario.name,
      target,
      round,
      clients: scenario.clients,
      rssBeforeMb: mb(rssBefore),
      rssAfterMb: mb(rssAfter),
      bytesPerConnection: (rssAfter - rssBefore) / scenario.clients,
      connectS,
      connectionsPerSecond: scenario.clients / connectS,
      cpuMsPerConnection: (cpu.user + cpu.system) * 1000 / scenario.clients
    }
  } finally {
    await stopAll(workers, servers)
  }
}

export async function runPublish (scenario: Scenario, target: Target, round: number, env: RunEnvironment): Promise<PublishResult> {
  const servers: ServerHandle[] = []
  const workers: PublisherWorker[] = []
  const redisTime = new CommandTime(env.redisUrl)
  try {
    const publisher = forkPublisher(workers)
    await startServers(target, 1, env, servers)
    const server = servers[0] as ServerHandle
    await publisher.waitFor('ready', 10_000)
    await sleep(env.settle.beforeLoadMs)
    const roles: Roles = { server: [server.pid], clients: [], publisher: [publisher.pid], redis: [env.redisPid], bench: [process.pid] }
    await redisTime.reset()
    const before = snapshot(roles)
    publisher.send({ type: 'run', config: publisherConfig(scenario, servers, scenario.durationMs) })
    const ticker = setInterval(() => env.progress.update('HTTP load'), 250)
    let published: PublisherStats
    try {
      published = (await publisher.waitFor('done', scenario.durationMs + 30_000)).stats
    } finally {
      clearInterval(ticker)
    }
    const after = snapshot(roles)
    const redisCommands = await redisTime.read()
    const latency = new Histogram()
    latency.merge(published.latency, published.maxLatencyUs)
    const durationS = Math.max(1e-6, (published.lastAckUs - published.firstSendUs) / 1e6)
    const { serverCpu, utilisation, saturated } = usage(roles, before, after, env.cores)
    return {
      kind: 'publish',
      scenario: scenario.name,
      target,
      round,
      concurrency: scenario.lanes,
      durationS,
      requests: published.accepted,
      publishFailures: published.failed,
      requestsPerSecond: published.accepted / durationS,
      latencyMs: summarise(latency),
      serverCpu,
      cpuPerMillion: perMillion(serverCpu, published.accepted),
      utilisation,
      saturated,
      redisUsPerMessage: topLevelUsec(redisCommands) / Math.max(1, published.accepted),
      redisCpuUsPerMessage: cpuSeconds(cpuOf(roles.redis, before, after)) * 1e6 / Math.max(1, published.accepted),
      redisCommands
    }
  } finally {
    await redisTime.close()
    await stopAll(workers, servers)
  }
}
