import type { Duplex } from 'node:stream'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import { Redis } from 'ioredis'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { resolveOptions, type RedisBroadcastOptions, type ResolvedOptions } from './options.js'
import { CLOSE_GOING_AWAY, Hub } from './hub.js'
import type { Connection } from './connection.js'
import { encodeMessage } from './frames.js'
import { isValidChannel } from './channel.js'
import { AlreadyRegisteredError, InvalidChannelError, InvalidDataError, InvalidIdempotencyKeyError, MessageTooLargeError } from './errors.js'
import type { Bus, BusMessage, PublishResult } from './bus/bus.js'
import { historySettings } from './history/settings.js'
import { MAX_POSITION_LENGTH } from './history/sequence.js'
import { isValidIdempotencyKey } from './history/idempotency.js'
import { Presence } from './presence/presence.js'
import { MemoryPresenceStore, type PresenceStore } from './presence/store.js'
import { RedisPresenceStore } from './presence/redis-store.js'
import { isGranted } from './security/grants.js'
import { foreignPayloadReason, PROTO_KEY } from './bus/payload-check.js'
import { BroadcastStats, type BroadcastStatsSnapshot } from './stats.js'
import { startHeartbeat } from './heartbeat.js'
import { BEARER_PROTOCOL, createAuthenticator } from './security/connect-auth.js'
import { createPublishGuard } from './security/publish-auth.js'
import { createReadGuard, createSubscribeCheck } from './security/subscribe-check.js'
import { MemoryBus } from './bus/memory.js'
import { reconnectDelay, RedisBus } from './bus/redis.js'
import websocketRoute, { handleSocketError } from '../routes/websocket.js'
import publishRoute from '../routes/publish.js'
import healthRoute from '../routes/health.js'
import historyRoute from '../routes/history.js'
import presenceRoute from '../routes/presence.js'

export interface BroadcastOptions {
  /** Deliver only to this channel's subscribers; left out, to every connection on every instance. */
  channel?: string
  /**
   * The same key on the same channel within `idempotencyWindow` publishes once: a retry gets the
   * first publish's result, with `duplicate: true`.
   */
  idempotencyKey?: string
}

export interface BroadcastMessage extends BroadcastOptions {
  data: unknown
}

export interface BroadcastResult {
  /** The message's offset and its history's epoch; absent for a channel without history. */
  offset?: number
  epoch?: string
  /** True when the idempotency key was seen before and nothing new was published. */
  duplicate: boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Publishes `data` to every instance; resolves once the bus has accepted it. */
    broadcast: (data: unknown, options?: BroadcastOptions) => Promise<BroadcastResult>
    /**
     * Publishes several messages in order, as one step on Redis (all or none); resolves once the
     * bus has accepted them.
     */
    broadcastMany: (messages: readonly BroadcastMessage[]) => Promise<BroadcastResult[]>
    /** This instance's open WebSocket connections. */
    broadcastConnections: ReadonlySet<Connection>
    /** Counters of this instance since it started: connections, messages, faults. */
    broadcastStats: () => BroadcastStatsSnapshot
  }
}

const JWT_NAMESPACE = 'broadcast'
// One warning per interval at most: a flood of foreign payloads must not flood the log as well.
const FOREIGN_LOG_INTERVAL = 10000

