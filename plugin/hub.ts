import type { FastifyBaseLogger } from 'fastify'
import type { Bus } from './bus/bus.js'
import type { BroadcastStats } from './stats.js'
import { textFrame } from './websocket-frame.js'
import { gapFrame, type Resume, type SubscribeOutcome } from './frames.js'
import { CLOSE_SLOW_CONSUMER } from './close-codes.js'
import { BusUnavailableError } from './errors.js'
import { Filter, isMessageFrame, type ParsedFilter } from './tags.js'
import { Audience } from './audience.js'
import type { HistorySettings } from './history/settings.js'
import type { Position } from './history/sequence.js'
import { LiveOrder } from './history/live-order.js'
import { Replayer, type ReplayTarget } from './history/replay.js'
import { presenceIdentity, type Presence } from './presence/presence.js'
import { settleWithin } from './timeout.js'

/** What the hub needs of one connection (a Session): its channels, a queue to write to, a way out. */
export interface HubMember extends ReplayTarget {
  /** A name for logs and, when anonymous, for presence. */
  readonly id: string
  readonly identity: unknown
  /** The channels the hub has this member on; only the hub changes it. */
  readonly channels: Set<string>
  /** Bytes queued and not yet handed to the kernel. */
  readonly unsent: number
  /** The filter of the member's subscription to `channel`, if it has one: the hub delivers only what passes it. */
  filterOf (channel: string): Filter | undefined
  /** Queues a message built once for every member; false when it was not queued (held, skipped, closed). */
  deliver (channel: string | null, payload: Buffer, frame: Buffer[], position: Position | undefined): boolean
  /** Writes what this turn queued. */
  flush (): void
  /** Holds the live messages of `channel` until `releaseSync()`. */
  startSync (channel: string): void
  stopSync (channel: string): void
  /** Closes after the frames already queued. */
  close (code: number, reason: string): void
  /** Cuts the link, no close handshake. */
  terminate (): void
  /** Resolves once the socket is closed. */
  whenClosed (): Promise<void>
  /** A subscribe that was waiting for the bus failed for good (Redis refused it): the member must hear why. */
  subscribeFailed (channel: string, err: unknown): void
}

/** A subscribe waiting for the bus: the latest request for the channel is the one answered. */
interface DeferredJoin {
  resume: Resume | undefined
  reply: (outcome: SubscribeOutcome) => void
  keepsHistory: boolean
  synced: boolean
}

/**
 * How long one turn may spend writing to sockets before it yields to the event loop. A write is a
 * few microseconds: a slice is some thousands of sockets, enough to keep a burst's writes few.
 */
const FLUSH_SLICE_MS = 5
/** How long closeAll waits, after terminating the sockets that did not answer the close, for their close events. */
const TERMINATE_GRACE_MS = 1000

/** How often a subscribe waiting for the bus tries again when no reconnect says the bus is back. */
const DEFERRED_RETRY = 1000

export interface HubPolicy {
  /** Each channel's history settings: a channel with history has offsets and can be resumed. */
  historyOf: (channel: string) => HistorySettings
  /** The most messages a resuming subscriber is sent, and that a gap repair reads back. */
  maxReplay: number
  /** The most bytes of frames a resuming subscriber is sent. */
  maxReplayBytes: number
}

/**
 * The registry of this instance's connections and of who listens on which channel, and the
 * fan-out. A channel's Redis subscription is reference-counted by its local listeners: the first
 * one subscribes the instance, the last one to leave unsubscribes it, so an instance only
 * receives traffic it can deliver.
 */
export class Hub<Member extends HubMember = HubMember> {
  readonly members = new Set<Member>()
  private readonly listeners = new Map<string, Audience<Member>>()
  /** The latest SUBSCRIBE or UNSUBSCRIBE issued per channel; bus commands run in order. */
  private readonly subscriptions = new Map<string, Promise<void>>()
  /**
   * Members with frames to write, in the order they got them; written by a microtask at the end
   * of the turn, in slices when there are many (see flush).
   */
  private dirty: Member[] = []
  /** How many of `dirty` are written already, while the rest waits for the next slice. */
  private dirtyWritten = 0
  /** Called once the members dirty now are all written. */
  private afterWrites: Array<() => void> = []
  /** Keeps each channel's live messages in offset order and repairs gaps from history. */
  private readonly liveOrder: LiveOrder
  private readonly replayer: Replayer
  /** Bus subscriptions that failed: the next member to try again issues a fresh one. */
  private readonly failedSubscriptions = new WeakSet<Promise<void>>()
  /** Subscription filters by canonical key, shared by every subscriber with the same one, and how many use each. */
  private readonly filters = new Map<string, { filter: Filter, users: number }>()
  /** Per member, the channels whose subscribe waits for the bus. */
  private readonly deferred = new WeakMap<Member, Map<string, DeferredJoin>>()
  /** Resolves when the bus is back (a reconnect) or at the next retry tick, for every waiting subscribe at once. */
  private busBack: Promise<void> | undefined
  private wakeBus: (() => void) | undefined

