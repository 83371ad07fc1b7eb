// The cluster benchmark's publisher process (forked by bench-cluster.ts): message i goes to channel
// i mod channels through instance instanceOf(i), due at start + i / rate, over keep-alive
// `POST /publish` connections in lanes (a lane sends its next message once the previous one was
// answered). Reports which messages were accepted (202), so the clients can be checked for loss.
import { Agent } from 'node:http'
import { sleep } from './processes.js'
import { PostTally } from './tally.js'
import { nowUs, postJson, serveWorker } from './protocol.js'
import {
  BitSet, channelName, channelOf, clusterPadding, instanceOf,
  type ClusterPublisherConfig, type ClusterPublisherStats, type FromClusterPublisher
} from './cluster-protocol.js'

function send (message: FromClusterPublisher): void {
  process.send?.(message)
}

/** Each request's own answer time: beyond it the request counts as failed ('timeout'). */
const REQUEST_TIMEOUT_MS = 10_000

async function run (config: ClusterPublisherConfig): Promise<ClusterPublisherStats> {
  const agent = new Agent({ keepAlive: true, maxSockets: config.lanes, maxFreeSockets: config.lanes })
  const targets = config.urls.map((url) => new URL(url))
  const pad = clusterPadding(config.size)
  const accepted = new BitSet(config.messages)
  const acceptedBy = targets.map(() => 0)
  const tally = new PostTally()
  const startUs = nowUs()
  const deadlineUs = startUs + config.timeoutMs * 1000

  async function post (index: number): Promise<void> {
    const channel = channelOf(index, config.channels)
    const instance = instanceOf(index, config.channels, targets.length)
    const target = targets[instance] as URL
    const body = JSON.stringify({ channel: channelName(channel), data: { r: config.phase, i: index, pad } })
    const at = tally.sending()
    if (tally.answered(await postJson(agent, target, body, REQUEST_TIMEOUT_MS), at)) {
      accepted.add(index)
      acceptedBy[instance] = (acceptedBy[instance] as number) + 1
    }
  }

  async function lane (first: number): Promise<void> {
    for (let index = first; index < config.messages && nowUs() < deadlineUs; index += config.lanes) {
      const waitMs = (startUs + index * 1e6 / config.rate - nowUs()) / 1000
      if (waitMs > 0) await sleep(waitMs)
      await post(index)
    }
  }

  const progress = setInterval(() => send({ type: 'progress', sent: tally.sent }), 250)
  try {
    await Promise.all(Array.from({ length: config.lanes }, async (_, index) => await lane(index)))
  } finally {
    clearInterval(progress)
    agent.destroy()
  }
  return { ...tally.stats(), acceptedBy, acceptedBits: accepted.toBase64() }
}

serveWorker(run)
