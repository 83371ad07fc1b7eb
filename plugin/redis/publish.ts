import type { BusMessage, PublishResult } from '../bus/bus.js'
import { messageHeadLength, type Position } from '../history/sequence.js'
import type { RedisClient } from './client.js'
import type { RedisKeys } from './keys.js'
import { runScript, script } from './script.js'

// The publish script runs atomically in Redis: a message gets its offset, is stored and is
// published in one step, so no client can see a message the history lacks, nor an offset twice.

/**
 * Publishes messages in order. ARGV[1] is this instance's epoch suffix, ARGV[2] the mode, ARGV[3]
 * the Redis server's replication ID (a history written under another may have lost its last
 * entries in a failover, as replication is asynchronous: it starts a new epoch; on a cluster,
 * where each shard has its own, '@<node id> <replication id>' of the master meant, or '?' to
 * have the script read it: plugin/redis/shard-servers.ts), ARGV[4] the command that
 * publishes (PUBLISH, or SPUBLISH on a cluster), ARGV[5] the idempotency window ms, ARGV[6] how
 * many channels the call's messages go to, then 6 fields a channel: pubsub channel, meta hash,
 * stream ('' and '' without history), history size (0: none), ttl ms, and the head of its frames
 * (up to where the position goes; '' without history); then 3 fields a message: its channel's
 * number in that list (from 1), its idempotency key ('' for none), and its frame, without the
 * head when the channel keeps history. (Per channel, not per message: a batch of 200 to one
 * channel sends its names and its head once, not 200 times, and the script joins each frame
 * from pieces it has, with no string.sub: cutting strings is most of Lua's cost a message.)
 * Mode 'batch': one caller's messages, all or nothing: every message is checked, numbered and
 * stored before any is published, and a refusal fails the call. Mode 'each': messages of several
 * callers, gathered in one call to share the script's start-up: each stands alone, and a refusal
 * answers that message only.
 * Returns two entries a message: its offset (0 without history) and 0; or, for a duplicate, the
 * first publish's "<offset> <epoch>" ('' without history) and 1; or, in mode 'each', the error and
 * 2. Then each channel's epoch ('' without history), in the order of the list: an integer and one
 * string a channel cost less to make, send and read than a string a message.
 */
