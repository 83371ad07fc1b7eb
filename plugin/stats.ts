import type { LoopDelay } from './loop-delay.js'

/**
 * What this instance has seen since it started. Plain numbers, bumped on the hot path without
 * allocation; `snapshot()` gives a copy for health checks, logs or a metrics exporter.
 */
export class BroadcastStats {
  /** Messages this instance handed to the bus (publish route and `broadcast()`). */
  published = 0
  /** Publishes the bus refused or did not confirm in time (answered 503 / rejected). */
  publishFailures = 0
  /** Messages that arrived from the bus. */
  messagesIn = 0
  /** Frames queued for delivery to client sockets (one per message and recipient). */
  messagesOut = 0
  /** Payloads on the plugin's Redis channels that were not the plugin's messages. */
  droppedForeignPayloads = 0
  /** Connections closed with 4008 because they did not read fast enough. */
  slowConsumerCloses = 0
  /** Connections terminated because they did not answer a ping in time. */
  heartbeatTimeouts = 0
  /** Times the Redis subscriber connection came back after it had been lost. */
  subscriberReconnects = 0
  /** Probes of the subscriber connection that failed or timed out. */
  probeFailures = 0
  /** Runs of missed messages read back from history and delivered in order. */
  gapsRepaired = 0
  /** Runs of missed messages that could not be read back: the channel's clients got a gap frame. */
  gapsReported = 0
  /** Subscriptions that resumed from an offset and got everything after it. */
  resumed = 0
  /** Subscriptions that asked to resume but could not (`recovered: false`). */
  resumeFailures = 0
  /** Subscribes the bus could not confirm at once (Redis down or slow): answered once it is back. */
  subscribesDeferred = 0

  /** Times a turn's socket writes were too many for one turn and went on in the next ones. */
  writesSliced = 0

  /** `connections` and `channels`: open WebSockets and channels listened on, right now. */
  snapshot (connections: number, channels: number, eventLoopDelay: LoopDelay): BroadcastStatsSnapshot {
    // The counters are this object's own fields: a new counter shows up here without a line more.
    return { connections, channels, ...this, eventLoopDelay }
  }
}

export type BroadcastStatsSnapshot = Omit<BroadcastStats, 'snapshot'> & {
  /** Open WebSocket connections on this instance. */
  connections: number
  /** Channels with at least one listener on this instance: one Redis subscription each. */
  channels: number
  /** How late this instance's event loop ran over the last 10 to 20 seconds, in milliseconds. */
  eventLoopDelay: LoopDelay
}
