// Starts a server under test as a process of its own, the way its users run it, and stops it.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { get } from 'node:http'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CHANNEL, type ClientKind } from './protocol.js'
import { freePort, hasExited, sleep, stop, track } from './processes.js'

export type NamedTarget = 'ours' | 'textbook' | 'frame-once' | 'socketio' | 'bare-fastify'
/** Our service from another build (--compare-dist), run beside `ours` to compare two versions of it. */
export type OtherBuild = `ours@${string}`
export type Target = NamedTarget | OtherBuild

/** Another build of our service: a project root with its own dist/app.js and node_modules. */
export interface ServiceBuild {
  target: OtherBuild
  root: string
}

export interface TargetInfo {
  label: string
  clientKind: ClientKind
  description: string
}

export const TARGETS: Record<NamedTarget, TargetInfo> = {
  ours: {
    label: 'ours',
    clientKind: 'ws',
    description: 'this service: `fastify start dist/app.js` with REDIS_URL'
  },
  textbook: {
    label: 'textbook',
    clientKind: 'ws',
    description: 'ws + ioredis; per Redis message JSON.parse + JSON.stringify once, ws.send() per client'
  },
  'frame-once': {
    label: 'frame-once',
    clientKind: 'ws',
    description: 'ws + ioredis; each message framed once (ws Sender.frame) and the bytes written to every raw socket'
  },
  socketio: {
    label: 'socket.io',
    clientKind: 'socketio',
    description: 'Socket.IO 4 + @socket.io/redis-adapter (websocket transport only), socket.io-client load'
  },
  'bare-fastify': {
    label: 'bare Fastify',
    clientKind: 'ws',
    description: '`fastify start` of a bare POST /publish with the same body schema, answering 202 without Redis'
  }
}

export function isOtherBuild (target: Target): target is OtherBuild {
  return target.startsWith('ours@')
}

/** Our service, from this checkout or another build: the targets --service-env applies to. */
export function isOurs (target: Target): boolean {
  return target === 'ours' || isOtherBuild(target)
}

export function targetInfo (target: Target): TargetInfo {
  if (!isOtherBuild(target)) return TARGETS[target]
  return { label: target, clientKind: 'ws', description: 'this service from another build (--compare-dist): `fastify start dist/app.js` in its root' }
}

/** dist/ of this checkout, from dist/scripts/bench/servers.js. */
const distDir = fileURLToPath(new URL('../../', import.meta.url))
const rootDir = fileURLToPath(new URL('../../../', import.meta.url))
const fastifyCli = createRequire(import.meta.url).resolve('fastify-cli/cli.js')

/** The variables README.md's table lists: a stray one in the caller's shell must not change the run. */
const SERVICE_VARIABLES = [
  'REDIS_URL', 'PUBLISH_KEY', 'INSECURE_PUBLISH', 'JWT_SECRET', 'JWT_PUBLIC_KEY', 'JWT_AUDIENCE', 'ALLOWED_ORIGINS',
  'REQUIRE_ORIGIN', 'MAX_PAYLOAD', 'MAX_CHANNELS_PER_CONNECTION', 'MAX_CONNECTIONS', 'MAX_CONNECTIONS_PER_IP',
  'CLIENT_FRAME_RATE', 'CLIENT_FRAME_BURST', 'UPGRADE_RATE_LIMIT', 'PUBLISH_RATE_LIMIT', 'PORT', 'FASTIFY_ADDRESS',
  'FASTIFY_LOG_LEVEL', 'FASTIFY_PORT', 'PUBLISH_BODY_LIMIT', 'MAX_BATCH_SIZE', 'MAX_MESSAGE_BYTES', 'PUBLISH_TIMEOUT',
  'SLOW_CONSUMER_BYTES', 'SLOW_CONSUMER_TIMEOUT', 'HEARTBEAT_INTERVAL', 'HEARTBEAT_TIMEOUT', 'PROBE_INTERVAL', 'PROBE_TIMEOUT',
  'CLOSE_TIMEOUT', 'CLIENT_BYTE_RATE', 'HISTORY_SIZE', 'HISTORY_TTL', 'MAX_REPLAY', 'IDEMPOTENCY_WINDOW', 'PRESENCE_CHANNELS',
  'PRESENCE_EVENTS', 'PRESENCE_TTL'
]

export interface ServerHandle {
  target: Target
  pid: number
  port: number
  /** Where the load clients connect (a ws:// URL, or the http:// origin for Socket.IO). */
  connectUrl: string
  publishUrl: string
  stop: () => Promise<void>
  /**
   * Our service's event-loop delay since the last call (prom-client's histogram, reset by each
   * scrape of /metrics): p99 and max in milliseconds; undefined for the baselines.
   */
  loopDelay: () => Promise<LoopDelay | undefined>
}

export interface LoopDelay {
  p99Ms: number
  maxMs: number
}

/** prom-client samples the loop every 10 ms, and a sample is the time between two ticks. */
const LAG_SAMPLING_MS = 10

