import type { FastifyRequest } from 'fastify'
import type { JWT } from '@fastify/jwt'
import { ForbiddenError, UnauthorizedError } from '../errors.js'
import { bearerCredential } from './bearer.js'
import { isValidChannel } from '../channel.js'
import type { Authorize, ConnectionAuth } from '../types.js'

/** The subprotocol a browser offers before its token: `new WebSocket(url, ['bearer', token])`. */
export const BEARER_PROTOCOL = 'bearer'
/** How far ahead of this server's clock a token's issuer's clock may run, in milliseconds. */
export const IAT_CLOCK_SKEW = 5000

/**
 * Finds a connect token where each kind of client can put one: the Authorization header
 * (servers), `?token=` or a `bearer, <token>` subprotocol pair (browsers, which cannot set
 * headers on a WebSocket).
 */
export function extractToken (request: FastifyRequest): string | undefined {
  // A client that sends Authorization meant it: no falling back to other places.
  if (request.headers.authorization !== undefined) return bearerCredential(request.headers.authorization)
  const { token } = request.query as { token?: unknown }
  if (typeof token === 'string' && token !== '') return token
  const protocols = request.headers['sec-websocket-protocol']
  if (protocols !== undefined) {
    const entries = protocols.split(',').map((entry) => entry.trim())
    const at = entries.indexOf(BEARER_PROTOCOL)
    if (at !== -1 && at + 1 < entries.length) return entries[at + 1]
  }
  return undefined
}

/** Verifies a token and turns its claims into a connection's identity and grants. */
export function authFromToken (jwt: JWT, token: string): ConnectionAuth {
  let claims: Record<string, unknown>
  try {
    claims = jwt.verify<Record<string, unknown>>(token)
  } catch (err) {
    throw new UnauthorizedError((err as Error).message)
  }
  // A token issued in the future comes from a wrong clock or a forger: either way, not trusted.
  if (claims.iat !== undefined && (typeof claims.iat !== 'number' || claims.iat * 1000 > Date.now() + IAT_CLOCK_SKEW)) {
    throw new UnauthorizedError('the token\'s iat claim is in the future')
  }
  const channels = Array.isArray(claims.channels)
    ? claims.channels.filter((grant): grant is string => typeof grant === 'string')
    : []
  // `join`: channels the back end put the user in; names only, and only valid ones.
  const join = Array.isArray(claims.join) ? claims.join.filter(isValidChannel) : undefined
  return {
    identity: claims,
    channels,
    join,
    // exp is a required claim (see the jwt verify options in plugin/index.ts).
    expiresAt: (claims.exp as number) * 1000
  }
}

export interface Authenticator {
  /** Whether connecting needs credentials at all (and so subscribing needs grants). */
  readonly enabled: boolean
  /** Runs before the upgrade: resolves with the connection's auth, or throws a 401/403. */
  authenticate (request: FastifyRequest): Promise<ConnectionAuth | undefined>
  /** Verifies a token sent over an open socket (and runs `authorize` again); undefined when JWT is off. */
  refresh: ((token: string, request: FastifyRequest) => Promise<ConnectionAuth>) | undefined
}

export function createAuthenticator (jwt: JWT | undefined, authorize: Authorize | undefined): Authenticator {
  // authorize() has the last word at connect and at every refresh, so a ban or narrower
  // grants it hands out cannot be undone by presenting a fresh token.
  async function decide<T extends ConnectionAuth | undefined> (request: FastifyRequest, auth: T): Promise<T | ConnectionAuth> {
    if (authorize === undefined) return auth
    const result = await authorize(request, auth)
    if (result === null || result === undefined || result === false) throw new ForbiddenError('refused by authorize()')
    return result
  }
  return {
    enabled: jwt !== undefined || authorize !== undefined,
    refresh: jwt === undefined ? undefined : async (token, request) => await decide(request, authFromToken(jwt, token)),
    async authenticate (request) {
      let auth: ConnectionAuth | undefined
      if (jwt !== undefined) {
        const token = extractToken(request)
        if (token === undefined) throw new UnauthorizedError('no token in the Authorization header, ?token= or a bearer subprotocol')
        auth = authFromToken(jwt, token)
      }
      return await decide(request, auth)
    }
  }
}
