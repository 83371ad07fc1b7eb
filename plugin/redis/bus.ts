import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Bus, BusHealth, BusMessage, BusMessageHandler, HistoryPage, HistoryQuery, PublishResult } from '../bus/bus.js'
import { BusUnavailableError, InvalidOptionError } from '../errors.js'
import type { BroadcastStats } from '../stats.js'
import { withTimeout } from '../timeout.js'
import { addressOf, connectionErrorLogger, isCluster, quit, redisCommand, SUBSCRIBER_SETTINGS, toBusError, topologyOf, waitForReady, type RedisClient } from './client.js'
import { ClusterSubscriber } from './cluster-subscriber.js'
import { ShardServers } from './shard-servers.js'
import { readHistory } from './history.js'
import { RedisKeys } from './keys.js'
import { publishMessages, type PublishContext, type PublishOutcome } from './publish.js'
import { notRunning, RedisSubscriber, type Subscriber } from './subscriber.js'

/** The most single messages one shared script call carries. */
const MAX_GATHERED = 256

export interface RedisBusOptions {
  /** Publishes and runs commands; may belong to the user. */
  publisher: RedisClient
  /** Whether the plugin created `publisher` and so must quit it on close. */
  ownsPublisher: boolean
  /** Prepended to every Redis name the bus uses. */
  prefix: string
  /** How long `start()` waits for Redis before failing the boot. */
  readyTimeout: number
  /** How long a publish may wait for Redis before it fails with 503. */
  publishTimeout?: number
  /** How long a subscribe or a history read may wait for Redis before it fails with 503. */
  commandTimeout?: number
  /** How long an idempotency key is remembered, in milliseconds. */
  idempotencyWindow?: number
  /** How often the subscriber connection is probed; 0 turns the probe off. */
  probeInterval?: number
  /** How long a probe may take before the subscriber connection is torn down and reopened. */
  probeTimeout?: number
  stats?: BroadcastStats
  log: FastifyBaseLogger
}

/**
 * Redis Pub/Sub between instances: publishes (with history and idempotency, plugin/redis/publish.ts)
 * and history reads go through the normal client; receiving goes through RedisSubscriber, or on a
 * Redis Cluster through ClusterSubscriber (sharded Pub/Sub, one connection per master).
 */
export class RedisBus implements Bus {
  readonly kind = 'redis'
  readonly keys: RedisKeys
  /** Names this instance in Redis (presence entries, epochs). */
  readonly instance = randomBytes(6).toString('hex')
  private readonly publisher: RedisClient
  private subscriber: Subscriber | undefined
  private readonly options: Required<Omit<RedisBusOptions, 'stats'>> & Pick<RedisBusOptions, 'stats'>
  private closing = false
  private readonly onClientError: (err: Error) => void
  /** How the publisher reaches Redis: set by its options, so fixed for the bus's life. */
  private readonly topology: BusHealth['topology']
  /** Publishes in a row that Redis did not confirm in time: the publisher link may be dead. */
  private unconfirmedPublishes = 0
  /**
   * The replication ID of the server the publisher is connected to, read at each connect: it tells
   * the publish script whether a history was written on this server or taken over in a failover.
   * (Not on a cluster: there ShardServers keeps each master's.)
   */
  private server: Promise<string> | undefined
  /** On a cluster, each master's node and replication IDs, which the publish script checks. */
  private readonly shardServers: ShardServers | undefined
  /** Single messages of this turn that go to Redis together, in one script call, when it ends. */
  private gathered: Array<{ message: BusMessage, settle: (outcome: PublishOutcome) => void }> = []

