import type { FastifyBaseLogger } from 'fastify'
import type { BusMessageHandler } from './bus/bus.js'
import { foreignPayloadReason } from './bus/payload-check.js'
import { MAX_POSITION_LENGTH } from './history/sequence.js'
import type { Hub } from './hub.js'
import type { BroadcastStats } from './stats.js'
import type { Timings } from './metrics.js'
import { parseCommand, type Command } from './commands.js'

// One warning per interval at most: a flood of foreign payloads must not flood the log as well.
const FOREIGN_LOG_INTERVAL = 10000

/**
 * What arrives from the bus: the plugin's own messages go to the hub; anything else published on
 * the plugin's channels (another program, a mistake) is dropped, counted and logged.
 */
export function createInbox (hub: Hub, maxMessageBytes: number, stats: BroadcastStats, log: FastifyBaseLogger,
  timings?: Timings, onCommand?: (command: Command) => void): BusMessageHandler {
  let lastForeignLog = 0
  // Arrival times of this turn's messages: the hub starts writing to the sockets in a microtask
  // queued during the first delivery, so a microtask queued from a microtask runs after it has
  // begun, and asks to hear when the last slice of those writes is done.
  let arrivals: number[] = []
  const observe = (): void => {
    const now = performance.now()
    for (const arrival of arrivals) (timings as Timings).delivery((now - arrival) / 1000)
    arrivals = []
  }
  const observeWhenWritten = (): void => { hub.whenWritten(observe) }
  return (channel, payload) => {
    stats.messagesIn++
    if (timings !== undefined && arrivals.push(performance.now()) === 1) queueMicrotask(() => { queueMicrotask(observeWhenWritten) })
    const command = channel === null ? parseCommand(payload) : undefined
    if (command !== undefined) {
      onCommand?.(command)
      return
    }
    // The publish script adds the position to a message after the publisher checked its size.
    const foreign = foreignPayloadReason(payload, maxMessageBytes + MAX_POSITION_LENGTH)
    if (foreign === undefined) {
      hub.receive(channel, payload)
      return
    }
    stats.droppedForeignPayloads++
    const now = Date.now()
    if (now - lastForeignLog < FOREIGN_LOG_INTERVAL) return
    lastForeignLog = now
    log.warn({ channel, reason: foreign, bytes: payload.length, dropped: stats.droppedForeignPayloads },
      'dropped a payload on a plugin channel that is not a plugin message')
  }
}
