import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { InvalidOptionError } from './errors.js'
import type { RedisBroadcastOptions } from './types.js'
import { isValidPattern } from './security/grants.js'
import { isScraperEntry } from './security/networks.js'

function routePath (path: string, route: string) {
  return Type.Union([Type.String({ pattern: '^/' }), Type.Literal(false)], {
    default: path,
    description: `Path of the ${route} route, or false to leave it out`
  })
}
const ChannelPatterns = (description: string, defaults: string[]) => Type.Array(Type.String({ minLength: 1 }), { default: defaults, description })
const HistoryRule = Type.Object({
  channels: Type.String({ minLength: 1, description: 'A channel name, or a prefix followed by * (`chat.*`, or `*` for every channel)' }),
  size: Type.Integer({ minimum: 0, description: 'Messages kept (0: no history, no offsets)' }),
  ttl: Type.Integer({ minimum: 1, description: 'How long a channel\'s history outlives its last publish, in milliseconds' })
}, { additionalProperties: false })
const RateLimit = Type.Object({
  max: Type.Integer({ minimum: 1, description: 'Requests allowed per window and IP' }),
  timeWindow: Type.Integer({ minimum: 1, description: 'Window length, in milliseconds' })
}, { additionalProperties: false })

/**
 * Every option that is plain data; `redis` and the hooks are functions or clients, checked below.
 * The public type (plugin/types.ts) documents each for users; test/types/options.ts keeps the two in step.
 */
