// Baseline (c): Socket.IO 4 with @socket.io/redis-adapter, used the way its docs show. A publish
// is `io.to(channel).emit(...)`: the adapter PUBLISHes it to Redis for the other instances and
// delivers it to this instance's room; the other instances deliver it from their Redis subscription.
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { createAdapter } from '@socket.io/redis-adapter'
import { channelList, env, exitOnSignal, listen, publishServer } from './common.js'

const publisher = new Redis(env('REDIS_URL'))
const subscriber = publisher.duplicate()
const io = new Server({
  // The clients use the WebSocket transport only: long-polling would measure something else.
  transports: ['websocket'],
  serveClient: false,
  adapter: createAdapter(publisher, subscriber, { key: 'socketio' })
})

const server = publishServer(async ({ channel, data }) => {
  io.to(channel).emit('message', { channel, data })
})
io.attach(server)

io.on('connection', (socket) => {
  const query = socket.handshake.query.channels
  for (const channel of channelList(typeof query === 'string' ? query : '')) {
    void socket.join(channel)
    socket.emit('subscribed', { channel })
  }
})

await publisher.ping()
if (subscriber.status !== 'ready') await once(subscriber, 'ready')
await listen(server)
exitOnSignal(async () => {
  io.disconnectSockets(true)
  await io.close()
  publisher.disconnect()
  subscriber.disconnect()
})
