import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import Fastify, { type FastifyInstance } from 'fastify'
import { createSigner } from 'fast-jwt'
import { DiagnosticSeverity, Parser, type AsyncAPIDocumentInterface } from '@asyncapi/parser'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import redisBroadcast from '../plugin/index.js'
import asyncApiRoute from '../routes/asyncapi.js'
import * as closeCodes from '../plugin/close-codes.js'
import { isWireError, parseClientFrame } from '../plugin/frames.js'
import { CLIENT_FRAMES, ConnectQuery, SERVER_FRAMES } from '../plugin/protocol.js'
import { WebsocketQuery } from '../routes/websocket.js'
import { TestClient, type Frame } from './helpers/client.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const SECRET = 'an-asyncapi-test-secret-of-32-chars'
const sign = createSigner({ key: SECRET, expiresIn: 60_000 })
const tokenFor = (sub: string): string => sign({ sub, channels: ['news', 'room:*'] })

// What README.md's protocol tables list.
const CLIENT_TYPES = ['ping', 'refresh', 'subscribe', 'unsubscribe']
const SERVER_TYPES = ['error', 'gap', 'join', 'leave', 'message', 'pong', 'refreshed', 'subscribed', 'unsubscribed']
// Sent by ws or only seen by the client, so not in plugin/close-codes.ts.
const OTHER_CLOSE_CODES = [1002, 1006, 1007, 1009]

/** An app with the plugin on a private Redis and the document at its default path; closed when the test ends. */
async function build (t: Test): Promise<{ app: FastifyInstance, url: string }> {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(redisBroadcast, { redis: redis.url, jwt: { secret: SECRET }, presence: { events: ['room:*'] } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, url: `http://127.0.0.1:${port}` }
}

type Json = Record<string, any>

async function parse (t: Test, raw: Json): Promise<AsyncAPIDocumentInterface> {
  const { document, diagnostics } = await new Parser().parse(JSON.stringify(raw))
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error)
  t.same(errors.map((d) => `${d.path.join('.')}: ${d.message}`), [], 'no errors')
  if (document === undefined) throw new Error('the parser gave no document')
  return document
}

/** The `type` of every message the document's operations with this action carry. */
function frameTypes (document: AsyncAPIDocumentInterface, action: 'send' | 'receive'): string[] {
  const types = new Set<string>()
  for (const operation of document.operations().all().filter((op) => op.action() === action)) {
    for (const message of operation.messages().all()) {
      types.add(message.payload()?.properties()?.type?.const() as string)
    }
  }
  return [...types].sort()
}

const checks = new Map([...CLIENT_FRAMES, ...SERVER_FRAMES].map(({ name, schema }) => [name, TypeCompiler.Compile(schema)]))

t.test('GET /asyncapi.json serves an AsyncAPI 3 document that @asyncapi/parser accepts without errors', async (t) => {
  const { url } = await build(t)
  const response = await fetch(`${url}/asyncapi.json`)
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /^application\/json/)
  const raw = await response.json() as Json
  const document = await parse(t, raw)
  t.equal(document.version(), '3.0.0')
  t.equal(document.info().version(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version, 'the package\'s version')
  const [channel] = document.channels().all()
  t.equal(channel.address(), '/ws')
  t.same(Object.keys(raw.components.securitySchemes).sort(), ['bearerHeader', 'bearerSubprotocol', 'queryToken'])
  t.same(raw.channels.hub.bindings.ws.query, JSON.parse(JSON.stringify(WebsocketQuery)), 'the connect query is the one the WebSocket route validates')
  t.same(ConnectQuery.properties, WebsocketQuery.properties)
})

t.test('the document lists every client and server frame', async (t) => {
  const document = await parse(t, await asyncApiOf(await bareApp(t)))
  t.same(frameTypes(document, 'receive'), CLIENT_TYPES, 'the hub receives every client frame')
  t.same(frameTypes(document, 'send'), SERVER_TYPES, 'and sends every server frame')
  const replies = Object.fromEntries(document.operations().all()
    .filter((op) => op.action() === 'receive')
    .map((op) => [op.id(), op.reply()?.messages().all().map((message) => message.id())]))
  t.same(replies, {
    subscribe: ['subscribed', 'error'],
    unsubscribe: ['unsubscribed', 'error'],
    ping: ['pong'],
    refresh: ['refreshed', 'error']
  }, 'each client frame with its answers')
})

t.test('every close code the plugin sends, and those ws sends, is documented with its meaning', async (t) => {
  const raw = await asyncApiOf(await bareApp(t))
  const documented = raw.channels.hub['x-close-codes'] as Array<{ code: number, meaning: string }>
  const sent: number[] = Object.values(closeCodes)
  t.ok(sent.length >= 4, 'close-codes.ts exports its codes')
  for (const code of [...sent, ...OTHER_CLOSE_CODES]) {
    const entry = documented.find((entry) => entry.code === code)
    t.ok(entry !== undefined && entry.meaning.length > 10, `${code} is documented`)
    t.match(raw.info.description, new RegExp(`\\| ${code} \\|`), `${code} is in the description's table`)
  }
})

