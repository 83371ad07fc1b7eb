import type { FastifyRequest } from 'fastify'

// Credentials that a client may put in a query string, by mistake or (browsers) on purpose.
const SECRET_PARAMS = /([?&](?:token|key|api_key|apikey|access_token|authorization)=)[^&]*/gi

/** Fastify's request log fields, with credentials in the query string redacted. */
export const redactingLogSerializers = {
  req (request: FastifyRequest): Record<string, unknown> {
    return {
      method: request.method,
      url: request.url.replace(SECRET_PARAMS, '$1[redacted]'),
      host: request.host,
      remoteAddress: request.ip,
      remotePort: request.socket.remotePort
    }
  }
}
