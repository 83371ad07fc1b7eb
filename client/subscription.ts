import { BroadcastError } from './errors.js'
import { call } from './emitter.js'
import type { Filter, Position, ServerFrame, SubscribedInfo, SubscriptionHandlers } from './types.js'

/** One channel of a `BroadcastClient`, as `client.subscribe()` returns it. */
export interface Subscription {
  readonly channel: string
  /** Resolves at the first `subscribed` reply; rejects when the hub refuses the subscription, or it ends first. */
  readonly ready: Promise<SubscribedInfo>
  /** The last position seen on the channel (channels with history only). */
  readonly position: Position | undefined
  /** Stops the subscription; nothing more is delivered to its handlers. */
  unsubscribe (): void
}

/**
 * A subscription's state between reconnects: where its stream stands, so that a resume asks for
 * exactly what comes after it and what arrives twice is dropped.
 */
export class ChannelSubscription implements Subscription {
  readonly ready: Promise<SubscribedInfo>
  position: Position | undefined
  /** A subscribe retried after `FRB_BUS_UNAVAILABLE`, and how many in a row. */
  retry: ReturnType<typeof setTimeout> | undefined
  failures = 0
  /** It had a `subscribed` reply: messages it later finds in the history without having seen them were missed. */
  private synced = false
  /**
   * A subscribe is on its way. Messages that arrive before its reply (live ones after a gap) are
   * dropped: the reply's replay has them, in order, or the reply says they are lost.
   */
  private awaiting = false
  /** The epoch the subscribe on its way resumes in. */
  private asked: string | undefined
  private settle!: { resolve: (info: SubscribedInfo) => void, reject: (error: BroadcastError) => void }

  constructor (
    readonly channel: string,
    private readonly handlers: SubscriptionHandlers,
    private readonly filter: Filter | undefined,
    readonly unsubscribe: () => void
  ) {
    this.ready = new Promise((resolve, reject) => { this.settle = { resolve, reject } })
    // Whoever does not await `ready` hears of a refusal through onError, not as an unhandled rejection.
    this.ready.catch(() => {})
  }

  /** The subscribe frame: a resume from the last position seen, when there is one. */
  frame (): string {
    this.awaiting = true
    const { channel, position } = this
    this.asked = position?.epoch
    const { filter } = this
    return JSON.stringify({
      type: 'subscribe',
      channel,
      ...position !== undefined && { since: position.offset, epoch: position.epoch },
      ...filter !== undefined && { filter }
    })
  }

  /** Handles a `subscribed` reply; true when the subscription must be asked for again (a resume from the start). */
  subscribed ({ recovered, offset, epoch }: ServerFrame): boolean {
    clearTimeout(this.retry)
    this.failures = 0
    this.awaiting = false
    const { channel, position } = this
    const at = epoch === undefined ? undefined : { offset: offset as number, epoch }
    if (recovered === undefined && this.synced && position === undefined && at !== undefined) {
      // The channel had no history when this subscription last stood, and has one now: all of it
      // came since, unseen. A resume from its start replays it (or says it cannot).
      this.position = { offset: 0, epoch: at.epoch }
      return true
    }
    if (recovered === false && at !== undefined && this.asked !== undefined && at.epoch !== this.asked) {
      // The history was lost and started again: what came after the last message seen in the old
      // one is gone, but the new one may be whole. A resume from its start replays it, or says not.
      return this.restart(at.epoch)
    }
    if (recovered === false) {
      // Nothing was replayed; messages after the reply's offset follow. One already seen past it
      // (same epoch) stays the mark, so it is not delivered again.
      this.position = position !== undefined && at !== undefined && position.epoch === at.epoch && position.offset > at.offset ? position : at
      call(this.handlers.onReset, { channel, ...this.position })
    } else if (position === undefined) {
      this.position = at
    }
    this.synced = true
    const info: SubscribedInfo = { channel, ...at, ...recovered !== undefined && { recovered } }
    this.settle.resolve(info)
    call(this.handlers.onSubscribed, info)
    return false
  }

  /** Handles a message; true when the subscription must be asked for again (a resume from the start of a new history). */
  message ({ data, offset, epoch, tags }: ServerFrame): boolean {
    const { channel, position } = this
    if (this.awaiting) return false
    if (offset !== undefined && epoch !== undefined) {
      // At-least-once: a resume or a repeated subscribe may send again what was already seen.
      if (position?.epoch === epoch && offset <= position.offset) return false
      // The history started again (expired or lost) and this is not its first message: the
      // messages before it in the new history are asked for.
      if (position !== undefined && position.epoch !== epoch && offset > 1) return this.restart(epoch)
      this.position = { offset, epoch }
      // Whether anything was lost at the end of the old history cannot be told: the application is told to reload.
      if (position !== undefined && position.epoch !== epoch) call(this.handlers.onReset, { channel, offset: 0, epoch })
    }
    call(this.handlers.onMessage, data, { channel, offset, epoch, ...tags !== undefined && { tags } })
    return false
  }

  /** The history changed under the subscription: a reset, and a resume from the new history's start. */
  private restart (epoch: string): true {
    this.position = { offset: 0, epoch }
    call(this.handlers.onReset, { channel: this.channel, offset: 0, epoch })
    return true
  }

  presence ({ type, identity }: ServerFrame): void {
    call(type === 'join' ? this.handlers.onJoin : this.handlers.onLeave, { channel: this.channel, identity })
  }

  /** The hub refused the subscription: it is over. */
  fail (error: BroadcastError): void {
    this.end(error)
    call(this.handlers.onError, error)
  }

  /** Ended by the application or the client: a pending `ready` rejects; settled, it stays as it was. */
  end (error: BroadcastError): void {
    clearTimeout(this.retry)
    this.settle.reject(error)
  }
}
