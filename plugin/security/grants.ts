import { CHANNEL_MAX_LENGTH } from '../channel.js'

/**
 * The grammar of a channel pattern (a token's grants, the presence and history options):
 *
 *   pattern  = "*" | channel | channel sep "*"      sep = "." | ":"
 *
 * A lone `*` covers every channel; a channel name covers itself; `room:*` covers every channel
 * that starts with `room:` and has at least one character after it (`room:1`, `room:a:b`), never
 * `room:` nor `room` itself. A `*` anywhere else makes no pattern: `room:1*` must not grant
 * `room:10`, so it grants nothing (and is refused where an option names it).
 */
const PATTERN = new RegExp(`^(?:\\*|[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}|[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH - 2}}[.:]\\*)$`)

export function isValidPattern (pattern: string): boolean {
  return PATTERN.test(pattern)
}

/** Whether a list of patterns covers a channel; entries outside the grammar cover nothing. */
export function isGranted (grants: readonly string[], channel: string): boolean {
  for (const grant of grants) {
    if (grant === channel || grant === '*') return true
    const prefixLength = grant.length - 1
    if (prefixLength < 2 || grant.charCodeAt(prefixLength) !== STAR || channel.length <= prefixLength) continue
    const separator = grant.charCodeAt(prefixLength - 1)
    if ((separator === DOT || separator === COLON) && channel.startsWith(grant.slice(0, prefixLength)) &&
      grant.indexOf('*') === prefixLength) return true
  }
  return false
}

const STAR = 0x2a
const DOT = 0x2e
const COLON = 0x3a
