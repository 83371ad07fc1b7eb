import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import { BusRefusedError, BusUnavailableError } from '../errors.js'
import { settleWithin, withTimeout } from '../timeout.js'

// The ioredis settings of the plugin's own connections, and what every Redis module shares.

/** A connection to one Redis server (or the master Sentinel names), or to a Redis Cluster. */
export type RedisClient = Redis | Cluster

/** Where a Redis Cluster is: seed nodes, and ioredis's cluster options (`redisOptions` apply to every node). */
export interface RedisClusterConfig extends ClusterOptions {
  cluster: ClusterNode[]
}

/** Reconnect quickly and often: a lost subscriber loses messages for as long as it is away. */
export function reconnectDelay (attempt: number): number {
  return Math.min(50 * 2 ** attempt, 1000)
}

const SCRIPT_COMMANDS = ['evalsha', 'eval']

const PUBLISHER_SETTINGS: RedisOptions = {
  // Fail a publish at once while Redis is away instead of queueing it for later:
  // the caller gets a 503 rather than a 202 for a message that may never be sent.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  // A PUBLISH in flight when the link broke was answered 503: never send it again later.
  autoResendUnfulfilledCommands: false,
  // Concurrent commands share one write...
  enableAutoPipelining: true,
  // ...but the publish script, which the bus already gathers into one call a turn, skips the
  // auto-pipeline's wrapping (a quarter less of this process's CPU per call, measured).
  autoPipeliningIgnoredCommands: SCRIPT_COMMANDS,
  retryStrategy: reconnectDelay,
  connectionName: 'fastify-redis-broadcast:publisher'
}

/** The subscriber is a duplicate of the publisher (same server, same credentials) with these settings. */
export const SUBSCRIBER_SETTINGS: RedisOptions = {
  // Subscriptions issued while reconnecting must wait for the connection, not fail.
  enableOfflineQueue: true,
  // The subscriber re-subscribes from its own list when the connection is back.
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
}

/** With Sentinel: follow the master through a failover. The user's own settings win. */
const SENTINEL_SETTINGS: RedisOptions = {
  // Each connection also listens for the sentinels' +switch-master, so an old master cut off by a
  // partition (which Sentinel cannot tell to drop its clients) is left as soon as one is elected.
  failoverDetector: true,
  reconnectOnError: reconnectWhenReadonly
}

/**
 * A master demoted to a replica answers writes with READONLY: reconnect, through the sentinels,
 * to the new master (1), without sending the write again (its caller was answered 503).
 */
export function reconnectWhenReadonly (err: Error): 1 | false {
  return err.message.startsWith('READONLY') ? 1 : false
}

/**
 * A cluster publisher: no offline queue while the cluster is unreachable, and a slot map refreshed
 * every second so publishes and subscriptions find a promoted replica without waiting for a MOVED.
 * A command is never kept for later: ioredis would otherwise hold one through CLUSTERDOWN or a
 * lost connection (up to 16 tries 100 ms apart) and send it after its caller was answered 503.
 * A migrating slot's TRYAGAIN is retried within 300 ms, well inside publishTimeout (1 s).
 */
const CLUSTER_PUBLISHER_SETTINGS: ClusterOptions = {
  enableOfflineQueue: false,
  // Scripts included, unlike on one Redis. A node's connection is opened by the first command sent
  // to it, and without an offline queue ioredis 6 refuses, with 'Connection is closed.', every
  // other command that reaches the node before it is ready (cluster/index.js, tryConnection:
  // only 'ready' and 'wait' pass). Two scripts to one cold master in the same turn (two channels'
  // presence updates) met that. The auto-pipeline sends one batch per node at a time, the next only
  // after the first came back, by which time the node is ready. (An offline queue, or a retry of
  // that error, would send a command after its caller was answered 503: not an option.)
  enableAutoPipelining: true,
  slotsRefreshInterval: 1000,
  clusterRetryStrategy: reconnectDelay,
  retryDelayOnFailover: 0,
  retryDelayOnClusterDown: 0,
  retryDelayOnTryAgain: 50,
  maxRedirections: 6
}

/** Each cluster node's connection, within the cluster publisher (which replaces a lost one at its next slot refresh). */
const CLUSTER_NODE_SETTINGS: RedisOptions = {
  maxRetriesPerRequest: 1,
  autoResendUnfulfilledCommands: false,
  connectionName: 'fastify-redis-broadcast:publisher'
}

/**
 * A client with the settings the plugin needs of a publisher (no offline queue, quick reconnects):
 * the one it makes from a URL, from ioredis options (Sentinel's among them) or from cluster seed
 * nodes, and the one to hand to @fastify/redis.
 */
export function createPublisherClient (redis: RedisClusterConfig): Cluster
export function createPublisherClient (redis: string | RedisOptions): Redis
export function createPublisherClient (redis: string | RedisOptions | RedisClusterConfig): RedisClient
export function createPublisherClient (redis: string | RedisOptions | RedisClusterConfig): RedisClient {
  if (typeof redis === 'string') return new Redis(redis, PUBLISHER_SETTINGS)
  if (isClusterConfig(redis)) {
    const { cluster: nodes, redisOptions, ...options } = redis
    return new Cluster(nodes, { ...CLUSTER_PUBLISHER_SETTINGS, ...options, redisOptions: { ...redisOptions, ...CLUSTER_NODE_SETTINGS } })
  }
  const sentinel = isSentinel(redis) ? SENTINEL_SETTINGS : {}
  return new Redis({ ...sentinel, ...redis, ...PUBLISHER_SETTINGS })
}

