import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocketServer, type WebSocket } from 'ws'
import { recordingClient, until } from './helpers/recording-client.js'
import { createPublisher, type BroadcastError, type SubscribedInfo } from '../client/index.js'

// The client's side of the wire protocol, frame by frame, against a scripted hub: the frames the
// real hub sends only under faults (gaps, new epochs, repeated replies, errors about a channel
// that will pass) are sent here on cue, and what the client answers is read back.

interface ScriptedHub {
  url: string
  /** Every HTTP request, answered 418 with an empty JSON object (no code, no message). */
  requests: Array<{ method?: string, url?: string, body: string }>
  /** The frames each connection sent, parsed, by connection in order. */
  received: Array<Array<Record<string, unknown>>>
  sockets: WebSocket[]
  send (frame: unknown): void
  /** Waits until the current connection has sent `count` frames. */
  frames (count: number): Promise<Array<Record<string, unknown>>>
}

async function scriptedHub (t: Test): Promise<ScriptedHub> {
  const requests: ScriptedHub['requests'] = []
  const http = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk: Buffer) => { body += chunk.toString() })
    request.on('end', () => {
      requests.push({ method: request.method, url: request.url, body })
      response.writeHead(418, { 'content-type': 'application/json' }).end('{}')
    })
  })
  const server = new WebSocketServer({ server: http })
  http.listen(0, '127.0.0.1')
  await once(http, 'listening')
  const hub: ScriptedHub = {
    url: `ws://127.0.0.1:${(http.address() as { port: number }).port}/ws`,
    requests,
    received: [],
    sockets: [],
    send (frame) { (hub.sockets.at(-1) as WebSocket).send(typeof frame === 'string' ? frame : JSON.stringify(frame)) },
    async frames (count) {
      await until(() => (hub.received.at(-1)?.length ?? 0) >= count, 5000, `${count} frames from the client`, () => hub.received)
      return hub.received.at(-1) as Array<Record<string, unknown>>
    }
  }
  server.on('connection', (socket) => {
    const frames: Array<Record<string, unknown>> = []
    hub.received.push(frames)
    hub.sockets.push(socket)
    socket.on('message', (raw) => frames.push(JSON.parse(raw.toString()) as Record<string, unknown>))
  })
  t.teardown(async () => {
    for (const socket of server.clients) socket.terminate()
    server.close()
    http.close()
  })
  return hub
}

const FAST = { minReconnectDelay: 20, maxReconnectDelay: 100 }

