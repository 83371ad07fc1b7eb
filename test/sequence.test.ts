import t from 'tap'
import { messageHeadLength, positionText, readPosition } from '../plugin/history/sequence.js'
import { historySettings } from '../plugin/history/settings.js'

// Pure functions: where a frame stands in its channel's history, and which settings a channel gets.

const frame = (text: string): Buffer => Buffer.from(text)

t.test('readPosition reads the offset and epoch the publish script wrote after the channel', async (t) => {
  const head = '{"type":"message","channel":"news",'
  t.equal(messageHeadLength('news'), head.length)
  t.same(readPosition(frame(`${head}${positionText({ offset: 42, epoch: 'ab12' })}"data":1}`), 'news'), { offset: 42, epoch: 'ab12' })
  t.same(readPosition(frame(`${head}"offset":0,"epoch":"e","data":1}`), 'news'), { offset: 0, epoch: 'e' })
  const notPositions = {
    'no position': `${head}"data":1}`,
    'no digits': `${head}"offset":,"epoch":"e","data":1}`,
    'a negative offset': `${head}"offset":-1,"epoch":"e","data":1}`,
    'more than 15 digits': `${head}"offset":1234567890123456,"epoch":"e","data":1}`,
    'no epoch': `${head}"offset":1,"data":1}`,
    'an empty epoch': `${head}"offset":1,"epoch":"","data":1}`,
    'an unterminated epoch': `${head}"offset":1,"epoch":"abc`,
    'an epoch over 64 characters': `${head}"offset":1,"epoch":"${'e'.repeat(65)}","data":1}`,
    'a frame cut short': `${head}"offset":12`
  }
  for (const [what, text] of Object.entries(notPositions)) t.equal(readPosition(frame(text), 'news'), undefined, what)
  t.equal(readPosition(frame(`${head}"offset":1,"epoch":"e","data":1}`), 'other'), undefined, 'read at the place of its own channel')
})

t.test('history settings: the first rule whose pattern matches, else the defaults', async (t) => {
  const settingsOf = historySettings({ size: 100, ttl: 1000 }, [
    { channels: 'chat.*', size: 500, ttl: 2000 },
    { channels: 'chat.secret', size: 0, ttl: 1 },
    { channels: 'ticker', size: 0, ttl: 1 }
  ])
  t.same(settingsOf('chat.room1'), { size: 500, ttl: 2000 })
  t.same(settingsOf('chat.secret'), { size: 500, ttl: 2000 }, 'an earlier rule wins')
  t.same(settingsOf('ticker'), { size: 0, ttl: 1 })
  t.same(settingsOf('tickers'), { size: 100, ttl: 1000 }, 'a name matches whole')
})
