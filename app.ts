import type { FastifyPluginAsync } from 'fastify'
import fastifyRedis from '@fastify/redis'
import type { RedisOptions } from 'ioredis'
import type { RedisClusterConfig } from './plugin/redis/client.js'
import redisBroadcast, { redactingLogger, type RedisBroadcastOptions } from './plugin/index.js'
import { createPublisherClient, quit, whenRedisReady } from './plugin/redis/client.js'
import { readyTimeout } from './plugin/bus/create.js'

/**
 * The service as `fastify start dist/app.js` runs it, configured from the environment
 * (README.md lists every variable). PORT, FASTIFY_ADDRESS and the log level are fastify-cli's own.
 */
const app: FastifyPluginAsync = async (fastify, _options) => {
  const { redis: connection, ...options } = optionsFromEnv(process.env)
  if (connection !== undefined) {
    // As a user's service would: @fastify/redis holds the connection (fastify.redis, for routes of
    // one's own too), made with the settings the plugin needs, and the plugin uses it. It is ready
    // before @fastify/redis sees it, which would otherwise wait in silence for Fastify's time-out.
    // From the environment: a URL, Sentinel's options or a cluster's seed nodes (never a client).
    const client = createPublisherClient(connection as string | RedisOptions | RedisClusterConfig)
    try {
      await whenRedisReady(client, readyTimeout(10_000, fastify.initialConfig.pluginTimeout), fastify.log)
    } catch (err) {
      client.disconnect()
      throw err
    }
    // Closed by us, not by @fastify/redis: its QUIT fails on a client with no offline queue while
    // Redis is away, and the close would fail with it. Added before the plugin, this hook runs
    // after the plugin's own (the presence leaves go out first).
    fastify.addHook('onClose', async () => { await quit(client, 1000) })
    await fastify.register(fastifyRedis, { client })
  }
  await fastify.register(redisBroadcast, options)
}

/**
 * Server options, which `fastify start --options` applies: tokens in query strings are kept out
 * of every log line (a browser's `?token=`, on any path, a 404 included).
 */
export const options = { logger: redactingLogger }

