import type { Socket } from 'node:net'
import type { RawData, WebSocket } from 'ws'
import { handleSocketError, replaceUpgradeErrorListener } from '../ws-internals.js'
import type { Session } from './session.js'

// The listeners of every client socket: one set of functions shared by all sockets instead of a
// closure per socket and event (thousands of idle sockets each keeping five closures add up).
// `this` is the emitter, as EventEmitter promises; the session is found through it.

const sessions = new WeakMap<WebSocket | Socket, Session>()

export interface ListenOptions {
  /** The upgrade's TCP socket, whose raw bytes are budgeted; undefined under app.injectWS(). */
  tcp: Socket | undefined
  /** Whether the heartbeat runs, so pongs must be noted. */
  heartbeat: boolean
  /** Whether @fastify/websocket's per-socket error listener calls this plugin's errorHandler, and so may be replaced. */
  replaceErrorListener: boolean
}

/** Attaches the session to its socket's events; called before anything awaits, so no frame is missed. */
export function listen (session: Session, { tcp, heartbeat, replaceErrorListener }: ListenOptions): void {
  const { socket } = session
  sessions.set(socket, session)
  // One error listener either way: each listener array costs an idle socket bytes.
  if (!replaceErrorListener || !replaceUpgradeErrorListener(socket, onUpgradeError)) socket.on('error', onError)
  socket.on('close', onClose)
  if (heartbeat) socket.on('pong', onPong)
  if (tcp !== undefined) {
    sessions.set(tcp, session)
    tcp.on('data', onData)
  }
  socket.on('message', onMessage)
}

function onClose (this: WebSocket): void {
  (sessions.get(this) as Session).ended()
}

function onError (this: WebSocket): void {
  (sessions.get(this) as Session).ended()
}

/** In place of @fastify/websocket's listener that replaceUpgradeErrorListener removed: what it did, then onError's part. */
function onUpgradeError (this: WebSocket, err: Error): void {
  const session = sessions.get(this) as Session
  handleSocketError(err, this, session.log())
  session.ended()
}

function onPong (this: WebSocket): void {
  (sessions.get(this) as Session).markAlive()
}

function onData (this: Socket, chunk: Buffer): void {
  (sessions.get(this) as Session).receiveBytes(chunk.length)
}

function onMessage (this: WebSocket, raw: RawData, isBinary: boolean): void {
  (sessions.get(this) as Session).receive(raw, isBinary)
}