t.test('each documented client frame is accepted by parseClientFrame, each documented refusal gets its code', async (t) => {
  const raw = await asyncApiOf(await bareApp(t))
  const clientMessages = Object.entries(raw.components.messages as Json)
    .filter(([name]) => CLIENT_FRAMES.some((frame) => frame.name === name))
  t.equal(clientMessages.length, CLIENT_FRAMES.length)
  for (const [name, message] of clientMessages) {
    t.ok(message.examples.length > 0, `${name} has an example`)
    for (const { payload } of message.examples as Json[]) {
      const frame = parseClientFrame(Buffer.from(JSON.stringify(payload)), false)
      t.notOk(isWireError(frame), `${name}: ${JSON.stringify(payload)} is accepted`)
      t.match(frame, { type: payload.type, ...payload.channel !== undefined && { channel: payload.channel } })
      if (name === 'resume') t.same((frame as Json).resume, { since: payload.since, epoch: payload.epoch }, 'as a resume')
      t.ok(checks.get(name)?.Check(payload), 'and matches its schema')
    }
  }
  const refused = raw.channels.hub['x-refused-frames'] as Array<{ frame: string, code: string, why: string }>
  const codes = new Set(refused.map(({ code }) => code))
  t.same([...codes].sort(), ['FRB_BAD_JSON', 'FRB_INVALID_CHANNEL', 'FRB_INVALID_RESUME', 'FRB_UNKNOWN_TYPE'], 'every code of a bad frame has an example')
  for (const { frame, code, why } of refused) {
    t.match(parseClientFrame(Buffer.from(frame), false), { code }, `${why}: ${code}`)
  }
})

t.test('each documented server frame matches its schema, and the document carries the schemas as they are', async (t) => {
  const raw = await asyncApiOf(await bareApp(t))
  for (const { name, schema } of [...CLIENT_FRAMES, ...SERVER_FRAMES]) {
    const message = raw.components.messages[name] as Json
    const payload = raw.components.schemas[message.payload.$ref.split('/').pop() as string] as Json
    t.same(payload, JSON.parse(JSON.stringify(schema)), `${name}: the frame's schema`)
    for (const example of message.examples as Json[]) t.ok(checks.get(name)?.Check(example.payload), `${name}: ${example.name}`)
  }
})

t.test('every frame a live hub sends matches the documented schema of its type', async (t) => {
  const { app, url } = await build(t)
  const ws = url.replace('http', 'ws')
  const alice = await TestClient.connect(`${ws}/ws?channels=news`, { headers: { authorization: `Bearer ${tokenFor('alice')}` } })
  t.teardown(async () => await alice.close())
  await alice.waitFor((f) => f.type === 'subscribed')
  await alice.subscribe('room:1')
  const bob = await TestClient.connect(`${ws}/ws?channels=room:1`, { headers: { authorization: `Bearer ${tokenFor('bob')}` } })
  await alice.waitFor((f) => f.type === 'join')
  await bob.close()
  await alice.waitFor((f) => f.type === 'leave')

  await app.broadcast({ headline: 'first' }, { channel: 'news' })
  await app.broadcast('to everyone')
  await alice.messages(2)
  const { offset, epoch } = alice.received()[0]
  let from = alice.frames.length
  alice.send({ type: 'subscribe', channel: 'news', since: (offset as number) - 1, epoch })
  await alice.waitFor((f) => f.type === 'subscribed' && f.recovered === true, { from })
  for (const frame of [{ type: 'ping' }, { type: 'refresh', token: tokenFor('alice') }, { type: 'unsubscribe', channel: 'news' }, { type: 'subscribe', channel: 'admin' }, 'not json']) {
    from = alice.frames.length
    alice.send(frame)
    await alice.waitFor(() => true, { from })
  }

  const seen = new Set<string>()
  for (const frame of alice.frames as Frame[]) {
    seen.add(frame.type)
    const check = checks.get(frame.type)
    t.ok(check?.Check(frame), `${JSON.stringify(frame)} matches the ${frame.type} schema`)
  }
  t.same([...seen].sort(), SERVER_TYPES.filter((type) => type !== 'gap'), 'every server frame but gap was seen')
  t.match(alice.frames.find((f) => f.type === 'error' && f.channel === 'admin'), { code: 'FRB_CHANNEL_FORBIDDEN' })
})

t.test('the plugin serves it at asyncapiPath, or not at all with false', async (t) => {
  const moved = Fastify({ logger: false })
  t.teardown(async () => await moved.close())
  await moved.register(redisBroadcast, { redis: redis.url, websocketPath: '/live', asyncapiPath: '/protocol.json' })
  t.equal((await moved.inject('/protocol.json')).json().channels.hub.address, '/live')
  const none = Fastify({ logger: false })
  t.teardown(async () => await none.close())
  await none.register(redisBroadcast, { redis: redis.url, asyncapiPath: false })
  t.equal((await none.inject('/asyncapi.json')).statusCode, 404)
})

t.test('the route serves the document at its own path, describing the WebSocket at its own path', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(asyncApiRoute, { path: '/docs/protocol.json', websocketPath: '/live' })
  const response = await app.inject('/docs/protocol.json')
  t.equal(response.statusCode, 200)
  t.equal(response.json().channels.hub.address, '/live')
  t.equal((await app.inject('/asyncapi.json')).statusCode, 404)
})

t.test('under a prefix, the document is there and names the WebSocket path with the prefix', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(async (api) => {
    await api.register(asyncApiRoute, { path: '/asyncapi.json', websocketPath: '/ws' })
  }, { prefix: '/api' })
  const response = await app.inject('/api/asyncapi.json')
  t.equal(response.statusCode, 200)
  t.equal(response.json().channels.hub.address, '/api/ws')
})

/** The route alone, without the plugin, for tests of the document itself. */
async function bareApp (t: Test): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(asyncApiRoute, { path: '/asyncapi.json', websocketPath: '/ws' })
  return app
}

async function asyncApiOf (app: FastifyInstance): Promise<Json> {
  return (await app.inject('/asyncapi.json')).json()
}
