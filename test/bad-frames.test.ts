import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { build } from './helpers/app.js'
import { clientFrame, RawSocket } from './helpers/raw-socket.js'

// Frames no real client sends: each offender is closed with the code RFC 6455 prescribes, the
// other clients keep receiving, and the server still shuts down cleanly afterwards.

const TEXT = 0x1
const CONTINUATION = 0x0
const PING = 0x9

const offenders: Array<[string, Buffer, number]> = [
  ['a reserved bit set without an extension', clientFrame({ opcode: TEXT, payload: Buffer.from('{}'), rsv1: true }), 1002],
  ['an unmasked client frame', clientFrame({ opcode: TEXT, payload: Buffer.from('{}'), masked: false }), 1002],
  ['a reserved opcode', clientFrame({ opcode: 0x3, payload: Buffer.from('{}') }), 1002],
  ['invalid UTF-8 in a text frame', clientFrame({ opcode: TEXT, payload: Buffer.from([0x7b, 0xc3, 0x28, 0x7d]) }), 1007],
  ['a control frame over 125 bytes', clientFrame({ opcode: PING, payload: Buffer.alloc(126, 1) }), 1002]
]

t.test('malformed frames close their sender with 1002/1007; everyone else keeps going', async (t) => {
  const { app, connect } = await build(t, {})
  const { port } = app.server.address() as { port: number }
  const bystander = await connect('?channels=c')
  await bystander.waitFor((f) => f.type === 'subscribed')
  let sent = 0
  for (const [what, frame, expected] of offenders) {
    const raw = await RawSocket.open(port, '/ws?channels=c')
    raw.send(frame)
    t.equal(await raw.closeCode(), expected, `${what} → ${expected}`)
    raw.destroy()
    await app.broadcast(++sent, { channel: 'c' })
  }
  t.same((await bystander.messages(sent)).map((m) => m.data), [1, 2, 3, 4, 5], 'the bystander received every message meanwhile')
  await sleep(50)
  t.equal(app.broadcastConnections.size, 1, 'only the bystander is left')
})

t.test('a flood of tiny fragments closes with 1008 before it can pile up in memory', async (t) => {
  const { app, connect } = await build(t, {})
  const { port } = app.server.address() as { port: number }
  const bystander = await connect('?channels=c')
  await bystander.waitFor((f) => f.type === 'subscribed')
  const raw = await RawSocket.open(port)
  const fragment = clientFrame({ opcode: CONTINUATION, payload: Buffer.from('x'), fin: false })
  raw.send(clientFrame({ opcode: TEXT, payload: Buffer.from('['), fin: false }))
  // 200,000 one-byte fragments: 1.4 MB on the wire for a message that never ends.
  const burst = Buffer.concat(Array.from({ length: 10_000 }, () => fragment))
  for (let i = 0; i < 20 && !raw.socket.destroyed; i++) {
    raw.send(burst)
    await sleep(1)
  }
  t.equal(await raw.closeCode(), 1008)
  raw.destroy()
  await sleep(50)
  t.equal(app.broadcastConnections.size, 1, 'the flooder is gone')
  await app.broadcast('still here', { channel: 'c' })
  t.same((await bystander.messages(1)).map((m) => m.data), ['still here'])
})

t.test('a client sending more bytes than clientByteRate allows is closed with 1008, even in few frames', async (t) => {
  const { app, connect } = await build(t, { clientByteRate: 1024 })
  const bystander = await connect('?channels=c')
  await bystander.waitFor((f) => f.type === 'subscribed')
  const { port } = app.server.address() as { port: number }
  const raw = await RawSocket.open(port)
  // Three 60 KiB frames: far under the frame rate, over the 128 KiB burst (twice maxPayload).
  const big = clientFrame({ opcode: TEXT, payload: Buffer.from(JSON.stringify({ type: 'ping', pad: 'z'.repeat(60 * 1024) })) })
  for (let i = 0; i < 3; i++) raw.send(big)
  t.equal(await raw.closeCode(), 1008)
  raw.destroy()
  await app.broadcast('unaffected', { channel: 'c' })
  t.same((await bystander.messages(1)).map((m) => m.data), ['unaffected'])
})

t.test('app.close() still resolves after a round of malformed frames', async (t) => {
  const { app } = await build(t, {})
  const { port } = app.server.address() as { port: number }
  const raws = await Promise.all(offenders.map(async () => await RawSocket.open(port)))
  raws.forEach((raw, i) => raw.send(offenders[i][1]))
  const lingering = await RawSocket.open(port)
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 6000, `closed in ${Date.now() - started} ms (close timeout 5 s: these clients never answer a close frame)`)
  t.equal(await lingering.closeCode(), 1001, 'a well-behaved client still got 1001')
  for (const raw of [...raws, lingering]) raw.destroy()
})
