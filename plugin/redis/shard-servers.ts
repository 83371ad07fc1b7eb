import type { Cluster, Redis } from 'ioredis'

/**
 * What each cluster master is, for the publish script: its node ID and its replication ID, read
 * once per connection instead of by the script on every call (INFO replication cost the script
 * about 20 µs a call on a master with a replica).
 *
 * The script is handed `@<node id> <replication id>` for the master the cluster client's slot map
 * names, and checks the node ID (CLUSTER MYID, well under a microsecond) before it trusts the
 * replication ID: a call redirected to another node (a failover, a migration) reads its own. An
 * entry lives only as long as the connection that read it, so a restarted node is read again.
 */
export class ShardServers {
  private readonly known = new Map<string, string>()
  private readonly listeners = new Map<Redis, { ready: () => void, close: () => void }>()

  constructor (private readonly cluster: Cluster) {
    cluster.on('+node', this.watch).on('-node', this.unwatch)
    for (const node of cluster.nodes('all')) this.watch(node)
  }

  /** What the publish script is told of the server that owns `slot`: `@<id> <replid>`, or '?' to read it itself. */
  of (slot: number): string {
    return this.known.get(this.cluster.slots[slot]?.[0] as string) ?? '?'
  }

  close (): void {
    this.cluster.off('+node', this.watch).off('-node', this.unwatch)
    for (const node of [...this.listeners.keys()]) this.unwatch(node)
  }

  /** A node left the cluster client's pool: its connection is closed, and its entry goes with it. */
  private readonly unwatch = (node: Redis): void => {
    const listeners = this.listeners.get(node)
    if (listeners === undefined) return
    this.listeners.delete(node)
    node.off('ready', listeners.ready).off('close', listeners.close)
    listeners.close()
  }

  private readonly watch = (node: Redis): void => {
    // ioredis adds a node once (and '-node' comes before it is added again).
    /* c8 ignore next */
    if (this.listeners.has(node)) return
    const key = `${String(node.options.host)}:${String(node.options.port)}`
    const ready = (): void => {
      Promise.all([node.call('CLUSTER', 'MYID'), node.info('replication')]).then(([id, info]) => {
        const server = /^master_replid:(\w+)/m.exec(info)?.[1] as string
        // Read on a connection that has gone meanwhile, it may describe a server that has gone too
        // (a restart between the two, which no test can time).
        /* c8 ignore next */
        if (node.status === 'ready') this.known.set(key, `@${String(id)} ${server}`)
      }, () => {})
    }
    const close = (): void => { this.known.delete(key) }
    this.listeners.set(node, { ready, close })
    node.on('ready', ready).on('close', close)
    if (node.status === 'ready') ready()
  }
}