  /** Set when the app starts closing: no new connection may join from then on. */
  closing = false
  /** Who is on which channel across instances; undefined when no channel is tracked. */
  presence: Presence | undefined

  constructor (
    private readonly bus: Bus,
    private readonly log: FastifyBaseLogger,
    private readonly policy: HubPolicy,
    private readonly stats: BroadcastStats
  ) {
    this.liveOrder = new LiveOrder({
      deliver: (channel, frame, position) => { this.deliver(channel, frame, position) },
      fetch: async (channel, since, limit) => await this.bus.readHistory(channel, { since, limit }),
      reportGap: (channel) => { this.deliver(channel, Buffer.from(gapFrame(channel))) }
    }, policy.maxReplay, stats, log)
    this.replayer = new Replayer(bus, this.liveOrder, { maxReplay: policy.maxReplay, maxBytes: policy.maxReplayBytes }, stats)
  }

  /** The one Filter for a filter's key: each distinct filter is judged once per message. */
  acquireFilter ({ key, rules }: ParsedFilter): Filter {
    let entry = this.filters.get(key)
    if (entry === undefined) {
      entry = { filter: new Filter(key, rules), users: 0 }
      this.filters.set(key, entry)
    }
    entry.users++
    return entry.filter
  }

  releaseFilter (filter: Filter): void {
    const entry = this.filters.get(filter.key) as { filter: Filter, users: number }
    if (--entry.users === 0) this.filters.delete(filter.key)
  }

  /** How many distinct filters subscriptions hold here. */
  get filterCount (): number {
    return this.filters.size
  }

  /** How many channels this instance listens on: each is one Redis subscription. */
  get channelCount (): number {
    return this.listeners.size
  }

  add (member: Member): void {
    this.members.add(member)
  }

  /** A message from the bus: messages of channels with history are put in offset order first. */
  receive (channel: string | null, payload: Buffer): void {
    if (channel === null) this.deliver(null, payload)
    // A message still on its way after the last listener left has no one to go to, and must not
    // leave ordering state behind.
    else if (this.listeners.has(channel)) this.liveOrder.accept(channel, payload)
  }

  /** The bus connection came back: read back what each channel missed meanwhile. */
  catchUp (): void {
    this.liveOrder.catchUp()
    this.wakeDeferred()
  }

  /**
   * Resolves once the member receives what is published on `channel` from now on, after `reply`
   * was told how the subscription starts. For a channel with history, live messages that arrive
   * meanwhile are held and queued after the replay (plugin/history/replay.ts).
   */
  async join (member: Member, channel: string, resume: Resume | undefined, reply: (outcome: SubscribeOutcome) => void): Promise<void> {
    if (!this.members.has(member)) return
    const waiting = this.deferred.get(member)?.get(channel)
    if (waiting !== undefined && member.channels.has(channel)) {
      // Asked again while the first request waits for the bus: the latest one is answered.
      waiting.resume = resume
      waiting.reply = reply
      return
    }
    // A new subscription holds its live messages until the subscribed reply is queued, so the
    // reply always comes first, however long the bus or presence take to confirm it. Subscribing
    // again to a channel the member is on: its live messages keep flowing as they are, unless it
    // asks to resume, which replays and so must hold them meanwhile.
    const added = this.listen(member, channel)
    const keepsHistory = this.policy.historyOf(channel).size > 0
    const synced = added || (keepsHistory && resume !== undefined)
    if (synced) member.startSync(channel)
    try {
      await this.confirm(member, channel, { resume, reply, keepsHistory, synced })
    } catch (err) {
      // A new subscribe the bus could not confirm now (Redis down, reconnecting, slow): the
      // membership stays and the subscribe is answered once the bus is back, so a client that
      // stays connected is never left believing it is subscribed while nothing arrives, nor left
      // out once Redis returns. (A resume of a subscription already working fails as it is: its
      // live messages must not be held meanwhile.)
      if (err instanceof BusUnavailableError && added && !this.closing && member.channels.has(channel)) {
        this.completeLater(member, channel, { resume, reply, keepsHistory, synced })
        return
      }
      // A subscription that was working before this call stays.
      if (added) this.leave(member, channel)
      else member.stopSync(channel)
      throw err
    }
  }