export function isClusterConfig (redis: RedisOptions | RedisClusterConfig): redis is RedisClusterConfig {
  return Array.isArray((redis as Partial<RedisClusterConfig>).cluster)
}

/** Whether the client is a Redis Cluster client (ioredis's, or one shaped like it). */
export function isCluster (client: RedisClient): client is Cluster {
  return client instanceof Cluster || (client as { isCluster?: unknown }).isCluster === true
}

/** How the client reaches Redis: one server, the master a set of sentinels names, or a cluster. */
export function topologyOf (client: RedisClient): 'standalone' | 'sentinel' | 'cluster' {
  if (isCluster(client)) return 'cluster'
  return isSentinel(client.options) ? 'sentinel' : 'standalone'
}

function isSentinel ({ sentinels }: RedisOptions): boolean {
  return Array.isArray(sentinels) && sentinels.length > 0
}

/** Whether Redis answered that the slot is served by another cluster node (also once wrapped by toBusError). */
export function isMoved (err: Error): boolean {
  return /(?:^|: )MOVED \d+ /.test(err.message)
}

/** A failure of a Redis command, as the catalogue names it. */
export function toBusError (err: unknown): Error {
  if (err instanceof BusUnavailableError) return err
  // Redis answered with an error (an ACL, scripts disabled): retrying will not help.
  if ((err as Error).name === 'ReplyError') return new BusRefusedError((err as Error).message)
  return new BusUnavailableError((err as Error).message)
}

/** Runs `command`; a failure or no answer within `timeout` ms becomes FRB_BUS_UNAVAILABLE (or FRB_BUS_REFUSED). */
export async function redisCommand<T> (command: Promise<T>, timeout: number, what: string): Promise<T> {
  try {
    return await withTimeout(command, timeout, () => new BusUnavailableError(`Redis did not ${what} within ${timeout} ms`))
  } catch (err) {
    throw toBusError(err)
  }
}

export async function waitForReady (client: RedisClient): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve) => client.once('ready', resolve))
}

/** Where a client connects, for messages: `host:port`, the master's name and its sentinels, or a cluster's seed nodes. */
export function addressOf (client: RedisClient): string {
  if (isCluster(client)) {
    // ioredis keeps the seed nodes private; they are what the user named.
    const { startupNodes } = client as unknown as { startupNodes: ClusterNode[] }
    return `the cluster of ${startupNodes.map((node) => typeof node === 'object' ? `${String(node.host)}:${String(node.port)}` : String(node)).join(',')}`
  }
  const { host, port, sentinels, name } = client.options
  if (isSentinel(client.options)) return `the master "${String(name)}" of the sentinels ${(sentinels as Array<{ host?: string, port?: number }>).map((s) => `${String(s.host)}:${String(s.port)}`).join(',')}`
  return `${host}:${port}`
}

/**
 * An 'error' listener for connections to `address`: one short line a second at most, however many
 * connections share it (ioredis retries by itself, and a stack says nothing here); nothing while
 * `quiet()`, as when closing.
 */
export function connectionErrorLogger (log: FastifyBaseLogger, address: string, quiet: () => boolean = () => false): (err: Error) => void {
  let lastLog = 0
  return (err) => {
    const now = Date.now()
    if (quiet() || now - lastLog < 1000) return
    lastLog = now
    log.warn({ error: err.message, redis: address }, `redis connection error (${err.message}): retrying`)
  }
}

/**
 * Resolves once `client` is ready, logging its connection errors meanwhile; fails with a message
 * naming the address after `timeout` ms. For a service that connects before it registers
 * @fastify/redis, which would otherwise wait in silence until Fastify's plugin time-out.
 */
export async function whenRedisReady (client: RedisClient, timeout: number, log: FastifyBaseLogger): Promise<void> {
  const onError = connectionErrorLogger(log, addressOf(client))
  client.on('error', onError)
  try {
    await withTimeout(waitForReady(client), timeout, () => new BusUnavailableError(
      `Redis at ${addressOf(client)} did not become ready within ${timeout} ms (the connection is ${client.status})`))
  } finally {
    client.off('error', onError)
  }
}

export async function quit (client: RedisClient, timeout: number): Promise<void> {
  // QUIT lets Redis finish what is in flight; a link that broke or went silent is dropped below.
  if (client.status === 'ready') {
    await settleWithin(client.quit(), timeout)
  }
  client.disconnect()
  if (isCluster(client)) stopSlotRefreshes(client)
}

/**
 * ioredis 6 re-arms a cluster's periodic slot refresh when a refresh that was under way as the
 * client closed comes back (Cluster#resetNodesRefreshInterval's nextRound), and from then on every
 * slotsRefreshInterval for good: a timer that keeps the process alive after the plugin closed.
 * A callback queued behind that refresh runs right after the re-arm and clears it again.
 */
function stopSlotRefreshes (cluster: Cluster): void {
  const internals = cluster as unknown as { isRefreshing?: boolean, clearNodesRefreshInterval?: () => void }
  if (internals.isRefreshing === true) cluster.refreshSlotsCache(() => { internals.clearNodesRefreshInterval?.() })
}