const redisBroadcastPlugin: FastifyPluginAsync<RedisBroadcastOptions> = async (fastify, rawOptions) => {
  if (fastify.hasDecorator('broadcast')) throw new AlreadyRegisteredError()
  const options = resolveOptions(rawOptions)
  const stats = new BroadcastStats()
  const { bus, presenceStore } = createBus(fastify, options, stats)
  const historyOf = historySettings(options.history, options.history.rules)
  const hub = new Hub(bus, fastify.log, { ...options, historyOf, maxReplay: options.history.maxReplay }, stats)
  const presence = new Presence(presenceStore, {
    tracked: (channel) => isGranted(options.presence.channels, channel),
    events: (channel) => isGranted(options.presence.events, channel),
    ttl: options.presence.ttl
  }, fastify.log)
  if (options.presence.channels.length > 0) hub.presence = presence

  /** Validates and encodes one message; throws the error its publisher should hear. */
  function prepare (data: unknown, channel: string | undefined, idempotencyKey?: string): BusMessage {
    if (channel !== undefined && !isValidChannel(channel)) throw new InvalidChannelError(JSON.stringify(channel))
    const payload = encodeMessage(data, channel)
    const size = Buffer.byteLength(payload)
    if (size > options.maxMessageBytes) throw new MessageTooLargeError(size, options.maxMessageBytes)
    // Every instance drops payloads with this key as foreign: refuse it here, where the caller hears.
    if (payload.includes(PROTO_KEY)) throw new InvalidDataError('an object key may not be "__proto__"')
    if (idempotencyKey !== undefined && !isValidIdempotencyKey(idempotencyKey)) throw new InvalidIdempotencyKeyError()
    const history = channel === undefined ? undefined : historyOf(channel)
    return {
      channel: channel ?? null,
      payload,
      history: history === undefined || history.size === 0 ? undefined : history,
      idempotencyKey
    }
  }

  async function publish (messages: BusMessage[]): Promise<BroadcastResult[]> {
    let results: PublishResult[]
    try {
      results = await bus.publishMany(messages)
    } catch (err) {
      stats.publishFailures += messages.length
      throw err
    }
    stats.published += messages.length
    return results.map(toBroadcastResult)
  }

  async function broadcast (data: unknown, { channel, idempotencyKey }: BroadcastOptions = {}): Promise<BroadcastResult> {
    const [result] = await publish([prepare(data, channel, idempotencyKey)])
    return result
  }

  async function broadcastMany (messages: readonly BroadcastMessage[]): Promise<BroadcastResult[]> {
    if (messages.length > options.maxBatchSize) {
      throw new InvalidDataError(`a batch holds at most ${options.maxBatchSize} messages (maxBatchSize), got ${messages.length}`)
    }
    // Every message is checked before any is sent: a bad one refuses the whole batch.
    const prepared = messages.map(({ data, channel, idempotencyKey }, index) => {
      try {
        return prepare(data, channel, idempotencyKey)
      } catch (err) {
        (err as Error).message = `message ${index}: ${(err as Error).message}`
        throw err
      }
    })
    return prepared.length > 0 ? await publish(prepared) : []
  }

  let lastForeignLog = 0
  function onBusMessage (channel: string | null, payload: Buffer): void {
    stats.messagesIn++
    // The publish script adds the position to a message after prepare() checked its size.
    const foreign = foreignPayloadReason(payload, options.maxMessageBytes + MAX_POSITION_LENGTH)
    if (foreign === undefined) {
      hub.receive(channel, payload)
      return
    }
    stats.droppedForeignPayloads++
    const now = Date.now()
    if (now - lastForeignLog < FOREIGN_LOG_INTERVAL) return
    lastForeignLog = now
    fastify.log.warn({ channel, reason: foreign, bytes: payload.length, dropped: stats.droppedForeignPayloads },
      'dropped a payload on a plugin channel that is not a plugin message')
  }

  fastify.decorate('broadcast', broadcast)
  fastify.decorate('broadcastMany', broadcastMany)
  fastify.decorate('broadcastConnections', hub.connections)
  fastify.decorate('broadcastStats', () => stats.snapshot(hub.connections.size, hub.channelCount))

  let stopHeartbeat = (): void => {}
  fastify.addHook('onReady', async () => {
    await bus.start(onBusMessage, () => { hub.catchUp() })
    presence.start()
    if (options.heartbeatInterval > 0) {
      stopHeartbeat = startHeartbeat(hub.connections,
        { interval: options.heartbeatInterval, timeout: options.heartbeatTimeout },
        (connection) => hub.terminateSilent(connection))
    }
    fastify.log.info({ bus: bus.kind }, `fastify-redis-broadcast: using the ${bus.kind === 'redis' ? 'Redis' : 'in-process'} bus`)
  })
  // While closing, Fastify answers new requests 503 on its own, but for an upgrade it leaves the
  // TCP socket open after that answer; end it, or a client could hold it and stall the close.
  const endRefusedUpgrade = (request: unknown, socket: Duplex): void => {
    setImmediate(() => {
      socket.end()
      // A peer that never sends its own FIN would keep the half-closed socket, and the close waiting.
      setTimeout(() => socket.destroy(), options.closeTimeout).unref()
    })
  }
  fastify.addHook('preClose', async () => {
    hub.closing = true
    stopHeartbeat()
    fastify.server.prependListener('upgrade', endRefusedUpgrade)
    await hub.closeAll(CLOSE_GOING_AWAY, 'server shutting down', options.closeTimeout)
  })
  fastify.addHook('onClose', async () => {
    fastify.server.removeListener('upgrade', endRefusedUpgrade)
    // The closed sockets' leaves go out before the bus closes: their users disappear at once.
    await presence.stop()
    await bus.close()
  })

  let jwt: JWT | undefined
  if (options.jwt !== undefined) {
    const { secret, publicKey, audience, algorithms } = options.jwt
    await fastify.register(fastifyJwt, {
      namespace: JWT_NAMESPACE,
      secret: secret ?? { public: publicKey as string },
      // A token without exp would keep its connection open forever: refuse it.
      verify: { allowedAud: audience, algorithms: algorithms as never, requiredClaims: ['exp'] }
    })
    jwt = (fastify.jwt as unknown as Record<string, JWT>)[JWT_NAMESPACE]
  }

  // When this plugin registers @fastify/websocket, the route may take over its per-socket error listener.
  const ownsErrorHandler = !fastify.hasDecorator('websocketServer')
  if (ownsErrorHandler) {
    const serverOptions = {
      maxPayload: options.maxPayload,
      // A peer that never answers a close frame is cut off after this long, not ws's 30 s.
      // (ws ≥ 8.19 reads it; @types/ws does not list it yet, hence the variable.)
      closeTimeout: options.closeTimeout,
      // ws checks maxPayload against the inflated size, so compression cannot smuggle big frames.
      perMessageDeflate: options.compression,
      // Browsers send their token as `['bearer', token]` and require one protocol echoed back.
      handleProtocols: (protocols: Set<string>) => protocols.has(BEARER_PROTOCOL) ? BEARER_PROTOCOL : false
    }
    await fastify.register(websocket, {
      options: serverOptions,
      // Sockets are closed with 1001 by this plugin's own preClose hook.
      preClose: function (done) { this.websocketServer.close(() => done()) },
      // The route's sockets call handleSocketError through a listener of their own (see
      // dropUpgradeErrorListener in routes/websocket.ts), so only other websocket routes come here.
      /* c8 ignore next -- this plugin has no other websocket route */
      errorHandler: (err, socket, request) => { handleSocketError(err, socket, request.log) }
    })
  }

  const authenticator = createAuthenticator(jwt, options.authorize)
  const mayRead = createSubscribeCheck(authenticator, options.canSubscribe)
  const readGuard = createReadGuard(authenticator, mayRead)
  if (options.websocketPath !== false) {
    await fastify.register(websocketRoute, {
      path: options.websocketPath,
      hub,
      authenticator,
      mayRead,
      originPolicy: { allowedOrigins: options.allowedOrigins, requireOrigin: options.requireOrigin },
      limits: {
        maxChannels: options.maxChannelsPerConnection,
        maxConnections: options.maxConnections,
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        frameRate: options.clientFrameRate,
        frameBurst: options.clientFrameBurst,
        byteRate: options.clientByteRate,
        byteBurst: Math.max(2 * options.maxPayload, options.clientByteRate)
      },
      heartbeat: options.heartbeatInterval > 0,
      rateLimit: options.rateLimit.upgrade,
      ownsErrorHandler
    })
  }
  if (options.publishPath !== false) {
    await fastify.register(publishRoute, {
      path: options.publishPath,
      bodyLimit: options.publishBodyLimit,
      maxBatchSize: options.maxBatchSize,
      guard: createPublishGuard({ keys: options.publishKeys, insecurePublish: options.insecurePublish }),
      rateLimit: options.rateLimit.publish
    })
  }
  if (options.historyPath !== false) {
    await fastify.register(historyRoute, { path: options.historyPath, bus, historyOf, guard: readGuard })
  }
  if (options.presencePath !== false) {
    await fastify.register(presenceRoute, { path: options.presencePath, presence, guard: readGuard })
  }
  if (options.healthPath !== false) {
    await fastify.register(healthRoute, { path: options.healthPath, bus })
  }
}

