import { Type } from '@sinclair/typebox'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { RawData, WebSocket } from 'ws'
import { CHANNEL_MAX_LENGTH } from '../plugin/channel.js'
import { CLOSE_GOING_AWAY, type Hub, type Resume } from '../plugin/hub.js'
import type { Connection } from '../plugin/connection.js'
import { markAlive } from '../plugin/heartbeat.js'
import {
  errorFrame, isWireError, parseClientFrame, PONG_FRAME, REFRESHED_FRAME, subscribedFrame, toWireError, unsubscribedFrame
} from '../plugin/frames.js'
import {
  ChannelForbiddenError, ChannelLimitError, ForbiddenError, OriginForbiddenError, RefreshUnavailableError,
  ServerFullError, TooManyConnectionsError
} from '../plugin/errors.js'
import type { Authenticator, ConnectionAuth } from '../plugin/security/connect-auth.js'
import type { SubscribeCheck } from '../plugin/security/subscribe-check.js'
import { isOriginAllowed, type OriginPolicy } from '../plugin/security/origin.js'
import { TokenBucket } from '../plugin/security/token-bucket.js'
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
const CLOSING = 2

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
  /** Whether a client may subscribe to a channel. */
  mayRead: SubscribeCheck
  originPolicy: OriginPolicy
  limits: ConnectionLimits
  /** Whether the heartbeat runs, so pongs must be noted. */
  heartbeat: boolean
  rateLimit: RateLimitSetting | undefined
  /** Whether @fastify/websocket calls this plugin's errorHandler (handleSocketError): this plugin registered it. */
  ownsErrorHandler: boolean
}

/** What the handler needs of an upgrade's hooks: its auth, and the response routing it used. */
interface Upgrade {
  auth: ConnectionAuth | undefined
  response: ServerResponse
}

/** What this route keeps for one open socket, besides its hub connection. */
interface Client {
  readonly connection: Connection
  /** The upgrade's request id and log level: logs made for this socket carry them, as request.log's would. */
  readonly reqId: string
  readonly logLevel: string
  /** The upgrade request, kept only when a refresh can happen (authorize() sees it again then). */
  readonly request: FastifyRequest | undefined
  /** Made at the first frame or chunk: a bucket starts full, so starting it later changes nothing. */
  frames: TokenBucket | undefined
  bytes: TokenBucket | undefined
  expiry: NodeJS.Timeout | undefined
}

