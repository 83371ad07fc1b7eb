import t from 'tap'
import { Type } from '@sinclair/typebox'
import { publishBodyValidator } from '../routes/publish-body.js'
import { build, busOptions, BUS_KINDS } from './helpers/app.js'
import { refusedUpgrade, wsUrl, plain } from './helpers/client.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

for (const kind of BUS_KINDS) {
  t.test(`on the ${kind} bus`, async (t) => {
    t.test('bad frames get coded error frames and the connection stays open', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect()
      const cases: Array<[string | Buffer, RegExp]> = [
        ['not json', /^FRB_BAD_JSON$/],
        ['[1,2]', /^FRB_BAD_JSON$/],
        ['{"type":"dance"}', /^FRB_UNKNOWN_TYPE$/],
        ['{"type":"subscribe","channel":"has space"}', /CHANNEL/],
        ['{"type":"subscribe","channel":""}', /CHANNEL/],
        [`{"type":"subscribe","channel":"${'x'.repeat(129)}"}`, /CHANNEL/],
        ['{"type":"unsubscribe","channel":"a/b"}', /CHANNEL/]
      ]
      for (const [frame, code] of cases) {
        const from = client.frames.length
        client.send(frame)
        const error = await client.waitFor((f) => f.type === 'error', { from })
        t.match(error, { type: 'error', code, message: String }, String(frame).slice(0, 40))
      }
      const from = client.frames.length
      client.socket.send(Buffer.from('{"type":"ping"}'), { binary: true })
      t.match(await client.waitFor((f) => f.type === 'error', { from }), { code: 'FRB_BAD_JSON' }, 'a binary frame is refused')
      await client.subscribe('ok')
      await publish({ channel: 'ok', data: 'still here' })
      t.same(plain(await client.messages(1)), [{ type: 'message', channel: 'ok', data: 'still here' }])
    })

    t.test('a bad channel in the connect query is refused before the upgrade', async (t) => {
      const { url } = await build(t, busOptions(kind, redis.url))
      const refusal = await refusedUpgrade(wsUrl(url, '?channels=ok,bad%20name'))
      t.equal(refusal.status, 400)
      t.match(JSON.parse(refusal.body), { code: 'FST_ERR_VALIDATION' })
    })

    t.test('bad publish bodies get 400 with Fastify\'s error body, and nothing is delivered', async (t) => {
      const { connect, publish } = await build(t, busOptions(kind, redis.url))
      const client = await connect('?channels=news')
      await client.waitFor((f) => f.type === 'subscribed')
      const bodies: unknown[] = [
        '{"channel":"news","data":', // malformed JSON
        { channel: 'news' }, // no data
        { channel: 'bad name', data: 1 },
        { channel: '', data: 1 },
        { channel: 42, data: 1 },
        [{ channel: 'news', data: 1 }, { channel: 'news' }], // a batch with an entry without data
        [], // an empty batch
        'null'
      ]
      for (const body of bodies) {
        const response = await publish(body)
        t.equal(response.status, 400, JSON.stringify(body))
        t.match(await response.json(), { statusCode: 400, error: 'Bad Request', code: String, message: String })
      }
      const wrongType = await publish('data=1', { 'content-type': 'application/x-www-form-urlencoded' })
      t.equal(wrongType.status, 415, 'a body that is not JSON is refused with 415')
      const text = await publish('hello', { 'content-type': 'text/plain' })
      t.equal(text.status, 415, 'text/plain too')
      const tooBig = await publish({ channel: 'news', data: 'x'.repeat(70_000) })
      t.equal(tooBig.status, 413, 'a body over the limit is refused with 413')
      await publish({ data: 'marker' })
      t.same(plain(await client.messages(1)), [{ type: 'message', data: 'marker' }], 'only the valid publish arrived')
    })
  })
}

t.test('a refused publish body names the field, the rule and, in a batch, the message', async (t) => {
  const { publish } = await build(t, { redis: redis.url })
  const cases: Array<[unknown, RegExp]> = [
    [{ channel: 'news' }, /^The publish body was refused: "data" is required$/],
    [{}, /"data" is required/],
    [{ channel: 'my news', data: 1 }, /"channel" is invalid: A channel name: 1-128 characters of A-Z a-z 0-9 _ - \. :.* \(got "my news"\)/],
    [{ channel: 42, data: 1 }, /"channel" is invalid: .*\(got 42\)/],
    [{ channel: '', data: 1 }, /"channel" is invalid: .*\(got ""\)/],
    [[{ data: 1 }, { channel: 'a b', data: 2 }], /^The publish body was refused: message 1: "channel" is invalid/],
    [[{ data: 1 }, 7], /message 1: a message is a JSON object with "data" \(got number\)/],
    [[], /a batch holds 1 to 1000 messages \(maxBatchSize\), got 0/],
    [{ data: 1, idempotencyKey: '' }, /"idempotencyKey" is invalid: .*printable ASCII/]
  ]
  for (const [body, message] of cases) {
    const response = await publish(body)
    t.equal(response.status, 400, JSON.stringify(body))
    t.match(await response.json(), { code: 'FRB_INVALID_PUBLISH', message }, JSON.stringify(body))
  }
  const long = await publish({ channel: 'x'.repeat(300), data: 1 })
  t.match(await long.json(), { message: /\(got "x{70,}\.\.\.\)/ }, 'a long value is shown cut short')
})

t.test('the publish body validator, on its own: a rule without a description, null, a value JSON cannot show', async (t) => {
  const validate = publishBodyValidator(Type.Object({ n: Type.Number() }), 2)
  t.match(validate({ n: 'x' }), { error: { message: /"n" is invalid: Expected number \(got "x"\)/ } })
  t.match(validate([null]), { error: { message: /message 0: a message is a JSON object with "data" \(got null\)/ } })
  t.match(validate([[1]]), { error: { message: /\(got an array\)/ } })
  t.match(validate({ n: undefined }), { error: { message: /"n"/ } })
  t.same(validate({ n: 1 }), { value: { n: 1 } })
})
