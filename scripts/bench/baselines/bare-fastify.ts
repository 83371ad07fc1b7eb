// The ceiling of the HTTP publish path: a Fastify app, started by `fastify start` like ours, with
// POST /publish validating the very same body schema and answering 202 without touching Redis.
import type { FastifyPluginAsync } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { PublishAccepted, PublishBody } from '../../../routes/publish.js'

// fastify-cli wants a plugin that declares both parameters.
const bareFastify: FastifyPluginAsync = async (instance, _options) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  fastify.post('/publish', {
    bodyLimit: 65536,
    schema: { body: PublishBody, response: { 202: PublishAccepted } }
  }, async (request, reply) => reply.code(202).send({ status: 'accepted' }))
  fastify.get('/health', async () => ({ status: 'ok' }))
}

export default bareFastify
