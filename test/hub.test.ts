import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { Hub, type HubMember } from '../plugin/hub.js'
import { BroadcastStats } from '../plugin/stats.js'
import { MemoryBus } from '../plugin/bus/memory.js'
import { Presence } from '../plugin/presence/presence.js'
import { MemoryPresenceStore } from '../plugin/presence/store.js'
import { BusRefusedError, BusUnavailableError } from '../plugin/errors.js'

const POLICY = { historyOf: () => ({ size: 0, ttl: 1 }), maxReplay: 300, maxReplayBytes: 1 << 20 }

/** The registry never touches a socket on join or leave: a member that records what it is sent is enough here. */
class StandIn implements HubMember {
  readonly channels = new Set<string>()
  readonly unsent = 0
  readonly queued: Buffer[] = []
  constructor (readonly id: string, readonly identity: unknown = undefined) {}
  deliver (channel: string | null, payload: Buffer): boolean { return this.enqueue(payload) }
  enqueue (payload: Buffer): boolean { this.queued.push(payload); return true }
  admitReplay (): boolean { return true }
  accepts (): boolean { return true }
  filterOf (): undefined { return undefined }
  flush (): void {}
  startSync (channel: string): void {}
  stopSync (channel: string): void {}
  releaseSync (channel: string): void {}
  close (): void {}
  terminate (): void {}
  async whenClosed (): Promise<void> {}
  readonly failures: Array<[string, unknown]> = []
  subscribeFailed (channel: string, err: unknown): void { this.failures.push([channel, err]) }
}

t.test('a message for a channel nobody here listens on is delivered to no one', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, new BroadcastStats())
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  t.equal(hub.deliver('nobody', Buffer.from('{}')), 0)
  hub.receive('nobody', Buffer.from('{"type":"message","channel":"nobody","offset":1,"epoch":"e","data":1}'))
  t.equal(hub.channelCount, 0, 'a message for a channel with no listener leaves nothing behind')
  t.equal(hub.deliver(null, Buffer.from('{}')), 0, 'nor a broadcast when there are no connections')
  await bus.close()
})

t.test('a connection that already left joins nothing (its frames may still be queued)', async (t) => {
  const bus = new MemoryBus()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, new BroadcastStats())
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  const gone = new StandIn('gone')
  hub.add(gone)
  hub.remove(gone)
  await hub.join(gone, 'news', undefined, () => t.fail('a connection that left is not answered'))
  t.same([...gone.channels], [], 'no channel recorded')
  t.equal(hub.deliver('news', Buffer.from('{}')), 0, 'and no listener added')
  await bus.close()
})

t.test('a connection that leaves while its subscription is being confirmed is never listed in presence', async (t) => {
  const bus = new MemoryBus()
  const log = Fastify({ logger: false }).log
  const hub = new Hub(bus, log, POLICY, new BroadcastStats())
  const store = new MemoryPresenceStore(async () => {})
  hub.presence = new Presence(store, { tracked: () => true, events: () => false, ttl: 1000, anonymous: true }, log)
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  const connection = new StandIn('one')
  hub.add(connection)
  const joining = hub.join(connection, 'news', undefined, () => {})
  hub.remove(connection)
  await joining
  t.same(await store.members('news'), [], 'not listed')
  t.equal(hub.channelCount, 0)

  // Two tabs of one identity: the one that never got listed leaves without taking the other along.
  const [first, second] = [0, 1].map((index) => {
    const tab = new StandIn(`tab${index}`, { sub: 'ann' })
    hub.add(tab)
    return tab
  })
  await hub.join(first, 'news', undefined, () => {})
  const late = hub.join(second, 'news', undefined, () => {})
  hub.remove(second)
  await late
  t.same(await store.members('news'), ['"ann"'], 'the listed tab keeps its identity there')
  await bus.close()
})

/** The in-process bus, with SUBSCRIBE answers scripted: each entry fails one subscribe, in turn. */
class ScriptedBus extends MemoryBus {
  readonly failures: Error[] = []
  subscribes = 0
  /** How long a subscribe that succeeds takes, in milliseconds. */
  delay = 0
  override async subscribe (channel: string): Promise<void> {
    this.subscribes++
    const failure = this.failures.shift()
    if (failure !== undefined) throw failure
    if (this.delay > 0) await new Promise((resolve) => setTimeout(resolve, this.delay))
    await super.subscribe(channel)
  }
}

async function scriptedHub (t: Test): Promise<{ bus: ScriptedBus, hub: Hub, stats: BroadcastStats }> {
  const bus = new ScriptedBus()
  const stats = new BroadcastStats()
  const hub = new Hub(bus, Fastify({ logger: false }).log, POLICY, stats)
  await bus.start((channel, payload) => hub.deliver(channel, payload))
  t.teardown(() => bus.close())
  return { bus, hub, stats }
}

