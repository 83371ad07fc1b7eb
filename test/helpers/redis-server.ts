import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'

/** A private redis-server on a free port, owned by one test file, which may kill and restart it. */
export interface RedisServer {
  readonly port: number
  readonly url: string
  /** A fresh client to this server (closed by `stop()`). */
  client (): Redis
  kill (): Promise<void>
  start (): Promise<void>
  stop (): Promise<void>
}

export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** How long `spawnRedisServer` waits for the first PING answer. */
const PING_TIMEOUT_MS = 10_000

/**
 * Spawns `redis-server [configFile] --port <port> --bind 127.0.0.1 ...args` and resolves with its process
 * once it answers PING. Rejects at once, with a message saying how to install it, when redis-server is not
 * on PATH; at once, with its exit code and last output, when it exits before answering (a port taken, a bad
 * argument); and after 10 s without an answer. It kills the process before rejecting: on rejection nothing
 * is left running. On success the caller owns the process and must kill it.
 */
export async function spawnRedisServer (port: number, args: string[] = [], configFile?: string): Promise<ChildProcess> {
  const argv = [...(configFile === undefined ? [] : [configFile]), '--port', String(port), '--bind', '127.0.0.1', ...args]
  // Its output is read (never left to fill the pipe) and the tail kept, to say why it exited.
  const proc = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-2000) }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  // A fork of the server (an RDB for a replica) inherits the pipes and may outlive it: closed on our
  // side when the server exits, they cannot keep this process alive after its tests.
  proc.once('exit', () => {
    proc.stdout?.destroy()
    proc.stderr?.destroy()
  })
  let settled = false
  const failed = new Promise<never>((resolve, reject) => {
    proc.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT'
        ? new Error('redis-server was not found on PATH. The tests need a real Redis 7 or newer: ' +
          'install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS).')
        : err)
    })
    proc.once('exit', (code, signal) => {
      const how = code === null ? `was killed by ${signal}` : `exited with code ${code}`
      const tail = output.trim() === '' ? '' : `:\n${output.trim()}`
      reject(new Error(`redis-server on port ${port} ${how} before accepting connections${tail}`))
    })
  })
  failed.catch(() => {})
  try {
    await Promise.race([failed, waitForPing(port, proc.pid, () => settled)])
    return proc
  } catch (err) {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) proc.kill('SIGKILL')
    throw err
  } finally {
    settled = true
  }
}

/** SIGKILLs a server this process started, if it still runs, and waits for it to exit. */
export async function killRedisServer (child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

export async function startRedis (): Promise<RedisServer> {
  const port = await freePort()
  const clients: Redis[] = []
  let child: ChildProcess | undefined

  async function start (): Promise<void> {
    child = await spawnRedisServer(port, ['--save', '', '--appendonly', 'no', '--loglevel', 'warning'])
  }

  async function kill (): Promise<void> {
    const proc = child
    child = undefined
    await killRedisServer(proc)
  }

  await start()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    client () {
      const client = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 })
      client.on('error', () => {})
      clients.push(client)
      return client
    },
    kill,
    start,
    async stop () {
      for (const client of clients) client.disconnect()
      await kill()
    }
  }
}

/**
 * Resolves once the server on `port` answers PING and is the process `pid` (not another server that held
 * the port first); gives up when `abandoned()` turns true.
 */
async function waitForPing (port: number, pid: number | undefined, abandoned: () => boolean): Promise<void> {
  const deadline = Date.now() + PING_TIMEOUT_MS
  let other = ''
  while (Date.now() < deadline && !abandoned()) {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 1000 })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      const server = await probe.info('server')
      if (pid === undefined || server.includes(`process_id:${pid}\r\n`)) return
      other = ` (it was answered by process ${/process_id:(\d+)/.exec(server)?.[1]}, not the spawned ${pid})`
      await sleep(25)
    } catch {
      await sleep(25)
    } finally {
      probe.disconnect()
    }
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${PING_TIMEOUT_MS / 1000} s${other}`)
}
