import { Type, type TSchema } from '@sinclair/typebox'
import { CHANNEL_MAX_LENGTH, ChannelName } from './channel.js'
import { CLOSE_DISCONNECTED, CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED } from './close-codes.js'

// The WebSocket protocol of README.md as data: the schema of every frame either side sends, and the
// close codes. The client frame schemas are the ones `parseClientFrame` (frames.ts) checks frames
// against, and the AsyncAPI document (asyncapi.ts) is built from all of them, so the validator and
// the document cannot say different things.

const Since = Type.Integer({
  minimum: 0,
  maximum: Number.MAX_SAFE_INTEGER,
  description: 'Resume after this offset: the `offset` of the last message (or `subscribed` reply) of the channel the client has'
})

const Epoch = Type.String({
  maxLength: 64,
  description: 'The history that offset belongs to: the `epoch` of that message or reply'
})

const channelList = `[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}`

/** The query string of the upgrade request. */
export const ConnectQuery = Type.Object({
  channels: Type.Optional(Type.String({
    pattern: `^${channelList}(,${channelList})*$`,
    description: 'Channels to subscribe to at connect, comma-separated'
  })),
  token: Type.Optional(Type.String({ description: 'A connect token, for browsers (never logged)' }))
})

// Client → server.

export const SubscribeFrame = Type.Object({
  type: Type.Literal('subscribe'),
  channel: ChannelName,
  // A `since` or `epoch` alone is no resume: the frame is refused with FRB_INVALID_RESUME.
  since: Type.Optional(Type.Never({ description: 'Only together with `epoch`: see the resume form' })),
  epoch: Type.Optional(Type.Never({ description: 'Only together with `since`: see the resume form' })),
  filter: Type.Optional(Type.Unknown({
    description: 'Deliver only messages whose tags match every key: `{"symbol":["AAPL","MSFT"]}` (1-16 tag names, ' +
      'each with 1-64 string values); a bad one is refused with FRB_INVALID_FILTER. Subscribing again replaces it'
  }))
}, {
  title: 'subscribe',
  description: 'Receive what is published on `channel`; answered by `subscribed`'
})

export const ResumeFrame = Type.Object({
  type: Type.Literal('subscribe'),
  channel: ChannelName,
  since: Since,
  epoch: Epoch,
  filter: Type.Optional(Type.Unknown({ description: 'As on a plain subscribe: the replay is filtered too' }))
}, {
  title: 'subscribe (resume)',
  description: 'Resume: first everything published on `channel` after offset `since` of history `epoch`, then live, ' +
    'with no gap and no duplicate; answered by `subscribed` with `recovered`. A `since` that is not a whole number ' +
    '≥ 0, or one without an `epoch` string of 64 characters at most, is refused with FRB_INVALID_RESUME'
})

export const UnsubscribeFrame = Type.Object({
  type: Type.Literal('unsubscribe'),
  channel: ChannelName
}, {
  title: 'unsubscribe',
  description: 'Stop receiving `channel`; answered by `unsubscribed`'
})

export const PingFrame = Type.Object({
  type: Type.Literal('ping')
}, {
  title: 'ping',
  description: 'Answered by `pong`'
})

export const RefreshFrame = Type.Object({
  type: Type.Literal('refresh'),
  token: Type.String({ minLength: 1, description: 'The new JWT (an empty or missing one is refused with FRB_BAD_JSON)' })
}, {
  title: 'refresh',
  description: 'Replaces the connection\'s JWT before it expires (same `sub`; `authorize` runs again); answered by `refreshed`'
})

// Server → client. Clients should ignore keys they do not know: later versions may add some.

const Position = {
  epoch: Type.Optional(Type.String({ description: 'The name of the channel\'s history; it changes when the history is lost' })),
  offset: Type.Optional(Type.Integer({ minimum: 0, description: 'The channel\'s latest offset: messages after it follow' }))
}

export const SubscribedFrame = Type.Object({
  type: Type.Literal('subscribed'),
  channel: ChannelName,
  recovered: Type.Optional(Type.Boolean({
    description: 'Only in reply to a resume. true: every message after `since` follows, up to `offset`, then the live ones. ' +
      'false: the resume could not be honoured whole and nothing is replayed: reload the state, then messages after `offset` follow'
  })),
  ...Position
}, {
  title: 'subscribed',
  description: 'The subscription is live: everything published on `channel` after `offset` arrives (also sent for each ' +
    'channel of `?channels=`). `epoch` and `offset` are there once the channel has a history'
})

