import { isUtf8 } from 'node:buffer'

// Anyone who can PUBLISH on the plugin's Redis channels can reach every client. Before a payload
// is forwarded, a check that costs a few byte comparisons and two native scans (no JSON parse)
// makes sure it has the shape of the plugin's frames (encodeMessage(), presence events).

/** How every frame the plugin publishes starts: messages, and presence's join and leave. */
const FRAME_STARTS = ['{"type":"message",', '{"type":"join",', '{"type":"leave",'].map((start) => Buffer.from(start))
const CLOSING_BRACE = 0x7d
/**
 * How a `__proto__` key looks in JSON.stringify's output (inside a string the quote is escaped).
 * Fastify refuses request bodies with it and broadcast() refuses data with it, so a message
 * carrying one did not come through this plugin.
 */
export const PROTO_KEY = '"__proto__":'
const PROTO_KEY_BYTES = Buffer.from(PROTO_KEY)

/** Why `payload` is not one of the plugin's messages, or undefined when it is. */
export function foreignPayloadReason (payload: Buffer, maxBytes: number): string | undefined {
  if (payload.length > maxBytes) return `larger than ${maxBytes} bytes`
  const known = FRAME_STARTS.some((start) => payload.length > start.length && payload.compare(start, 0, start.length, 0, start.length) === 0)
  if (!known || payload[payload.length - 1] !== CLOSING_BRACE) return 'not a message frame'
  if (payload.includes(PROTO_KEY_BYTES)) return 'carries a __proto__ key'
  // A text frame must be valid UTF-8, or every client that receives it closes with 1007.
  if (!isUtf8(payload)) return 'not valid UTF-8'
  return undefined
}
