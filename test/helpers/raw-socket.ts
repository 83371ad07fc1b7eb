import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'

/**
 * A WebSocket client written by hand on a bare TCP socket, so a test can send what no real
 * client library would: reserved bits, unmasked frames, bad UTF-8, floods of fragments.
 */
export class RawSocket {
  private received = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  readonly ended: Promise<void>

  private constructor (readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk])
      for (const wake of this.waiters.splice(0)) wake()
    })
    socket.on('error', () => {})
    this.ended = new Promise((resolve) => socket.once('close', () => {
      for (const wake of this.waiters.splice(0)) wake()
      resolve()
    }))
  }

  /**
   * Opens `path` with a hand-written upgrade request; resolves once the server answered 101.
   * `allowHalfOpen`: the socket stays open for writing after the server ends its side, as a peer
   * that never finishes a close would.
   */
  static async open (port: number, path = '/ws', { allowHalfOpen = false } = {}): Promise<RawSocket> {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen })
    await once(socket, 'connect')
    const raw = new RawSocket(socket)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    await raw.until(() => raw.received.includes('\r\n\r\n'))
    const end = raw.received.indexOf('\r\n\r\n') + 4
    const head = raw.received.subarray(0, end).toString()
    if (!head.startsWith('HTTP/1.1 101')) throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`)
    raw.received = raw.received.subarray(end)
    return raw
  }

  /** Sends a half-open TCP handshake's worth of bytes: the start of an upgrade, then nothing. */
  static async abandonHandshake (port: number, path = '/ws'): Promise<void> {
    const socket = connect({ port, host: '127.0.0.1' })
    await once(socket, 'connect')
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n`)
    socket.destroy()
  }

  send (frame: Buffer): void {
    this.socket.write(frame)
  }

  /** The server's close code, once its close frame arrives (undefined if it hung up without one). */
  async closeCode (timeout = 5000): Promise<number | undefined> {
    await this.until(() => this.closeFrame() !== undefined || this.socket.destroyed, timeout)
    return this.closeFrame()
  }

  destroy (): void {
    this.socket.destroy()
  }

  /** The text frames received so far, complete ones only. */
  texts (): string[] {
    return this.frames().filter(({ opcode }) => opcode === 0x1).map(({ payload }) => payload.toString())
  }

  /** Resolves once a text frame containing `text` has arrived; false if none did in time. */
  async waitForText (text: string, timeout = 5000): Promise<boolean> {
    await this.until(() => this.texts().some((frame) => frame.includes(text)), timeout)
    return this.texts().some((frame) => frame.includes(text))
  }

  private closeFrame (): number | undefined {
    const close = this.frames().find(({ opcode }) => opcode === 0x8)
    return close?.payload.readUInt16BE(0)
  }

  /** The complete server frames received so far (unmasked, unfragmented, as this server sends them). */
  private frames (): Array<{ opcode: number, payload: Buffer }> {
    const frames: Array<{ opcode: number, payload: Buffer }> = []
    let offset = 0
    const data = this.received
    while (offset + 2 <= data.length) {
      const opcode = data[offset] & 0x0f
      let length = data[offset + 1] & 0x7f
      let header = 2
      if (length === 126) { length = data.readUInt16BE(offset + 2); header = 4 }
      if (length === 127) { length = Number(data.readBigUInt64BE(offset + 2)); header = 10 }
      if (offset + header + length > data.length) break
      frames.push({ opcode, payload: data.subarray(offset + header, offset + header + length) })
      offset += header + length
    }
    return frames
  }

  private async until (done: () => boolean, timeout = 5000): Promise<void> {
    const deadline = Date.now() + timeout
    while (!done()) {
      if (Date.now() > deadline || this.socket.destroyed) return
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()))
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }
}

export interface FrameBits {
  opcode: number
  payload?: Buffer
  fin?: boolean
  rsv1?: boolean
  masked?: boolean
}

/** One client frame, built by hand; masked like a browser's unless told otherwise. */
export function clientFrame ({ opcode, payload = Buffer.alloc(0), fin = true, rsv1 = false, masked = true }: FrameBits): Buffer {
  const length = payload.length
  const extended = length > 65535 ? 8 : length > 125 ? 2 : 0
  const header = Buffer.alloc(2 + extended + (masked ? 4 : 0))
  header[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode
  header[1] = (masked ? 0x80 : 0) | (extended === 0 ? length : extended === 2 ? 126 : 127)
  if (extended === 2) header.writeUInt16BE(length, 2)
  if (extended === 8) header.writeBigUInt64BE(BigInt(length), 2)
  if (!masked) return Buffer.concat([header, payload])
  const mask = randomBytes(4)
  mask.copy(header, 2 + extended)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4]
  return Buffer.concat([header, body])
}
