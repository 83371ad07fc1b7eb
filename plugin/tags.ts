import { InvalidFilterError, InvalidTagsError } from './errors.js'

// Tags on a message (`{"symbol":"AAPL"}`) and filters on a subscription
// (`{"symbol":["AAPL","MSFT"]}`): a message passes a filter when, for every key of the filter, it
// has that tag and its value is one of the listed ones.

export type Tags = Record<string, string>

export const MAX_TAGS = 16
export const MAX_TAG_VALUE_BYTES = 256
const TAG_KEY = /^[A-Za-z0-9_.:-]{1,64}$/
/** Values a filter may list per key. */
const MAX_FILTER_VALUES = 64

/** Checks a publish's tags; throws FRB_INVALID_TAGS naming the tag at fault. */
export function checkTags (tags: unknown): asserts tags is Tags {
  if (tags === null || typeof tags !== 'object' || Array.isArray(tags)) throw new InvalidTagsError('tags must be an object of strings')
  const keys = Object.keys(tags)
  if (keys.length > MAX_TAGS) throw new InvalidTagsError(`at most ${MAX_TAGS} tags, got ${keys.length}`)
  for (const key of keys) {
    if (!TAG_KEY.test(key)) throw new InvalidTagsError(`tag ${JSON.stringify(key.slice(0, 80))}: a key is 1-64 characters of A-Z a-z 0-9 _ . : -`)
    const value = (tags as Record<string, unknown>)[key]
    if (typeof value !== 'string') throw new InvalidTagsError(`tag ${JSON.stringify(key)}: its value must be a string`)
    if (Buffer.byteLength(value) > MAX_TAG_VALUE_BYTES) throw new InvalidTagsError(`tag ${JSON.stringify(key)}: its value is over ${MAX_TAG_VALUE_BYTES} bytes`)
  }
}

/** A subscription's filter: which values each tag must have. Shared by every subscriber with the same one. */
export class Filter {
  /** The message this filter last judged, and its verdict: each distinct filter runs once per message. */
  private lastPayload: Buffer | undefined
  private lastVerdict = false

  constructor (readonly key: string, private readonly rules: ReadonlyArray<[string, ReadonlySet<string>]>) {}

  passes (payload: Buffer): boolean {
    if (payload === this.lastPayload) return this.lastVerdict
    const tags = tagsOf(payload)
    let verdict = true
    for (const [name, values] of this.rules) {
      const value = tags?.[name]
      if (value === undefined || !values.has(value)) {
        verdict = false
        break
      }
    }
    this.lastPayload = payload
    this.lastVerdict = verdict
    return verdict
  }
}

/**
 * Parses a subscribe's filter; throws FRB_INVALID_FILTER. The filter comes back as its canonical
 * key (sorted keys and values) and rules, so equal filters can share one Filter.
 */
export interface ParsedFilter { key: string, rules: Array<[string, Set<string>]> }

export function parseFilter (filter: unknown): ParsedFilter {
  if (filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
    throw new InvalidFilterError('a filter is an object of tag names, each with a list of values')
  }
  const names = Object.keys(filter).sort()
  if (names.length === 0 || names.length > MAX_TAGS) throw new InvalidFilterError(`a filter names 1 to ${MAX_TAGS} tags`)
  const rules: Array<[string, Set<string>]> = []
  for (const name of names) {
    if (!TAG_KEY.test(name)) throw new InvalidFilterError(`tag ${JSON.stringify(name.slice(0, 80))}: a name is 1-64 characters of A-Z a-z 0-9 _ . : -`)
    const values = (filter as Record<string, unknown>)[name]
    if (!Array.isArray(values) || values.length === 0 || values.length > MAX_FILTER_VALUES ||
      values.some((value) => typeof value !== 'string' || Buffer.byteLength(value) > MAX_TAG_VALUE_BYTES)) {
      throw new InvalidFilterError(`tag ${JSON.stringify(name)}: a list of 1 to ${MAX_FILTER_VALUES} strings of at most ${MAX_TAG_VALUE_BYTES} bytes`)
    }
    rules.push([name, new Set(values as string[])])
  }
  const key = JSON.stringify(rules.map(([name, values]) => [name, [...values].sort()]))
  return { key, rules }
}

/** Whether a frame is a message (not a gap, join or leave frame, which every subscriber gets). */
export function isMessageFrame (payload: Buffer): boolean {
  // `{"type":"message"`: the type's value starts at byte 9.
  return payload[9] === 0x6d && payload[10] === 0x65
}

/** The message last parsed, and its tags: every subscriber of a message asks for the same bytes. */
let lastPayload: Buffer | undefined
let lastTags: Tags | undefined

const TAGS_FIELD = Buffer.from(',"tags":{')

/**
 * A message's tags, read from its frame without parsing the data: the publisher writes them
 * before `"data"`, so they sit among the first fields. Undefined when it has none.
 */
export function tagsOf (payload: Buffer): Tags | undefined {
  if (payload === lastPayload) return lastTags
  lastPayload = payload
  lastTags = undefined
  const dataAt = payload.indexOf(',"data":')
  const at = payload.indexOf(TAGS_FIELD)
  if (at === -1 || (dataAt !== -1 && at > dataAt)) return undefined
  // Tag values are strings: the object ends at the first `}` outside a string.
  let inString = false
  for (let i = at + TAGS_FIELD.length; i < payload.length; i++) {
    const byte = payload[i]
    if (inString) {
      if (byte === 0x5c) i++
      else if (byte === 0x22) inString = false
    } else if (byte === 0x22) {
      inString = true
    } else if (byte === 0x7d) {
      lastTags = JSON.parse(payload.subarray(at + TAGS_FIELD.length - 1, i + 1).toString()) as Tags
      break
    }
  }
  return lastTags
}
