import { BlockList, isIP } from 'node:net'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { Registry } from 'prom-client'
import { errorResponses, SECURITY } from '../plugin/openapi.js'

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
      const peer = request.raw.socket?.remoteAddress
      const version = peer === undefined ? 0 : isIP(peer)
      if (version !== 0 && scrapers.check(peer as string, version === 4 ? 'ipv4' : 'ipv6')) return
      await guard(request)
    }
  }, async (_request, reply) => {
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
}

/** `10.0.0.0/8`, `2001:db8::/32` or a single address; checked when the options are read. */
export function scraperList (entries: readonly string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [address, bits] = entry.split('/')
    const version = isIP(address)
    const type = version === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(bits), type)
  }
  return list
}

export function isScraperEntry (entry: string): boolean {
  const [address, bits, extra] = entry.split('/')
  const version = isIP(address)
  if (version === 0 || extra !== undefined) return false
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128))
}

export default metricsRoute