export const RedisBroadcastOptionsSchema = Type.Object({
  redisNamespace: Type.Optional(Type.String({ minLength: 1, description: 'The name of a namespaced @fastify/redis client to use (without the redis option)' })),
  redisPrefix: Type.String({ default: 'frb:', description: 'Prepended to every Redis channel name the plugin uses' }),
  websocketPath: routePath('/ws', 'WebSocket'),
  publishPath: routePath('/publish', 'publish'),
  healthPath: routePath('/health', 'health'),
  historyPath: routePath('/history', 'history (GET <path>/:channel)'),
  presencePath: routePath('/presence', 'presence (GET <path>/:channel)'),
  metricsPath: routePath('/metrics', 'Prometheus metrics'),
  subscriptionsPath: routePath('/subscriptions', 'subscriptions by identity (POST joins, DELETE leaves)'),
  disconnectPath: routePath('/disconnect', 'disconnect by identity'),
  metricsAllow: Type.Array(Type.String(), { default: [], description: 'Networks (CIDR, or single addresses) that may read the metrics without a publish key: the scraper\'s' }),
  openapiPath: routePath('/openapi.json', 'OpenAPI document'),
  asyncapiPath: routePath('/asyncapi.json', 'AsyncAPI document of the WebSocket protocol'),
  publishBodyLimit: Type.Integer({ minimum: 1, default: 65536, description: 'Largest accepted POST /publish body, in bytes' }),
  maxPayload: Type.Integer({ minimum: 1, default: 65536, description: 'Largest accepted client frame, in bytes, after inflation' }),
  redisReadyTimeout: Type.Integer({ minimum: 1, default: 10000, description: 'How long startup waits for Redis, in milliseconds' }),
  publishKeys: Type.Array(Type.String({ minLength: 16 }), { default: [], description: 'Bearer keys accepted by POST /publish' }),
  insecurePublish: Type.Boolean({ default: false, description: 'Without publish keys, accept publishes from any address, not only loopback' }),
  jwt: Type.Optional(Type.Object({
    secret: Type.Optional(Type.String({ minLength: 16, description: 'HS256 shared secret' })),
    publicKey: Type.Optional(Type.String({ description: 'PEM public key (RS256, ES256, …)' })),
    audience: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())], { description: 'Required aud claim' })),
    algorithms: Type.Optional(Type.Array(Type.String(), { description: 'Accepted algorithms' }))
  }, { additionalProperties: false })),
  allowedOrigins: Type.Array(Type.String(), { default: [], description: 'Origins allowed to open a WebSocket; empty means the request\'s own host' }),
  requireOrigin: Type.Boolean({ default: false, description: 'Refuse upgrades that send no Origin header' }),
  compression: Type.Boolean({ default: false, description: 'Offer permessage-deflate to clients' }),
  personalChannels: Type.Boolean({ default: true, description: 'Subscribe each connection with an identity to its personal channel, @<identity>, at connect' }),
  maxChannelsPerConnection: Type.Integer({ minimum: 1, default: 128, description: 'Channels one connection may subscribe to' }),
  maxConnections: Type.Integer({ minimum: 0, default: 0, description: 'Open WebSockets per instance (0: no limit)' }),
  maxConnectionsPerIp: Type.Integer({ minimum: 0, default: 0, description: 'Open WebSockets per client address and instance (0: no limit)' }),
  clientFrameRate: Type.Number({ exclusiveMinimum: 0, default: 200, description: 'Client frames per second per connection, sustained' }),
  clientFrameBurst: Type.Integer({ minimum: 1, default: 200, description: 'Client frames a connection may send at once' }),
  maxBatchSize: Type.Integer({ minimum: 1, default: 1000, description: 'Most messages one POST /publish batch (a JSON array) may carry' }),
  publishTimeout: Type.Integer({ minimum: 1, default: 1000, description: 'Longest wait for Redis to take a publish before it fails with 503, in milliseconds' }),
  redisTimeout: Type.Integer({ minimum: 1, default: 1000, description: 'Longest wait for Redis to confirm a subscribe, answer a history read or take a presence update, in milliseconds' }),
  maxMessageBytes: Type.Integer({ minimum: 64, default: 1048576, description: 'Largest encoded message broadcast() accepts and the bus forwards, in bytes' }),
  slowConsumerBytes: Type.Integer({ minimum: 1, default: 1048576, description: 'Unsent bytes a connection may hold before it is closed with 4008' }),
  slowConsumerTimeout: Type.Integer({ minimum: 1, default: 5000, description: 'How long a connection may keep unsent data without draining before it is closed with 4008, in milliseconds' }),
  heartbeatInterval: Type.Integer({ minimum: 0, default: 30000, description: 'How often every connection is pinged, in milliseconds (0: never)' }),
  heartbeatTimeout: Type.Integer({ minimum: 1, default: 10000, description: 'How long a ping may go unanswered before the connection is terminated, in milliseconds' }),
  probeInterval: Type.Integer({ minimum: 0, default: 30000, description: 'How often the Redis subscriber connection is probed, in milliseconds (0: never)' }),
  probeTimeout: Type.Integer({ minimum: 1, default: 5000, description: 'How long a probe may take before the subscriber connection is torn down and reopened, in milliseconds' }),
  handshakeTimeout: Type.Integer({ minimum: 1, default: 10000, description: 'How long a new connection may take to send its complete first request (a WebSocket\'s upgrade request) before it is cut, in milliseconds' }),
  closeTimeout: Type.Integer({ minimum: 1, default: 5000, description: 'How long a closing connection may take to answer the close handshake before it is terminated, in milliseconds' }),
  clientResumeRate: Type.Number({ exclusiveMinimum: 0, default: 10, description: 'Resumes (subscribes with since) per second per connection, sustained, after a burst of maxChannelsPerConnection; beyond it a resume is answered recovered: false without reading history' }),
  clientByteRate: Type.Integer({ minimum: 1, default: 65536, description: 'Bytes per second a client may send, sustained (bursts up to twice maxPayload)' }),
  history: Type.Object({
    size: Type.Integer({ minimum: 0, default: 100, description: 'Messages kept per channel, at least (Redis trims whole stream nodes); 0: no history, no offsets' }),
    ttl: Type.Integer({ minimum: 1, default: 300000, description: 'How long a channel\'s history outlives its last publish, in milliseconds' }),
    rules: Type.Array(HistoryRule, { default: [], description: 'Per channel pattern settings; the first rule that matches wins' }),
    maxReplay: Type.Integer({ minimum: 0, default: 300, description: 'Most messages a resuming subscriber is sent; beyond it the reply is recovered: false' }),
    maxReadBytes: Type.Integer({ minimum: 1, default: 524288, description: 'Most bytes of messages a resume replays (beyond it: recovered: false) or a GET /history answer holds (beyond it: truncated: true)' })
  }, { default: {}, additionalProperties: false, description: 'Message history: in Redis Streams, or in memory with the in-process bus' }),
  idempotencyWindow: Type.Integer({ minimum: 1, default: 300000, description: 'How long a publish\'s idempotencyKey is remembered, in milliseconds' }),
  presence: Type.Object({
    channels: ChannelPatterns('Channels whose members are tracked (`*`: all; empty: none)', ['*']),
    events: ChannelPatterns('Channels whose subscribers get join and leave frames', []),
    ttl: Type.Integer({ minimum: 1, default: 30000, description: 'How long a crashed instance\'s members stay listed, in milliseconds' }),
    anonymous: Type.Boolean({ default: false, description: 'Also track connections without an identity (no auth configured), each under its connection id' })
  }, { default: {}, additionalProperties: false, description: 'Who is subscribed to a channel, across instances' }),
  rateLimit: Type.Object({
    upgrade: Type.Optional(RateLimit),
    publish: Type.Optional(RateLimit)
  }, { default: {}, additionalProperties: false, description: 'Per-IP rate limits through @fastify/rate-limit; off unless set' })
}, { additionalProperties: false })

