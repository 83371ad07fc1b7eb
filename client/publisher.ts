import { backoff } from './backoff.js'
import { BroadcastError } from './errors.js'
import type { Tags } from './types.js'

export interface PublisherOptions {
  /** The hub's base URL (`https://hub.example.com`), or the publish route's whole URL. */
  url: string
  /** A publish key, sent as `Authorization: Bearer`. */
  key?: string
  /** The publish route's path. @default '/publish' */
  path?: string
  /** How many times a publish is retried after a 503, a 429 or a network error. @default 5 */
  retries?: number
  /** Back-off between retries when the hub sends no `Retry-After`: the first delay's cap, in ms. @default 500 */
  minRetryDelay?: number
  /** The largest delay between two retries without `Retry-After`, in ms. @default 10000 */
  maxRetryDelay?: number
}

export interface PublishOptions {
  /** The same key is never published twice on a channel within the hub's idempotency window. @default a random UUID */
  idempotencyKey?: string
  tags?: Tags
}

export interface PublishMessage extends PublishOptions {
  /** Left out: the message goes to every connection. */
  channel?: string
  data: unknown
}

/** The hub's answer: the message's position (channels with history only), and whether it was a repeat. */
export interface PublishResult {
  offset?: number
  epoch?: string
  duplicate?: true
}

export interface Publisher {
  publish (channel: string | undefined, data: unknown, options?: PublishOptions): Promise<PublishResult>
  /** Publishes in order in one request (all or nothing); one result per message. */
  publishMany (messages: PublishMessage[]): Promise<PublishResult[]>
}

/**
 * Publishes through `POST /publish` from a back end. Every message gets an idempotency key, so a
 * publish retried after a 503 or a lost answer (the hub may have published it) is delivered once.
 */
export function createPublisher ({ url, key, path = '/publish', retries = 5, minRetryDelay = 500, maxRetryDelay = 10_000 }: PublisherOptions): Publisher {
  const target = new URL(path, url).href
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (key !== undefined) headers.authorization = `Bearer ${key}`

  async function post (body: unknown): Promise<PublishResult & { results?: PublishResult[] }> {
    const text = JSON.stringify(body)
    for (let attempt = 0; ; attempt++) {
      let delay = backoff(attempt, minRetryDelay, maxRetryDelay)
      try {
        const response = await fetch(target, { method: 'POST', headers, body: text })
        const answer = await response.json() as PublishResult & { code?: string, message?: string, results?: PublishResult[] }
        if (response.ok) return answer
        const retryAfter = Number(response.headers.get('retry-after') ?? NaN)
        if (!(response.status === 503 || response.status === 429) || attempt >= retries) {
          throw new BroadcastError(answer.message ?? response.statusText, answer.code, response.status)
        }
        if (retryAfter >= 0) delay = retryAfter * 1000
      } catch (err) {
        // A refusal ends here; a network error (fetch's TypeError) is retried like a 503.
        if (err instanceof BroadcastError || attempt >= retries) throw err
      }
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }

  const entry = ({ channel, data, idempotencyKey = crypto.randomUUID(), tags }: PublishMessage): object =>
    ({ channel, data, idempotencyKey, ...tags !== undefined && { tags } })

  return {
    async publish (channel, data, options = {}) {
      const { offset, epoch, duplicate } = await post(entry({ ...options, channel, data }))
      return { offset, epoch, ...duplicate && { duplicate } }
    },
    async publishMany (messages) {
      return (await post(messages.map(entry))).results as PublishResult[]
    }
  }
}
