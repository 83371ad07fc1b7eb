import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance } from 'fastify'
import { RateLimitedError } from '../plugin/errors.js'

export interface RateLimitSetting { max: number, timeWindow: number }

/**
 * Makes @fastify/rate-limit available in a route's own context (it limits only the routes that
 * ask for it), reusing the app's registration when there is one.
 */
export async function enableRateLimit (fastify: FastifyInstance, setting: RateLimitSetting | undefined): Promise<{ rateLimit: RateLimitRouteConfig } | undefined> {
  if (setting === undefined) return undefined
  if (!fastify.hasDecorator('rateLimit')) await fastify.register(rateLimit, { global: false })
  return {
    rateLimit: {
      ...setting,
      // The same catalogue as every other refusal; Retry-After is set by @fastify/rate-limit.
      errorResponseBuilder: (request, context) => new RateLimitedError(context.after)
    }
  }
}

type RateLimitRouteConfig = RateLimitSetting & {
  errorResponseBuilder: (request: unknown, context: { after: string }) => Error
}
