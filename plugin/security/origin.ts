/**
 * Cross-site WebSocket hijacking defence: a browser always sends `Origin` on an upgrade, and a
 * page on another site must not open a socket that rides on this site's cookies.
 */
export interface OriginPolicy {
  /** Exact origins (`https://app.example.com`) or subdomain patterns (`https://*.example.com`). */
  allowedOrigins: string[]
  /** Refuse upgrades that carry no `Origin` at all. */
  requireOrigin: boolean
}

/**
 * `host` is the Host the upgrade was sent to, `secure` whether it came over TLS (directly, or
 * through a proxy that trustProxy trusts to say so).
 */
export function isOriginAllowed (origin: string | undefined, host: string | undefined, policy: OriginPolicy, secure = false): boolean {
  if (origin === undefined) return !policy.requireOrigin
  const parsed = parseOrigin(origin)
  if (parsed === undefined) return false
  if (policy.allowedOrigins.length === 0) {
    // The page must come from this very site: its host, and a web scheme. Over TLS, only an
    // https page: a page served over plain http (which anyone on the path can rewrite) must not
    // reach a socket that its https twin would. Over plain http both are accepted, as a proxy
    // that ends TLS in front of this server makes https pages arrive as plain requests.
    const schemeFits = parsed.protocol === 'https:' || (parsed.protocol === 'http:' && !secure)
    return schemeFits && host !== undefined && parsed.host === host.toLowerCase()
  }
  return policy.allowedOrigins.some((allowed) => matches(parsed, allowed))
}

interface ParsedOrigin { protocol: string, host: string }

function parseOrigin (origin: string): ParsedOrigin | undefined {
  // `null` is what sandboxed frames, file: pages and some redirects send: never trusted.
  if (origin === 'null') return undefined
  try {
    const url = new URL(origin)
    if (url.origin === 'null') return undefined
    return { protocol: url.protocol, host: url.host.toLowerCase() }
  } catch {
    return undefined
  }
}

function matches (origin: ParsedOrigin, allowed: string): boolean {
  const wildcard = /^([a-z][a-z0-9+.-]*:)\/\/\*\.(.+)$/i.exec(allowed)
  if (wildcard === null) {
    const exact = parseOrigin(allowed)
    return exact !== undefined && exact.protocol === origin.protocol && exact.host === origin.host
  }
  const [, protocol, suffix] = wildcard
  // Compare whole labels: `*.example.com` must not match `evilexample.com` or
  // `app.example.com.evil.example`.
  return protocol.toLowerCase() === origin.protocol && origin.host.endsWith(`.${suffix.toLowerCase()}`)
}
