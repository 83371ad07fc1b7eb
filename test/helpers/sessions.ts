import type { FastifyInstance } from 'fastify'
import type { Session } from '../../plugin/session/session.js'

/**
 * The server side of an app's open connections, whole: `broadcastConnections` shows users a narrow
 * view of each, and tests that break or inspect a socket need the session behind it.
 */
export function sessionsOf (app: FastifyInstance): Session[] {
  return [...app.broadcastConnections] as Session[]
}
