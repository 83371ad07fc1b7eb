import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import { PublishKeyRequiredError, UnauthorizedError } from '../errors.js'
import { bearerCredential } from './bearer.js'
import { isLocalRequest } from './loopback.js'

export interface PublishAuthOptions {
  /** Accepted bearer keys; several at once so a key can be rotated without downtime. */
  keys: string[]
  /** Without keys, accept requests from any peer instead of local ones only (see isLocalRequest). */
  insecurePublish: boolean
}

/**
 * An onRequest hook for the publish route and every route guarded like it: a bearer key when
 * keys are set; without keys, requests from this machine only (or from anyone, when the
 * operator said so with insecurePublish).
 */
export function createPublishGuard ({ keys, insecurePublish }: PublishAuthOptions): (request: FastifyRequest) => Promise<void> {
  // Hashing first gives every comparison the same length, so timingSafeEqual never
  // short-cuts on a length mismatch and reveals nothing about the keys.
  const digests = keys.map(digest)
  return async function guardPublish (request) {
    if (digests.length === 0) {
      if (insecurePublish || isLocalRequest(request)) return
      throw new PublishKeyRequiredError()
    }
    const key = bearerCredential(request.headers.authorization)
    if (key === undefined) throw new UnauthorizedError('missing bearer key')
    const offered = digest(key)
    let accepted = false
    for (const known of digests) accepted = timingSafeEqual(offered, known) || accepted
    if (!accepted) throw new UnauthorizedError('wrong key')
  }
}

function digest (key: string): Buffer {
  return createHash('sha256').update(key).digest()
}
