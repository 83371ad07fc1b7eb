import { parseFilter, type ParsedFilter } from './tags.js'
import { BadJsonError, InternalError, InvalidChannelError, InvalidDataError, InvalidResumeError, UnknownTypeError } from './errors.js'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { isValidChannel } from './channel.js'
import { PingFrame, RefreshFrame, ResumeFrame, SubscribeFrame, UnsubscribeFrame } from './protocol.js'
import type { Position } from './history/sequence.js'

// The wire codec: everything that turns a frame into text or text into a frame lives here,
// so the protocol documented in README.md has exactly one implementation.

/** Where a client asks to resume a channel: after `since`, in the history named `epoch`. */
export interface Resume {
  since: number
  epoch: string
  /** Over the connection's resume budget: answered from the position alone, with recovered: false. */
  throttled?: true
}

/** How a subscription starts: the channel's position, and whether a resume was honoured. */
export interface SubscribeOutcome {
  position?: Position
  recovered?: boolean
}

type SubscribeClientFrame = { type: 'subscribe', channel: string, resume?: Resume, filter?: ParsedFilter }

export type ClientFrame =
  | SubscribeClientFrame
  | { type: 'unsubscribe', channel: string }
  | { type: 'ping' }
  | { type: 'refresh', token: string }

export interface WireError {
  code: string
  message: string
  /** The channel the error concerns, so a client can tell which subscription failed. */
  channel?: string
}

/**
 * Builds the client-facing text of a message once, on the publishing instance.
 * Every subscribing instance forwards these exact bytes, so nothing is parsed or
 * stringified again per client.
 */
export function encodeMessage (data: unknown, channel?: string, tags?: Record<string, string>): string {
  let text: string | undefined
  try {
    text = JSON.stringify(data)
  } catch (err) {
    throw new InvalidDataError((err as Error).message)
  }
  if (text === undefined) {
    throw new InvalidDataError(`${typeof data} is not serialisable`)
  }
  // Tags go before the data: a filter reads them without parsing the data (plugin/tags.ts).
  const tagged = tags === undefined ? '' : `,"tags":${JSON.stringify(tags)}`
  return channel === undefined
    ? `{"type":"message"${tagged},"data":${text}}`
    : `{"type":"message","channel":${JSON.stringify(channel)}${tagged},"data":${text}}`
}

export function parseClientFrame (raw: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): ClientFrame | WireError {
  if (isBinary) return toWireError(new BadJsonError())
  let frame: unknown
  try {
    frame = JSON.parse(raw.toString())
  } catch {
    return toWireError(new BadJsonError())
  }
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    return toWireError(new BadJsonError())
  }
  // The type picks the one schema to check: a bad frame is told what is wrong with its own type.
  const { type, channel } = frame as { type?: unknown, channel?: unknown }
  switch (type) {
    case 'ping':
      /* c8 ignore next -- the ping schema holds nothing but its type today; checked all the same, so a field added to it is */
      if (!PingCheck.Check(frame)) return toWireError(new BadJsonError())
      return { type }
    case 'refresh':
      if (!RefreshCheck.Check(frame)) return toWireError(new BadJsonError())
      return { type, token: frame.token }
    case 'subscribe': {
      let subscribe: SubscribeClientFrame
      if (SubscribeCheck.Check(frame)) subscribe = { type, channel: frame.channel }
      else if (ResumeCheck.Check(frame)) subscribe = { type, channel: frame.channel, resume: { since: frame.since, epoch: frame.epoch } }
      else if (!isValidChannel(channel)) return toWireError(new InvalidChannelError(describe(channel)), channelOf(channel))
      else return toWireError(new InvalidResumeError(), channel)
      const { filter } = frame as { filter?: unknown }
      if (filter === undefined) return subscribe
      try {
        subscribe.filter = parseFilter(filter)
      } catch (err) {
        return toWireError(err, subscribe.channel)
      }
      return subscribe
    }
    case 'unsubscribe':
      if (!UnsubscribeCheck.Check(frame)) return toWireError(new InvalidChannelError(describe(channel)), channelOf(channel))
      return { type, channel: frame.channel }
    default:
      return toWireError(new UnknownTypeError(describe(type)))
  }
}

// Compiled once: parseClientFrame runs on every frame every client sends.
const PingCheck = TypeCompiler.Compile(PingFrame)
const RefreshCheck = TypeCompiler.Compile(RefreshFrame)
const SubscribeCheck = TypeCompiler.Compile(SubscribeFrame)
const ResumeCheck = TypeCompiler.Compile(ResumeFrame)
const UnsubscribeCheck = TypeCompiler.Compile(UnsubscribeFrame)

export function isWireError (value: ClientFrame | WireError): value is WireError {
  return 'code' in value
}

export function toWireError (err: unknown, channel?: string): WireError {
  const message = err instanceof Error ? err.message : String(err)
  const code = (err as { code?: unknown } | null | undefined)?.code
  // Only the catalogue's codes reach a client; anything else (a throwing canSubscribe hook, a
  // fault of ours) is FRB_INTERNAL, with its message.
  const known = err instanceof Error && typeof code === 'string' && code.startsWith('FRB_')
  const error: WireError = { code: known ? code : INTERNAL_CODE, message }
  if (channel !== undefined) error.channel = channel
  return error
}

/** A channel field that is a string, even one that is no valid name, is what the client sent: echo it. */
function channelOf (value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

const INTERNAL_CODE = new InternalError().code

export function errorFrame (error: WireError): string {
  return JSON.stringify({ type: 'error', code: error.code, message: error.message, channel: error.channel })
}

/** `recovered` is there only when the client asked to resume; the position only for a channel with history. */
export function subscribedFrame (channel: string, { position, recovered }: SubscribeOutcome = {}): string {
  let text = `{"type":"subscribed","channel":${JSON.stringify(channel)}`
  if (recovered !== undefined) text += `,"recovered":${String(recovered)}`
  if (position !== undefined) text += `,"epoch":${JSON.stringify(position.epoch)},"offset":${position.offset}`
  return text + '}'
}

/** Messages of the channel were lost on the way to this client: it should subscribe again with `since`. */
export function gapFrame (channel: string): string {
  return `{"type":"gap","channel":${JSON.stringify(channel)}}`
}

export function unsubscribedFrame (channel: string): string {
  return `{"type":"unsubscribed","channel":${JSON.stringify(channel)}}`
}

export const PONG_FRAME = '{"type":"pong"}'
export const REFRESHED_FRAME = '{"type":"refreshed"}'

function describe (value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 64 ? `${text.slice(0, 64)}…` : text
}