  /** The steps of a join once the member is listed: the bus subscription, presence, history, the reply. */
  private async confirm (member: Member, channel: string, { resume, reply, keepsHistory, synced }: DeferredJoin): Promise<void> {
    await this.subscriptions.get(channel)
    // Unsubscribed meanwhile (a deferred subscribe runs beside the member's later frames).
    if (!member.channels.has(channel)) return
    // The subscribed reply waits for presence too: a client that is subscribed is listed.
    const listed = this.presence?.tracksMember(channel, member.identity) === true && member.channels.has(channel)
      ? this.presence.join(channel, presenceIdentity(member.identity, member.id), member)
      : undefined
    if (keepsHistory) {
      await this.replayer.run(member, channel, resume, reply, () => this.listeners.get(channel)?.size === 1, synced, listed)
      return
    }
    await listed
    if (member.channels.has(channel)) {
      reply(resume === undefined ? {} : { recovered: false })
      // No history: what was held is sent as it came, after the reply.
      if (synced) member.releaseSync(channel, undefined, 0, true)
    }
  }

  /** Answers a subscribe the bus could not confirm, once it can: tried again at each reconnect and every second. */
  private completeLater (member: Member, channel: string, request: DeferredJoin): void {
    this.stats.subscribesDeferred++
    let channels = this.deferred.get(member)
    if (channels === undefined) {
      channels = new Map()
      this.deferred.set(member, channels)
    }
    channels.set(channel, request)
    const pending = channels
    void (async () => {
      for (;;) {
        await this.nextBusCheck()
        // Withdrawn (unsubscribed, perhaps subscribed again as a new request) or gone.
        if (this.closing || pending.get(channel) !== request || !member.channels.has(channel)) break
        this.resubscribe(channel)
        try {
          await this.confirm(member, channel, request)
          break
        } catch (err) {
          if (err instanceof BusUnavailableError) continue
          // Redis answered, and refused (an ACL): that answer is final.
          this.leave(member, channel)
          member.subscribeFailed(channel, err)
          break
        }
      }
      if (pending.get(channel) === request) pending.delete(channel)
    })()
  }

  /** A fresh bus subscription for `channel` if the last one failed; one for every member waiting on it. */
  private resubscribe (channel: string): void {
    const current = this.subscriptions.get(channel)
    if (current !== undefined && this.failedSubscriptions.has(current)) this.subscriptions.set(channel, this.subscribe(channel))
  }

  private subscribe (channel: string): Promise<void> {
    const subscribed = this.bus.subscribe(channel)
    subscribed.catch(() => { this.failedSubscriptions.add(subscribed) })
    return subscribed
  }

