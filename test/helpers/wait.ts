import { setTimeout as sleep } from 'node:timers/promises'

/** Polls `done` every 20 ms until it holds or `timeout` ms pass; resolves with its last answer. */
export async function waitUntil (done: () => boolean, timeout: number): Promise<boolean> {
  const deadline = Date.now() + timeout
  while (!done() && Date.now() < deadline) await sleep(20)
  return done()
}
