// The benchmark's side of a forked load process (clients.js or publisher.js): typed IPC, waiting
// for a given reply with a deadline, and stopping it by pid.
import { fork, type ChildProcess } from 'node:child_process'
import { isMessage } from './protocol.js'
import { stop, track } from './processes.js'

type Waiter<Out> = { type: string, resolve: (message: Out) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

export class Worker<In extends { type: string }, Out extends { type: string }> {
  readonly pid: number
  private readonly child: ChildProcess
  private readonly tail: () => string
  private readonly waiters = new Set<Waiter<Out>>()
  private readonly listeners = new Set<(message: Out) => void>()
  /** Messages no waiter took yet, by type (the latest of each). */
  private readonly unclaimed = new Map<string, Out>()
  private failure: Error | undefined

  constructor (script: string, readonly name: string) {
    this.child = fork(new URL(script, import.meta.url), [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
    ;({ tail: this.tail } = track(this.child, name))
    this.pid = this.child.pid as number
    this.child.on('message', (message: unknown) => {
      if (!isMessage<Out>(message)) return
      if (message.type === 'fatal') {
        this.fail(new Error(`${name}: ${(message as unknown as { message: string }).message}`))
        return
      }
      for (const listener of this.listeners) listener(message)
      for (const waiter of this.waiters) {
        if (waiter.type === message.type) {
          this.settle(waiter)
          waiter.resolve(message)
          return
        }
      }
      this.unclaimed.set(message.type, message)
    })
    this.child.once('exit', (code, signal) => {
      this.fail(new Error(`${name} exited (${signal ?? code ?? '?'}) unexpectedly\n${this.tail()}`))
    })
  }

  send (message: In): void {
    if (this.child.connected) this.child.send(message)
  }

  onMessage (listener: (message: Out) => void): void {
    this.listeners.add(listener)
  }

  async waitFor<T extends Out['type']> (type: T, timeoutMs: number): Promise<Extract<Out, { type: T }>> {
    const ready = this.unclaimed.get(type)
    if (ready !== undefined) {
      this.unclaimed.delete(type)
      return ready as Extract<Out, { type: T }>
    }
    if (this.failure !== undefined) throw this.failure
    return await new Promise((resolve, reject) => {
      const waiter: Waiter<Out> = {
        type,
        resolve: (message) => resolve(message as Extract<Out, { type: T }>),
        reject,
        timer: setTimeout(() => {
          this.settle(waiter)
          reject(new Error(`${this.name}: no "${type}" within ${Math.round(timeoutMs / 1000)} s`))
        }, timeoutMs)
      }
      this.waiters.add(waiter)
    })
  }

  async stop (): Promise<void> {
    this.failure ??= new Error(`${this.name} was stopped`)
    await stop(this.child, 2000)
  }

  private settle (waiter: Waiter<Out>): void {
    clearTimeout(waiter.timer)
    this.waiters.delete(waiter)
  }

  private fail (err: Error): void {
    this.failure ??= err
    for (const waiter of [...this.waiters]) {
      this.settle(waiter)
      waiter.reject(this.failure)
    }
  }
}
