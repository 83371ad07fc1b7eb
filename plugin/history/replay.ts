import type { Bus, HistoryPage } from '../bus/bus.js'
import type { Resume, SubscribeOutcome } from '../frames.js'
import type { BroadcastStats } from '../stats.js'
import { isRun, type LiveOrder } from './live-order.js'
import type { Position } from './sequence.js'

// Gap-free resume, in one place. A client that subscribes to a channel with history (with or
// without `since`) goes through five steps:
//   hold    its live messages of the channel are held (ChannelSync, from join on);
//   read    the history after `since` is read, once the Redis subscription is live;
//   reply   the subscribed frame goes out, with the position and `recovered`;
//   replay  the history's messages are queued, when the resume could be honoured;
//   release the held messages follow, and live messages the replay already had are skipped
//           until the live stream passes the replay's last offset.

/** A live message of a channel with history, and its position (undefined for gap and presence frames). */
export interface LiveMessage {
  payload: Buffer
  position: Position | undefined
}

/** What becomes of a live message offered to a channel being joined. */
export type Offer = 'hold' | 'skip' | 'send' | 'caught-up'

/** One subscriber's channel being joined: its live messages are held, then compared with the replay. */
export class ChannelSync {
  /** Live messages that arrived while the history was read; undefined once the replay is queued. */
  private held: LiveMessage[] | undefined = []
  /** Bytes of the held messages: unsent data, like a write queue's, and bounded like one. */
  heldBytes = 0
  /** The history the replay came from, and its last offset. */
  private epoch: string | undefined
  private top = 0

  /**
   * `hold` and `skip`: not sent. `send`: sent, the sync goes on. `caught-up`: sent, and the live
   * stream is past the replay: from here on it is in offset order and the sync can end.
   */
  offer (message: LiveMessage): Offer {
    if (this.held !== undefined) {
      this.held.push(message)
      this.heldBytes += message.payload.length
      return 'hold'
    }
    const { position } = message
    // Gap frames and presence events carry no offset: they are never part of a replay.
    if (position === undefined) return 'send'
    if (position.epoch === this.epoch && position.offset <= this.top) return 'skip'
    return 'caught-up'
  }

  /**
   * The replay (history `epoch`, up to `top`) is queued: returns the held messages, to be offered
   * again in order; undefined when it was released already.
   */
  release (epoch: string | undefined, top: number): LiveMessage[] | undefined {
    const held = this.held
    this.held = undefined
    this.heldBytes = 0
    this.epoch = epoch
    this.top = top
    return held
  }
}

/** What the replay needs of a subscriber. */
export interface ReplayTarget {
  readonly channels: ReadonlySet<string>
  enqueue (payload: Buffer): boolean
  /** Whether the target's filter on `channel` (if any) lets this frame through. */
  accepts (channel: string, payload: Buffer): boolean
  /**
   * Whether `bytes` more may be queued: a replay counts against the slow-consumer budget before
   * it is written, and a target that would pass it is closed as a slow consumer instead.
   */
  admitReplay (bytes: number): boolean
  /** Ends the hold of `channel` after the replay up to `top`; `passed`: nothing up to it can come again. */
  releaseSync (channel: string, epoch: string | undefined, top: number, passed: boolean): void
}

/** Whether a page of history honours a resume: same epoch, nothing missing, within `maxReplay` and the byte cap. */
export function honoursResume (page: HistoryPage | undefined, resume: Resume, maxReplay: number): page is HistoryPage {
  return page !== undefined && page.epoch === resume.epoch && resume.since <= page.offset && page.truncated !== true &&
    page.offset - resume.since <= maxReplay && isRun(page, resume.since, page.offset)
}

/** What a resume may cost: messages (`maxReplay`) and bytes of frames. */
export interface ReplayLimits {
  maxReplay: number
  maxBytes: number
}

export class Replayer {
  constructor (
    private readonly bus: Bus,
    private readonly liveOrder: LiveOrder,
    private readonly limits: ReplayLimits,
    private readonly stats: BroadcastStats
  ) {}

  /**
   * Read, reply, replay, release, once the subscription is live. `sole`: the target is the
   * channel's only subscriber here; `synced`: the target's live messages are being held.
   */
  async run (target: ReplayTarget, channel: string, resume: Resume | undefined, reply: (outcome: SubscribeOutcome) => void,
    sole: () => boolean, synced: boolean, listed: Promise<void> | undefined): Promise<void> {
    const { maxReplay, maxBytes } = this.limits
    // Entries are read only for a resume that can be honoured: same epoch, not too far behind,
    // within the byte cap (checked by the read itself, before any entry leaves Redis).
    const query = resume === undefined || resume.throttled === true
      ? { limit: 0 }
      : { since: resume.since, limit: maxReplay, epoch: resume.epoch, maxBytes, whole: true }
    const [page] = await Promise.all([this.bus.readHistory(channel, query), listed])
    // Unsubscribed or gone while the history was read: nothing more to send.
    if (!target.channels.has(channel)) return
    const position = page === undefined ? undefined : { offset: page.offset, epoch: page.epoch }
    // A channel that has had no live message here yet starts from this position, so a message
    // missed before the first one arrives is still noticed. Only for its sole listener: others
    // that joined before it had a history may still await messages up to this position.
    if (position !== undefined && sole()) this.liveOrder.seed(channel, position)
    let replay = false
    if (resume !== undefined) {
      replay = honoursResume(page, resume, maxReplay)
      if (replay) this.stats.resumed++
      else this.stats.resumeFailures++
    }
    if (replay) {
      let bytes = 0
      for (const message of (page as HistoryPage).messages) bytes += message.frame.length
      // Closed as a slow consumer: nothing more to send.
      if (!target.admitReplay(bytes)) return
    }
    reply(resume === undefined ? { position } : { position, recovered: replay })
    if (replay) for (const message of (page as HistoryPage).messages) if (target.accepts(channel, message.frame)) target.enqueue(message.frame)
    if (synced) {
      // Once this instance's live stream has passed the replay, no message up to it can come
      // again, and the target need not compare any (nor keep a record per channel).
      const passed = position === undefined || this.liveOrder.hasPassed(channel, position)
      target.releaseSync(channel, position?.epoch, position?.offset ?? 0, passed)
    }
  }
}
