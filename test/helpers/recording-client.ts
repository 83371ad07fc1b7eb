import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { WebSocket } from 'ws'
import { BroadcastClient, type BroadcastClientOptions, type BroadcastError, type ResetInfo, type Subscription, type SubscribeOptions, type SubscriptionHandlers } from '../../client/index.js'

export interface Delivery {
  data: unknown
  offset?: number
  epoch?: string
}

export interface ClientEvent {
  event: 'connecting' | 'connected' | 'disconnected' | 'error'
  code?: number
  reason?: string
  error?: BroadcastError
}

/**
 * A BroadcastClient (over `ws`, as a Node user runs it) that records everything it reports, so a
 * test can wait for what it expects and then assert on all of it: the messages of each channel
 * in the order they came, the resets, the state changes and the errors.
 */
export class RecordingClient {
  readonly client: BroadcastClient
  readonly events: ClientEvent[] = []
  readonly messages = new Map<string, Delivery[]>()
  readonly resets = new Map<string, ResetInfo[]>()
  readonly everyone: unknown[] = []

  constructor (url: string, options: BroadcastClientOptions = {}) {
    this.client = new BroadcastClient(url, { WebSocket, ...options })
    this.client.on('connecting', () => this.events.push({ event: 'connecting' }))
    this.client.on('connected', () => this.events.push({ event: 'connected' }))
    this.client.on('disconnected', ({ code, reason }) => this.events.push({ event: 'disconnected', code, reason }))
    this.client.on('error', (error) => this.events.push({ event: 'error', error }))
    this.client.on('message', (data) => this.everyone.push(data))
  }

  subscribe (channel: string, handlers: SubscriptionHandlers = {}, options: SubscribeOptions = {}): Subscription {
    const messages: Delivery[] = []
    const resets: ResetInfo[] = []
    this.messages.set(channel, messages)
    this.resets.set(channel, resets)
    return this.client.subscribe(channel, {
      ...handlers,
      onMessage (data, info) {
        messages.push({ data, offset: info.offset, epoch: info.epoch })
        handlers.onMessage?.(data, info)
      },
      onReset (info) {
        resets.push(info)
        handlers.onReset?.(info)
      }
    }, options)
  }

  received (channel: string): unknown[] {
    return (this.messages.get(channel) ?? []).map((message) => message.data)
  }

  count (event: ClientEvent['event']): number {
    return this.events.filter((entry) => entry.event === event).length
  }

  errors (): BroadcastError[] {
    return this.events.flatMap((entry) => entry.error === undefined ? [] : [entry.error])
  }
}

/** A recording client closed when the test ends. */
export function recordingClient (t: Test, url: string, options: BroadcastClientOptions = {}): RecordingClient {
  const recording = new RecordingClient(url, options)
  t.teardown(() => recording.client.close())
  return recording
}

/** Waits until `done` holds, polling every 20 ms; fails with `what` and the state `describe` gives after `timeout` ms. */
export async function until (done: () => boolean, timeout: number, what: string, describe: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + timeout
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout} ms ${JSON.stringify(describe())}`)
    await sleep(20)
  }
}

/** The WebSocket URL of an app's route, from its http:// base URL. */
export function hubUrl (url: string, path = '/ws'): string {
  return `${url.replace(/^http/, 'ws')}${path}`
}
