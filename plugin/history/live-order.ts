import type { FastifyBaseLogger } from 'fastify'
import type { HistoryPage } from '../bus/bus.js'
import type { BroadcastStats } from '../stats.js'
import { readPosition, type Position } from './sequence.js'

export interface LiveOrderHooks {
  /** Hands one message, in offset order, to the channel's sockets, with its position (read once here). */
  deliver: (channel: string, frame: Buffer, position: Position | undefined) => void
  /** Reads up to `limit` messages after `since` from the channel's history. */
  fetch: (channel: string, since: number, limit: number) => Promise<HistoryPage | undefined>
  /** Tells the channel's sockets that messages were lost here and they should resume. */
  reportGap: (channel: string) => void
}

interface ChannelState {
  epoch: string
  /** The offset of the last message delivered. */
  last: number
  /** Messages that arrived while a gap is being repaired, in arrival order. */
  held: Buffer[] | undefined
  /** The subscriber reconnected during a repair: check the history again once it is done. */
  catchUpAfter: boolean
}

/**
 * Keeps each channel's live messages in offset order on this instance. A message whose
 * predecessor never arrived (the subscriber connection was lost, Redis dropped it as slow) means
 * messages were missed: they are read back from the channel's history and delivered first, or,
 * when that cannot be done, the channel's sockets are told with a gap frame.
 */
export class LiveOrder {
  private readonly channels = new Map<string, ChannelState>()

  constructor (
    private readonly hooks: LiveOrderHooks,
    /** The most messages one repair reads back; a larger gap is reported. */
    private readonly maxRepair: number,
    private readonly stats: BroadcastStats,
    private readonly log: FastifyBaseLogger
  ) {}

  accept (channel: string, frame: Buffer): void {
    const position = readPosition(frame, channel)
    if (position === undefined) {
      // Not kept in history (presence events, channels without history): nothing to order.
      this.hooks.deliver(channel, frame, undefined)
      return
    }
    const state = this.channels.get(channel)
    if (state?.held !== undefined) state.held.push(frame)
    else this.place(channel, state, frame, position)
  }

  /**
   * Where a channel stands when a client joins it: a channel with no live message here yet starts
   * from there, so a message missed before the first live one still shows as a gap.
   */
  seed (channel: string, { offset, epoch }: Position): void {
    if (!this.channels.has(channel)) this.channels.set(channel, { epoch, last: offset, held: undefined, catchUpAfter: false })
  }

  /** Whether this instance has delivered the channel's messages up to `position` (in its epoch). */
  hasPassed (channel: string, { offset, epoch }: Position): boolean {
    const state = this.channels.get(channel)
    // Nothing at or below `last` of its epoch is ever delivered again, repair or not.
    return state !== undefined && state.epoch === epoch && state.last >= offset
  }

  /** The channel has no listener left here: its next message starts afresh. */
  forget (channel: string): void {
    this.channels.delete(channel)
  }

  /**
   * After the subscriber connection came back: messages published while it was away arrived
   * nowhere, and the next live message may be far off, so each channel's history is checked now.
   */
  catchUp (): void {
    for (const [channel, state] of this.channels) {
      if (state.held !== undefined) {
        state.catchUpAfter = true
        continue
      }
      state.held = []
      void this.repair(channel, state, undefined)
    }
  }

  private place (channel: string, state: ChannelState | undefined, frame: Buffer, { offset, epoch }: Position): void {
    if (state === undefined || state.epoch !== epoch) {
      // The first message here, or the history was lost and started again: no predecessor to wait for.
      this.channels.set(channel, { epoch, last: offset, held: undefined, catchUpAfter: false })
      this.hooks.deliver(channel, frame, { offset, epoch })
    } else if (offset === state.last + 1) {
      state.last = offset
      this.hooks.deliver(channel, frame, { offset, epoch })
    } else if (offset > state.last) {
      state.held = [frame]
      void this.repair(channel, state, offset - 1)
    }
    // An offset already delivered (read back by a repair, then arriving live) is not sent twice.
  }

