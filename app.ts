import type { FastifyPluginAsync } from 'fastify'
import redisBroadcast from './plugin/index.js'

/**
 * The service as `fastify start dist/app.js` runs it. Settings come from the environment:
 * REDIS_URL selects the Redis bus (left unset, the in-process bus serves a single instance);
 * PORT, FASTIFY_ADDRESS and FASTIFY_LOG_LEVEL are fastify-cli's own.
 */
const app: FastifyPluginAsync = async (fastify, _options) => {
  const redis = process.env.REDIS_URL
  await fastify.register(redisBroadcast, redis === undefined || redis === '' ? {} : { redis })
}

export default app
