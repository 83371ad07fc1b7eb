// What the cluster benchmark (bench-cluster.ts) and its publisher process (cluster-publisher.ts) say to
// each other, and how a message's number maps to its channel and to the instance it is published through.
import { paddingFor, type PublisherStats } from './protocol.js'

/** Channel number `c` is the channel `ch<c>`. */
export function channelName (channel: number): string {
  return `ch${channel}`
}

/** Messages go round the channels in order: message i is published on channel i mod channels. */
export function channelOf (index: number, channels: number): number {
  return index % channels
}

/**
 * The instance message i is published through: consecutive messages alternate, and each channel's
 * messages alternate from one round of the channels to the next, so every channel is published
 * through every instance.
 */
export function instanceOf (index: number, channels: number, instances: number): number {
  return (index + Math.floor(index / channels)) % instances
}

/** The `data` of a message: its phase (0 warm-up, 1 measured), its number and padding. */
export interface ClusterData {
  r: 0 | 1
  i: number
  pad: string
}

/** Bytes of `{"r":1,"i":100000,"pad":""}`. */
const DATA_OVERHEAD = JSON.stringify({ r: 1, i: 100000, pad: '' }).length

/** Padding that makes the JSON of a message's `data` about `size` bytes. */
export function clusterPadding (size: number): string {
  return paddingFor(size, DATA_OVERHEAD)
}

/** A set of message numbers as bits: small enough to cross IPC as base64 for 100,000s of messages. */
export class BitSet {
  readonly bits: Uint8Array
  constructor (readonly size: number, bits?: Uint8Array) {
    this.bits = bits ?? new Uint8Array(Math.ceil(size / 8))
  }

  static fromBase64 (size: number, text: string): BitSet {
    return new BitSet(size, new Uint8Array(Buffer.from(text, 'base64')))
  }

  toBase64 (): string {
    return Buffer.from(this.bits.buffer, this.bits.byteOffset, this.bits.byteLength).toString('base64')
  }

  has (index: number): boolean {
    return index >= 0 && index < this.size && ((this.bits[index >> 3] as number) & (1 << (index & 7))) !== 0
  }

  /** Sets the bit; false when it was set already. */
  add (index: number): boolean {
    const byte = index >> 3
    const bit = 1 << (index & 7)
    if (((this.bits[byte] as number) & bit) !== 0) return false
    this.bits[byte] = (this.bits[byte] as number) | bit
    return true
  }
}

export interface ClusterPublisherConfig {
  /** `POST /publish` URLs, one per instance. */
  urls: string[]
  channels: number
  /** 0: warm-up (not checked), 1: the measured run. */
  phase: 0 | 1
  /** Messages 0 … messages-1, message i due at start + i / rate. */
  messages: number
  rate: number
  /** Requests in flight at most. */
  lanes: number
  /** Bytes of each message's `data` JSON. */
  size: number
  /** No request starts after this long (a run that cannot keep up stops short). */
  timeoutMs: number
}

/** A publisher's counts (PublisherStats), and which messages were accepted where. */
export interface ClusterPublisherStats extends PublisherStats {
  /** Accepted (202) per instance, in `urls` order. */
  acceptedBy: number[]
  /** The message numbers answered 202, as a BitSet of `messages` bits in base64. */
  acceptedBits: string
}

export type ToClusterPublisher =
  | { type: 'run', config: ClusterPublisherConfig }
  | { type: 'exit' }

export type FromClusterPublisher =
  | { type: 'ready' }
  | { type: 'progress', sent: number }
  | { type: 'done', stats: ClusterPublisherStats }
  | { type: 'fatal', message: string }
