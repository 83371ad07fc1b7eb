import type { HistoryPage, HistoryQuery } from '../bus/bus.js'
import type { RedisClient } from './client.js'
import type { RedisKeys } from './keys.js'
import { runScript, script } from './script.js'

/**
 * Reads a channel's history as one snapshot. ARGV: meta hash, stream, since ('' for the position
 * only), most entries, '1' for newest first, the epoch the reader knows ('' for any), most bytes
 * of frames (0: no cap), '1' when the whole of since..top must fit in `count` (a resume). Returns
 * {} when the channel has no history, else {epoch, top offset, entries after since, 1 if cut}.
 *
 * Entries are read only when they can be of use, and in small steps that stop at the byte cap:
 * a 70-byte resume frame must not make Redis send megabytes that will be thrown away.
 */
const READ_SCRIPT = `
local meta, stream, since, count, reverse = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local wantedEpoch, maxBytes, whole = ARGV[6], tonumber(ARGV[7]), ARGV[8]
local epoch = redis.call('HGET', meta, 'epoch')
if (not epoch) or redis.call('EXISTS', stream) == 0 then return {} end
local top = tonumber(redis.call('HGET', meta, 'top'))
local entries = {}
if since == '' or count <= 0 or tonumber(since) >= top then return {epoch, top, entries, 0} end
if wantedEpoch ~= '' and wantedEpoch ~= epoch then return {epoch, top, entries, 0} end
if whole == '1' and top - tonumber(since) > count then return {epoch, top, entries, 0} end
local bytes, cut = 0, 0
local after, before = '(' .. since .. '-0', '+'
while #entries < count and cut == 0 do
  local step = math.min(count - #entries, 16)
  local chunk
  if reverse == '1' then
    chunk = redis.call('XREVRANGE', stream, before, after, 'COUNT', step)
  else
    chunk = redis.call('XRANGE', stream, after, before, 'COUNT', step)
  end
  for _, entry in ipairs(chunk) do
    bytes = bytes + #entry[2][2]
    -- At least one entry: a message over the cap must not stop a reader from paging past it.
    if maxBytes > 0 and bytes > maxBytes and #entries > 0 then
      cut = 1
      break
    end
    entries[#entries + 1] = entry
  end
  if #chunk < step then break end
  if reverse == '1' then before = '(' .. chunk[#chunk][1] else after = '(' .. chunk[#chunk][1] end
end
return {epoch, top, entries, cut}
`

const READ = script(READ_SCRIPT)

/** Reads a channel's history (Redis Streams, one snapshot): its position and the messages after `since`. */
export async function readHistory (client: RedisClient, keys: RedisKeys, channel: string,
  { since, limit, reverse = false, epoch = '', maxBytes = 0, whole = false }: HistoryQuery): Promise<HistoryPage | undefined> {
  const { meta, stream } = keys.history(channel)
  const reply = await runScript(client, READ, [meta, stream], [meta, stream, since ?? '', limit, reverse ? '1' : '0', epoch, maxBytes, whole ? '1' : '0'])
  const [storedEpoch, offset, entries, cut] = reply as [Buffer | undefined, number, Array<[Buffer, Buffer[]]>, number]
  if (storedEpoch === undefined) return undefined
  return {
    epoch: storedEpoch.toString('latin1'),
    offset,
    messages: entries.map(([id, fields]) => ({ offset: Number.parseInt(id.toString('latin1'), 10), frame: fields[1] })),
    truncated: cut === 1
  }
}
