/**
 * Every Redis name the plugin uses, in one place: what publish, history, idempotency and presence
 * read and write. `prefix` (the redisPrefix option) comes first in each, so several services can
 * share one Redis.
 *
 * | name                       | type      | holds                                                  |
 * |----------------------------|-----------|--------------------------------------------------------|
 * | `<prefix>all`              | channel   | messages to every connection                           |
 * | `<prefix>c:<channel>`      | channel   | messages, join and leave frames of one channel         |
 * | `<prefix>h:meta:<channel>` | hash      | the channel history's epoch and top offset             |
 * | `<prefix>h:stream:<channel>` | stream  | the channel's last messages, by offset                 |
 * | `<prefix>i:<channel>\|<key>` | string  | an idempotency key's first result                      |
 * | `<prefix>p:<channel>`      | sorted set | presence entries (`<instance>\n<identity>`) by expiry |
 * | `<prefix>pc:<channel>`     | hash      | how many instances have each identity on the channel   |
 */
export class RedisKeys {
  readonly all: string
  private readonly channelPrefix: string

  constructor (private readonly prefix: string) {
    this.all = `${prefix}all`
    this.channelPrefix = `${prefix}c:`
  }

  /** The Pub/Sub channel of a plugin channel, or of every connection (`null`). */
  pubsub (channel: string | null): string {
    return channel === null ? this.all : this.channelPrefix + channel
  }

  /** The plugin channel a Pub/Sub channel the plugin subscribed to carries: null for `all`. */
  channelOf (pubsub: string): string | null {
    return pubsub === this.all ? null : pubsub.slice(this.channelPrefix.length)
  }

  history (channel: string): { meta: string, stream: string } {
    return { meta: `${this.prefix}h:meta:${channel}`, stream: `${this.prefix}h:stream:${channel}` }
  }

  /** `|` ends the channel name (which cannot contain one), so no channel and key pair reads as another. */
  idempotency (channel: string | null, key: string): string {
    return `${this.prefix}i:${channel ?? ''}|${key}`
  }

  presence (channel: string): { members: string, counts: string } {
    return { members: `${this.prefix}p:${channel}`, counts: `${this.prefix}pc:${channel}` }
  }
}
