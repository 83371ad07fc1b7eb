import type { FastifyRequest } from 'fastify'
import { ServerFullError, TooManyConnectionsError } from '../errors.js'

export interface CapacityLimits {
  /** Open WebSockets per instance (0: no limit). */
  maxConnections: number
  /** Open WebSockets per client address and instance (0: no limit). */
  maxConnectionsPerIp: number
}

/**
 * Connection caps. Counted per TCP socket, from the first hook until the socket closes, so
 * upgrades still in their handshake count too and a refused or aborted one can never leak a slot.
 */
export class ConnectionCapacity {
  private open = 0
  private readonly perIp = new Map<string, number>()

  /**
   * `stalePending`: how many connections have sent no complete request past a short grace
   * (pending-requests.ts); they count against maxConnections too.
   */
  constructor (private readonly limits: CapacityLimits, private readonly stalePending: () => number) {}

  /** Whether the instance has room for one more connection, with `stalePending` pending ones. */
  hasRoom (stalePending = this.stalePending()): boolean {
    return this.limits.maxConnections === 0 || this.open + stalePending < this.limits.maxConnections
  }

  get enabled (): boolean {
    return this.limits.maxConnections > 0 || this.limits.maxConnectionsPerIp > 0
  }

  /** Takes a slot for the request's socket until it closes, or throws 503 / 429. */
  admit (request: FastifyRequest): void {
    /* c8 ignore next -- a client gone before the hook ran would never emit 'close' to free its slot */
    if (request.raw.socket.destroyed) return
    const { ip } = request
    const { maxConnectionsPerIp } = this.limits
    if (!this.hasRoom()) throw new ServerFullError()
    const fromIp = this.perIp.get(ip) ?? 0
    if (maxConnectionsPerIp > 0 && fromIp >= maxConnectionsPerIp) throw new TooManyConnectionsError()
    this.open++
    this.perIp.set(ip, fromIp + 1)
    request.raw.socket.once('close', () => {
      this.open--
      const left = (this.perIp.get(ip) as number) - 1
      if (left === 0) this.perIp.delete(ip)
      else this.perIp.set(ip, left)
    })
  }
}
