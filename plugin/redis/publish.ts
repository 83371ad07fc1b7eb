import type { Redis } from 'ioredis'
import type { BusMessage, PublishResult } from '../bus/bus.js'
import { messageHeadLength, type Position } from '../history/sequence.js'
import type { RedisKeys } from './keys.js'
import { runScript, script } from './script.js'

// The publish script runs atomically in Redis: a message gets its offset, is stored and is
// published in one step, so no client can see a message the history lacks, nor an offset twice.

/**
 * Publishes messages in order. ARGV[1] is this instance's epoch suffix, then 9 fields a message:
 * pubsub channel, meta hash, stream, history size (0: none), ttl ms, idempotency key ('' for none),
 * its window ms, and the frame split in two where the position goes.
 * Returns two entries a message: "<offset> <epoch>" ('' without history), and 1 for a duplicate.
 */
const PUBLISH_SCRIPT = `
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

const PUBLISH = script(PUBLISH_SCRIPT)

export interface PublishContext {
  client: Redis
  keys: RedisKeys
  /** Ends every epoch this instance starts, so two instances starting one in the same microsecond differ. */
  instance: string
  /** How long an idempotency key is remembered, in milliseconds. */
  idempotencyWindow: number
}

/**
 * Publishes messages in order. A lone message without history or idempotency key is a plain
 * PUBLISH; anything else is one script: offsets, history and idempotency in the same atomic step
 * as the PUBLISH, and a batch in one command, in order.
 */
export async function publishMessages ({ client, keys, instance, idempotencyWindow }: PublishContext,
  messages: readonly BusMessage[]): Promise<PublishResult[]> {
  const [first] = messages
  if (messages.length === 1 && first.history === undefined && first.idempotencyKey === undefined) {
    await client.publish(keys.pubsub(first.channel), first.payload)
    return [{ duplicate: false }]
  }
  const args = [instance, ...messages.flatMap((message) => publishArgs(keys, idempotencyWindow, message))]
  const results = await runScript(client, PUBLISH, args) as Array<Buffer | number>
  return messages.map((message, index) => ({
    position: parsePosition(results[2 * index] as Buffer),
    duplicate: results[2 * index + 1] === 1
  }))
}

/** The script's 9 fields for one message. */
function publishArgs (keys: RedisKeys, idempotencyWindow: number, { channel, payload, history, idempotencyKey }: BusMessage): Array<string | number> {
  // Only channel messages have history settings (BusMessage says so).
  const names = history === undefined ? { meta: '', stream: '' } : keys.history(channel as string)
  const head = history === undefined ? 0 : messageHeadLength(channel as string)
  return [
    keys.pubsub(channel), names.meta, names.stream,
    history?.size ?? 0, history?.ttl ?? 0,
    idempotencyKey === undefined ? '' : keys.idempotency(channel, idempotencyKey), idempotencyWindow,
    payload.slice(0, head), payload.slice(head)
  ]
}

/** "<offset> <epoch>" from the publish script; an empty reply is a message without history. */
function parsePosition (reply: Buffer): Position | undefined {
  if (reply.length === 0) return undefined
  const [offset, epoch] = reply.toString('latin1').split(' ')
  return { offset: Number.parseInt(offset, 10), epoch }
}