function toBroadcastResult ({ position, duplicate }: PublishResult): BroadcastResult {
  return position === undefined ? { duplicate } : { offset: position.offset, epoch: position.epoch, duplicate }
}

function createBus (fastify: FastifyInstance, options: ResolvedOptions, stats: BroadcastStats): { bus: Bus, presenceStore: PresenceStore } {
  const withPresence = (bus: RedisBus, client: Redis): { bus: Bus, presenceStore: PresenceStore } => ({
    bus,
    presenceStore: new RedisPresenceStore({
      client,
      prefix: options.redisPrefix,
      instance: bus.instance,
      ttl: options.presence.ttl,
      commandTimeout: options.publishTimeout
    })
  })
  const common = {
    idempotencyWindow: options.idempotencyWindow,
    prefix: options.redisPrefix,
    readyTimeout: options.redisReadyTimeout,
    commandTimeout: options.publishTimeout,
    probeInterval: options.probeInterval,
    probeTimeout: options.probeTimeout,
    stats,
    log: fastify.log
  }
  const { redis } = options
  if (redis instanceof Redis) return withPresence(new RedisBus({ ...common, publisher: redis, ownsPublisher: false }), redis)
  if (redis !== undefined) {
    const settings = {
      // Fail a publish at once while Redis is away instead of queueing it for later:
      // the caller gets a 503 rather than a 202 for a message that may never be sent.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // A PUBLISH in flight when the link broke was answered 503: never send it again later.
      autoResendUnfulfilledCommands: false,
      // Concurrent publishes share one round trip.
      enableAutoPipelining: true,
      retryStrategy: reconnectDelay,
      connectionName: 'fastify-redis-broadcast:publisher'
    }
    const publisher = typeof redis === 'string' ? new Redis(redis, settings) : new Redis({ ...redis, ...settings })
    return withPresence(new RedisBus({ ...common, publisher, ownsPublisher: true }), publisher)
  }
  if (fastify.hasDecorator('redis')) {
    const client = (fastify as unknown as { redis: Redis }).redis
    return withPresence(new RedisBus({ ...common, publisher: client, ownsPublisher: false }), client)
  }
  const bus = new MemoryBus(options.idempotencyWindow)
  return { bus, presenceStore: new MemoryPresenceStore(async (channel, frame) => { await bus.publish(channel, frame) }) }
}

export const redisBroadcast = fp(redisBroadcastPlugin, {
  name: 'fastify-redis-broadcast',
  fastify: '5.x'
})

export default redisBroadcast
export type { RedisBroadcastOptions } from './options.js'
export type { Connection } from './connection.js'
export type { ConnectionAuth, Authorize } from './security/connect-auth.js'
export type { CanSubscribe } from './options.js'
export type { Bus, BusHealth, BusMessageHandler } from './bus/bus.js'
export type { BroadcastStatsSnapshot } from './stats.js'
export * as errors from './errors.js'
