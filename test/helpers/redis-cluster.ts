import { execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { freePort, killRedisServer, spawnRedisServer } from './redis-server.js'

/** How long a node may stay silent before the others take it for failing (`cluster-node-timeout`). */
export const CLUSTER_NODE_TIMEOUT_MS = 1000

/** One of the six nodes; `pid` is undefined while it is killed. */
export interface ClusterNode { port: number, pid: number | undefined }

/** Six private redis-server processes in cluster mode (three masters, a replica each) on free loopback ports. */
export interface RedisClusterTopology {
  /** The six nodes as seeds, `{ host: '127.0.0.1', port }`, for ioredis' `new Cluster(nodes)`. */
  readonly nodes: Array<{ host: string, port: number }>
  /** The same seeds as a REDIS_CLUSTER_NODES value: "127.0.0.1:p1,127.0.0.1:p2,...". */
  readonly nodesEnv: string
  /** Each node's port and current pid (undefined while killed), in `nodes` order. */
  processes (): ClusterNode[]
  /**
   * The masters that own slots now, as a live master sees them (CLUSTER NODES; a replica's view when no master
   * answers), ordered by their first slot. A killed master keeps its slots here until its replica takes them.
   */
  masters (): Promise<Array<{ port: number, slots: Array<[number, number]> }>>
  /** The port of the master that owns `slot` now. */
  masterOfSlot (slot: number): Promise<number>
  /** SIGKILL of the node on `port`. */
  kill (port: number): Promise<void>
  /**
   * Starts a killed node again (same port, same nodes.conf, so it rejoins: as a replica of the promoted one
   * after a failover) and waits until the cluster has settled: every live node says cluster_state:ok with the
   * 16384 slots covered, all agree on who owns them and who replicates whom, and every replica's link is up.
   */
  restart (port: number): Promise<void>
  /**
   * Waits until every live node says cluster_state:ok with the 16384 slots covered, none gives `killedPort`
   * a slot, and all agree on the slots' owners (10 s unless told).
   */
  waitForFailover (killedPort: number, timeoutMs?: number): Promise<void>
  /** A plain (non-cluster) ioredis client to the node on `port`, closed by `stop()`. */
  client (port: number): Redis
  /** SIGKILL of every node and removal of the temporary directory; safe to call twice. */
  stop (): Promise<void>
}

const HOST = '127.0.0.1'
const SLOTS = 16384
const CREATE_TIMEOUT_MS = 20_000
const SETTLE_TIMEOUT_MS = 20_000

interface NodeLine {
  id: string
  port: number
  flags: string[]
  masterId: string | undefined
  link: string
  slots: Array<[number, number]>
}

/** One node's view: its CLUSTER INFO fields, CLUSTER NODES lines and INFO replication fields. */
interface View {
  port: number
  info: Record<string, string>
  nodes: NodeLine[]
  replication: Record<string, string>
}

function fields (text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(':')
    if (at > 0 && !line.startsWith('#')) out[line.slice(0, at)] = line.slice(at + 1).trim()
  }
  return out
}

/** Parses CLUSTER NODES: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...` */
function parseClusterNodes (text: string): NodeLine[] {
  return text.split(/\r?\n/).filter((line) => line.trim() !== '').map((line) => {
    const [id = '', address = '', flags = '', master = '-', , , , link = '', ...slots] = line.trim().split(' ')
    const port = Number(address.slice(address.lastIndexOf(':', address.indexOf('@')) + 1, address.indexOf('@')))
    return {
      id,
      port,
      flags: flags.split(','),
      masterId: master === '-' ? undefined : master,
      link,
      // Ranges `a-b` and single slots `a`; `[slot->-id]` / `[slot-<-id]` (migrating, importing) are left out.
      slots: slots.filter((s) => !s.startsWith('[')).map((s): [number, number] => {
        const [from, to = from] = s.split('-').map(Number) as [number, number?]
        return [from, to as number]
      })
    }
  })
}

const ownsSlots = (node: NodeLine): boolean => node.flags.includes('master') && node.slots.length > 0

/** Who owns which slots and who replicates whom, by port: equal strings mean two views agree. */
function layout (view: View, ports: Set<number>): string {
  const byId = new Map(view.nodes.map((node) => [node.id, node.port]))
  return view.nodes.filter((node) => ports.has(node.port)).map((node) => {
    const role = ownsSlots(node)
      ? `master ${node.slots.map(([a, b]) => `${a}-${b}`).join(',')}`
      : node.masterId !== undefined ? `replica of ${byId.get(node.masterId) ?? node.masterId}` : 'master without slots'
    return `${node.port}: ${role}`
  }).sort().join('; ')
}

function stripColours (text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, '').trim()
}

async function distinctFreePorts (count: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) ports.add(await freePort())
  return [...ports]
}