export const UnsubscribedFrame = Type.Object({
  type: Type.Literal('unsubscribed'),
  channel: ChannelName
}, {
  title: 'unsubscribed',
  description: 'The subscription is gone'
})

export const PongFrame = Type.Object({
  type: Type.Literal('pong')
}, {
  title: 'pong',
  description: 'Answer to `ping`'
})

export const RefreshedFrame = Type.Object({
  type: Type.Literal('refreshed')
}, {
  title: 'refreshed',
  description: 'The new token is in force; channels it no longer grants are dropped with an FRB_CHANNEL_FORBIDDEN error each'
})

export const MessageFrame = Type.Object({
  type: Type.Literal('message'),
  channel: Type.Optional(ChannelName),
  offset: Type.Optional(Type.Integer({
    minimum: 1,
    description: 'Grows by exactly one per message of the channel, so a missing one shows. Only for a channel with history'
  })),
  epoch: Type.Optional(Type.String({
    description: 'Names the history the offset counts in; it changes when the history is lost. Only for a channel with history'
  })),
  tags: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'The tags the message was published with: `{"symbol":"AAPL"}`' })),
  data: Type.Unknown({ description: 'The published JSON value' })
}, {
  title: 'message',
  description: 'A message published on `channel`, or to everyone when there is no `channel` key'
})

export const GapFrame = Type.Object({
  type: Type.Literal('gap'),
  channel: ChannelName
}, {
  title: 'gap',
  description: 'This instance missed messages of `channel` it could not read back from the history: resume with `since`'
})

const Identity = Type.Union([Type.String(), Type.Number()], {
  description: 'Who: the token\'s `sub`, the identity `authorize()` returned, or the connection id of an anonymous client'
})

export const JoinFrame = Type.Object({
  type: Type.Literal('join'),
  channel: ChannelName,
  identity: Identity
}, {
  title: 'join',
  description: 'With presence events on for `channel`: an identity\'s first connection to it, on any instance'
})

export const LeaveFrame = Type.Object({
  type: Type.Literal('leave'),
  channel: ChannelName,
  identity: Identity
}, {
  title: 'leave',
  description: 'With presence events on for `channel`: an identity\'s last connection to it, on any instance, is gone'
})

export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  code: Type.String({
    pattern: '^FRB_[A-Z_]+$',
    description: 'A code of the FRB_ catalogue (README: Error codes); the same codes as in HTTP error bodies',
    examples: ['FRB_BAD_JSON', 'FRB_UNKNOWN_TYPE', 'FRB_INVALID_CHANNEL', 'FRB_INVALID_RESUME', 'FRB_CHANNEL_FORBIDDEN',
      'FRB_CHANNEL_LIMIT', 'FRB_BUS_UNAVAILABLE', 'FRB_BUS_REFUSED', 'FRB_UNAUTHORIZED', 'FRB_FORBIDDEN',
      'FRB_REFRESH_UNAVAILABLE', 'FRB_INTERNAL']
  }),
  message: Type.String({ description: 'What went wrong, in a sentence' }),
  channel: Type.Optional(Type.String({
    description: 'The channel the error concerns (a refused or failed subscribe, a bad resume, a channel a refreshed token ' +
      'no longer grants), as the client sent it: it may be no valid channel name'
  }))
}, {
  title: 'error',
  description: 'A frame was refused, or a subscription failed; the connection stays open'
})

/** A frame as it goes over the wire, with a name for it and a line saying what it shows. */
export interface FrameExample {
  name: string
  summary: string
  payload: Record<string, unknown>
}

/** A frame the protocol defines, with the name the AsyncAPI document gives its message. */
export interface FrameSchema {
  name: string
  schema: TSchema
  examples: readonly FrameExample[]
}

