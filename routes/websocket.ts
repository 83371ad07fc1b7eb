import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { WebSocket } from 'ws'
import { CHANNEL_MAX_LENGTH } from '../plugin/channel.js'
import type { Connection, Hub } from '../plugin/hub.js'
import { markAlive } from '../plugin/heartbeat.js'
import {
  errorFrame, isWireError, parseClientFrame, PONG_FRAME, REFRESHED_FRAME, subscribedFrame, toWireError, unsubscribedFrame
} from '../plugin/frames.js'
import {
  ChannelForbiddenError, ChannelLimitError, ForbiddenError, OriginForbiddenError, RefreshUnavailableError,
  ServerFullError, TooManyConnectionsError
} from '../plugin/errors.js'
import type { Authenticator, ConnectionAuth } from '../plugin/security/connect-auth.js'
import { isGranted } from '../plugin/security/grants.js'
import { isOriginAllowed, type OriginPolicy } from '../plugin/security/origin.js'
import { TokenBucket } from '../plugin/security/token-bucket.js'
import type { CanSubscribe } from '../plugin/options.js'
import { enableRateLimit, type RateLimitSetting } from './rate-limit.js'
import { redactingLogSerializers } from './log-serializers.js'

const channelList = `[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}`

export const WebsocketQuery = Type.Object({
  channels: Type.Optional(Type.String({
    pattern: `^${channelList}(,${channelList})*$`,
    description: 'Channels to subscribe to at connect, comma-separated'
  })),
  token: Type.Optional(Type.String({ description: 'A connect token, for browsers (never logged)' }))
})

/** Close codes of this route; README.md lists them all. */
export const CLOSE_TOKEN_EXPIRED = 4401
export const CLOSE_POLICY_VIOLATION = 1008

const OPEN = 1

// setTimeout keeps at most a 32-bit delay; a later expiry is re-armed when it fires.
const MAX_TIMER_DELAY = 2 ** 31 - 1

export interface ConnectionLimits {
  maxChannels: number
  maxConnections: number
  maxConnectionsPerIp: number
  frameRate: number
  frameBurst: number
  /** Bytes per second a client may send, counted on the TCP stream, so fragments count too. */
  byteRate: number
  byteBurst: number
}

interface WebsocketRouteOptions {
  path: string
  hub: Hub
  authenticator: Authenticator
  canSubscribe: CanSubscribe | undefined
  originPolicy: OriginPolicy
  limits: ConnectionLimits
  /** Whether the heartbeat runs, so pongs must be noted. */
  heartbeat: boolean
  rateLimit: RateLimitSetting | undefined
}

