import type { FastifyPluginAsync } from 'fastify'
import { buildAsyncApiDocument } from '../plugin/asyncapi.js'

interface AsyncApiRouteOptions {
  path: string
  /** The path of the WebSocket route the document describes, as registered in the same scope. */
  websocketPath: string
}

/** GET <path>: the AsyncAPI 3 document of the WebSocket protocol, built once. */
const asyncApiRoute: FastifyPluginAsync<AsyncApiRouteOptions> = async (fastify, { path, websocketPath }) => {
  // Registered under a prefix, the WebSocket route has it too.
  const document = JSON.stringify(buildAsyncApiDocument({ websocketPath: fastify.prefix + websocketPath }))
  fastify.get(path, {
    schema: { summary: 'The AsyncAPI 3 document of the WebSocket protocol: every client and server frame, the close codes' }
  }, async (request, reply) => {
    return await reply.type('application/json; charset=utf-8').send(document)
  })
}

export default asyncApiRoute
