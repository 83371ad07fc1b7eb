import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import type { ResolvedOptions } from '../options.js'
import type { BroadcastStats } from '../stats.js'
import { MemoryPresenceStore, type PresenceStore } from '../presence/store.js'
import { createPublisherClient } from '../redis/client.js'
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
  const { redis } = options
  if (redis instanceof Redis) return redisBus(fastify, options, stats, redis, false)
  if (redis !== undefined) return redisBus(fastify, options, stats, createPublisherClient(redis), true)
  if (fastify.hasDecorator('redis')) return redisBus(fastify, options, stats, (fastify as unknown as { redis: Redis }).redis, false)
  const bus = new MemoryBus(options.idempotencyWindow)
  return { bus, presenceStore: new MemoryPresenceStore(async (channel, frame) => { await bus.publish(channel, frame) }) }
}

function redisBus (fastify: FastifyInstance, options: ResolvedOptions, stats: BroadcastStats, publisher: Redis,
  ownsPublisher: boolean): { bus: Bus, presenceStore: PresenceStore } {
  const bus = new RedisBus({
    publisher,
    ownsPublisher,
    prefix: options.redisPrefix,
    readyTimeout: options.redisReadyTimeout,
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
