import { randomBytes } from 'node:crypto'
import type { Bus, BusHealth, BusMessage, BusMessageHandler, HistoryPage, HistoryQuery, PublishResult } from './bus.js'
import { BusUnavailableError } from '../errors.js'
import { messageHeadLength, positionText, type Position } from '../history/sequence.js'

const SWEEP_INTERVAL = 1000

interface ChannelHistory {
  epoch: string
  top: number
  messages: Array<{ offset: number, frame: Buffer }>
  expiresAt: number
}

/**
 * The in-process bus: one instance, no network, so the service runs with nothing else installed.
 * It keeps history and idempotency keys the way the Redis bus does, in this process's memory.
 */
export class MemoryBus implements Bus {
  readonly kind = 'memory'
  private readonly channels = new Set<string>()
  private readonly histories = new Map<string, ChannelHistory>()
  private readonly seenKeys = new Map<string, { result: PublishResult, expiresAt: number }>()
  private onMessage: BusMessageHandler | undefined
  private sweptAt = 0

  constructor (private readonly idempotencyWindow = 300000) {}

  async start (onMessage: BusMessageHandler): Promise<void> {
    this.onMessage = onMessage
  }

  async publish (channel: string | null, payload: string): Promise<void> {
    await this.publishMany([{ channel, payload }])
  }

  async publishMany (messages: readonly BusMessage[]): Promise<PublishResult[]> {
    const onMessage = this.onMessage
    if (onMessage === undefined) throw new BusUnavailableError('the in-process bus is not running')
    const now = Date.now()
    // Keys are added with one window, so the oldest come first: forget the expired ones.
    for (const [key, seen] of this.seenKeys) {
      if (seen.expiresAt > now) break
      this.seenKeys.delete(key)
    }
    // Histories of channels nobody publishes to any more expire too (a sweep a second at most).
    if (now - this.sweptAt > SWEEP_INTERVAL) {
      this.sweptAt = now
      for (const channel of this.histories.keys()) this.current(channel, now)
    }
    return messages.map((message) => {
      const key = message.idempotencyKey === undefined ? undefined : `${message.channel ?? ''}\n${message.idempotencyKey}`
      const seen = key === undefined ? undefined : this.seenKeys.get(key)
      if (seen !== undefined) return { ...seen.result, duplicate: true }
      const { frame, position } = this.record(message, now)
      if (message.channel === null || this.channels.has(message.channel)) onMessage(message.channel, frame)
      const result = { position, duplicate: false }
      if (key !== undefined) this.seenKeys.set(key, { result, expiresAt: now + this.idempotencyWindow })
      return result
    })
  }

  async readHistory (channel: string, { since, limit, reverse = false, epoch, maxBytes = 0, whole = false }: HistoryQuery): Promise<HistoryPage | undefined> {
    const history = this.current(channel, Date.now())
    if (history === undefined) return undefined
    const page = { epoch: history.epoch, offset: history.top, messages: [] as HistoryPage['messages'], truncated: false }
    // The same rules as the Redis read script: no entries a reader could not use.
    if (since === undefined || since >= history.top || (epoch !== undefined && epoch !== '' && epoch !== history.epoch) ||
      (whole && history.top - since > limit)) return page
    let messages = history.messages.filter((message) => message.offset > since)
    messages = reverse ? messages.slice(-limit).reverse() : messages.slice(0, limit)
    let bytes = 0
    for (const message of messages) {
      bytes += message.frame.length
      if (maxBytes > 0 && bytes > maxBytes && page.messages.length > 0) {
        page.truncated = true
        break
      }
      page.messages.push(message)
    }
    return page
  }

  async subscribe (channel: string): Promise<void> {
    if (this.onMessage === undefined) throw new BusUnavailableError('the in-process bus is not running')
    this.channels.add(channel)
  }

  async unsubscribe (channel: string): Promise<void> {
    this.channels.delete(channel)
  }

  health (): BusHealth {
    return this.onMessage === undefined
      ? { state: 'unavailable', reasons: ['the in-process bus is closed'], checks: { bus: 'closed' } }
      : { state: 'ok', reasons: [], checks: { bus: 'running' } }
  }

  async close (): Promise<void> {
    this.onMessage = undefined
    this.channels.clear()
    this.histories.clear()
    this.seenKeys.clear()
  }

  /** Gives the message its offset and keeps it, when its channel keeps history. */
  private record ({ channel, payload, history: settings }: BusMessage, now: number): { frame: Buffer, position?: Position } {
    if (channel === null || settings === undefined || settings.size === 0) return { frame: Buffer.from(payload) }
    let history = this.current(channel, now)
    if (history === undefined) {
      history = { epoch: randomBytes(6).toString('hex'), top: 0, messages: [], expiresAt: 0 }
      this.histories.set(channel, history)
    }
    const position = { offset: ++history.top, epoch: history.epoch }
    const head = messageHeadLength(channel)
    const frame = Buffer.from(payload.slice(0, head) + positionText(position) + payload.slice(head))
    history.messages.push({ offset: position.offset, frame })
    if (history.messages.length > settings.size) history.messages.shift()
    history.expiresAt = now + settings.ttl
    return { frame, position }
  }

  private current (channel: string, now: number): ChannelHistory | undefined {
    const history = this.histories.get(channel)
    if (history === undefined || history.expiresAt > now) return history
    this.histories.delete(channel)
    return undefined
  }
}
