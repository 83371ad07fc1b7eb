import { InvalidOptionError } from '../errors.js'
import type { FastifyInstance } from 'fastify'
import type { ResolvedOptions } from '../options.js'
import type { BroadcastStats } from '../stats.js'
import { MemoryPresenceStore, type PresenceStore } from '../presence/store.js'
import { createPublisherClient, type RedisClient } from '../redis/client.js'
import { RedisBus } from '../redis/bus.js'
import { RedisPresenceStore } from '../redis/presence-store.js'
import type { Bus } from './bus.js'
import { MemoryBus } from './memory.js'

/**
 * The transport the options ask for: Redis from the `redis` option (a client of the user's, or
 * one the plugin makes and closes), else an @fastify/redis client on the instance, else the
 * in-process bus. Presence is kept wherever the bus is.
 */
export function createBus (fastify: FastifyInstance, options: ResolvedOptions, stats: BroadcastStats): { bus: Bus, presenceStore: PresenceStore } {
  const { redis, redisNamespace } = options
  if (isRedisClient(redis)) return redisBus(fastify, options, stats, redis, false)
  if (redis !== undefined) return redisBus(fastify, options, stats, createPublisherClient(redis), true)
  if (fastify.hasDecorator('redis')) {
    const registered = (fastify as unknown as { redis: RedisClient & Record<string, RedisClient | undefined> }).redis
    const client = redisNamespace === undefined ? registered : registered[redisNamespace]
    if (!isRedisClient(client)) throw new InvalidOptionError('redisNamespace', `names no @fastify/redis client (got ${JSON.stringify(redisNamespace)})`)
    return redisBus(fastify, options, stats, client, false)
  }
  if (redisNamespace !== undefined) throw new InvalidOptionError('redisNamespace', 'needs @fastify/redis registered before the plugin')
  const bus = new MemoryBus(options.idempotencyWindow)
  return { bus, presenceStore: new MemoryPresenceStore(async (channel, frame) => { await bus.publish(channel, frame) }) }
}

/**
 * Whether `value` is a Redis client rather than options: told by its shape, so a client of
 * another ioredis major (or a compatible library) is used as it is, never spread as options into
 * a new connection to some default address the user did not name.
 */
export function isRedisClient (value: unknown): value is RedisClient {
  const client = value as Partial<Record<'duplicate' | 'publish' | 'evalsha' | 'on', unknown>> & { status?: unknown } | null | undefined
  return typeof client === 'object' && client !== null && typeof client.duplicate === 'function' &&
    typeof client.publish === 'function' && typeof client.evalsha === 'function' && typeof client.on === 'function' &&
    typeof client.status === 'string'
}

/** How long start-up waits for Redis: the option, within Fastify's pluginTimeout (0: none). */
export function readyTimeout (option: number, pluginTimeout: number | undefined): number {
  if (pluginTimeout === undefined || pluginTimeout === 0) return option
  return Math.max(1, Math.min(option, pluginTimeout - 1000))
}

function redisBus (fastify: FastifyInstance, options: ResolvedOptions, stats: BroadcastStats, publisher: RedisClient,
  ownsPublisher: boolean): { bus: Bus, presenceStore: PresenceStore } {
  const bus = new RedisBus({
    publisher,
    ownsPublisher,
    prefix: options.redisPrefix,
    // Fastify gives an onReady hook pluginTimeout at most: fail with our own message before its.
    readyTimeout: readyTimeout(options.redisReadyTimeout, fastify.initialConfig.pluginTimeout),
    publishTimeout: options.publishTimeout,
    commandTimeout: options.redisTimeout,
    idempotencyWindow: options.idempotencyWindow,
    probeInterval: options.probeInterval,
    probeTimeout: options.probeTimeout,
    stats,
    log: fastify.log
  })
  const presenceStore = new RedisPresenceStore({
    client: publisher,
    keys: bus.keys,
    instance: bus.instance,
    ttl: options.presence.ttl,
    commandTimeout: options.redisTimeout
  })
  return { bus, presenceStore }
}
