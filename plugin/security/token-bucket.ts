/**
 * A token bucket for client frames: `burst` frames at once, refilled at `perSecond`. Cheap
 * enough to run on every frame: two numbers per connection, no timers.
 */
export class TokenBucket {
  private tokens: number
  private updatedAt: number

  constructor (private readonly perSecond: number, private readonly burst: number, now = Date.now()) {
    this.tokens = burst
    this.updatedAt = now
  }

  take (now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond)
    this.updatedAt = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}
