// Where a message stands in its channel's history, read from the frame itself. The publish
// script writes `"offset":N,"epoch":"E",` right after the channel, so reading it back is a few
// byte comparisons at a known place, never a JSON parse of the whole message.

export interface Position {
  offset: number
  epoch: string
}

const OFFSET_KEY = Buffer.from('"offset":')
const EPOCH_KEY = Buffer.from(',"epoch":"')
const QUOTE = 0x22
const ZERO = 0x30
const NINE = 0x39
/** Offsets are counters kept by Redis: well under 2^53, so 15 digits are plenty. */
const MAX_OFFSET_DIGITS = 15
const MAX_EPOCH_LENGTH = 64

/**
 * The length of `{"type":"message","channel":"<channel>",`: where a channel message's position
 * goes. Channel names are ASCII without quotes or backslashes, so the name is its JSON text.
 */
export function messageHeadLength (channel: string): number {
  return '{"type":"message","channel":"'.length + channel.length + '",'.length
}

/** The position a message frame of `channel` carries, or undefined when it carries none. */
export function readPosition (payload: Buffer, channel: string): Position | undefined {
  let at = messageHeadLength(channel)
  if (!startsAt(payload, OFFSET_KEY, at)) return undefined
  at += OFFSET_KEY.length
  let offset = 0
  const digitsFrom = at
  while (at < payload.length && payload[at] >= ZERO && payload[at] <= NINE && at - digitsFrom < MAX_OFFSET_DIGITS) {
    offset = offset * 10 + payload[at] - ZERO
    at++
  }
  if (at === digitsFrom) return undefined
  if (!startsAt(payload, EPOCH_KEY, at)) return undefined
  at += EPOCH_KEY.length
  const end = payload.indexOf(QUOTE, at)
  if (end === -1 || end === at || end - at > MAX_EPOCH_LENGTH) return undefined
  return { offset, epoch: payload.toString('latin1', at, end) }
}

/** Whether `payload` holds `bytes` at `at` (compare() throws past the end, so the length is checked first). */
function startsAt (payload: Buffer, bytes: Buffer, at: number): boolean {
  return at + bytes.length <= payload.length && payload.compare(bytes, 0, bytes.length, at, at + bytes.length) === 0
}

/** The longest `"offset":N,"epoch":"E",` the publish script can add to a message. */
export const MAX_POSITION_LENGTH = positionText({ offset: 10 ** MAX_OFFSET_DIGITS - 1, epoch: 'e'.repeat(MAX_EPOCH_LENGTH) }).length

/** `"offset":N,"epoch":"E",`: what the publish script puts after the head of a message. */
export function positionText ({ offset, epoch }: Position): string {
  return `"offset":${offset},"epoch":"${epoch}",`
}
