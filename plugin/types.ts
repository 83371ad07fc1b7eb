import type { FastifyRequest } from 'fastify'
import type { Cluster, Redis, RedisOptions } from 'ioredis'
import type { RedisClusterConfig } from './redis/client.js'

// The public surface, written for the people who use it: every option with what it does, its unit
// and its default. plugin/options.ts validates the same options at registration, and
// test/types/options.ts proves the two agree.

/** What connect-time authentication says about a connection. */
export interface ConnectionAuth {
  /** Who is connected: handed to `canSubscribe` and kept on the connection. */
  identity: unknown
  /** Channels, or `prefix:*` / `prefix.*` patterns, the connection may subscribe to. */
  channels?: string[]
  /**
   * Channels the connection joins at connect, as the back end decided (the JWT claim `join`, or
   * what `authorize()` returns): no grant is needed for them. Membership that outlives a connection.
   */
  join?: string[]
  /** When the credentials run out (epoch ms): the socket is closed with 4401 unless refreshed. */
  expiresAt?: number
}

/**
 * Runs before a WebSocket upgrade (and an HTTP read of history or presence, and a `refresh`):
 * returns the connection's identity and grants, or a falsy value to refuse it with 403. `jwt` is
 * what the token said, when the `jwt` option is set.
 */
export type Authorize = (request: FastifyRequest, jwt: ConnectionAuth | undefined) =>
ConnectionAuth | null | undefined | false | Promise<ConnectionAuth | null | undefined | false>

/** Resolves true to let `identity` subscribe to (and read) `channel`; replaces the grant check. */
export type CanSubscribe = (identity: unknown, channel: string) => boolean | Promise<boolean>

/** How long a channel's messages are kept, for the channels a pattern names. */
export interface HistoryRule {
  /** A channel name, or a prefix followed by `*` (`chat.*`, or `*` for every channel). */
  channels: string
  /** Messages kept (0: no history, no offsets). */
  size: number
  /** How long the history outlives the channel's last publish, in milliseconds. */
  ttl: number
}

/** A per-IP rate limit, enforced by @fastify/rate-limit. */
export interface RateLimitOptions {
  /** Requests allowed per window and IP. */
  max: number
  /** The window's length, in milliseconds. */
  timeWindow: number
}