  /**
   * Delivers a new epoch's messages 1 … `top` when the history holds exactly those. When it does
   * not (trimmed, or too many to read back), or the read fails, the gap frame stands alone.
   */
  private async readNewEpoch (channel: string, state: ChannelState, top: number): Promise<void> {
    if (top > this.maxRepair) return
    const page = await this.hooks.fetch(channel, 0, top).catch(() => undefined)
    if (this.channels.get(channel) !== state || page === undefined || page.epoch !== state.epoch || !isRun(page, 0, top)) return
    for (const message of page.messages) this.hooks.deliver(channel, message.frame, { offset: message.offset, epoch: page.epoch })
    this.stats.gapsRepaired++
  }

  /** Reads the messages after `state.last` (up to `upTo`, or to the channel's top) and delivers them. */
  private async repair (channel: string, state: ChannelState, upTo: number | undefined): Promise<void> {
    const after = state.last
    const wanted = upTo === undefined ? this.maxRepair : upTo - after
    let page: HistoryPage | undefined
    let failed = wanted > this.maxRepair
    if (!failed) {
      try {
        page = await this.hooks.fetch(channel, after, wanted)
      } catch (err) {
        failed = true
        this.log.warn({ err, channel }, 'reading back missed messages failed')
      }
    }
    // Nobody listens here any more: whatever was held has no one to go to.
    if (this.channels.get(channel) !== state) return
    if (upTo === undefined && page === undefined && !failed) {
      // Catching up on a channel whose history is gone: nothing was published since it expired.
    } else if (page !== undefined && page.epoch === state.epoch && isRun(page, after, upTo ?? page.offset)) {
      for (const message of page.messages) this.hooks.deliver(channel, message.frame, { offset: message.offset, epoch: page.epoch })
      state.last = upTo ?? page.offset
      if (state.last > after) {
        this.stats.gapsRepaired++
        this.log.info({ channel, after, upTo: state.last }, 'missed messages read back from history and delivered')
      }
    } else {
      this.stats.gapsReported++
      this.log.warn({ channel, after, upTo }, 'missed messages could not be read back: the channel\'s clients were sent a gap frame')
      this.hooks.reportGap(channel)
      if (upTo !== undefined) state.last = upTo
      else if (page !== undefined) {
        // The history started again (lost, or trimmed past what was missed): follow the new one.
        const newEpoch = page.epoch !== state.epoch
        state.epoch = page.epoch
        state.last = page.offset
        // Every message of a new epoch (a failover, a history that expired) was published since it
        // began, and none reached this instance live, or it would be in that epoch already: they
        // follow the gap frame, when the history still holds them all.
        if (newEpoch) {
          await this.readNewEpoch(channel, state, page.offset)
          // Nobody listens here any more (forgotten during the read): nothing is held for anyone.
          if (this.channels.get(channel) !== state) return
        }
      }
    }
    const held = state.held as Buffer[]
    state.held = undefined
    for (let index = 0; index < held.length; index++) {
      // place() may have started a new state (a new epoch): each message goes to the current one;
      // and a delivery may have closed the channel's last socket (a slow consumer), ending it.
      const current = this.channels.get(channel)
      if (current === undefined) return
      if (current.held !== undefined) {
        // A new gap opened while releasing: the rest waits behind it, in order.
        current.held.push(...held.slice(index))
        return
      }
      this.place(channel, current, held[index], readPosition(held[index], channel) as Position)
    }
    const current = this.channels.get(channel)
    if (current?.catchUpAfter === true && current.held === undefined) {
      current.catchUpAfter = false
      current.held = []
      void this.repair(channel, current, undefined)
    }
  }
}

/** Whether the page holds exactly the offsets after+1 … upTo, in order. */
export function isRun ({ messages }: HistoryPage, after: number, upTo: number): boolean {
  if (messages.length !== upTo - after) return false
  return messages.every((message, index) => message.offset === after + 1 + index)
}
