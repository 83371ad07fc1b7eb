// Baseline (a), "textbook": ws + ioredis as tutorials write it. Each Redis message is parsed,
// wrapped and stringified once, then ws.send() to every client of the channel (ws encodes and
// frames the text again for each socket).
import { Redis } from 'ioredis'
import { WebSocket, WebSocketServer } from 'ws'
import { channelsOf, env, exitOnSignal, listen, publishServer } from './common.js'

const PREFIX = 'textbook:'
const publisher = new Redis(env('REDIS_URL'))
const subscriber = publisher.duplicate()
const rooms = new Map<string, Set<WebSocket>>()
const subscriptions = new Map<string, Promise<unknown>>()

const server = publishServer(async ({ channel, data }) => {
  await publisher.publish(PREFIX + channel, JSON.stringify(data))
})
const wss = new WebSocketServer({ server, path: '/ws' })

subscriber.on('message', (redisChannel: string, message: string) => {
  const channel = redisChannel.slice(PREFIX.length)
  const room = rooms.get(channel)
  if (room === undefined) return
  const text = JSON.stringify({ type: 'message', channel, data: JSON.parse(message) as unknown })
  for (const socket of room) {
    if (socket.readyState === WebSocket.OPEN) socket.send(text)
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
    void subscriptions.get(channel)?.then(() => socket.send(JSON.stringify({ type: 'subscribed', channel })))
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
