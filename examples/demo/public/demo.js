/* global document, location */
// The demo page: the client from the package's build, two channels, and what the client reports.
import { BroadcastClient } from '/client/index.js'

const SHOWN = 12
const counts = { received: 0, missed: 0, resets: 0, reconnects: 0 }
const element = (id) => document.getElementById(id)

function show (name) {
  element(name).textContent = String(counts[name])
}

function setState (state, detail = '') {
  element('state').textContent = state
  element('state').className = `state ${state}`
  element('detail').textContent = detail === '' ? '\u00a0' : detail
}

function append (channel, offset, text, className = '') {
  const list = element(channel)
  const item = document.createElement('li')
  const position = document.createElement('span')
  position.className = 'offset'
  position.textContent = offset === undefined ? '' : `#${offset}`
  item.className = className
  item.append(position, text)
  list.prepend(item)
  while (list.children.length > SHOWN) list.lastChild.remove()
}

const client = new BroadcastClient(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`, { maxReconnectDelay: 2000 })
let connectedBefore = false
client.on('connecting', () => setState('connecting'))
client.on('connected', () => {
  if (connectedBefore) counts.reconnects++
  connectedBefore = true
  show('reconnects')
  setState('connected')
})
client.on('disconnected', ({ code, reason }) => setState('disconnected', `closed with ${code}${reason === '' ? '' : `: ${reason}`}; reconnecting with back-off`))
client.on('error', (error) => setState('disconnected', error.message))

for (const channel of ['news', 'prices']) {
  // After a resume (recovered: true) the hub replays everything up to the reply's offset: those
  // are the messages published while the page was away.
  let replayUntil
  client.subscribe(channel, {
    onSubscribed ({ recovered, offset, epoch }) {
      replayUntil = recovered === true ? { offset, epoch } : undefined
    },
    onMessage (data, { offset, epoch }) {
      const missed = replayUntil !== undefined && epoch === replayUntil.epoch && offset <= replayUntil.offset
      counts.received++
      if (missed) counts.missed++
      show('received')
      show('missed')
      append(channel, offset, data.text, missed ? 'missed' : '')
    },
    onReset () {
      counts.resets++
      show('resets')
      append(channel, undefined, 'reset: the history could not fill the gap', 'reset')
    }
  })
}

element('offline').addEventListener('click', () => {
  void fetch('/demo/offline?seconds=5', { method: 'POST' })
})
