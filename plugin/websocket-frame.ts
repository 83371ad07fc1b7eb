// RFC 6455 §5.2: the bytes of one unmasked, final text frame. A server's frames are never
// masked, so the same bytes can go to every socket: build once, write N times.

const FIN_TEXT = 0x81
const MAX_SHORT_LENGTH = 125
const MAX_MEDIUM_LENGTH = 0xffff

export function textFrame (payload: Buffer): Buffer {
  const length = payload.length
  let headerLength = 2
  if (length > MAX_MEDIUM_LENGTH) headerLength = 10
  else if (length > MAX_SHORT_LENGTH) headerLength = 4
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = FIN_TEXT
  if (headerLength === 2) {
    frame[1] = length
  } else if (headerLength === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  payload.copy(frame, headerLength)
  return frame
}
