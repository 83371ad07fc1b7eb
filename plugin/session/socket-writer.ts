import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import { textFrame } from '../websocket-frame.js'

const OPEN = 1

export interface SlowConsumerPolicy {
  /** Unsent bytes a connection may hold before it is closed with 4008. */
  slowConsumerBytes: number
  /** How long a connection may keep unsent data without draining, in milliseconds. */
  slowConsumerTimeout: number
}

/**
 * The write side of one client socket. Frames are queued and written once per event-loop turn:
 * every message that arrived from Redis in one chunk leaves in one write (corked), in arrival
 * order. A socket that stops draining is reported as a slow consumer instead of being written to.
 */
export abstract class SocketWriter {
  /** Buffers waiting for this turn's write, in order; may be a message's own (shared) parts. */
  private queued: Buffer[] | undefined
  /** Whether `queued` is this writer's own array, so it may grow in place. */
  private queuedOwned = false
  /** Since when the socket has had unsent data without draining any of it; 0 while it keeps up. */
  private stuckSince = 0
  /** Bytes the TCP socket had handed to the kernel at the last check: progress shows as growth. */
  private drained = 0

  /**
   * `tcp` is the TCP socket under `socket` when frames may be written to it as prebuilt bytes:
   * only when no extension (permessage-deflate) is in use, so ws never holds frames of its own.
   */
  constructor (readonly socket: WebSocket, readonly tcp: Socket | undefined, private readonly policy: SlowConsumerPolicy) {}

  /** Asks for `flush()` at the end of this turn. */
  protected abstract scheduleFlush (): void
  /** The socket is not draining: it must be closed, not written to. */
  protected abstract onSlowConsumer (): void

  /** Bytes queued in ws and in the TCP socket, not yet handed to the kernel. */
  get unsent (): number {
    return this.socket.bufferedAmount
  }

  /** Queues a text frame (a reply, an error) behind the messages already queued. */
  send (text: string): boolean {
    return this.enqueue(Buffer.from(text))
  }

  /**
   * Queues one message. `frame` is the message's frame built once for every socket; sockets
   * without a TCP writer hand `payload` to ws instead.
   */
  enqueue (payload: Buffer, frame?: Buffer[]): boolean {
    if (this.socket.readyState !== OPEN) return false
    if (this.tcp === undefined) {
      if (this.isSlow()) {
        this.onSlowConsumer()
        return false
      }
      this.socket.send(payload, { binary: false })
      return true
    }
    const parts = frame ?? textFrame(payload)
    const queued = this.queued
    if (queued === undefined) {
      // The first frame of the turn is queued as is: no copy, no array per socket.
      this.queued = parts
      this.queuedOwned = false
      this.scheduleFlush()
    } else if (this.queuedOwned) {
      for (const part of parts) queued.push(part)
    } else {
      this.queued = [...queued, ...parts]
      this.queuedOwned = true
    }
    return true
  }

  /** Writes what this turn queued, in one corked write. */
  flush (): void {
    const queued = this.queued
    this.queued = undefined
    if (queued === undefined || this.socket.readyState !== OPEN) return
    if (this.isSlow()) {
      this.onSlowConsumer()
      return
    }
    const tcp = this.tcp as Socket
    if (queued.length === 1) {
      tcp.write(queued[0])
      return
    }
    tcp.cork()
    for (const part of queued) tcp.write(part)
    tcp.uncork()
  }

  /** Whether `bytes` more may be queued at once; if not, the socket is a slow consumer already. */
  admitReplay (bytes: number): boolean {
    if (this.unsent + bytes <= this.policy.slowConsumerBytes) return true
    this.onSlowConsumer()
    return false
  }

  private isSlow (): boolean {
    const unsent = this.socket.bufferedAmount
    if (unsent === 0) {
      this.stuckSince = 0
      return false
    }
    if (unsent > this.policy.slowConsumerBytes) return true
    // Read the clock only when the socket is behind: a healthy socket costs one property read.
    const now = Date.now()
    // A client that keeps up under steady load may never be at 0 unsent bytes, but it drains:
    // only a socket that has sent nothing since the last check is stuck. (Without a TCP writer,
    // as with compression, only an empty buffer counts as progress.)
    const drained = this.tcp === undefined ? 0 : this.tcp.bytesWritten - this.tcp.writableLength
    if (this.stuckSince === 0 || drained !== this.drained) {
      this.stuckSince = now
      this.drained = drained
      return false
    }
    return now - this.stuckSince > this.policy.slowConsumerTimeout
  }
}
