import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { freePort, killRedisServer, spawnRedisServer } from './redis-server.js'

/** A master, its replica and three sentinels, all private redis-server processes on free ports. */
export interface SentinelTopology {
  readonly masterName: string
  readonly master: number
  readonly replica: number
  readonly sentinels: number[]
  /** SIGKILL of the first master's process. */
  killMaster (): Promise<void>
  /** SIGKILL of the process of the server the sentinels name as master now. */
  killCurrentMaster (): Promise<void>
  /** Starts the killed servers again and waits until the sentinels have made them replicas. */
  restore (): Promise<void>
  /** The port of the server the sentinels name as master now. */
  currentMaster (): Promise<number>
  /** Resolves once the sentinels name a master other than `port`: their part of a failover is done. */
  waitForPromotion (port: number, timeoutMs: number): Promise<void>
  stop (): Promise<void>
}

const MASTER_NAME = 'frb'
/** How long a master may stay silent before a sentinel takes it for down. */
export const DOWN_AFTER_MS = 1000

export async function startSentinelTopology (): Promise<SentinelTopology> {
  const dir = mkdtempSync(join(tmpdir(), 'frb-sentinel-'))
  const processes = new Map<number, ChildProcess>()
  // Resolves once the server answers PING; rejects at once when redis-server is missing or exits.
  const server = async (port: number, args: string[], configFile?: string): Promise<void> => {
    processes.set(port, await spawnRedisServer(port, args, configFile))
  }
  const master = await freePort()
  const replica = await freePort()
  const base: string[] = ['--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--dir', dir]
  const killed = new Set<number>()
  const sentinels: number[] = []
  const stopOne = async (port: number): Promise<void> => {
    const child = processes.get(port)
    processes.delete(port)
    await killRedisServer(child)
  }
  const stop = async (): Promise<void> => {
    for (const port of [...processes.keys()]) await stopOne(port)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await server(master, base)
    await server(replica, [...base, '--replicaof', '127.0.0.1', String(master)])
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const file = join(dir, `sentinel-${port}.conf`)
      // Sentinel rewrites its file as it learns the topology: one writable file each.
      writeFileSync(file, [
        `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'loglevel warning',
        `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master} 2`,
        `sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS}`,
        `sentinel failover-timeout ${MASTER_NAME} 5000`,
        `sentinel parallel-syncs ${MASTER_NAME} 1`
      ].join('\n') + '\n')
      await server(port, ['--sentinel'], file)
      sentinels.push(port)
    }
  } catch (err) {
    await stop()
    throw err
  }
  const ask = async (port: number, ...command: string[]): Promise<unknown> => {
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    client.on('error', () => {})
    try {
      await client.connect()
      return await client.call(command[0] as string, ...command.slice(1))
    } finally {
      client.disconnect()
    }
  }
  // Ready when every sentinel knows the replica and the two other sentinels.
  const deadline = Date.now() + 30_000
  for (;;) {
    const known = await Promise.all(sentinels.map(async (port) => {
      try {
        const replicas = await ask(port, 'SENTINEL', 'REPLICAS', MASTER_NAME) as unknown[]
        const peers = await ask(port, 'SENTINEL', 'SENTINELS', MASTER_NAME) as unknown[]
        return replicas.length === 1 && peers.length === 2
      } catch {
        return false
      }
    }))
    if (known.every(Boolean)) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error('the sentinels did not learn the topology within 30 s')
    }
    await sleep(200)
  }
  async function currentMaster (): Promise<number> {
    const [, port] = await ask(sentinels[0] as number, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME) as [string, string]
    return Number(port)
  }

  return {
    masterName: MASTER_NAME,
    master,
    replica,
    sentinels,
    async killMaster () {
      killed.add(master)
      await stopOne(master)
    },
    async killCurrentMaster () {
      const port = await currentMaster()
      killed.add(port)
      await stopOne(port)
    },
    async restore () {
      for (const port of killed) await server(port, base)
      const ports = [...killed]
      killed.clear()
      // A server that comes back is told by the sentinels to follow the new master.
      const until = Date.now() + 30_000
      for (;;) {
        const replicas = await ask(sentinels[0] as number, 'SENTINEL', 'REPLICAS', MASTER_NAME).catch(() => []) as string[][]
        const healthy = replicas.filter((fields) => {
          const info = Object.fromEntries(fields.flatMap((value, i) => i % 2 === 0 ? [[value, fields[i + 1]]] : []))
          return ports.includes(Number(info.port)) && info['master-link-status'] === 'ok' && !String(info.flags).includes('down')
        })
        if (healthy.length === ports.length) return
        if (Date.now() > until) throw new Error(`the restarted servers ${ports.join(', ')} did not become healthy replicas within 30 s`)
        await sleep(200)
      }
    },
    currentMaster,
    async waitForPromotion (port, timeoutMs) {
      const until = Date.now() + timeoutMs
      while (await currentMaster() === port) {
        if (Date.now() > until) throw new Error(`the sentinels did not promote a replica of ${port} within ${timeoutMs} ms`)
        await sleep(50)
      }
    },
    stop
  }
}