export interface RedisBroadcastOptions {
  /**
   * Where Redis is: a `redis://` URL, ioredis options (Sentinel's among them), a Redis Cluster's
   * seed nodes (`{ cluster: [{ host, port }, …], …ioredis cluster options }`), or an ioredis
   * client or Cluster (the plugin never closes a client it did not create). Left out, the plugin uses an `@fastify/redis` client
   * already on the instance, or else the in-process bus (one instance only).
   */
  redis?: string | RedisOptions | RedisClusterConfig | Redis | Cluster
  /** Without `redis`: the name of a namespaced `@fastify/redis` client (`fastify.redis[name]`) to use. */
  redisNamespace?: string
  /** Runs before the upgrade; returns the connection's identity and grants, or refuses it. */
  authorize?: Authorize
  /** Replaces the grant check when subscribing: resolves true to allow `channel`. */
  canSubscribe?: CanSubscribe
  /** Prepended to every Redis key and channel name the plugin uses. @default 'frb:' */
  redisPrefix?: string
  /** Path of the WebSocket route, or false to leave it out. @default '/ws' */
  websocketPath?: string | false
  /** Path of the publish route, or false to leave it out. @default '/publish' */
  publishPath?: string | false
  /** Path of the health route, or false to leave it out. @default '/health' */
  healthPath?: string | false
  /** Path of the history route (GET <path>/:channel), or false to leave it out. @default '/history' */
  historyPath?: string | false
  /**
   * Subscribe each connection with an identity (a JWT `sub`, or the identity `authorize()` returns)
   * to its personal channel, `@<identity>`, at connect. The channel is its owner's alone either way.
   * @default true
   */
  personalChannels?: boolean
  /** Path of POST / DELETE subscriptions by identity (the back end joins or leaves connections), or false. @default '/subscriptions' */
  subscriptionsPath?: string | false
  /** Path of POST disconnect by identity (logout, bans), or false. @default '/disconnect' */
  disconnectPath?: string | false
  /** Path of the Prometheus metrics route, or false to leave it out. @default '/metrics' */
  metricsPath?: string | false
  /**
   * Networks (CIDR such as `10.0.0.0/8`, or single addresses) that may read the metrics without a
   * publish key: the scraper's. Others need what POST /publish needs. @default []
   */
  metricsAllow?: string[]
  /** Path of the OpenAPI document of the HTTP routes, or false to leave it out. @default '/openapi.json' */
  openapiPath?: string | false
  /**
   * Path of the AsyncAPI 3 document of the WebSocket protocol, or false to leave it out (left out
   * too without a WebSocket route). @default '/asyncapi.json'
   */
  asyncapiPath?: string | false
  /** Path of the presence route (GET <path>/:channel), or false to leave it out. @default '/presence' */
  presencePath?: string | false
  /** Largest accepted POST /publish body, in bytes. @default 65536 */
  publishBodyLimit?: number
  /** Largest accepted client frame, in bytes, after inflation. @default 65536 */
  maxPayload?: number
  /** How long startup waits for Redis, in milliseconds. @default 10000 */
  redisReadyTimeout?: number
  /** Bearer keys accepted by POST /publish (16 characters at least); several at once for rotation. @default [] */
  publishKeys?: string[]
  /** Without publish keys, accept publishes from any address, not only loopback. @default false */
  insecurePublish?: boolean
  /** Verify connect tokens (JWT): exactly one of `secret` and `publicKey`. Off by default. */
  jwt?: {
    /** HS256 shared secret, 16 characters at least. */
    secret?: string
    /** PEM public key (RS256, ES256, …). */
    publicKey?: string
    /** The `aud` claim a token must carry. */
    audience?: string | string[]
    /** Accepted algorithms. */
    algorithms?: string[]
  }
  /** Origins allowed to open a WebSocket (`https://app.example.com`, `https://*.example.com`); empty: the request's own host. @default [] */
  allowedOrigins?: string[]
  /** Refuse upgrades that send no Origin header. @default false */
  requireOrigin?: boolean
  /** Offer permessage-deflate to clients. @default false */
  compression?: boolean
  /** Channels one connection may subscribe to. @default 128 */
  maxChannelsPerConnection?: number
  /** Open WebSockets per instance (0: no limit). @default 0 */
  maxConnections?: number
  /** Open WebSockets per client address and instance (0: no limit). @default 0 */
  maxConnectionsPerIp?: number
  /** Client frames per second per connection, sustained. @default 200 */
  clientFrameRate?: number
  /** Client frames a connection may send at once. @default 200 */
  clientFrameBurst?: number
  /** Bytes per second a client may send, sustained (bursts up to twice `maxPayload`). @default 65536 */
  clientByteRate?: number
  /**
   * Resumes (subscribes with `since`) per second per connection, sustained, after a burst of
   * `maxChannelsPerConnection`; beyond it a resume is answered `recovered: false` without reading
   * history. @default 10
   */
  clientResumeRate?: number
  /** Most messages one POST /publish batch (a JSON array) or `broadcastMany()` may carry. @default 1000 */
  maxBatchSize?: number
  /** Longest wait for Redis to take a publish before it fails with 503, in milliseconds. @default 1000 */
  publishTimeout?: number
  /** Longest wait for Redis to confirm a subscribe, answer a history read or take a presence update, in milliseconds. @default 1000 */
  redisTimeout?: number
  /** Largest encoded message `broadcast()` accepts and the bus forwards, in bytes. @default 1048576 */
  maxMessageBytes?: number
  /** Unsent bytes a connection may hold before it is closed with 4008. @default 1048576 */
  slowConsumerBytes?: number
  /** How long a connection may keep unsent data without draining before it is closed with 4008, in milliseconds. @default 5000 */
  slowConsumerTimeout?: number
  /** How often every connection is pinged, in milliseconds (0: never). @default 30000 */
  heartbeatInterval?: number
  /** How long a ping may go unanswered before the connection is terminated, in milliseconds. @default 10000 */
  heartbeatTimeout?: number
  /** How often the Redis subscriber connection is probed, in milliseconds (0: never). @default 30000 */
  probeInterval?: number
  /** How long a probe may take before the subscriber connection is torn down and reopened, in milliseconds. @default 5000 */
  probeTimeout?: number
  /**
   * How long a new connection may take to send its complete first request (a WebSocket's upgrade
   * request) before it is cut, in milliseconds; connections still waiting after a second count
   * against maxConnections. @default 10000
   */
  handshakeTimeout?: number
  /** How long a closing connection may take to answer the close handshake before it is terminated, in milliseconds. @default 5000 */
  closeTimeout?: number
  /** Message history: in Redis Streams, or in memory with the in-process bus. */
  history?: {
    /** Messages kept per channel, at least (Redis trims whole stream nodes); 0: no history, no offsets. @default 100 */
    size?: number
    /** How long a channel's history outlives its last publish, in milliseconds. @default 300000 */
    ttl?: number
    /** Per channel pattern settings; the first rule that matches wins. @default [] */
    rules?: HistoryRule[]
    /** Most messages a resuming subscriber is sent; beyond it the reply is `recovered: false`. @default 300 */
    maxReplay?: number
    /**
     * Most bytes of messages a resume replays (beyond it the reply is `recovered: false`) or a
     * `GET /history` answer holds (beyond it the answer says `truncated: true`). @default 524288
     */
    maxReadBytes?: number
  }
  /** How long a publish's `idempotencyKey` is remembered, in milliseconds. @default 300000 */
  idempotencyWindow?: number
  /** Who is subscribed to a channel, across instances. */
  presence?: {
    /** Channels whose members are tracked (`*`: all; empty: none). @default ['*'] */
    channels?: string[]
    /** Channels whose subscribers get join and leave frames. @default [] */
    events?: string[]
    /** How long a crashed instance's members stay listed, in milliseconds. @default 30000 */
    ttl?: number
    /**
     * Also track connections without an identity (no auth configured), each under its connection
     * id. Off by default: on an open service every anonymous connection would cost Redis work on
     * each of its channels for as long as it stays. @default false
     */
    anonymous?: boolean
  }
  /** Per-IP rate limits through @fastify/rate-limit; off unless set. @default {} */
  rateLimit?: {
    /** Limit on WebSocket upgrades. */
    upgrade?: RateLimitOptions
    /** Limit on POST /publish. */
    publish?: RateLimitOptions
  }
}