  private async nextBusCheck (): Promise<void> {
    this.busBack ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.wakeDeferred() }, DEFERRED_RETRY)
      timer.unref()
      this.wakeBus = () => { clearTimeout(timer); resolve() }
    })
    await this.busBack
  }

  private wakeDeferred (): void {
    const wake = this.wakeBus
    this.busBack = undefined
    this.wakeBus = undefined
    wake?.()
  }

  leave (member: Member, channel: string): void {
    if (!member.channels.delete(channel)) return
    this.deferred.get(member)?.delete(channel)
    member.stopSync(channel)
    if (this.presence?.tracksMember(channel, member.identity) === true) this.presence.leave(channel, presenceIdentity(member.identity, member.id), member)
    const listeners = this.listeners.get(channel)
    /* c8 ignore next -- a member's channels and the listener map change together */
    if (listeners === undefined) return
    listeners.delete(member, member.filterOf(channel))
    if (listeners.size > 0) return
    this.listeners.delete(channel)
    this.liveOrder.forget(channel)
    const unsubscribed = this.bus.unsubscribe(channel).catch(
      /* c8 ignore next 3 -- UNSUBSCRIBE waits in the offline queue while Redis is away and is not
         subject to channel ACLs, so no real fault makes it fail; kept so one never goes unhandled */
      (err: unknown) => { this.log.warn({ err, channel }, 'unsubscribe failed') }
    )
    this.subscriptions.set(channel, unsubscribed)
    void unsubscribed.then(() => {
      if (this.subscriptions.get(channel) === unsubscribed) this.subscriptions.delete(channel)
    })
  }

  remove (member: Member): void {
    if (!this.members.delete(member)) return
    for (const channel of [...member.channels]) this.leave(member, channel)
  }

  /**
   * Queues one message, already encoded by its publisher, for every open listener. Its frame
   * is built here once and the same bytes go to every socket.
   */
  deliver (channel: string | null, payload: Buffer, position?: Position): number {
    const audience = channel === null ? undefined : this.listeners.get(channel)
    // A channel's audience is dropped with its last listener: one that is here is not empty.
    if (channel !== null && audience === undefined) return 0
    const frame = textFrame(payload)
    let delivered = 0
    if (audience === undefined) {
      delivered = this.deliverTo(this.members, channel, payload, frame, position)
    } else {
      delivered = this.deliverTo(audience.everyone, channel, payload, frame, position)
      // A filter judges messages only: gap and presence frames go to every listener.
      const judged = audience.byFilter.size > 0 && isMessageFrame(payload)
      for (const [filter, group] of audience.byFilter) {
        if (!judged || filter.passes(payload)) delivered += this.deliverTo(group, channel, payload, frame, position)
      }
    }
    this.stats.messagesOut += delivered
    return delivered
  }

  /** Moves a listener of `channel` to the group of its new filter (a subscribe again with another one). */
  regroup (member: Member, channel: string, before: Filter | undefined, after: Filter | undefined): void {
    const audience = this.listeners.get(channel)
    if (audience === undefined || !member.channels.has(channel)) return
    audience.delete(member, before)
    audience.add(member, after)
  }

  private deliverTo (targets: Set<Member>, channel: string | null, payload: Buffer, frame: Buffer[], position: Position | undefined): number {
    let delivered = 0
    for (const member of targets) {
      try {
        if (member.deliver(channel, payload, frame, position)) delivered++
      } catch (err) {
        this.evictBroken(member, err)
      }
    }
    return delivered
  }

  scheduleFlush (member: Member): void {
    // A flush is due (a microtask, or the next slice) exactly while some member waits for one.
    if (this.dirty.push(member) === 1) queueMicrotask(this.flush)
  }

  /** Runs `done` once every frame queued so far is written to its socket (at once when nothing waits). */
  whenWritten (done: () => void): void {
    if (this.dirty.length > 0) this.afterWrites.push(done)
    else done()
  }

  closeSlowConsumer (member: Member): void {
    this.stats.slowConsumerCloses++
    this.log.warn({ connection: member.id, unsent: member.unsent }, 'closing a slow consumer (4008)')
    this.remove(member)
    member.close(CLOSE_SLOW_CONSUMER, 'slow consumer')
  }

  /** A member that missed its pong: its peer is gone without a word, so no close handshake. */
  terminateSilent (member: Member): void {
    this.stats.heartbeatTimeouts++
    this.log.info({ connection: member.id }, 'terminating a connection that missed its pong')
    this.remove(member)
    member.terminate()
  }

  /**
   * Closes every member with `code` and resolves once all are closed; the ones that do not
   * finish the close handshake within `timeout` ms are terminated.
   */
  async closeAll (code: number, reason: string, timeout: number): Promise<void> {
    // Subscribes still waiting for the bus end now, not at their next retry.
    this.wakeDeferred()
    const members = [...this.members]
    // Every socket here is open or closing: a closed one has already left the hub.
    const closed = members.map(async (member) => {
      const done = member.whenClosed()
      member.close(code, reason)
      await done
    })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const member of members) member.terminate()
        resolve()
      }, timeout)
    })
    await Promise.race([Promise.all(closed), late])
    clearTimeout(timer)
    // A terminated socket still emits 'close' a moment later: app.close() ends with every session
    // gone, waiting a little for it, never for ever.
    await settleWithin(Promise.all(closed), TERMINATE_GRACE_MS)
  }

  /** Adds `member` to the channel's listeners; true when it was not on the channel yet. */
  private listen (member: Member, channel: string): boolean {
    let listeners = this.listeners.get(channel)
    if (listeners === undefined) {
      listeners = new Audience()
      this.listeners.set(channel, listeners)
      this.subscriptions.set(channel, this.subscribe(channel))
    }
    const added = !member.channels.has(channel)
    listeners.add(member, member.filterOf(channel))
    member.channels.add(channel)
    return added
  }

  /**
   * Writes to the dirty members in their order, each in one write, for at most FLUSH_SLICE_MS;
   * the rest waits for the next turn (setImmediate), so a message to ten thousand sockets does not
   * hold the event loop for the whole of their writes: publishes, pings, connects and other
   * channels go between slices. Frames queued meanwhile join their member's next write, in order;
   * a member written already goes to the back of the line.
   */
  private readonly flush = (): void => {
    const dirty = this.dirty
    const started = performance.now()
    let next = this.dirtyWritten
    while (next < dirty.length) {
      const member = dirty[next++] as Member
      try {
        member.flush()
      } catch (err) {
        this.evictBroken(member, err)
      }
      // The clock is read every so often: most writes take a few microseconds.
      if ((next & 63) === 0 && next < dirty.length && performance.now() - started > FLUSH_SLICE_MS) {
        this.dirtyWritten = next
        this.stats.writesSliced++
        setImmediate(this.flush)
        return
      }
    }
    this.dirty = []
    this.dirtyWritten = 0
    const afterWrites = this.afterWrites
    if (afterWrites.length === 0) return
    this.afterWrites = []
    for (const done of afterWrites) done()
  }

  private evictBroken (member: Member, err: unknown): void {
    // One broken socket must not stop the fan-out to the others.
    this.log.warn({ err, connection: member.id }, 'dropping a connection that failed a write')
    this.remove(member)
    member.terminate()
  }
}
