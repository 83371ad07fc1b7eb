// The cluster benchmark's WebSocket clients, in the benchmark's own process: one client per channel,
// each subscribed at connect (`/ws?channels=ch<c>`) on the instance that holds the channel. Every
// measured message a client receives is checked (its channel, not seen before) and noted in a
// BitSet, so the messages accepted but never delivered can be counted at the end.
import WebSocket from 'ws'
import { BitSet, channelName, channelOf, type ClusterData } from './cluster-protocol.js'
import { withTimeout } from './processes.js'

/** One instance's share of the clients: the channels c with from <= c < to. */
export interface ClientGroup {
  name: string
  port: number
  from: number
  to: number
}

export interface GroupCounts {
  /** Measured messages received, on the right channel, each once. */
  received: number
  /** Warm-up messages received. */
  warmup: number
}

export interface ClientProblems {
  /** A measured message received a second time by its client. */
  duplicates: number
  /** A message frame on a channel the client does not hold, or whose number is not of its channel. */
  misrouted: number
  /** Frames that were neither a message, nor subscribed, nor pong. */
  otherFrames: Record<string, number>
  /** Sockets that closed while the run went on. */
  closed: number
  /** The first few oddities as they came, for the report. */
  samples: string[]
}

interface MessageFrame {
  type: string
  channel?: string
  data?: ClusterData
  code?: string
  message?: string
}

const CONNECT_CONCURRENCY = 50
const SAMPLES = 5

export class ClusterClients {
  private readonly sockets: WebSocket[] = []
  private received: BitSet
  readonly counts: GroupCounts[]
  readonly problems: ClientProblems = { duplicates: 0, misrouted: 0, otherFrames: {}, closed: 0, samples: [] }
  private running = false

  constructor (private readonly groups: ClientGroup[], private readonly channels: number, capacity: number) {
    this.received = new BitSet(capacity)
    this.counts = groups.map(() => ({ received: 0, warmup: 0 }))
  }

  /** Opens every client and resolves once each has its `subscribed` frame (or rejects after timeoutMs). */
  async connect (timeoutMs: number): Promise<void> {
    const jobs: Array<{ group: number, channel: number }> = []
    this.groups.forEach((group, index) => {
      for (let channel = group.from; channel < group.to; channel++) jobs.push({ group: index, channel })
    })
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++] as { group: number, channel: number }
        await this.open(job.group, job.channel)
      }
    }
    await withTimeout(Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, worker)), timeoutMs,
      `${jobs.length} WebSocket clients did not all connect and subscribe`)
    this.running = true
  }

  /** Messages received in the measured phase, over every client. */
  total (): number {
    return this.counts.reduce((sum, count) => sum + count.received, 0)
  }

  /** Clears what the warm-up left and makes room for `capacity` measured messages. */
  reset (capacity: number): void {
    this.received = new BitSet(capacity)
    for (const count of this.counts) count.received = 0
  }

  /** Whether measured message `index` reached its client. */
  has (index: number): boolean {
    return this.received.has(index)
  }

  async close (): Promise<void> {
    this.running = false
    await Promise.all(this.sockets.map(async (socket) => {
      if (socket.readyState === WebSocket.CLOSED) return
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
      socket.terminate()
      await closed
    }))
  }

  private note (sample: string): void {
    if (this.problems.samples.length < SAMPLES) this.problems.samples.push(sample)
  }

  private async open (group: number, channel: number): Promise<void> {
    const { port } = this.groups[group] as ClientGroup
    const name = channelName(channel)
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?channels=${name}`, { perMessageDeflate: false })
    this.sockets.push(socket)
    const counts = this.counts[group] as GroupCounts
    await new Promise<void>((resolve, reject) => {
      let subscribed = false
      socket.on('error', (err) => { if (!subscribed) reject(new Error(`client of ${name} on port ${port}: ${err.message}`)) })
      socket.on('close', (code, reason) => {
        if (!subscribed) {
          reject(new Error(`client of ${name} on port ${port} closed (${code} ${reason.toString()}) before it was subscribed`))
        } else if (this.running) {
          this.problems.closed++
          this.note(`client of ${name} closed during the run: ${code} ${reason.toString()}`)
        }
      })
      socket.on('message', (raw: Buffer) => {
        const frame = JSON.parse(raw.toString('utf8')) as MessageFrame
        if (frame.type === 'message') {
          const data = frame.data
          if (frame.channel !== name || data === undefined || channelOf(data.i, this.channels) !== channel) {
            this.problems.misrouted++
            this.note(`client of ${name} got ${raw.toString('utf8').slice(0, 200)}`)
          } else if (data.r === 0) {
            counts.warmup++
          } else if (this.received.add(data.i)) {
            counts.received++
          } else {
            this.problems.duplicates++
            this.note(`client of ${name} got message ${data.i} twice`)
          }
        } else if (frame.type === 'subscribed' && frame.channel === name && !subscribed) {
          subscribed = true
          resolve()
        } else if (frame.type !== 'pong') {
          const key = frame.type === 'error' ? `error ${frame.code ?? '?'}` : frame.type
          this.problems.otherFrames[key] = (this.problems.otherFrames[key] ?? 0) + 1
          this.note(`client of ${name} got ${raw.toString('utf8').slice(0, 200)}`)
          if (!subscribed && frame.type === 'error') reject(new Error(`client of ${name}: ${raw.toString('utf8')}`))
        }
      })
    })
  }
}
