// Compile-time checks, run by `npm run typecheck`: the options type written for people
// (plugin/types.ts) and the TypeBox schema that validates options at registration
// (plugin/options.ts) describe the same options, with the same types. A new option added to one
// and not the other, or typed differently, fails the typecheck here.
import type { Static } from '@sinclair/typebox'
import type { RedisBroadcastOptionsSchema } from '../../plugin/options.js'
import type { RedisBroadcastOptions } from '../../plugin/types.js'

/** Each assignable to the other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
function assert<T extends true> (): T | undefined { return undefined }

/** What registration leaves: every plain data option filled in with its default. */
type Validated = Static<typeof RedisBroadcastOptionsSchema>
type Written = Omit<RedisBroadcastOptions, 'redis' | 'authorize' | 'canSubscribe'>
/** The written type with its defaults applied: every option set, and so every field of the groups. */
type Defaulted = {
  [K in Exclude<keyof Written, 'jwt' | 'redisNamespace'>]-?: K extends 'history' | 'presence' ? Required<NonNullable<Written[K]>> : NonNullable<Written[K]>
}

assert<Same<keyof Written, keyof Validated>>()
assert<Same<Defaulted, Omit<Validated, 'jwt' | 'redisNamespace'>>>()
// jwt and redisNamespace have no default: they stay optional, with the same fields.
assert<Same<Written['jwt'], Validated['jwt']>>()
assert<Same<Written['redisNamespace'], Validated['redisNamespace']>>()
