import type { Redis } from 'ioredis'
import { BusUnavailableError } from '../errors.js'
import { toBusError } from '../bus/redis.js'
import { PRESENCE_SCRIPT, runScript, script } from '../bus/scripts.js'
import { withTimeout } from '../timeout.js'
import type { PresenceChange, PresenceStore } from './store.js'

const PRESENCE = script(PRESENCE_SCRIPT)

export interface RedisPresenceOptions {
  client: Redis
  prefix: string
  /** Names this instance's entries; another instance's entries are never touched but by expiry. */
  instance: string
  /** How long an entry lives without a refresh, in milliseconds. */
  ttl: number
  commandTimeout: number
}

/**
 * Presence in Redis: per channel, a sorted set of `<instance>\n<identity>` scored by when the
 * entry expires, and a hash counting each identity's instances. An instance that dies stops
 * refreshing its entries, and the next update or read of the channel drops them.
 */
export class RedisPresenceStore implements PresenceStore {
  constructor (private readonly options: RedisPresenceOptions) {}

  async update (channel: string, changes: readonly PresenceChange[], events: boolean): Promise<void> {
    await this.run(channel, events, false, changes.flatMap(([kind, identity]) => [kind === 'join' ? 'j' : 'l', identity]))
  }

  async members (channel: string, events: boolean): Promise<string[]> {
    return (await this.run(channel, events, true, [])).map((identity) => identity.toString())
  }

  private async run (channel: string, events: boolean, withMembers: boolean, changes: string[]): Promise<Buffer[]> {
    const { client, prefix, instance, ttl, commandTimeout } = this.options
    const now = Date.now()
    const reply = runScript(client, PRESENCE, [
      `${prefix}p:${channel}`, `${prefix}pc:${channel}`, `${prefix}c:${channel}`,
      now, now + ttl, 2 * ttl, events ? '1' : '0', JSON.stringify(channel), instance, withMembers ? '1' : '0', ...changes
    ])
    try {
      return await withTimeout(reply, commandTimeout, () =>
        new BusUnavailableError(`Redis did not answer a presence update within ${commandTimeout} ms`)) as Buffer[]
    } catch (err) {
      throw toBusError(err)
    }
  }
}
