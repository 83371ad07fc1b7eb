import { createRequire } from 'node:module'
import type { TSchema } from '@sinclair/typebox'
import { CLIENT_FRAMES, CLOSE_CODES, ConnectQuery, REFUSED_CLIENT_FRAMES, SERVER_FRAMES, type FrameSchema } from './protocol.js'

// The AsyncAPI 3 document of the WebSocket protocol, built from the schemas in protocol.ts. It
// describes the hub: it receives the client frames and sends the server frames. It names no
// server: the WebSocket is on the host that serves the document, which the hub cannot know for
// sure behind a proxy (and a Host header echoed into a cacheable document could be anyone's).

export const ASYNCAPI_VERSION = '3.0.0'

export interface AsyncApiOptions {
  /** The path of the WebSocket route. */
  websocketPath: string
}

// The package resolves its own name (package.json "exports" lists ./package.json), from the
// sources and from the build alike.
const { version } = createRequire(import.meta.url)('fastify-redis-broadcast/package.json') as { version: string }

const CHANNEL = 'hub'
const channelRef = { $ref: `#/channels/${CHANNEL}` }
const messageRef = (name: string): { $ref: string } => ({ $ref: `#/channels/${CHANNEL}/messages/${name}` })

const SECURITY_SCHEMES = {
  bearerHeader: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'The connect token in `Authorization: Bearer <token>` on the upgrade request (servers, Node clients)'
  },
  queryToken: {
    type: 'httpApiKey',
    name: 'token',
    in: 'query',
    description: 'The connect token in `?token=` (browsers, which cannot set headers on a WebSocket); never logged'
  },
  bearerSubprotocol: {
    type: 'httpApiKey',
    name: 'Sec-WebSocket-Protocol',
    in: 'header',
    description: 'The subprotocol pair `bearer, <token>`: `new WebSocket(url, [\'bearer\', token])` in a browser'
  }
}

const security = Object.keys(SECURITY_SCHEMES).map((name) => ({ $ref: `#/components/securitySchemes/${name}` }))

/** A TypeBox schema as plain JSON Schema: TypeBox's symbol keys are left behind. */
function jsonSchema (schema: TSchema): Record<string, unknown> {
  return JSON.parse(JSON.stringify(schema)) as Record<string, unknown>
}

function message ({ name, schema, examples }: FrameSchema): Record<string, unknown> {
  const { title, description } = schema as { title: string, description: string }
  return {
    name,
    title,
    summary: description,
    contentType: 'application/json',
    payload: { $ref: `#/components/schemas/${schemaName(name)}` },
    examples: examples.map(({ name, summary, payload }) => ({ name, summary, payload }))
  }
}

function schemaName (frame: string): string {
  return `${frame[0].toUpperCase()}${frame.slice(1)}Frame`
}

const closeCodeTable = [
  '| code | meaning |',
  '|---|---|',
  ...CLOSE_CODES.map(({ code, meaning }) => `| ${code} | ${meaning} |`)
].join('\n')

const DESCRIPTION = `A WebSocket broadcast hub. A client opens the WebSocket (optionally subscribing at connect with \
\`?channels=a,b\`), then sends JSON text frames to subscribe, resume, unsubscribe, ping and refresh its token; the hub \
answers each and sends the messages published on the client's channels, presence events and errors.

Every frame is a JSON object in a text frame, told apart by its \`type\`. Replies to one client's frames come in the \
order its frames were sent. A frame the hub cannot take is answered with an \`error\` frame (\`x-refused-frames\` on the \
channel lists examples with their codes) and the connection stays open. A refused upgrade gets a plain HTTP status \
(400, 401, 403, 404, 429 or 503) with a JSON error body before any upgrade.

A token is needed only when the hub is set up with the \`jwt\` option: a JWT in any one of the three places the \
security schemes name (an \`authorize\` hook may ask for more, or for other credentials). A connection whose token expires is closed with 4401 unless it sends a \
\`refresh\` frame first.

Close codes (also in \`x-close-codes\` on the channel):

${closeCodeTable}`

/** The AsyncAPI 3 document of the WebSocket protocol served at `websocketPath`. */
export function buildAsyncApiDocument ({ websocketPath }: AsyncApiOptions): Record<string, unknown> {
  const frames = [...CLIENT_FRAMES, ...SERVER_FRAMES]
  const replies = (...names: string[]): Record<string, unknown> => ({ channel: channelRef, messages: names.map(messageRef) })
  const receive = (title: string, names: string[], reply: Record<string, unknown>): Record<string, unknown> =>
    ({ action: 'receive', channel: channelRef, title, messages: names.map(messageRef), reply, security })
  return {
    asyncapi: ASYNCAPI_VERSION,
    info: {
      title: 'fastify-redis-broadcast',
      version,
      description: DESCRIPTION,
      license: { name: 'MIT' }
    },
    defaultContentType: 'application/json',
    channels: {
      [CHANNEL]: {
        address: websocketPath,
        title: 'The broadcast hub',
        description: 'The one WebSocket of the hub, on the host that serves this document (`ws://` or `wss://`): every frame ' +
          'either side sends goes over it.\n\n' + closeCodeTable,
        messages: Object.fromEntries(frames.map((frame) => [frame.name, { $ref: `#/components/messages/${frame.name}` }])),
        bindings: {
          ws: {
            method: 'GET',
            query: jsonSchema(ConnectQuery),
            bindingVersion: '0.1.0'
          }
        },
        'x-close-codes': CLOSE_CODES,
        'x-refused-frames': REFUSED_CLIENT_FRAMES
      }
    },
    operations: {
      subscribe: receive('Subscribe, or resume after an offset', ['subscribe', 'resume'], replies('subscribed', 'error')),
      unsubscribe: receive('Unsubscribe', ['unsubscribe'], replies('unsubscribed', 'error')),
      ping: receive('Ping', ['ping'], replies('pong')),
      refresh: receive('Replace the connection\'s token', ['refresh'], replies('refreshed', 'error')),
      serverFrames: {
        action: 'send',
        channel: channelRef,
        title: 'What the hub sends',
        description: 'Replies to the client\'s frames, and frames of its own: messages, gaps, presence events, a ' +
          '`subscribed` for each channel of `?channels=`, errors (a bad frame, a channel a refreshed token no longer grants)',
        messages: SERVER_FRAMES.map(({ name }) => messageRef(name)),
        security
      }
    },
    components: {
      schemas: Object.fromEntries(frames.map(({ name, schema }) => [schemaName(name), jsonSchema(schema)])),
      messages: Object.fromEntries(frames.map((frame) => [frame.name, message(frame)])),
      securitySchemes: SECURITY_SCHEMES
    }
  }
}
