/** What the heartbeat needs of a connection. */
export interface Pingable {
  /** When it was pinged and no pong nor frame has come back since; 0 when none is due. */
  pingedAt: number
  ping: () => void
}

export interface HeartbeatOptions {
  /** How often every connection is pinged, in milliseconds. */
  interval: number
  /** How long a ping may stay unanswered, in milliseconds. */
  timeout: number
}

/**
 * Finds dead peers: a connection whose TCP link vanished without a FIN (a laptop closed, a NAT
 * entry expired) looks open forever and would keep its channels and memory. Every `interval` each
 * connection is pinged; one that sends no pong (nor any frame) within `timeout` is handed to
 * `onTimeout`. Two timers for all connections, not one per socket. Returns the stop function.
 */
export function startHeartbeat<Connection extends Pingable> (
  connections: Iterable<Connection>,
  { interval, timeout }: HeartbeatOptions,
  onTimeout: (connection: Connection) => void
): () => void {
  const checks = new Set<NodeJS.Timeout>()

  function ping (): void {
    const now = Date.now()
    for (const connection of connections) {
      if (connection.pingedAt !== 0) continue
      connection.pingedAt = now
      connection.ping()
    }
    const check = setTimeout(() => {
      checks.delete(check)
      // Pinged at this tick or before, and still silent `timeout` ms later.
      for (const connection of connections) {
        if (connection.pingedAt !== 0 && connection.pingedAt <= now) onTimeout(connection)
      }
    }, timeout)
    check.unref()
    checks.add(check)
  }

  const ticker = setInterval(ping, interval)
  ticker.unref()
  return () => {
    clearInterval(ticker)
    for (const check of checks) clearTimeout(check)
  }
}
