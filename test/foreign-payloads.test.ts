import t from 'tap'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'
import { plain } from './helpers/client.js'

// Whoever can PUBLISH on the plugin's Redis channels can reach every client: what is not one of
// the plugin's messages is dropped by a check that never parses it, and counted.

const redis = await startRedis()
t.teardown(() => redis.stop())
const direct = redis.client()

t.test('non-JSON, a 10 MiB blob, a __proto__ key and invalid UTF-8 are dropped and counted, never forwarded', async (t) => {
  const { app, connect, logs } = await build(t, { redis: redis.url })
  const client = await connect('?channels=news')
  await client.waitFor((f) => f.type === 'subscribed')
  const hostile: Array<[string, string | Buffer]> = [
    ['frb:c:news', 'not json at all'],
    ['frb:c:news', `{"type":"message","channel":"news","data":"${'x'.repeat(10 * 1024 * 1024)}"}`],
    ['frb:c:news', '{"type":"message","channel":"news","data":{"__proto__":{"admin":true}}}'],
    ['frb:c:news', Buffer.concat([Buffer.from('{"type":"message","channel":"news","data":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])],
    ['frb:all', '{"type":"subscribed","channel":"news"}'],
    ['frb:all', '']
  ]
  for (const [channel, payload] of hostile) await direct.publish(channel, payload)
  await direct.publish('frb:c:news', '{"type":"message","channel":"news","data":"fine"}')
  t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'news', data: 'fine' }], 'only the real message arrives')
  t.same(client.frames.filter((f) => f.type !== 'subscribed'), [{ type: 'message', channel: 'news', data: 'fine' }], 'nothing else did')
  t.match(app.broadcastStats(), { droppedForeignPayloads: hostile.length, messagesIn: hostile.length + 1, messagesOut: 1 })
  const warnings = logs.filter((line) => /not a plugin message/.test(line.msg))
  t.equal(warnings.length, 1, 'one warning for the whole burst, not one per payload')
  t.match(warnings[0], { reason: 'not a message frame', channel: 'news' })
  t.equal(client.socket.readyState, 1, 'the client is still connected')
})

t.test('broadcast() refuses what every instance would drop: a __proto__ key and a message over maxMessageBytes', async (t) => {
  const { app, publish } = await build(t, { redis: redis.url, maxMessageBytes: 1024 })
  await t.rejects(app.broadcast(JSON.parse('{"__proto__":{"admin":true}}')), { code: 'FRB_INVALID_DATA', statusCode: 400 })
  await t.rejects(app.broadcast('x'.repeat(1024)), { code: 'FRB_MESSAGE_TOO_LARGE', statusCode: 413 })
  const tooLarge = await publish({ data: 'x'.repeat(2000) })
  t.equal(tooLarge.status, 413)
  t.match(await tooLarge.json(), { code: 'FRB_MESSAGE_TOO_LARGE' })
  const poisoned = await publish('{"data":{"__proto__":{"admin":true}}}')
  t.equal(poisoned.status, 400, 'Fastify already refuses such a body')
  t.equal((await publish({ data: 'a string that merely says "__proto__":' })).status, 202, 'the text inside a string is fine')
})
