import t from 'tap'
import type { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { build, type TestApp } from './helpers/app.js'
import { clientFrame, RawSocket } from './helpers/raw-socket.js'
import { startRedis } from './helpers/redis-server.js'
import { plain } from './helpers/client.js'
import { sessionsOf } from './helpers/sessions.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('a subscription Redis refuses gets an error frame, and the connection keeps working', async (t) => {
  // A Redis user that may only use some channels, as a locked-down deployment would have.
  await redis.client().call('ACL', 'SETUSER', 'hub', 'on', '>secret', '~*', '+@all', 'resetchannels', '&frb:all', '&frb:c:public*')
  const { connect, publish } = await build(t, { redis: `redis://hub:secret@127.0.0.1:${redis.port}` })
  const client = await connect()
  const from = client.frames.length
  client.send({ type: 'subscribe', channel: 'private' })
  const refusal = await client.waitFor((f) => f.type === 'error', { from })
  t.match(refusal, { code: 'FRB_BUS_REFUSED', message: /NOPERM|permission/i })
  const refusedPublish = await publish({ channel: 'private', data: 'no' })
  t.equal(refusedPublish.status, 502, 'a publish Redis refuses is a 502: retrying would not help')
  t.equal(refusedPublish.headers.get('retry-after'), null, 'so no Retry-After')
  t.match(await refusedPublish.json(), { code: 'FRB_BUS_REFUSED', message: /NOPERM|permission|can't publish/i })
  await client.subscribe('public:news')
  await publish({ channel: 'public:news', data: 'ok' })
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'public:news', data: 'ok' }])
})

t.test('publishes made in one turn share one script call, and each is answered on its own', async (t) => {
  const admin = redis.client()
  await admin.call('ACL', 'SETUSER', 'hub', 'on', '>secret', '~*', '+@all', 'resetchannels', '&frb:all', '&frb:c:public*')
  const { app } = await build(t, { redis: `redis://hub:secret@127.0.0.1:${redis.port}` })
  await app.broadcast('warm-up', { channel: 'public:shared' })
  await admin.call('CONFIG', 'RESETSTAT')
  const outcomes = await Promise.allSettled([
    app.broadcast('a', { channel: 'public:shared' }),
    app.broadcast('refused', { channel: 'private' }),
    app.broadcast('b', { channel: 'public:shared', idempotencyKey: 'k1' }),
    app.broadcast('b again', { channel: 'public:shared', idempotencyKey: 'k1' })
  ])
  const stats = await admin.call('INFO', 'commandstats') as string
  t.match(stats, /cmdstat_evalsha:calls=1,/, 'four publishes, one EVALSHA')
  const [a, refused, b, again] = outcomes
  t.match(a, { status: 'fulfilled', value: { offset: 2, duplicate: false } })
  t.match(refused, { status: 'rejected', reason: { code: 'FRB_BUS_REFUSED' } }, 'the one Redis refuses fails alone')
  t.match(b, { status: 'fulfilled', value: { offset: 3, duplicate: false } })
  t.match(again, { status: 'fulfilled', value: { offset: 3, duplicate: true } }, 'an idempotency key seen earlier in the same call is a duplicate')
  const epoch = (a as PromiseFulfilledResult<{ epoch: string }>).value.epoch
  t.match(await app.broadcast('c', { channel: 'public:shared' }), { offset: 4, epoch }, 'the channel\'s history goes on')
})

t.test('a Redis user without INFO still publishes with history; the log says a failover cannot be told', async (t) => {
  await redis.client().call('ACL', 'SETUSER', 'noinfo', 'on', '>secret', '~*', '&*', '+@all', '-info')
  const { app, logs } = await build(t, { redis: `redis://noinfo:secret@127.0.0.1:${redis.port}` })
  t.match(await app.broadcast('a', { channel: 'no-info' }), { offset: 1 })
  t.match(await app.broadcast('b', { channel: 'no-info' }), { offset: 2 }, 'the history goes on')
  t.ok(logs.some((line) => /refused INFO replication/.test(line.msg)), 'a warning says what is lost')
})

// A turn's messages are queued and written to each socket together at the end of the turn: a write
// that fails is caught whether the turn carried one message or several.
const TURNS = [
  { name: 'one message a turn', send: async (publish: TestApp['publish']) => { await publish({ channel: 'c', data: 1 }); await publish({ channel: 'c', data: 2 }) } },
  { name: 'two messages in one turn', send: async (publish: TestApp['publish']) => { await publish([{ channel: 'c', data: 1 }, { channel: 'c', data: 2 }]) } }
]

for (const compression of [false, true]) {
  for (const turn of compression ? TURNS.slice(0, 1) : TURNS) {
    t.test(`a socket whose write fails is dropped alone; the others still receive (${turn.name}${compression ? ', permessage-deflate' : ''})`, async (t) => {
      const { app, connect, publish } = await build(t, { compression })
      const clients = await Promise.all([connect('?channels=c'), connect('?channels=c'), connect('?channels=c')])
      await Promise.all(clients.map(async (c) => await c.waitFor((f) => f.type === 'subscribed')))
      const [broken] = sessionsOf(app)
      const fail = (): never => { throw new Error('write failed') }
      // Without compression frames go straight to the TCP socket; with it, through ws.
      if (compression) broken.socket.send = fail
      else (broken.tcp as Writable).write = fail
      await turn.send(publish)
      const outcomes = await Promise.all(clients.map(async (client) => await Promise.race([
        client.messages(2).then((messages) => messages.map((m) => m.data)),
        client.closed.then(({ code }) => code)
      ])))
      t.same(outcomes.filter((o) => Array.isArray(o)), [[1, 2], [1, 2]], 'the two healthy clients received both messages in order')
      t.same(outcomes.filter((o) => !Array.isArray(o)), [1006], 'the failing one was terminated')
      t.equal(app.broadcastConnections.size, 2, 'the failing connection was evicted')
      t.notOk(app.broadcastConnections.has(broken))
    })
  }
}

t.test('a socket in its closing handshake is not written to; the others still receive', async (t) => {
  const { app, url, connect, publish } = await build(t)
  const open = await connect('?channels=c')
  // A peer that sends its close frame and then never finishes closing: its socket stays CLOSING.
  const closing = await RawSocket.open(Number(new URL(url).port), '/ws?channels=c', { allowHalfOpen: true })
  await open.waitFor((f) => f.type === 'subscribed')
  t.ok(await closing.waitForText('"subscribed"'), 'both subscribed')
  closing.send(clientFrame({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) }))
  t.equal(await closing.closeCode(), 1000, 'the server answered the close')
  t.equal(app.broadcastConnections.size, 2, 'and still holds the closing connection')
  const before = app.broadcastStats().messagesOut
  await publish({ channel: 'c', data: 'after the close' })
  t.same((await open.messages(1)).map((m) => m.data), ['after the close'])
  t.equal(app.broadcastStats().messagesOut - before, 1, 'one delivery counted: none was queued to the closing socket')
  closing.destroy()
})

t.test('a frame over the size limit closes that socket with 1009; the others keep going', async (t) => {
  const { connect, publish } = await build(t, { maxPayload: 1024 })
  const bystander = await connect('?channels=c')
  const offender = await connect('?channels=c')
  await bystander.waitFor((f) => f.type === 'subscribed')
  await offender.waitFor((f) => f.type === 'subscribed')
  offender.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(2000) }))
  t.equal((await offender.closed).code, 1009)
  await sleep(20)
  await publish({ channel: 'c', data: 'still flowing' })
  t.same(plain(await bystander.messages(1)), [{ type: 'message', channel: 'c', data: 'still flowing' }])
})