export async function startRedisCluster (): Promise<RedisClusterTopology> {
  const dir = mkdtempSync(join(tmpdir(), 'frb-cluster-'))
  // A node's cluster bus listens on port + 10000 unless told: free ports come from the ephemeral range,
  // where port + 10000 may be taken or past 65535, so each node gets a second free port for its bus.
  const allPorts = await distinctFreePorts(12)
  const ports = allPorts.slice(0, 6)
  const busPort = new Map(ports.map((port, i) => [port, allPorts[6 + i] as number]))
  const processes = new Map<number, ChildProcess>()
  const clients: Redis[] = []
  let stopped = false

  const args = (port: number): string[] => [
    '--cluster-enabled', 'yes',
    '--cluster-port', String(busPort.get(port)),
    '--cluster-config-file', join(dir, `nodes-${port}.conf`),
    '--cluster-node-timeout', String(CLUSTER_NODE_TIMEOUT_MS),
    // A replica may always stand for election, however long since it last heard from its master.
    '--cluster-replica-validity-factor', '0',
    '--cluster-allow-reads-when-down', 'no',
    // A replica's first full sync starts at once, not after the default 5 s wait for other replicas.
    '--repl-diskless-sync-delay', '0',
    '--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--dir', dir
  ]

  const alive = (): number[] => ports.filter((port) => {
    const child = processes.get(port)
    return child !== undefined && child.exitCode === null && child.signalCode === null
  })

  async function killOne (port: number): Promise<void> {
    const child = processes.get(port)
    processes.delete(port)
    await killRedisServer(child)
  }

  async function stop (): Promise<void> {
    stopped = true
    for (const client of clients.splice(0)) client.disconnect()
    await Promise.all([...processes.keys()].map(killOne))
    rmSync(dir, { recursive: true, force: true })
  }

  async function view (port: number): Promise<View> {
    const probe = new Redis({ port, host: HOST, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 2000 })
    probe.on('error', () => {})
    try {
      await probe.connect()
      const [info, nodes, replication] = await Promise.all([
        probe.call('CLUSTER', 'INFO') as Promise<string>,
        probe.call('CLUSTER', 'NODES') as Promise<string>,
        probe.info('replication')
      ])
      return { port, info: fields(info), nodes: parseClusterNodes(nodes), replication: fields(replication) }
    } finally {
      probe.disconnect()
    }
  }

  /**
   * Polls every live node until `check` finds nothing wrong with their views (it returns what is wrong, or
   * undefined); throws `what` with the last complaint after `timeoutMs`.
   */
  async function settle (what: string, timeoutMs: number, check: (views: View[], live: Set<number>) => string | undefined): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let problem = 'no answer yet'
    for (;;) {
      if (stopped) throw new Error(`${what}: the cluster was stopped`)
      const live = new Set(alive())
      try {
        const views = await Promise.all([...live].map(view))
        const found = check(views, live)
        if (found === undefined) return
        problem = found
      } catch (err) {
        problem = `a node did not answer: ${(err as Error).message}`
      }
      if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs / 1000} s (last seen: ${problem})`)
      await sleep(50)
    }
  }

  /** What keeps the live nodes from being a settled cluster, or undefined. */
  function unsettled (views: View[], live: Set<number>): string | undefined {
    for (const { port, info } of views) {
      if (info.cluster_state !== 'ok') return `${port} says cluster_state:${info.cluster_state}`
      if (info.cluster_slots_ok !== String(SLOTS)) return `${port} says cluster_slots_ok:${info.cluster_slots_ok}`
    }
    for (const { port, nodes } of views) {
      for (const node of nodes) {
        if (!live.has(node.port)) continue
        if (node.flags.some((flag) => ['fail', 'fail?', 'handshake', 'noaddr'].includes(flag))) return `${port} sees ${node.port} as ${node.flags.join(',')}`
        if (!node.flags.includes('myself') && node.link !== 'connected') return `${port} is not connected to ${node.port}`
      }
    }
    const layouts = new Set(views.map((v) => layout(v, live)))
    if (layouts.size > 1) return `the nodes disagree: ${[...layouts].join(' | ')}`
    for (const { port, replication } of views) {
      if (replication.role === 'slave' && replication.master_link_status !== 'up') return `${port}'s link to its master is ${replication.master_link_status}`
    }
    return undefined
  }

  async function create (): Promise<void> {
    const started = await Promise.allSettled(ports.map(async (port) => {
      processes.set(port, await spawnRedisServer(port, args(port)))
    }))
    const failure = started.find((result) => result.status === 'rejected')
    if (failure !== undefined) throw (failure as PromiseRejectedResult).reason
    await new Promise<void>((resolve, reject) => {
      execFile('redis-cli', [
        '--cluster', 'create', ...ports.map((port) => `${HOST}:${port}`), '--cluster-replicas', '1', '--cluster-yes'
      ], { timeout: CREATE_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err === null) return resolve()
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new Error('redis-cli was not found on PATH. The cluster tests need Redis 7 or newer: ' +
            'install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS).'))
        }
        const how = err.killed ? `did not finish within ${CREATE_TIMEOUT_MS / 1000} s` : `failed (${err.message.split('\n')[0]})`
        reject(new Error(`redis-cli --cluster create ${how}:\n${stripColours(stdout + stderr).slice(-3000)}`))
      })
    })
    // redis-cli returns once the nodes agree on the slots; the replicas attach (and sync) just after.
    await settle('the new cluster did not settle (3 masters with a synced replica each)', SETTLE_TIMEOUT_MS, (views, live) => {
      const problem = unsettled(views, live)
      if (problem !== undefined) return problem
      const nodes = views[0]?.nodes ?? []
      const masters = nodes.filter(ownsSlots)
      if (nodes.length !== 6 || masters.length !== 3) return `${nodes.length} nodes, ${masters.length} of them masters with slots`
      for (const master of masters) {
        const replicas = nodes.filter((node) => node.masterId === master.id)
        if (replicas.length !== 1) return `${master.port} has ${replicas.length} replicas`
      }
      return undefined
    })
  }

  try {
    await create()
  } catch (err) {
    await stop()
    throw err
  }

  async function masters (): Promise<Array<{ port: number, slots: Array<[number, number]> }>> {
    // A master's view is asked first: CLUSTER SETSLOT ... NODE sent to the masters (a slot migrated by
    // hand) reaches the replicas' views only with the next gossip, a few hundred ms later.
    let nodes: NodeLine[] | undefined
    let lastError: unknown = new Error('no node is running')
    for (const port of alive()) {
      try {
        const answer = (await view(port)).nodes
        nodes ??= answer
        if (answer.some((node) => node.flags.includes('myself') && ownsSlots(node))) {
          nodes = answer
          break
        }
      } catch (err) {
        lastError = err
      }
    }
    if (nodes === undefined) throw new Error(`no cluster node answered CLUSTER NODES: ${(lastError as Error).message}`)
    return nodes.filter(ownsSlots)
      .map((node) => ({ port: node.port, slots: [...node.slots].sort((a, b) => a[0] - b[0]) }))
      .sort((a, b) => (a.slots[0]?.[0] ?? 0) - (b.slots[0]?.[0] ?? 0))
  }

  const known = (port: number): void => {
    if (!ports.includes(port)) throw new Error(`${port} is not a node of this cluster (${ports.join(', ')})`)
  }

  return {
    nodes: ports.map((port) => ({ host: HOST, port })),
    nodesEnv: ports.map((port) => `${HOST}:${port}`).join(','),
    processes () {
      return ports.map((port) => {
        const child = alive().includes(port) ? processes.get(port) : undefined
        return { port, pid: child?.pid }
      })
    },
    masters,
    async masterOfSlot (slot) {
      if (!Number.isInteger(slot) || slot < 0 || slot >= SLOTS) throw new RangeError(`slot ${slot} is not in 0..${SLOTS - 1}`)
      const owner = (await masters()).find((master) => master.slots.some(([from, to]) => from <= slot && slot <= to))
      if (owner === undefined) throw new Error(`slot ${slot} has no master`)
      return owner.port
    },
    async kill (port) {
      known(port)
      await killOne(port)
    },
    async restart (port) {
      known(port)
      if (stopped) throw new Error('the cluster was stopped')
      if (alive().includes(port)) throw new Error(`the node on ${port} is running: kill it first`)
      processes.set(port, await spawnRedisServer(port, args(port)))
      await settle(`the cluster did not settle after ${port} was restarted`, SETTLE_TIMEOUT_MS, unsettled)
    },
    async waitForFailover (killedPort, timeoutMs = 10_000) {
      known(killedPort)
      if (alive().includes(killedPort)) throw new Error(`the node on ${killedPort} is running: kill it first`)
      await settle(`the slots of ${killedPort} did not fail over`, timeoutMs, (views) => {
        for (const { port, info, nodes } of views) {
          if (info.cluster_state !== 'ok') return `${port} says cluster_state:${info.cluster_state}`
          if (info.cluster_slots_ok !== String(SLOTS)) return `${port} says cluster_slots_ok:${info.cluster_slots_ok}`
          if (nodes.some((node) => node.port === killedPort && ownsSlots(node))) return `${port} still gives ${killedPort} slots`
        }
        const owners = new Set(views.map((v) => v.nodes.filter(ownsSlots).map((n) => `${n.port} ${n.slots.join(',')}`).sort().join('; ')))
        if (owners.size > 1) return `the nodes disagree on the slots' owners: ${[...owners].join(' | ')}`
        return undefined
      })
    },
    client (port) {
      known(port)
      const client = new Redis({ port, host: HOST, maxRetriesPerRequest: 1 })
      client.on('error', () => {})
      clients.push(client)
      return client
    },
    stop
  }
}
