import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'
import type { Bus } from './bus/bus.js'
import type { BroadcastStats } from './stats.js'
import { textFrame } from './websocket-frame.js'
import { gapFrame } from './frames.js'
import type { HistorySettings } from './history/settings.js'
import { readPosition, type Position } from './history/sequence.js'
import { isRun, LiveOrder } from './history/live-order.js'
import { presenceIdentity, type Presence } from './presence/presence.js'

const OPEN = 1
export const CLOSE_GOING_AWAY = 1001
export const CLOSE_SLOW_CONSUMER = 4008
/** Tells this process's connection ids from other instances'. */
const PROCESS_ID = randomBytes(6).toString('hex')
let connectionsNamed = 0
/** The queue of a connection with nothing to do: one resolved promise shared by all. */
const SETTLED = Promise.resolve()

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

/** How far a channel being joined is: its live messages are held, then compared with the replay. */
export interface ChannelSync {
  /** Live messages that arrived while the history was read; undefined once the replay is queued. */
  held: Buffer[] | undefined
  /** The history the replay came from, and its last offset. */
  epoch: string | undefined
  top: number
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
 * One client socket, who it belongs to, and the channels it listens on.
 *
 * Frames for a socket are queued and written once per event-loop turn: every message that
 * arrived from Redis in one chunk leaves in one write (corked), in arrival order.
 */
export class Connection {
  readonly channels = new Set<string>()
  /** Frames from one client are handled one after another, so replies keep their order. */
  queue: Promise<void> = SETTLED
  /** From connect-time auth; undefined when no auth is configured. */
  identity: unknown
  /** Channels or `prefix*` patterns this connection may subscribe to, when auth is configured. */
  grants: readonly string[] | undefined
  /** When the heartbeat pinged this connection and no pong or frame has come back since; 0 if none is due. */
  pingedAt = 0
  /** Channels this connection is joining, whose live messages must meet the replay without a gap or a duplicate. */
  syncing: Map<string, ChannelSync> | undefined

  /** Buffers waiting for this turn's write, in order; may be a message's own (shared) parts. */
  private pending: Buffer[] | undefined
  /** Whether `pending` is this connection's own array, so it may grow in place. */
  private pendingOwned = false
  /** Since when the socket has had unsent data without draining any of it; 0 while it keeps up. */
  private stuckSince = 0
  /** Bytes the TCP socket had handed to the kernel at the last check: progress shows as growth. */
  private drained = 0
  private name: string | undefined

  /**
   * `writer` is the TCP socket under `socket` when frames may be written to it as prebuilt bytes:
   * only when no extension (permessage-deflate) is in use, so ws never holds frames of its own.
   */
  constructor (readonly socket: WebSocket, private readonly hub: Hub, readonly writer?: Socket) {}

  /**
   * Names this connection in logs and, when it is anonymous, in presence: this process's random
   * prefix and a counter, unique across instances. Made when first read, as few connections ever
   * need one; a short flat string, where randomUUID()'s is a rope of ~450 bytes.
   */
  get id (): string {
    this.name ??= `${PROCESS_ID}.${(++connectionsNamed).toString(36)}`
    return this.name
  }

  /** Queues a text frame (a reply, an error) behind the messages already queued. */
  send (text: string): boolean {
    return this.enqueue(Buffer.from(text))
  }

  /**
   * Queues one message. `frame` is the message's frame built once for every socket; sockets
   * without a direct writer hand `payload` to ws instead.
   */
  enqueue (payload: Buffer, frame?: Buffer[]): boolean {
    if (this.socket.readyState !== OPEN) return false
    if (this.writer === undefined) {
      if (this.isSlow()) {
        this.hub.closeSlowConsumer(this)
        return false
      }
      this.socket.send(payload, { binary: false })
      return true
    }
    const parts = frame ?? textFrame(payload)
    const pending = this.pending
    if (pending === undefined) {
      // The first frame of the turn is queued as is: no copy, no array per socket.
      this.pending = parts
      this.pendingOwned = false
      this.hub.scheduleFlush(this)
    } else if (this.pendingOwned) {
      for (const part of parts) pending.push(part)
    } else {
      this.pending = [...pending, ...parts]
      this.pendingOwned = true
    }
    return true
  }

