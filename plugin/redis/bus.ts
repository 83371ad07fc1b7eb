import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Bus, BusHealth, BusMessage, BusMessageHandler, HistoryPage, HistoryQuery, PublishResult } from './bus.js'
import { BusRefusedError, BusUnavailableError } from '../errors.js'
import type { BroadcastStats } from '../stats.js'
import { withTimeout } from '../timeout.js'
import { messageHeadLength, type Position } from '../history/sequence.js'
import { PUBLISH_SCRIPT, READ_SCRIPT, runScript, script } from './scripts.js'

export interface RedisBusOptions {
  /** Publishes and runs commands; may belong to the user. */
  publisher: Redis
  /** Whether the plugin created `publisher` and so must quit it on close. */
  ownsPublisher: boolean
  /** Prepended to every Redis name the bus uses. */
  prefix: string
  /** How long `start()` waits for Redis before failing the boot. */
  readyTimeout: number
  /** How long a publish or subscribe may wait for Redis before it fails with 503. */
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

const PUBLISH = script(PUBLISH_SCRIPT)
const READ = script(READ_SCRIPT)

/** Reconnect quickly and often: a lost subscriber loses messages for as long as it is away. */
export function reconnectDelay (attempt: number): number {
  return Math.min(50 * 2 ** attempt, 1000)
}

/**
 * Redis Pub/Sub between instances. Publishing goes through the normal client; receiving goes
 * through a duplicate in subscriber mode, which can run no other command, so the long-lived
 * subscription never sits in front of a request's PUBLISH.
 *
 * The bus keeps its own list of subscribed channels and re-applies it whenever the subscriber
 * connection comes back, and it probes that connection: a link that died without a FIN (a
 * half-open TCP connection, a stalled proxy) would otherwise look healthy while nothing arrives.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis'
  private readonly publisher: Redis
  private subscriber: Redis | undefined
  private readonly ownsPublisher: boolean
  private readonly channelPrefix: string
  private readonly allChannel: string
  private readonly historyPrefix: string
  private readonly idempotencyPrefix: string
  private readonly idempotencyWindow: number
  /** Names this instance in Redis (presence entries); ends every epoch it starts, so two instances starting one in the same microsecond differ. */
  readonly instance = randomBytes(6).toString('hex')
  private readonly readyTimeout: number
  private readonly commandTimeout: number
  private readonly probeInterval: number
  private readonly probeTimeout: number
  private readonly stats: BroadcastStats | undefined
  private readonly log: FastifyBaseLogger
  /** Redis names of the channels this instance listens on, besides the broadcast-to-all one. */
  private readonly subscribed = new Set<string>()
  private closing = false
  /** Set by start(). */
  private onReconnected!: () => void
  private everReady = false
  /** When the subscriber connection was lost; 0 while it is up. */
  private lostAt = 0
  /** When the subscriber's current TCP connection opened, until its handshake completes. */
  private handshakeSince = 0
  private probeTimer: NodeJS.Timeout | undefined
  private probing = false
  private lastProbe: { ok: boolean, at: number, detail: string } | undefined
  /** Publishes in a row that Redis did not confirm in time: the publisher link may be dead. */
  private unconfirmedPublishes = 0

  constructor (options: RedisBusOptions) {
    this.publisher = options.publisher
    this.ownsPublisher = options.ownsPublisher
    this.channelPrefix = `${options.prefix}c:`
    this.allChannel = `${options.prefix}all`
    this.historyPrefix = `${options.prefix}h:`
    this.idempotencyPrefix = `${options.prefix}i:`
    this.idempotencyWindow = options.idempotencyWindow ?? 300000
    this.readyTimeout = options.readyTimeout
    this.commandTimeout = options.commandTimeout ?? 1000
    this.probeInterval = options.probeInterval ?? 30000
    this.probeTimeout = options.probeTimeout ?? 5000
    this.stats = options.stats
    this.log = options.log
    if (this.ownsPublisher) {
      this.publisher.on('error', this.onClientError)
      // A fresh connection starts with a clean record: the one that timed out was torn down.
      this.publisher.on('ready', () => { this.unconfirmedPublishes = 0 })
    }
  }

