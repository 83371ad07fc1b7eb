// A load-generator process (forked by the benchmark): opens its share of the WebSocket clients,
// all on one channel, stamps the time of every message each of them receives, checks each
// client's sequence numbers for loss, duplicates and order, and reports over IPC.
import WebSocket from 'ws'
import { io } from 'socket.io-client'
import { Histogram } from './histogram.js'
import {
  CHANNEL, GROUP_TAG, groupOf, isMessage, nowUs, type ClientConfig, type ClientStats, type FromClients, type ToClients
} from './protocol.js'

function send (message: FromClients): void {
  process.send?.(message)
}

/** Per-client bookkeeping, in flat typed arrays: thousands of clients × thousands of messages. */
class Tracker {
  readonly latency = new Histogram()
  unique = 0
  duplicates = 0
  outOfOrder = 0
  unexpected = 0
  closed = 0
  firstReceiveUs = 0
  lastReceiveUs = 0
  private readonly seen: Uint8Array
  private readonly lastInLane: Float64Array
  private readonly perClient: Uint32Array
  private readonly bytesPerClient: number
  private readonly expected: number = 0

  constructor (private readonly config: ClientConfig) {
    this.bytesPerClient = Math.ceil(config.messages / 8)
    this.seen = new Uint8Array(this.bytesPerClient * config.count)
    this.lastInLane = new Float64Array(config.lanes * config.count).fill(-1)
    this.perClient = new Uint32Array(config.count)
    for (let i = 0; i < config.count; i++) this.expected += this.expects(i)
  }

  /** How many messages client `client` is due: all of them, or its group's. */
  private expects (client: number): number {
    const { messages, groups, firstIndex } = this.config
    if (groups === 0) return messages
    const group = (firstIndex + client) % groups
    return Math.floor(messages / groups) + (group < messages % groups ? 1 : 0)
  }

  receive (client: number, seq: number, sentAt: number): void {
    const now = nowUs()
    if (this.firstReceiveUs === 0) this.firstReceiveUs = now
    this.lastReceiveUs = now
    const { groups, firstIndex } = this.config
    const outsideGroup = groups > 0 && seq % groups !== (firstIndex + client) % groups
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.config.messages || !Number.isFinite(sentAt) || outsideGroup) {
      this.unexpected++
      return
    }
    const byte = client * this.bytesPerClient + (seq >> 3)
    const bit = 1 << (seq & 7)
    if (((this.seen[byte] as number) & bit) !== 0) {
      this.duplicates++
      return
    }
    this.seen[byte] = (this.seen[byte] as number) | bit
    this.unique++
    this.perClient[client]++
    const lane = client * this.config.lanes + (seq % this.config.lanes)
    if (seq < (this.lastInLane[lane] as number)) this.outOfOrder++
    else this.lastInLane[lane] = seq
    this.latency.record(now - sentAt)
    if (this.unique === this.expected) send({ type: 'complete' })
  }

  stats (): ClientStats {
    return {
      clients: this.config.count,
      unique: this.unique,
      duplicates: this.duplicates,
      outOfOrder: this.outOfOrder,
      unexpected: this.unexpected,
      closed: this.closed,
      minPerClient: this.perClient.reduce((min, n) => Math.min(min, n), this.config.count === 0 ? 0 : Infinity),
      firstReceiveUs: this.firstReceiveUs,
      lastReceiveUs: this.lastReceiveUs,
      latency: this.latency.toSparse(),
      maxLatencyUs: this.latency.max
    }
  }
}

const SEQ_KEY = Buffer.from('"seq":')
const SENT_AT_KEY = Buffer.from('"sentAt":')
const SUBSCRIBED = Buffer.from('"type":"subscribed"')

/** The non-negative integer right after `key` in `frame`, or NaN: cheaper than JSON.parse per frame. */
function integerAfter (frame: Buffer, key: Buffer): number {
  const at = frame.indexOf(key)
  if (at < 0) return NaN
  let value = 0
  let digits = 0
  for (let i = at + key.length; i < frame.length; i++) {
    const byte = frame[i] as number
    if (byte < 48 || byte > 57) break
    value = value * 10 + byte - 48
    digits++
  }
  return digits === 0 ? NaN : value
}

