// What the benchmark's processes say to each other, and the payload every server under test carries.
import { request, type Agent } from 'node:http'

/** The one channel every load client subscribes to. */
export const CHANNEL = 'bench'

// CLOCK_MONOTONIC is one clock for every process on the machine: process.hrtime() reads it, and
// performance.now() is the same clock less a constant, so a send time stamped in the publisher
// and a receive time stamped in a client process can be subtracted directly, to the microsecond.
const originUs = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000

/** Microseconds on the machine-wide monotonic clock. */
export function nowUs (): number {
  return originUs + performance.now() * 1000
}

/** The `data` of every benchmark message: `{"seq":…,"sentAt":…,"pad":"…"}`, in that key order. */
export interface BenchData {
  seq: number
  /** nowUs() when the publisher sent it, rounded to the microsecond. */
  sentAt: number
  pad: string
}

/** Bytes of `{"seq":N,"sentAt":N,"pad":""}` with a 6-digit seq and a 12-digit sentAt. */
const DATA_OVERHEAD = JSON.stringify({ seq: 100000, sentAt: 100000000000, pad: '' }).length

/** Padding that makes the JSON of a message's `data` about `size` bytes (`overhead`: the bytes of its other fields). */
export function paddingFor (size: number, overhead = DATA_OVERHEAD): string {
  return 'x'.repeat(Math.max(0, size - overhead))
}

/** The tag key of a filtered scenario: message `seq` is tagged `s<seq % groups>`. */
export const GROUP_TAG = 'shard'

/** The group of a client (by its index over every load process) or of a message (by its seq), in a filtered scenario. */
export function groupOf (index: number, groups: number): string {
  return `s${index % groups}`
}

/**
 * How many of messages 0 … messages-1 clients 0 … clients-1 receive: every message each, or,
 * with `groups` filters, the messages of each client's group.
 */
export function expectedDeliveries (clients: number, messages: number, groups: number): number {
  if (groups === 0) return clients * messages
  let total = 0
  for (let group = 0; group < groups; group++) {
    const members = Math.floor(clients / groups) + (group < clients % groups ? 1 : 0)
    total += members * (Math.floor(messages / groups) + (group < messages % groups ? 1 : 0))
  }
  return total
}

/** The body of `POST /publish`, the same for our service and every baseline; tagged in a filtered scenario. */
export function publishBody (seq: number, pad: string, batch = 1, groups = 0): string {
  const one = (n: number): { channel: string, data: BenchData, tags?: Record<string, string> } => groups === 0
    ? { channel: CHANNEL, data: { seq: n, sentAt: Math.round(nowUs()), pad } }
    : { channel: CHANNEL, tags: { [GROUP_TAG]: groupOf(n, groups) }, data: { seq: n, sentAt: Math.round(nowUs()), pad } }
  if (batch === 1) return JSON.stringify(one(seq))
  return JSON.stringify(Array.from({ length: batch }, (_, i) => one(seq * batch + i)))
}

// ---- parent ⇄ load-client process -------------------------------------------------------------

export type ClientKind = 'ws' | 'socketio'

export interface ClientConfig {
  kind: ClientKind
  /** Client i connects to urls[i % urls.length] (several instances share the clients). */
  urls: string[]
  count: number
  /** Messages the publisher will send: seq 0 … messages-1. */
  messages: number
  /** Publisher lanes: seq % lanes is the lane, and each lane's messages must arrive in order. */
  lanes: number
  /** Connections opened at once by this process. */
  connectConcurrency: number
  connectTimeoutMs: number
  /**
   * Above 0: client g (by `firstIndex + i`) connects from 127.0.0.(2 + g / perSourceAddress),
   * since one source address runs out of local ports near 28,000. 0: from the default address.
   */
  perSourceAddress: number
  /**
   * 0: every client subscribes to the channel as it is. Above 0: client i (by `firstIndex + i`)
   * subscribes with the filter of its group, and receives only that group's messages.
   */
  groups: number
  /** The index of this process's first client over every load process. */
  firstIndex: number
}