export interface BroadcastOptions {
  /** Deliver only to this channel's subscribers; left out, to every connection on every instance. */
  channel?: string
  /**
   * The same key on the same channel within `idempotencyWindow` publishes once: a retry gets the
   * first publish's result, with `duplicate: true`.
   */
  idempotencyKey?: string
  /**
   * Tags for subscription filters (`{ symbol: 'AAPL' }`): at most 16, keys of 1-64 characters of
   * `A-Z a-z 0-9 _ . : -`, string values of at most 256 bytes. Delivered in the frame as `tags`.
   */
  tags?: Record<string, string>
}

export interface BroadcastMessage extends BroadcastOptions {
  data: unknown
}

export interface BroadcastResult {
  /** The message's offset in its channel's history; absent for a channel without history. */
  offset?: number
  /** The history the offset belongs to; absent for a channel without history. */
  epoch?: string
  /** True when the idempotency key was seen before and nothing new was published. */
  duplicate: boolean
}

/** One open WebSocket connection of this instance, as `fastify.broadcastConnections` lists it. */
export interface BroadcastConnection {
  /** Unique across instances; the presence identity of an anonymous client. */
  readonly id: string
  /** What `authorize` or the token gave; undefined without auth. */
  readonly identity: unknown
  /** The channels it is subscribed to. */
  readonly channels: ReadonlySet<string>
  /** The client's address, as the upgrade request saw it (`request.ip`). */
  readonly remoteAddress: string
  /** Closes the connection (close code 1000 unless given) after what is already queued for it. */
  close (code?: number, reason?: string): void
}
