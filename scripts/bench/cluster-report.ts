// What one run of the cluster benchmark measured, and its Markdown tables.

export interface MasterResult {
  port: number
  slots: Array<[number, number]>
  slotCount: number
  /** Channels of the benchmark whose slot this master owns. */
  channels: number
  /** Measured messages accepted (202) on those channels. */
  expectedPublishes: number
  /** SPUBLISH calls (a script's included) since CONFIG RESETSTAT: the messages it published. */
  spublish: number
  /** EVALSHA + EVAL calls: the publish scripts it ran (one per message, or per gathered turn). */
  scripts: number
  /** Redis's own time in the scripts (INFO commandstats: EVALSHA + EVAL, the commands they ran included), in seconds. */
  scriptSeconds: number
  /** Every command's calls and microseconds since CONFIG RESETSTAT (a script's commands counted in their own lines too). */
  commands: Record<string, { calls: number, usec: number }>
  /** used_cpu_user + used_cpu_sys (INFO cpu) during the measured run. */
  cpuSeconds: number
  /** This master's part of the three masters' CPU. */
  cpuShare: number
  /** Its part of the channels: the share it would get if CPU followed the channels exactly. */
  channelShare: number
}

export interface InstanceResult {
  name: string
  port: number
  pid: number
  /** Channels its clients hold (one client each). */
  channels: number
  /** Measured messages accepted (202) through it. */
  publishedThrough: number
  /** frb_messages_received_total during the measured run: what Redis sent it. */
  receivedFromRedis: number
  /** Measured messages accepted on its channels: what it should receive. */
  expectedFromRedis: number
  /** receivedFromRedis ÷ every accepted message. */
  measuredShare: number
  /** Its channels ÷ every channel. */
  expectedShare: number
  /** Messages its clients received (each once, on the right channel). */
  deliveries: number
  cpuSeconds: number
  /** Its /metrics counters that would tell of trouble, during the run. */
  gapsReported: number
  subscriberReconnects: number
  publishFailures: number
}

export interface ClusterRunResult {
  startedAt: string
  command: string
  machine: { cores: number, cpuModel: string, node: string, redis: string }
  settings: { channels: number, firstInstanceChannels: number, rate: number, lanes: number, size: number, durationS: number, warmupS: number }
  masters: MasterResult[]
  /** The busiest master's CPU share ÷ the average share (1 / masters); target ≤ 1.25. */
  busiestOverAverage: number
  /** The same for the channels each master owns: the imbalance the slots alone explain. */
  channelsBusiestOverAverage: number
  instances: InstanceResult[]
  totals: {
    durationS: number
    sent: number
    accepted: number
    refused: number
    failures: Record<string, number>
    reachedRate: number
    publishLatencyMs: { p50: number, p99: number, max: number }
    deliveries: number
    missing: number
    duplicates: number
    misrouted: number
    otherFrames: Record<string, number>
    clientsClosed: number
    samples: string[]
    missingSamples: string[]
    warmupAccepted: number
    warmupDelivered: number
    /** CPU seconds during the measured run, by role. */
    cpu: { masters: number, replicas: number, instances: number, publisher: number, clients: number }
    /** Busy cores of the whole machine during the measured run. */
    machineCores: number
    /** Of those, the cores busy with processes the benchmark did not start (noise). */
    foreignCores: number
  }
}

const pct = (share: number): string => Number.isFinite(share) ? `${(share * 100).toFixed(1)} %` : 'n/a'
const int = (value: number): string => Math.round(value).toLocaleString('en-US')
const sec = (value: number): string => value.toFixed(2)

