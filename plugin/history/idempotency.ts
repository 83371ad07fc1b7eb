import { Type } from '@sinclair/typebox'

export const IdempotencyKey = Type.String({
  pattern: '^[\\x21-\\x7e]{1,128}$',
  description: 'Publishes with the same key on the same channel within idempotencyWindow are published once: 1-128 printable ASCII characters'
})

const keyRegex = new RegExp(IdempotencyKey.pattern as string)

export function isValidIdempotencyKey (value: unknown): value is string {
  return typeof value === 'string' && keyRegex.test(value)
}
