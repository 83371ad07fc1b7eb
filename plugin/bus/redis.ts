import type { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Bus, BusHealth, BusMessageHandler } from './bus.js'
import { BusUnavailableError } from '../errors.js'

export interface RedisBusOptions {
  /** Publishes and runs commands; may belong to the user. */
  publisher: Redis
  /** Whether the plugin created `publisher` and so must quit it on close. */
  ownsPublisher: boolean
  /** Prepended to every Redis name the bus uses. */
  prefix: string
  /** How long `start()` waits for Redis before failing the boot. */
  readyTimeout: number
  log: FastifyBaseLogger
}

/**
 * Redis Pub/Sub between instances. Publishing goes through the normal client; receiving goes
 * through a duplicate in subscriber mode, which can run no other command, so the long-lived
 * subscription never sits in front of a request's PUBLISH.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis'
  private readonly publisher: Redis
  private subscriber: Redis | undefined
  private readonly ownsPublisher: boolean
  private readonly channelPrefix: string
  private readonly allChannel: string
  private readonly readyTimeout: number
  private readonly log: FastifyBaseLogger
  private closing = false

  constructor (options: RedisBusOptions) {
    this.publisher = options.publisher
    this.ownsPublisher = options.ownsPublisher
    this.channelPrefix = `${options.prefix}c:`
    this.allChannel = `${options.prefix}all`
    this.readyTimeout = options.readyTimeout
    this.log = options.log
    if (this.ownsPublisher) this.publisher.on('error', this.onClientError)
  }

  async start (onMessage: BusMessageHandler): Promise<void> {
    const subscriber = this.publisher.duplicate({
      // Subscriptions issued while reconnecting must wait for the connection, not fail.
      enableOfflineQueue: true,
      autoResubscribe: true,
      lazyConnect: false,
      maxRetriesPerRequest: null,
      connectionName: 'fastify-redis-broadcast:subscriber'
    })
    this.subscriber = subscriber
    subscriber.on('error', this.onClientError)
    subscriber.on('messageBuffer', (redisChannel: Buffer, payload: Buffer) => {
      const name = redisChannel.toString('latin1')
      if (name === this.allChannel) onMessage(null, payload)
      else if (name.startsWith(this.channelPrefix)) onMessage(name.slice(this.channelPrefix.length), payload)
    })
    const ready = Promise.all([
      subscriber.subscribe(this.allChannel),
      waitForReady(this.publisher)
    ])
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => reject(new BusUnavailableError(
        `Redis did not become ready within ${this.readyTimeout} ms (publisher ${this.publisher.status}, subscriber ${subscriber.status})`
      )), this.readyTimeout)
    })
    try {
      await Promise.race([ready, timeout])
    } catch (err) {
      ready.catch(() => {})
      await this.close()
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  async publish (channel: string | null, payload: string): Promise<void> {
    try {
      await this.publisher.publish(this.redisName(channel), payload)
    } catch (err) {
      throw new BusUnavailableError((err as Error).message)
    }
  }

  async subscribe (channel: string): Promise<void> {
    const subscriber = this.requireSubscriber()
    try {
      await subscriber.subscribe(this.redisName(channel))
    } catch (err) {
      throw new BusUnavailableError((err as Error).message)
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    // Sockets still closing after the bus has shut down have nothing left to unsubscribe from.
    if (this.subscriber === undefined) return
    await this.subscriber.unsubscribe(this.redisName(channel))
  }

  health (): BusHealth {
    if (this.closing) return { ready: false, reason: 'the bus is closing' }
    if (this.publisher.status !== 'ready') return { ready: false, reason: `Redis publisher connection is ${this.publisher.status}` }
    const subscriberStatus = this.subscriber?.status ?? 'not started'
    if (subscriberStatus !== 'ready') return { ready: false, reason: `Redis subscriber connection is ${subscriberStatus}` }
    return { ready: true }
  }

  async close (): Promise<void> {
    if (this.closing) return
    this.closing = true
    const subscriber = this.subscriber
    this.subscriber = undefined
    if (subscriber !== undefined) await quit(subscriber)
    if (this.ownsPublisher) await quit(this.publisher)
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

async function waitForReady (client: Redis): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve) => client.once('ready', resolve))
}

async function quit (client: Redis): Promise<void> {
  // QUIT lets Redis finish what is in flight; a connection that breaks meanwhile is dropped below.
  if (client.status === 'ready') await Promise.allSettled([client.quit()])
  client.disconnect()
}
