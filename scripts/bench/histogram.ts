// A log-bucketed latency histogram: 1 % wide buckets from 1 µs to hours, cheap to record in a hot
// loop, small to send over IPC (sparse), and exact to merge across processes.

const GROWTH = Math.log(1.01)
/** 1.01^2600 µs is about 47 hours: anything longer lands in the last bucket. */
const BUCKETS = 2600

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS)
  count = 0
  max = 0

  record (valueUs: number): void {
    const value = valueUs < 0 ? 0 : valueUs
    const index = value < 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(value) / GROWTH) + 1)
    this.counts[index]++
    this.count++
    if (value > this.max) this.max = value
  }

  toSparse (): Array<[number, number]> {
    const sparse: Array<[number, number]> = []
    this.counts.forEach((n, index) => { if (n > 0) sparse.push([index, n]) })
    return sparse
  }

  merge (sparse: Array<[number, number]>, max: number): void {
    for (const [index, n] of sparse) {
      this.counts[index] += n
      this.count += n
    }
    if (max > this.max) this.max = max
  }

  /** The value at quantile q (0 … 1): the middle of its bucket, never above the true max. */
  quantile (q: number): number {
    if (this.count === 0) return NaN
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let index = 0; index < BUCKETS; index++) {
      seen += this.counts[index]
      if (seen >= rank) {
        if (index === 0) return 0
        const low = Math.exp((index - 1) * GROWTH)
        return Math.min(low * Math.sqrt(1.01), this.max)
      }
    }
    return this.max
  }
}

export interface LatencySummary {
  p50: number
  p90: number
  p99: number
  max: number
}

/** Percentiles in milliseconds. */
export function summarise (histogram: Histogram): LatencySummary {
  const ms = (us: number): number => us / 1000
  return {
    p50: ms(histogram.quantile(0.5)),
    p90: ms(histogram.quantile(0.9)),
    p99: ms(histogram.quantile(0.99)),
    max: ms(histogram.count === 0 ? NaN : histogram.max)
  }
}