  constructor (options: RedisBusOptions) {
    this.options = {
      publishTimeout: 1000,
      commandTimeout: 1000,
      idempotencyWindow: 300000,
      probeInterval: 30000,
      probeTimeout: 5000,
      ...options
    }
    this.publisher = options.publisher
    this.topology = topologyOf(this.publisher)
    if (this.topology === 'cluster' && /[{}]/.test(options.prefix)) {
      throw new InvalidOptionError('redisPrefix', `cannot hold { or } on a Redis Cluster, where each channel's names carry its {hash tag} (got ${JSON.stringify(options.prefix)})`)
    }
    this.keys = new RedisKeys(options.prefix, this.topology === 'cluster')
    this.shardServers = isCluster(this.publisher) ? new ShardServers(this.publisher, options.log) : undefined
    // Every client's errors are logged, publisher and subscriber sharing one line a second: a
    // client of the user's (@fastify/redis) would otherwise have ioredis print each attempt.
    this.onClientError = connectionErrorLogger(this.options.log, addressOf(this.publisher), () => this.closing)
    this.publisher.on('error', this.onClientError)
    // One Redis: its replication ID, at every connect (a cluster's masters are ShardServers' part).
    if (this.shardServers === undefined) {
      this.publisher.on('ready', this.readServer)
      if (this.publisher.status === 'ready') this.readServer()
    }
    if (options.ownsPublisher) {
      // A fresh connection starts with a clean record: the one that timed out was torn down.
      this.publisher.on('ready', () => { this.unconfirmedPublishes = 0 })
    }
  }

  async start (onMessage: BusMessageHandler, onReconnected: () => void): Promise<void> {
    const { readyTimeout, commandTimeout, probeInterval, probeTimeout, stats, log } = this.options
    const settings = { keys: this.keys, commandTimeout, probeInterval, probeTimeout, stats, log }
    const { publisher } = this
    const subscriber = isCluster(publisher)
      ? new ClusterSubscriber(publisher, settings, onMessage, onReconnected, this.onClientError)
      : new RedisSubscriber(publisher.duplicate(SUBSCRIBER_SETTINGS), settings, onMessage, onReconnected, this.onClientError)
    this.subscriber = subscriber
    try {
      await withTimeout(Promise.all([subscriber.start(), waitForReady(publisher)]), readyTimeout, () => new BusUnavailableError(
        `Redis at ${addressOf(publisher)} did not become ready within ${readyTimeout} ms (publisher ${publisher.status}, subscriber ${subscriber.health().status})`
      ))
    } catch (err) {
      await this.close()
      throw err
    }
  }

  async publish (channel: string | null, payload: string): Promise<void> {
    await this.publishMany([{ channel, payload }])
  }

  async publishMany (messages: readonly BusMessage[]): Promise<PublishResult[]> {
    // A client's offline queue would hold the messages until Redis is back, or forever: refuse
    // now instead, so a 2xx always means Redis took them.
    if (this.publisher.status !== 'ready') {
      throw new BusUnavailableError(`the Redis publisher connection is ${this.publisher.status}`)
    }
    const [first] = messages
    if (messages.length === 1 && (first.history !== undefined || first.idempotencyKey !== undefined)) {
      try {
        return [await this.gather(first)]
      } catch (err) {
        throw toBusError(err)
      }
    }
    // What was gathered before goes first: messages reach Redis in the order they were published.
    this.sendGathered()
    return await this.confirmed(this.context().then(async (context) => await publishMessages(context, messages)) as Promise<PublishResult[]>)
  }

  /** `published`, or FRB_BUS_UNAVAILABLE when Redis does not confirm it within publishTimeout (or FRB_BUS_REFUSED). */
  private async confirmed<T> (published: Promise<T>): Promise<T> {
    const { publishTimeout } = this.options
    try {
      const results = await withTimeout(published, publishTimeout, () =>
        new BusUnavailableError(`Redis did not confirm the publish within ${publishTimeout} ms`))
      this.unconfirmedPublishes = 0
      return results
    } catch (err) {
      if (err instanceof BusUnavailableError) this.publishUnconfirmed()
      throw toBusError(err)
    }
  }

  private async context (): Promise<PublishContext> {
    const { shardServers } = this
    let serverOf: (slot: number) => string
    if (shardServers !== undefined) {
      serverOf = (slot) => shardServers.of(slot)
    } else {
      // Each 'ready' reads it; ioredis sets the status a tick before it emits 'ready'.
      /* c8 ignore next */
      if (this.server === undefined) this.readServer()
      const server = await (this.server as unknown as Promise<string>)
      serverOf = () => server
    }
    return { client: this.publisher, keys: this.keys, instance: this.instance, idempotencyWindow: this.options.idempotencyWindow, serverOf }
  }

  private readonly readServer = (): void => {
    const server = this.publisher.info('replication').then(
      (text) => /^master_replid:(\w+)/m.exec(text)?.[1] as string,
      (err: Error) => {
        // The connection went away meanwhile: the next 'ready' reads it again.
        /* c8 ignore next */
        if (err.name !== 'ReplyError') throw err
        // An ACL without INFO: histories work, but a failover cannot be told from them.
        this.options.log.warn({ err }, 'Redis refused INFO replication: a failover will not start new epochs (allow +info for the plugin\'s Redis user)')
        return ''
      })
    server.catch(() => {})
    this.server = server
  }

