import type { FastifyBaseLogger } from 'fastify'
import { TokenBucket } from '../security/token-bucket.js'
import type { PresenceChange, PresenceStore } from './store.js'

/** Presence changes one identity may cause on one channel: a few at once, then one a second. */
const CHANGE_BURST = 4
const CHANGES_PER_SECOND = 1
/** How often changes held back by that limit are looked at again, in milliseconds. */
const DEFERRED_CHECK = 250

/** A refresh says "still here": it changes nothing, so it never cancels nor costs a change. */
type Change = PresenceChange[0] | 'refresh'

export interface PresenceOptions {
  /** Whether a channel's members are tracked. */
  tracked: (channel: string) => boolean
  /** Whether a channel's subscribers get join and leave frames. */
  events: (channel: string) => boolean
  /** How long an instance's entries outlive it, in milliseconds: they are refreshed three times as often. */
  ttl: number
  /** Whether connections without an identity (no auth configured) are tracked. */
  anonymous: boolean
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
  /**
   * Per channel and identity, the connections here that have it (one, or a set of several: most
   * identities have one connection, and a set each would cost ~100 bytes per connection); the
   * store hears of the first and the last.
   */
  private readonly local = new Map<string, Map<string, object | Set<object>>>()
  /** Per channel, the last update sent or queued: the next one waits for it, so the store sees them in order. */
  private readonly queues = new Map<string, Promise<void>>()
  /**
   * Per channel, the changes gathered while an update is in flight: they go out together in the
   * next one, so a thousand clients joining at once cost a few round trips, not a thousand.
   */
  private readonly batches = new Map<string, { changes: Map<string, Change>, done: Promise<void> }>()
  /** Per channel, changes over an identity's budget: they go out when it refills, cancelled by their opposite meanwhile. */
  private readonly deferred = new Map<string, Map<string, Change>>()
  /** Per channel and identity (`channel\nidentity`), the budget of changes; dropped once full again. */
  private readonly budgets = new Map<string, TokenBucket>()
  private timer: NodeJS.Timeout | undefined
  private deferredTimer: NodeJS.Timeout | undefined

  constructor (
    private readonly store: PresenceStore,
    private readonly options: PresenceOptions,
    private readonly log: FastifyBaseLogger
  ) {}

  tracks (channel: string): boolean {
    return this.options.tracked(channel)
  }

  /** Whether a connection with this identity (undefined: anonymous) is tracked on `channel`. */
  tracksMember (channel: string, identity: unknown): boolean {
    return (identity !== undefined || this.options.anonymous) && this.options.tracked(channel)
  }

  /** Resolves once the store has the identity (or has failed to take it: that is logged, not thrown). */
  async join (channel: string, identity: string, connection: object): Promise<void> {
    let identities = this.local.get(channel)
    if (identities === undefined) {
      identities = new Map()
      this.local.set(channel, identities)
    }
    const connections = identities.get(identity)
    if (connections === undefined) {
      identities.set(identity, connection)
      this.send(channel, 'join', identity)
    } else if (connections instanceof Set) {
      connections.add(connection)
    } else if (connections !== connection) {
      identities.set(identity, new Set([connections, connection]))
    }
    // This identity's join (or another tab's) may still be on its way: this one is there once it is done.
    await this.queues.get(channel)
  }

  /** Leaves only what `join` counted: a connection whose subscription failed was never present. */
  leave (channel: string, identity: string, connection: object): void {
    const identities = this.local.get(channel)
    if (identities === undefined) return
    const connections = identities.get(identity)
    if (connections instanceof Set) {
      connections.delete(connection)
      if (connections.size === 1) identities.set(identity, [...connections][0])
      return
    }
    if (connections !== connection) return
    identities.delete(identity)
    if (identities.size === 0) this.local.delete(channel)
    this.send(channel, 'leave', identity)
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
    clearTimeout(this.deferredTimer)
    // Whatever the budgets, the last word goes out: a member that left must not stay listed.
    for (const [channel, changes] of this.deferred) for (const [identity, kind] of changes) this.enqueue(channel, kind, identity)
    this.deferred.clear()
    await Promise.all(this.queues.values())
  }

