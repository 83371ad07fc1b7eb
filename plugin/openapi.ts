import type { FastifyInstance } from 'fastify'
import fastifySwagger from '@fastify/swagger'
import { Type } from '@sinclair/typebox'
import { createRequire } from 'node:module'

// The package's own name resolves to its package.json from the sources and from the build alike.
const { version } = createRequire(import.meta.url)('fastify-redis-broadcast/package.json') as { version: string }

/** The body of every error answer (Fastify's shape, with the catalogue's code). */
export const ErrorBody = Type.Object({
  statusCode: Type.Optional(Type.Integer()),
  code: Type.Optional(Type.String({ description: 'A code of the error catalogue (README.md), such as FRB_UNAUTHORIZED' })),
  error: Type.Optional(Type.String({ description: 'The HTTP status text' })),
  message: Type.String({ description: 'What went wrong and, where it helps, what to do' })
}, { $id: 'FrbError', title: 'Error' })

/** Error answers of a route, by status: each with the shared body and a sentence. */
export function errorResponses (statuses: Record<number, string>): Record<number, unknown> {
  const responses: Record<number, unknown> = {}
  for (const [status, description] of Object.entries(statuses)) responses[Number(status)] = { ...Type.Ref(ErrorBody), description }
  return responses
}

/** The credentials routes accept: publish keys, connect tokens in a header, connect tokens in ?token=. */
export const SECURITY: Record<'publish' | 'read', Array<Record<string, string[]>>> = {
  publish: [{ publishKey: [] }, {}],
  read: [{ connectToken: [] }, { connectTokenQuery: [] }, {}]
}

/**
 * Registers @fastify/swagger (unless the app has it already), so every route registered after it,
 * the plugin's own first, is described from the same TypeBox schemas that validate its requests;
 * serves the document at `path`.
 */
export async function registerOpenApi (fastify: FastifyInstance, path: string | false): Promise<void> {
  if (fastify.hasDecorator('swagger')) {
    // The app's own document has no security schemes of ours, and @fastify/swagger fails on a
    // route that names a scheme the document lacks: our routes name none there.
    fastify.addHook('onRoute', (route) => {
      const schema = route.schema as { security?: unknown } | undefined
      if (schema !== undefined && (schema.security === SECURITY.publish || schema.security === SECURITY.read)) delete schema.security
    })
  } else {
    await fastify.register(fastifySwagger, {
      openapi: {
        openapi: '3.0.3',
        info: {
          title: 'fastify-redis-broadcast',
          version,
          description: 'HTTP routes of the broadcast hub. The WebSocket protocol is described by the AsyncAPI document.'
        },
        components: {
          securitySchemes: {
            publishKey: { type: 'http', scheme: 'bearer', description: 'A key of the publishKeys option. Without keys, local requests only (README: Security)' },
            connectToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'A connect token, when jwt is configured' },
            connectTokenQuery: { type: 'apiKey', in: 'query', name: 'token', description: 'A connect token in the query string (browsers); never logged' }
          }
        }
      }
    })
  }
  if (!fastify.getSchemas().FrbError) fastify.addSchema(ErrorBody)
  if (path === false) return
  fastify.get(path, { schema: { hide: true } }, async () => fastify.swagger())
}