/** GET <path>: checks a client before the upgrade, then speaks the frame protocol of README.md. */
const websocketRoute: FastifyPluginAsync<WebsocketRouteOptions> = async (instance, options) => {
  const { path, hub, authenticator, canSubscribe, originPolicy, limits, heartbeat } = options
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const config = await enableRateLimit(instance, options.rateLimit)
  const authOf = new WeakMap<FastifyRequest, ConnectionAuth | undefined>()

  // Counted per TCP socket, from the first hook until the socket closes, so upgrades still
  // in their handshake count too and a refused or aborted one can never leak a slot.
  const capped = limits.maxConnections > 0 || limits.maxConnectionsPerIp > 0
  let openSockets = 0
  const socketsPerIp = new Map<string, number>()

  function checkCapacity (request: FastifyRequest): void {
    /* c8 ignore next -- a client gone before the hook ran would never emit 'close' to free its slot */
    if (request.raw.socket.destroyed) return
    const { ip } = request
    if (limits.maxConnections > 0 && openSockets >= limits.maxConnections) throw new ServerFullError()
    const fromIp = socketsPerIp.get(ip) ?? 0
    if (limits.maxConnectionsPerIp > 0 && fromIp >= limits.maxConnectionsPerIp) throw new TooManyConnectionsError()
    openSockets++
    socketsPerIp.set(ip, fromIp + 1)
    request.raw.socket.once('close', () => {
      openSockets--
      const left = (socketsPerIp.get(ip) as number) - 1
      if (left === 0) socketsPerIp.delete(ip)
      else socketsPerIp.set(ip, left)
    })
  }

  async function mayJoin (connection: Connection, channel: string): Promise<boolean> {
    if (canSubscribe !== undefined) return await canSubscribe(connection.identity, channel)
    if (!authenticator.enabled) return true
    return isGranted(connection.grants ?? [], channel)
  }

  fastify.get(path, {
    websocket: true,
    config,
    schema: { querystring: WebsocketQuery },
    // A browser's token may ride in the query string: keep it out of the logs.
    logSerializers: redactingLogSerializers,
    onRequest: async (request) => {
      if (!isOriginAllowed(request.headers.origin, request.headers.host, originPolicy)) {
        throw new OriginForbiddenError(JSON.stringify(request.headers.origin ?? '(none)'))
      }
      if (capped && request.ws) checkCapacity(request)
    },
    preValidation: async (request) => {
      authOf.set(request, await authenticator.authenticate(request))
    }
  }, (socket: WebSocket, request) => {
    // Track the socket and attach its listeners before anything awaits: a frame that
    // arrived before a late listener would be lost.
    const tcp = request.raw.socket
    // Prebuilt frames go straight to the TCP socket unless an extension (compression) must
    // transform each one, in which case ws frames them.
    const connection = hub.open(socket, socket.extensions === '' ? tcp : undefined)
    const auth = authOf.get(request)
    connection.identity = auth?.identity
    connection.grants = auth?.channels
    const frames = new TokenBucket(limits.frameRate, limits.frameBurst)
    const bytes = new TokenBucket(limits.byteRate, limits.byteBurst)
    let expiry: NodeJS.Timeout | undefined
    armExpiry(auth?.expiresAt)

    socket.on('close', () => {
      clearTimeout(expiry)
      hub.remove(connection)
    })
    socket.on('error', () => hub.remove(connection))
    if (heartbeat) socket.on('pong', () => markAlive(connection))
    // ws keeps every fragment of a message until the last one: a flood of tiny fragments costs
    // memory and CPU without ever making a message, so the raw bytes have a budget too.
    tcp.on('data', (chunk: Buffer) => {
      if (bytes.take(Date.now(), chunk.length) || socket.readyState !== OPEN) return
      hub.remove(connection)
      connection.close(CLOSE_POLICY_VIOLATION, 'too much data')
    })
    socket.on('message', (raw, isBinary) => {
      markAlive(connection)
      if (!frames.take()) {
        hub.remove(connection)
        connection.close(CLOSE_POLICY_VIOLATION, 'too many frames')
        return
      }
      const frame = parseClientFrame(raw, isBinary)
      connection.queue = connection.queue.then(async () => {
        if (isWireError(frame)) {
          connection.send(errorFrame(frame))
        } else if (frame.type === 'ping') {
          connection.send(PONG_FRAME)
        } else if (frame.type === 'subscribe') {
          await subscribe(frame.channel)
        } else if (frame.type === 'unsubscribe') {
          hub.leave(connection, frame.channel)
          connection.send(unsubscribedFrame(frame.channel))
        } else {
          await refresh(frame.token)
        }
      }).catch(onQueueError)
    })

    /* c8 ignore next 4 -- every step catches its own errors; this keeps one unforeseen fault from
       leaving the queue rejected (and the process with an unhandled rejection) */
    function onQueueError (err: unknown): void {
      request.log.error({ err }, 'handling a client frame failed')
    }

    function armExpiry (expiresAt: number | undefined): void {
      clearTimeout(expiry)
      if (expiresAt === undefined) return
      const delay = expiresAt - Date.now()
      expiry = setTimeout(() => {
        /* c8 ignore next -- only an expiry beyond setTimeout's 24.8-day limit wakes early */
        if (Date.now() < expiresAt) return armExpiry(expiresAt)
        hub.remove(connection)
        connection.close(CLOSE_TOKEN_EXPIRED, 'token expired')
      }, Math.min(Math.max(delay, 0), MAX_TIMER_DELAY))
    }

    async function subscribe (channel: string): Promise<void> {
      try {
        if (!connection.channels.has(channel) && connection.channels.size >= limits.maxChannels) {
          throw new ChannelLimitError(limits.maxChannels)
        }
        if (!await mayJoin(connection, channel)) throw new ChannelForbiddenError(JSON.stringify(channel))
        await hub.join(connection, channel)
        connection.send(subscribedFrame(channel))
      } catch (err) {
        if ((err as { statusCode?: number } | null | undefined)?.statusCode === 503) request.log.warn({ err, channel }, 'subscribe failed')
        connection.send(errorFrame(toWireError(err)))
      }
    }

    async function refresh (token: string): Promise<void> {
      try {
        if (authenticator.refresh === undefined) throw new RefreshUnavailableError()
        const renewed = await authenticator.refresh(token, request)
        const before = subjectOf(connection.identity)
        if (before === undefined || before !== subjectOf(renewed.identity)) {
          throw new ForbiddenError('a refresh token must carry the same sub claim as the connection\'s token')
        }
        /* c8 ignore next -- the socket closed while the token was being verified */
        if (!hub.connections.has(connection)) return
        connection.identity = renewed.identity
        connection.grants = renewed.channels
        armExpiry(renewed.expiresAt)
        connection.send(REFRESHED_FRAME)
        // Grants may have shrunk: nothing may keep flowing from a channel no longer allowed.
        for (const channel of [...connection.channels]) {
          if (await mayJoin(connection, channel)) continue
          hub.leave(connection, channel)
          connection.send(errorFrame(toWireError(new ChannelForbiddenError(JSON.stringify(channel)))))
        }
      } catch (err) {
        connection.send(errorFrame(toWireError(err)))
      }
    }

    const initial = request.query.channels
    if (initial !== undefined) {
      for (const channel of new Set(initial.split(','))) {
        connection.queue = connection.queue.then(async () => await subscribe(channel))
      }
    }
  })
}

/** The `sub` claim of an identity that is a token's claims; undefined for any other identity. */
function subjectOf (identity: unknown): unknown {
  return (identity as { sub?: unknown } | null | undefined)?.sub
}

export default websocketRoute