  /**
   * A single message that needs the publish script joins the others of this event-loop turn: one
   * script call at the end of the turn carries them all, each answered on its own. Under load the
   * script's start-up, most of its cost in Redis, is paid once per turn instead of once a message.
   */
  private async gather (message: BusMessage): Promise<PublishResult> {
    return await new Promise((resolve, reject) => {
      const first = this.gathered.push({
        message,
        settle: (outcome) => { if ('error' in outcome) reject(outcome.error); else resolve(outcome) }
      }) === 1
      if (first) setImmediate(this.sendGathered)
      else if (this.gathered.length >= MAX_GATHERED) this.sendGathered()
    })
  }

  private readonly sendGathered = (): void => {
    const gathered = this.gathered
    if (gathered.length === 0) return
    this.gathered = []
    // One timer for the call, not one a message.
    this.confirmed(this.context().then(async (context) => await publishMessages(context, gathered.map(({ message }) => message), true))).then(
      (outcomes) => { gathered.forEach(({ settle }, index) => { settle(outcomes[index] as PublishOutcome) }) },
      (err: Error) => { for (const { settle } of gathered) settle({ error: err }) }
    )
  }

  async readHistory (channel: string, query: HistoryQuery): Promise<HistoryPage | undefined> {
    return await redisCommand(readHistory(this.publisher, this.keys, channel, query), this.options.commandTimeout, 'answer a history read')
  }

  async subscribe (channel: string): Promise<void> {
    if (this.subscriber === undefined) throw notRunning()
    await this.subscriber.subscribe(this.keys.pubsub(channel))
  }

  async unsubscribe (channel: string): Promise<void> {
    // Sockets still closing after the bus has shut down have nothing left to unsubscribe from.
    await this.subscriber?.unsubscribe(this.keys.pubsub(channel))
  }

  health (): BusHealth {
    const publisher = this.publisher.status
    const subscriber = this.subscriber?.health()
    const checks: Record<string, string> = { publisher, subscriber: subscriber?.status ?? 'not started' }
    if (subscriber?.probe !== undefined) checks.probe = subscriber.probe
    const { topology } = this
    if (this.closing) return { state: 'unavailable', reasons: ['the bus is closing'], checks, topology }
    const reasons: string[] = []
    if (publisher !== 'ready') reasons.push(`Redis publisher connection is ${publisher}`)
    else if (this.unconfirmedPublishes > 0) reasons.push(`Redis did not confirm the last ${this.unconfirmedPublishes} publish(es) in time`)
    const subscriberDown = subscriber === undefined ? 'Redis subscriber connection is not started' : subscriber.down
    if (subscriberDown !== undefined) reasons.push(subscriberDown)
    if (reasons.length === 0) return { state: 'ok', reasons, checks, topology }
    const nothingWorks = publisher !== 'ready' && subscriberDown !== undefined
    return { state: nothingWorks ? 'unavailable' : 'degraded', reasons, checks, topology }
  }

  async close (): Promise<void> {
    if (this.closing) return
    this.closing = true
    this.shardServers?.close()
    const subscriber = this.subscriber
    this.subscriber = undefined
    const timeout = this.options.commandTimeout
    try {
      if (subscriber !== undefined) await subscriber.close(timeout)
    } finally {
      if (this.options.ownsPublisher) await quit(this.publisher, timeout)
      // A client of the user's outlives the bus: it keeps no listener of ours.
      else this.publisher.off('error', this.onClientError).off('ready', this.readServer)
    }
  }

  /**
   * A publish timed out: the link may be half-open, which no status shows. /health reports it,
   * and a publisher the plugin owns is reconnected (its unconfirmed commands are not sent again).
   */
  private publishUnconfirmed (): void {
    this.unconfirmedPublishes++
    this.options.log.warn({ unconfirmed: this.unconfirmedPublishes }, 'Redis did not confirm a publish in time')
    // A cluster client has a connection per node, each reconnected by ioredis when it fails.
    if (this.options.ownsPublisher && this.publisher.status === 'ready' && !isCluster(this.publisher)) this.publisher.stream.destroy()
  }
}
