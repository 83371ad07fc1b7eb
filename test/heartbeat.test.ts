import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { startHeartbeat, type Pingable } from '../plugin/heartbeat.js'

// The heartbeat's bookkeeping, with stand-ins for sockets (test/slow-clients.test.ts runs it on
// real ones): a silent peer is pinged once, not at every tick, and handed over once its ping is
// `timeout` old; a peer that answers never is.

class Peer implements Pingable {
  pingedAt = 0
  pings = 0
  constructor (private readonly answers: boolean) {}
  ping (): void {
    this.pings++
    // A pong comes back at once: the session resets pingedAt, as markAlive() does.
    if (this.answers) queueMicrotask(() => { this.pingedAt = 0 })
  }
}

t.test('a silent peer is pinged once and timed out once; an answering one is pinged at every tick', async (t) => {
  const silent = new Peer(false)
  const alive = new Peer(true)
  const peers = new Set([silent, alive])
  const timedOut: Peer[] = []
  const stop = startHeartbeat(peers, { interval: 40, timeout: 400 }, (peer) => {
    timedOut.push(peer)
    peers.delete(peer)
  })
  t.teardown(stop)
  await sleep(250)
  t.equal(silent.pings, 1, 'a peer with a ping outstanding is not pinged again')
  t.ok(alive.pings >= 3, `the answering peer was pinged ${alive.pings} times`)
  t.same(timedOut, [], 'not before its ping is timeout old')
  await sleep(1500)
  t.same(timedOut, [silent], 'then handed over, once')
})
