/**
 * A token bucket: `burst` tokens at once, refilled at `perSecond`. Cheap enough to run on every
 * frame or chunk: two numbers per connection, no timers.
 */
export class TokenBucket {
  private tokens: number
  private updatedAt: number

  constructor (private readonly perSecond: number, private readonly burst: number, now = Date.now()) {
    this.tokens = burst
    this.updatedAt = now
  }

  /** Takes `count` tokens (a frame, or a chunk's bytes); false when there are not enough. */
  take (now = Date.now(), count = 1): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond)
    this.updatedAt = now
    if (this.tokens < count) return false
    this.tokens -= count
    return true
  }

  /** Whether the bucket has refilled to its burst: it then holds nothing a new one would not. */
  isFull (now = Date.now()): boolean {
    return this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond >= this.burst
  }
}
