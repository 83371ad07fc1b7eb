import type { FastifyRequest } from 'fastify'

// Credentials that a client may put in a query string, by mistake or (browsers) on purpose.
const SECRET_PARAMS = new Set(['token', 'key', 'api_key', 'apikey', 'access_token', 'authorization'])
const QUERY_PARAM = /([?&])([^=&#\s]+)=([^&#\s]*)/g

/** Replaces the value of every credential-like query parameter in `text` (a URL, or a log message holding one). */
export function redactSecrets (text: string): string {
  if (!text.includes('=')) return text
  return text.replace(QUERY_PARAM, (param: string, separator: string, name: string) =>
    isSecretName(name) ? `${separator}${name}=[redacted]` : param)
}

function isSecretName (name: string): boolean {
  let decoded = name
  // The query parser decodes names: `%74oken=` is `token=` to it, so it is to us.
  try {
    decoded = decodeURIComponent(name.replaceAll('+', ' '))
  } catch {}
  return SECRET_PARAMS.has(decoded.toLowerCase())
}

/** Fastify's request log fields, with credentials in the query string redacted. */
export function serializeRequest (request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: redactSecrets(request.url),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket.remotePort
  }
}

/** The routes' own log serializers: redacted even when the app's logger is not set up for it. */
export const redactingLogSerializers = { req: serializeRequest }

/**
 * Logger options that keep credentials in query strings out of every log line of an app: the
 * request field of each request (404s and other plugins' routes included) and messages that
 * quote a URL, such as Fastify's "Route GET:/x?token=… not found".
 *
 *   Fastify({ logger: { level: 'info', ...redactingLogger } })
 */
export const redactingLogger = {
  serializers: { req: serializeRequest },
  hooks: {
    logMethod (this: unknown, args: unknown[], method: (...args: unknown[]) => void): void {
      for (let i = 0; i < args.length; i++) {
        const arg = args[i]
        if (typeof arg === 'string') args[i] = redactSecrets(arg)
      }
      method.apply(this, args)
    }
  }
}