/** The data options of the schema with their defaults, and the options that are functions or clients. */
export type ResolvedOptions = Static<typeof RedisBroadcastOptionsSchema> & Pick<RedisBroadcastOptions, 'redis' | 'authorize' | 'canSubscribe'>

const HOOKS = ['authorize', 'canSubscribe'] as const

/**
 * What was given, for an error message, without showing a secret: a string (a key, a secret, or
 * one under a mistyped name) or an object (which may hold one) is described, never shown.
 */
function describe (value: unknown): string {
  if (typeof value === 'string') return `a string of ${value.length} characters`
  if (typeof value === 'object' && value !== null) return Array.isArray(value) ? 'an array' : 'an object'
  return JSON.stringify(value)
}

export function resolveOptions (options: RedisBroadcastOptions): ResolvedOptions {
  const data: Record<string, unknown> = { ...options }
  // Fastify hands its own register options (route prefix, log settings) to the plugin too.
  for (const key of ['redis', 'prefix', 'logLevel', 'logSerializers', ...HOOKS]) delete data[key]
  const { redis } = options
  if (redis !== undefined && typeof redis !== 'string' && (typeof redis !== 'object' || redis === null)) {
    throw new InvalidOptionError('redis', 'must be a redis:// URL, ioredis options or an ioredis client')
  }
  for (const hook of HOOKS) {
    if (options[hook] !== undefined && typeof options[hook] !== 'function') throw new InvalidOptionError(hook, 'must be a function')
  }
  const resolved = Value.Default(RedisBroadcastOptionsSchema, data) as Static<typeof RedisBroadcastOptionsSchema>
  const firstError = Value.Errors(RedisBroadcastOptionsSchema, resolved).First()
  if (firstError !== undefined) {
    const name = firstError.path.slice(1).replaceAll('/', '.')
    throw new InvalidOptionError(name, `is invalid: ${firstError.message} (got ${describe(firstError.value)})`)
  }
  const patterns = [
    ...resolved.presence.channels.map((pattern, index) => [`presence.channels.${index}`, pattern]),
    ...resolved.presence.events.map((pattern, index) => [`presence.events.${index}`, pattern]),
    ...resolved.history.rules.map((rule, index) => [`history.rules.${index}.channels`, rule.channels])
  ]
  resolved.metricsAllow.forEach((entry, index) => {
    if (!isScraperEntry(entry)) throw new InvalidOptionError(`metricsAllow.${index}`, `is not an IP address or CIDR network: ${JSON.stringify(entry)}`)
  })
  for (const [name, pattern] of patterns) {
    if (!isValidPattern(pattern)) {
      throw new InvalidOptionError(name, `is not a channel pattern: ${JSON.stringify(pattern)} (a name, "prefix:*", "prefix.*" or "*")`)
    }
  }
  if (resolved.jwt !== undefined && (resolved.jwt.secret === undefined) === (resolved.jwt.publicKey === undefined)) {
    throw new InvalidOptionError('jwt', 'needs exactly one of secret and publicKey')
  }
  return { ...resolved, redis, authorize: options.authorize, canSubscribe: options.canSubscribe }
}
