import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { BroadcastStats } from './stats.js'

/** Durations the counters cannot tell: how long publishes take, and how long messages wait to be written. */
export interface Timings {
  /** A publish (one message or a batch) took this many seconds to be taken by the bus, or refused. */
  publish (seconds: number): void
  /** A message from the bus reached the sockets' write this many seconds after it arrived. */
  delivery (seconds: number): void
}

/** What the gauges read: this instance's open connections and subscribed channels, right now. */
export interface Current {
  connections: () => number
  channels: () => number
}

/**
 * The Prometheus view of an instance, in a registry of its own (two apps in one process do not
 * mix). Counters read BroadcastStats when scraped, so `broadcastStats()` and `/metrics` can never
 * disagree; no label holds a channel or an identity, so the series stay few whatever the traffic.
 */
export function createMetrics (stats: BroadcastStats, current: Current): { registry: Registry, timings: Timings } {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  // prom-client names three gauges `_total`, which Prometheus reserves for counters (promtool
  // flags them); the same counts are there by type without the suffix.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name)
  }
  const gauge = (name: string, help: string, read: () => number): void => {
    // eslint-disable-next-line no-new -- the registry keeps it
    new Gauge({ name, help, registers: [registry], collect () { this.set(read()) } })
  }
  const counter = (name: string, help: string, read: () => number): void => {
    // eslint-disable-next-line no-new -- the registry keeps it
    new Counter({ name, help, registers: [registry], collect () { this.reset(); this.inc(read()) } })
  }
  const labelled = (name: string, help: string, label: string, reads: Record<string, () => number>): void => {
    // eslint-disable-next-line no-new -- the registry keeps it
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      collect () {
        this.reset()
        for (const [value, read] of Object.entries(reads)) this.inc({ [label]: value }, read())
      }
    })
  }

  gauge('frb_connections', 'Open WebSocket connections on this instance', current.connections)
  gauge('frb_channels', 'Channels this instance listens on (one Redis subscription each)', current.channels)
  labelled('frb_publishes_total', 'Messages handed to the bus, by result (failed: refused or not confirmed, answered 503/502)', 'result', {
    accepted: () => stats.published,
    failed: () => stats.publishFailures
  })
  counter('frb_messages_received_total', 'Messages that arrived from the bus', () => stats.messagesIn)
  counter('frb_deliveries_total', 'Frames queued to client sockets (one per message and recipient)', () => stats.messagesOut)
  counter('frb_slow_consumer_closes_total', 'Connections closed with 4008 because they did not read fast enough', () => stats.slowConsumerCloses)
  counter('frb_heartbeat_timeouts_total', 'Connections terminated because they did not answer a ping', () => stats.heartbeatTimeouts)
  counter('frb_redis_subscriber_reconnects_total', 'Times the Redis subscriber connection came back after it was lost', () => stats.subscriberReconnects)
  counter('frb_redis_probe_failures_total', 'Probes of the Redis subscriber connection that failed or timed out', () => stats.probeFailures)
  labelled('frb_resumes_total', 'Subscriptions that asked to resume, by outcome', 'outcome', {
    recovered: () => stats.resumed,
    not_recovered: () => stats.resumeFailures
  })
  labelled('frb_gaps_total', 'Runs of missed messages, by outcome (repaired from history, or reported to clients with a gap frame)', 'outcome', {
    repaired: () => stats.gapsRepaired,
    reported: () => stats.gapsReported
  })
  counter('frb_foreign_payloads_dropped_total', 'Payloads on the plugin\'s Redis channels that were not its messages', () => stats.droppedForeignPayloads)
  counter('frb_subscribes_deferred_total', 'Subscribes the bus could not confirm at once, answered once it was back', () => stats.subscribesDeferred)
  counter('frb_writes_sliced_total', 'Turns whose socket writes went on in the next turns, to keep the event loop responsive', () => stats.writesSliced)

  const publishDuration = new Histogram({
    name: 'frb_publish_duration_seconds',
    help: 'Time for a publish (a message or a batch) to be taken by the bus, or refused',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry]
  })
  const deliveryDelay = new Histogram({
    name: 'frb_delivery_delay_seconds',
    help: 'Time from a message\'s arrival from the bus until the last of its sockets was written (held messages included at their arrival turn)',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry]
  })
  return {
    registry,
    timings: {
      publish (seconds) { publishDuration.observe(seconds) },
      delivery (seconds) { deliveryDelay.observe(seconds) }
    }
  }
}
