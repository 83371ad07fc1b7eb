/**
 * When a JWT expires, in ms since the epoch, read from its `exp` claim without verifying it (the
 * server does that): only to know when to ask for a fresh one. Undefined for anything that is not
 * a JWT with a numeric `exp`.
 */
export function tokenExpiry (token: string): number | undefined {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const { exp } = JSON.parse(atob(payload)) as { exp?: unknown }
    return typeof exp === 'number' ? exp * 1000 : undefined
  } catch {
    return undefined
  }
}
