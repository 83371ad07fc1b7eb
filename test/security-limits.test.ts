import t from 'tap'
import { createRequire } from 'node:module'
import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { get as httpsGet } from 'node:https'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { TestClient, refusedUpgrade, wsUrl } from './helpers/client.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('origins: same host, allowed list, evil origin, substring trick, null, mixed-case host', async (t) => {
  const own = await build(t, { redis: redis.url })
  const host = new URL(own.url).host
  const sameHost = await TestClient.connect(wsUrl(own.url), { origin: `http://${host}` })
  t.teardown(() => sameHost.close())
  t.pass('an upgrade from the page\'s own host is accepted')
  const mixedCase = await TestClient.connect(wsUrl(own.url), { headers: { origin: `HTTP://${host}` } })
  t.teardown(() => mixedCase.close())
  for (const origin of ['https://evil.example', `http://${host}.evil.example`, 'null']) {
    const refusal = await refusedUpgrade(wsUrl(own.url), { origin })
    t.equal(refusal.status, 403, origin)
    t.match(JSON.parse(refusal.body), { code: 'FRB_ORIGIN_FORBIDDEN' })
  }

  const listed = await build(t, { allowedOrigins: ['https://app.example.com', 'https://*.example.org'] })
  for (const origin of ['https://app.example.com', 'https://APP.example.com', 'https://live.example.org']) {
    const client = await TestClient.connect(wsUrl(listed.url), { headers: { origin } })
    t.teardown(() => client.close())
  }
  t.pass('listed origins and pattern matches are accepted')
  for (const origin of [`ftp://${host}`, `ws://${host}`, `chrome-extension://${host}`]) {
    t.equal((await refusedUpgrade(wsUrl(own.url), { origin })).status, 403, `${origin}: the default policy checks the scheme`)
  }
  for (const origin of ['https://app.example.com.evil.example', 'https://evilexample.org', 'http://app.example.com', 'null', `http://${new URL(listed.url).host}`]) {
    t.equal((await refusedUpgrade(wsUrl(listed.url), { origin })).status, 403, origin)
  }

  const strict = await build(t, { requireOrigin: true })
  t.equal((await refusedUpgrade(wsUrl(strict.url))).status, 403, 'requireOrigin refuses clients that send no Origin')
})

t.test('a 64 KiB + 1 byte frame closes with 1009 while other clients receive a 10 msg/s stream without a gap', async (t) => {
  const { app, connect } = await build(t, { redis: redis.url })
  const watchers = await Promise.all([connect('?channels=ticks'), connect('?channels=ticks')])
  await Promise.all(watchers.map(async (w) => await w.waitFor((f) => f.type === 'subscribed')))
  let sent = 0
  const ticker = setInterval(() => { void app.broadcast(sent++, { channel: 'ticks' }) }, 100)
  t.teardown(() => clearInterval(ticker))
  await sleep(300)
  const offender = await connect()
  offender.send(Buffer.alloc(64 * 1024 + 1, 'a').toString())
  t.equal((await offender.closed).code, 1009)
  const exactly = await connect()
  exactly.send(`{"type":"ping","pad":"${'a'.repeat(64 * 1024 - 27)}"}`)
  t.same(await exactly.waitFor((f) => f.type === 'pong'), { type: 'pong' }, 'a 64 KiB frame is still fine')
  await sleep(500)
  clearInterval(ticker)
  const total = sent
  for (const watcher of watchers) {
    const messages = await watcher.messages(total)
    t.same(messages.map((m) => m.data), Array.from({ length: total }, (_, i) => i), 'every tick, in order')
  }
})

t.test('with compression on, the size limit applies after inflation', async (t) => {
  const { url } = await build(t, { compression: true, maxPayload: 4096 })
  const client = await TestClient.connect(wsUrl(url), { perMessageDeflate: true })
  t.ok(client.socket.extensions.includes('permessage-deflate'), 'compression was negotiated')
  client.send(JSON.stringify({ type: 'ping', pad: 'a'.repeat(100_000) }))
  t.equal((await client.closed).code, 1009, 'a frame that is small on the wire but big inflated is refused')
  const plain = await build(t, {})
  const offered = await TestClient.connect(wsUrl(plain.url), { perMessageDeflate: true })
  t.teardown(() => offered.close())
  t.equal(offered.socket.extensions, '', 'compression is off by default')
})