  async start (onMessage: BusMessageHandler, onReconnected: () => void): Promise<void> {
    this.onReconnected = onReconnected
    const subscriber = this.publisher.duplicate({
      // Subscriptions issued while reconnecting must wait for the connection, not fail.
      enableOfflineQueue: true,
      // The bus re-subscribes from its own list when the connection is back (onSubscriberReady).
      autoResubscribe: false,
      lazyConnect: false,
      maxRetriesPerRequest: null,
      // A SUBSCRIBE or PING in flight when the link drops is sent again, not left hanging
      // (the plugin's publisher turns this off, and a duplicate would inherit that).
      autoResendUnfulfilledCommands: true,
      // A probe's PING must go out at once on this connection, not wait in a pipeline.
      enableAutoPipelining: false,
      retryStrategy: reconnectDelay,
      connectionName: 'fastify-redis-broadcast:subscriber'
    })
    this.subscriber = subscriber
    subscriber.on('error', this.onClientError)
    subscriber.on('connect', () => { this.handshakeSince = Date.now() })
    subscriber.on('ready', () => this.onSubscriberReady(subscriber))
    subscriber.on('close', () => this.onSubscriberLost())
    subscriber.on('messageBuffer', (redisChannel: Buffer, payload: Buffer) => {
      const name = redisChannel.toString('latin1')
      if (name === this.allChannel) onMessage(null, payload)
      else if (name.startsWith(this.channelPrefix)) onMessage(name.slice(this.channelPrefix.length), payload)
    })
    const ready = Promise.all([
      subscriber.subscribe(this.allChannel),
      waitForReady(this.publisher)
    ])
    try {
      await withTimeout(ready, this.readyTimeout, () => new BusUnavailableError(
        `Redis did not become ready within ${this.readyTimeout} ms (publisher ${this.publisher.status}, subscriber ${subscriber.status})`
      ))
    } catch (err) {
      await this.close()
      throw err
    }
    if (this.probeInterval > 0) {
      this.probeTimer = setInterval(() => { void this.probe() }, this.probeInterval)
      this.probeTimer.unref()
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
    const plain = messages.length === 1 && messages[0].history === undefined && messages[0].idempotencyKey === undefined
    // Anything else is one script: offsets, history and idempotency in the same atomic step as
    // the PUBLISH, and a batch in one command, in order.
    const published = plain
      ? this.publisher.publish(this.redisName(messages[0].channel), messages[0].payload)
      : runScript(this.publisher, PUBLISH, [this.instance, ...messages.flatMap((message) => this.publishArgs(message))])
    let reply: unknown
    try {
      reply = await withTimeout(published, this.commandTimeout, () =>
        new BusUnavailableError(`Redis did not confirm the publish within ${this.commandTimeout} ms`))
      this.unconfirmedPublishes = 0
    } catch (err) {
      if (err instanceof BusUnavailableError) this.publishUnconfirmed()
      throw toBusError(err)
    }
    if (plain) return [{ duplicate: false }]
    const results = reply as Array<Buffer | number>
    return messages.map((message, index) => ({
      position: parsePosition(results[2 * index] as Buffer),
      duplicate: results[2 * index + 1] === 1
    }))
  }

  async readHistory (channel: string, { since, limit, reverse = false }: HistoryQuery): Promise<HistoryPage | undefined> {
    const keys = this.historyKeys(channel)
    let reply: unknown
    try {
      reply = await withTimeout(
        runScript(this.publisher, READ, [keys.meta, keys.stream, since ?? '', limit, reverse ? '1' : '0']),
        this.commandTimeout, () => new BusUnavailableError(`Redis did not answer a history read within ${this.commandTimeout} ms`))
    } catch (err) {
      throw toBusError(err)
    }
    const [epoch, offset, entries] = reply as [Buffer | undefined, number, Array<[Buffer, Buffer[]]>]
    if (epoch === undefined) return undefined
    return {
      epoch: epoch.toString('latin1'),
      offset,
      messages: entries.map(([id, fields]) => ({ offset: Number.parseInt(id.toString('latin1'), 10), frame: fields[1] }))
    }
  }

  /** The script's 9 fields for one message. */
  private publishArgs ({ channel, payload, history, idempotencyKey }: BusMessage): Array<string | number> {
    // Only channel messages have history settings (BusMessage says so).
    const keys = history === undefined ? { meta: '', stream: '' } : this.historyKeys(channel as string)
    const head = history === undefined ? 0 : messageHeadLength(channel as string)
    return [
      this.redisName(channel), keys.meta, keys.stream,
      history?.size ?? 0, history?.ttl ?? 0,
      // `|` ends the channel name (which cannot contain one), so no channel and key pair reads as another.
      idempotencyKey === undefined ? '' : `${this.idempotencyPrefix}${channel ?? ''}|${idempotencyKey}`, this.idempotencyWindow,
      payload.slice(0, head), payload.slice(head)
    ]
  }

  private historyKeys (channel: string): { meta: string, stream: string } {
    return { meta: this.historyPrefix + 'meta:' + channel, stream: this.historyPrefix + 'stream:' + channel }
  }

  /**
   * A publish timed out: the link may be half-open, which no status shows. /health reports it,
   * and a publisher the plugin owns is reconnected (its unconfirmed commands are not sent again).
   */
  private publishUnconfirmed (): void {
    this.unconfirmedPublishes++
    this.log.warn({ unconfirmed: this.unconfirmedPublishes }, 'Redis did not confirm a publish in time')
    if (this.ownsPublisher && this.publisher.status === 'ready') this.publisher.stream.destroy()
  }

  async subscribe (channel: string): Promise<void> {
    const subscriber = this.requireSubscriber()
    const name = this.redisName(channel)
    this.subscribed.add(name)
    try {
      await withTimeout(subscriber.subscribe(name), this.commandTimeout, () =>
        new BusUnavailableError(`Redis did not confirm the subscription within ${this.commandTimeout} ms`))
    } catch (err) {
      throw toBusError(err)
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    const name = this.redisName(channel)
    this.subscribed.delete(name)
    // Sockets still closing after the bus has shut down have nothing left to unsubscribe from.
    if (this.subscriber === undefined) return
    await this.subscriber.unsubscribe(name)
  }

  health (): BusHealth {
    const publisher = this.publisher.status
    const subscriber = this.subscriber?.status ?? 'not started'
    const checks: Record<string, string> = { publisher, subscriber }
    if (this.lastProbe !== undefined) checks.probe = this.lastProbe.detail
    if (this.closing) return { state: 'unavailable', reasons: ['the bus is closing'], checks }
    const reasons: string[] = []
    if (publisher !== 'ready') reasons.push(`Redis publisher connection is ${publisher}`)
    else if (this.unconfirmedPublishes > 0) reasons.push(`Redis did not confirm the last ${this.unconfirmedPublishes} publish(es) in time`)
    // A failed probe destroys its connection, but the status changes only when the socket's close
    // event comes, a loop turn later; until the connection is back, the failed probe is the truth.
    const failedProbe = this.lastProbe?.ok === false ? this.lastProbe.detail : undefined
    const subscriberDown = failedProbe !== undefined || subscriber !== 'ready'
    if (failedProbe !== undefined) reasons.push(`Redis subscriber probe failed (${failedProbe}), connection is ${subscriber}`)
    else if (subscriberDown) reasons.push(`Redis subscriber connection is ${subscriber}`)
    if (reasons.length === 0) return { state: 'ok', reasons, checks }
    const nothingWorks = publisher !== 'ready' && subscriberDown
    return { state: nothingWorks ? 'unavailable' : 'degraded', reasons, checks }
  }

  async close (): Promise<void> {
    if (this.closing) return
    this.closing = true
    clearInterval(this.probeTimer)
    const subscriber = this.subscriber
    this.subscriber = undefined
    if (subscriber !== undefined) await quit(subscriber, this.commandTimeout)
    if (this.ownsPublisher) await quit(this.publisher, this.commandTimeout)
  }

  /**
   * One round trip on the subscriber connection. A probe that does not come back in time, or a
   * connection stuck in its handshake, is torn down so ioredis opens a fresh one.
   */
  private async probe (): Promise<void> {
    const subscriber = this.subscriber
    if (subscriber === undefined || this.probing) return
    const started = Date.now()
    if (subscriber.status === 'ready') {
      this.probing = true
      // The connection probed; if it has been replaced meanwhile, its failure is old news.
      const stream = subscriber.stream
      try {
        await withTimeout(subscriber.ping(), this.probeTimeout, () => new Error(`no reply within ${this.probeTimeout} ms`))
        this.lastProbe = { ok: true, at: Date.now(), detail: `ok in ${Date.now() - started} ms` }
      } catch (err) {
        if (subscriber.stream === stream) this.probeFailed(subscriber, (err as Error).message)
      } finally {
        this.probing = false
      }
    } else if (subscriber.status === 'connect' && started - this.handshakeSince > this.probeTimeout) {
      // TCP is up but the handshake never finished: ioredis's connectTimeout covers only the TCP part.
      this.probeFailed(subscriber, `handshake not finished after ${started - this.handshakeSince} ms`)
    }
  }

  private probeFailed (subscriber: Redis, detail: string): void {
    if (this.closing) return
    this.lastProbe = { ok: false, at: Date.now(), detail }
    if (this.stats !== undefined) this.stats.probeFailures++
    this.log.warn({ detail }, 'redis subscriber probe failed: reopening the connection')
    // destroy(), not end(): a half-open link never answers the FIN that end() waits for.
    subscriber.stream.destroy()
  }

  private onSubscriberReady (subscriber: Redis): void {
    if (!this.everReady) {
      this.everReady = true
      this.lostAt = 0
      return
    }
    const downtime = Date.now() - this.lostAt
    this.lostAt = 0
    this.lastProbe = undefined
    if (this.stats !== undefined) this.stats.subscriberReconnects++
    this.log.warn({ channels: this.subscribed.size + 1, downtime },
      'redis subscriber reconnected: re-subscribing; messages published while it was away were not received')
    // One command per channel: a channel Redis now refuses (an ACL changed) must not take the others with it.
    const subscribed = [this.allChannel, ...this.subscribed].map(async (name) => {
      await subscriber.subscribe(name).catch((err: unknown) => {
        this.log.error({ err, channel: name }, 're-subscribing after a reconnect failed: this channel receives nothing here')
      })
    })
    // Once every channel is live again, what was published meanwhile can be read back.
    void Promise.all(subscribed).then(() => { if (!this.closing) this.onReconnected() })
  }

  private onSubscriberLost (): void {
    if (this.closing || this.lostAt !== 0) return
    this.lostAt = Date.now()
    if (this.everReady) this.log.warn('redis subscriber connection lost: reconnecting')
  }

  private redisName (channel: string | null): string {
    return channel === null ? this.allChannel : this.channelPrefix + channel
  }

  private requireSubscriber (): Redis {
    if (this.subscriber === undefined) throw new BusUnavailableError('the Redis bus is not running')
    return this.subscriber
  }

  private readonly onClientError = (err: Error): void => {
    // ioredis reconnects by itself; a log line per failed attempt is enough, and errors
    // while closing are the expected end of the connection.
    if (!this.closing) this.log.warn({ err }, 'redis connection error')
  }
}

export function toBusError (err: unknown): Error {
  if (err instanceof BusUnavailableError) return err
  // Redis answered with an error (an ACL, scripts disabled): retrying will not help.
  if ((err as Error).name === 'ReplyError') return new BusRefusedError((err as Error).message)
  return new BusUnavailableError((err as Error).message)
}

/** "<offset> <epoch>" from the publish script; an empty reply is a message without history. */
function parsePosition (reply: Buffer): Position | undefined {
  if (reply.length === 0) return undefined
  const [offset, epoch] = reply.toString('latin1').split(' ')
  return { offset: Number.parseInt(offset, 10), epoch }
}

async function waitForReady (client: Redis): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve) => client.once('ready', resolve))
}

async function quit (client: Redis, timeout: number): Promise<void> {
  // QUIT lets Redis finish what is in flight; a link that broke or went silent is dropped below.
  if (client.status === 'ready') {
    await Promise.allSettled([withTimeout(client.quit(), timeout, () => new Error('QUIT timed out'))])
  }
  client.disconnect()
}
