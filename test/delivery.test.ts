import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { build, busOptions, BUS_KINDS } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain } from './helpers/client.js'
import { sessionsOf } from './helpers/sessions.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

for (const kind of BUS_KINDS) {
  t.test(`on the ${kind} bus`, async (t) => {
    t.test('a client subscribed at connect receives a channel publish exactly as sent', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=news,sport')
      await client.waitFor((f) => f.type === 'subscribed' && f.channel === 'sport')
      t.same(client.frames.slice(0, 2), [
        { type: 'subscribed', channel: 'news' },
        { type: 'subscribed', channel: 'sport' }
      ], 'one subscribed frame per channel, in the order asked')
      const response = await publish({ channel: 'news', data: { text: 'hi', n: [1, 2, { deep: true }] } })
      t.equal(response.status, 202)
      t.same(await response.json(), { status: 'accepted', offset: 1, epoch: (await client.messages(1))[0].epoch }, 'the reply says where the message stands')
      const [message] = await client.messages(1)
      t.match(message, { offset: 1, epoch: /^[0-9a-f]+$/ }, 'and so does the frame')
      t.same(plain([message])[0], { type: 'message', channel: 'news', data: { text: 'hi', n: [1, 2, { deep: true }] } })
    })

    t.test('a publish reaches only the subscribers of its channel', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const news = await connect()
      const sport = await connect()
      const idle = await connect()
      await news.subscribe('news')
      await sport.subscribe('sport')
      await publish({ channel: 'news', data: 'n1' })
      await publish({ channel: 'sport', data: 's1' })
      await news.messages(1)
      await sport.messages(1)
      await sleep(100)
      t.same(plain(news.received()), [{ type: 'message', channel: 'news', data: 'n1' }])
      t.same(plain(sport.received()), [{ type: 'message', channel: 'sport', data: 's1' }])
      t.same(plain(idle.received()), [], 'a client with no channel gets no channel message')
    })

    t.test('a publish without a channel reaches every connection, with no channel key', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const clients = await Promise.all([connect(), connect('?channels=a'), connect('?channels=b')])
      await clients[2].waitFor((f) => f.type === 'subscribed')
      await publish({ data: { alert: 'all' } })
      for (const client of clients) {
        const [message] = await client.messages(1)
        t.same(message, { type: 'message', data: { alert: 'all' } })
        t.notOk('channel' in message)
      }
    })

    t.test('app.broadcast() publishes from code, to a channel or to all', async (t) => {
      const { app, connect } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=c')
      await client.waitFor((f) => f.type === 'subscribed')
      await app.broadcast({ from: 'code' }, { channel: 'c' })
      await app.broadcast('everyone')
      t.same(plain(await client.messages(2)), [
        { type: 'message', channel: 'c', data: { from: 'code' } },
        { type: 'message', data: 'everyone' }
      ])
      await t.rejects(app.broadcast(1, { channel: 'bad channel' }), { code: 'FRB_INVALID_CHANNEL', statusCode: 400 })
      await t.rejects(app.broadcast(undefined), { code: 'FRB_INVALID_DATA' })
    })

    t.test('unsubscribe stops delivery and is acknowledged', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect()
      await client.subscribe('news')
      await publish({ channel: 'news', data: 1 })
      await client.messages(1)
      await client.unsubscribe('news')
      await publish({ channel: 'news', data: 2 })
      await publish({ data: 'marker' })
      await client.messages(2)
      t.same(client.received().map((f) => f.data), [1, 'marker'], 'nothing from the channel after unsubscribe')
      await client.unsubscribe('never-joined')
      t.pass('unsubscribing from a channel never joined is acknowledged too')
    })

    t.test('1,000 messages arrive in publish order, once each, at every subscriber', async (t) => {
      const { app, connect } = await build(t, busOptions(kind, redis.url))
      const clients = await Promise.all([connect('?channels=seq'), connect('?channels=seq'), connect('?channels=seq')])
      await Promise.all(clients.map((c) => c.waitFor((f) => f.type === 'subscribed')))
      for (let i = 0; i < 1000; i++) void app.broadcast({ seq: i }, { channel: 'seq' })
      const expected = Array.from({ length: 1000 }, (_, i) => i)
      for (const client of clients) {
        const messages = await client.messages(1000, 10_000)
        t.same(messages.map((m) => (m.data as { seq: number }).seq), expected)
      }
      await sleep(100)
      t.equal(clients[0].received().length, 1000, 'no duplicates arrive late')
    })

    t.test('a ping frame gets a pong', async (t) => {
      const { connect } = await build(t, busOptions(kind, redis.url))
      const client = await connect()
      client.send({ type: 'ping' })
      t.same(await client.waitFor((f) => f.type === 'pong'), { type: 'pong' })
    })

    t.test('a closed socket leaves every set and is never written to again', async (t) => {
      const { app, connect, publish } = await build(t, busOptions(kind, redis.url))
      const staying = await connect('?channels=news')
      const leaving = await connect('?channels=news')
      await leaving.waitFor((f) => f.type === 'subscribed')
      await staying.waitFor((f) => f.type === 'subscribed')
      t.equal(app.broadcastConnections.size, 2)
      const serverSide = sessionsOf(app).map((session) => session.socket)
      const writesAfterClose: unknown[] = []
      await leaving.close()
      while (app.broadcastConnections.size > 1) await sleep(5)
      for (const socket of serverSide) {
        if (socket.readyState !== socket.OPEN) {
          const send = socket.send.bind(socket)
          socket.send = ((...args: Parameters<typeof send>) => { writesAfterClose.push(args[0]); return send(...args) }) as typeof socket.send
        }
      }
      await publish({ channel: 'news', data: 'after' })
      await publish({ data: 'all' })
      await staying.messages(2)
      t.same(writesAfterClose, [], 'nothing written to the closed socket')
      t.equal(app.broadcastConnections.size, 1)
    })
  })
}
