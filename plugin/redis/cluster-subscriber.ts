import { Redis, type Cluster } from 'ioredis'
import type { BusMessageHandler } from '../bus/bus.js'
import { BusUnavailableError } from '../errors.js'
import { isMoved, SUBSCRIBER_SETTINGS, waitForReady } from './client.js'
import { notRunning, RedisSubscriber, type Subscriber, type SubscriberHealth, type SubscriberOptions } from './subscriber.js'

/** The node of a channel whose move failed: no master's, so the next slot refresh places it again. */
const UNPLACED = ''

interface Placement { slot: number, node: string, id: number }

/** How often slots are asked for again while a shard connection is down: a failover is noticed this soon. */
const REFRESH_WHILE_DOWN_MS = 200

/**
 * Receiving on a Redis Cluster with sharded Pub/Sub: each channel is SSUBSCRIBEd on the master that
 * owns its slot, through one subscriber connection per such master (a RedisSubscriber each, with
 * its own re-subscribe and probe). Messages never cross the cluster bus, so each shard carries
 * only its own channels' traffic.
 *
 * The cluster client's slot map says who owns what. Whenever it changes (a failover, a slot
 * migration, noticed by the client's periodic refresh, by a MOVED reply or by Redis dropping a
 * subscription), channels move to their new owner, connections left with none are closed, and the
 * bus catches up on what was published while they moved (`onReconnected`).
 */
export class ClusterSubscriber implements Subscriber {
  /** One connection per master that owns subscribed channels, by `host:port`. */
  private readonly shards = new Map<string, RedisSubscriber>()
  /**
   * Each subscribed Pub/Sub name, its slot, the master it is subscribed on, and which placement
   * this is (a move that fails late must not undo a newer one).
   */
  private readonly placed = new Map<string, Placement>()
  private placements = 0
  /**
   * A move failed: the map is read again at every tick (not at once: a refusal would loop) until a
   * rebalance has placed every channel again; a refresh that fails leaves it set.
   */
  private unplaced = false
  private readonly refreshTimer: NodeJS.Timeout
  private closing = false

  constructor (private readonly cluster: Cluster, private readonly options: SubscriberOptions,
    private readonly onMessage: BusMessageHandler, private readonly onReconnected: () => void,
    private readonly onError: (err: Error) => void) {
    cluster.on('refresh', this.rebalance)
    this.refreshTimer = setInterval(() => {
      /* c8 ignore next 4: see moveFailed */
      if (this.unplaced) {
        this.refresh()
        return
      }
      for (const shard of this.shards.values()) {
        if (shard.client.status !== 'ready') {
          this.refresh()
          return
        }
      }
    }, REFRESH_WHILE_DOWN_MS)
    this.refreshTimer.unref()
  }

  async start (): Promise<void> {
    // The slot map comes with the cluster client's first connection.
    await waitForReady(this.cluster)
    await this.subscribe(this.options.keys.all)
  }

  async subscribe (name: string): Promise<void> {
    try {
      await this.place(name)
    } catch (err) {
      if (!isMoved(err as Error)) throw err
      // The slot moved since the map was read (the old master's connection forgot the channel):
      // the map is read again, and the channel placed once more, unless it was left meanwhile.
      await new Promise<void>((resolve) => { this.cluster.refreshSlotsCache(() => { resolve() }) })
      // Left meanwhile (the hub's leave while the map was read): nothing to place.
      /* c8 ignore next */
      if (!this.placed.has(name)) return
      // Still MOVED, the map lags a migration under way: not a refusal, the hub tries again later.
      // (A second MOVED in a row needs a migration timed between two reads of the map.)
      /* c8 ignore next */
      await this.place(name).catch((again: Error) => { throw isMoved(again) ? new BusUnavailableError(`the slot of ${name} is moving between cluster masters`) : again })
    }
  }

  async unsubscribe (name: string): Promise<void> {
    const placed = this.placed.get(name)
    this.placed.delete(name)
    if (placed !== undefined) await this.shards.get(placed.node)?.unsubscribe(name)
  }

  health (): SubscriberHealth {
    const shards = [...this.shards].map(([node, shard]) => ({ node, ...shard.health() }))
    const down = shards.filter((shard) => shard.down !== undefined)
    const notReady = shards.filter((shard) => shard.status !== 'ready')
    const probed = shards.filter((shard) => shard.probe !== undefined)
    return {
      down: down.length === 0 ? undefined : down.map((shard) => `${shard.down as string} (shard ${shard.node})`).join('; '),
      status: notReady.length === 0 ? 'ready' : notReady.map((shard) => `${shard.status} (shard ${shard.node})`).join(', '),
      probe: probed.length === 0 ? undefined : probed.map((shard) => `${shard.node}: ${shard.probe as string}`).join(', ')
    }
  }

