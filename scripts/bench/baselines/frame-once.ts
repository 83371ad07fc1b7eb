// Baseline (b), "frame-once": a hand-tuned ws server. The publisher builds the client-facing JSON
// once; each instance frames the bytes it gets from Redis once (ws's Sender.frame) and writes that
// one buffer to the raw TCP socket of every open client, without going through ws.send().
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import * as ws from 'ws'
import { channelsOf, env, exitOnSignal, listen, publishServer } from './common.js'

/** ws exports Sender, but @types/ws does not declare it. */
interface FrameOptions { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }
const { Sender } = ws as unknown as { Sender: { frame: (data: Buffer, options: FrameOptions) => Buffer[] } }
const TEXT_FRAME: FrameOptions = { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }

/** The TCP socket under a ws connection. */
function rawSocket (socket: ws.WebSocket): Socket {
  return (socket as unknown as { _socket: Socket })._socket
}

const PREFIX = 'frame-once:'
const publisher = new Redis(env('REDIS_URL'))
const subscriber = publisher.duplicate()
const rooms = new Map<string, Set<ws.WebSocket>>()
const subscriptions = new Map<string, Promise<unknown>>()

const server = publishServer(async ({ channel, data }) => {
  await publisher.publish(PREFIX + channel, `{"type":"message","channel":${JSON.stringify(channel)},"data":${JSON.stringify(data)}}`)
})
const wss = new ws.WebSocketServer({ server, path: '/ws' })

subscriber.on('messageBuffer', (redisChannel: Buffer, payload: Buffer) => {
  const room = rooms.get(redisChannel.toString('latin1').slice(PREFIX.length))
  if (room === undefined) return
  const parts = Sender.frame(payload, TEXT_FRAME)
  const bytes = parts.length === 1 ? parts[0] as Buffer : Buffer.concat(parts)
  for (const socket of room) {
    if (socket.readyState === ws.WebSocket.OPEN) rawSocket(socket).write(bytes)
  }
})

wss.on('connection', (socket, request) => {
  const channels = channelsOf(request.url)
  const leave = (): void => {
    for (const channel of channels) {
      const room = rooms.get(channel)
      if (room === undefined) continue
      room.delete(socket)
      if (room.size === 0) {
        rooms.delete(channel)
        subscriptions.delete(channel)
        void subscriber.unsubscribe(PREFIX + channel)
      }
    }
  }
  socket.on('close', leave)
  socket.on('error', leave)
  for (const channel of channels) {
    let room = rooms.get(channel)
    if (room === undefined) {
      room = new Set()
      rooms.set(channel, room)
      subscriptions.set(channel, subscriber.subscribe(PREFIX + channel))
    }
    room.add(socket)
    void subscriptions.get(channel)?.then(() => socket.send(`{"type":"subscribed","channel":${JSON.stringify(channel)}}`))
  }
})

await publisher.ping()
await listen(server)
exitOnSignal(async () => {
  for (const socket of wss.clients) socket.terminate()
  server.close()
  publisher.disconnect()
  subscriber.disconnect()
})
