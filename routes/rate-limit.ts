import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance } from 'fastify'

export interface RateLimitSetting { max: number, timeWindow: number }

/**
 * Makes @fastify/rate-limit available in a route's own context (it limits only the routes that
 * ask for it), reusing the app's registration when there is one.
 */
export async function enableRateLimit (fastify: FastifyInstance, setting: RateLimitSetting | undefined): Promise<{ rateLimit: RateLimitSetting } | undefined> {
  if (setting === undefined) return undefined
  if (!fastify.hasDecorator('rateLimit')) await fastify.register(rateLimit, { global: false })
  return { rateLimit: setting }
}
