import t from 'tap'
import Fastify from 'fastify'
import { LiveOrder } from '../plugin/history/live-order.js'
import { BroadcastStats } from '../plugin/stats.js'
import type { HistoryPage } from '../plugin/bus/bus.js'

// LiveOrder decides, message by message, what to deliver, hold, read back or report. Its reads
// are a function it is given: here one the test answers by hand, to put a reconnect or a departure
// exactly while a read is in flight (test/resume.test.ts covers the same paths against Redis).

const frame = (offset: number, epoch = 'e1'): Buffer =>
  Buffer.from(`{"type":"message","channel":"c","offset":${offset},"epoch":"${epoch}","data":${offset}}`)

function harness () {
  const delivered: string[] = []
  const reads: Array<{ since: number, limit: number, answer: (page: HistoryPage | undefined) => void, fail: (err: Error) => void }> = []
  const order = new LiveOrder({
    deliver: (channel, payload) => { delivered.push(payload.toString().includes('"gap"') ? 'gap' : String(JSON.parse(payload.toString()).offset)) },
    fetch: async (channel, since, limit) => await new Promise((resolve, reject) => { reads.push({ since, limit, answer: resolve, fail: reject }) }),
    reportGap: () => { delivered.push('gap') }
  }, 10, new BroadcastStats(), Fastify({ logger: false }).log)
  const page = (epoch: string, offset: number, offsets: number[]): HistoryPage =>
    ({ epoch, offset, messages: offsets.map((n) => ({ offset: n, frame: frame(n, epoch) })) })
  return { order, delivered, reads, page }
}

const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await Promise.resolve() }

t.test('a reconnect during a repair is caught up once the repair is done', async (t) => {
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.accept('c', frame(3))
  t.same(reads.map((r) => [r.since, r.limit]), [[1, 1]], 'offset 2 is being read back')
  order.catchUp()
  t.equal(reads.length, 1, 'no second read while the first runs')
  reads[0].answer(page('e1', 5, [2]))
  await settle()
  t.same(delivered, ['1', '2', '3'])
  t.same(reads.map((r) => r.since), [1, 3], 'then the catch-up reads what came after')
  reads[1].answer(page('e1', 5, [4, 5]))
  await settle()
  t.same(delivered, ['1', '2', '3', '4', '5'])
})

t.test('a new epoch among the held messages: the ones after it follow the new history', async (t) => {
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.accept('c', frame(3))
  order.accept('c', frame(1, 'e2'))
  order.accept('c', frame(3, 'e2'))
  reads[0].answer(page('e1', 3, [2]))
  await settle()
  t.same(delivered, ['1', '2', '3', '1'], 'the new epoch starts afresh')
  t.same(reads.map((r) => r.since), [1, 1], 'and its own hole (offset 2 of e2) is read back in it')
  reads[1].answer(page('e2', 3, [2]))
  await settle()
  t.same(delivered, ['1', '2', '3', '1', '2', '3'])
})

t.test('a channel forgotten while its repair runs delivers nothing more', async (t) => {
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.accept('c', frame(3))
  order.forget('c')
  reads[0].answer(page('e1', 3, [2]))
  await settle()
  t.same(delivered, ['1'])
})

t.test('a gap wider than the repair limit is reported without a read', async (t) => {
  const { order, delivered, reads } = harness()
  order.accept('c', frame(1))
  order.accept('c', frame(30))
  await settle()
  t.same(reads, [])
  t.same(delivered, ['1', 'gap', '30'])
})

t.test('a catch-up that finds a new epoch: a gap frame, then every message of the new history that is still there', async (t) => {
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.catchUp()
  t.same(reads.map((r) => r.since), [1], 'what came after offset 1 of e1 is read')
  reads[0].answer(page('e2', 3, [2, 3]))
  await settle()
  t.same(reads.map((r) => [r.since, r.limit]), [[1, 10], [0, 3]], 'the history is in e2 now: read from its start')
  order.accept('c', frame(4, 'e2'))
  reads[1].answer(page('e2', 3, [1, 2, 3]))
  await settle()
  t.same(delivered, ['1', 'gap', '1', '2', '3', '4'], 'the gap, e2 from its first message, then what arrived live meanwhile')
})

t.test('a new epoch that cannot be read whole: the gap frame alone, then the live messages', async (t) => {
  for (const [name, answer] of [
    ['trimmed', (r: { answer: (p: HistoryPage | undefined) => void }, page: (e: string, o: number, m: number[]) => HistoryPage) => { r.answer(page('e2', 3, [2, 3])) }],
    ['gone', (r: { answer: (p: HistoryPage | undefined) => void }) => { r.answer(undefined) }],
    ['failed', (r: { fail: (err: Error) => void }) => { r.fail(new Error('Redis went away')) }]
  ] as const) {
    const { order, delivered, reads, page } = harness()
    order.accept('c', frame(1))
    order.catchUp()
    reads[0].answer(page('e2', 3, [2, 3]))
    await settle()
    answer(reads[1] as typeof reads[0], page)
    await settle()
    order.accept('c', frame(4, 'e2'))
    t.same(delivered, ['1', 'gap', '4'], name)
  }
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.catchUp()
  reads[0].answer(page('e2', 30, [21, 22]))
  await settle()
  t.equal(reads.length, 1, 'more than the repair limit: not read')
  t.same(delivered, ['1', 'gap'])
})

t.test('a channel forgotten while a new epoch is read delivers nothing more', async (t) => {
  const { order, delivered, reads, page } = harness()
  order.accept('c', frame(1))
  order.catchUp()
  reads[0].answer(page('e2', 2, [2]))
  await settle()
  order.forget('c')
  reads[1].answer(page('e2', 2, [1, 2]))
  await settle()
  t.same(delivered, ['1', 'gap'])
})
