// What every hand-written baseline shares: the `POST /publish` endpoint with our body shape
// (`{"channel": string, "data": <JSON>}` → 202 `{"status":"accepted"}`), `GET /health`, and the
// settings from the environment. Plain node:http, so the baselines carry no framework cost.
// The two ws baselines also share their whole server (startWsBaseline) but for the hot path.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { type WebSocket, WebSocketServer } from 'ws'

const CHANNEL_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/
const BODY_LIMIT = 65536

export interface Publish {
  channel: string
  data: unknown
}

export function env (name: 'PORT' | 'REDIS_URL'): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is required`)
  return value
}

/** The valid channel names of a comma-separated list. */
export function channelList (list: string): string[] {
  return list.split(',').filter((channel) => CHANNEL_PATTERN.test(channel))
}

/** The channels of `?channels=a,b` in an upgrade URL. */
export function channelsOf (url: string | undefined): string[] {
  return channelList(new URL(url ?? '/', 'http://localhost').searchParams.get('channels') ?? '')
}

function parsePublish (text: string): Publish | undefined {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined
  const { channel, data } = body as { channel?: unknown, data?: unknown }
  // The benchmark always names a channel; broadcast-to-all is left out of the baselines.
  if (typeof channel !== 'string' || !CHANNEL_PATTERN.test(channel) || data === undefined) return undefined
  return { channel, data }
}

function reply (response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  response.end(body)
}

async function readBody (request: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request) {
    const buffer = chunk as Buffer
    size += buffer.length
    if (size > BODY_LIMIT) return undefined
    chunks.push(buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** An HTTP server with `POST /publish` handing each valid message to `publish`, and `GET /health`. */
export function publishServer (publish: (message: Publish) => Promise<void>): Server {
  return createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/health') {
      reply(response, 200, '{"status":"ok"}')
      return
    }
    if (request.method !== 'POST' || request.url !== '/publish') {
      reply(response, 404, '{"error":"not found"}')
      return
    }
    if (request.headers['content-type']?.startsWith('application/json') !== true) {
      reply(response, 415, '{"error":"unsupported media type"}')
      return
    }
    readBody(request).then(async (text) => {
      const message = text === undefined ? undefined : parsePublish(text)
      if (message === undefined) {
        reply(response, 400, '{"error":"bad request"}')
        return
      }
      await publish(message)
      reply(response, 202, '{"status":"accepted"}')
    }).catch(() => {
      if (!response.headersSent) reply(response, 503, '{"error":"unavailable"}')
    })
  })
}

export async function listen (server: Server): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(env('PORT')), '127.0.0.1', () => resolve())
  })
}

/** Exits on SIGTERM/SIGINT after `close`, or at once when it hangs. */
export function exitOnSignal (close: () => Promise<void>): void {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      setTimeout(() => process.exit(0), 1000).unref()
      close().finally(() => process.exit(0))
    })
  }
}

/** The sockets of each channel, by channel name (without the Redis prefix). */
export type Rooms = ReadonlyMap<string, ReadonlySet<WebSocket>>

export interface WsBaseline {
  /** Prefix of the Redis channel of each channel. */
  prefix: string
  /** What `POST /publish` PUBLISHes to Redis channel prefix + channel. */
  payload: (message: Publish) => string
  /** Listens on `subscriber` and sends each Redis message to the sockets of its channel's room: what the baselines compare. */
  deliver: (subscriber: Redis, rooms: Rooms) => void
}

/**
 * A ws baseline: `POST /publish` PUBLISHes to Redis; a socket of `/ws?channels=a,b` joins those
 * rooms, and is told `{"type":"subscribed","channel":…}` once Redis confirms the subscription; a
 * channel stays SUBSCRIBEd while its room has sockets. Exits on SIGTERM/SIGINT.
 */
export async function startWsBaseline ({ prefix, payload, deliver }: WsBaseline): Promise<void> {
  const publisher = new Redis(env('REDIS_URL'))
  const subscriber = publisher.duplicate()
  const rooms = new Map<string, Set<WebSocket>>()
  const subscriptions = new Map<string, Promise<unknown>>()

  const server = publishServer(async (message) => {
    await publisher.publish(prefix + message.channel, payload(message))
  })
  const wss = new WebSocketServer({ server, path: '/ws' })

  deliver(subscriber, rooms)

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
          void subscriber.unsubscribe(prefix + channel)
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
        subscriptions.set(channel, subscriber.subscribe(prefix + channel))
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
}
