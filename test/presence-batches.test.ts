import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { Presence } from '../plugin/presence/presence.js'
import type { PresenceChange, PresenceStore } from '../plugin/presence/store.js'

// How Presence groups its updates while one is in flight. The store here answers when the test
// says so, to hold an update in flight across several refresh ticks (test/presence.test.ts runs
// the same class against Redis).

t.test('while an update is in flight, changes wait in one batch, and refreshes do not pile up in it', async (t) => {
  const updates: PresenceChange[][] = []
  let release: () => void = () => {}
  let holding = true
  const store: PresenceStore = {
    async update (channel, changes) {
      updates.push([...changes])
      if (holding) await new Promise<void>((resolve) => { release = resolve })
    },
    async members () { return [] }
  }
  const presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 30, anonymous: true }, Fastify({ logger: false }).log)
  presence.start()
  t.teardown(async () => {
    holding = false
    release()
    await presence.stop()
  })
  const ann = {}
  const bob = {}
  const first = presence.join('room', '"ann"', ann)
  await sleep(5)
  const second = presence.join('room', '"bob"', bob)
  await sleep(60)
  release()
  await first
  await sleep(5)
  release()
  await second
  t.same(updates[0], [['join', '"ann"']], 'the first update goes out alone')
  const waited = updates[1]
  t.same(waited.filter(([, who]) => who === '"bob"'), [['join', '"bob"']], 'the next carries what came meanwhile')
  t.ok(waited.filter(([, who]) => who === '"ann"').length <= 1, `and no identity twice, though ${60 / 10} refresh ticks passed: ${JSON.stringify(waited)}`)
})
