// The progress line on stderr: rewritten in place on a terminal, a line every few seconds otherwise.

function clock (ms: number): string {
  const seconds = Math.floor(ms / 1000)
  return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`
}

export class Progress {
  private readonly started = Date.now()
  private readonly tty = process.stderr.isTTY === true
  private prefix = ''
  private lastWrite = 0
  private lastLine = ''
  private shown = false

  constructor (private readonly total: number) {}

  /** Starts the line of run `index` (1-based). */
  run (index: number, label: string): void {
    this.prefix = `[${index}/${this.total}] ${label}`
  }

  update (detail: string, force = false): void {
    const now = Date.now()
    if (!force && now - this.lastWrite < (this.tty ? 200 : 3000)) return
    this.lastWrite = now
    const line = `${clock(now - this.started)} ${this.prefix}: ${detail}`
    if (line === this.lastLine) return
    this.lastLine = line
    if (this.tty) {
      const width = process.stderr.columns ?? 120
      process.stderr.write(`\r\x1b[K${line.slice(0, width - 1)}`)
      this.shown = true
    } else {
      process.stderr.write(`${line}\n`)
    }
  }

  /** A line that stays (a run's summary, a warning). */
  log (line: string): void {
    if (this.tty && this.shown) process.stderr.write('\r\x1b[K')
    this.shown = false
    process.stderr.write(`${line}\n`)
  }

  elapsedMs (): number {
    return Date.now() - this.started
  }
}