/** The event-loop delay figures of a Prometheus text exposition: how late the loop ran, beyond the sampling interval. */
export function loopDelayOf (exposition: string): LoopDelay | undefined {
  const seconds = (name: string): number => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(exposition)?.[1] ?? NaN)
  const late = (name: string): number => Math.max(0, seconds(name) * 1000 - LAG_SAMPLING_MS)
  const p99Ms = late('nodejs_eventloop_lag_p99_seconds')
  const maxMs = late('nodejs_eventloop_lag_max_seconds')
  return Number.isFinite(p99Ms) && Number.isFinite(maxMs) ? { p99Ms, maxMs } : undefined
}

async function scrape (url: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const request = get(url, { timeout: 5000 }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { text += chunk })
      response.on('end', () => { resolve(response.statusCode === 200 ? text : '') })
    })
    request.on('error', reject)
    request.on('timeout', () => { request.destroy(new Error(`no answer from ${url} in 5 s`)) })
  })
}

/** The fastify-cli a build of ours would be started with: its own, from its node_modules. */
function fastifyCliOf (root: string): string {
  return createRequire(join(root, 'package.json')).resolve('fastify-cli/cli.js')
}

/** Why another build cannot run, if it cannot: checked before the first run rather than in the middle. */
export function buildProblem (build: ServiceBuild): string | undefined {
  if (!existsSync(join(build.root, 'dist', 'app.js'))) {
    return `${build.target}: ${build.root}/dist/app.js is missing: run \`npm ci && npm run build\` there first`
  }
  try {
    fastifyCliOf(build.root)
  } catch {
    return `${build.target}: fastify-cli is not installed under ${build.root}: run \`npm ci\` there first`
  }
  return undefined
}

function command (target: Target, port: number, builds: ServiceBuild[]): { cwd: string, args: string[] } {
  // fastify-cli's own bin, as `fastify start` runs it; -l warn keeps the logs quiet.
  const cli = (bin: string, app: string): string[] => [bin, 'start', '-l', 'warn', '-a', '127.0.0.1', '-p', String(port), app]
  if (isOtherBuild(target)) {
    const build = builds.find((candidate) => candidate.target === target)
    if (build === undefined) throw new Error(`${target}: no such build (--compare-dist)`)
    // From its own root, with its own fastify-cli and node_modules, as if it were deployed there.
    return { cwd: build.root, args: cli(fastifyCliOf(build.root), join(build.root, 'dist', 'app.js')) }
  }
  const here = (args: string[]): { cwd: string, args: string[] } => ({ cwd: rootDir, args })
  switch (target) {
    case 'ours': return here(cli(fastifyCli, `${distDir}app.js`))
    case 'bare-fastify': return here(cli(fastifyCli, `${distDir}scripts/bench/baselines/bare-fastify.js`))
    case 'textbook': return here([`${distDir}scripts/bench/baselines/textbook.js`])
    case 'frame-once': return here([`${distDir}scripts/bench/baselines/frame-once.js`])
    case 'socketio': return here([`${distDir}scripts/bench/baselines/socketio.js`])
  }
}

async function healthy (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const request = get({ host: '127.0.0.1', port, path: '/health', timeout: 1000 }, (response) => {
      response.resume()
      resolve(response.statusCode === 200)
    })
    request.on('error', () => resolve(false))
    request.on('timeout', () => { request.destroy(); resolve(false) })
  })
}

/**
 * `serviceEnv` is applied to our service only (every build of it): the baselines have no such
 * settings. `builds` says where the other builds of ours are.
 */
export async function startServer (
  target: Target, redisUrl: string, serviceEnv: Record<string, string> = {}, builds: ServiceBuild[] = []
): Promise<ServerHandle> {
  const port = await freePort()
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of SERVICE_VARIABLES) delete env[name]
  // Batches of a few hundred messages need more than the default 64 KiB body.
  Object.assign(env, { REDIS_URL: redisUrl, PORT: String(port), FASTIFY_LOG_LEVEL: 'warn', PUBLISH_BODY_LIMIT: String(4 * 2 ** 20) })
  if (isOurs(target)) Object.assign(env, serviceEnv)
  const { cwd, args } = command(target, port, builds)
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const { tail } = track(child, target)
  const deadline = Date.now() + 20_000
  while (!(await healthy(port))) {
    if (hasExited(child) || Date.now() > deadline) {
      await stop(child)
      throw new Error(`${target} did not become healthy on port ${port}:\n${tail()}`)
    }
    await sleep(100)
  }
  const origin = `http://127.0.0.1:${port}`
  return {
    target,
    pid: child.pid as number,
    port,
    connectUrl: targetInfo(target).clientKind === 'socketio' ? origin : `ws://127.0.0.1:${port}/ws?channels=${CHANNEL}`,
    publishUrl: `${origin}/publish`,
    stop: async () => { await stop(child) },
    loopDelay: async () => isOurs(target) ? loopDelayOf(await scrape(`${origin}/metrics`)) : undefined
  }
}