/** One client of our wire protocol (ours, textbook and frame-once speak it): resolves once subscribed. */
async function connectWs (url: string, index: number, tracker: Tracker, timeoutMs: number, filter?: string, localAddress?: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    // A filtered subscription is asked for in a subscribe frame: the query names channels only.
    const socket = new WebSocket(filter === undefined ? url : url.replace(/\?.*$/, ''), { perMessageDeflate: false, handshakeTimeout: timeoutMs, localAddress })
    if (filter !== undefined) socket.on('open', () => { socket.send(filter) })
    let ready = false
    const timer = setTimeout(() => { socket.terminate(); reject(new Error('no "subscribed" frame in time')) }, timeoutMs)
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (ready) {
        if (isBinary) tracker.unexpected++
        else tracker.receive(index, integerAfter(data, SEQ_KEY), integerAfter(data, SENT_AT_KEY))
      } else if (!isBinary && data.includes(SUBSCRIBED)) {
        ready = true
        clearTimeout(timer)
        resolve()
      } else {
        tracker.unexpected++
      }
    })
    socket.on('error', (err) => {
      clearTimeout(timer)
      if (!ready) reject(err)
    })
    socket.on('close', (code) => {
      clearTimeout(timer)
      if (ready) tracker.closed++
      else reject(new Error(`closed with ${code} before subscribing`))
    })
  })
}

/** One socket.io-client on the websocket transport: resolves once the server said `subscribed`. */
async function connectSocketIo (url: string, index: number, tracker: Tracker, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = io(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: timeoutMs,
      query: { channels: CHANNEL }
    })
    let ready = false
    const timer = setTimeout(() => { socket.disconnect(); reject(new Error('no "subscribed" event in time')) }, timeoutMs)
    socket.on('subscribed', () => {
      ready = true
      clearTimeout(timer)
      resolve()
    })
    socket.on('message', (message: unknown) => {
      const data = (message as { data?: { seq?: unknown, sentAt?: unknown } } | null)?.data
      if (!ready || typeof data?.seq !== 'number' || typeof data.sentAt !== 'number') tracker.unexpected++
      else tracker.receive(index, data.seq, data.sentAt)
    })
    socket.on('connect_error', (err) => {
      clearTimeout(timer)
      if (!ready) reject(err)
    })
    socket.on('disconnect', (reason) => {
      clearTimeout(timer)
      if (ready) tracker.closed++
      else reject(new Error(`disconnected (${reason}) before subscribing`))
    })
  })
}

/** Where client `index` of this process connects from: 127.0.0.2, .3 … by perSourceAddress, or the default. */
function sourceAddress ({ perSourceAddress, firstIndex }: ClientConfig, index: number): string | undefined {
  if (perSourceAddress === 0) return undefined
  const address = 2 + Math.floor((firstIndex + index) / perSourceAddress)
  if (address > 254) throw new Error(`more clients than 253 loopback source addresses of ${perSourceAddress} each hold`)
  return `127.0.0.${address}`
}

async function run (config: ClientConfig): Promise<Tracker> {
  const tracker = new Tracker(config)
  const started = Date.now()
  let next = 0
  let connected = 0
  let failed = 0
  let firstError: string | undefined
  // A few connections at a time: thousands of simultaneous handshakes would only measure the backlog.
  const worker = async (): Promise<void> => {
    while (next < config.count) {
      const index = next++
      try {
        const url = config.urls[index % config.urls.length] as string
        if (config.kind === 'ws') {
          const filter = config.groups > 0
            ? JSON.stringify({ type: 'subscribe', channel: CHANNEL, filter: { [GROUP_TAG]: [groupOf(config.firstIndex + index, config.groups)] } })
            : undefined
          await connectWs(url, index, tracker, config.connectTimeoutMs, filter, sourceAddress(config, index))
        } else {
          await connectSocketIo(url, index, tracker, config.connectTimeoutMs)
        }
        connected++
      } catch (err) {
        failed++
        firstError ??= (err as Error).message
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(config.connectConcurrency, config.count) }, worker))
  send({ type: 'connected', connected, failed, firstError, elapsedMs: Date.now() - started })
  let reported = -1
  setInterval(() => {
    if (tracker.unique === reported) return
    reported = tracker.unique
    send({ type: 'progress', unique: reported })
  }, 250).unref()
  return tracker
}

let tracker: Tracker | undefined
process.on('message', (message: unknown) => {
  if (!isMessage<ToClients>(message)) return
  if (message.type === 'config') {
    run(message.config).then((started) => { tracker = started }, (err: unknown) => {
      send({ type: 'fatal', message: (err as Error).stack ?? String(err) })
    })
  } else if (message.type === 'report') {
    if (tracker !== undefined) send({ type: 'stats', stats: tracker.stats() })
    else send({ type: 'fatal', message: 'asked for a report before the clients were connected' })
  } else {
    process.exit(0)
  }
})
// Never outlive the benchmark.
process.on('disconnect', () => process.exit(0))
