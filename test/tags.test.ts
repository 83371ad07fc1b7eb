import t from 'tap'
import { encodeMessage } from '../plugin/frames.js'
import { Filter, isMessageFrame, parseFilter, tagsOf } from '../plugin/tags.js'

// Reading a message's tags from its frame bytes, and judging filters (pure functions; the
// behaviour over real sockets is in test/filters.test.ts).

const frame = (data: unknown, tags?: Record<string, string>): Buffer => Buffer.from(encodeMessage(data, 'c', tags))

t.test('tags are read from the frame, quotes and braces in values included, never from the data', async (t) => {
  t.same(tagsOf(frame(1, { a: 'x"}y', b: 'back\\slash' })), { a: 'x"}y', b: 'back\\slash' })
  t.equal(tagsOf(frame({ s: ',"tags":{"a":"1"}' })), undefined, 'a tags-like string in the data is data')
  t.equal(tagsOf(frame({ tags: { a: '1' } })), undefined, 'so is a tags key in the data')
  const same = frame(1, { a: '1' })
  t.equal(tagsOf(same), tagsOf(same), 'the same bytes are parsed once')
})

t.test('two filters judge one message each once, from one parse; frames that are not messages are told apart', async (t) => {
  const message = frame(1, { symbol: 'AAPL', venue: 'XNAS' })
  const apple = new Filter('a', parseFilter({ symbol: ['AAPL'] }).rules)
  const both = new Filter('b', parseFilter({ symbol: ['AAPL', 'MSFT'], venue: ['XLON'] }).rules)
  t.ok(apple.passes(message))
  t.notOk(both.passes(message), 'every key must match')
  t.ok(apple.passes(message), 'the verdict again, remembered')
  t.ok(isMessageFrame(message))
  t.notOk(isMessageFrame(Buffer.from('{"type":"gap","channel":"c"}')))
  t.notOk(isMessageFrame(Buffer.from('{"type":"join","channel":"c","identity":"a"}')))
  t.equal(parseFilter({ b: ['2', '1'], a: ['x'] }).key, parseFilter({ a: ['x'], b: ['1', '2'] }).key, 'key and value order make no new filter')
})