export function optionsFromEnv (env: NodeJS.ProcessEnv): RedisBroadcastOptions {
  const options: RedisBroadcastOptions = {}
  const text = (name: string): string | undefined => env[name] === undefined || env[name] === '' ? undefined : env[name]
  const list = (name: string): string[] | undefined => text(name)?.split(',').map((item) => item.trim()).filter((item) => item !== '')
  const integer = (name: string): number | undefined => {
    const value = text(name)
    if (value === undefined) return undefined
    if (!/^\d+$/.test(value)) throw new Error(`${name} must be a whole number, got ${JSON.stringify(value)}`)
    return Number(value)
  }

  options.redis = text('REDIS_URL')
  const sentinels = list('REDIS_SENTINELS')
  const clusterNodes = list('REDIS_CLUSTER_NODES')
  const topologies = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'].filter((name) => text(name) !== undefined)
  if (topologies.length > 1) throw new Error(`set one of REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES, not ${topologies.join(' and ')}`)
  if (clusterNodes !== undefined) {
    const password = text('REDIS_PASSWORD')
    const cluster: RedisClusterConfig = { cluster: clusterNodes.map((address) => hostAndPort('REDIS_CLUSTER_NODES', address)) }
    if (password !== undefined) cluster.redisOptions = { password }
    options.redis = cluster
  }
  if (sentinels !== undefined) {
    const name = text('REDIS_SENTINEL_MASTER')
    if (name === undefined) throw new Error('REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the name of the master the sentinels monitor')
    const sentinel: RedisOptions = { sentinels: sentinels.map((address) => hostAndPort('REDIS_SENTINELS', address)), name }
    const password = text('REDIS_PASSWORD')
    const sentinelPassword = text('REDIS_SENTINEL_PASSWORD')
    if (password !== undefined) sentinel.password = password
    if (sentinelPassword !== undefined) sentinel.sentinelPassword = sentinelPassword
    options.redis = sentinel
  }
  options.publishKeys = list('PUBLISH_KEY')
  options.insecurePublish = text('INSECURE_PUBLISH') === 'true' ? true : undefined
  const secret = text('JWT_SECRET')
  const publicKey = text('JWT_PUBLIC_KEY')?.replaceAll('\\n', '\n')
  if (secret !== undefined || publicKey !== undefined) {
    options.jwt = { secret, publicKey, audience: text('JWT_AUDIENCE') }
  }
  options.allowedOrigins = list('ALLOWED_ORIGINS')
  options.requireOrigin = text('REQUIRE_ORIGIN') === 'true' ? true : undefined
  options.personalChannels = text('PERSONAL_CHANNELS') === 'false' ? false : undefined
  options.maxPayload = integer('MAX_PAYLOAD')
  options.maxChannelsPerConnection = integer('MAX_CHANNELS_PER_CONNECTION')
  options.maxConnections = integer('MAX_CONNECTIONS')
  options.maxConnectionsPerIp = integer('MAX_CONNECTIONS_PER_IP')
  options.clientFrameRate = integer('CLIENT_FRAME_RATE')
  options.clientFrameBurst = integer('CLIENT_FRAME_BURST')
  options.clientByteRate = integer('CLIENT_BYTE_RATE')
  options.clientResumeRate = integer('CLIENT_RESUME_RATE')
  options.publishBodyLimit = integer('PUBLISH_BODY_LIMIT')
  options.maxMessageBytes = integer('MAX_MESSAGE_BYTES')
  options.maxBatchSize = integer('MAX_BATCH_SIZE')
  options.publishTimeout = integer('PUBLISH_TIMEOUT')
  options.redisTimeout = integer('REDIS_TIMEOUT')
  options.slowConsumerBytes = integer('SLOW_CONSUMER_BYTES')
  options.slowConsumerTimeout = integer('SLOW_CONSUMER_TIMEOUT')
  options.heartbeatInterval = integer('HEARTBEAT_INTERVAL')
  options.heartbeatTimeout = integer('HEARTBEAT_TIMEOUT')
  options.probeInterval = integer('PROBE_INTERVAL')
  options.probeTimeout = integer('PROBE_TIMEOUT')
  options.closeTimeout = integer('CLOSE_TIMEOUT')
  options.handshakeTimeout = integer('HANDSHAKE_TIMEOUT')
  options.history = { size: integer('HISTORY_SIZE'), ttl: integer('HISTORY_TTL'), maxReplay: integer('MAX_REPLAY'), maxReadBytes: integer('MAX_HISTORY_BYTES') }
  options.idempotencyWindow = integer('IDEMPOTENCY_WINDOW')
  // An empty variable means "unset", so `-` says "no channel".
  const patterns = (name: string): string[] | undefined => text(name) === '-' ? [] : list(name)
  options.presence = {
    channels: patterns('PRESENCE_CHANNELS'),
    events: patterns('PRESENCE_EVENTS'),
    ttl: integer('PRESENCE_TTL'),
    anonymous: text('PRESENCE_ANONYMOUS') === 'true' ? true : undefined
  }
  const upgrades = integer('UPGRADE_RATE_LIMIT')
  const publishes = integer('PUBLISH_RATE_LIMIT')
  options.rateLimit = {
    upgrade: upgrades === undefined ? undefined : { max: upgrades, timeWindow: 60_000 },
    publish: publishes === undefined ? undefined : { max: publishes, timeWindow: 60_000 }
  }
  // Unset variables leave the plugin's defaults in place.
  for (const key of Object.keys(options) as Array<keyof RedisBroadcastOptions>) {
    if (options[key] === undefined) delete options[key]
  }
  if (options.jwt !== undefined) {
    for (const key of ['secret', 'publicKey', 'audience'] as const) if (options.jwt[key] === undefined) delete options.jwt[key]
  }
  for (const group of [options.history, options.presence] as Array<Record<string, unknown>>) {
    for (const key of Object.keys(group)) if (group[key] === undefined) delete group[key]
  }
  if (options.rateLimit !== undefined) {
    for (const key of ['upgrade', 'publish'] as const) if (options.rateLimit[key] === undefined) delete options.rateLimit[key]
  }
  return options
}

/** `host:port` or `[v6]:port`, from a list in variable `variable`. */
function hostAndPort (variable: string, address: string): { host: string, port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address)
  const port = Number(match?.[3])
  if (match === null || port < 1 || port > 65535) throw new Error(`${variable} takes host:port entries, got ${JSON.stringify(address)}`)
  return { host: match[1] ?? match[2] as string, port }
}

export default app
