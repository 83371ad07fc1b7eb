import type { HistorySettings } from '../history/settings.js'
import type { Position } from '../history/sequence.js'

/**
 * A transport between the instances of a service. `channel` is a plugin channel name, or
 * `null` for the broadcast-to-all channel every instance listens on.
 *
 * Contract shared by every implementation (test/bus-conformance.test.ts checks it):
 * - `subscribe` resolves once messages published afterwards on that channel will arrive;
 * - a message is delivered only for channels that are subscribed (and always for `null`);
 * - messages published from one instance arrive in publish order;
 * - the payload arrives as the exact bytes that were published;
 * - `publish` resolves only once the transport has taken the message, and rejects with
 *   FRB_BUS_UNAVAILABLE (503) otherwise, promptly: it never waits for a connection to come back.
 */
export interface Bus {
  readonly kind: 'redis' | 'memory'
  /** `onReconnected`: the transport lost messages while it was away and is receiving again. */
  start (onMessage: BusMessageHandler, onReconnected: () => void): Promise<void>
  publish (channel: string | null, payload: string): Promise<void>
  /**
   * Publishes several messages in order, in one round trip where the transport allows; answers
   * each with its position in its channel's history (when the channel keeps one).
   */
  publishMany (messages: readonly BusMessage[]): Promise<PublishResult[]>
  /**
   * Reads a channel's history: its current position and, when `since` is given, up to `limit`
   * messages after it. Undefined when the channel has no history (none kept, or lost).
   */
  readHistory (channel: string, query: HistoryQuery): Promise<HistoryPage | undefined>
  subscribe (channel: string): Promise<void>
  unsubscribe (channel: string): Promise<void>
  health (): BusHealth
  close (): Promise<void>
}

export interface BusMessage {
  channel: string | null
  /** The frame; for a channel kept in history, the bus inserts the position after its head. */
  payload: string
  /** The channel's history settings (channel messages only); left out, the message is only published. */
  history?: HistorySettings
  /** A message with the same key on the same channel within `idempotencyWindow` is published once. */
  idempotencyKey?: string
}

export interface PublishResult {
  /** The message's offset in its channel's history, and the history's epoch; absent without history. */
  position?: Position
  /** True when the idempotency key was seen before: nothing was published, `position` is the first one's. */
  duplicate: boolean
}

export interface HistoryQuery {
  /** Messages after this offset; left out, only the position is read. */
  since?: number
  limit: number
  /** Newest first. */
  reverse?: boolean
  /** Entries are read only from this epoch (a resume's): in another, none could be used. */
  epoch?: string
  /** Entries stop before their frames pass this many bytes (0 or left out: no cap); the page says it was cut. */
  maxBytes?: number
  /** Entries are read only when every message after `since` fits in `limit` (a resume: all or nothing). */
  whole?: boolean
}

export interface HistoryPage {
  epoch: string
  /** The offset of the channel's latest message. */
  offset: number
  /** Frames as clients receive them, with their offsets, in the order asked for. */
  messages: Array<{ offset: number, frame: Buffer }>
  /** True when `maxBytes` cut the messages short: more were there. */
  truncated?: boolean
}

export type BusMessageHandler = (channel: string | null, payload: Buffer) => void

export interface BusHealth {
  /** ok: carries messages; degraded: part of it is down; unavailable: nothing works. */
  state: 'ok' | 'degraded' | 'unavailable'
  /** What is wrong, one entry per part at fault; empty when ok. */
  reasons: string[]
  /** The state of each part, for operators. */
  checks: Record<string, string>
  /** How the bus reaches Redis; undefined for the in-process bus. */
  topology?: 'standalone' | 'sentinel' | 'cluster'
}
