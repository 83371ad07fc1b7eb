// The publisher process (forked by the benchmark): sends numbered, time-stamped messages over
// `POST /publish` on keep-alive connections, in lanes: a lane sends its next message only after the
// previous one was accepted (202), so each lane's messages reach Redis in order, and the clients
// can check that order. Reports over IPC.
import { Agent } from 'node:http'
import autocannon from 'autocannon'
import { Histogram } from './histogram.js'
import {
  nowUs, paddingFor, postJson, publishBody, serveWorker, type FromPublisher, type PublisherConfig, type PublisherStats
} from './protocol.js'
import { sleep } from './processes.js'
import { PostTally } from './tally.js'

function send (message: FromPublisher): void {
  process.send?.(message)
}

/**
 * Mode load: autocannon, as fast as the server answers on `lanes` keep-alive connections, the same
 * body every request (no subscribers: its seq does not matter). A node:http client with as many
 * lanes needs about as much CPU per request as the server and would measure itself; autocannon
 * costs a fraction of that, and the benchmark checks that the server was the busier process.
 */
async function load (config: PublisherConfig): Promise<PublisherStats> {
  const latency = new Histogram()
  const failures: Record<string, number> = {}
  let accepted = 0
  let failed = 0
  const startUs = nowUs()
  const progress = setInterval(() => send({ type: 'progress', sent: accepted }), 250)
  let finished: (err: unknown, result: autocannon.Result) => void = () => {}
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    finished = (err, result) => { if (err !== null && err !== undefined) reject(err); else resolve(result) }
  })
  const instance = autocannon({
    url: config.urls[0] as string,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: publishBody(0, paddingFor(config.size), config.batch, config.groups),
    connections: config.lanes,
    duration: config.durationMs / 1000
  }, (err, result) => { finished(err, result) })
  // autocannon's tracker passes the client first, then status, bytes and response time (ms).
  instance.on('response', (...args: unknown[]) => {
    const [status, , responseTime] = args.slice(-3) as [number, number, number]
    if (status === 202) {
      accepted += config.batch
      latency.record(responseTime * 1000)
    } else {
      failed++
      failures[String(status)] = (failures[String(status)] ?? 0) + 1
    }
  })
  try {
    const result = await done
    if (result.errors > 0) failures.errors = result.errors
    const endUs = startUs + (result.finish.getTime() - result.start.getTime()) * 1000
    return {
      sent: result.requests.sent,
      accepted,
      failed: failed + result.errors,
      failures,
      firstSendUs: startUs,
      lastSendUs: endUs,
      lastAckUs: endUs,
      latency: latency.toSparse(),
      maxLatencyUs: latency.max
    }
  } finally {
    clearInterval(progress)
  }
}

async function run (config: PublisherConfig): Promise<PublisherStats> {
  if (config.mode === 'load') return await load(config)
  const agent = new Agent({ keepAlive: true, maxSockets: config.lanes, maxFreeSockets: config.lanes })
  const targets = config.urls.map((url) => new URL(url))
  const pad = paddingFor(config.size)
  const tally = new PostTally()
  const startUs = nowUs()
  const deadlineUs = startUs + config.timeoutMs * 1000

  async function post (target: URL, seq: number): Promise<void> {
    const body = publishBody(seq, pad, config.batch, config.groups)
    const at = tally.sending()
    tally.answered(await postJson(agent, target, body), at, config.batch)
  }

  async function lane (index: number): Promise<void> {
    const target = targets[index % targets.length] as URL
    for (let seq = index; seq < config.messages && nowUs() < deadlineUs; seq += config.lanes) {
      if (config.mode === 'rate') {
        const dueUs = startUs + seq * 1e6 / config.rate
        const waitMs = (dueUs - nowUs()) / 1000
        if (waitMs > 0) await sleep(waitMs)
      }
      await post(target, seq)
    }
  }

  const progress = setInterval(() => send({ type: 'progress', sent: tally.sent }), 250)
  try {
    await Promise.all(Array.from({ length: config.lanes }, async (_, index) => await lane(index)))
  } finally {
    clearInterval(progress)
    agent.destroy()
  }
  return tally.stats()
}

serveWorker(run)
