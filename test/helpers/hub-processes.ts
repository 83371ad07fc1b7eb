import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, connect, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { freePort } from './redis-server.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** The built service in a child process on a fixed port, which a test may kill (SIGKILL) and start again on that port. */
export interface HubProcess {
  readonly port: number
  readonly url: string
  kill (): Promise<void>
  start (): Promise<void>
}

export async function startHubProcess (t: Test, env: Record<string, string>): Promise<HubProcess> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let child: ChildProcess | undefined

  async function kill (): Promise<void> {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
  }

  async function start (): Promise<void> {
    const childEnv: Record<string, string | undefined> = { ...process.env, ...env, FASTIFY_ADDRESS: '127.0.0.1', PORT: String(port) }
    // The child runs compiled JavaScript; its coverage is not this suite's.
    delete childEnv.NODE_V8_COVERAGE
    const proc = spawn(process.execPath, [`${root}node_modules/fastify-cli/cli.js`, 'start', '--options', '-l', 'warn', 'dist/app.js'], {
      cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe']
    })
    child = proc
    let output = ''
    proc.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    proc.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    // Generous: three services start at once on a machine whose two cores run other test files too.
    const deadline = Date.now() + 60_000
    let health = 'no answer'
    for (;;) {
      try {
        const response = await fetch(`${url}/health`)
        if (response.status === 200) return
        health = `${response.status} ${await response.text()}`
      } catch (err) {
        health = (err as Error).message
      }
      if (proc.exitCode !== null) throw new Error(`the hub exited with ${proc.exitCode}:\n${output}`)
      if (Date.now() > deadline) throw new Error(`the hub on port ${port} was not healthy within 60 s (last: ${health}):\n${output}`)
      await sleep(50)
    }
  }

  t.teardown(kill)
  await start()
  return { port, url, kill, start }
}

/**
 * A TCP load balancer on loopback, as clients meet one in front of several instances: each new
 * connection goes to the next instance in turn (a dead one fails it, and the client tries again).
 * `dropAll()` cuts every open connection at once, both ways, without a close frame.
 */
export interface Balancer {
  readonly url: string
  /** How many open connections each target has, by port. */
  links (): Map<number, number>
  dropAll (): void
  close (): Promise<void>
}

export async function startBalancer (ports: number[]): Promise<Balancer> {
  const open = new Map<Socket, { upstream: Socket, port: number }>()
  let next = 0
  const server = createServer((client) => {
    const port = ports[next++ % ports.length]
    const upstream = connect({ port, host: '127.0.0.1' })
    open.set(client, { upstream, port })
    client.pipe(upstream)
    upstream.pipe(client)
    const forget = (): void => {
      open.delete(client)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', forget)
    upstream.on('close', forget)
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    links () {
      const counts = new Map<number, number>()
      for (const link of open.values()) counts.set(link.port, (counts.get(link.port) ?? 0) + 1)
      return counts
    },
    dropAll () {
      for (const [client, { upstream }] of open) {
        client.destroy()
        upstream.destroy()
      }
    },
    async close () {
      for (const [client, { upstream }] of open) {
        client.destroy()
        upstream.destroy()
      }
      server.close()
      await once(server, 'close')
    }
  }
}
