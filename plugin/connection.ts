import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import type { Hub } from './hub.js'
import { textFrame } from './websocket-frame.js'
import type { Position } from './history/sequence.js'

const OPEN = 1
/** Tells this process's connection ids from other instances'. */
const PROCESS_ID = randomBytes(6).toString('hex')
let connectionsNamed = 0
/** The queue of a connection with nothing to do: one resolved promise shared by all. */
const SETTLED = Promise.resolve()

/** A live message of a channel with history, and its position (undefined for gap and presence frames). */
export interface LiveMessage {
  payload: Buffer
  position: Position | undefined
}

/** How far a channel being joined is: its live messages are held, then compared with the replay. */
export interface ChannelSync {
  /** Live messages that arrived while the history was read; undefined once the replay is queued. */
  held: LiveMessage[] | undefined
  /** The history the replay came from, and its last offset. */
  epoch: string | undefined
  top: number
}

/**
 * One client socket, who it belongs to, and the channels it listens on (the Hub keeps them all).
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
  release (channel: string, epoch: string | undefined, top: number, passed: boolean): void {
    const sync = this.syncing?.get(channel)
    // Gone meanwhile: the connection was closed (a slow consumer) while the replay was queued.
    if (sync?.held === undefined) return
    const held = sync.held
    sync.held = undefined
    sync.epoch = epoch
    sync.top = top
    for (const message of held) this.offerSyncing(channel, sync, message)
    // `passed`: this instance has delivered past `top` already, so nothing up to it comes again.
    if (passed) this.stopSync(channel)
  }

  /** A live message of a channel being joined: held, skipped as replayed, or queued. */
  offerSyncing (channel: string, sync: ChannelSync, message: LiveMessage, frame?: Buffer[]): boolean {
    if (sync.held !== undefined) {
      sync.held.push(message)
      return false
    }
    // The position was read once per message, before the fan-out, not here per socket.
    const { payload, position } = message
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
