import { Histogram } from './histogram.js'
import { nowUs, type PublisherStats } from './protocol.js'

/** What a publisher process counts of its requests: sent, accepted, failed by status, when, and how long each took. */
export class PostTally {
  private readonly latency = new Histogram()
  private readonly failures: Record<string, number> = {}
  sent = 0
  private accepted = 0
  private failed = 0
  private firstSendUs = 0
  private lastSendUs = 0
  private lastAckUs = 0

  /** A request goes out now: its send time, for `answered`. */
  sending (): number {
    const at = nowUs()
    if (this.firstSendUs === 0) this.firstSendUs = at
    this.lastSendUs = at
    this.sent++
    return at
  }

  /** Its answer: accepted (202, carrying `messages`) or failed, by status. True when accepted. */
  answered (status: string, sentAt: number, messages = 1): boolean {
    const done = nowUs()
    if (status === '202') {
      this.accepted += messages
      this.lastAckUs = done
      this.latency.record(done - sentAt)
      return true
    }
    this.failed++
    this.failures[status] = (this.failures[status] ?? 0) + 1
    return false
  }

  stats (): PublisherStats {
    const { sent, accepted, failed, failures, firstSendUs, lastSendUs, lastAckUs, latency } = this
    return { sent, accepted, failed, failures, firstSendUs, lastSendUs, lastAckUs, latency: latency.toSparse(), maxLatencyUs: latency.max }
  }
}
