import type { Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'

// Everything that leans on how ws 8 and @fastify/websocket 11 work inside, in one place, each with
// a test in test/ws-internals.test.ts that fails if an upgrade of either package changes it.

const CLOSING = 2

/**
 * The TCP socket that prebuilt frames may be written to, beside ws: only while no extension
 * (permessage-deflate) must transform each frame, for then ws writes its own frames at once and
 * holds none back in a queue, so the order of both kinds of writes is the order they were made.
 * Undefined under app.injectWS(), which has no TCP socket: ws then frames every message itself.
 */
export function frameWriter (socket: WebSocket, tcp: Socket | undefined): Socket | undefined {
  return socket.extensions === '' ? tcp : undefined
}

/**
 * @fastify/websocket lends the TCP socket to a ServerResponse for routing the upgrade and never
 * takes it back: through it the socket would keep the response, the raw and Fastify request and
 * reply (~3 KB) for its whole life. The response has no more use, so undo assignSocket().
 */
export function releaseUpgradeResponse (response: ServerResponse, tcp: Socket | undefined): void {
  if (tcp !== undefined && response.socket === tcp) response.detachSocket(tcp)
}

/**
 * @fastify/websocket gives every socket, just before the route handler runs, an 'error' listener
 * that only calls its errorHandler but holds the upgrade's Fastify request and reply, and through
 * them the raw request, its headers and a child logger (~3 KB), for the socket's whole life.
 * Replaced by `listener`, which must do what that errorHandler does (handleSocketError). Guarded:
 * anything but exactly one listener is a @fastify/websocket that works otherwise, and keeps its
 * listener (false).
 */
export function replaceUpgradeErrorListener (socket: WebSocket, listener: (this: WebSocket, err: Error) => void): boolean {
  const listeners = socket.listeners('error')
  /* c8 ignore next -- @fastify/websocket 11 adds exactly one */
  if (listeners.length !== 1) return false
  socket.removeListener('error', listeners[0] as (err: Error) => void)
  socket.on('error', listener)
  return true
}

/**
 * What this plugin's errorHandler for @fastify/websocket does with a socket's error: log it, and cut
 * the link, unless a protocol error (bad frame, too many fragments) has already sent its close frame
 * (1002, 1007, 1008, 1009): let that arrive; ws cuts the link after closeTimeout.
 */
export function handleSocketError (err: Error, socket: WebSocket, log: FastifyBaseLogger): void {
  log.warn({ err }, 'websocket error')
  /* c8 ignore next -- ws 8 is closing whenever it emits 'error'; an open one is from a handler that threw */
  if (socket.readyState !== CLOSING) socket.terminate()
}

/**
 * While closing, Fastify answers new requests 503 on its own, but for an upgrade it leaves the
 * TCP socket open after that answer; this ends it, or a client could hold it and stall the close.
 * Returns the function that stops doing so.
 */
export function endUpgradesWhileClosing (server: Server, closeTimeout: number): () => void {
  const endRefusedUpgrade = (request: unknown, socket: Duplex): void => {
    setImmediate(() => {
      socket.end()
      // A peer that never sends its own FIN would keep the half-closed socket, and the close waiting.
      setTimeout(() => socket.destroy(), closeTimeout).unref()
    })
  }
  server.prependListener('upgrade', endRefusedUpgrade)
  return () => { server.removeListener('upgrade', endRefusedUpgrade) }
}
