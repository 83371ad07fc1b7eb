import type { FastifyBaseLogger } from 'fastify'
import type { PresenceStore } from './store.js'

export interface PresenceOptions {
  /** Whether a channel's members are tracked. */
  tracked: (channel: string) => boolean
  /** Whether a channel's subscribers get join and leave frames. */
  events: (channel: string) => boolean
  /** How long an instance's entries outlive it, in milliseconds: they are refreshed three times as often. */
  ttl: number
}

/** Who a connection is, for presence: the token's `sub`, a string or number identity, else the connection id. */
export function presenceIdentity (identity: unknown, connectionId: string): string {
  const subject = (identity as { sub?: unknown } | null | undefined)?.sub
  if (typeof subject === 'string') return JSON.stringify(subject)
  if (typeof identity === 'string' || (typeof identity === 'number' && Number.isFinite(identity))) return JSON.stringify(identity)
  return JSON.stringify(connectionId)
}

/**
 * This instance's share of presence. Connections are counted here per channel and identity, so
 * the store hears only when an identity comes to or leaves this instance (not of every tab), and
 * the updates of one channel go out in order, one at a time.
 */
export class Presence {
  /** Per channel and identity, the connections here that have it: the store hears of the first and the last. */
  private readonly local = new Map<string, Map<string, Set<object>>>()
  /** Per channel, the update in flight: the next one waits for it, so the store sees them in order. */
  private readonly queues = new Map<string, Promise<void>>()
  private timer: NodeJS.Timeout | undefined

  constructor (
    private readonly store: PresenceStore,
    private readonly options: PresenceOptions,
    private readonly log: FastifyBaseLogger
  ) {}

  tracks (channel: string): boolean {
    return this.options.tracked(channel)
  }

  /** Resolves once the store has the identity (or has failed to take it: that is logged, not thrown). */
  async join (channel: string, identity: string, connection: object): Promise<void> {
    let identities = this.local.get(channel)
    if (identities === undefined) {
      identities = new Map()
      this.local.set(channel, identities)
    }
    let connections = identities.get(identity)
    if (connections === undefined) {
      connections = new Set()
      identities.set(identity, connections)
      this.send(channel, [identity], [])
    }
    connections.add(connection)
    // Another tab's update of this identity may be in flight: this one is there once it is done.
    await this.queues.get(channel)
  }

  /** Leaves only what `join` counted: a connection whose subscription failed was never present. */
  leave (channel: string, identity: string, connection: object): void {
    const identities = this.local.get(channel)
    const connections = identities?.get(identity)
    if (connections === undefined || !connections.delete(connection) || connections.size > 0) return
    // connections came from identities, so it is there.
    const rest = identities as Map<string, Set<object>>
    rest.delete(identity)
    if (rest.size === 0) this.local.delete(channel)
    this.send(channel, [], [identity])
  }

  async members (channel: string): Promise<unknown[]> {
    await this.queues.get(channel)
    const members = await this.store.members(channel, this.options.events(channel))
    return members.map((identity) => JSON.parse(identity) as unknown)
  }

  /** Refreshes this instance's entries every third of the TTL, so they expire only if it dies. */
  start (): void {
    this.timer = setInterval(() => { this.refresh() }, Math.max(1, Math.floor(this.options.ttl / 3)))
    this.timer.unref()
  }

  /** Stops refreshing and waits for the updates in flight (the leaves of a clean close among them). */
  async stop (): Promise<void> {
    clearInterval(this.timer)
    await Promise.all(this.queues.values())
  }

  private refresh (): void {
    for (const [channel, identities] of this.local) this.send(channel, [...identities.keys()], [])
  }

  private send (channel: string, joined: string[], left: string[]): void {
    const previous = this.queues.get(channel) ?? Promise.resolve()
    const next = previous.then(async () => {
      await this.store.update(channel, joined, left, this.options.events(channel))
    }).catch((err: unknown) => {
      // Not fatal: a lost join comes back with the next refresh, a lost leave expires with the TTL.
      this.log.warn({ err, channel }, 'presence update failed')
    })
    this.queues.set(channel, next)
    void next.then(() => { if (this.queues.get(channel) === next) this.queues.delete(channel) })
  }
}
