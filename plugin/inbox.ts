import type { FastifyBaseLogger } from 'fastify'
import type { BusMessageHandler } from './bus/bus.js'
import { foreignPayloadReason } from './bus/payload-check.js'
import { MAX_POSITION_LENGTH } from './history/sequence.js'
import type { Hub } from './hub.js'
import type { BroadcastStats } from './stats.js'

// One warning per interval at most: a flood of foreign payloads must not flood the log as well.
const FOREIGN_LOG_INTERVAL = 10000

/**
 * What arrives from the bus: the plugin's own messages go to the hub; anything else published on
 * the plugin's channels (another program, a mistake) is dropped, counted and logged.
 */
export function createInbox (hub: Hub, maxMessageBytes: number, stats: BroadcastStats, log: FastifyBaseLogger): BusMessageHandler {
  let lastForeignLog = 0
  return (channel, payload) => {
    stats.messagesIn++
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
