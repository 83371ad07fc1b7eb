// RFC 6455 §5.2: the bytes of one unmasked, final text frame. A server's frames are never
// masked, so the same bytes can go to every socket: build once, write N times.

const FIN_TEXT = 0x81
const MAX_SHORT_LENGTH = 125
const MAX_MEDIUM_LENGTH = 0xffff
/**
 * Up to this payload size the header and payload are copied into one buffer, so each socket gets
 * one write; above it the payload is not copied (a copy per message costs more than a second
 * buffer in each socket's corked write, and holds twice the memory while sockets drain).
 */
const COPY_LIMIT = 16 * 1024

/** The frame as one buffer, or as header and payload when the payload is large. */
export function textFrame (payload: Buffer): Buffer[] {
  const length = payload.length
  let headerLength = 2
  if (length > MAX_MEDIUM_LENGTH) headerLength = 10
  else if (length > MAX_SHORT_LENGTH) headerLength = 4
  const copy = length <= COPY_LIMIT
  const header = Buffer.allocUnsafe(headerLength + (copy ? length : 0))
  header[0] = FIN_TEXT
  if (headerLength === 2) {
    header[1] = length
  } else if (headerLength === 4) {
    header[1] = 126
    header.writeUInt16BE(length, 2)
  } else {
    header[1] = 127
    header.writeBigUInt64BE(BigInt(length), 2)
  }
  if (!copy) return [header, payload]
  payload.copy(header, headerLength)
  return [header]
}
