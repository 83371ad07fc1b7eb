// The scenarios of the benchmark and the command-line flags that scale them.
import { basename, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { OtherBuild, ServiceBuild, Target } from './servers.js'

export type ScenarioKind = 'fanout' | 'idle' | 'publish'

export interface Scenario {
  name: string
  kind: ScenarioKind
  description: string
  /**
   * Interleaved in this order within each round: ours first (then its other builds, which take
   * turns with it at going first: plan() in bench.ts), then the baselines.
   */
  targets: Target[]
  /** WebSocket clients, over all instances. */
  clients: number
  instances: number
  mode: 'burst' | 'rate' | 'load'
  messages: number
  /** Bytes of each message's `data` JSON. */
  size: number
  lanes: number
  /** Messages per second (mode rate). */
  rate: number
  /** Mode rate: messages / rate; mode load: how long the HTTP load lasts. */
  durationMs: number
  /** Messages per publish request (a batch when above 1); publish results then count messages. */
  batch: number
  /**
   * Above 0: each client subscribes with one of this many filters and each message is tagged for
   * one of them, so a client receives 1 / groups of what is published (our service only).
   */
  groups: number
}

export interface Settings {
  quick: boolean
  rounds: number
  clientsPerProcess: number
  /**
   * Connections from one loopback source address before the next (127.0.0.2, .3 …): one address
   * runs out of local ports near net.ipv4.ip_local_port_range's size. 0: as many as that allows.
   */
  perSourceAddress: number
  output: string
  scenarios: Scenario[]
  /** Settings of our service beyond its defaults (environment variables), from --service-env. */
  serviceEnv: Record<string, string>
  /** Other builds of our service, run beside it in every scenario that runs it (--compare-dist). */
  builds: ServiceBuild[]
}

export const SCENARIO_NAMES = ['burst-1k', 'burst-5k', 'burst-5k-filtered', 'rate-1k', 'rate-5k', 'rate-5k-filtered', 'two-instances', 'idle-10k', 'publish-http', 'publish-batch'] as const

const FANOUT_TARGETS: Target[] = ['ours', 'textbook', 'frame-once', 'socketio']

export const USAGE = `Usage: npm run bench -- [flags]   (or: node dist/scripts/bench.js [flags] after npm run build)

  --quick                 small N and M for a smoke run (well under a minute)
  --scenario a,b          only these scenarios: ${SCENARIO_NAMES.join(', ')}
  --targets a,b           only these servers: ours, textbook, frame-once, socketio (bare-fastify is
                          publish-http's own baseline)
  --clients N             WebSocket clients of every fan-out scenario (default 1000 / 5000)
  --idle-clients N        connections of idle-10k (default 10000)
  --messages M            messages per burst (default 1000 at 1k clients, 200 at 5k)
  --size S                bytes of each message's data JSON (default 256)
  --rate D                deliveries per second of the fixed-rate scenarios (default 50000)
  --duration SECONDS      length of a fixed-rate run and of publish-http (default 10 and 5)
  --lanes L               publisher lanes in a burst: requests in flight at once (default 16)
  --concurrency C         concurrent requests of publish-http (default 64)
  --batch B               messages per request of publish-batch (default 200)
  --filters F             distinct filters of burst-5k-filtered and rate-5k-filtered (default 10)
  --rounds R              times each server runs each scenario, interleaved A B A B (default 2)
  --clients-per-process K clients per load-generator process (default 2500)
  --per-source-address N  WebSocket clients per loopback source address (127.0.0.2, .3 …) once
                          one address would run out of local ports (default: the local port
                          range less 1,000)
  --service-env NAME=V    an environment variable of our service only (repeatable), e.g.
                          HISTORY_SIZE=0 (no history, no offsets) or PRESENCE_CHANNELS=- (no
                          presence); default: none, the service's own defaults
  --compare-dist [NAME=]DIR
                          also run our service from another build (repeatable): DIR is a project
                          root with dist/app.js and node_modules, built beforehand; it runs as
                          ours@NAME (NAME: DIR's last segment by default) beside ours in every
                          round, the builds taking turns at going first (use an even --rounds),
                          with the --service-env settings too; the report adds ours ÷ it per round
  --output FILE           where the JSON results go (default bench-results.json)
  --help`

function positive (flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const number = Number(value)
  if (!Number.isFinite(number) || number <= 0) throw new Error(`--${flag} must be a positive number, got ${JSON.stringify(value)}`)
  return number
}

function list (flag: string, value: string | undefined, allowed: readonly string[]): string[] | undefined {
  if (value === undefined) return undefined
  const items = value.split(',').map((item) => item.trim()).filter((item) => item !== '')
  for (const item of items) {
    if (!allowed.includes(item)) throw new Error(`--${flag}: unknown ${JSON.stringify(item)} (one of ${allowed.join(', ')})`)
  }
  return items
}

function serviceEnv (pairs: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {}
  for (const pair of pairs ?? []) {
    const match = /^([A-Z_]+)=(.*)$/.exec(pair)
    if (match === null) throw new Error(`--service-env takes NAME=value pairs, got ${JSON.stringify(pair)}`)
    env[match[1]] = match[2]
  }
  return env
}

/** `--compare-dist [NAME=]DIR`: each a build of ours named `ours@NAME`. */
function otherBuilds (specs: string[] | undefined): ServiceBuild[] {
  const builds: ServiceBuild[] = []
  for (const spec of specs ?? []) {
    const named = /^([A-Za-z0-9._-]+)=(.+)$/.exec(spec)
    const root = resolve(named?.[2] ?? spec)
    const name = named?.[1] ?? basename(root)
    if (name === '') throw new Error(`--compare-dist: name the build of ${JSON.stringify(spec)}: --compare-dist NAME=DIR`)
    const target: OtherBuild = `ours@${name}`
    // Two builds under one name would be summed up as one in the report.
    if (builds.some((build) => build.target === target)) {
      throw new Error(`--compare-dist: two builds would be called ${target}: name them, --compare-dist NAME=DIR`)
    }
    builds.push({ target, root })
  }
  return builds
}

export function parseSettings (argv: string[]): Settings | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean', default: false },
      scenario: { type: 'string' },
      targets: { type: 'string' },
      clients: { type: 'string' },
      'idle-clients': { type: 'string' },
      messages: { type: 'string' },
      size: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      lanes: { type: 'string' },
      concurrency: { type: 'string' },
      batch: { type: 'string' },
      filters: { type: 'string' },
      rounds: { type: 'string' },
      'clients-per-process': { type: 'string' },
      'per-source-address': { type: 'string' },
      output: { type: 'string' },
      'service-env': { type: 'string', multiple: true },
      'compare-dist': { type: 'string', multiple: true },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help === true) return 'help'
  const quick = values.quick === true
  const int = (flag: keyof typeof values, fallback: number): number => Math.round(positive(flag, values[flag] as string | undefined, fallback))
  const small = int('clients', quick ? 200 : 1000)
  const large = int('clients', quick ? 500 : 5000)
  const size = int('size', 256)
  const lanes = int('lanes', 16)
  const deliveriesPerSecond = positive('rate', values.rate, 50_000)
  const groups = int('filters', 10)
  const rateMs = positive('duration', values.duration, quick ? 1 : 10) * 1000
  const loadMs = positive('duration', values.duration, quick ? 1.5 : 5) * 1000
  // Always in the canonical order, ours first, whatever order --targets names them in.
  const chosenTargets = list('targets', values.targets, FANOUT_TARGETS)
  const builds = otherBuilds(values['compare-dist'])
  // They are compared with ours, round by round: without it they would be measured for nothing.
  if (builds.length > 0 && chosenTargets !== undefined && !chosenTargets.includes('ours')) {
    throw new Error('--compare-dist runs other builds beside ours: keep ours in --targets')
  }
  // The other builds of ours go right after it, wherever it runs.
  const withBuilds = (names: Target[]): Target[] =>
    names.flatMap((target) => target === 'ours' ? [target, ...builds.map((build) => build.target)] : [target])
  const targets = withBuilds(FANOUT_TARGETS.filter((target) => chosenTargets?.includes(target) ?? true))

  const burst = (name: string, clients: number, instances: number, messages: number): Scenario => ({
    name,
    kind: 'fanout',
    description: `${instances === 1 ? '' : `${instances} instances sharing one Redis, clients split evenly, publishes spread over both; `}` +
      `${clients.toLocaleString('en-US')} clients, ${messages.toLocaleString('en-US')} messages of ${size} B sent at full speed (${lanes} lanes)`,
    targets,
    clients,
    instances,
    mode: 'burst',
    messages,
    size,
    lanes,
    rate: 0,
    durationMs: 0,
    batch: 1,
    groups: 0
  })
  const fixedRate = (name: string, clients: number): Scenario => {
    const rate = deliveriesPerSecond / clients
    const messages = Math.max(1, Math.round(rate * rateMs / 1000))
    return {
      name,
      kind: 'fanout',
      description: `${clients.toLocaleString('en-US')} clients, ${rate.toLocaleString('en-US', { maximumFractionDigits: 1 })} messages/s ` +
        `of ${size} B (${deliveriesPerSecond.toLocaleString('en-US')} deliveries/s) for ${rateMs / 1000} s`,
      targets,
      clients,
      instances: 1,
      mode: 'rate',
      messages,
      size,
      lanes: 4,
      rate,
      durationMs: rateMs,
      batch: 1,
      groups: 0
    }
  }
  // As rate-5k, each client getting as many messages per second, out of `groups` times as many published.
  const filteredRate = (name: string, clients: number): Scenario => {
    const plain = fixedRate(name, clients)
    return {
      ...plain,
      description: `${clients.toLocaleString('en-US')} clients on one channel, ${groups} distinct filters (one per client, in turn); ` +
        `${(plain.rate * groups).toLocaleString('en-US', { maximumFractionDigits: 1 })} messages/s of ${size} B, each tagged for one filter ` +
        `(${deliveriesPerSecond.toLocaleString('en-US')} deliveries/s, as in rate-5k) for ${rateMs / 1000} s`,
      targets: withBuilds(['ours']),
      rate: plain.rate * groups,
      messages: plain.messages * groups,
      groups
    }
  }
  const idleClients = int('idle-clients', quick ? 1000 : 10_000)
  const concurrency = int('concurrency', 64)
  const batch = int('batch', 200)
  const batchLanes = 4
  const burst5k = burst('burst-5k', large, 1, int('messages', quick ? 100 : 200))
  // Each client is due as many messages as in burst-5k, out of `groups` times as many published.
  const filteredMessages = burst5k.messages * groups
  const all: Scenario[] = [
    burst('burst-1k', small, 1, int('messages', quick ? 200 : 1000)),
    burst5k,
    {
      ...burst5k,
      name: 'burst-5k-filtered',
      description: `${large.toLocaleString('en-US')} clients on one channel, ${groups} distinct filters (one per client, in turn); ` +
        `${filteredMessages.toLocaleString('en-US')} messages of ${size} B, each tagged for one filter, sent at full speed (${lanes} lanes): ` +
        `each client is due ${burst5k.messages.toLocaleString('en-US')}, as in burst-5k`,
      targets: withBuilds(['ours']),
      messages: filteredMessages,
      groups
    },
    fixedRate('rate-1k', small),
    fixedRate('rate-5k', large),
    filteredRate('rate-5k-filtered', large),
    burst('two-instances', large, 2, int('messages', quick ? 100 : 200)),
    {
      name: 'idle-10k',
      kind: 'idle',
      description: `${idleClients.toLocaleString('en-US')} idle connections, subscribed to one channel: RSS before and after, per connection`,
      targets,
      clients: idleClients,
      instances: 1,
      mode: 'burst',
      messages: 0,
      size,
      lanes: 1,
      rate: 0,
      durationMs: 0,
      batch: 1,
      groups: 0
    },
    {
      name: 'publish-http',
      kind: 'publish',
      description: `POST /publish alone: ${concurrency} concurrent requests over keep-alive for ${loadMs / 1000} s, ${size} B data, no subscribers`,
      targets: withBuilds(['ours', 'bare-fastify']),
      clients: 0,
      instances: 1,
      mode: 'load',
      messages: 0,
      size,
      lanes: concurrency,
      rate: 0,
      durationMs: loadMs,
      batch: 1,
      groups: 0
    },
    {
      name: 'publish-batch',
      kind: 'publish',
      description: `POST /publish with batches of ${batch} messages of ${size} B data, ${batchLanes} requests in flight, for ` +
        `${loadMs / 1000} s, no subscribers; figures count messages, not requests`,
      targets: withBuilds(['ours']),
      clients: 0,
      instances: 1,
      mode: 'load',
      messages: 0,
      size,
      lanes: batchLanes,
      rate: 0,
      durationMs: loadMs,
      batch,
      groups: 0
    }
  ]
  const chosen = list('scenario', values.scenario, SCENARIO_NAMES)
  return {
    quick,
    rounds: int('rounds', quick ? 1 : 2),
    clientsPerProcess: int('clients-per-process', 2500),
    perSourceAddress: int('per-source-address', 0),
    output: values.output ?? 'bench-results.json',
    scenarios: chosen === undefined ? all : all.filter((scenario) => chosen.includes(scenario.name)),
    serviceEnv: serviceEnv(values['service-env']),
    builds
  }
}
