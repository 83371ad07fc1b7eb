import type { CanSubscribe } from '../options.js'
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
