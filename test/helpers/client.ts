import { once } from 'node:events'
import { WebSocket } from 'ws'

export interface Frame {
  type: string
  channel?: string
  data?: unknown
  code?: string
  message?: string
  offset?: number
  epoch?: string
  recovered?: boolean
  identity?: unknown
  tags?: Record<string, string>
}

/** Frames without their history position, for tests about what was delivered rather than where it stands. */
export function plain (frames: Frame[]): Frame[] {
  return frames.map(({ offset, epoch, ...rest }) => rest)
}

/**
 * A real WebSocket client that records every frame, so a test can wait for what it expects
 * and then assert on everything that arrived, including what should not have.
 */
export class TestClient {
  readonly frames: Frame[] = []
  readonly closed: Promise<{ code: number, reason: string }>
  private waiters: Array<() => void> = []

  private constructor (readonly socket: WebSocket) {
    socket.on('message', (raw) => {
      this.frames.push(JSON.parse(raw.toString()) as Frame)
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.closed = new Promise((resolve) => {
      socket.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        for (const wake of this.waiters.splice(0)) wake()
      })
    })
    socket.on('error', () => {})
  }

  static async connect (url: string, options?: ConstructorParameters<typeof WebSocket>[2], protocols?: string[]): Promise<TestClient> {
    const socket = new WebSocket(url, protocols, options)
    const client = new TestClient(socket)
    await once(socket, 'open')
    return client
  }

  send (frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /** Resolves with the first recorded frame, from index `from` on, that matches. */
  async waitFor (match: (frame: Frame) => boolean, { from = 0, timeout = 5000 } = {}): Promise<Frame> {
    let found: Frame | undefined
    await this.until(() => (found = this.frames.slice(from).find(match)) !== undefined, timeout,
      () => `no matching frame within ${timeout} ms; got ${JSON.stringify(this.frames.slice(-5))}`)
    return found as Frame
  }

  async subscribe (channel: string): Promise<void> {
    const from = this.frames.length
    this.send({ type: 'subscribe', channel })
    await this.waitFor((f) => f.type === 'subscribed' && f.channel === channel, { from })
  }

  async unsubscribe (channel: string): Promise<void> {
    const from = this.frames.length
    this.send({ type: 'unsubscribe', channel })
    await this.waitFor((f) => f.type === 'unsubscribed' && f.channel === channel, { from })
  }

  /** Waits until `count` message frames have arrived and returns them. */
  async messages (count: number, timeout = 5000): Promise<Frame[]> {
    await this.until(() => this.received().length >= count, timeout,
      () => `expected ${count} messages within ${timeout} ms, got ${this.received().length}`)
    return this.received()
  }

  /** Re-checks `done` whenever a frame arrives or the socket closes, until it holds or time runs out. */
  private async until (done: () => boolean, timeout: number, failure: () => string): Promise<void> {
    const deadline = Date.now() + timeout
    while (!done()) {
      if (Date.now() > deadline) throw new Error(failure())
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()))
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  received (): Frame[] {
    return this.frames.filter((f) => f.type === 'message')
  }

  async close (): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return
    this.socket.close()
    await this.closed
  }
}

/** Attempts an upgrade that the server is expected to refuse, and returns its HTTP answer. */
export async function refusedUpgrade (url: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  const socket = new WebSocket(url, { headers })
  return await new Promise((resolve, reject) => {
    socket.once('open', () => {
      socket.terminate()
      reject(new Error('the upgrade was accepted'))
    })
    socket.once('error', () => {})
    socket.once('unexpected-response', (request, response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    })
  })
}

/** The WebSocket URL of an app's route, from its http:// base URL. */
export function wsUrl (url: string, query = '', path = '/ws'): string {
  return `${url.replace(/^http/, 'ws')}${path}${query}`
}