export type ToClients =
  | { type: 'config', config: ClientConfig }
  | { type: 'report' }
  | { type: 'exit' }

export interface ClientStats {
  clients: number
  /** Messages with a fresh seq, summed over clients. */
  unique: number
  duplicates: number
  outOfOrder: number
  /** Frames that were not a benchmark message, or carried a seq outside 0 … messages-1. */
  unexpected: number
  /** Clients whose socket closed after they were ready. */
  closed: number
  /** The client that received the fewest messages, and how many. */
  minPerClient: number
  firstReceiveUs: number
  lastReceiveUs: number
  /** publish → receive latency, a sparse histogram (see histogram.ts). */
  latency: Array<[number, number]>
  maxLatencyUs: number
}

export type FromClients =
  | { type: 'connected', connected: number, failed: number, firstError: string | undefined, elapsedMs: number }
  | { type: 'progress', unique: number }
  | { type: 'complete' }
  | { type: 'stats', stats: ClientStats }
  | { type: 'fatal', message: string }

// ---- parent ⇄ publisher process ---------------------------------------------------------------

export interface PublisherConfig {
  /**
   * burst: every lane sends its messages back to back (each waits for the previous 202);
   * rate: message i is sent at start + i / rate; load: HTTP load for durationMs, no order.
   */
  mode: 'burst' | 'rate' | 'load'
  /** `POST /publish` URLs; lane l uses urls[l % urls.length]. */
  urls: string[]
  messages: number
  size: number
  lanes: number
  /** Messages per second, mode rate. */
  rate: number
  /** Mode load: how long to keep sending. */
  durationMs: number
  timeoutMs: number
  /** Messages per request: above 1, each request is a batch (a JSON array) and counts that many. */
  batch: number
  /** Above 0: every message is tagged with its group (see groupOf). */
  groups: number
}

export type ToPublisher =
  | { type: 'run', config: PublisherConfig }
  | { type: 'exit' }

export interface PublisherStats {
  sent: number
  accepted: number
  failed: number
  /** Status code (or error code) → count, for everything but 202. */
  failures: Record<string, number>
  firstSendUs: number
  lastSendUs: number
  lastAckUs: number
  /** Request → 202 latency, a sparse histogram. */
  latency: Array<[number, number]>
  maxLatencyUs: number
}

export type FromPublisher =
  | { type: 'ready' }
  | { type: 'progress', sent: number }
  | { type: 'done', stats: PublisherStats }
  | { type: 'fatal', message: string }

/** Narrows an IPC message to an object with a string `type`; the sender is our own code. */
export function isMessage<T extends { type: string }> (value: unknown): value is T {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string'
}

/**
 * A load-generator process's side of the IPC: says it is ready, answers each `run` with `done`
 * (or `fatal`), and exits when told to or when the benchmark goes away.
 */
export function serveWorker<Config, Stats> (run: (config: Config) => Promise<Stats>): void {
  const send = (message: { type: string }): void => { process.send?.(message) }
  process.on('message', (message: unknown) => {
    if (!isMessage<{ type: 'run', config: Config } | { type: 'exit' }>(message)) return
    if (message.type === 'run') {
      run(message.config).then((stats) => { send({ type: 'done', stats } as { type: string }) }, (err: unknown) => {
        send({ type: 'fatal', message: (err as Error).stack ?? String(err) } as { type: string })
      })
    } else {
      process.exit(0)
    }
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/**
 * POSTs a JSON body on a keep-alive agent; resolves with the status code as text, or the error's
 * code (a refused connection, a timeout), never rejecting: a publisher counts every outcome.
 */
export async function postJson (agent: Agent, target: URL, body: string, timeoutMs?: number): Promise<string> {
  return await new Promise<string>((resolve) => {
    const outgoing = request({
      agent,
      hostname: target.hostname,
      port: target.port,
      path: target.pathname,
      method: 'POST',
      timeout: timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    }, (response) => {
      response.resume()
      response.on('end', () => resolve(String(response.statusCode)))
      response.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    outgoing.on('timeout', () => outgoing.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })))
    outgoing.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    outgoing.end(body)
  })
}
