import type { Redis } from 'ioredis'
import type { HistoryPage, HistoryQuery } from '../bus/bus.js'
import type { RedisKeys } from './keys.js'
import { runScript, script } from './script.js'

/**
 * Reads a channel's history as one snapshot. ARGV: meta hash, stream, since ('' for the position
 * only), most entries, '1' for newest first. Returns {} when the channel has no history, else
 * {epoch, top offset, entries after since}.
 */
const READ_SCRIPT = `
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

const READ = script(READ_SCRIPT)

/** Reads a channel's history (Redis Streams, one snapshot): its position and the messages after `since`. */
export async function readHistory (client: Redis, keys: RedisKeys, channel: string,
  { since, limit, reverse = false }: HistoryQuery): Promise<HistoryPage | undefined> {
  const { meta, stream } = keys.history(channel)
  const reply = await runScript(client, READ, [meta, stream, since ?? '', limit, reverse ? '1' : '0'])
  const [epoch, offset, entries] = reply as [Buffer | undefined, number, Array<[Buffer, Buffer[]]>]
  if (epoch === undefined) return undefined
  return {
    epoch: epoch.toString('latin1'),
    offset,
    messages: entries.map(([id, fields]) => ({ offset: Number.parseInt(id.toString('latin1'), 10), frame: fields[1] }))
  }
}
