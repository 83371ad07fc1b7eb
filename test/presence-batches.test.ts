import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { Presence } from '../plugin/presence/presence.js'
import { MemoryPresenceStore, type PresenceChange, type PresenceStore } from '../plugin/presence/store.js'

// How Presence groups its updates while one is in flight. The store here answers when the test
// says so, to hold an update in flight across several refresh ticks (test/presence.test.ts runs
// the same class against Redis).

/** A store that records each update and holds it in flight until `release()`, while `holding`. */
function heldStore (): { store: PresenceStore, updates: PresenceChange[][], release: () => void, hold: (on: boolean) => void } {
  const updates: PresenceChange[][] = []
  let releaseNext: () => void = () => {}
  let holding = true
  const store: PresenceStore = {
    async update (channel, changes) {
      updates.push([...changes])
      if (holding) await new Promise<void>((resolve) => { releaseNext = resolve })
    },
    async members () { return [] }
  }
  return { store, updates, release: () => { releaseNext() }, hold: (on) => { holding = on } }
}

t.test('while an update is in flight, changes wait in one batch, and refreshes do not pile up in it', async (t) => {
  const { store, updates, release, hold } = heldStore()
  const presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 30, anonymous: true }, Fastify({ logger: false }).log)
  presence.start()
  t.teardown(async () => {
    hold(false)
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

t.test('within a batch a join and a leave cancel; beyond the budget changes wait, cancel, and go out by stop()', async (t) => {
  const { store, updates, release, hold } = heldStore()
  const presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 60_000, anonymous: true }, Fastify({ logger: false }).log)
  const [ann, bob, cy, dan, fay] = [{}, {}, {}, {}, {}]
  void presence.join('room', '"ann"', ann)
  await sleep(5)
  // While ann's update is in flight: bob comes and goes (cancels), cy comes and stays.
  void presence.join('room', '"bob"', bob)
  presence.leave('room', '"bob"', bob)
  void presence.join('room', '"cy"', cy)
  hold(false)
  release()
  await sleep(20)
  t.same(updates[1], [['join', '"cy"']], 'bob\'s join and leave cancelled within the batch')

  // dan flaps: 4 changes pass at once, the rest wait for the budget.
  updates.length = 0
  for (let i = 0; i < 5; i++) {
    void presence.join('room', '"dan"', dan)
    void presence.join('room', '"fay"', fay)
    await sleep(2)
    presence.leave('room', '"dan"', dan)
    presence.leave('room', '"fay"', fay)
    await sleep(2)
  }
  void presence.join('room', '"dan"', dan)
  const sent = (): PresenceChange[] => updates.flat().filter(([, who]) => who === '"dan"')
  t.same(sent().map(([kind]) => kind), ['join', 'leave', 'join', 'leave'], 'the burst of 4 went out')
  await sleep(1300)
  t.same(sent().map(([kind]) => kind), ['join', 'leave', 'join', 'leave', 'join'], 'then the net change, once the budget allowed')
  presence.leave('room', '"dan"', dan)
  presence.leave('room', '"cy"', cy)
  void presence.join('room', '"eve"', {})
  await presence.stop()
  t.same(sent().at(-1), ['leave', '"dan"'], 'stop() sends what waited, whatever the budget')
  t.ok(updates.flat().some(([kind, who]) => kind === 'leave' && who === '"cy"'))
})

t.test('a join held back by its budget is not refreshed into the store, so the leave that cancels it loses nothing', async (t) => {
  const store = new MemoryPresenceStore(async () => {})
  const presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 300, anonymous: true }, Fastify({ logger: false }).log)
  presence.start()
  const ann = {}
  for (let i = 0; i < 2; i++) {
    void presence.join('room', '"ann"', ann)
    await sleep(5)
    presence.leave('room', '"ann"', ann)
    await sleep(5)
  }
  void presence.join('room', '"ann"', ann)
  await sleep(150)
  presence.leave('room', '"ann"', ann)
  await presence.stop()
  t.same(await store.members('room'), [], 'ann is not listed')
})
