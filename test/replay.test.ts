import t from 'tap'
import { ChannelSync, honoursResume, type LiveMessage } from '../plugin/history/replay.js'

// The resume state machine of plugin/history/replay.ts, step by step: hold, release, skip.

const at = (offset: number, epoch = 'e1'): LiveMessage => ({ payload: Buffer.from(String(offset)), position: { offset, epoch } })
const page = (epoch: string, top: number, offsets: number[]) => ({
  epoch, offset: top, messages: offsets.map((offset) => ({ offset, frame: Buffer.from(String(offset)) }))
})

t.test('live messages are held until the replay is released, then handed back in arrival order', async (t) => {
  const sync = new ChannelSync()
  t.equal(sync.offer(at(4)), 'hold')
  t.equal(sync.offer({ payload: Buffer.from('gap'), position: undefined }), 'hold', 'frames without an offset are held too, to keep their order')
  t.equal(sync.offer(at(5)), 'hold')
  const held = sync.release('e1', 4)
  t.same(held?.map((message) => message.payload.toString()), ['4', 'gap', '5'])
  t.equal(sync.release('e1', 4), undefined, 'released once only')
})

t.test('after the release, what the replay had is skipped, and the first later message ends the sync', async (t) => {
  const sync = new ChannelSync()
  sync.release('e1', 10)
  t.equal(sync.offer(at(9)), 'skip', 'replayed already')
  t.equal(sync.offer(at(10)), 'skip', 'the replay\'s last offset')
  t.equal(sync.offer({ payload: Buffer.from('join'), position: undefined }), 'send', 'presence frames are never part of a replay')
  t.equal(sync.offer(at(11)), 'caught-up', 'past the replay: the live stream is in order from here on')
  t.equal(sync.offer(at(3, 'e2')), 'caught-up', 'another history\'s message is never taken for a replayed one')
})

t.test('a resume is honoured only by a page of its epoch that holds every offset after since, within maxReplay', async (t) => {
  const resume = { since: 2, epoch: 'e1' }
  t.equal(honoursResume(page('e1', 5, [3, 4, 5]), resume, 300), true)
  t.equal(honoursResume(page('e1', 2, []), resume, 300), true, 'nothing missed is a complete replay')
  t.equal(honoursResume(undefined, resume, 300), false, 'no history')
  t.equal(honoursResume(page('e2', 5, [3, 4, 5]), resume, 300), false, 'another epoch')
  t.equal(honoursResume(page('e1', 5, [4, 5]), resume, 300), false, 'a message trimmed away')
  t.equal(honoursResume(page('e1', 5, [3, 4, 5]), resume, 2), false, 'more than maxReplay')
  t.equal(honoursResume(page('e1', 1, []), resume, 300), false, 'since is ahead of the history')
})
