import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import type { ResolvedOptions } from './options.js'
import { BEARER_PROTOCOL } from './security/connect-auth.js'
import { handleSocketError } from './ws-internals.js'

/**
 * Registers @fastify/websocket with this plugin's ws settings, unless the app has registered it
 * already (then its settings stand). Returns whether this plugin registered it, and so whether the
 * per-socket error listener is this plugin's handleSocketError.
 */
export async function registerWebsocketServer (fastify: FastifyInstance, options: ResolvedOptions): Promise<boolean> {
  if (fastify.hasDecorator('websocketServer')) return false
  const serverOptions = {
    maxPayload: options.maxPayload,
    // A peer that never answers a close frame is cut off after this long, not ws's 30 s.
    // (ws ≥ 8.19 reads it; @types/ws does not list it yet, hence the variable.)
    closeTimeout: options.closeTimeout,
    // ws checks maxPayload against the inflated size, so compression cannot smuggle big frames.
    perMessageDeflate: options.compression,
    // The hub keeps every session (fastify.broadcastConnections); ws's own set would cost each idle
    // socket about 190 bytes more, for a websocketServer.clients nothing here reads.
    clientTracking: false,
    // Browsers send their token as `['bearer', token]` and require one protocol echoed back.
    handleProtocols: (protocols: Set<string>) => protocols.has(BEARER_PROTOCOL) ? BEARER_PROTOCOL : false
  }
  await fastify.register(websocket, {
    options: serverOptions,
    // Sockets are closed with 1001 by this plugin's own preClose hook.
    preClose: function (done) { this.websocketServer.close(() => done()) },
    // The route's sockets call handleSocketError through a listener of their own (see
    // replaceUpgradeErrorListener in plugin/ws-internals.ts), so only other websocket routes come here.
    /* c8 ignore next -- this plugin has no other websocket route */
    errorHandler: (err, socket, request) => { handleSocketError(err, socket, request.log) }
  })
  return true
}
