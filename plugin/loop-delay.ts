import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'

/** How late the event loop ran, in milliseconds: the worse of the current and the last 10-second window. */
export interface LoopDelay {
  p50: number
  p99: number
  max: number
}

/** How long a window lasts. */
const WINDOW_MS = 10_000
/** How often the loop is sampled: each sample is how late a timer due then fired. */
const RESOLUTION_MS = 10

const NONE: LoopDelay = { p50: 0, p99: 0, max: 0 }

/**
 * How late the event loop runs: a long synchronous turn (a fan-out to many sockets, a large JSON
 * body) shows here before clients notice it. Read over recent windows rather than since start,
 * so a spike is not diluted by hours of calm, and not forgotten the instant a window turns.
 */
export class LoopDelayMonitor {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  private lastWindow = NONE
  private timer: NodeJS.Timeout | undefined

  start (): void {
    this.histogram.enable()
    this.timer = setInterval(() => {
      this.lastWindow = this.current()
      this.histogram.reset()
    }, WINDOW_MS)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.histogram.disable()
  }

  read (): LoopDelay {
    const current = this.current()
    const last = this.lastWindow
    return { p50: Math.max(current.p50, last.p50), p99: Math.max(current.p99, last.p99), max: Math.max(current.max, last.max) }
  }

  private current (): LoopDelay {
    const histogram = this.histogram
    // No sample yet reads as NaN and a huge minimum: no sample is no delay seen.
    if (histogram.count === 0) return NONE
    // A sample is the time between two ticks of the sampling timer: the lateness is what exceeds it.
    const ms = (ns: number): number => Math.max(0, Math.round(ns / 1e4 - RESOLUTION_MS * 100) / 100)
    return { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), max: ms(histogram.max) }
  }
}