t.test('duplicates are dropped by offset, a new epoch is a reset, a gap is resumed and what comes before its reply is left to the replay', async (t) => {
  const hub = await scriptedHub(t)
  const client = recordingClient(t, hub.url, FAST)
  const subscribed: SubscribedInfo[] = []
  const sub = client.subscribe('c', { onSubscribed: (info) => subscribed.push(info) })
  t.same(await hub.frames(1), [{ type: 'subscribe', channel: 'c' }])
  hub.send({ type: 'message', channel: 'c', offset: 6, epoch: 'E', data: 'early' })
  hub.send({ type: 'subscribed', channel: 'c', epoch: 'E', offset: 5 })
  t.same(await sub.ready, { channel: 'c', epoch: 'E', offset: 5 })
  for (const offset of [6, 7, 6, 9]) hub.send({ type: 'message', channel: 'c', offset, epoch: 'E', data: offset })
  hub.send({ type: 'message', channel: 'c', offset: 1, epoch: 'F', data: 'F1', tags: { kind: 'x' } })
  hub.send({ type: 'message', channel: 'other', offset: 1, epoch: 'F', data: 'not subscribed' })
  hub.send({ type: 'join', channel: 'other', identity: 'nobody' })
  hub.send({ type: 'unknown-frame' })
  hub.send({ type: 'gap', channel: 'c' })
  t.same((await hub.frames(2))[1], { type: 'subscribe', channel: 'c', since: 1, epoch: 'F' }, 'a gap resumes from the last offset seen')
  hub.send({ type: 'message', channel: 'c', offset: 3, epoch: 'F', data: 'F3 live, before the reply' })
  hub.send({ type: 'subscribed', channel: 'c', recovered: true, epoch: 'F', offset: 3 })
  hub.send({ type: 'message', channel: 'c', offset: 2, epoch: 'F', data: 'F2' })
  hub.send({ type: 'message', channel: 'c', offset: 3, epoch: 'F', data: 'F3' })
  await until(() => client.received('c').length === 6, 5000, 'six messages', () => client.messages)
  t.same(client.messages.get('c'), [
    { data: 6, offset: 6, epoch: 'E' }, { data: 7, offset: 7, epoch: 'E' }, { data: 9, offset: 9, epoch: 'E' },
    { data: 'F1', offset: 1, epoch: 'F' }, { data: 'F2', offset: 2, epoch: 'F' }, { data: 'F3', offset: 3, epoch: 'F' }
  ], 'once each, in order; an offset skipped (9 after 7) is not a loss')
  t.same(client.resets.get('c'), [{ channel: 'c', offset: 0, epoch: 'F' }], 'the new epoch is a reset')
  t.same(subscribed.map((info) => info.recovered), [undefined, true])

  hub.sockets[0].terminate()
  await until(() => hub.sockets.length === 2, 5000, 'a new connection')
  t.same(await hub.frames(1), [{ type: 'subscribe', channel: 'c', since: 3, epoch: 'F' }], 'a reconnect resumes')
  hub.send({ type: 'message', channel: 'c', offset: 4, epoch: 'F', data: 'F4' })
  hub.send({ type: 'subscribed', channel: 'c', recovered: false, epoch: 'F', offset: 2 })
  hub.send({ type: 'message', channel: 'c', offset: 3, epoch: 'F', data: 'F3 again' })
  hub.send({ type: 'message', channel: 'c', offset: 4, epoch: 'F', data: 'F4' })
  hub.send({ type: 'subscribed', channel: 'c', recovered: false })
  hub.send({ type: 'message', channel: 'c', offset: 1, epoch: 'G', data: 'G1' })
  await until(() => client.received('c').length === 8, 5000, 'eight messages', () => client.messages)
  t.same(client.received('c').slice(6), ['F4', 'G1'], 'a reply behind what was seen keeps the mark: nothing twice')
  t.same(client.resets.get('c')?.slice(1), [{ channel: 'c', offset: 3, epoch: 'F' }, { channel: 'c' }], 'each recovered:false is a reset')
  t.same(client.errors(), [])
})

t.test('a new history under a subscription (a new epoch) is a reset, and it is resumed from its start', async (t) => {
  const hub = await scriptedHub(t)
  const client = recordingClient(t, hub.url, FAST)
  const sub = client.subscribe('c')
  await hub.frames(1)
  hub.send({ type: 'subscribed', channel: 'c', epoch: 'E', offset: 5 })
  await sub.ready
  hub.send({ type: 'message', channel: 'c', offset: 6, epoch: 'E', data: 'E6' })
  hub.send({ type: 'message', channel: 'c', offset: 3, epoch: 'F', data: 'F3 live' })
  t.same((await hub.frames(2))[1], { type: 'subscribe', channel: 'c', since: 0, epoch: 'F' }, 'the new history asked for from its start')
  hub.send({ type: 'message', channel: 'c', offset: 4, epoch: 'F', data: 'F4 live' })
  hub.send({ type: 'subscribed', channel: 'c', recovered: true, epoch: 'F', offset: 4 })
  for (const offset of [1, 2, 3, 4]) hub.send({ type: 'message', channel: 'c', offset, epoch: 'F', data: `F${offset}` })
  await until(() => client.received('c').length === 5, 5000, 'five messages', () => client.messages)

  hub.sockets[0].terminate()
  await until(() => hub.sockets.length === 2, 5000, 'a new connection')
  t.same(await hub.frames(1), [{ type: 'subscribe', channel: 'c', since: 4, epoch: 'F' }])
  hub.send({ type: 'subscribed', channel: 'c', recovered: false, epoch: 'G', offset: 7 })
  t.same((await hub.frames(2))[1], { type: 'subscribe', channel: 'c', since: 0, epoch: 'G' }, 'again, after a resume that found a new history')
  hub.send({ type: 'subscribed', channel: 'c', recovered: false, epoch: 'G', offset: 7 })
  hub.send({ type: 'message', channel: 'c', offset: 8, epoch: 'G', data: 'G8' })
  await until(() => client.received('c').length === 6, 5000, 'six messages', () => client.messages)
  t.same(client.received('c'), ['E6', 'F1', 'F2', 'F3', 'F4', 'G8'])
  t.same(client.resets.get('c'), [{ channel: 'c', offset: 0, epoch: 'F' }, { channel: 'c', offset: 0, epoch: 'G' }, { channel: 'c', offset: 7, epoch: 'G' }],
    'a reset for each loss: the end of E, the end of F, the start of G (no longer kept)')
})

