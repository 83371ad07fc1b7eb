import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { WebSocket } from 'ws'
import { ConnectQuery } from '../plugin/protocol.js'
import { CLOSE_GOING_AWAY } from '../plugin/close-codes.js'
import { OriginForbiddenError } from '../plugin/errors.js'
import type { ConnectionAuth } from '../plugin/types.js'
import type { ConnectionCapacity } from '../plugin/security/capacity.js'
import { isOriginAllowed, type OriginPolicy } from '../plugin/security/origin.js'
import { Session, type SessionContext } from '../plugin/session/session.js'
import { listen } from '../plugin/session/listeners.js'
import { isValidChannel } from '../plugin/channel.js'
import type { CommandRouter } from '../plugin/commands.js'
import { frameWriter, releaseUpgradeResponse } from '../plugin/ws-internals.js'
import { enableRateLimit, type RateLimitSetting } from './rate-limit.js'
import { redactingLogSerializers } from '../plugin/log-redaction.js'
import { errorResponses, SECURITY } from '../plugin/openapi.js'

// The same schema the AsyncAPI document describes the connect query with.
export const WebsocketQuery = ConnectQuery

interface WebsocketRouteOptions {
  path: string
  sessions: SessionContext
  originPolicy: OriginPolicy
  capacity: ConnectionCapacity
  /** Commands by identity from the back end: a connection that joins catches up on those that came while it connected. */
  commands: CommandRouter
  /** Whether a connection with an identity is subscribed to its personal channel at connect. */
  personalChannels: boolean
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
  /** When its auth began: commands for its identity from then on apply to it. */
  since: number
}

/**
 * GET <path>: checks a client before the upgrade (origin, capacity, credentials), then hands the
 * socket to a Session, which speaks the frame protocol of README.md.
 */
const websocketRoute: FastifyPluginAsync<WebsocketRouteOptions> = async (instance, options) => {
  const { path, sessions, originPolicy, capacity, heartbeat, ownsErrorHandler } = options
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const config = await enableRateLimit(instance, options.rateLimit)
  const upgrades = new WeakMap<FastifyRequest, Upgrade>()

  fastify.get(path, {
    websocket: true,
    config,
    schema: {
      summary: 'Upgrades to the WebSocket of the broadcast protocol (described by the AsyncAPI document)',
      security: SECURITY.read,
      querystring: WebsocketQuery,
      response: errorResponses({
        400: 'A bad channel list in the query',
        401: 'Connect auth is on and the token is missing, wrong or expired',
        403: 'authorize() refused, or the Origin is not allowed',
        429: 'Over maxConnectionsPerIp or the upgrade rate limit',
        503: 'Over maxConnections, or the server is shutting down'
      })
    },
    // A browser's token may ride in the query string: keep it out of the logs.
    logSerializers: redactingLogSerializers,
    onRequest: async (request) => {
      if (!isOriginAllowed(request.headers.origin, request.headers.host, originPolicy, request.protocol === 'https')) {
        throw new OriginForbiddenError(JSON.stringify(request.headers.origin ?? '(none)'))
      }
      if (capacity.enabled && request.ws) capacity.admit(request)
    },
    preValidation: async (request, reply) => {
      const since = Date.now()
      upgrades.set(request, { auth: await sessions.authenticator.authenticate(request), response: reply.raw, since })
    }
  }, (socket: WebSocket, request) => {
    // Nothing here may await before the session listens: a frame that arrived before a late
    // listener would be lost.
    const tcp = request.raw.socket as Socket | null | undefined ?? undefined
    const { auth, response, since } = upgrades.get(request) as Upgrade
    // The entry's value leads back to its key (response → reply → request), and V8's young-generation
    // GC keeps such an entry whole: left here, it would drag the request into the old generation.
    upgrades.delete(request)
    releaseUpgradeResponse(response, tcp)
    // An upgrade whose hooks were still running when app.close() began: it is too late to join.
    if (sessions.hub.closing) {
      socket.close(CLOSE_GOING_AWAY, 'server shutting down')
      return
    }
    const session = new Session(socket, frameWriter(socket, tcp), sessions, auth, request)
    sessions.hub.add(session)
    listen(session, { tcp, heartbeat, replaceErrorListener: ownsErrorHandler })
    const initial = new Set(request.query.channels?.split(','))
    if (options.personalChannels && session.personal !== undefined) initial.add(session.personal)
    if (initial.size > 0) session.subscribeAtConnect(initial)
    // Channels the back end put this identity in (the token's `join` claim, or authorize()'s).
    for (const channel of new Set(auth?.join?.filter(isValidChannel))) session.subscribeFromServer(channel)
    options.commands.catchUp(session, since)
  })
}

export default websocketRoute
