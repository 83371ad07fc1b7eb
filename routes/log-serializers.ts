import type { FastifyRequest } from 'fastify'

// Credentials that a client may put in a query string, by mistake or (browsers) on purpose.
const SECRET_PARAMS = new Set(['token', 'key', 'api_key', 'apikey', 'access_token', 'authorization'])

/** Fastify's request log fields, with credentials in the query string redacted. */
export const redactingLogSerializers = {
  req (request: FastifyRequest): Record<string, unknown> {
    return {
      method: request.method,
      url: redactUrl(request.url),
      host: request.host,
      remoteAddress: request.ip,
      remotePort: request.socket.remotePort
    }
  }
}

export function redactUrl (url: string): string {
  const at = url.indexOf('?')
  if (at === -1) return url
  // Parsed, not pattern-matched: `%74oken=` is `token=` to the query parser, so it is to us.
  const params = new URLSearchParams(url.slice(at + 1))
  for (const name of [...params.keys()]) {
    if (SECRET_PARAMS.has(name.toLowerCase())) params.set(name, '[redacted]')
  }
  return `${url.slice(0, at)}?${params.toString().replaceAll('%5Bredacted%5D', '[redacted]')}`
}
