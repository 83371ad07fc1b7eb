/**
 * The delay before retry number `attempt` (0 for the first): exponential, capped, with full
 * jitter (anywhere between 0 and the cap of this attempt), so the thousands of clients a
 * restarted server drops do not all come back in the same instant.
 */
export function backoff (attempt: number, minDelay: number, maxDelay: number, random: () => number = Math.random): number {
  // 2 ** 31 already passes any cap; a larger exponent would only overflow to Infinity.
  return Math.floor(random() * Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 31)))
}
