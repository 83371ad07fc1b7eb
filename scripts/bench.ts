// `npm run bench`: the fan-out benchmark. Starts a private redis-server, then for every scenario and
// round runs our service (and other builds of it, --compare-dist) and each baseline in turn
// (A B C D A B C D …), each server and each load generator a process of its own, and prints a
// Markdown table; JSON results go to a file.
// scripts/README.md and BENCHMARKS.md describe it.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Progress } from './bench/progress.js'
import { ephemeralPorts, machineInfo, openFileLimit } from './bench/proc.js'
import { installCleanup } from './bench/processes.js'
import { startRedis, redisVersion } from './bench/redis.js'
import { problemsReport, markdownReport } from './bench/report.js'
import type { RunResult } from './bench/results.js'
import { runFanout, runIdle, runPublish, type RunEnvironment } from './bench/run.js'
import { parseSettings, USAGE, type Scenario, type Settings } from './bench/scenarios.js'
import { buildProblem, isOurs, targetInfo, TARGETS, type Target } from './bench/servers.js'
import { settingsOrExitCode } from './bench/cli.js'

const rootDir = fileURLToPath(new URL('../../', import.meta.url))

function versionOf (name: string, root = rootDir): string {
  try {
    return (JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

/** The installed version of every runtime dependency of the service in `root`. */
function servicePackages (root: string): Record<string, string> {
  let dependencies: Record<string, string> = {}
  try {
    dependencies = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {}
  } catch {}
  return Object.fromEntries(Object.keys(dependencies).sort().map((name) => [name, versionOf(name, root)]))
}

/** Refuses to start what the machine cannot hold, with the way out. */
function preflight (settings: Settings): void {
  if (!existsSync('/proc/self/stat')) throw new Error('the benchmark reads /proc: it runs on Linux only')
  if (!existsSync(`${rootDir}dist/app.js`)) throw new Error('dist/app.js is missing: run `npm run build` first (`npm run bench` does)')
  for (const build of settings.builds) {
    const problem = buildProblem(build)
    if (problem !== undefined) throw new Error(problem)
  }
  redisVersion()
  const limit = openFileLimit()
  let needed = 0
  let connections = 0
  for (const scenario of settings.scenarios) {
    const perServer = Math.ceil(scenario.clients / scenario.instances)
    const perClientProcess = Math.min(scenario.clients, settings.clientsPerProcess)
    needed = Math.max(needed, perServer + 128, perClientProcess + 128)
    connections = Math.max(connections, scenario.clients)
  }
  if (needed > limit.soft) {
    const raise = Math.max(needed, 16384)
    throw new Error(
      `the open-file limit (ulimit -n) is ${limit.soft}, but these scenarios need ${needed} per process ` +
      '(a server holds one descriptor per connection).\n' +
      (limit.hard >= raise
        ? `Raise it in this shell and run again: ulimit -n ${raise}`
        : `The hard limit is ${limit.hard}: raise both as root (ulimit -Hn ${raise}; ulimit -n ${raise}, or /etc/security/limits.conf)`) +
      ', or pass smaller --clients / --idle-clients.'
    )
  }
}

/** Clients per loopback source address: as set, or the local port range less some room for everything else. */
function perSourceAddress (settings: Settings): number {
  if (settings.perSourceAddress > 0) return settings.perSourceAddress
  return Math.max(1000, ephemeralPorts() - 1000)
}

interface PlannedRun {
  scenario: Scenario
  target: Target
  round: number
}

/**
 * Every round runs every scenario, and in it every server once, ours first: A B C D, A B C D …
 * Rounds are the outer loop, so scenarios compared with each other (burst-5k-filtered with
 * burst-5k) take turns too, and a slow spell of the machine falls on both. Other builds of ours
 * (--compare-dist) take turns with it at going first (A A' C D, A' A C D …): a run can gain or
 * lose from its place in the round (what ran just before it, Redis's state), and a comparison of
 * two builds to within a few percent must not lean on that.
 */
function plan (settings: Settings): PlannedRun[] {
  const runs: PlannedRun[] = []
  for (let round = 1; round <= settings.rounds; round++) {
    for (const scenario of settings.scenarios) {
      const ours = scenario.targets.filter(isOurs)
      const others = scenario.targets.filter((target) => !isOurs(target))
      const first = ours.length === 0 ? 0 : (round - 1) % ours.length
      for (const target of [...ours.slice(first), ...ours.slice(0, first), ...others]) runs.push({ scenario, target, round })
    }
  }
  return runs
}

function summaryLine (run: RunResult): string {
  const head = `${run.scenario} · ${targetInfo(run.target).label} · round ${run.round}:`
  switch (run.kind) {
    case 'fanout':
      return `${head} ${Math.round(run.deliveriesPerSecond).toLocaleString('en-US')} deliveries/s, p99 ${run.latencyMs.p99.toFixed(1)} ms, ` +
        `publish p99 ${run.publishLatencyMs.p99.toFixed(1)} ms, ` +
        `CPU ${(run.cpuPerMillion.user + run.cpuPerMillion.system).toFixed(2)} s/1M, lost ${run.lost}, dup ${run.duplicates}, ` +
        `${run.loopDelayMs === undefined ? '' : `loop delay p99 ${run.loopDelayMs.p99.toFixed(1)} ms, `}saturated ${run.saturated}`
    case 'idle':
      return `${head} ${(run.bytesPerConnection / 1024).toFixed(1)} KiB per connection, ${Math.round(run.connectionsPerSecond)} connects/s`
    case 'publish':
      return `${head} ${Math.round(run.requestsPerSecond).toLocaleString('en-US')} requests/s, p99 ${run.latencyMs.p99.toFixed(1)} ms, ` +
        `Redis ${run.redisUsPerMessage.toFixed(1)} µs/message (CPU ${run.redisCpuUsPerMessage.toFixed(1)}), cores: server ${run.utilisation.server.toFixed(2)}, ` +
        `load generator ${run.utilisation.publisher.toFixed(2)}, saturated ${run.saturated}`
    case 'failed':
      return `${head} FAILED: ${run.error}`
  }
}

async function main (): Promise<number> {
  const settings = settingsOrExitCode(parseSettings, USAGE)
  if (typeof settings === 'number') return settings
  try {
    preflight(settings)
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`)
    return 2
  }
  const planned = plan(settings)
  // A long plan (many rounds, other builds of ours) gets 40 s per run rather than being cut off.
  installCleanup(settings.quick ? 5 * 60_000 : Math.max(45 * 60_000, planned.length * 40_000))
  const machine = machineInfo()
  const progress = new Progress(planned.length)
  progress.log(`bench: ${planned.length} runs on ${machine.cores} cores (${machine.cpuModel}), node ${machine.node}` +
    `${machine.cores <= 2 ? ' — the load generators share these cores with the server under test' : ''}`)
  // The builds are meant to differ in their code only: other packages would be measured too.
  const packages = servicePackages(rootDir)
  const builds = settings.builds.map((build) => ({ ...targetInfo(build.target), root: build.root, packages: servicePackages(build.root) }))
  for (const build of builds) {
    const differ = Object.keys({ ...packages, ...build.packages }).filter((name) => packages[name] !== build.packages[name])
    if (differ.length > 0) {
      progress.log(`bench: ⚠ ${build.label} (${build.root}) has other packages than ours: ` +
        differ.map((name) => `${name} ${build.packages[name] ?? 'none'} vs ${packages[name] ?? 'none'}`).join(', '))
    }
  }
  const startedAt = new Date()
  const redis = await startRedis()
  const runs: RunResult[] = []
  try {
    const env: RunEnvironment = {
      redisUrl: redis.url,
      redisPid: redis.pid,
      clientsPerProcess: settings.clientsPerProcess,
      perSourceAddress: perSourceAddress(settings),
      serviceEnv: settings.serviceEnv,
      builds: settings.builds,
      cores: machine.cores,
      progress,
      settle: settings.quick
        ? { beforeLoadMs: 200, idleBeforeMs: 500, idleAfterMs: 1000 }
        : { beforeLoadMs: 500, idleBeforeMs: 1000, idleAfterMs: 2000 }
    }
    for (const [index, { scenario, target, round }] of planned.entries()) {
      progress.run(index + 1, `${scenario.name} · ${targetInfo(target).label} · round ${round}/${settings.rounds}`)
      let result: RunResult
      try {
        if (scenario.kind === 'fanout') result = await runFanout(scenario, target, round, env)
        else if (scenario.kind === 'idle') result = await runIdle(scenario, target, round, env)
        else result = await runPublish(scenario, target, round, env)
      } catch (err) {
        result = { kind: 'failed', scenario: scenario.name, target, round, error: (err as Error).message }
      }
      runs.push(result)
      progress.log(summaryLine(result))
    }
  } finally {
    await redis.stop()
  }

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: `node dist/scripts/bench.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: {
      ...machine,
      redis: redis.version,
      packages: Object.fromEntries(['fastify', 'ws', 'ioredis', 'socket.io', 'socket.io-client', '@socket.io/redis-adapter']
        .map((name) => [name, versionOf(name)]))
    },
    settings: { quick: settings.quick, rounds: settings.rounds, clientsPerProcess: settings.clientsPerProcess, serviceEnv: settings.serviceEnv },
    scenarios: settings.scenarios,
    targets: settings.builds.length === 0
      ? TARGETS
      : { ...TARGETS, ours: { ...TARGETS.ours, root: rootDir, packages }, ...Object.fromEntries(builds.map((build) => [build.label, build])) },
    runs
  }
  writeFileSync(settings.output, `${JSON.stringify(results, null, 2)}\n`)
  progress.log(`bench: done in ${Math.round(progress.elapsedMs() / 1000)} s; JSON results in ${settings.output}`)
  process.stdout.write(`${markdownReport(settings.scenarios, runs, machine.cores)}\n`)

  const problems = problemsReport(runs)
  if (problems.length > 0) {
    process.stderr.write(`\n${'!'.repeat(72)}\nBENCHMARK PROBLEMS (exit code 1):\n${problems.map((p) => `  ${p}`).join('\n')}\n${'!'.repeat(72)}\n`)
    return 1
  }
  return 0
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
