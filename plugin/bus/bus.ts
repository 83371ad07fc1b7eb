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
  start (onMessage: BusMessageHandler): Promise<void>
  publish (channel: string | null, payload: string): Promise<void>
  /** Publishes several messages in order, in one round trip where the transport allows. */
  publishMany (messages: readonly BusMessage[]): Promise<void>
  subscribe (channel: string): Promise<void>
  unsubscribe (channel: string): Promise<void>
  health (): BusHealth
  close (): Promise<void>
}

export interface BusMessage {
  channel: string | null
  payload: string
}

export type BusMessageHandler = (channel: string | null, payload: Buffer) => void

export interface BusHealth {
  /** ok: carries messages; degraded: part of it is down; unavailable: nothing works. */
  state: 'ok' | 'degraded' | 'unavailable'
  /** What is wrong, one entry per part at fault; empty when ok. */
  reasons: string[]
  /** The state of each part, for operators. */
  checks: Record<string, string>
}