t.test('error frames: one about no channel goes to the client, FRB_BUS_UNAVAILABLE is retried, another ends the subscription', async (t) => {
  const hub = await scriptedHub(t)
  const client = recordingClient(t, hub.url, FAST)
  const failures: BroadcastError[] = []
  const retried = client.subscribe('retried', { onError: (error) => failures.push(error) })
  const refused = client.subscribe('refused', { onError: (error) => failures.push(error) })
  await hub.frames(2)
  hub.send({ type: 'error', code: 'FRB_BUS_UNAVAILABLE', message: 'Redis is down', channel: 'retried' })
  hub.send({ type: 'error', code: 'FRB_CHANNEL_FORBIDDEN', message: 'no', channel: 'refused' })
  hub.send({ type: 'error', code: 'FRB_BAD_JSON', message: 'not JSON' })
  hub.send('{not json')
  hub.send({ type: 'error', code: 'FRB_SOMETHING_NEW' })
  t.same((await hub.frames(3))[2], { type: 'subscribe', channel: 'retried' }, 'asked again after a back-off')
  hub.send({ type: 'error', code: 'FRB_BUS_UNAVAILABLE', message: 'Redis is down', channel: 'retried' })
  await hub.frames(4)
  // The hub completes the first subscribe on its own, then answers the retry: one ready, no duplicate.
  hub.send({ type: 'subscribed', channel: 'retried', epoch: 'E', offset: 0 })
  hub.send({ type: 'message', channel: 'retried', offset: 1, epoch: 'E', data: 1 })
  hub.send({ type: 'subscribed', channel: 'retried', recovered: true, epoch: 'E', offset: 1 })
  hub.send({ type: 'message', channel: 'retried', offset: 1, epoch: 'E', data: 1 })
  await retried.ready
  await t.rejects(refused.ready, { code: 'FRB_CHANNEL_FORBIDDEN', channel: 'refused' })
  await sleep(300)
  t.equal(hub.received[0].length, 4, 'no retry after the subscription stood')
  t.same(client.received('retried'), [1])
  t.match(failures, [{ code: 'FRB_CHANNEL_FORBIDDEN' }])
  t.match(client.errors(), [{ code: 'FRB_BAD_JSON', message: 'not JSON' }, { message: /not JSON: \{not json/ }, { code: 'FRB_SOMETHING_NEW', message: '' }])
})

t.test('HTTP answers that are not the hub\'s (no code, no message) are thrown with their status; tags go out with a publish', async (t) => {
  const hub = await scriptedHub(t)
  const client = recordingClient(t, hub.url, FAST)
  await t.rejects(client.client.presence('room:1'), { name: 'BroadcastError', status: 418, code: undefined, message: 'I\'m a Teapot', channel: 'room:1' })
  const http = hub.url.replace('ws:', 'http:').replace('/ws', '')
  await t.rejects(createPublisher({ url: http }).publish('c', 1, { tags: { colour: 'red' }, idempotencyKey: 'k' }), { status: 418, code: undefined, message: 'I\'m a Teapot' })
  t.match(hub.requests, [
    { method: 'GET', url: '/presence/room%3A1' },
    { method: 'POST', url: '/publish', body: JSON.stringify({ channel: 'c', data: 1, idempotencyKey: 'k', tags: { colour: 'red' } }) }
  ])
})

t.test('close codes: 1001, 1011, 4008 reconnect; 1003 stops', async (t) => {
  const hub = await scriptedHub(t)
  const client = recordingClient(t, hub.url, FAST)
  for (const [index, code] of [1001, 1011, 4008, 1003].entries()) {
    await until(() => hub.sockets.length === index + 1, 5000, `connection ${index + 1}`)
    hub.sockets[index].close(code, `closing with ${code}`)
  }
  await until(() => client.count('error') === 1, 5000, 'the stop')
  await sleep(300)
  t.same(client.events.filter((e) => e.event === 'disconnected').map((e) => [e.code, e.reason]),
    [[1001, 'closing with 1001'], [1011, 'closing with 1011'], [4008, 'closing with 4008'], [1003, 'closing with 1003']])
  t.equal(hub.sockets.length, 4, 'no attempt after 1003')
})
