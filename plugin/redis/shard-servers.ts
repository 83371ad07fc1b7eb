import type { Cluster, Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

/**
 * What each cluster master is, for the publish script: its node ID and its replication ID, read
 * once per connection instead of by the script on every call (INFO replication cost the script
 * about 20 µs a call on a master with a replica).
 *
 * The script is handed `@<node id> <replication id>` for the master the cluster client's slot map
 * names, and checks the node ID (CLUSTER MYID, well under a microsecond) before it trusts the
 * replication ID: a call redirected to another node (a failover, a migration) reads its own. An
 * entry lives only as long as the connection that read it (a restarted node is read again), and is
 * read again whenever its node becomes a slot owner: a master demoted and promoted again keeps its
 * connections but not its replication ID.
 */
export class ShardServers {
  private readonly known = new Map<string, string>()
  private readonly listeners = new Map<Redis, { key: string, ready: () => void, close: () => void }>()
  /** The slot owners of the last map read, by `host:port`. */
  private owners = new Set<string>()

  /** Whether a refusal of INFO or CLUSTER MYID has been logged (once is enough). */
  private warned = false

  constructor (private readonly cluster: Cluster, private readonly log?: FastifyBaseLogger) {
    cluster.on('+node', this.watch).on('-node', this.unwatch).on('refresh', this.recheck)
    for (const node of cluster.nodes('all')) this.watch(node)
  }

  /** What the publish script is told of the server that owns `slot`: `@<id> <replid>`, or '?' to read it itself. */
  of (slot: number): string {
    return this.known.get(this.cluster.slots[slot]?.[0] as string) ?? '?'
  }

  close (): void {
    this.cluster.off('+node', this.watch).off('-node', this.unwatch).off('refresh', this.recheck)
    for (const node of [...this.listeners.keys()]) this.unwatch(node)
  }

  /** A node left the cluster client's pool: its connection is closed, and its entry goes with it. */
  private readonly unwatch = (node: Redis): void => {
    const listeners = this.listeners.get(node)
    // Every node of the pool was watched ('+node', or the constructor's list).
    /* c8 ignore next */
    if (listeners === undefined) return
    this.listeners.delete(node)
    node.off('ready', listeners.ready).off('close', listeners.close)
    listeners.close()
  }

  /** The slot map was read: a node that owns slots now and did not before is read again; one that owns none is forgotten. */
  private readonly recheck = (): void => {
    const owners = new Set<string>()
    // forEach skips the slots no master serves (holes in the map).
    this.cluster.slots.forEach((nodes) => { owners.add(nodes[0]) })
    for (const key of this.known.keys()) if (!owners.has(key)) this.known.delete(key)
    for (const { key, ready } of this.listeners.values()) {
      if (owners.has(key) && !this.owners.has(key)) ready()
    }
    this.owners = owners
  }

  private readonly watch = (node: Redis): void => {
    // ioredis adds a node once (and '-node' comes before it is added again).
    /* c8 ignore next */
    if (this.listeners.has(node)) return
    const key = `${String(node.options.host)}:${String(node.options.port)}`
    const ready = (): void => {
      this.known.delete(key)
      Promise.all([node.call('CLUSTER', 'MYID'), node.info('replication')]).then(([id, info]) => {
        const server = /^master_replid:(\w+)/m.exec(info)?.[1]
        // Only a master's, and only on a connection still up: one that has gone meanwhile may
        // describe a server that has gone too (a restart between the two, which no test can time).
        /* c8 ignore next */
        if (node.status === 'ready' && /^role:master/m.test(info) && server !== undefined) this.known.set(key, `@${String(id)} ${server}`)
      }, (err: Error) => {
        // The connection went away meanwhile: its next 'ready' reads again.
        if (err.name !== 'ReplyError' || this.warned) return
        // An ACL without INFO or CLUSTER: the script cannot read them either (it gets ''), so a
        // failover would not start new epochs.
        this.warned = true
        this.log?.warn({ err }, 'Redis refused INFO replication or CLUSTER MYID: a failover will not start new epochs (allow +info and +cluster|myid for the plugin\'s Redis user)')
      })
    }
    const close = (): void => { this.known.delete(key) }
    this.listeners.set(node, { key, ready, close })
    node.on('ready', ready).on('close', close)
    if (node.status === 'ready') ready()
  }
}
