import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

// The Lua scripts of the Redis bus. Each runs atomically in Redis: a message gets its offset, is
// stored and is published in one step, so no client can see a message the history lacks, nor an
// offset twice.

/**
 * Publishes messages in order. ARGV[1] is this instance's epoch suffix, then 9 fields a message:
 * pubsub channel, meta hash, stream, history size (0: none), ttl ms, idempotency key ('' for none),
 * its window ms, and the frame split in two where the position goes.
 * Returns two entries a message: "<offset> <epoch>" ('' without history), and 1 for a duplicate.
 */
export const PUBLISH_SCRIPT = `
-- First every message is checked, numbered and stored; only then is anything published, so a
-- command Redis refuses midway (memory, a key of the wrong type) publishes nothing.
local out, outgoing, keys = {}, {}, {}
-- Each channel's history is read once per call and written back once at the end: a batch of a
-- channel's messages costs an XADD and a PUBLISH each.
local histories, touched = {}, {}
local function refused (reply)
  if type(reply) ~= 'table' or reply.err == nil then return false end
  -- The streams may hold entries of this call that will never be published: their channels
  -- start a new history (a new epoch) with their next publish.
  for _, meta in ipairs(touched) do redis.call('DEL', meta, histories[meta].stream) end
  return true
end
for i = 2, #ARGV, 9 do
  local channel, meta, stream, size, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local idem, window, head, tail = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local seen = false
  if idem ~= '' then
    seen = keys[idem]
    if seen == nil then
      seen = redis.pcall('GET', idem)
      if refused(seen) then return seen end
    end
  end
  if seen then
    out[#out + 1] = seen
    out[#out + 1] = 1
  else
    local frame, result = head .. tail, ''
    if size ~= '0' then
      local h = histories[meta]
      if not h then
        local state = redis.pcall('HMGET', meta, 'epoch', 'top')
        if refused(state) then return state end
        h = { stream = stream, ttl = ttl }
        if state[1] and state[2] and redis.call('EXISTS', stream) == 1 then
          h.epoch, h.top = state[1], tonumber(state[2])
        else
          -- Half a history (the hash or the stream lost alone) is no history: start a new one.
          local now = redis.call('TIME')
          h.epoch, h.top = string.format('%x%05x', tonumber(now[1]), tonumber(now[2])) .. ARGV[1], 0
          redis.call('DEL', stream)
        end
        histories[meta] = h
        touched[#touched + 1] = meta
      end
      local offset = h.top + 1
      frame = head .. '"offset":' .. offset .. ',"epoch":"' .. h.epoch .. '",' .. tail
      local added = redis.pcall('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'f', frame)
      if refused(added) then return added end
      h.top = offset
      result = offset .. ' ' .. h.epoch
    end
    if idem ~= '' then keys[idem] = result end
    outgoing[#outgoing + 1] = { channel, frame, idem, window, result }
    out[#out + 1] = result
    out[#out + 1] = 0
  end
end
for _, message in ipairs(outgoing) do
  -- Refused here (an ACL on the channel), the messages before it are out, but none after it.
  local sent = redis.pcall('PUBLISH', message[1], message[2])
  if refused(sent) then return sent end
  if message[3] ~= '' then redis.call('SET', message[3], message[5], 'PX', message[4]) end
end
for _, meta in ipairs(touched) do
  local h = histories[meta]
  redis.call('HSET', meta, 'epoch', h.epoch, 'top', h.top)
  redis.call('PEXPIRE', meta, h.ttl)
  redis.call('PEXPIRE', h.stream, h.ttl)
end
return out
`

/**
 * Reads a channel's history as one snapshot. ARGV: meta hash, stream, since ('' for the position
 * only), most entries, '1' for newest first. Returns {} when the channel has no history, else
 * {epoch, top offset, entries after since}.
 */
export const READ_SCRIPT = `
local meta, stream, since, count, reverse = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local epoch = redis.call('HGET', meta, 'epoch')
if (not epoch) or redis.call('EXISTS', stream) == 0 then return {} end
local top = tonumber(redis.call('HGET', meta, 'top'))
local entries = {}
if since ~= '' and tonumber(count) > 0 and tonumber(since) < top then
  if reverse == '1' then
    entries = redis.call('XREVRANGE', stream, '+', '(' .. since .. '-0', 'COUNT', count)
  else
    entries = redis.call('XRANGE', stream, '(' .. since .. '-0', '+', 'COUNT', count)
  end
end
return {epoch, top, entries}
`

export interface Script {
  source: string
  sha: string
}

export function script (source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') }
}

/** ioredis makes a Buffer variant of every command at run time; its types list only some. */
interface BufferEval {
  evalshaBuffer: (sha: string, keys: number, ...args: Array<string | number>) => Promise<unknown>
  evalBuffer: (source: string, keys: number, ...args: Array<string | number>) => Promise<unknown>
}

/**
 * Runs a script by its SHA1, sending its source only when Redis does not have it yet. Replies come
 * as Buffers: stored frames go out to sockets as the bytes they are, never decoded.
 */
export async function runScript (client: Redis, { source, sha }: Script, args: Array<string | number>): Promise<unknown> {
  const buffered = client as unknown as BufferEval
  try {
    return await buffered.evalshaBuffer(sha, 0, ...args)
  } catch (err) {
    if (!(err as Error).message.startsWith('NOSCRIPT')) throw err
    return await buffered.evalBuffer(source, 0, ...args)
  }
}

/**
 * Presence of one channel. ARGV: members zset (scored by expiry), counts hash, pubsub channel,
 * now ms, new expiry ms, key ttl ms, '1' to publish join/leave frames, the channel as JSON,
 * this instance's id, '1' to return the identities present (a read; an update returns none: that
 * would cost as much as the channel is large, on every join), then pairs of 'j' (joined or still
 * there) or 'l' (left) and an identity. Members of instances that stopped refreshing go first.
 */
export const PRESENCE_SCRIPT = `
local zset, hash, pubsub, now, expires, keyttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local events, channel, instance = ARGV[7] == '1', ARGV[8], ARGV[9]
local function announce (kind, identity)
  if events then
    redis.call('PUBLISH', pubsub, '{"type":"' .. kind .. '","channel":' .. channel .. ',"identity":' .. identity .. '}')
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
for i = 11, #ARGV, 2 do
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
if ARGV[10] == '1' then return redis.call('HKEYS', hash) end
return {}
`
