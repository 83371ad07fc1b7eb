import type { PresenceChange, PresenceStore } from '../presence/store.js'
import { redisCommand, type RedisClient } from './client.js'
import type { RedisKeys } from './keys.js'
import { runScript, script } from './script.js'

/**
 * Presence of one channel. ARGV: members zset (scored by expiry), counts hash, pubsub channel,
 * the command that publishes to it (PUBLISH, or SPUBLISH on a cluster), now ms, new expiry ms, key ttl ms, '1' to publish join/leave frames, the channel as JSON,
 * this instance's id, '1' to return the identities present (a read; an update returns none: that
 * would cost as much as the channel is large, on every join), then pairs of 'j' (joined or still
 * there) or 'l' (left) and an identity. Members of instances that stopped refreshing go first.
 */
const PRESENCE_SCRIPT = `
local zset, hash, pubsub, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, expires, keyttl = ARGV[5], ARGV[6], ARGV[7]
local events, channel, instance = ARGV[8] == '1', ARGV[9], ARGV[10]
local function announce (kind, identity)
  if events then
    redis.call(publish, pubsub, '{"type":"' .. kind .. '","channel":' .. channel .. ',"identity":' .. identity .. '}')
  end
end
local function gone (identity)
  if redis.call('HINCRBY', hash, identity, -1) <= 0 then
    redis.call('HDEL', hash, identity)
    announce('leave', identity)
  end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', now)) do
  redis.call('ZREM', zset, member)
  gone(string.sub(member, string.find(member, '\\n', 1, true) + 1))
end
for i = 12, #ARGV, 2 do
  local identity = ARGV[i + 1]
  local member = instance .. '\\n' .. identity
  if ARGV[i] == 'j' then
    if redis.call('ZADD', zset, expires, member) == 1 and redis.call('HINCRBY', hash, identity, 1) == 1 then
      announce('join', identity)
    end
  elseif redis.call('ZREM', zset, member) == 1 then
    gone(identity)
  end
end
if redis.call('EXISTS', zset) == 1 then
  redis.call('PEXPIRE', zset, keyttl)
  redis.call('PEXPIRE', hash, keyttl)
end
if ARGV[11] == '1' then return redis.call('HKEYS', hash) end
return {}
`

const PRESENCE = script(PRESENCE_SCRIPT)

export interface RedisPresenceOptions {
  client: RedisClient
  keys: RedisKeys
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
    const { client, keys, instance, ttl, commandTimeout } = this.options
    const now = Date.now()
    const { members, counts } = keys.presence(channel)
    const reply = runScript(client, PRESENCE, [members, counts], [
      members, counts, keys.pubsub(channel), keys.sharded ? 'SPUBLISH' : 'PUBLISH',
      now, now + ttl, 2 * ttl, events ? '1' : '0', JSON.stringify(channel), instance, withMembers ? '1' : '0', ...changes
    ])
    return await redisCommand(reply, commandTimeout, 'answer a presence update') as Buffer[]
  }
}