t.test('a subscribe the bus cannot confirm waits for it: answered once, with the latest request, after it is back', async (t) => {
  const { bus, hub } = await scriptedHub(t)
  const member = new StandIn('one')
  hub.add(member)
  bus.failures.push(new BusUnavailableError('down'), new BusUnavailableError('still down'))
  const replies: string[] = []
  await hub.join(member, 'later', undefined, () => replies.push('first'))
  await hub.join(member, 'later', undefined, () => replies.push('second'))
  t.same(replies, [], 'no answer while the bus is away')
  t.ok(member.channels.has('later'), 'but the membership stays')
  hub.catchUp()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(replies, [], 'the first retry failed too: still waiting')
  await new Promise((resolve) => setTimeout(resolve, 1200))
  t.same(replies, ['second'], 'answered once, by the latest request, at the next retry tick')
  t.equal(bus.subscribes, 3, 'one SUBSCRIBE per attempt, not one per request')
  t.equal(hub.deliver('later', Buffer.from('{}')), 1, 'and it delivers')
})

t.test('a waiting subscribe that Redis then refuses is reported to the member and dropped', async (t) => {
  const { bus, hub } = await scriptedHub(t)
  const member = new StandIn('one')
  hub.add(member)
  const refusal = new BusRefusedError('NOPERM')
  bus.failures.push(new BusUnavailableError('down'), refusal)
  let answered = false
  await hub.join(member, 'denied', undefined, () => { answered = true })
  hub.catchUp()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(member.failures, [['denied', refusal]])
  t.notOk(answered)
  t.notOk(member.channels.has('denied'), 'the membership is gone')
  t.equal(hub.channelCount, 0)
})

t.test('waiting subscribes end when the hub closes or the member leaves', async (t) => {
  const { bus, hub, stats } = await scriptedHub(t)
  const [leaving, staying] = [new StandIn('leaving'), new StandIn('staying')]
  hub.add(leaving)
  hub.add(staying)
  bus.failures.push(new BusUnavailableError('down'), new BusUnavailableError('down'))
  let answers = 0
  await hub.join(leaving, 'a', undefined, () => { answers++ })
  await hub.join(staying, 'b', undefined, () => { answers++ })
  t.equal(stats.subscribesDeferred, 2)
  hub.leave(leaving, 'a')
  hub.closing = true
  await hub.closeAll(1001, 'bye', 100)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(answers, 0, 'neither is answered')
  t.equal(bus.subscribes, 2, 'and neither tried again')
})

t.test('a subscribe withdrawn while it waits, then made again, is answered once and delivers', async (t) => {
  const { bus, hub } = await scriptedHub(t)
  const member = new StandIn('one')
  hub.add(member)
  bus.failures.push(new BusUnavailableError('down'))
  const replies: string[] = []
  await hub.join(member, 'again', undefined, () => replies.push('first'))
  hub.leave(member, 'again')
  await hub.join(member, 'again', undefined, () => replies.push('second'))
  hub.catchUp()
  await new Promise((resolve) => setTimeout(resolve, 1300))
  t.same(replies, ['second'], 'the withdrawn request is never answered; the new one is, once')
  t.ok(member.channels.has('again'))
  t.equal(hub.deliver('again', Buffer.from('{}')), 1)
})

t.test('a waiting subscribe withdrawn while its retry is under way is not answered', async (t) => {
  const { bus, hub } = await scriptedHub(t)
  const member = new StandIn('one')
  hub.add(member)
  bus.failures.push(new BusUnavailableError('down'))
  bus.delay = 200
  const replies: string[] = []
  await hub.join(member, 'slow', undefined, () => replies.push('answered'))
  hub.catchUp()
  await new Promise((resolve) => setTimeout(resolve, 50))
  hub.leave(member, 'slow')
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.same(replies, [], 'no subscribed after the unsubscribe')
})

/** A member that holds a channel's messages between startSync and releaseSync, as a session does, and records what it is told in order. */
class OrderedStandIn extends StandIn {
  readonly told: string[] = []
  private readonly holding = new Map<string, Buffer[]>()
  override deliver (channel: string | null, payload: Buffer): boolean {
    const held = channel === null ? undefined : this.holding.get(channel)
    if (held !== undefined) held.push(payload)
    else this.told.push(payload.toString())
    return held === undefined
  }

  override startSync (channel: string): void { this.holding.set(channel, []) }
  override releaseSync (channel: string): void {
    for (const payload of this.holding.get(channel) ?? []) this.told.push(payload.toString())
    this.holding.delete(channel)
  }

  override stopSync (channel: string): void { this.holding.delete(channel) }
}

t.test('on a channel without history, a message that arrives before the subscribe is confirmed follows the subscribed reply', async (t) => {
  const { bus, hub } = await scriptedHub(t)
  const member = new OrderedStandIn('one')
  hub.add(member)
  bus.delay = 100
  const joining = hub.join(member, 'plain', undefined, () => member.told.push('subscribed'))
  // Redis may deliver on a channel before this SUBSCRIBE's answer: an earlier one for the same
  // channel, queued while Redis was away, is already live.
  t.equal(hub.deliver('plain', Buffer.from('early')), 0, 'held, not sent')
  await joining
  hub.deliver('plain', Buffer.from('later'))
  t.same(member.told, ['subscribed', 'early', 'later'])

  const waiting = new OrderedStandIn('two')
  hub.add(waiting)
  bus.failures.push(new BusUnavailableError('down'))
  await hub.join(waiting, 'deferred', undefined, () => waiting.told.push('subscribed'))
  hub.deliver('deferred', Buffer.from('while waiting'))
  hub.catchUp()
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(waiting.told, ['subscribed', 'while waiting'], 'and so for a subscribe that waited for the bus')
})
