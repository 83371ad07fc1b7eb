// What one run measured, and how runs of the same scenario and server are summed up.
import type { LatencySummary } from './histogram.js'
import type { CpuTimes } from './proc.js'
import type { Target } from './servers.js'

/** CPU use over a run's measured window, in cores (1 = one core fully busy). */
export interface Utilisation {
  /** The busiest server instance. */
  server: number
  /** The busiest load-client process. */
  clients: number
  publisher: number
  redis: number
  /** The whole machine, every process included (from /proc/stat). */
  machine: number
  /** Machine minus every process of the benchmark: someone else's load on the same cores. */
  foreign: number
}

interface RunBase {
  scenario: string
  target: Target
  round: number
}

export interface FanoutResult extends RunBase {
  kind: 'fanout'
  clients: number
  instances: number
  mode: string
  messages: number
  size: number
  /** Messages the publisher had accepted (202) × clients. */
  expected: number
  delivered: number
  lost: number
  duplicates: number
  outOfOrder: number
  /** Frames that were not benchmark messages, and clients whose socket closed during the run. */
  unexpected: number
  closed: number
  publishFailures: number
  /** First send → last receive. */
  durationS: number
  deliveriesPerSecond: number
  messagesPerSecond: number
  latencyMs: LatencySummary
  publishLatencyMs: LatencySummary
  serverCpu: CpuTimes
  /** Server CPU seconds per million deliveries. */
  cpuPerMillion: CpuTimes
  utilisation: Utilisation
  saturated: string
  serverRssMb: { start: number, peak: number }
  connectS: number
  /** Our service's event-loop delay during the run (the worst instance); absent for the baselines. */
  loopDelayMs?: { p99: number, max: number }
}

export interface IdleResult extends RunBase {
  kind: 'idle'
  clients: number
  rssBeforeMb: number
  rssAfterMb: number
  bytesPerConnection: number
  connectS: number
  connectionsPerSecond: number
  /** Server CPU milliseconds per accepted connection (upgrade + subscribe). */
  cpuMsPerConnection: number
}

export interface PublishResult extends RunBase {
  kind: 'publish'
  concurrency: number
  durationS: number
  requests: number
  publishFailures: number
  requestsPerSecond: number
  latencyMs: LatencySummary
  serverCpu: CpuTimes
  /** Server CPU seconds per million requests. */
  cpuPerMillion: CpuTimes
  utilisation: Utilisation
  saturated: string
  /**
   * Redis's time per published message in the commands the service sent (INFO commandstats). The
   * commands a script runs are inside its EVALSHA time and have lines of their own: counted once.
   * Wall-clock: a Redis descheduled on a busy machine counts the wait.
   */
  redisUsPerMessage: number
  /** Redis's CPU time per published message (/proc, user + system, all it did: requests, replies, scripts). */
  redisCpuUsPerMessage: number
  redisCommands: Record<string, { calls: number, usec: number }>
}

export interface FailedRun extends RunBase {
  kind: 'failed'
  error: string
}

export type RunResult = FanoutResult | IdleResult | PublishResult | FailedRun

/** What must be zero, for a run to count: lost, duplicated or reordered messages, failed publishes. */
export function problemsOf (run: RunResult): string[] {
  if (run.kind === 'failed') return [`failed: ${run.error.split('\n')[0] ?? ''}`]
  if (run.kind !== 'fanout' && run.kind !== 'publish') return []
  const problems: string[] = []
  if (run.publishFailures > 0) problems.push(`${run.publishFailures} publishes failed`)
  if (run.kind === 'fanout') {
    if (run.lost > 0) problems.push(`${run.lost} deliveries LOST`)
    if (run.duplicates > 0) problems.push(`${run.duplicates} deliveries DUPLICATED`)
    if (run.outOfOrder > 0) problems.push(`${run.outOfOrder} deliveries OUT OF ORDER`)
    if (run.closed > 0) problems.push(`${run.closed} clients disconnected`)
    if (run.unexpected > 0) problems.push(`${run.unexpected} unexpected frames`)
  }
  return problems
}

export function median (values: number[]): number {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] as number : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/** The runs of one scenario and server (every round), in the order they ran. */
export function runsOf<K extends RunResult['kind']> (
  runs: RunResult[], scenario: string, target: Target, kind: K
): Array<Extract<RunResult, { kind: K }>> {
  return runs.filter((run): run is Extract<RunResult, { kind: K }> =>
    run.scenario === scenario && run.target === target && run.kind === kind)
}
