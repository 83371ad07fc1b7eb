// Baseline (a), "textbook": ws + ioredis as tutorials write it. Each Redis message is parsed,
// wrapped and stringified once, then ws.send() to every client of the channel (ws encodes and
// frames the text again for each socket). The rest of the server is common.ts's startWsBaseline.
import { WebSocket } from 'ws'
import { startWsBaseline } from './common.js'

const PREFIX = 'textbook:'

await startWsBaseline({
  prefix: PREFIX,
  payload: ({ data }) => JSON.stringify(data),
  deliver: (subscriber, rooms) => {
    subscriber.on('message', (redisChannel: string, message: string) => {
      const channel = redisChannel.slice(PREFIX.length)
      const room = rooms.get(channel)
      if (room === undefined) return
      const text = JSON.stringify({ type: 'message', channel, data: JSON.parse(message) as unknown })
      for (const socket of room) {
        if (socket.readyState === WebSocket.OPEN) socket.send(text)
      }
    })
  }
})