t.test('the 129th channel is refused with a LIMIT code', async (t) => {
  const { connect } = await build(t, { clientFrameBurst: 500, clientFrameRate: 500 })
  const client = await connect()
  for (let i = 0; i < 128; i++) client.send({ type: 'subscribe', channel: `c${i}` })
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'c127')
  client.send({ type: 'subscribe', channel: 'c128' })
  t.match(await client.waitFor((f) => f.type === 'error'), { code: /LIMIT/ })
  client.send({ type: 'subscribe', channel: 'c5' })
  await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'c5' && client.frames.filter((x) => x.channel === 'c5').length === 2)
  t.pass('subscribing again to a channel it has is not counted twice')
})

t.test('the default frame rate allows 200 frames at once and closes with 1008 beyond', async (t) => {
  const { connect } = await build(t, {})
  const calm = await connect()
  for (let i = 0; i < 200; i++) calm.send({ type: 'ping' })
  await calm.waitFor(() => calm.frames.length === 200)
  t.equal(calm.socket.readyState, calm.socket.OPEN, '200 frames in a burst are fine')
  const flood = await connect()
  for (let i = 0; i < 1000; i++) flood.send({ type: 'ping' })
  t.same(await flood.closed, { code: 1008, reason: 'too many frames' })
})

t.test('connection caps answer 503 per instance and 429 per IP, before the upgrade', async (t) => {
  const perInstance = await build(t, { maxConnections: 2 })
  const kept = [await perInstance.connect(), await perInstance.connect()]
  const full = await refusedUpgrade(wsUrl(perInstance.url))
  t.equal(full.status, 503)
  t.match(JSON.parse(full.body), { code: 'FRB_SERVER_FULL' })
  await kept[0].close()
  await sleep(50)
  const again = await perInstance.connect()
  t.ok(again, 'a slot frees when a connection closes')

  const perIp = await build(t, { maxConnectionsPerIp: 1 })
  await perIp.connect()
  const tooMany = await refusedUpgrade(wsUrl(perIp.url))
  t.equal(tooMany.status, 429)
  t.match(JSON.parse(tooMany.body), { code: 'FRB_TOO_MANY_CONNECTIONS' })
  t.equal((await fetch(`${perIp.url}/health`)).status, 200, 'plain HTTP requests are not counted')
  t.equal((await fetch(`${perIp.url}/ws`)).status, 404, 'nor a plain GET of the WebSocket path')
})

t.test('the upgrade rate limit answers 429 with Retry-After', async (t) => {
  const { url } = await build(t, { rateLimit: { upgrade: { max: 2, timeWindow: 60_000 } } })
  for (let i = 0; i < 2; i++) {
    const client = await TestClient.connect(wsUrl(url))
    await client.close()
  }
  const socket = new (await import('ws')).WebSocket(wsUrl(url))
  socket.on('error', () => {})
  const [status, retryAfter, body] = await new Promise<[number, string | undefined, string]>((resolve) => {
    socket.once('unexpected-response', (request, response) => {
      let text = ''
      response.on('data', (chunk: Buffer) => { text += chunk.toString() })
      response.on('end', () => resolve([response.statusCode ?? 0, response.headers['retry-after'], text]))
    })
  })
  t.equal(status, 429)
  t.match(JSON.parse(body), { code: 'FRB_RATE_LIMITED' })
  t.ok(Number(retryAfter) > 0)
})

t.test('the installed ws has the fragment-flood fix (8.21.0 or newer)', async (t) => {
  const version = (createRequire(import.meta.url)('ws/package.json') as { version: string }).version
  const [major, minor] = version.split('.').map(Number)
  t.ok(major > 8 || (major === 8 && minor >= 21), `ws ${version} must be >= 8.21.0`)
})