  private refresh (): void {
    for (const [channel, identities] of this.local) {
      // An update still waiting to go out (Redis is slow) refreshes the channel when it goes; the
      // same identities added again at every tick would only make it longer.
      if (this.batches.has(channel)) continue
      // A join still held back by its budget is not in the store yet: a refresh would put it there
      // behind the budget's back, and a leave that then cancels the held join would never go out.
      const held = this.deferred.get(channel)
      for (const identity of identities.keys()) if (held?.has(identity) !== true) this.enqueue(channel, 'refresh', identity)
    }
    const now = Date.now()
    for (const [key, budget] of this.budgets) if (budget.isFull(now)) this.budgets.delete(key)
  }

  /**
   * A join or leave. Within an update still to go out, a change and its opposite cancel (a client
   * that subscribes and unsubscribes at once is never seen by the others); beyond an identity's
   * budget, a change waits and may be cancelled meanwhile, so a client flapping its subscription
   * costs the channel's members at most about one event a second.
   */
  private send (channel: string, kind: PresenceChange[0], identity: string): void {
    const held = this.deferred.get(channel)
    if (held?.has(identity) === true) {
      merge(held, identity, kind)
      if (held.size === 0) this.deferred.delete(channel)
      return
    }
    const waiting = this.batches.get(channel)?.changes
    if (waiting?.has(identity) === true) {
      merge(waiting, identity, kind)
      return
    }
    if (this.admits(channel, identity)) {
      this.enqueue(channel, kind, identity)
      return
    }
    if (held === undefined) this.deferred.set(channel, new Map([[identity, kind]]))
    else held.set(identity, kind)
    this.deferredTimer ??= setTimeout(() => { this.releaseDeferred() }, DEFERRED_CHECK).unref()
  }

  private admits (channel: string, identity: string): boolean {
    const key = `${channel}\n${identity}`
    let budget = this.budgets.get(key)
    if (budget === undefined) {
      budget = new TokenBucket(CHANGES_PER_SECOND, CHANGE_BURST)
      this.budgets.set(key, budget)
    }
    return budget.take()
  }

  private releaseDeferred (): void {
    this.deferredTimer = undefined
    for (const [channel, changes] of this.deferred) {
      for (const [identity, kind] of changes) {
        if (!this.admits(channel, identity)) continue
        changes.delete(identity)
        this.enqueue(channel, kind, identity)
      }
      if (changes.size === 0) this.deferred.delete(channel)
    }
    if (this.deferred.size > 0) this.deferredTimer = setTimeout(() => { this.releaseDeferred() }, DEFERRED_CHECK).unref()
  }

  /** Adds a change to the channel's next update, which goes out once the one before it is done. */
  private enqueue (channel: string, kind: Change, identity: string): void {
    const waiting = this.batches.get(channel)
    if (waiting !== undefined) {
      merge(waiting.changes, identity, kind)
      return
    }
    const changes = new Map<string, Change>([[identity, kind]])
    const previous = this.queues.get(channel) ?? Promise.resolve()
    const done = previous.then(async () => {
      // From here on, new changes wait for the next update.
      this.batches.delete(channel)
      if (changes.size === 0) return
      const update: PresenceChange[] = []
      for (const [identity, change] of changes) update.push([change === 'leave' ? 'leave' : 'join', identity])
      await this.store.update(channel, update, this.options.events(channel))
    }).catch((err: unknown) => {
      // Not fatal: a lost join comes back with the next refresh, a lost leave expires with the TTL.
      this.log.warn({ err, channel }, 'presence update failed')
    })
    this.batches.set(channel, { changes, done })
    this.queues.set(channel, done)
    void done.then(() => { if (this.queues.get(channel) === done) this.queues.delete(channel) })
  }
}

/**
 * Adds `kind` to the changes still to go out for `identity`: a join and a leave cancel (the store
 * never knew of either), a join or leave outweighs a refresh, and a refresh adds nothing to them.
 */
function merge (changes: Map<string, Change>, identity: string, kind: Change): void {
  const before = changes.get(identity)
  if (before === undefined || before === 'refresh') changes.set(identity, kind)
  else if (kind !== 'refresh' && kind !== before) changes.delete(identity)
}
