/**
 * Personal channels: `@<identity>` is the channel of one identity (the JWT `sub`, or the string or
 * number `authorize()` returns as identity). An identity's characters outside the channel
 * alphabet are written as `~` and two hex digits per UTF-8 byte (`~` itself too):
 * `auth0|123` → `@auth0~7C123`, `a@b.example` → `@a~40b.example`.
 */
export const PERSONAL_PREFIX = '@'
const PLAIN = /[A-Za-z0-9_.:-]/

/** The personal channel of a connection's identity; undefined when it has none, or one too long to name. */
export function personalChannel (identity: unknown): string | undefined {
  const name = identityName(identity)
  if (name === undefined || name === '') return undefined
  let channel = PERSONAL_PREFIX
  for (const char of name) {
    if (PLAIN.test(char)) channel += char
    else for (const byte of Buffer.from(char)) channel += `~${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return channel.length <= 128 ? channel : undefined
}

export function isPersonalChannel (channel: string): boolean {
  return channel.startsWith(PERSONAL_PREFIX)
}

function identityName (identity: unknown): string | undefined {
  const subject = (identity as { sub?: unknown } | null | undefined)?.sub
  if (typeof subject === 'string') return subject
  if (typeof identity === 'string') return identity
  if (typeof identity === 'number' && Number.isFinite(identity)) return String(identity)
  return undefined
}
