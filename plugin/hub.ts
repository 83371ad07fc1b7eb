import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'
import type { Bus } from './bus/bus.js'

const OPEN = 1

/** One client socket, who it belongs to, and the channels it listens on. */
export class Connection {
  readonly id = randomUUID()
  readonly channels = new Set<string>()
  /** Frames from one client are handled one after another, so replies keep their order. */
  queue: Promise<void> = Promise.resolve()
  /** From connect-time auth; undefined when no auth is configured. */
  identity: unknown
  /** Channels or `prefix*` patterns this connection may subscribe to, when auth is configured. */
  grants: readonly string[] | undefined

  constructor (readonly socket: WebSocket) {}

  send (text: string | Buffer): boolean {
    if (this.socket.readyState !== OPEN) return false
    this.socket.send(text, { binary: false })
    return true
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

  constructor (private readonly bus: Bus, private readonly log: FastifyBaseLogger) {}

  add (connection: Connection): void {
    this.connections.add(connection)
  }

  /** Resolves once the connection will receive what is published on `channel` from now on. */
  async join (connection: Connection, channel: string): Promise<void> {
    if (!this.connections.has(connection)) return
    let listeners = this.listeners.get(channel)
    if (listeners === undefined) {
      listeners = new Set()
      this.listeners.set(channel, listeners)
      this.pending.set(channel, this.bus.subscribe(channel))
    }
    listeners.add(connection)
    connection.channels.add(channel)
    try {
      await this.pending.get(channel)
    } catch (err) {
      this.leave(connection, channel)
      throw err
    }
  }

  leave (connection: Connection, channel: string): void {
    if (!connection.channels.delete(channel)) return
    const listeners = this.listeners.get(channel)
    /* c8 ignore next -- a connection's channels and the listener map change together */
    if (listeners === undefined) return
    listeners.delete(connection)
    if (listeners.size > 0) return
    this.listeners.delete(channel)
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

  /** Writes one message, already encoded by its publisher, to every open listener. */
  deliver (channel: string | null, payload: Buffer): number {
    const targets = channel === null ? this.connections : this.listeners.get(channel)
    if (targets === undefined) return 0
    let delivered = 0
    for (const connection of targets) {
      try {
        if (connection.send(payload)) delivered++
      } catch (err) {
        // One broken socket must not stop the fan-out to the others.
        this.log.warn({ err, connection: connection.id }, 'dropping a connection that failed a write')
        this.remove(connection)
        connection.socket.terminate()
      }
    }
    return delivered
  }
}
