import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'
import type { Bus } from './bus/bus.js'
import type { BroadcastStats } from './stats.js'
import { textFrame } from './websocket-frame.js'
import { Connection } from './connection.js'
import { gapFrame } from './frames.js'
import type { HistorySettings } from './history/settings.js'
import type { Position } from './history/sequence.js'
import { isRun, LiveOrder } from './history/live-order.js'
import { presenceIdentity, type Presence } from './presence/presence.js'

export const CLOSE_GOING_AWAY = 1001
export const CLOSE_SLOW_CONSUMER = 4008

export interface DeliveryPolicy {
  /** Unsent bytes a connection may hold before it is closed with 4008. */
  slowConsumerBytes: number
  /** How long a connection may keep unsent data without draining, in milliseconds. */
  slowConsumerTimeout: number
  /** Each channel's history settings: a channel with history has offsets and can be resumed. */
  historyOf: (channel: string) => HistorySettings
  /** The most messages a resuming subscriber is sent, and that a gap repair reads back. */
  maxReplay: number
}

/** Where a client asks to resume a channel: after `since`, in the history named `epoch`. */
export interface Resume {
  since: number
  epoch: string
}

/** How a subscription starts: the channel's position, and whether a resume was honoured. */
export interface SubscribeOutcome {
  position?: Position
  recovered?: boolean
}

/**
 * The registry of this instance's connections and of who listens on which channel.
 * A channel's Redis subscription is reference-counted by its local listeners: the first
 * one subscribes the instance, the last one to leave unsubscribes it, so an instance only
 * receives traffic it can deliver.
 */
export class Hub {
  readonly connections = new Set<Connection>()
  private readonly listeners = new Map<string, Set<Connection>>()
  /** The latest SUBSCRIBE/UNSUBSCRIBE issued per channel; bus commands run in order. */
  private readonly pending = new Map<string, Promise<void>>()
  /** Connections with frames queued this turn, written together by one microtask. */
  private dirty: Connection[] = []

  /** Keeps each channel's live messages in offset order and repairs gaps from history. */
  private readonly liveOrder: LiveOrder

  /** Set when the app starts closing: no new connection may join from then on. */
  closing = false
  /** Who is on which channel across instances; undefined when no channel is tracked. */
  presence: Presence | undefined

  constructor (
    private readonly bus: Bus,
    private readonly log: FastifyBaseLogger,
    readonly policy: DeliveryPolicy,
    private readonly stats: BroadcastStats
  ) {
    this.liveOrder = new LiveOrder({
      deliver: (channel, frame, position) => { this.deliver(channel, frame, position) },
      fetch: async (channel, since, limit) => await this.bus.readHistory(channel, { since, limit }),
      reportGap: (channel) => { this.deliver(channel, Buffer.from(gapFrame(channel))) }
    }, policy.maxReplay, stats, log)
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
  }

  /** Registers a new socket; `direct` is its TCP socket when frames may be written to it as bytes. */
  open (socket: WebSocket, direct?: Socket): Connection {
    const connection = new Connection(socket, this, direct)
    this.connections.add(connection)
    return connection
  }

  /** How many channels this instance listens on: each is one Redis subscription. */
  get channelCount (): number {
    return this.listeners.size
  }

  /**
   * Resolves once the connection receives what is published on `channel` from now on. For a
   * channel with history, `announce` is told the channel's position (and whether `resume` could
   * be honoured) just before the replay is queued; live messages that arrive meanwhile are held,
   * then queued after the replay, none twice and none missing.
   */
  async join (connection: Connection, channel: string, resume: Resume | undefined, announce: (outcome: SubscribeOutcome) => void): Promise<void> {
    if (!this.connections.has(connection)) return
    let listeners = this.listeners.get(channel)
    if (listeners === undefined) {
      listeners = new Set()
      this.listeners.set(channel, listeners)
      this.pending.set(channel, this.bus.subscribe(channel))
    }
    // Subscribing again to a channel the connection is on: its live messages keep flowing as they
    // are, unless it asks to resume, which replays and so must hold them meanwhile.
    const added = !connection.channels.has(channel)
    listeners.add(connection)
    connection.channels.add(channel)
    const keepsHistory = this.policy.historyOf(channel).size > 0
    const syncs = keepsHistory && (added || resume !== undefined)
    if (syncs) connection.startSync(channel)
    try {
      await this.pending.get(channel)
      // The subscribed reply waits for presence too: a client that is subscribed is listed.
      const listed = this.presence?.tracks(channel) === true && connection.channels.has(channel)
        ? this.presence.join(channel, presenceIdentity(connection.identity, connection.id), connection)
        : undefined
      if (!keepsHistory) {
        await listed
        announce(resume === undefined ? {} : { recovered: false })
        return
      }
      const [page] = await Promise.all([this.bus.readHistory(channel, { since: resume?.since, limit: this.policy.maxReplay }), listed])
      // Unsubscribed or gone while the history was read: nothing more to send.
      if (!connection.channels.has(channel)) return
      const position = page === undefined ? undefined : { offset: page.offset, epoch: page.epoch }
      // A channel that has had no live message here yet starts from this position, so a message
      // missed before the first one arrives is still noticed. Only for its sole listener: others
      // that joined before it had a history may still await messages up to this position.
      if (position !== undefined && this.listeners.get(channel)?.size === 1) this.liveOrder.seed(channel, position)
      let replay = false
      if (resume !== undefined) {
        replay = page !== undefined && page.epoch === resume.epoch && resume.since <= page.offset &&
          page.offset - resume.since <= this.policy.maxReplay && isRun(page, resume.since, page.offset)
        if (replay) this.stats.resumed++
        else this.stats.resumeFailures++
      }
      announce(resume === undefined ? { position } : { position, recovered: replay })
      if (replay) for (const message of (page as NonNullable<typeof page>).messages) connection.enqueue(message.frame)
      if (syncs) {
        // Once this instance's live stream has passed the replay, no message up to it can come
        // again, and the connection need not compare any (nor keep a record per channel).
        const passed = position === undefined || this.liveOrder.hasPassed(channel, position)
        connection.release(channel, position?.epoch, position?.offset ?? 0, passed)
      }
    } catch (err) {
      // A subscription that was working before this call stays.
      if (added) this.leave(connection, channel)
      else connection.stopSync(channel)
      throw err
    }
  }

