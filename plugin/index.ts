import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { resolveOptions } from './options.js'
import type { BroadcastConnection, BroadcastMessage, BroadcastOptions, BroadcastResult, RedisBroadcastOptions } from './types.js'
import { AlreadyRegisteredError, RegisteredBeforeRedisError } from './errors.js'
import { CLOSE_GOING_AWAY } from './close-codes.js'
import { LoopDelayMonitor } from './loop-delay.js'
import { BroadcastStats, type BroadcastStatsSnapshot } from './stats.js'
import { createBus } from './bus/create.js'
import { Hub } from './hub.js'
import { createInbox } from './inbox.js'
import { createPublisher } from './publisher.js'
import type { Session } from './session/session.js'
import { startHeartbeat } from './heartbeat.js'
import { historySettings } from './history/settings.js'
import { Presence } from './presence/presence.js'
import { isGranted } from './security/grants.js'
import { registerJwt } from './security/jwt.js'
import { createAuthenticator } from './security/connect-auth.js'
import { createChannelAccess } from './security/channel-access.js'
import { createPublishGuard } from './security/publish-auth.js'
import { ConnectionCapacity } from './security/capacity.js'
import { watchPendingRequests } from './security/pending-requests.js'
import { registerWebsocketServer } from './websocket-server.js'
import { createMetrics } from './metrics.js'
import { registerOpenApi } from './openapi.js'
import { endUpgradesWhileClosing } from './ws-internals.js'
import websocketRoute from '../routes/websocket.js'
import publishRoute from '../routes/publish.js'
import healthRoute from '../routes/health.js'
import historyRoute from '../routes/history.js'
import presenceRoute from '../routes/presence.js'
import metricsRoute from '../routes/metrics.js'
import commandRoutes from '../routes/commands.js'
import { CommandRouter } from './commands.js'
import asyncApiRoute from '../routes/asyncapi.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Publishes `data` to every instance; resolves once the bus has accepted it. */
    broadcast: (data: unknown, options?: BroadcastOptions) => Promise<BroadcastResult>
    /** Publishes several messages in order, as one step on Redis (all or none); resolves once the bus has accepted them. */
    broadcastMany: (messages: readonly BroadcastMessage[]) => Promise<BroadcastResult[]>
    /** This instance's open WebSocket connections. */
    broadcastConnections: ReadonlySet<BroadcastConnection>
    /** Counters of this instance since it started: connections, messages, faults. */
    broadcastStats: () => BroadcastStatsSnapshot
  }
}

