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

export async function startRedis (): Promise<RedisServer> {
  const port = await freePort()
  const clients: Redis[] = []
  let child: ChildProcess | undefined

  async function start (): Promise<void> {
    const proc = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'
    ], { stdio: 'ignore' })
    child = proc
    const failed = new Promise<never>((resolve, reject) => {
      proc.once('error', (err: NodeJS.ErrnoException) => {
        reject(err.code === 'ENOENT'
          ? new Error('redis-server was not found on PATH. The tests need a real Redis 6 or newer: ' +
            'install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS).')
          : err)
      })
      proc.once('exit', (code) => reject(new Error(`redis-server exited with code ${code} before accepting connections`)))
    })
    await Promise.race([failed, waitForPing(port)])
    failed.catch(() => {})
  }

  async function kill (): Promise<void> {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
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

async function waitForPing (port: number): Promise<void> {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      return
    } catch {
      await sleep(25)
    } finally {
      probe.disconnect()
    }
  }
  throw new Error(`redis-server on port ${port} did not answer PING within 10 s`)
}
