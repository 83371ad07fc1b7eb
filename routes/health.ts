import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { Bus } from '../plugin/bus/bus.js'

const BusKind = Type.Union([Type.Literal('redis'), Type.Literal('memory')])

export const HealthOk = Type.Object({
  status: Type.Literal('ok'),
  bus: BusKind
})

export const HealthUnavailable = Type.Object({
  status: Type.Literal('unavailable'),
  bus: BusKind,
  reason: Type.String()
})

interface HealthRouteOptions {
  path: string
  bus: Bus
}

/** GET <path>: 200 while the bus can carry messages, 503 with the reason when it cannot. */
const healthRoute: FastifyPluginAsync<HealthRouteOptions> = async (fastify, { path, bus }) => {
  fastify.get(path, {
    schema: { response: { 200: HealthOk, 503: HealthUnavailable } }
  }, async (request, reply) => {
    const health = bus.health()
    if (health.ready) return { status: 'ok', bus: bus.kind }
    return reply.code(503).send({ status: 'unavailable', bus: bus.kind, reason: health.reason })
  })
}

export default healthRoute
