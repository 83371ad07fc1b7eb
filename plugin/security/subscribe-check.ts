import type { FastifyRequest } from 'fastify'
import type { CanSubscribe } from '../options.js'
import { ChannelForbiddenError } from '../errors.js'
import type { Authenticator } from './connect-auth.js'
import { isGranted } from './grants.js'

/** Whether a client with this identity and these grants may read `channel`: subscribe, history, presence. */
export type SubscribeCheck = (identity: unknown, grants: readonly string[] | undefined, channel: string) => Promise<boolean>

export function createSubscribeCheck (authenticator: Authenticator, canSubscribe: CanSubscribe | undefined): SubscribeCheck {
  return async (identity, grants, channel) => {
    if (canSubscribe !== undefined) return await canSubscribe(identity, channel)
    // No auth configured: every channel is open, as it is to WebSocket clients.
    if (!authenticator.enabled) return true
    return isGranted(grants ?? [], channel)
  }
}

/** An HTTP read of a channel (history, presence): refused (401, 403) unless its client could subscribe to it. */
export type ReadGuard = (request: FastifyRequest, channel: string) => Promise<void>

export function createReadGuard (authenticator: Authenticator, mayRead: SubscribeCheck): ReadGuard {
  return async (request, channel) => {
    const auth = await authenticator.authenticate(request)
    if (!await mayRead(auth?.identity, auth?.channels, channel)) throw new ChannelForbiddenError(JSON.stringify(channel))
  }
}