function table (header: string[], rows: string[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => i === 0 ? '---' : '---:').join('|')}|`,
    ...rows.map((row) => `| ${row.join(' | ')} |`)
  ].join('\n')
}

function ranges (slots: Array<[number, number]>): string {
  return slots.map(([from, to]) => from === to ? `${from}` : `${from}-${to}`).join(', ')
}

export function markdown (result: ClusterRunResult): string {
  const { settings, totals } = result
  const lines: string[] = []
  lines.push(`## Redis Cluster: ${settings.channels} channels over ${result.masters.length} masters, ${result.instances.length} instances`)
  lines.push('')
  lines.push(`${result.machine.cores} cores (${result.machine.cpuModel}), node ${result.machine.node}, redis ${result.machine.redis}; ` +
    `${settings.durationS} s at ${int(settings.rate)} publishes/s targeted (${settings.lanes} lanes, ${settings.size}-byte data) ` +
    `after a ${settings.warmupS} s warm-up; history on (the defaults: one publish script per message).`)
  lines.push('')
  lines.push('### Masters: each one\'s share of the work')
  lines.push('')
  lines.push(table(
    ['master', 'slots', 'channels owned', 'publishes expected', 'publishes served (SPUBLISH)', 'scripts (EVALSHA)', 'script time s', 'Redis CPU s', 'CPU share', 'channel share'],
    result.masters.map((m) => [
      `127.0.0.1:${m.port}`, `${int(m.slotCount)} (${ranges(m.slots)})`, `${m.channels}`, int(m.expectedPublishes), int(m.spublish),
      int(m.scripts), sec(m.scriptSeconds), sec(m.cpuSeconds), pct(m.cpuShare), pct(m.channelShare)
    ])
  ))
  lines.push('')
  const verdict = result.busiestOverAverage <= 1.25 ? '✓ within' : '✗ over'
  lines.push(`Busiest master's CPU share ÷ average: **${result.busiestOverAverage.toFixed(2)}** (${verdict} the 1.25 target); ` +
    `its channel share ÷ average: ${result.channelsBusiestOverAverage.toFixed(2)}.`)
  lines.push('')
  const commands = new Map<string, { calls: number, usec: number }>()
  for (const master of result.masters) {
    for (const [name, { calls, usec }] of Object.entries(master.commands)) {
      const sum = commands.get(name) ?? { calls: 0, usec: 0 }
      commands.set(name, { calls: sum.calls + calls, usec: sum.usec + usec })
    }
  }
  const published = result.masters.reduce((sum, m) => sum + m.spublish, 0)
  lines.push('Commands the masters ran (INFO commandstats, summed; a script\'s commands are in its EVALSHA line too), per published message:')
  lines.push('')
  lines.push(table(['command', 'calls', 'per message', 'µs per call', 'µs per message'],
    [...commands].sort((x, y) => y[1].usec - x[1].usec).map(([name, { calls, usec }]) => [
      name, int(calls), published === 0 ? 'n/a' : (calls / published).toFixed(2), (usec / Math.max(1, calls)).toFixed(1),
      published === 0 ? 'n/a' : (usec / published).toFixed(1)
    ])))
  lines.push('')
  lines.push('### Instances: what each receives from Redis')
  lines.push('')
  lines.push(table(
    ['instance', 'channels held', 'published through it (202)', 'received from Redis', 'expected (accepted on its channels)', 'measured share', 'expected share', 'delivered to its clients', 'server CPU s'],
    result.instances.map((i) => [
      `${i.name} (:${i.port})`, `${i.channels}`, int(i.publishedThrough), int(i.receivedFromRedis), int(i.expectedFromRedis),
      pct(i.measuredShare), pct(i.expectedShare), int(i.deliveries), sec(i.cpuSeconds)
    ])
  ))
  lines.push('')
  lines.push('### Totals')
  lines.push('')
  const failures = Object.entries(totals.failures).map(([status, n]) => `${status}: ${n}`).join(', ')
  const other = Object.entries(totals.otherFrames).map(([type, n]) => `${type}: ${n}`).join(', ')
  lines.push(table(['', 'value'], [
    ['duration (first send → last answer)', `${totals.durationS.toFixed(2)} s`],
    ['publishes sent', int(totals.sent)],
    ['accepted (202)', int(totals.accepted)],
    ['refused or failed', `${int(totals.refused)}${failures === '' ? '' : ` (${failures})`}`],
    ['rate reached', `${int(totals.reachedRate)} publishes/s (target ${int(settings.rate)})`],
    ['publish latency p50 / p99 / max', `${totals.publishLatencyMs.p50.toFixed(2)} / ${totals.publishLatencyMs.p99.toFixed(2)} / ${totals.publishLatencyMs.max.toFixed(2)} ms`],
    ['deliveries counted at the clients', int(totals.deliveries)],
    ['**missing** (accepted, never delivered)', `**${int(totals.missing)}**`],
    ['duplicates / misrouted', `${totals.duplicates} / ${totals.misrouted}`],
    ['other frames at the clients', other === '' ? 'none' : other],
    ['clients closed during the run', `${totals.clientsClosed}`],
    ['warm-up: accepted / delivered', `${int(totals.warmupAccepted)} / ${int(totals.warmupDelivered)}`],
    ['CPU s: masters / replicas / instances / publisher / clients', `${sec(totals.cpu.masters)} / ${sec(totals.cpu.replicas)} / ${sec(totals.cpu.instances)} / ${sec(totals.cpu.publisher)} / ${sec(totals.cpu.clients)}`],
    ['machine busy', `${totals.machineCores.toFixed(2)} of ${result.machine.cores} cores, ${totals.foreignCores.toFixed(2)} of them other processes'`]
  ]))
  if (totals.samples.length > 0 || totals.missingSamples.length > 0) {
    lines.push('')
    lines.push('Oddities seen:')
    for (const sample of [...totals.samples, ...totals.missingSamples]) lines.push(`- ${sample}`)
  }
  return lines.join('\n')
}
