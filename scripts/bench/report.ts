// The Markdown report: a table per kind of scenario (the median of the rounds of each server),
// the ratios of ours to every baseline (and, round by round, to its other builds), and every
// problem, loudly.
import { median, problemsOf, runsOf, type FanoutResult, type PublishResult, type RunResult, type Utilisation } from './results.js'
import type { Scenario } from './scenarios.js'
import { isOtherBuild, targetInfo, type Target } from './servers.js'

function number (value: number, digits = 0): string {
  if (!Number.isFinite(value)) return '–'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function ms (value: number): string {
  if (!Number.isFinite(value)) return '–'
  return number(value, value < 10 ? 2 : value < 100 ? 1 : 0)
}

function ratio (ours: number, theirs: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(theirs) || theirs === 0) return '–'
  return `×${number(ours / theirs, 2)}`
}

function label (target: Target): string {
  return targetInfo(target).label
}

function table (header: string[], rows: string[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${row.join(' | ')} |`)
  ].join('\n')
}

/** The median of a number picked from every round. */
function med<T> (runs: T[], pick: (run: T) => number): number {
  return median(runs.map(pick))
}

/** "server+machine (server 0.98, clients 0.91, machine 1.95 of 2)": the median round's figures. */
function saturation (runs: Array<{ saturated: string, utilisation: Utilisation }>, cores: number): string {
  const verdicts = [...new Set(runs.map((run) => run.saturated))].join(' / ')
  const u = (key: keyof Utilisation): string => number(med(runs, (run) => run.utilisation[key]), 2)
  const foreign = med(runs, (run) => run.utilisation.foreign)
  const noisy = foreign >= 0.25 ? `; ⚠ other load ${number(foreign, 2)}` : ''
  return `${verdicts} (srv ${u('server')}, cli ${u('clients')}, pub ${u('publisher')}, box ${u('machine')}/${cores}${noisy})`
}

function fanoutSection (scenarios: Scenario[], runs: RunResult[], cores: number): string {
  const rows: string[][] = []
  const ratios: string[][] = []
  for (const scenario of scenarios) {
    const summary = new Map<Target, { deliveries: number, cpu: number, p99: number }>()
    for (const target of scenario.targets) {
      const done = runsOf(runs, scenario.name, target, 'fanout')
      if (done.length === 0) continue
      const lost = done.reduce((sum, run) => sum + run.lost, 0)
      const dup = done.reduce((sum, run) => sum + run.duplicates, 0)
      const order = done.reduce((sum, run) => sum + run.outOfOrder, 0)
      const cpu = (run: FanoutResult): number => run.cpuPerMillion.user + run.cpuPerMillion.system
      summary.set(target, { deliveries: med(done, (run) => run.deliveriesPerSecond), cpu: med(done, cpu), p99: med(done, (run) => run.latencyMs.p99) })
      rows.push([
        scenario.name,
        label(target),
        number(scenario.clients),
        number(med(done, (run) => run.deliveriesPerSecond)),
        `${ms(med(done, (run) => run.latencyMs.p50))} / ${ms(med(done, (run) => run.latencyMs.p90))} / ` +
          `${ms(med(done, (run) => run.latencyMs.p99))} / ${ms(med(done, (run) => run.latencyMs.max))}`,
        lost + dup + order === 0 ? '0 / 0 / 0' : `**${lost} / ${dup} / ${order}**`,
        `${number(med(done, (run) => run.cpuPerMillion.user), 2)} + ${number(med(done, (run) => run.cpuPerMillion.system), 2)}`,
        number(med(done, (run) => run.serverRssMb.peak)),
        done.every((run) => run.loopDelayMs !== undefined)
          ? `${ms(med(done, (run) => run.loopDelayMs?.p99 ?? NaN))} / ${ms(med(done, (run) => run.loopDelayMs?.max ?? NaN))}`
          : '–',
        saturation(done, cores)
      ])
    }
    const ours = summary.get('ours')
    if (ours === undefined) continue
    for (const [target, theirs] of summary) {
      if (target === 'ours') continue
      ratios.push([scenario.name, label(target), ratio(ours.deliveries, theirs.deliveries), ratio(ours.cpu, theirs.cpu), ratio(ours.p99, theirs.p99)])
    }
  }
  if (rows.length === 0) return ''
  return [
    '### Fan-out',
    '',
    table(['scenario', 'server', 'clients', 'deliveries/s', 'latency p50 / p90 / p99 / max (ms)', 'lost / dup / reordered',
      'server CPU s per 1M deliveries (user + sys)', 'server peak RSS (MB)', 'event-loop delay p99 / max (ms)', 'saturated (cores busy)'], rows),
    '',
    ratios.length === 0
      ? ''
      : ['Ours ÷ baseline (deliveries/s: higher is better for ours; CPU per delivery and p99 latency: lower is better for ours):',
          '',
          table(['scenario', 'baseline', 'deliveries/s', 'CPU per delivery', 'p99 latency'], ratios), ''].join('\n')
  ].join('\n')
}

function idleSection (scenarios: Scenario[], runs: RunResult[]): string {
  const rows: string[][] = []
  for (const scenario of scenarios.filter((s) => s.kind === 'idle')) {
    const ours = runsOf(runs, scenario.name, 'ours', 'idle')
    const oursBytes = med(ours, (run) => run.bytesPerConnection)
    for (const target of scenario.targets) {
      const done = runsOf(runs, scenario.name, target, 'idle')
      if (done.length === 0) continue
      const bytes = med(done, (run) => run.bytesPerConnection)
      rows.push([
        label(target),
        number(scenario.clients),
        number(med(done, (run) => run.rssBeforeMb), 1),
        number(med(done, (run) => run.rssAfterMb), 1),
        number(bytes / 1024, 1),
        target === 'ours' ? '' : ratio(oursBytes, bytes),
        number(med(done, (run) => run.connectionsPerSecond)),
        number(med(done, (run) => run.cpuMsPerConnection), 3)
      ])
    }
  }
  if (rows.length === 0) return ''
  return ['### Idle connections (memory)', '',
    table(['server', 'connections', 'RSS before (MB)', 'RSS after (MB)', 'KiB per connection', 'ours ÷ it', 'connects/s',
      'server CPU ms per connect'], rows), ''].join('\n')
}

function publishSection (scenarios: Scenario[], runs: RunResult[], cores: number): string {
  const rows: string[][] = []
  for (const scenario of scenarios.filter((s) => s.kind === 'publish')) {
    const ours = runsOf(runs, scenario.name, 'ours', 'publish')
    const cpu = (run: PublishResult): number => run.cpuPerMillion.user + run.cpuPerMillion.system
    for (const target of scenario.targets) {
      const done = runsOf(runs, scenario.name, target, 'publish')
      if (done.length === 0) continue
      // A figure is the server's only when it, not the load generator, was the busier process.
      const generatorBound = done.filter((run) => run.utilisation.server < run.utilisation.publisher).length
      rows.push([
        scenario.name,
        label(target),
        number(med(done, (run) => run.requestsPerSecond)),
        `${ms(med(done, (run) => run.latencyMs.p50))} / ${ms(med(done, (run) => run.latencyMs.p99))} / ${ms(med(done, (run) => run.latencyMs.max))}`,
        `${number(med(done, (run) => run.cpuPerMillion.user), 1)} + ${number(med(done, (run) => run.cpuPerMillion.system), 1)}`,
        target === 'ours'
          ? ''
          : `${ratio(med(ours, (run) => run.requestsPerSecond), med(done, (run) => run.requestsPerSecond))} req/s, ` +
            `${ratio(med(ours, cpu), med(done, cpu))} CPU`,
        `${number(med(done, (run) => run.redisUsPerMessage), 1)} / ${number(med(done, (run) => run.redisCpuUsPerMessage), 1)}`,
        `${number(med(done, (run) => run.utilisation.server), 2)} / ${number(med(done, (run) => run.utilisation.publisher), 2)}` +
          (generatorBound === 0 ? '' : ` ⚠ ${generatorBound} of ${done.length} rounds bound by the load generator`),
        saturation(done, cores)
      ])
    }
  }
  if (rows.length === 0) return ''
  return ['### HTTP publish path', '',
    'The load generator is autocannon; publish-batch counts messages, not requests.', '',
    table(['scenario', 'server', 'requests/s', 'latency p50 / p99 / max (ms)', 'server CPU s per 1M requests (user + sys)', 'ours ÷ it',
      'Redis µs per message: commands / CPU', 'cores used: server / load generator', 'saturated (cores busy)'], rows), ''].join('\n')
}

/** The figures a run is compared on, by name; none for a failed run. */
function figuresOf (run: RunResult): Record<string, number> {
  switch (run.kind) {
    case 'fanout':
      return {
        'deliveries/s': run.deliveriesPerSecond,
        'server CPU per delivery': run.cpuPerMillion.user + run.cpuPerMillion.system,
        'p50 latency': run.latencyMs.p50,
        'p99 latency': run.latencyMs.p99,
        'POST /publish p99': run.publishLatencyMs.p99,
        'event-loop delay p99': run.loopDelayMs?.p99 ?? NaN
      }
    case 'idle':
      return { 'RSS per connection': run.bytesPerConnection, 'connects/s': run.connectionsPerSecond, 'server CPU per connect': run.cpuMsPerConnection }
    case 'publish':
      return {
        'requests/s': run.requestsPerSecond,
        'server CPU per request': run.cpuPerMillion.user + run.cpuPerMillion.system,
        'p99 latency': run.latencyMs.p99,
        'Redis µs per message': run.redisUsPerMessage,
        'Redis CPU µs per message': run.redisCpuUsPerMessage
      }
    case 'failed':
      return {}
  }
}

/**
 * Ours ÷ each other build of ours (--compare-dist), round by round: the two ran back to back in
 * the same round, so a round's ratio leaves out most of what drifts between rounds (other load on
 * the machine, Redis's state), and the spread of the rounds says how far a difference of a few
 * percent can be trusted, which the ratio of two medians does not.
 */
function buildsSection (scenarios: Scenario[], runs: RunResult[]): string {
  const rows: string[][] = []
  for (const scenario of scenarios) {
    const ours = runs.filter((run) => run.scenario === scenario.name && run.target === 'ours' && run.kind !== 'failed')
    for (const target of scenario.targets.filter(isOtherBuild)) {
      const pairs = ours.flatMap((run) => {
        const theirs = runs.find((other) => other.scenario === scenario.name && other.target === target && other.round === run.round)
        return theirs === undefined || theirs.kind === 'failed' ? [] : [[figuresOf(run), figuresOf(theirs)] as const]
      })
      if (pairs.length === 0) continue
      for (const figure of Object.keys(pairs[0]?.[0] ?? {})) {
        const ratios = pairs.map(([a, b]) => (a[figure] as number) / (b[figure] as number)).filter((value) => Number.isFinite(value))
        const times = (value: number): string => Number.isFinite(value) ? `×${number(value, 3)}` : '–'
        rows.push([scenario.name, label(target), figure, times(median(ratios)),
          `${times(Math.min(...ratios))} – ${times(Math.max(...ratios))}`, number(ratios.length)])
      }
    }
  }
  if (rows.length === 0) return ''
  return ['### Ours ÷ its other builds, round by round', '',
    'Each round\'s ours (this checkout) ÷ the other build in the same round. Deliveries, requests and connects per second: ' +
      'above ×1 is ours faster; CPU, latency and memory: below ×1 is ours using less.', '',
    table(['scenario', 'ours ÷', 'figure', 'median of the rounds', 'lowest – highest', 'rounds'], rows), ''].join('\n')
}

/** Each filtered scenario and the unfiltered one it is measured against. */
const FILTERED_PAIRS: Array<[string, string]> = [['burst-5k-filtered', 'burst-5k'], ['rate-5k-filtered', 'rate-5k']]

/**
 * A filtered scenario ÷ its unfiltered twin, round by round, for ours: what filters cost per
 * delivered message (each client is due as many messages in both; the filtered one publishes
 * `groups` times as many).
 */
function filtersSection (scenarios: Scenario[], runs: RunResult[]): string {
  const rows: string[][] = []
  let groups = 0
  for (const [filteredName, plainName] of FILTERED_PAIRS) {
    const filtered = scenarios.find((scenario) => scenario.name === filteredName)
    if (filtered === undefined || !scenarios.some((scenario) => scenario.name === plainName)) continue
    groups = filtered.groups
    for (const target of filtered.targets) {
      const pairs = runsOf(runs, filteredName, target, 'fanout').flatMap((run) => {
        const plain = runsOf(runs, plainName, target, 'fanout').find((other) => other.round === run.round)
        return plain === undefined ? [] : [[run, plain] as const]
      })
      if (pairs.length === 0) continue
      const cpu = (run: FanoutResult): number => run.cpuPerMillion.user + run.cpuPerMillion.system
      const cpuRatios = pairs.map(([run, plain]) => cpu(run) / cpu(plain))
      const times = (value: number): string => Number.isFinite(value) ? `×${number(value, 2)}` : '–'
      rows.push([`${filteredName} ÷ ${plainName}`, label(target), times(median(cpuRatios)), `${times(Math.min(...cpuRatios))} – ${times(Math.max(...cpuRatios))}`,
        times(median(pairs.map(([run, plain]) => run.deliveriesPerSecond / plain.deliveriesPerSecond))),
        times(median(pairs.map(([run, plain]) => run.latencyMs.p99 / plain.latencyMs.p99))), number(pairs.length)])
    }
  }
  if (rows.length === 0) return ''
  return ['### Filters: filtered ÷ unfiltered, round by round', '',
    `${groups} distinct filters, one per client in turn; each client is due as many messages as in the unfiltered scenario, ` +
      `out of ${groups} times as many published.`, '',
    table(['scenarios', 'server', 'server CPU per delivery (median)', 'lowest – highest', 'deliveries/s', 'p99 latency', 'rounds'], rows), ''].join('\n')
}

export function problemsReport (runs: RunResult[]): string[] {
  return runs.flatMap((run) => problemsOf(run).map((problem) => `${run.scenario} · ${label(run.target)} · round ${run.round}: ${problem}`))
}

export function markdownReport (scenarios: Scenario[], runs: RunResult[], cores: number): string {
  const problems = problemsReport(runs)
  const builds = scenarios.some((scenario) => scenario.targets.some(isOtherBuild))
  return [
    fanoutSection(scenarios.filter((s) => s.kind === 'fanout'), runs, cores),
    idleSection(scenarios, runs),
    publishSection(scenarios, runs, cores),
    filtersSection(scenarios, runs),
    buildsSection(scenarios, runs),
    'Medians of every round; runs were interleaved (ours, then each baseline, then ours again …' +
      `${builds ? '; ours and its other builds took turns at going first' : ''}). ` +
      '"saturated" names each process at ≥ 90 % of one core (srv: busiest server instance, cli: busiest load-client process, ' +
      `pub: publisher) and "machine" when all ${cores} cores were ≥ 90 % busy. ` +
      (cores <= 2
        ? `This machine has ${cores} cores: the load generators run on the same cores as the server under test and compete with it, ` +
          'so figures marked "machine" are bounded by the whole box rather than by the server alone.'
        : ''),
    '',
    problems.length === 0
      ? 'No message was lost, duplicated or reordered.'
      : ['**PROBLEMS:**', '', ...problems.map((problem) => `- **${problem}**`)].join('\n'),
    ''
  ].filter((part) => part !== '').join('\n\n')
}
