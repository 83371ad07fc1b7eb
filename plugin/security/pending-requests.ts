import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'

/** A connection that has sent no complete request for this long counts against the caps. */
const GRACE = 1000

export interface PendingRequestsOptions {
  /** How long a new connection may take to send its first complete request head, in milliseconds. */
  timeout: number
  /**
   * Whether a new connection may be taken, given how many have been pending past the grace (the
   * caller lets it through when there are none, so that a full server still answers 503).
   */
  admits: (stalePending: number) => boolean
}

/**
 * Connections that have not yet sent a complete first request (for a WebSocket: the upgrade
 * request). Node keeps such a socket for up to headersTimeout plus its check interval (over a
 * minute); one that trickles its headers or sends none is cut after `timeout`. Those pending past
 * a short grace count against maxConnections, so they cannot be piled up beside the cap.
 */
export function watchPendingRequests (server: Server, { timeout, admits }: PendingRequestsOptions): { stale: () => number, stop: () => void } {
  const timers = new Map<Socket, NodeJS.Timeout>()
  const staleSockets = new Set<Socket>()

  function settle (socket: Socket): void {
    clearTimeout(timers.get(socket))
    timers.delete(socket)
    staleSockets.delete(socket)
    socket.removeListener('close', onPendingClose)
  }
  // One function for every socket, removed once its request came: a WebSocket lives for hours, and
  // a closure (with once()'s wrapper and the grown listener array) cost it about 450 bytes.
  function onPendingClose (this: Socket): void {
    settle(this)
  }
  function onConnection (socket: Socket): void {
    if (!admits(staleSockets.size)) {
      socket.destroy()
      return
    }
    timers.set(socket, setTimeout(() => {
      staleSockets.add(socket)
      timers.set(socket, setTimeout(() => { socket.destroy() }, Math.max(timeout - GRACE, 0)))
    }, Math.min(GRACE, timeout)))
    socket.on('close', onPendingClose)
  }
  function onRequest (request: { socket: Socket }): void {
    if (timers.has(request.socket)) settle(request.socket)
  }

  // Over TLS, requests come on the TLS socket: watch it, once its handshake is done (Node bounds
  // the handshake itself).
  const connection = server instanceof TlsServer ? 'secureConnection' : 'connection'
  server.on(connection, onConnection)
  server.on('request', onRequest)
  server.on('upgrade', onRequest)
  return {
    stale: () => staleSockets.size,
    stop () {
      server.off(connection, onConnection)
      server.off('request', onRequest)
      server.off('upgrade', onRequest)
      for (const timer of timers.values()) clearTimeout(timer)
      timers.clear()
      staleSockets.clear()
    }
  }
}
