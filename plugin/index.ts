import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import { Redis } from 'ioredis'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { resolveOptions, type RedisBroadcastOptions, type ResolvedOptions } from './options.js'
import { Hub, type Connection } from './hub.js'
import { encodeMessage } from './frames.js'
import { isValidChannel } from './channel.js'
import { AlreadyRegisteredError, InvalidChannelError } from './errors.js'
import type { Bus } from './bus/bus.js'
import { BEARER_PROTOCOL, createAuthenticator } from './security/connect-auth.js'
import { createPublishGuard } from './security/publish-auth.js'
import { MemoryBus } from './bus/memory.js'
import { RedisBus } from './bus/redis.js'
import websocketRoute from '../routes/websocket.js'
import publishRoute from '../routes/publish.js'
import healthRoute from '../routes/health.js'

export interface BroadcastOptions {
  /** Deliver only to this channel's subscribers; left out, to every connection on every instance. */
  channel?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Publishes `data` to every instance; resolves once the bus has accepted it. */
    broadcast: (data: unknown, options?: BroadcastOptions) => Promise<void>
    /** This instance's open WebSocket connections. */
    broadcastConnections: ReadonlySet<Connection>
  }
}

const JWT_NAMESPACE = 'broadcast'

const redisBroadcastPlugin: FastifyPluginAsync<RedisBroadcastOptions> = async (fastify, rawOptions) => {
  if (fastify.hasDecorator('broadcast')) throw new AlreadyRegisteredError()
  const options = resolveOptions(rawOptions)
  const bus = createBus(fastify, options)
  const hub = new Hub(bus, fastify.log)

  async function broadcast (data: unknown, { channel }: BroadcastOptions = {}): Promise<void> {
    if (channel !== undefined && !isValidChannel(channel)) throw new InvalidChannelError(JSON.stringify(channel))
    await bus.publish(channel ?? null, encodeMessage(data, channel))
  }

  fastify.decorate('broadcast', broadcast)
  fastify.decorate('broadcastConnections', hub.connections)

  fastify.addHook('onReady', async () => {
    await bus.start((channel, payload) => hub.deliver(channel, payload))
    fastify.log.info({ bus: bus.kind }, `fastify-redis-broadcast: using the ${bus.kind === 'redis' ? 'Redis' : 'in-process'} bus`)
  })
  fastify.addHook('preClose', async () => {
    for (const connection of hub.connections) connection.socket.close(1001, 'server shutting down')
  })
  fastify.addHook('onClose', async () => {
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

  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(websocket, {
      options: {
        maxPayload: options.maxPayload,
        // ws checks maxPayload against the inflated size, so compression cannot smuggle big frames.
        perMessageDeflate: options.compression,
        // Browsers send their token as `['bearer', token]` and require one protocol echoed back.
        handleProtocols: (protocols) => protocols.has(BEARER_PROTOCOL) ? BEARER_PROTOCOL : false
      },
      // Sockets are closed with 1001 by this plugin's own preClose hook.
      preClose: function (done) { this.websocketServer.close(() => done()) },
      errorHandler: (err, socket, request) => {
        request.log.warn({ err }, 'websocket error')
        socket.terminate()
      }
    })
  }

  if (options.websocketPath !== false) {
    await fastify.register(websocketRoute, {
      path: options.websocketPath,
      hub,
      authenticator: createAuthenticator(jwt, options.authorize),
      canSubscribe: options.canSubscribe,
      originPolicy: { allowedOrigins: options.allowedOrigins, requireOrigin: options.requireOrigin },
      limits: {
        maxChannels: options.maxChannelsPerConnection,
        maxConnections: options.maxConnections,
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        frameRate: options.clientFrameRate,
        frameBurst: options.clientFrameBurst
      },
      rateLimit: options.rateLimit.upgrade
    })
  }
  if (options.publishPath !== false) {
    await fastify.register(publishRoute, {
      path: options.publishPath,
      bodyLimit: options.publishBodyLimit,
      guard: createPublishGuard({ keys: options.publishKeys, insecurePublish: options.insecurePublish }),
      rateLimit: options.rateLimit.publish
    })
  }
  if (options.healthPath !== false) {
    await fastify.register(healthRoute, { path: options.healthPath, bus })
  }
}

function createBus (fastify: FastifyInstance, options: ResolvedOptions): Bus {
  const common = { prefix: options.redisPrefix, readyTimeout: options.redisReadyTimeout, log: fastify.log }
  const { redis } = options
  if (redis instanceof Redis) return new RedisBus({ ...common, publisher: redis, ownsPublisher: false })
  if (redis !== undefined) {
    const settings = {
      // Fail a publish at once while Redis is away instead of queueing it for later:
      // the caller gets a 503 rather than a 202 for a message that may never be sent.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 1000),
      connectionName: 'fastify-redis-broadcast:publisher'
    }
    const publisher = typeof redis === 'string' ? new Redis(redis, settings) : new Redis({ ...redis, ...settings })
    return new RedisBus({ ...common, publisher, ownsPublisher: true })
  }
  if (fastify.hasDecorator('redis')) {
    return new RedisBus({ ...common, publisher: (fastify as unknown as { redis: Redis }).redis, ownsPublisher: false })
  }
  return new MemoryBus()
}

export const redisBroadcast = fp(redisBroadcastPlugin, {
  name: 'fastify-redis-broadcast',
  fastify: '5.x'
})

export default redisBroadcast
export type { RedisBroadcastOptions } from './options.js'
export type { Connection } from './hub.js'
export type { ConnectionAuth, Authorize } from './security/connect-auth.js'
export type { CanSubscribe } from './options.js'
export type { Bus, BusHealth, BusMessageHandler } from './bus/bus.js'
export * as errors from './errors.js'
