import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { until, type Delivery, type RecordingClient } from './recording-client.js'

export const CHANNELS = ['c0', 'c1', 'c2']

export interface Published { offset: number, epoch: string, data: number }

/** Publishes one message every `every` ms to the channels and instances in turn, and keeps what was answered 202. */
export function publishSteadily (hubs: Array<{ url: string }>, every: number): { published: Map<string, Published[]>, refused: () => number, stop: () => Promise<void> } {
  const published = new Map(CHANNELS.map((channel) => [channel, [] as Published[]]))
  let refused = 0
  const state = { running: true }
  const loop = (async () => {
    for (let n = 0; state.running; n++) {
      const channel = CHANNELS[n % CHANNELS.length]
      const hub = hubs[Math.floor(n / CHANNELS.length) % hubs.length]
      try {
        const response = await fetch(`${hub.url}/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ channel, data: n })
        })
        const answer = await response.json() as { offset: number, epoch: string }
        if (response.status === 202) (published.get(channel) as Published[]).push({ offset: answer.offset, epoch: answer.epoch, data: n })
        else refused++
      } catch {
        // The instance is down: this message was never accepted, and is not expected anywhere.
        refused++
      }
      await sleep(every)
    }
  })()
  return {
    published,
    refused: () => refused,
    async stop () {
      state.running = false
      await loop
    }
  }
}

const key = (position: { offset?: number, epoch?: string }): string => `${position.epoch}:${position.offset}`

/** Checks one client's deliveries on one channel against what was published; returns how many accepted messages it lacks. */
export function verify (t: Test, name: string, deliveries: Delivery[], published: Published[], resets: number): number {
  const seen = new Set<string>()
  let repeated = 0
  let backwards = 0
  deliveries.forEach((delivery, index) => {
    if (seen.has(key(delivery))) repeated++
    seen.add(key(delivery))
    const before = deliveries[index - 1]
    if (before?.epoch === delivery.epoch && (delivery.offset as number) <= (before.offset as number)) backwards++
  })
  const delivered = new Map(deliveries.map((delivery) => [key(delivery), delivery.data]))
  const missing = published.filter((message) => !delivered.has(key(message))).length
  const wrong = published.filter((message) => delivered.has(key(message)) && delivered.get(key(message)) !== message.data).length
  t.equal(repeated, 0, `${name}: no message twice`)
  t.equal(backwards, 0, `${name}: in offset order`)
  t.equal(wrong, 0, `${name}: each offset carries the data that was published at it`)
  if (resets === 0) t.equal(missing, 0, `${name}: every accepted message arrived (${published.length})`)
  else t.comment(`${name}: ${resets} reset(s), ${missing} of ${published.length} accepted messages not delivered`)
  return missing
}

/** Waits until every client has the last accepted message of every channel: after that, nothing is still on its way. */
export async function settled (clients: RecordingClient[], published: Map<string, Published[]>): Promise<void> {
  await until(() => clients.every((client) => CHANNELS.every((channel) => {
    const last = (published.get(channel) as Published[]).at(-1) as Published
    return (client.messages.get(channel) ?? []).some((delivery) => key(delivery) === key(last))
  })), 30_000, 'every client has the last message of every channel', () => clients.map((client) => ({
    events: client.events.slice(-4).map((e) => [e.event, e.code, e.reason, e.error?.message]),
    last: CHANNELS.map((channel) => client.messages.get(channel)?.at(-1))
  })))
}
