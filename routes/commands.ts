import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelName } from '../plugin/channel.js'
import type { Bus } from '../plugin/bus/bus.js'
import { encodeCommand, type Command } from '../plugin/commands.js'
import { BusUnavailableError } from '../plugin/errors.js'
import { CLOSE_DISCONNECTED } from '../plugin/close-codes.js'
import { errorResponses, SECURITY } from '../plugin/openapi.js'
import { RETRY_AFTER_SECONDS } from './publish.js'

const Identity = Type.String({ minLength: 1, maxLength: 256, description: 'The identity: a JWT sub, or the identity authorize() returns' })

export const SubscriptionBody = Type.Object({ identity: Identity, channel: ChannelName }, { additionalProperties: false })

export const DisconnectBody = Type.Object({
  identity: Identity,
  code: Type.Optional(Type.Integer({ minimum: 4000, maximum: 4999, default: 4403, description: 'The close code, 4000-4999 (default 4403)' })),
  reason: Type.Optional(Type.String({ maxLength: 123, pattern: '^[\\x20-\\x7e]*$', description: 'The close reason: printable ASCII, 123 characters at most' }))
}, { additionalProperties: false })

const Accepted = Type.Object({ status: Type.Literal('accepted') })

interface CommandRouteOptions {
  subscriptionsPath: string | false
  disconnectPath: string | false
  bus: Bus
  guard: (request: FastifyRequest) => Promise<void>
}

/**
 * The back end's say over connections, by identity, on every instance: POST and DELETE
 * <subscriptionsPath> join and leave a channel; POST <disconnectPath> closes them. Guarded like
 * publishing; carried by the bus, so 202 means every instance will hear it.
 */
const commandRoutes: FastifyPluginAsync<CommandRouteOptions> = async (instance, { subscriptionsPath, disconnectPath, bus, guard }) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  const errors = errorResponses({
    400: 'A bad body',
    401: 'No publish key, a wrong one, or (without keys) a request that is not local',
    503: 'The bus is unavailable (Retry-After): nothing was sent'
  })
  async function send (command: Command, reply: { code: (status: 202) => unknown, header: (name: string, value: string) => unknown }): Promise<{ status: 'accepted' }> {
    try {
      await bus.publish(null, encodeCommand(command))
    } catch (err) {
      if (err instanceof BusUnavailableError) reply.header('retry-after', RETRY_AFTER_SECONDS)
      throw err
    }
    reply.code(202)
    return { status: 'accepted' }
  }
  if (subscriptionsPath !== false) {
    for (const [method, op] of [['POST', 'subscribe'], ['DELETE', 'unsubscribe']] as const) {
      fastify.route({
        method,
        url: subscriptionsPath,
        onRequest: guard,
        schema: {
          summary: op === 'subscribe' ? 'Put every connection of an identity on a channel' : 'Take every connection of an identity off a channel',
          security: SECURITY.publish,
          body: SubscriptionBody,
          response: { 202: Accepted, ...errors }
        },
        handler: async (request, reply) => await send({ type: 'command', op, identity: request.body.identity, channel: request.body.channel }, reply)
      })
    }
  }
  if (disconnectPath !== false) {
    fastify.post(disconnectPath, {
      onRequest: guard,
      schema: { summary: 'Close every connection of an identity', security: SECURITY.publish, body: DisconnectBody, response: { 202: Accepted, ...errors } }
    }, async (request, reply) => {
      const { identity, code = CLOSE_DISCONNECTED, reason = 'disconnected by the server' } = request.body
      return await send({ type: 'command', op: 'disconnect', identity, code, reason }, reply)
    })
  }
}

export default commandRoutes