const redisBroadcastPlugin: FastifyPluginAsync<RedisBroadcastOptions> = async (fastify, rawOptions) => {
  if (fastify.hasDecorator('broadcast')) throw new AlreadyRegisteredError()
  const options = resolveOptions(rawOptions)

  // The parts: a bus between instances, the hub of this instance's sessions, presence, publishing.
  const stats = new BroadcastStats()
  const { bus, presenceStore } = createBus(fastify, options, stats)
  const historyOf = historySettings(options.history, options.history.rules)
  const hub = new Hub<Session>(bus, fastify.log, { historyOf, maxReplay: options.history.maxReplay, maxReplayBytes: options.history.maxReadBytes }, stats)
  const presence = new Presence(presenceStore, {
    tracked: (channel) => isGranted(options.presence.channels, channel),
    events: (channel) => isGranted(options.presence.events, channel),
    ttl: options.presence.ttl,
    anonymous: options.presence.anonymous
  }, fastify.log)
  if (options.presence.channels.length > 0) hub.presence = presence
  const metrics = options.metricsPath === false
    ? undefined
    : createMetrics(stats, { connections: () => hub.members.size, channels: () => hub.channelCount })
  const timings = metrics?.timings
  const commands = new CommandRouter(hub.members)
  const publisher = createPublisher(bus, { maxMessageBytes: options.maxMessageBytes, maxBatchSize: options.maxBatchSize, historyOf }, stats, timings)

  fastify.decorate('broadcast', publisher.broadcast)
  fastify.decorate('broadcastMany', publisher.broadcastMany)
  fastify.decorate('broadcastConnections', hub.members)
  const loopDelay = new LoopDelayMonitor()
  fastify.decorate('broadcastStats', () => stats.snapshot(hub.members.size, hub.channelCount, loopDelay.read()))

  // The life cycle: subscribe once the app is ready; close sockets first, then presence and Redis.
  let stopHeartbeat = (): void => {}
  let stopEndingUpgrades: (() => void) | undefined
  fastify.addHook('onReady', async () => {
    if (bus.kind === 'memory' && rawOptions.redis === undefined && fastify.hasDecorator('redis')) throw new RegisteredBeforeRedisError()
    await bus.start(createInbox(hub, options.maxMessageBytes, stats, fastify.log, timings, (command) => { commands.apply(command) }), () => { hub.catchUp() })
    presence.start()
    loopDelay.start()
    if (options.heartbeatInterval > 0) {
      stopHeartbeat = startHeartbeat(hub.members, { interval: options.heartbeatInterval, timeout: options.heartbeatTimeout },
        (session) => { hub.terminateSilent(session) })
    }
    fastify.log.info({ bus: bus.kind }, `fastify-redis-broadcast: using the ${bus.kind === 'redis' ? 'Redis' : 'in-process'} bus`)
  })
  fastify.addHook('preClose', async () => {
    hub.closing = true
    stopHeartbeat()
    stopEndingUpgrades = endUpgradesWhileClosing(fastify.server, options.closeTimeout)
    await hub.closeAll(CLOSE_GOING_AWAY, 'server shutting down', options.closeTimeout)
  })
  fastify.addHook('onClose', async () => {
    stopEndingUpgrades?.()
    loopDelay.stop()
    // The closed sockets' leaves go out before the bus closes: their users disappear at once. The
    // bus closes whatever became of them: a connection left open would keep the process alive.
    try {
      await presence.stop()
    } finally {
      await bus.close()
    }
  })

  // The routes, each an encapsulated plugin of routes/, described by the OpenAPI document.
  await registerOpenApi(fastify, options.openapiPath)
  const authenticator = createAuthenticator(await registerJwt(fastify, options.jwt), options.authorize)
  const access = createChannelAccess(authenticator, options.canSubscribe)
  const ownsErrorHandler = await registerWebsocketServer(fastify, options)
  if (options.websocketPath !== false) {
    const limits = { maxConnections: options.maxConnections, maxConnectionsPerIp: options.maxConnectionsPerIp }
    const capacity = new ConnectionCapacity(limits, () => pending.stale())
    const pending = watchPendingRequests(fastify.server, { timeout: options.handshakeTimeout, admits: (stale) => stale === 0 || capacity.hasRoom(stale) })
    // Later requests on a kept-alive connection get Node's own bound, no longer than ours.
    fastify.server.headersTimeout = Math.min(fastify.server.headersTimeout, options.handshakeTimeout)
    fastify.addHook('onClose', async () => { pending.stop() })
    await fastify.register(websocketRoute, {
      path: options.websocketPath,
      sessions: {
        hub,
        authenticator,
        access,
        log: fastify.log,
        limits: {
          maxChannels: options.maxChannelsPerConnection,
          frameRate: options.clientFrameRate,
          frameBurst: options.clientFrameBurst,
          byteRate: options.clientByteRate,
          resumeRate: options.clientResumeRate,
          byteBurst: Math.max(2 * options.maxPayload, options.clientByteRate),
          slowConsumerBytes: options.slowConsumerBytes,
          slowConsumerTimeout: options.slowConsumerTimeout
        }
      },
      originPolicy: { allowedOrigins: options.allowedOrigins, requireOrigin: options.requireOrigin },
      capacity,
      personalChannels: options.personalChannels,
      commands,
      heartbeat: options.heartbeatInterval > 0,
      rateLimit: options.rateLimit.upgrade,
      ownsErrorHandler
    })
  }
  // One rule for every route guarded like publishing.
  const publishGuard = createPublishGuard({ keys: options.publishKeys, insecurePublish: options.insecurePublish })
  if (options.publishPath !== false) {
    await fastify.register(publishRoute, {
      path: options.publishPath,
      bodyLimit: options.publishBodyLimit,
      maxBatchSize: options.maxBatchSize,
      publisher,
      guard: publishGuard,
      rateLimit: options.rateLimit.publish
    })
  }
  await fastify.register(commandRoutes, { subscriptionsPath: options.subscriptionsPath, disconnectPath: options.disconnectPath, bus, guard: publishGuard })
  if (metrics !== undefined) {
    await fastify.register(metricsRoute, { path: options.metricsPath as string, registry: metrics.registry, guard: publishGuard, allow: options.metricsAllow })
  }
  if (options.historyPath !== false) await fastify.register(historyRoute, { path: options.historyPath, bus, historyOf, access, maxBytes: options.history.maxReadBytes })
  if (options.presencePath !== false) await fastify.register(presenceRoute, { path: options.presencePath, presence, access })
  if (options.healthPath !== false) await fastify.register(healthRoute, { path: options.healthPath, bus })
  if (options.asyncapiPath !== false && options.websocketPath !== false) {
    await fastify.register(asyncApiRoute, { path: options.asyncapiPath, websocketPath: options.websocketPath })
  }
}

export const redisBroadcast = fp(redisBroadcastPlugin, {
  name: 'fastify-redis-broadcast',
  fastify: '5.x'
})

export default redisBroadcast
export type {
  RedisBroadcastOptions, BroadcastOptions, BroadcastMessage, BroadcastResult, BroadcastConnection,
  ConnectionAuth, Authorize, CanSubscribe, HistoryRule, RateLimitOptions
} from './types.js'
export type { BroadcastStatsSnapshot } from './stats.js'
export type { Bus, BusHealth, BusMessageHandler } from './bus/bus.js'
export type { RedisClusterConfig } from './redis/client.js'
export * as errors from './errors.js'
export { redactingLogger, redactSecrets } from './log-redaction.js'
