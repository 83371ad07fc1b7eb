import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { Bus } from '../plugin/bus/bus.js'

const BusKind = Type.Union([Type.Literal('redis'), Type.Literal('memory')])
const Topology = Type.Optional(Type.Union([Type.Literal('standalone'), Type.Literal('sentinel'), Type.Literal('cluster')], {
  description: 'How the Redis bus reaches Redis: one server, the master its sentinels name, or a Redis Cluster (not for the in-process bus)'
}))
const Checks = Type.Record(Type.String(), Type.String(), {
  description: 'State of each part: publisher and subscriber connections, last probe of the subscriber'
})

export const HealthOk = Type.Object({
  status: Type.Literal('ok'),
  bus: BusKind,
  topology: Topology,
  checks: Checks
})

export const HealthUnavailable = Type.Object({
  status: Type.Union([Type.Literal('degraded'), Type.Literal('unavailable')], {
    description: 'degraded: part of the bus works; unavailable: none of it does'
  }),
  bus: BusKind,
  topology: Topology,
  reason: Type.String(),
  reasons: Type.Array(Type.String()),
  checks: Checks
})

interface HealthRouteOptions {
  path: string
  bus: Bus
}

/** GET <path>: 200 while the bus can carry messages, 503 with the reasons when it cannot. */
const healthRoute: FastifyPluginAsync<HealthRouteOptions> = async (fastify, { path, bus }) => {
  fastify.get(path, {
    schema: {
      summary: 'Whether this instance can carry messages (for load balancers and orchestrators)',
      response: { 200: HealthOk, 503: HealthUnavailable }
    }
  }, async (request, reply) => {
    const { state, reasons, checks, topology } = bus.health()
    if (state === 'ok') return { status: 'ok', bus: bus.kind, topology, checks }
    return reply.code(503).send({ status: state, bus: bus.kind, topology, reason: reasons.join('; '), reasons, checks })
  })
}

export default healthRoute
