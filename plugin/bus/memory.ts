import type { Bus, BusHealth, BusMessage, BusMessageHandler } from './bus.js'
import { BusUnavailableError } from '../errors.js'

/** The in-process bus: one instance, no network, so the service runs with nothing else installed. */
export class MemoryBus implements Bus {
  readonly kind = 'memory'
  private readonly channels = new Set<string>()
  private onMessage: BusMessageHandler | undefined

  async start (onMessage: BusMessageHandler): Promise<void> {
    this.onMessage = onMessage
  }

  async publish (channel: string | null, payload: string): Promise<void> {
    if (this.onMessage === undefined) throw new BusUnavailableError('the in-process bus is not running')
    if (channel === null || this.channels.has(channel)) {
      this.onMessage(channel, Buffer.from(payload))
    }
  }

  async publishMany (messages: readonly BusMessage[]): Promise<void> {
    for (const { channel, payload } of messages) await this.publish(channel, payload)
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
  }
}
