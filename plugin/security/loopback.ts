import { BlockList } from 'node:net'
import { isInList } from './networks.js'
import type { FastifyRequest } from 'fastify'

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/**
 * Whether `address` is a loopback IP address. It must parse as one: `127.evil.example` starts
 * like a loopback address and is a host name. IPv4-mapped IPv6 (`::ffff:127.0.0.1`) counts.
 */
export function isLoopback (address: string | undefined): boolean {
  // The addresses local clients nearly always have, by plain comparison: the list check parses
  // the address natively, several microseconds on every keyless publish.
  if (address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1') return true
  return isInList(LOOPBACK, address)
}

/**
 * Whether a request comes from a program on this machine, and was meant for this machine:
 *
 * - its TCP peer is a loopback address;
 * - it carries no forwarding header, unless Fastify's `trustProxy` trusted the peer as a proxy
 *   and every address the proxies forwarded is loopback too: a reverse proxy on this host makes
 *   every request come from 127.0.0.1, and its `X-Forwarded-For` is what tells them apart.
 *   `Forwarded` and `X-Real-IP` are not read by Fastify, so they cannot be checked: refused;
 * - its Host is a loopback name or address, so a page in a browser on this machine cannot reach
 *   the route through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1).
 */
export function isLocalRequest (request: FastifyRequest): boolean {
  if (!isLoopback(request.raw.socket?.remoteAddress)) return false
  if (!isLoopbackHost(request.headers.host)) return false
  const { headers } = request
  if (headers.forwarded !== undefined || headers['x-real-ip'] !== undefined) return false
  if (headers['x-forwarded-for'] === undefined) return true
  // Without trustProxy, `ips` is undefined; with a peer it does not trust, it holds the peer only.
  const chain = request.ips
  return chain !== undefined && chain.length > 1 && chain.every(isLoopback) &&
    (headers['x-forwarded-host'] === undefined || isLoopbackHost(request.host))
}

/** `localhost`, `127.0.0.1`, `[::1]`, each with or without a port. */
export function isLoopbackHost (host: string | undefined): boolean {
  if (host === undefined) return false
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d*$/, '')
  return name.toLowerCase() === 'localhost' || isLoopback(name)
}
