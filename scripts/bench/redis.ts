// A private redis-server for the benchmark: its own free port on 127.0.0.1, no persistence,
// never the system's Redis on 6379. Stopped by pid at the end.
import { spawn, execFileSync } from 'node:child_process'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { Redis } from 'ioredis'
import { freePort, hasExited, sleep, stop, track } from './processes.js'

export interface RedisHandle {
  url: string
  pid: number
  version: string
  stop: () => Promise<void>
}

export function redisVersion (): string {
  try {
    const text = execFileSync('redis-server', ['--version'], { encoding: 'utf8' })
    return /v=(\S+)/.exec(text)?.[1] ?? text.trim()
  } catch {
    throw new Error('redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server)')
  }
}

async function ping (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let reply = ''
    socket.setTimeout(500, () => { socket.destroy(); resolve(false) })
    socket.on('error', () => resolve(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1')
      if (reply.includes('\r\n')) { socket.destroy(); resolve(reply.startsWith('+PONG')) }
    })
  })
}

export async function startRedis (): Promise<RedisHandle> {
  const version = redisVersion()
  const port = await freePort()
  const child = spawn('redis-server', [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', tmpdir(),
    '--loglevel', 'warning'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  const { tail } = track(child, 'redis-server')
  const deadline = Date.now() + 10_000
  while (!(await ping(port))) {
    if (hasExited(child) || Date.now() > deadline) {
      await stop(child)
      throw new Error(`redis-server did not start on port ${port}:\n${tail()}`)
    }
    await sleep(50)
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid as number,
    version,
    stop: async () => { await stop(child) }
  }
}

/**
 * Redis's own time for the commands it ran since `reset()`, from INFO commandstats: the cost of the
 * publish path on the Redis side (a script's start-up included), whatever the client measures.
 */
export class CommandTime {
  private readonly client: Redis
  constructor (url: string) {
    this.client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  }

  async reset (): Promise<void> {
    await this.client.call('CONFIG', 'RESETSTAT')
  }

  /** Microseconds Redis spent on each command since the reset, by command name. */
  async read (): Promise<Record<string, { calls: number, usec: number }>> {
    const text = await this.client.call('INFO', 'commandstats') as string
    const stats: Record<string, { calls: number, usec: number }> = {}
    for (const match of text.matchAll(/^cmdstat_(\S+?):calls=(\d+),usec=(\d+),/gm)) {
      stats[match[1] as string] = { calls: Number(match[2]), usec: Number(match[3]) }
    }
    return stats
  }

  async close (): Promise<void> {
    this.client.disconnect()
  }
}

/**
 * The time of the commands the service sent, from `CommandTime.read()`: with scripts in the run,
 * their EVALSHA (or EVAL) lines alone, as the commands a script runs are counted in their own lines
 * as well.
 */
export function topLevelUsec (commands: Record<string, { calls: number, usec: number }>): number {
  const scripts = ['evalsha', 'eval'].filter((name) => commands[name] !== undefined)
  const counted = scripts.length > 0 ? scripts : Object.keys(commands)
  return counted.reduce((sum, name) => sum + (commands[name]?.usec ?? 0), 0)
}