/** A raw TCP connection to the app that sends `head` (part of a request, or nothing) and waits. */
async function openRaw (url: string, head = ''): Promise<Socket> {
  const { port } = new URL(url)
  const socket = tcpConnect(Number(port), '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  if (head !== '') socket.write(head)
  return socket
}

/** Resolves when the socket closes, reset or not (events.once would reject on the reset's error). */
async function closeOf (socket: Socket): Promise<void> {
  await new Promise<void>((resolve) => socket.once('close', () => resolve()))
}

t.test('a connection that trickles its upgrade request is cut after handshakeTimeout', async (t) => {
  const { url, app } = await build(t, { redis: redis.url, handshakeTimeout: 1500 })
  t.equal(app.server.headersTimeout, 1500, 'later requests on a kept-alive connection get Node\'s bound, lowered to the same')
  const slow = await openRaw(url, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n')
  const silent = await openRaw(url)
  const closed = Promise.all([closeOf(slow), closeOf(silent)])
  // One header line every 200 ms keeps Node's own timers from firing for over a minute.
  const trickle = setInterval(() => { if (!slow.destroyed) slow.write(`X-Pad-${Date.now()}: 1\r\n`) }, 200)
  t.teardown(() => { clearInterval(trickle); slow.destroy(); silent.destroy() })
  const started = Date.now()
  const outcome = await Promise.race([closed.then(() => 'closed'), sleep(20_000).then(() => 'still open')])
  t.equal(outcome, 'closed', 'both were cut by the server')
  t.ok(Date.now() - started >= 1000, 'not before the timeout')
  const client = await TestClient.connect(wsUrl(url))
  t.teardown(() => client.close())
  t.equal(client.socket.readyState, 1, 'a prompt upgrade is not affected')
})

t.test('connections pending past a second count against maxConnections', async (t) => {
  const { url, app } = await build(t, { redis: redis.url, maxConnections: 3, handshakeTimeout: 60_000 })
  const idle = await Promise.all([openRaw(url), openRaw(url), openRaw(url, 'GET /ws HTTP/1.1\r\n')])
  t.teardown(() => { for (const socket of idle) socket.destroy() })
  await sleep(1500)
  const refused = await openRaw(url)
  const outcome = await Promise.race([closeOf(refused).then(() => 'cut'), sleep(10_000).then(() => 'kept')])
  t.equal(outcome, 'cut', 'a fourth connection is cut at once: three are held pending')
  t.equal(app.broadcastConnections.size, 0)
  idle[0].destroy()
  idle[1].destroy()
  await sleep(200)
  const client = await TestClient.connect(wsUrl(url))
  t.teardown(() => client.close())
  t.equal(client.socket.readyState, 1, 'room again once pending ones left')
})

t.test('over TLS, a connection that sends no request after its handshake is cut too, and a prompt one is not', async (t) => {
  const fixtures = new URL('./fixtures/', import.meta.url)
  const https = { key: readFileSync(new URL('tls-key.pem', fixtures)), cert: readFileSync(new URL('tls-cert.pem', fixtures)) }
  const { url } = await build(t, { redis: redis.url, handshakeTimeout: 1500 }, { https } as never)
  const { port } = new URL(url)
  const silent = tlsConnect({ port: Number(port), host: '127.0.0.1', rejectUnauthorized: false })
  silent.on('error', () => {})
  t.teardown(() => silent.destroy())
  await once(silent, 'secureConnect')
  const outcome = await Promise.race([closeOf(silent).then(() => 'closed'), sleep(20_000).then(() => 'still open')])
  t.equal(outcome, 'closed', 'cut after the timeout')
  const status = await new Promise<number>((resolve, reject) => {
    httpsGet({ host: '127.0.0.1', port, path: '/health', rejectUnauthorized: false }, (res) => { res.resume(); resolve(res.statusCode as number) }).on('error', reject)
  })
  t.equal(status, 200, 'a prompt request over TLS is served')
})
