import calculateSlot from 'cluster-key-slot'

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
 *
 * On a Redis Cluster (`sharded`) each channel is written `{<channel>}` in every name (a hash tag):
 * all the names of one channel share its slot, so the scripts that touch them run on one shard,
 * while different channels spread over every slot. Messages to every connection are `<prefix>all:{*}`
 * and their idempotency keys `<prefix>i:{*}|<key>`, in the slot of `{*}` (no channel is named `*`).
 */
export class RedisKeys {
  readonly all: string
  private readonly channelPrefix: string

  constructor (private readonly prefix: string, readonly sharded = false) {
    this.all = sharded ? `${prefix}all:{*}` : `${prefix}all`
    this.channelPrefix = `${prefix}c:`
  }

  /** The channel as names write it: a hash tag on a cluster. */
  private tag (channel: string | null): string {
    if (channel === null) return this.sharded ? '{*}' : ''
    return this.sharded ? `{${channel}}` : channel
  }

  /** The Pub/Sub channel of a plugin channel, or of every connection (`null`). */
  pubsub (channel: string | null): string {
    return channel === null ? this.all : this.channelPrefix + this.tag(channel)
  }

  /** The plugin channel a Pub/Sub channel the plugin subscribed to carries: null for `all`. */
  channelOf (pubsub: string): string | null {
    if (pubsub === this.all) return null
    const tagged = pubsub.slice(this.channelPrefix.length)
    return this.sharded ? tagged.slice(1, -1) : tagged
  }

  history (channel: string): { meta: string, stream: string } {
    const tagged = this.tag(channel)
    return { meta: `${this.prefix}h:meta:${tagged}`, stream: `${this.prefix}h:stream:${tagged}` }
  }

  /** `|` ends the channel name (which cannot contain one), so no channel and key pair reads as another. */
  idempotency (channel: string | null, key: string): string {
    return `${this.prefix}i:${this.tag(channel)}|${key}`
  }

  presence (channel: string): { members: string, counts: string } {
    const tagged = this.tag(channel)
    return { members: `${this.prefix}p:${tagged}`, counts: `${this.prefix}pc:${tagged}` }
  }

  /** The cluster slot of a channel's names (or of `all`, for `null`). */
  slot (channel: string | null): number {
    return calculateSlot(this.pubsub(channel))
  }

  /** The cluster slot of a Pub/Sub name (and of every name of its channel). */
  slotOfName (pubsub: string): number {
    return calculateSlot(pubsub)
  }
}