  async close (timeout: number): Promise<void> {
    this.closing = true
    clearInterval(this.refreshTimer)
    this.cluster.off('refresh', this.rebalance)
    await Promise.all([...this.shards.values()].map(async (shard) => { await shard.close(timeout) }))
    this.shards.clear()
  }

  private async place (name: string): Promise<void> {
    const slot = this.options.keys.slotOfName(name)
    const node = this.ownerOf(slot, name)
    this.placed.set(name, { slot, node, id: ++this.placements })
    const shard = this.shard(node)
    try {
      await shard.subscribe(name)
    } catch (err) {
      // Off that connection's list: a master lost meanwhile would otherwise keep a connection
      // nothing uses, reconnecting to it until the bus closes. The caller tries again, by the map.
      shard.unsubscribe(name).catch(() => {})
      throw err
    }
  }

  /** The master that owns the slot, by the cluster client's map. */
  private ownerOf (slot: number, name: string): string {
    const node = this.cluster.slots[slot]?.[0]
    // With a slot no master serves, the cluster refuses everything (cluster-require-full-coverage):
    // a state this suite does not build.
    /* c8 ignore next */
    if (node === undefined) throw new BusUnavailableError(`no Redis Cluster master serves the slot of ${name}`)
    return node
  }

  private shard (node: string): RedisSubscriber {
    // A subscribe that outlived the bus (it waited for the cluster, or for a slot refresh) opens nothing.
    if (this.closing) throw notRunning()
    let shard = this.shards.get(node)
    if (shard === undefined) {
      const at = node.lastIndexOf(':')
      // The node's own settings (credentials, TLS) as the cluster client has them, then a subscriber's.
      const client = new Redis({
        ...this.cluster.options.redisOptions,
        host: node.slice(0, at),
        port: Number(node.slice(at + 1)),
        ...SUBSCRIBER_SETTINGS
      })
      shard = new RedisSubscriber(client, { ...this.options, sharded: true, onMoved: this.refresh },
        this.onMessage, this.onReconnected, this.onError)
      shard.startProbing()
      this.shards.set(node, shard)
    }
    return shard
  }

  private readonly refresh = (): void => {
    if (!this.closing) this.cluster.refreshSlotsCache()
  }

  /* c8 ignore next 11: see rebalance */
  private moveFailed (name: string, { slot, node, id }: Placement, err: unknown): void {
    // Left, or placed again since (a leave and a join, a later move): that placement stands.
    if (this.closing || this.placed.get(name)?.id !== id) return
    this.options.log.error({ err, channel: name }, 'moving a subscription to its new cluster master failed: it is tried again, by a fresh slot map')
    // Placed nowhere, and off the new master's list: the next tick's refresh subscribes it wherever
    // the map says then, even on the master it left (a map read from a node that had not heard of
    // a failover yet), whose list no longer holds it.
    this.shards.get(node)?.unsubscribe(name).catch(() => {})
    this.placed.set(name, { slot, node: UNPLACED, id: ++this.placements })
    this.unplaced = true
  }

  /** The slot map was read again: every channel goes to the master that owns it now. */
  private readonly rebalance = (): void => {
    // Called after close only by a 'refresh' already being emitted as the bus closed (emit calls
    // the listeners it had when it began): a moment no test can pick.
    /* c8 ignore next */
    if (this.closing) return
    // Every channel is placed by the map below, the unplaced ones too; a move that fails says so again.
    this.unplaced = false
    const moved: Array<Promise<void>> = []
    for (const [name, { slot, node }] of this.placed) {
      const owner = this.cluster.slots[slot]?.[0]
      if (owner === undefined || owner === node) continue
      const placement = { slot, node: owner, id: ++this.placements }
      this.placed.set(name, placement)
      // The old connection forgets it, so it never subscribes to it again; it may be dead, so not awaited.
      this.shards.get(node)?.unsubscribe(name).catch(() => {})
      // A new master that does not confirm within redisTimeout: a real cluster cannot be made to do that on cue.
      /* c8 ignore next */
      moved.push(this.shard(owner).subscribe(name).catch((err: unknown) => { this.moveFailed(name, placement, err) }))
    }
    for (const [node, shard] of this.shards) {
      if (shard.channels.size > 0) continue
      this.shards.delete(node)
      void shard.close(this.options.commandTimeout)
    }
    if (moved.length === 0) return
    this.options.log.warn({ channels: moved.length }, 'redis cluster slots moved: channels re-subscribed on their new masters')
    // Messages published while a channel moved went to a master it was not subscribed on yet.
    void Promise.all(moved).then(() => { if (!this.closing) this.onReconnected() })
  }
}