export const CLIENT_FRAMES: readonly FrameSchema[] = [
  {
    name: 'subscribe',
    schema: SubscribeFrame,
    examples: [{ name: 'subscribe', summary: 'Receive what is published on news', payload: { type: 'subscribe', channel: 'news' } }]
  },
  {
    name: 'resume',
    schema: ResumeFrame,
    examples: [{
      name: 'resume',
      summary: 'Everything published on news after offset 42 of the history named by epoch, then live',
      payload: { type: 'subscribe', channel: 'news', since: 42, epoch: '18c2f4a9b1c0de-1a2b' }
    }]
  },
  {
    name: 'unsubscribe',
    schema: UnsubscribeFrame,
    examples: [{ name: 'unsubscribe', summary: 'Stop receiving news', payload: { type: 'unsubscribe', channel: 'news' } }]
  },
  { name: 'ping', schema: PingFrame, examples: [{ name: 'ping', summary: 'Is the hub there?', payload: { type: 'ping' } }] },
  {
    name: 'refresh',
    schema: RefreshFrame,
    examples: [{ name: 'refresh', summary: 'A new token for the same subject', payload: { type: 'refresh', token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl' } }]
  }
]

export const SERVER_FRAMES: readonly FrameSchema[] = [
  {
    name: 'subscribed',
    schema: SubscribedFrame,
    examples: [
      { name: 'live', summary: 'Live on a channel without history', payload: { type: 'subscribed', channel: 'news' } },
      {
        name: 'live-with-history',
        summary: 'Live on a channel with history: messages after offset 42 follow',
        payload: { type: 'subscribed', channel: 'news', epoch: '18c2f4a9b1c0de-1a2b', offset: 42 }
      },
      {
        name: 'recovered',
        summary: 'A resume honoured: every message after since follows, up to 50, then the live ones',
        payload: { type: 'subscribed', channel: 'news', recovered: true, epoch: '18c2f4a9b1c0de-1a2b', offset: 50 }
      },
      {
        name: 'not-recovered',
        summary: 'A resume that could not be honoured whole: reload the state; messages after 50 follow',
        payload: { type: 'subscribed', channel: 'news', recovered: false, epoch: '18c2f4a9b1c0de-1a2b', offset: 50 }
      }
    ]
  },
  {
    name: 'unsubscribed',
    schema: UnsubscribedFrame,
    examples: [{ name: 'unsubscribed', summary: 'No more news', payload: { type: 'unsubscribed', channel: 'news' } }]
  },
  { name: 'pong', schema: PongFrame, examples: [{ name: 'pong', summary: 'The answer to ping', payload: { type: 'pong' } }] },
  { name: 'refreshed', schema: RefreshedFrame, examples: [{ name: 'refreshed', summary: 'The new token is in force', payload: { type: 'refreshed' } }] },
  {
    name: 'message',
    schema: MessageFrame,
    examples: [
      {
        name: 'channel-with-history',
        summary: 'A message on a channel with history',
        payload: { type: 'message', channel: 'news', offset: 43, epoch: '18c2f4a9b1c0de-1a2b', data: { headline: 'Hello' } }
      },
      { name: 'channel', summary: 'A message on a channel without history', payload: { type: 'message', channel: 'chat', data: 'hi' } },
      { name: 'tagged', summary: 'A message published with tags', payload: { type: 'message', channel: 'chat', tags: { priority: 'urgent' }, data: 'hi' } },
      { name: 'everyone', summary: 'A message published to everyone', payload: { type: 'message', data: { maintenance: '22:00' } } }
    ]
  },
  {
    name: 'gap',
    schema: GapFrame,
    examples: [{ name: 'gap', summary: 'Messages of news were lost here: resume with since', payload: { type: 'gap', channel: 'news' } }]
  },
  {
    name: 'join',
    schema: JoinFrame,
    examples: [{ name: 'join', summary: 'alice opened her first connection to room:1', payload: { type: 'join', channel: 'room:1', identity: 'alice' } }]
  },
  {
    name: 'leave',
    schema: LeaveFrame,
    examples: [{ name: 'leave', summary: 'alice\'s last connection to room:1 is gone', payload: { type: 'leave', channel: 'room:1', identity: 'alice' } }]
  },
  {
    name: 'error',
    schema: ErrorFrame,
    examples: [
      {
        name: 'channel-forbidden',
        summary: 'A subscribe the connection\'s grants do not allow',
        payload: { type: 'error', code: 'FRB_CHANNEL_FORBIDDEN', message: 'Subscribing to channel "admin" is not allowed for this connection', channel: 'admin' }
      },
      {
        name: 'unknown-type',
        summary: 'A frame of no known type',
        payload: { type: 'error', code: 'FRB_UNKNOWN_TYPE', message: 'Unknown frame type "dance": expected subscribe, unsubscribe, ping or refresh' }
      }
    ]
  }
]

/** A frame the server refuses with an error frame, and the code it answers with. */
export interface RefusedFrame {
  /** The text the client sends. */
  frame: string
  code: string
  why: string
}

export const REFUSED_CLIENT_FRAMES: readonly RefusedFrame[] = [
  { frame: 'subscribe news', code: 'FRB_BAD_JSON', why: 'not JSON (a binary frame is refused the same way)' },
  { frame: '["subscribe","news"]', code: 'FRB_BAD_JSON', why: 'JSON, but not an object' },
  { frame: '{"type":"dance"}', code: 'FRB_UNKNOWN_TYPE', why: 'a type that is not subscribe, unsubscribe, ping or refresh' },
  { frame: '{"channel":"news"}', code: 'FRB_UNKNOWN_TYPE', why: 'no type' },
  { frame: '{"type":"subscribe","channel":"my news"}', code: 'FRB_INVALID_CHANNEL', why: 'a character a channel name may not have' },
  { frame: '{"type":"unsubscribe"}', code: 'FRB_INVALID_CHANNEL', why: 'no channel' },
  { frame: '{"type":"subscribe","channel":"news","since":42}', code: 'FRB_INVALID_RESUME', why: '`since` without `epoch`' },
  { frame: '{"type":"subscribe","channel":"news","epoch":"E"}', code: 'FRB_INVALID_RESUME', why: '`epoch` without `since`' },
  { frame: '{"type":"subscribe","channel":"news","since":-1,"epoch":"E"}', code: 'FRB_INVALID_RESUME', why: 'a negative `since`' },
  { frame: '{"type":"subscribe","channel":"news","since":"42","epoch":"E"}', code: 'FRB_INVALID_RESUME', why: '`since` not a number' },
  { frame: '{"type":"subscribe","channel":"news","since":1.5,"epoch":"E"}', code: 'FRB_INVALID_RESUME', why: '`since` not whole' },
  { frame: `{"type":"subscribe","channel":"news","since":1,"epoch":"${'E'.repeat(65)}"}`, code: 'FRB_INVALID_RESUME', why: 'an `epoch` over 64 characters' },
  { frame: '{"type":"refresh","token":""}', code: 'FRB_BAD_JSON', why: 'an empty token' }
]

/** A WebSocket close code a client may see, and what it means. */
export interface CloseCode {
  code: number
  meaning: string
}

export const CLOSE_CODES: readonly CloseCode[] = [
  {
    code: CLOSE_DISCONNECTED,
    meaning: 'The back end closed every connection of this identity with POST /disconnect (logout, a ban); ' +
      'it may give another code of 4000-4999 and its reason'
  },
  {
    code: CLOSE_GOING_AWAY,
    meaning: 'The server is shutting down: reconnect, to another instance if there is one. A client that does not ' +
      'answer the close within `closeTimeout` is cut off'
  },
  { code: 1002, meaning: 'A frame broke the WebSocket protocol: reserved bits or opcode, unmasked, a control frame over 125 bytes' },
  { code: 1006, meaning: 'Seen by the client, never sent: the connection was cut without a close frame (it missed the heartbeat, or a write to it failed)' },
  { code: 1007, meaning: 'A text frame was not valid UTF-8' },
  {
    code: CLOSE_POLICY_VIOLATION,
    meaning: 'The client sent frames faster than `clientFrameRate` / `clientFrameBurst`, more bytes than `clientByteRate`, ' +
      'or more than 16,384 fragments of one message'
  },
  { code: 1009, meaning: 'A client frame was larger than `maxPayload`' },
  {
    code: CLOSE_SLOW_CONSUMER,
    meaning: 'Slow consumer: more than `slowConsumerBytes` were waiting to be sent to the client, or its unsent data did ' +
      'not drain for `slowConsumerTimeout`'
  },
  { code: CLOSE_TOKEN_EXPIRED, meaning: 'The connection\'s token expired and was not refreshed' }
]