/** GET <path>: checks a client before the upgrade, then speaks the frame protocol of README.md. */
const websocketRoute: FastifyPluginAsync<WebsocketRouteOptions> = async (instance, options) => {
  const { path, hub, authenticator, mayRead, originPolicy, limits, heartbeat, ownsErrorHandler } = options
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const config = await enableRateLimit(instance, options.rateLimit)
  const upgrades = new WeakMap<FastifyRequest, Upgrade>()
  // Keyed by a client's WebSocket and by its TCP socket, for the listeners below: one set of
  // functions for every socket instead of a closure per socket and event.
  const clients = new WeakMap<WebSocket | Socket, Client>()

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
    return await mayRead(connection.identity, connection.grants, channel)
  }

  /**
   * The logger of a client's request, made again when something is logged: request.log is a
   * child logger with serializers of its own, ~400 bytes that every idle socket would keep.
   */
  function logOf (client: Client): FastifyBaseLogger {
    return instance.log.child({ reqId: client.reqId }, { level: client.logLevel })
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
    preValidation: async (request, reply) => {
      upgrades.set(request, { auth: await authenticator.authenticate(request), response: reply.raw })
    }
  }, (socket: WebSocket, request) => {
    // Track the socket and attach its listeners before anything awaits: a frame that
    // arrived before a late listener would be lost.
    // Undefined under app.injectWS(), which has no TCP socket: ws then frames every message itself.
    const tcp = request.raw.socket as Socket | null | undefined ?? undefined
    const { auth, response } = upgrades.get(request) as Upgrade
    // The entry's value leads back to its key (response → reply → request), and V8's young-generation
    // GC keeps such an entry whole: left here, it would drag the request into the old generation.
    upgrades.delete(request)
    // @fastify/websocket lends the TCP socket to a ServerResponse for routing the upgrade and never
    // takes it back: through it the socket would keep the response, the raw and Fastify request
    // and reply (~3 KB) for its whole life. The response has no more use, so undo assignSocket().
    if (tcp !== undefined && response.socket === tcp) response.detachSocket(tcp)
    // An upgrade whose hooks were still running when app.close() began: it is too late to join.
    if (hub.closing) {
      socket.close(CLOSE_GOING_AWAY, 'server shutting down')
      return
    }
    if (ownsErrorHandler && dropUpgradeErrorListener(socket)) socket.on('error', onUpgradeError)
    // Prebuilt frames go straight to the TCP socket unless an extension (compression) must
    // transform each one, in which case ws frames them.
    const connection = hub.open(socket, socket.extensions === '' ? tcp : undefined)
    connection.identity = auth?.identity
    connection.grants = auth?.channels
    const client: Client = {
      connection,
      reqId: request.id,
      logLevel: request.log.level,
      request: authenticator.refresh === undefined ? undefined : request,
      frames: undefined,
      bytes: undefined,
      expiry: undefined
    }
    clients.set(socket, client)
    if (tcp !== undefined) clients.set(tcp, client)
    armExpiry(client, auth?.expiresAt)

    socket.on('close', onClose)
    socket.on('error', onError)
    if (heartbeat) socket.on('pong', onPong)
    // ws keeps every fragment of a message until the last one: a flood of tiny fragments costs
    // memory and CPU without ever making a message, so the raw bytes have a budget too.
    tcp?.on('data', onData)
    socket.on('message', onMessage)

    const initial = request.query.channels
    if (initial !== undefined) {
      for (const channel of new Set(initial.split(','))) {
        connection.queue = connection.queue.then(async () => await subscribe(client, channel))
      }
    }
  })

  // The listeners of every client socket; `this` is the emitter, as EventEmitter promises.

  function onClose (this: WebSocket): void {
    const client = clients.get(this) as Client
    clearTimeout(client.expiry)
    hub.remove(client.connection)
  }

  function onError (this: WebSocket): void {
    hub.remove((clients.get(this) as Client).connection)
  }

  /** In place of @fastify/websocket's listener that dropUpgradeErrorListener removed: what it did. */
  function onUpgradeError (this: WebSocket, err: Error): void {
    handleSocketError(err, this, logOf(clients.get(this) as Client))
  }

  function onPong (this: WebSocket): void {
    markAlive((clients.get(this) as Client).connection)
  }

  function onData (this: Socket, chunk: Buffer): void {
    const client = clients.get(this) as Client
    client.bytes ??= new TokenBucket(limits.byteRate, limits.byteBurst)
    const { connection } = client
    if (client.bytes.take(Date.now(), chunk.length) || connection.socket.readyState !== OPEN) return
    hub.remove(connection)
    connection.close(CLOSE_POLICY_VIOLATION, 'too much data')
  }

  function onMessage (this: WebSocket, raw: RawData, isBinary: boolean): void {
    const client = clients.get(this) as Client
    const { connection } = client
    markAlive(connection)
    client.frames ??= new TokenBucket(limits.frameRate, limits.frameBurst)
    if (!client.frames.take()) {
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
        await subscribe(client, frame.channel, frame.resume)
      } else if (frame.type === 'unsubscribe') {
        hub.leave(connection, frame.channel)
        connection.send(unsubscribedFrame(frame.channel))
      } else {
        await refresh(client, frame.token)
      }
    }).catch((err: unknown) => { onQueueError(client, err) })
  }

  /* c8 ignore next 4 -- every step catches its own errors; this keeps one unforeseen fault from
     leaving the queue rejected (and the process with an unhandled rejection) */
  function onQueueError (client: Client, err: unknown): void {
    logOf(client).error({ err }, 'handling a client frame failed')
  }

  function armExpiry (client: Client, expiresAt: number | undefined): void {
    clearTimeout(client.expiry)
    if (expiresAt === undefined) return
    const delay = expiresAt - Date.now()
    client.expiry = setTimeout(() => {
      /* c8 ignore next -- only an expiry beyond setTimeout's 24.8-day limit wakes early */
      if (Date.now() < expiresAt) return armExpiry(client, expiresAt)
      hub.remove(client.connection)
      client.connection.close(CLOSE_TOKEN_EXPIRED, 'token expired')
    }, Math.min(Math.max(delay, 0), MAX_TIMER_DELAY))
  }

  async function subscribe (client: Client, channel: string, resume?: Resume): Promise<void> {
    const { connection } = client
    try {
      if (!connection.channels.has(channel) && connection.channels.size >= limits.maxChannels) {
        throw new ChannelLimitError(limits.maxChannels)
      }
      if (!await mayJoin(connection, channel)) throw new ChannelForbiddenError(JSON.stringify(channel))
      await hub.join(connection, channel, resume, (outcome) => connection.send(subscribedFrame(channel, outcome)))
    } catch (err) {
      // Redis down (503) or refusing (502): the operator should hear of it, not only the client.
      if (((err as { statusCode?: number } | null | undefined)?.statusCode ?? 0) >= 500) logOf(client).warn({ err, channel }, 'subscribe failed')
      connection.send(errorFrame(toWireError(err)))
    }
  }

  async function refresh (client: Client, token: string): Promise<void> {
    const { connection } = client
    try {
      // Both or neither: the request is kept exactly when refresh is defined.
      if (authenticator.refresh === undefined || client.request === undefined) throw new RefreshUnavailableError()
      const renewed = await authenticator.refresh(token, client.request)
      const before = subjectOf(connection.identity)
      if (before === undefined || before !== subjectOf(renewed.identity)) {
        throw new ForbiddenError('a refresh token must carry the same sub claim as the connection\'s token')
      }
      /* c8 ignore next -- the socket closed while the token was being verified */
      if (!hub.connections.has(connection)) return
      connection.identity = renewed.identity
      connection.grants = renewed.channels
      armExpiry(client, renewed.expiresAt)
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
}

/**
 * What this plugin's errorHandler for @fastify/websocket does with a socket's error: log it, and cut
 * the link, unless a protocol error (bad frame, too many fragments) has already sent its close frame
 * (1002, 1007, 1008, 1009): let that arrive; ws cuts the link after closeTimeout.
 */
export function handleSocketError (err: Error, socket: WebSocket, log: FastifyBaseLogger): void {
  log.warn({ err }, 'websocket error')
  /* c8 ignore next -- ws 8 is closing whenever it emits 'error'; an open one is from a handler that threw */
  if (socket.readyState !== CLOSING) socket.terminate()
}

/**
 * @fastify/websocket gives every socket, just before the route handler runs, an 'error' listener
 * that only calls its errorHandler but holds the upgrade's Fastify request and reply, and through
 * them the raw request, its headers and a child logger (~3 KB), for the socket's whole life. Used
 * only when that errorHandler is this plugin's (handleSocketError), which onUpgradeError then
 * calls in its place. Guarded: anything but exactly one listener is a @fastify/websocket that works
 * otherwise, and keeps its listener (false).
 */
function dropUpgradeErrorListener (socket: WebSocket): boolean {
  const listeners = socket.listeners('error')
  /* c8 ignore next -- @fastify/websocket 11 adds exactly one */
  if (listeners.length !== 1) return false
  socket.removeListener('error', listeners[0] as (err: Error) => void)
  return true
}

/** The `sub` claim of an identity that is a token's claims; undefined for any other identity. */
function subjectOf (identity: unknown): unknown {
  return (identity as { sub?: unknown } | null | undefined)?.sub
}

export default websocketRoute
