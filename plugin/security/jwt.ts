import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { FastifyInstance } from 'fastify'
import type { ResolvedOptions } from '../options.js'

// A namespace of its own: the user's app may register @fastify/jwt for its own tokens too.
const JWT_NAMESPACE = 'broadcast'

/** Registers @fastify/jwt for connect tokens when the `jwt` option is set; returns its verifier. */
export async function registerJwt (fastify: FastifyInstance, options: ResolvedOptions['jwt']): Promise<JWT | undefined> {
  if (options === undefined) return undefined
  const { secret, publicKey, audience, algorithms } = options
  await fastify.register(fastifyJwt, {
    namespace: JWT_NAMESPACE,
    secret: secret ?? { public: publicKey as string },
    // A token without exp would keep its connection open forever: refuse it. With an audience
    // configured, a token without aud (one minted for any service) is no token for this one.
    verify: { allowedAud: audience, algorithms: algorithms as never, requiredClaims: audience === undefined ? ['exp'] : ['exp', 'aud'] }
  })
  return (fastify.jwt as unknown as Record<string, JWT>)[JWT_NAMESPACE]
}