const PUBLISH_SCRIPT = `
local out, outgoing, keys = {}, {}, {}
-- Each channel's history is read once per call and written back once at the end: a batch of a
-- channel's messages costs an XADD and a PUBLISH each.
local histories, touched, lost = {}, {}, {}
local each, server, publish, window = ARGV[2] == 'each', ARGV[3], ARGV[4], ARGV[5]
-- Keyed by the number as the messages write it: no tonumber() a message.
local channels, count = {}, tonumber(ARGV[6])
for c = 1, count do
  local at = 1 + 6 * c
  channels[tostring(c)] = { ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5] }
end
local first = 7 + 6 * count
-- On a cluster: '@<node id> <replication id>' of the master the client meant; trusted only if
-- this is that node (the call may have been redirected), else, or for '?', read here.
if string.byte(server, 1) == 64 then
  local id, replid = string.match(server, '^@(%S+) (%S+)$')
  server = redis.call('CLUSTER', 'MYID') == id and replid or '?'
end
if server == '?' then
  local info = redis.pcall('INFO', 'replication')
  server = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
end
local function failed (reply)
  return type(reply) == 'table' and reply.err ~= nil
end
local function refused (reply)
  if not failed(reply) then return false end
  -- The streams may hold entries of this call that will never be published: their channels
  -- start a new history (a new epoch) with their next publish.
  for _, meta in ipairs(touched) do redis.call('DEL', meta, histories[meta].stream) end
  return true
end
-- Checks, numbers and stores message i; returns what to publish, or true for a duplicate, or the
-- error Redis answered.
local function stage (i)
  local c = channels[ARGV[i]]
  local idem, frame = ARGV[i + 1], ARGV[i + 2]
  if idem ~= '' then
    local seen = keys[idem]
    if seen == nil then
      seen = redis.pcall('GET', idem)
      if failed(seen) then return seen end
    end
    if seen then
      out[#out + 1] = seen
      out[#out + 1] = 1
      return true
    end
  end
  local offset, h = 0, nil
  if c[4] ~= '0' then
    local meta = c[2]
    h = histories[meta]
    if not h then
      local state = redis.pcall('HMGET', meta, 'epoch', 'top', 'server')
      if failed(state) then return state end
      h = { meta = meta, stream = c[3], size = c[4], ttl = c[5], prefix = c[6] .. '"offset":' }
      if state[1] and state[2] and state[3] == server and redis.call('EXISTS', h.stream) == 1 then
        h.epoch, h.top = state[1], tonumber(state[2])
      else
        -- Half a history (the hash or the stream lost alone), or one this server took over in a
        -- failover (it may lack the last entries, whose offsets would be given again), is no
        -- history: start a new one.
        local now = redis.call('TIME')
        h.epoch, h.top = string.format('%x%05x', tonumber(now[1]), tonumber(now[2])) .. ARGV[1], 0
        redis.call('DEL', h.stream)
      end
      -- What follows the offset in every frame of this channel, made once a call.
      h.suffix = ',"epoch":"' .. h.epoch .. '",'
      histories[meta] = h
      touched[#touched + 1] = meta
    end
    offset = h.top + 1
    frame = h.prefix .. offset .. h.suffix .. frame
    -- Trimmed once a call, at the end.
    local added = redis.pcall('XADD', h.stream, offset .. '-0', 'f', frame)
    if failed(added) then return added end
    h.top = offset
  end
  if idem ~= '' then keys[idem] = h and (offset .. ' ' .. h.epoch) or '' end
  return { c[1], frame, idem, offset, h }
end
-- Publishes a staged message; returns the error Redis answered, if any.
local function send (message)
  local sent = redis.pcall(publish, message[1], message[2])
  if failed(sent) then return sent end
  local idem = message[3]
  if idem ~= '' then redis.call('SET', idem, keys[idem], 'PX', window) end
end
for i = first, #ARGV, 3 do
  local staged = stage(i)
  if each then
    if staged ~= true then
      local err = failed(staged) and staged or send(staged)
      if err then
        -- A message stored but not published leaves its history with an entry no one saw.
        if not failed(staged) and staged[5] then lost[staged[5].meta] = true end
        out[#out + 1] = err.err
        out[#out + 1] = 2
      else
        out[#out + 1] = staged[4]
        out[#out + 1] = 0
      end
    end
  elseif staged ~= true then
    if refused(staged) then return staged end
    outgoing[#outgoing + 1] = staged
    out[#out + 1] = staged[4]
    out[#out + 1] = 0
  end
end
for _, message in ipairs(outgoing) do
  -- Refused here (an ACL on the channel), the messages before it are out, but none after it.
  local err = send(message)
  if err then
    refused(err)
    return err
  end
end
for _, meta in ipairs(touched) do
  local h = histories[meta]
  if lost[meta] then
    redis.call('DEL', meta, h.stream)
  else
    redis.call('XTRIM', h.stream, 'MAXLEN', '~', h.size)
    redis.call('HSET', meta, 'epoch', h.epoch, 'top', h.top, 'server', server)
    redis.call('PEXPIRE', meta, h.ttl)
    redis.call('PEXPIRE', h.stream, h.ttl)
  end
end
for c = 1, count do
  local h = histories[channels[tostring(c)][2]]
  out[#out + 1] = h and h.epoch or ''
end
return out
`

const PUBLISH = script(PUBLISH_SCRIPT)

export interface PublishContext {
  client: RedisClient
  keys: RedisKeys
  /** Ends every epoch this instance starts, so two instances starting one in the same microsecond differ. */
  instance: string
  /** How long an idempotency key is remembered, in milliseconds. */
  idempotencyWindow: number
  /**
   * What the script is told of the server that runs it, by the slot of the call's keys: the
   * replication ID of the one Redis the client is connected to (INFO replication's master_replid),
   * or, on a cluster, of the master that owns the slot (plugin/redis/shard-servers.ts).
   */
  serverOf: (slot: number) => string
}

/** What became of one message: its position and whether it was a duplicate, or the error Redis answered for it alone. */
export type PublishOutcome = PublishResult | { error: Error }

/**
 * Publishes messages in order. A lone message without history or idempotency key is a plain
 * PUBLISH; anything else is one script: offsets, history and idempotency in the same atomic step
 * as the PUBLISH. `each` false: one caller's batch, all or nothing (a refusal rejects the call).
 * `each` true: messages of several callers sharing one script call, each answered on its own.
 *
 * On a cluster a script runs on one shard, so the messages go in one call per slot (each
 * channel's order kept); a batch is then all or nothing within each slot only.
 */
