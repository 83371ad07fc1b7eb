import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelName } from '../plugin/channel.js'
import { enableRateLimit, type RateLimitSetting } from './rate-limit.js'
import { redactingLogSerializers } from './log-serializers.js'

export const PublishBody = Type.Object({
  channel: Type.Optional(ChannelName),
  data: Type.Unknown({ description: 'Any JSON value, delivered to subscribers as is' })
}, { required: ['data'] })

export const PublishAccepted = Type.Object({
  status: Type.Literal('accepted')
})

// ioredis retries a lost connection at least once a second.
const RETRY_AFTER_SECONDS = '1'

interface PublishRouteOptions {
  path: string
  bodyLimit: number
  /** Refuses a request that may not publish (401) before its body is read. */
  guard: (request: FastifyRequest) => Promise<void>
  rateLimit: RateLimitSetting | undefined
}

/** POST <path>: hands a message to the bus for every instance to deliver. */
const publishRoute: FastifyPluginAsync<PublishRouteOptions> = async (instance, { path, bodyLimit, guard, rateLimit }) => {
  // TypeBox checks the body as it is: Ajv's default type coercion would turn `"channel": 42` into "42".
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const config = await enableRateLimit(instance, rateLimit)
  fastify.post(path, {
    bodyLimit,
    config,
    logSerializers: redactingLogSerializers,
    onRequest: guard,
    schema: {
      body: PublishBody,
      response: { 202: PublishAccepted }
    }
  }, async (request, reply) => {
    const { channel, data } = request.body
    try {
      await fastify.broadcast(data, { channel })
    } catch (err) {
      // The bus is down or slow: tell the publisher when a retry is worth it.
      if ((err as { statusCode?: number }).statusCode === 503) reply.header('retry-after', RETRY_AFTER_SECONDS)
      throw err
    }
    return reply.code(202).send({ status: 'accepted' })
  })
}

export default publishRoute
