import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelName } from '../plugin/channel.js'
import { IdempotencyKey } from '../plugin/history/idempotency.js'
import { BusUnavailableError, InvalidDataError } from '../plugin/errors.js'
import { holdsNonFiniteNumber } from '../plugin/json-numbers.js'
import { errorResponses, SECURITY } from '../plugin/openapi.js'
import { publishBodyValidator } from './publish-body.js'
import type { Publisher } from '../plugin/publisher.js'
import type { BroadcastResult } from '../plugin/types.js'
import { enableRateLimit, type RateLimitSetting } from './rate-limit.js'
import { redactingLogSerializers } from '../plugin/log-redaction.js'

export const PublishBody = Type.Object({
  channel: Type.Optional(ChannelName),
  data: Type.Unknown({ description: 'Any JSON value, delivered to subscribers as is' }),
  idempotencyKey: Type.Optional(IdempotencyKey),
  tags: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$' }), Type.String({ maxLength: 256 }), {
    maxProperties: 16,
    description: 'Tags for subscription filters: at most 16, keys of 1-64 characters of A-Z a-z 0-9 _ . : -, string values of at most 256 bytes'
  }))
}, { required: ['data'] })

const Position = {
  offset: Type.Optional(Type.Integer({ description: 'The message\'s offset in its channel\'s history (channels with history only)' })),
  epoch: Type.Optional(Type.String({ description: 'The history the offset belongs to' })),
  duplicate: Type.Optional(Type.Literal(true, { description: 'The idempotency key was seen before: nothing new was published, the offset is the first publish\'s' }))
}

export const PublishAccepted = Type.Object({
  status: Type.Literal('accepted'),
  ...Position,
  count: Type.Optional(Type.Integer({ description: 'For a batch: how many messages were accepted, all of them, in order' })),
  results: Type.Optional(Type.Array(Type.Object(Position), { description: 'For a batch: each message\'s result, in order' }))
})

/** A single publication, or a batch of them published in order in one round trip. */
export function publishBody (maxBatchSize: number) {
  return Type.Union([PublishBody, Type.Array(PublishBody, { minItems: 1, maxItems: maxBatchSize })])
}

// ioredis retries a lost connection at least once a second.
export const RETRY_AFTER_SECONDS = '1'

interface PublishRouteOptions {
  path: string
  bodyLimit: number
  maxBatchSize: number
  publisher: Publisher
  /** Refuses a request that may not publish (401) before its body is read. */
  guard: (request: FastifyRequest) => Promise<void>
  rateLimit: RateLimitSetting | undefined
}

/** POST <path>: hands a message, or a batch of them, to the bus for every instance to deliver. */
const publishRoute: FastifyPluginAsync<PublishRouteOptions> = async (instance, { path, bodyLimit, maxBatchSize, publisher, guard, rateLimit }) => {
  // TypeBox checks the body as it is: Ajv's default type coercion would turn `"channel": 42` into "42".
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const config = await enableRateLimit(instance, rateLimit)
  // Fastify's own JSON parser (and the app's prototype-poisoning settings), plus a check for
  // numbers that JSON cannot carry: `1e309` parses as Infinity and would be sent as null.
  // (Fastify fills every initialConfig field with its value or default.)
  const { onProtoPoisoning, onConstructorPoisoning } = instance.initialConfig as Required<typeof instance.initialConfig>
  const parseJson = instance.getDefaultJsonParser(onProtoPoisoning, onConstructorPoisoning)
  instance.removeContentTypeParser('application/json')
  // Only JSON is a message: a text/plain body gets 415, not a confusing 400 from the schema.
  instance.removeContentTypeParser('text/plain')
  instance.addContentTypeParser('application/json', { parseAs: 'string' }, (request, text, done) => {
    parseJson(request, text as string, (err: Error | null, value?: unknown) => {
      if (err === null && holdsNonFiniteNumber(text as string, value)) {
        done(new InvalidDataError('it holds a number beyond what JSON can carry (such as 1e309), which would arrive as null'), undefined)
      } else {
        done(err, value)
      }
    })
  })
  const validateBody = publishBodyValidator(PublishBody, maxBatchSize)
  fastify.post(path, {
    bodyLimit,
    validatorCompiler: () => validateBody,
    config,
    logSerializers: redactingLogSerializers,
    onRequest: guard,
    schema: {
      summary: 'Publish a message, or a batch of them in order, to every instance',
      security: SECURITY.publish,
      body: publishBody(maxBatchSize),
      response: {
        202: PublishAccepted,
        ...errorResponses({
          400: 'The body breaks the schema (the message names the field and, in a batch, the index) or holds data JSON cannot carry',
          401: 'No publish key, a wrong one, or (without keys) a request that is not local',
          413: 'The body is over publishBodyLimit, or a message over maxMessageBytes',
          415: 'The body is not JSON',
          429: 'Over the publish rate limit (Retry-After)',
          502: 'Redis refused the publish (an ACL, scripts disabled)',
          503: 'The bus is unavailable or did not confirm in time (Retry-After): nothing was accepted, retry with the same idempotencyKey'
        })
      }
    }
  }, async (request, reply) => {
    const body = request.body
    try {
      if (Array.isArray(body)) {
        const results = await publisher.broadcastMany(body)
        return await reply.code(202).send({ status: 'accepted', count: results.length, results: results.map(positionOf) })
      }
      const result = await publisher.broadcast(body.data, { channel: body.channel, idempotencyKey: body.idempotencyKey, tags: body.tags })
      return await reply.code(202).send({ status: 'accepted', ...positionOf(result) })
    } catch (err) {
      // The bus is down or slow: tell the publisher when a retry is worth it.
      if (err instanceof BusUnavailableError) reply.header('retry-after', RETRY_AFTER_SECONDS)
      throw err
    }
  })
}

/** What a publisher learns of one message: its offset and epoch, and `duplicate` only when true. */
function positionOf ({ offset, epoch, duplicate }: BroadcastResult): { offset?: number, epoch?: string, duplicate?: true } {
  const position = offset === undefined ? {} : { offset, epoch }
  return duplicate ? { ...position, duplicate } : position
}

export default publishRoute