export async function publishMessages (context: PublishContext, messages: readonly BusMessage[], each = false): Promise<PublishOutcome[]> {
  const { client, keys } = context
  const [first] = messages
  if (messages.length === 1 && first.history === undefined && first.idempotencyKey === undefined) {
    const channel = keys.pubsub(first.channel)
    await (keys.sharded ? client.spublish(channel, first.payload) : client.publish(channel, first.payload))
    return [{ duplicate: false }]
  }
  if (!keys.sharded) return await runPublish(context, messages, each, 0)
  const bySlot = new Map<number, number[]>()
  messages.forEach((message, index) => {
    const slot = keys.slot(message.channel)
    const indexes = bySlot.get(slot)
    if (indexes === undefined) bySlot.set(slot, [index])
    else indexes.push(index)
  })
  if (bySlot.size === 1) return await runPublish(context, messages, each, bySlot.keys().next().value as number)
  const outcomes: PublishOutcome[] = new Array(messages.length)
  await Promise.all([...bySlot].map(async ([slot, indexes]) => {
    const results = await runPublish(context, indexes.map((index) => messages[index]), each, slot)
    indexes.forEach((index, i) => { outcomes[index] = results[i] })
  }))
  return outcomes
}

/** One script call: messages whose names all share one slot (any messages, and slot 0, off a cluster). */
async function runPublish ({ client, keys, instance, idempotencyWindow, serverOf }: PublishContext,
  messages: readonly BusMessage[], each: boolean, slot: number): Promise<PublishOutcome[]> {
  const { args, declared, numbers } = publishArgs(keys, messages, [instance, each ? 'each' : 'batch', serverOf(slot), keys.sharded ? 'SPUBLISH' : 'PUBLISH', idempotencyWindow])
  // Off a cluster one key routes nothing and is checked by nothing: the first is enough.
  const results = await runScript(client, PUBLISH, keys.sharded ? declared : declared.slice(0, 1), args) as Array<Buffer | number>
  // Each channel's epoch, read once for all its messages.
  const epochs: Array<string | undefined> = []
  const epochOf = (number: number): string => {
    let epoch = epochs[number]
    if (epoch === undefined) {
      epoch = (results[2 * messages.length + number - 1] as Buffer).toString('latin1')
      epochs[number] = epoch
    }
    return epoch
  }
  return messages.map((message, index) => {
    const reply = results[2 * index]
    const flag = results[2 * index + 1]
    // The reply to one message of a shared call, told as Redis would have told it alone.
    if (flag === 2) return { error: Object.assign(new Error(reply.toString()), { name: 'ReplyError' }) }
    if (flag === 1) return { position: parsePosition(reply as Buffer), duplicate: true }
    const offset = reply as number
    return { position: offset === 0 ? undefined : { offset, epoch: epochOf(numbers[index]) }, duplicate: false }
  })
}

/**
 * The script's fields, built in one array: the call's own (`call`), the channels (6 fields each),
 * then the messages (3 each); every key they touch (history hash and stream, idempotency keys),
 * for the script to declare; and each message's channel number. A call that stores nothing declares its first
 * channel, for a cluster client to route by.
 */
function publishArgs (keys: RedisKeys, messages: readonly BusMessage[], call: Array<string | number>): { args: Array<string | number>, declared: string[], numbers: number[] } {
  const channelArgs: Array<string | number> = []
  const messageArgs: Array<string | number> = []
  /** Per channel: its number in the call, and the length of its frames' head (0 when the whole frame is sent). */
  const byChannel = new Map<string | null, { number: number, head: number }>()
  const numbers: number[] = []
  const declared = new Set<string>()
  for (const { channel, payload, history, idempotencyKey } of messages) {
    let entry = byChannel.get(channel)
    if (entry === undefined) {
      // Only channel messages have history settings (BusMessage says so), the same for all of a channel's.
      const stored = history !== undefined && history.size > 0
      entry = { number: byChannel.size + 1, head: stored ? messageHeadLength(channel as string) : 0 }
      byChannel.set(channel, entry)
      const names = history === undefined ? undefined : keys.history(channel as string)
      // The script stores a channel's messages exactly when its size is not 0: the same test as here.
      channelArgs.push(keys.pubsub(channel), names?.meta ?? '', names?.stream ?? '', stored ? history.size : 0, history?.ttl ?? 0,
        payload.slice(0, entry.head))
      if (names !== undefined) declared.add(names.meta).add(names.stream)
    }
    numbers.push(entry.number)
    const idempotency = idempotencyKey === undefined ? '' : keys.idempotency(channel, idempotencyKey)
    if (idempotency !== '') declared.add(idempotency)
    messageArgs.push(entry.number, idempotency, entry.head === 0 ? payload : payload.slice(entry.head))
  }
  if (declared.size === 0) declared.add(channelArgs[0] as string)
  return { args: [...call, byChannel.size, ...channelArgs, ...messageArgs], declared: [...declared], numbers }
}

/** "<offset> <epoch>" from the publish script; an empty reply is a message without history. */
function parsePosition (reply: Buffer): Position | undefined {
  if (reply.length === 0) return undefined
  const [offset, epoch] = reply.toString('latin1').split(' ')
  return { offset: Number.parseInt(offset, 10), epoch }
}
