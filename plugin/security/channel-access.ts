import type { FastifyRequest } from 'fastify'
import { ChannelForbiddenError } from '../errors.js'
import type { CanSubscribe } from '../types.js'
import type { Authenticator } from './connect-auth.js'
import { isGranted } from './grants.js'
import { isPersonalChannel, personalChannel } from '../personal.js'

/**
 * Who may read a channel: subscribe to it, read its history, list its presence. One rule for all
 * three, so a client can never read over HTTP what it could not subscribe to.
 */
export interface ChannelAccess {
  /** Whether a client with this identity and these grants may read `channel`. */
  allows (identity: unknown, grants: readonly string[] | undefined, channel: string): Promise<boolean>
  /** For an HTTP read: authenticates the request, then refuses it (401, 403) unless it may read `channel`. */
  check (request: FastifyRequest, channel: string): Promise<void>
}

export function createChannelAccess (authenticator: Authenticator, canSubscribe: CanSubscribe | undefined): ChannelAccess {
  async function allows (identity: unknown, grants: readonly string[] | undefined, channel: string): Promise<boolean> {
    // A personal channel is its owner's alone, whatever grants or hooks say.
    if (isPersonalChannel(channel)) return personalChannel(identity) === channel
    if (canSubscribe !== undefined) return await canSubscribe(identity, channel)
    // No auth configured: every channel is open, as it is to WebSocket clients.
    if (!authenticator.enabled) return true
    return isGranted(grants ?? [], channel)
  }
  return {
    allows,
    async check (request, channel) {
      const auth = await authenticator.authenticate(request)
      if (!await allows(auth?.identity, auth?.channels, channel)) throw new ChannelForbiddenError(JSON.stringify(channel))
    }
  }
}
