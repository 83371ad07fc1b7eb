import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelName } from '../plugin/channel.js'
import type { Presence } from '../plugin/presence/presence.js'
import type { ChannelAccess } from '../plugin/security/channel-access.js'
import { PresenceUnavailableError } from '../plugin/errors.js'
import { redactingLogSerializers } from '../plugin/log-redaction.js'
import { errorResponses, SECURITY } from '../plugin/openapi.js'

export const PresenceReply = Type.Object({
  channel: Type.String(),
  count: Type.Integer({ description: 'Identities present, each counted once however many connections it has' }),
  members: Type.Array(Type.Union([Type.String(), Type.Number()]), {
    description: 'The identities: a token\'s sub, the identity authorize() gave, or the connection id of an anonymous client'
  })
})

interface PresenceRouteOptions {
  path: string
  presence: Presence
  /** Same rule as subscribing. */
  access: ChannelAccess
}

/** GET <path>/:channel: who is subscribed to a channel, on every instance. Same auth as subscribing. */
const presenceRoute: FastifyPluginAsync<PresenceRouteOptions> = async (instance, { path, presence, access }) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  fastify.get(`${path}/:channel`, {
    logSerializers: redactingLogSerializers,
    schema: {
      summary: 'Who is subscribed to a channel, on every instance',
      security: SECURITY.read,
      params: Type.Object({ channel: ChannelName }),
      querystring: Type.Object({ token: Type.Optional(Type.String()) }, { additionalProperties: false }),
      response: {
        200: PresenceReply,
        ...errorResponses({
          400: 'A bad channel name or query',
          401: 'Connect auth is on and the token is missing, wrong or expired',
          403: 'The token does not grant the channel',
          404: 'The channel\'s presence is not tracked',
          503: 'Redis did not answer in time'
        })
      }
    }
  }, async (request) => {
    const { channel } = request.params
    await access.check(request, channel)
    if (!presence.tracks(channel)) throw new PresenceUnavailableError(JSON.stringify(channel))
    const members = await presence.members(channel) as Array<string | number>
    return { channel, count: members.length, members }
  })
}

export default presenceRoute
