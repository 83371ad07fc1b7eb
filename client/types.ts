import type { BroadcastError } from './errors.js'

/** Where a channel's stream stands: `offset` in the history named `epoch`. */
export interface Position {
  offset: number
  epoch: string
}

/** What comes with each message. `offset` and `epoch` only for a channel with history. */
export interface MessageInfo {
  channel: string
  offset?: number
  epoch?: string
  /** The tags the message was published with, if any. */
  tags?: Tags
}

/** A message's tags, for subscription filters: `{"symbol":"AAPL"}`. */
export type Tags = Record<string, string>

/** Which tag values a subscription takes: a message passes when, for every key, its tag has one of the listed values. */
export type Filter = Record<string, string[]>

export interface SubscribeOptions {
  /** Only the messages whose tags match (`{"symbol":["AAPL","MSFT"]}`), live and in every resume. */
  filter?: Filter
}

/** The hub's `subscribed` reply: `recovered` only when the client resumed; the position only for a channel with history. */
export interface SubscribedInfo {
  channel: string
  offset?: number
  epoch?: string
  recovered?: boolean
}

/** Where the channel goes on from after a reset: the messages after `offset` of `epoch` follow. */
export interface ResetInfo {
  channel: string
  offset?: number
  epoch?: string
}

/** An identity's first connection to the channel (join) or its last one gone (leave), on any instance. */
export interface PresenceEvent {
  channel: string
  identity: unknown
}

export interface SubscriptionHandlers {
  /** Each message once, in offset order (offsets may skip: a skipped offset is not a loss). */
  onMessage?: (data: unknown, info: MessageInfo) => void
  /**
   * Messages were lost and the history could not give them back (`recovered: false`, the history
   * restarted under a new epoch, or a resubscribe found messages the client never saw): reload the
   * state from the source of truth; the messages after `info.offset` follow.
   */
  onReset?: (info: ResetInfo) => void
  /** Every `subscribed` reply: the first one, and each after a reconnect or a gap. */
  onSubscribed?: (info: SubscribedInfo) => void
  /** The hub refused the subscription (e.g. `FRB_CHANNEL_FORBIDDEN`): it is over, and `ready` rejects if still pending. */
  onError?: (error: BroadcastError) => void
  onJoin?: (event: PresenceEvent) => void
  onLeave?: (event: PresenceEvent) => void
}

/** What the hub sends; every field but `type` depends on it. */
export interface ServerFrame {
  type: string
  channel?: string
  data?: unknown
  offset?: number
  epoch?: string
  recovered?: boolean
  code?: string
  message?: string
  identity?: unknown
  tags?: Tags
}
