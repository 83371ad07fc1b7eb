import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { freePort } from './redis-server.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

export interface Service {
  url: string
  process: ChildProcess
  output: () => string
}

/** Runs the built service the way `npm start` does, `fastify start --options dist/app.js`, in a child process. */
export async function startService (t: Test, env: Record<string, string>): Promise<Service> {
  const port = await freePort()
  const childEnv: Record<string, string | undefined> = { ...process.env, FASTIFY_ADDRESS: '127.0.0.1', ...env, PORT: String(port) }
  // The child runs compiled JavaScript; its coverage is not this suite's.
  delete childEnv.NODE_V8_COVERAGE
  const child = spawn(process.execPath, [`${root}node_modules/fastify-cli/cli.js`, 'start', '--options', '-l', 'info', 'dist/app.js'], {
    cwd: root,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).status === 200) break
    } catch {}
    if (child.exitCode !== null) throw new Error(`the service exited with ${child.exitCode}:\n${output}`)
    if (Date.now() > deadline) throw new Error(`the service did not become healthy within 15 s:\n${output}`)
    await sleep(50)
  }
  return { url, process: child, output: () => output }
}
