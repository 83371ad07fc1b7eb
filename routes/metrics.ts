import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { Registry } from 'prom-client'
import { errorResponses, SECURITY } from '../plugin/openapi.js'
import { isInList, scraperList } from '../plugin/security/networks.js'

interface MetricsRouteOptions {
  path: string
  registry: Registry
  /** The publish route's guard: a publish key, or a local request when no key is set. */
  guard: (request: FastifyRequest) => Promise<void>
  /** Networks (CIDR or single addresses) that may scrape without a key: the scraper's. */
  allow: string[]
}

/** GET <path>: the instance's metrics in the Prometheus text format, for a scraper. */
const metricsRoute: FastifyPluginAsync<MetricsRouteOptions> = async (fastify, { path, registry, guard, allow }) => {
  const scrapers = scraperList(allow)
  fastify.get(path, {
    schema: {
      summary: 'Prometheus metrics of this instance',
      description: 'Guarded like POST /publish (a publish key, or a local request when no key is set), ' +
        'or open to the networks of the metricsAllow option.',
      security: SECURITY.publish,
      produces: ['text/plain'],
      response: errorResponses({ 401: 'No publish key, a wrong one, or (without keys) a request that is neither local nor from metricsAllow' })
    },
    onRequest: async (request) => {
      // The scraper is named by its address as the socket sees it: a forwarded one could be forged.
      if (isInList(scrapers, request.raw.socket?.remoteAddress)) return
      await guard(request)
    }
  }, async (_request, reply) => {
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
}

export default metricsRoute
