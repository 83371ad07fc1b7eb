import t from 'tap'
import * as ws from 'ws'
import { textFrame } from '../plugin/websocket-frame.js'
import { encodeMessage, errorFrame, isWireError, parseClientFrame, subscribedFrame, toWireError, unsubscribedFrame, PONG_FRAME } from '../plugin/frames.js'
import { isValidChannel } from '../plugin/channel.js'

t.test('a channel name is 1-128 characters of A-Z a-z 0-9 _ - . :', async (t) => {
  for (const name of ['a', 'news', 'room:42', 'a.b-c_d', 'x'.repeat(128), 'Z:9']) t.ok(isValidChannel(name), name)
  for (const name of ['', 'x'.repeat(129), 'with space', 'slash/es', 'é', 'a,b', 'new\nline', 42, null, undefined]) {
    t.notOk(isValidChannel(name), JSON.stringify(name))
  }
})

t.test('a message is encoded once, with the channel key only for channel messages', async (t) => {
  t.equal(encodeMessage({ text: 'hi' }, 'news'), '{"type":"message","channel":"news","data":{"text":"hi"}}')
  t.equal(encodeMessage([1, 2]), '{"type":"message","data":[1,2]}')
  t.same(JSON.parse(encodeMessage(null, 'a')), { type: 'message', channel: 'a', data: null })
})

t.test('data that is not JSON is refused with FRB_INVALID_DATA', async (t) => {
  t.throws(() => encodeMessage(undefined), { code: 'FRB_INVALID_DATA', statusCode: 400 })
  t.throws(() => encodeMessage(() => 1), { code: 'FRB_INVALID_DATA' })
  t.throws(() => encodeMessage({ n: 1n }), { code: 'FRB_INVALID_DATA' })
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  t.throws(() => encodeMessage(cyclic), { code: 'FRB_INVALID_DATA' })
})

t.test('client frames are parsed into typed frames or coded errors', async (t) => {
  const parse = (text: string, binary = false) => parseClientFrame(Buffer.from(text), binary)
  t.same(parse('{"type":"subscribe","channel":"news"}'), { type: 'subscribe', channel: 'news' })
  t.same(parse('{"type":"unsubscribe","channel":"news"}'), { type: 'unsubscribe', channel: 'news' })
  t.same(parse('{"type":"ping"}'), { type: 'ping' })
  t.match(parse('not json'), { code: 'FRB_BAD_JSON' })
  t.match(parse('[1]'), { code: 'FRB_BAD_JSON' })
  t.match(parse('null'), { code: 'FRB_BAD_JSON' })
  t.match(parse('{"type":"ping"}', true), { code: 'FRB_BAD_JSON' })
  t.match(parse('{"type":"dance"}'), { code: 'FRB_UNKNOWN_TYPE', message: /"dance"/ })
  t.match(parse('{}'), { code: 'FRB_UNKNOWN_TYPE' })
  t.match(parse('{"type":"subscribe","channel":"bad name"}'), { code: 'FRB_INVALID_CHANNEL' })
  t.match(parse('{"type":"subscribe"}'), { code: 'FRB_INVALID_CHANNEL' })
  const long = parse(`{"type":"subscribe","channel":"${'x'.repeat(300)}"}`)
  t.ok(isWireError(long) && long.message.length < 200, 'a long bad value is cut short in the message')
})

t.test('server frames follow the documented shapes', async (t) => {
  t.same(JSON.parse(subscribedFrame('a')), { type: 'subscribed', channel: 'a' })
  t.same(JSON.parse(unsubscribedFrame('a')), { type: 'unsubscribed', channel: 'a' })
  t.same(JSON.parse(PONG_FRAME), { type: 'pong' })
  t.same(JSON.parse(errorFrame({ code: 'FRB_X', message: 'm' })), { type: 'error', code: 'FRB_X', message: 'm' })
  t.same(toWireError(new Error('boom')), { code: 'FRB_INTERNAL', message: 'boom' }, 'an uncoded error still gets a code')
  t.same(toWireError(null), { code: 'FRB_INTERNAL', message: 'null' }, 'so does a thrown non-error')
})

// ws exports its frame builder but @types/ws does not describe it.
interface FrameOptions { fin: boolean, rsv1: boolean, opcode: number, mask: boolean, readOnly: boolean }
const { Sender } = ws as unknown as { Sender: { frame: (data: Buffer, options: FrameOptions) => Buffer[] } }

t.test('textFrame builds the very bytes ws would send for the same payload, at every length encoding', async (t) => {
  for (const length of [0, 1, 125, 126, 16 * 1024, 16 * 1024 + 1, 65535, 65536, 70000]) {
    const payload = Buffer.alloc(length, 'a')
    const ours = Buffer.concat(textFrame(payload))
    const theirs = Buffer.concat(Sender.frame(payload, { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true }))
    t.ok(ours.equals(theirs), `${length} bytes`)
  }
  t.equal(textFrame(Buffer.alloc(100)).length, 1, 'a small message is one buffer, header and payload together')
  t.equal(textFrame(Buffer.alloc(65536)).length, 2, 'a large one is a header and the payload itself, not a copy')
})