  leave (connection: Connection, channel: string): void {
    if (!connection.channels.delete(channel)) return
    connection.stopSync(channel)
    if (this.presence?.tracks(channel) === true) this.presence.leave(channel, presenceIdentity(connection.identity, connection.id), connection)
    const listeners = this.listeners.get(channel)
    /* c8 ignore next -- a connection's channels and the listener map change together */
    if (listeners === undefined) return
    listeners.delete(connection)
    if (listeners.size > 0) return
    this.listeners.delete(channel)
    this.liveOrder.forget(channel)
    const unsubscribed = this.bus.unsubscribe(channel).catch(
      /* c8 ignore next 3 -- UNSUBSCRIBE waits in the offline queue while Redis is away and is not
         subject to channel ACLs, so no real fault makes it fail; kept so one never goes unhandled */
      (err: unknown) => { this.log.warn({ err, channel }, 'unsubscribe failed') }
    )
    this.pending.set(channel, unsubscribed)
    void unsubscribed.then(() => {
      if (this.pending.get(channel) === unsubscribed) this.pending.delete(channel)
    })
  }

  remove (connection: Connection): void {
    if (!this.connections.delete(connection)) return
    for (const channel of [...connection.channels]) this.leave(connection, channel)
  }

  /**
   * Queues one message, already encoded by its publisher, for every open listener. Its frame
   * is built here once and the same bytes go to every socket.
   */
  deliver (channel: string | null, payload: Buffer, position?: Position): number {
    const targets = channel === null ? this.connections : this.listeners.get(channel)
    if (targets === undefined || targets.size === 0) return 0
    const frame = textFrame(payload)
    let delivered = 0
    for (const connection of targets) {
      try {
        const sync = channel === null ? undefined : connection.syncing?.get(channel)
        const queued = sync === undefined
          ? connection.enqueue(payload, frame)
          : connection.offerSyncing(channel as string, sync, { payload, position }, frame)
        if (queued) delivered++
      } catch (err) {
        this.dropBroken(connection, err)
      }
    }
    this.stats.messagesOut += delivered
    return delivered
  }

  scheduleFlush (connection: Connection): void {
    if (this.dirty.push(connection) === 1) queueMicrotask(this.flush)
  }

  closeSlowConsumer (connection: Connection): void {
    this.stats.slowConsumerCloses++
    this.log.warn({ connection: connection.id, unsent: connection.socket.bufferedAmount }, 'closing a slow consumer (4008)')
    this.remove(connection)
    connection.socket.close(CLOSE_SLOW_CONSUMER, 'slow consumer')
  }

  /** A connection that missed its pong: its peer is gone without a word, so no close handshake. */
  terminateSilent (connection: Connection): void {
    this.stats.heartbeatTimeouts++
    this.log.info({ connection: connection.id }, 'terminating a connection that missed its pong')
    this.remove(connection)
    connection.socket.terminate()
  }

  /**
   * Closes every connection with `code` and resolves once all are closed; the ones that do not
   * finish the close handshake within `timeout` ms are terminated.
   */
  async closeAll (code: number, reason: string, timeout: number): Promise<void> {
    const sockets = [...this.connections].map((connection) => {
      connection.close(code, reason)
      return connection.socket
    })
    // Every socket here is open or closing: a closed one has already left the hub.
    const closed = sockets.map(async (socket) => await new Promise<void>((resolve) => socket.once('close', () => resolve())))
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const socket of sockets) socket.terminate()
        resolve()
      }, timeout)
    })
    await Promise.race([Promise.all(closed), late])
    clearTimeout(timer)
  }

  private readonly flush = (): void => {
    const dirty = this.dirty
    this.dirty = []
    for (const connection of dirty) {
      try {
        connection.flush()
      } catch (err) {
        this.dropBroken(connection, err)
      }
    }
  }

  private dropBroken (connection: Connection, err: unknown): void {
    // One broken socket must not stop the fan-out to the others.
    this.log.warn({ err, connection: connection.id }, 'dropping a connection that failed a write')
    this.remove(connection)
    connection.socket.terminate()
  }
}