  /** Writes what this turn queued, in one corked write. */
  flush (): void {
    const pending = this.pending
    this.pending = undefined
    if (pending === undefined || this.socket.readyState !== OPEN) return
    if (this.isSlow()) {
      this.hub.closeSlowConsumer(this)
      return
    }
    const direct = this.writer as Socket
    if (pending.length === 1) {
      direct.write(pending[0])
      return
    }
    direct.cork()
    for (const part of pending) direct.write(part)
    direct.uncork()
  }

  /** Holds the live messages of `channel` until `release()`. */
  startSync (channel: string): void {
    this.syncing ??= new Map()
    this.syncing.set(channel, { held: [], epoch: undefined, top: 0 })
  }

  /**
   * The replay of `channel` (history `epoch`, up to `top`) is queued: queues the held messages
   * that come after it. Live messages up to `top` may still arrive later (the history was read on
   * another Redis connection than the one messages come on), so they are skipped until the live
   * stream passes `top`.
   */
  release (channel: string, epoch: string | undefined, top: number): void {
    const sync = this.syncing?.get(channel)
    // Gone meanwhile: the connection was closed (a slow consumer) while the replay was queued.
    if (sync?.held === undefined) return
    const held = sync.held
    sync.held = undefined
    sync.epoch = epoch
    sync.top = top
    for (const payload of held) this.offerSyncing(channel, sync, payload)
  }

  /** A live message of a channel being joined: held, skipped as replayed, or queued. */
  offerSyncing (channel: string, sync: ChannelSync, payload: Buffer, frame?: Buffer[]): boolean {
    if (sync.held !== undefined) {
      sync.held.push(payload)
      return false
    }
    const position = readPosition(payload, channel)
    // Gap frames and presence events carry no offset: they are never part of a replay.
    if (position === undefined) return this.enqueue(payload, frame)
    if (position.epoch === sync.epoch && position.offset <= sync.top) return false
    // Past the replay: from here on the live stream is in offset order.
    this.stopSync(channel)
    return this.enqueue(payload, frame)
  }

  stopSync (channel: string): void {
    if (this.syncing === undefined) return
    this.syncing.delete(channel)
    if (this.syncing.size === 0) this.syncing = undefined
  }

  /** Closes after the frames already queued, so a reply sent just before still arrives first. */
  close (code: number, reason: string): void {
    this.flush()
    this.socket.close(code, reason)
  }

  private isSlow (): boolean {
    const unsent = this.socket.bufferedAmount
    if (unsent === 0) {
      this.stuckSince = 0
      return false
    }
    if (unsent > this.hub.policy.slowConsumerBytes) return true
    // Read the clock only when the socket is behind: a healthy socket costs one property read.
    const now = Date.now()
    // A client that keeps up under steady load may never be at 0 unsent bytes, but it drains:
    // only a socket that has sent nothing since the last check is stuck. (Without a direct
    // writer, as with compression, only an empty buffer counts as progress.)
    const drained = this.writer === undefined ? 0 : this.writer.bytesWritten - this.writer.writableLength
    if (this.stuckSince === 0 || drained !== this.drained) {
      this.stuckSince = now
      this.drained = drained
      return false
    }
    return now - this.stuckSince > this.hub.policy.slowConsumerTimeout
  }
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
      deliver: (channel, frame) => { this.deliver(channel, frame) },
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
      // missed before the first one arrives is still noticed.
      if (position !== undefined) this.liveOrder.seed(channel, position)
      let replay = false
      if (resume !== undefined) {
        replay = page !== undefined && page.epoch === resume.epoch && resume.since <= page.offset &&
          page.offset - resume.since <= this.policy.maxReplay && isRun(page, resume.since, page.offset)
        if (replay) this.stats.resumed++
        else this.stats.resumeFailures++
      }
      announce(resume === undefined ? { position } : { position, recovered: replay })
      if (replay) for (const message of (page as NonNullable<typeof page>).messages) connection.enqueue(message.frame)
      if (syncs) connection.release(channel, position?.epoch, position?.offset ?? 0)
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
  deliver (channel: string | null, payload: Buffer): number {
    const targets = channel === null ? this.connections : this.listeners.get(channel)
    if (targets === undefined || targets.size === 0) return 0
    const frame = textFrame(payload)
    let delivered = 0
    for (const connection of targets) {
      try {
        const sync = channel === null ? undefined : connection.syncing?.get(channel)
        const queued = sync === undefined
          ? connection.enqueue(payload, frame)
          : connection.offerSyncing(channel as string, sync, payload, frame)
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
