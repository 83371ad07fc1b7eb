import type { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { BusMessageHandler } from '../bus/bus.js'
import { BusUnavailableError } from '../errors.js'
import type { BroadcastStats } from '../stats.js'
import { withTimeout } from '../timeout.js'
import { isMoved, quit, redisCommand } from './client.js'
import type { RedisKeys } from './keys.js'

/** What the bus needs of its receiving side: one connection (RedisSubscriber), or one per cluster shard (ClusterSubscriber). */
export interface Subscriber {
  /** Subscribes to the broadcast-to-all channel and starts probing. */
  start: () => Promise<void>
  /** Subscribes to a Pub/Sub name; resolves once Redis confirms it. */
  subscribe: (name: string) => Promise<void>
  unsubscribe: (name: string) => Promise<void>
  /** What is wrong with the connections, if anything, and their state for operators. */
  health: () => SubscriberHealth
  close: (timeout: number) => Promise<void>
}

export interface SubscriberHealth { down: string | undefined, status: string, probe: string | undefined }

export interface SubscriberOptions {
  keys: RedisKeys
  /** How long a SUBSCRIBE may wait for Redis before it fails with 503. */
  commandTimeout: number
  /** How often the connection is probed; 0 turns the probe off. */
  probeInterval: number
  /** How long a probe may take before the connection is torn down and reopened. */
  probeTimeout: number
  stats: BroadcastStats | undefined
  log: FastifyBaseLogger
  /** Sharded Pub/Sub (SSUBSCRIBE, on one cluster shard) instead of the classic kind. */
  sharded?: boolean
  /** Redis said a channel's slot is served elsewhere now (MOVED, or an unasked SUNSUBSCRIBE). */
  onMoved?: () => void
}

/**
 * A subscriber connection's life: a connection in subscriber mode (a duplicate of the publisher,
 * or one to a cluster shard), which can run no other command, so the long-lived subscription
 * never sits in front of a request's PUBLISH.
 *
 * It keeps its own list of subscribed channels and re-applies it whenever the connection comes
 * back, and it probes the connection: a link that died without a FIN (a half-open TCP connection,
 * a stalled proxy) would otherwise look healthy while nothing arrives.
 */
export class RedisSubscriber implements Subscriber {
  /** Pub/Sub names of the channels this connection listens on. */
  private readonly subscribed = new Set<string>()
  private closing = false
  private everReady = false
  /** When the connection was lost; 0 while it is up. */
  private lostAt = 0
  /** When the current TCP connection opened, until its handshake completes. */
  private handshakeSince = 0
  private probeTimer: NodeJS.Timeout | undefined
  /**
   * The subscribes waiting for Redis, each by the function that fails it: close() fails them at
   * once. One queued while the connection reconnects would otherwise wait out its whole timeout
   * (ioredis settles nothing queued on a client closed while reconnecting), so a cluster shard
   * closed because its master was lost answers it at once, and the hub tries again on the new one.
   */
  private readonly waiting = new Set<(err: Error) => void>()
  private probing = false
  private lastProbe: { ok: boolean, detail: string } | undefined

  /** `onReconnected`: the connection is back and every channel is subscribed again. */
  /** `client`: a connection of its own, in subscriber settings (SUBSCRIBER_SETTINGS), which it closes. */
  constructor (readonly client: Redis, private readonly options: SubscriberOptions, onMessage: BusMessageHandler,
    private readonly onReconnected: () => void, onError: (err: Error) => void) {
    client.on('error', onError)
    client.on('connect', () => { this.handshakeSince = Date.now() })
    client.on('ready', () => this.onReady())
    client.on('close', () => this.onLost())
    client.on(options.sharded === true ? 'smessageBuffer' : 'messageBuffer', (pubsub: Buffer, payload: Buffer) => {
      // Only channels subscribed to come here, and each is the plugin's own.
      onMessage(options.keys.channelOf(pubsub.toString('latin1')), payload)
    })
    if (options.onMoved !== undefined) client.on('moved', options.onMoved)
  }

  /** The Pub/Sub names this connection listens on (or will, once it is back). */
  get channels (): ReadonlySet<string> {
    return this.subscribed
  }

  async start (): Promise<void> {
    // Bounded by the bus's readyTimeout, whose message says what was not ready.
    const { all } = this.options.keys
    this.subscribed.add(all)
    await this.client.subscribe(all)
    this.startProbing()
  }

  startProbing (): void {
    if (this.options.probeInterval > 0) {
      this.probeTimer = setInterval(() => { void this.probe() }, this.options.probeInterval)
      this.probeTimer.unref()
    }
  }

  async subscribe (name: string): Promise<void> {
    this.subscribed.add(name)
    const command = this.options.sharded === true ? this.client.ssubscribe(name) : this.client.subscribe(name)
    let fail!: (err: Error) => void
    const closed = new Promise<never>((resolve, reject) => { fail = reject })
    this.waiting.add(fail)
    try {
      await redisCommand(Promise.race([command, closed]), this.options.commandTimeout, 'confirm the subscription')
    } finally {
      this.waiting.delete(fail)
    }
  }

  async unsubscribe (name: string): Promise<void> {
    this.subscribed.delete(name)
    await (this.options.sharded === true ? this.client.sunsubscribe(name) : this.client.unsubscribe(name))
  }

  health (): SubscriberHealth {
    const status = this.client.status
    // A failed probe destroys its connection, but the status changes only when the socket's close
    // event comes, a loop turn later; until the connection is back, the failed probe is the truth.
    const failedProbe = this.lastProbe?.ok === false ? this.lastProbe.detail : undefined
    let down: string | undefined
    if (failedProbe !== undefined) down = `Redis subscriber probe failed (${failedProbe}), connection is ${status}`
    else if (status !== 'ready') down = `Redis subscriber connection is ${status}`
    return { down, status, probe: this.lastProbe?.detail }
  }

  async close (timeout: number): Promise<void> {
    this.closing = true
    for (const fail of this.waiting) fail(new BusUnavailableError('the Redis subscriber connection closed before it confirmed the subscription'))
    clearInterval(this.probeTimer)
    await quit(this.client, timeout)
  }

  /**
   * One round trip on the connection. A probe that does not come back in time, or a connection
   * stuck in its handshake, is torn down so ioredis opens a fresh one.
   */
  private async probe (): Promise<void> {
    if (this.closing || this.probing) return
    const { client } = this
    const { probeTimeout } = this.options
    const started = Date.now()
    if (client.status === 'ready') {
      this.probing = true
      // The connection probed; if it has been replaced meanwhile, its failure is old news.
      const stream = client.stream
      try {
        await withTimeout(client.ping(), probeTimeout, () => new Error(`no reply within ${probeTimeout} ms`))
        this.lastProbe = { ok: true, detail: `ok in ${Date.now() - started} ms` }
      } catch (err) {
        if (client.stream === stream) this.probeFailed((err as Error).message)
      } finally {
        this.probing = false
      }
    } else if (client.status === 'connect' && started - this.handshakeSince > probeTimeout) {
      // TCP is up but the handshake never finished: ioredis's connectTimeout covers only the TCP part.
      this.probeFailed(`handshake not finished after ${started - this.handshakeSince} ms`)
    }
  }

  private probeFailed (detail: string): void {
    if (this.closing) return
    this.lastProbe = { ok: false, detail }
    if (this.options.stats !== undefined) this.options.stats.probeFailures++
    this.options.log.warn({ detail }, 'redis subscriber probe failed: reopening the connection')
    // destroy(), not end(): a half-open link never answers the FIN that end() waits for.
    this.client.stream.destroy()
  }

  private onReady (): void {
    if (!this.everReady) {
      this.everReady = true
      this.lostAt = 0
      return
    }
    const { stats, log, sharded, onMoved } = this.options
    const downtime = Date.now() - this.lostAt
    this.lostAt = 0
    this.lastProbe = undefined
    if (stats !== undefined) stats.subscriberReconnects++
    log.warn({ channels: this.subscribed.size, downtime, redis: `${String(this.client.options.host)}:${String(this.client.options.port)}` },
      'redis subscriber reconnected: re-subscribing; messages published while it was away were not received')
    // One command per channel: a channel Redis now refuses (an ACL changed) must not take the others with it.
    const subscribed = [...this.subscribed].map(async (name) => {
      await (sharded === true ? this.client.ssubscribe(name) : this.client.subscribe(name)).catch((err: Error) => {
        // A shard that is a replica now: the cluster's new map sends the channel to its new owner.
        // (A restart racing the slot refresh, which no test can order: the refresh moves the
        // channels first, and their connection is closed before it comes back.)
        /* c8 ignore next 4 */
        if (isMoved(err) && onMoved !== undefined) {
          onMoved()
          return
        }
        log.error({ err, channel: name }, 're-subscribing after a reconnect failed: this channel receives nothing here')
      })
    })
    // Once every channel is live again, what was published meanwhile can be read back.
    void Promise.all(subscribed).then(() => { if (!this.closing) this.onReconnected() })
  }

  private onLost (): void {
    if (this.closing || this.lostAt !== 0) return
    this.lostAt = Date.now()
    if (this.everReady) this.options.log.warn('redis subscriber connection lost: reconnecting')
  }
}

/** Thrown by a bus whose subscriber is not running. */
export function notRunning (): Error {
  return new BusUnavailableError('the Redis bus is not running')
}
