// Baseline (b), "frame-once": a hand-tuned ws server. The publisher builds the client-facing JSON
// once; each instance frames the bytes it gets from Redis once (ws's Sender.frame) and writes that
// one buffer to the raw TCP socket of every open client, without going through ws.send().
// The rest of the server is common.ts's startWsBaseline.
import type { Socket } from 'node:net'
import * as ws from 'ws'
import { startWsBaseline } from './common.js'

/** ws exports Sender, but @types/ws does not declare it. */
interface FrameOptions { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }
const { Sender } = ws as unknown as { Sender: { frame: (data: Buffer, options: FrameOptions) => Buffer[] } }
const TEXT_FRAME: FrameOptions = { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }

/** The TCP socket under a ws connection. */
function rawSocket (socket: ws.WebSocket): Socket {
  return (socket as unknown as { _socket: Socket })._socket
}

const PREFIX = 'frame-once:'

await startWsBaseline({
  prefix: PREFIX,
  payload: ({ channel, data }) => `{"type":"message","channel":${JSON.stringify(channel)},"data":${JSON.stringify(data)}}`,
  deliver: (subscriber, rooms) => {
    subscriber.on('messageBuffer', (redisChannel: Buffer, payload: Buffer) => {
      const room = rooms.get(redisChannel.toString('latin1').slice(PREFIX.length))
      if (room === undefined) return
      const parts = Sender.frame(payload, TEXT_FRAME)
      const bytes = parts.length === 1 ? parts[0] as Buffer : Buffer.concat(parts)
      for (const socket of room) {
        if (socket.readyState === ws.WebSocket.OPEN) rawSocket(socket).write(bytes)
      }
    })
  }
})
