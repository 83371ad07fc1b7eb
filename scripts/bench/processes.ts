// Every process the benchmark starts is tracked here and stopped by its pid: at the end of its run,
// and, whatever happens, when the benchmark exits, is interrupted or crashes.
import { once } from 'node:events'
import { createServer } from 'node:net'
import type { ChildProcess } from 'node:child_process'

const live = new Set<ChildProcess>()

/** Tracks a child until it exits; keeps the last lines of its output for error messages. */
export function track (child: ChildProcess, name: string): { child: ChildProcess, tail: () => string } {
  live.add(child)
  const lines: string[] = []
  const keep = (chunk: Buffer): void => {
    lines.push(...chunk.toString('utf8').split('\n').filter((line) => line.trim() !== ''))
    if (lines.length > 20) lines.splice(0, lines.length - 20)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  child.once('exit', () => live.delete(child))
  child.once('error', (err) => lines.push(`${name}: ${err.message}`))
  return { child, tail: () => lines.join('\n') }
}

export function hasExited (child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stop (child: ChildProcess, graceMs = 3000): Promise<void> {
  if (hasExited(child) || child.pid === undefined) return
  const exited = once(child, 'exit')
  process.kill(child.pid, 'SIGTERM')
  const timer = setTimeout(() => { if (!hasExited(child) && child.pid !== undefined) process.kill(child.pid, 'SIGKILL') }, graceMs)
  try {
    await exited
  } finally {
    clearTimeout(timer)
  }
}

function killAll (): void {
  for (const child of live) {
    if (child.pid !== undefined && !hasExited(child)) {
      try { process.kill(child.pid, 'SIGKILL') } catch {}
    }
  }
  live.clear()
}

/** Kills every tracked child on exit, Ctrl-C, SIGTERM and after `deadlineMs` at the latest. */
export function installCleanup (deadlineMs: number): void {
  process.on('exit', killAll)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: stopping every process the benchmark started\n`)
      killAll()
      process.exit(130)
    })
  }
  const watchdog = setTimeout(() => {
    process.stderr.write(`\nthe benchmark ran past its deadline (${Math.round(deadlineMs / 1000)} s): stopping it\n`)
    killAll()
    process.exit(124)
  }, deadlineMs)
  watchdog.unref()
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  await once(server, 'close')
  if (address === null || typeof address === 'string') throw new Error('could not find a free port')
  return address.port
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** Resolves with `promise`, or rejects with `message` after `ms`. */
export async function withTimeout<T> (promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (after ${Math.round(ms / 1000)} s)`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
