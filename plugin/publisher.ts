import type { Bus, BusMessage, PublishResult } from './bus/bus.js'
import { PROTO_KEY } from './bus/payload-check.js'
import { isValidChannel } from './channel.js'
import { InvalidChannelError, InvalidDataError, InvalidIdempotencyKeyError, MessageTooLargeError } from './errors.js'
import { encodeMessage } from './frames.js'
import { hasNonFiniteNumber } from './json-numbers.js'
import { checkTags, type Tags } from './tags.js'
import { isValidIdempotencyKey } from './history/idempotency.js'
import type { HistorySettings } from './history/settings.js'
import type { BroadcastStats } from './stats.js'
import type { Timings } from './metrics.js'
import type { BroadcastMessage, BroadcastOptions, BroadcastResult } from './types.js'

export interface PublisherOptions {
  maxMessageBytes: number
  maxBatchSize: number
  historyOf: (channel: string) => HistorySettings
}

export interface Publisher {
  /** Publishes `data` to every instance; resolves once the bus has accepted it. */
  broadcast: (data: unknown, options?: BroadcastOptions) => Promise<BroadcastResult>
  /** Publishes several messages in order, as one step on Redis (all or none). */
  broadcastMany: (messages: readonly BroadcastMessage[]) => Promise<BroadcastResult[]>
}

/**
 * The one way in for messages, from POST /publish and from code alike: validate, encode once,
 * hand to the bus. A message is refused here, where its publisher hears why, never dropped later.
 */
export function createPublisher (bus: Bus, options: PublisherOptions, stats: BroadcastStats, timings?: Timings): Publisher {
  /** Validates and encodes one message; throws the error its publisher should hear. */
  function prepare (data: unknown, channel: string | undefined, idempotencyKey?: string, tags?: Tags): BusMessage {
    if (channel !== undefined && !isValidChannel(channel)) throw new InvalidChannelError(JSON.stringify(channel))
    if (tags !== undefined) checkTags(tags)
    const payload = encodeMessage(data, channel, tags)
    // JSON.stringify writes NaN and ±Infinity as null: refuse them rather than send a null the
    // publisher did not mean. Only a text with a null in it can hold one.
    if (payload.includes('null') && hasNonFiniteNumber(data)) {
      throw new InvalidDataError('it holds a number JSON cannot carry (NaN or Infinity), which would arrive as null')
    }
    const size = Buffer.byteLength(payload)
    if (size > options.maxMessageBytes) throw new MessageTooLargeError(size, options.maxMessageBytes)
    // Every instance drops payloads with this key as foreign: refuse it here, where the caller hears.
    if (payload.includes(PROTO_KEY)) throw new InvalidDataError('an object key may not be "__proto__"')
    if (idempotencyKey !== undefined && !isValidIdempotencyKey(idempotencyKey)) throw new InvalidIdempotencyKeyError()
    const history = channel === undefined ? undefined : options.historyOf(channel)
    return {
      channel: channel ?? null,
      payload,
      history: history === undefined || history.size === 0 ? undefined : history,
      idempotencyKey
    }
  }

  async function publish (messages: BusMessage[]): Promise<BroadcastResult[]> {
    let results: PublishResult[]
    const started = performance.now()
    try {
      results = await bus.publishMany(messages)
    } catch (err) {
      stats.publishFailures += messages.length
      throw err
    } finally {
      timings?.publish((performance.now() - started) / 1000)
    }
    stats.published += messages.length
    return results.map(toBroadcastResult)
  }

  return {
    async broadcast (data, { channel, idempotencyKey, tags } = {}) {
      const [result] = await publish([prepare(data, channel, idempotencyKey, tags)])
      return result
    },
    async broadcastMany (messages) {
      if (messages.length > options.maxBatchSize) {
        throw new InvalidDataError(`a batch holds at most ${options.maxBatchSize} messages (maxBatchSize), got ${messages.length}`)
      }
      // Every message is checked before any is sent: a bad one refuses the whole batch.
      const prepared = messages.map(({ data, channel, idempotencyKey, tags }, index) => {
        try {
          return prepare(data, channel, idempotencyKey, tags)
        } catch (err) {
          (err as Error).message = `message ${index}: ${(err as Error).message}`
          throw err
        }
      })
      return prepared.length > 0 ? await publish(prepared) : []
    }
  }
}

function toBroadcastResult ({ position, duplicate }: PublishResult): BroadcastResult {
  return position === undefined ? { duplicate } : { offset: position.offset, epoch: position.epoch, duplicate }
}
