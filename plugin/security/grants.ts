/**
 * Whether a list of grants covers a channel. A grant is a channel name, or a prefix followed by
 * `*` (`room:*` covers `room:1` and `room:a:b`); a lone `*` covers every channel.
 */
export function isGranted (grants: readonly string[], channel: string): boolean {
  for (const grant of grants) {
    if (grant.endsWith('*') ? channel.startsWith(grant.slice(0, -1)) : grant === channel) return true
  }
  return false
}
