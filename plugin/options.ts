import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { Redis, RedisOptions } from 'ioredis'
import { InvalidOptionError } from './errors.js'

const RoutePath = Type.Union([Type.String({ pattern: '^/' }), Type.Literal(false)])

/** Every option but `redis`, which may be a live client and so has no JSON schema. */
export const RedisBroadcastOptionsSchema = Type.Object({
  redisPrefix: Type.String({ default: 'frb:', description: 'Prepended to every Redis channel name the plugin uses' }),
  websocketPath: Type.Union([RoutePath], { default: '/ws', description: 'Path of the WebSocket route, or false to leave it out' }),
  publishPath: Type.Union([RoutePath], { default: '/publish', description: 'Path of the publish route, or false to leave it out' }),
  healthPath: Type.Union([RoutePath], { default: '/health', description: 'Path of the health route, or false to leave it out' }),
  publishBodyLimit: Type.Integer({ minimum: 1, default: 65536, description: 'Largest accepted POST /publish body, in bytes' }),
  maxPayload: Type.Integer({ minimum: 1, default: 65536, description: 'Largest accepted client frame, in bytes (when the plugin registers @fastify/websocket)' }),
  redisReadyTimeout: Type.Integer({ minimum: 1, default: 10000, description: 'How long startup waits for Redis, in milliseconds' })
}, { additionalProperties: false })

export type ResolvedOptions = Static<typeof RedisBroadcastOptionsSchema> & {
  redis: string | RedisOptions | Redis | undefined
}

export type RedisBroadcastOptions = Partial<Static<typeof RedisBroadcastOptionsSchema>> & {
  /**
   * Where Redis is: a `redis://` URL, ioredis options, or an ioredis client (the plugin never
   * closes a client it did not create). Left out, the plugin uses an `@fastify/redis` client
   * already on the instance, or else the in-process bus.
   */
  redis?: string | RedisOptions | Redis
}

export function resolveOptions (options: RedisBroadcastOptions): ResolvedOptions {
  // Fastify hands its own register options (route prefix, log settings) to the plugin too.
  const rest: Record<string, unknown> = { ...options }
  for (const key of ['redis', 'prefix', 'logLevel', 'logSerializers']) delete rest[key]
  const { redis } = options
  if (redis !== undefined && typeof redis !== 'string' && (typeof redis !== 'object' || redis === null)) {
    throw new InvalidOptionError('redis', 'must be a redis:// URL, ioredis options or an ioredis client')
  }
  const resolved = Value.Default(RedisBroadcastOptionsSchema, rest)
  const firstError = Value.Errors(RedisBroadcastOptionsSchema, resolved).First()
  if (firstError !== undefined) {
    const name = firstError.path.slice(1)
    throw new InvalidOptionError(name, `is invalid: ${firstError.message} (got ${JSON.stringify(firstError.value)})`)
  }
  return { ...(resolved as Static<typeof RedisBroadcastOptionsSchema>), redis }
}
