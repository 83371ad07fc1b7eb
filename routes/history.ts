import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelName } from '../plugin/channel.js'
import type { Bus } from '../plugin/bus/bus.js'
import type { HistorySettings } from '../plugin/history/settings.js'
import type { ChannelAccess } from '../plugin/security/channel-access.js'
import { HistoryUnavailableError } from '../plugin/errors.js'
import { redactingLogSerializers } from '../plugin/log-redaction.js'
import { errorResponses, SECURITY } from '../plugin/openapi.js'

export const MAX_HISTORY_LIMIT = 1000

/** What the route answers; the messages are the stored frames, joined as they are, never parsed again. */
export const HistoryPageBody = Type.Object({
  channel: ChannelName,
  epoch: Type.Union([Type.String(), Type.Null()], { description: 'The history the offsets belong to; null when nothing is kept' }),
  offset: Type.Integer({ description: 'The channel\'s latest offset' }),
  messages: Type.Array(Type.Object({
    type: Type.Literal('message'),
    channel: ChannelName,
    offset: Type.Integer(),
    epoch: Type.String(),
    data: Type.Unknown()
  }), { description: 'The frames subscribers received, in the order asked for' }),
  truncated: Type.Optional(Type.Literal(true, { description: 'history.maxReadBytes cut the answer: ask again from the last offset' }))
})

export const HistoryQuerystring = Type.Object({
  since: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'Messages after this offset (default 0: from the oldest kept)' })),
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: `Most messages returned, 1-${MAX_HISTORY_LIMIT} (default 100)` })),
  reverse: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('0'), Type.Literal('true'), Type.Literal('false')], {
    description: '1: the newest first'
  })),
  token: Type.Optional(Type.String({ description: 'A connect token, as for the WebSocket (never logged)' }))
}, { additionalProperties: false })

interface HistoryRouteOptions {
  path: string
  bus: Bus
  historyOf: (channel: string) => HistorySettings
  /** Same rule as subscribing. */
  access: ChannelAccess
  /** The most bytes of messages one answer holds. */
  maxBytes: number
}

/**
 * GET <path>/:channel: the messages a channel's history holds after `since`, as the frames
 * subscribers received, with the history's epoch and latest offset. Same auth as subscribing.
 * An answer holds at most `maxBytes` of messages; a cut one says `"truncated":true`.
 */
const historyRoute: FastifyPluginAsync<HistoryRouteOptions> = async (instance, { path, bus, historyOf, access, maxBytes }) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>().setValidatorCompiler(TypeBoxValidatorCompiler)
  fastify.get(`${path}/:channel`, {
    logSerializers: redactingLogSerializers,
    schema: {
      summary: 'Messages a channel\'s history holds after an offset',
      security: SECURITY.read,
      params: Type.Object({ channel: ChannelName }),
      querystring: HistoryQuerystring,
      response: {
        200: HistoryPageBody,
        ...errorResponses({
          400: 'A bad channel name or query',
          401: 'Connect auth is on and the token is missing, wrong or expired',
          403: 'The token does not grant the channel',
          404: 'The channel keeps no history',
          503: 'Redis did not answer in time'
        })
      }
    }
  }, async (request, reply) => {
    const { channel } = request.params
    await access.check(request, channel)
    if (historyOf(channel).size === 0) throw new HistoryUnavailableError(JSON.stringify(channel))
    const { since = '0', limit = '100', reverse } = request.query
    const page = await bus.readHistory(channel, {
      since: Number(since),
      limit: Math.min(Math.max(Number(limit), 1), MAX_HISTORY_LIMIT),
      reverse: reverse === '1' || reverse === 'true',
      maxBytes
    })
    // The stored frames are JSON already: they are joined as they are, never parsed again.
    const head = `{"channel":${JSON.stringify(channel)},"epoch":${JSON.stringify(page?.epoch ?? null)},"offset":${page?.offset ?? 0},"messages":[`
    const body = Buffer.concat([
      Buffer.from(head),
      ...(page?.messages ?? []).flatMap(({ frame }, index) => index === 0 ? [frame] : [COMMA, frame]),
      // Cut at maxBytes: the next page starts after the last offset returned.
      Buffer.from(page?.truncated === true ? '],"truncated":true}' : ']}')
    ])
    // A Buffer is sent as it is: the 200 schema documents it, it does not serialise it.
    return await reply.type('application/json; charset=utf-8').send(body as never)
  })
}

const COMMA = Buffer.from(',')

export default historyRoute
