import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { WebSocket } from 'ws'
import { CHANNEL_MAX_LENGTH } from '../plugin/channel.js'
import { Connection, type Hub } from '../plugin/hub.js'
import {
  errorFrame, isWireError, parseClientFrame, PONG_FRAME, subscribedFrame, toWireError, unsubscribedFrame
} from '../plugin/frames.js'

const channelList = `[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}`

export const WebsocketQuery = Type.Object({
  channels: Type.Optional(Type.String({
    pattern: `^${channelList}(,${channelList})*$`,
    description: 'Channels to subscribe to at connect, comma-separated'
  }))
})

interface WebsocketRouteOptions {
  path: string
  hub: Hub
}

/** GET <path>: upgrades to a WebSocket and speaks the frame protocol of README.md. */
const websocketRoute: FastifyPluginAsync<WebsocketRouteOptions> = async (instance, { path, hub }) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  fastify.get(path, {
    websocket: true,
    schema: { querystring: WebsocketQuery }
  }, (socket: WebSocket, request) => {
    // Track the socket and attach its listeners before anything awaits: a frame that
    // arrived before a late listener would be lost.
    const connection = new Connection(socket)
    hub.add(connection)
    socket.on('close', () => hub.remove(connection))
    socket.on('error', () => hub.remove(connection))
    socket.on('message', (raw, isBinary) => {
      const frame = parseClientFrame(raw, isBinary)
      connection.queue = connection.queue.then(async () => {
        if (isWireError(frame)) {
          connection.send(errorFrame(frame))
        } else if (frame.type === 'ping') {
          connection.send(PONG_FRAME)
        } else if (frame.type === 'subscribe') {
          await subscribe(frame.channel)
        } else {
          hub.leave(connection, frame.channel)
          connection.send(unsubscribedFrame(frame.channel))
        }
      })
    })

    async function subscribe (channel: string): Promise<void> {
      try {
        await hub.join(connection, channel)
        connection.send(subscribedFrame(channel))
      } catch (err) {
        request.log.warn({ err, channel }, 'subscribe failed')
        connection.send(errorFrame(toWireError(err as Error)))
      }
    }

    const initial = request.query.channels
    if (initial !== undefined) {
      for (const channel of new Set(initial.split(','))) {
        connection.queue = connection.queue.then(() => subscribe(channel))
      }
    }
  })
}

export default websocketRoute
