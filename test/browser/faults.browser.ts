import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Page } from 'playwright-core'
import { startRedis } from '../helpers/redis-server.js'
import { startBalancer, startHubProcess, type HubProcess } from '../helpers/hub-processes.js'
import { CHANNELS, publishSteadily, verify, type Published } from '../helpers/steady-publisher.js'
import type { Delivery } from '../helpers/recording-client.js'
import { launchChromium, openPage } from './helpers/chromium.js'
import { startPageServer } from './helpers/page-server.js'

// The client's promise in a real browser: a page loads the client from the package's build and
// subscribes, through a load balancer, to three instances of the built service on one Redis.
// Messages are published at a steady rate while the page's instance is killed and restarted, the
// Redis subscribers are killed, the page's socket is dropped, and Redis is restarted empty. Every
// message answered 202 reaches the page exactly once and in offset order, or the page was told
// with onReset for that channel; both are counted.

interface Recording {
  messages: Record<string, Delivery[]>
  resets: Record<string, Array<{ offset?: number, epoch?: string, after: number }>>
  events: Array<{ event: string, code?: number, reason?: string }>
  errors: string[]
}

interface RecorderPage {
  recording: Recording
  record: (url: string, channels: string[], options: object) => Promise<void>
}

const key = (position: { offset?: number, epoch?: string }): string => `${position.epoch}:${position.offset}`

async function recordingOf (page: Page): Promise<Recording> {
  return await page.evaluate(() => (globalThis as unknown as RecorderPage).recording)
}

/** Waits until the page has each channel's message of `last`; nothing accepted before it is still on its way then. */
async function pageHas (page: Page, last: Map<string, Published | undefined>, what: string): Promise<Recording> {
  const deadline = Date.now() + 30_000
  for (;;) {
    const recording = await recordingOf(page)
    const done = CHANNELS.every((channel) => {
      const message = last.get(channel)
      return message === undefined || recording.messages[channel].some((delivery) => key(delivery) === key(message))
    })
    if (done) return recording
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within 30 s ${JSON.stringify({
        events: recording.events.slice(-4),
        errors: recording.errors,
        last: CHANNELS.map((channel) => recording.messages[channel].at(-1))
      })}`)
    }
    await sleep(250)
  }
}

const lastOf = (published: Map<string, Published[]>): Map<string, Published | undefined> =>
  new Map(CHANNELS.map((channel) => [channel, (published.get(channel) as Published[]).at(-1)]))

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test('in Chromium: instances killed and restarted, subscribers killed, the socket dropped, Redis restarted: every accepted message arrives once and in order, or the page is reset', async (t) => {
  const pages = await startPageServer(t, { '/': 'test/browser/fixtures/recorder.html', '/recorder.js': 'test/browser/fixtures/recorder.js' })
  // The page is on an origin of its own; the hubs let it in.
  const env = { REDIS_URL: redis.url, ALLOWED_ORIGINS: pages.url }
  const hubs = await Promise.all([0, 1, 2].map(async () => await startHubProcess(t, env)))
  const balancer = await startBalancer(hubs.map((hub) => hub.port))
  t.teardown(() => balancer.close())

  const browser = await launchChromium(t)
  const { page, pageErrors } = await openPage(browser)
  await page.goto(pages.url)
  await page.waitForFunction(() => 'record' in globalThis)
  await page.evaluate(async ({ url, channels }) => {
    await (globalThis as unknown as RecorderPage).record(url, channels, { minReconnectDelay: 100, maxReconnectDelay: 1000, pingInterval: 3000, pongTimeout: 3000 })
  }, { url: balancer.url, channels: CHANNELS })

  const publisher = publishSteadily(hubs, 15)
  await sleep(1500)
  const [pagePort] = [...balancer.links().keys()]
  const victim = hubs.find((hub) => hub.port === pagePort) as HubProcess
  t.ok(victim, 'the page is connected to one of the instances')
  await victim.kill()
  await sleep(1000)
  await victim.start()
  await sleep(1500)
  t.not([...balancer.links().keys()][0], undefined, 'the page is connected again')
  t.equal(Number(await redis.client().call('CLIENT', 'KILL', 'TYPE', 'pubsub')), 3, 'the three subscriber connections killed')
  await sleep(1500)
  balancer.dropAll()
  await sleep(1500)

  // Everything accepted so far must reach the page before Redis goes: its history survives nothing.
  const beforeRestart = new Map(CHANNELS.map((channel) => [channel, [...publisher.published.get(channel) as Published[]]]))
  const checkpoint = await pageHas(page, lastOf(beforeRestart), 'the page has every message accepted before the Redis restart')
  const resetsBeforeRestart = new Map(CHANNELS.map((channel) => [channel, checkpoint.resets[channel].length]))

  await redis.kill()
  await sleep(500)
  // The page reconnects and resubscribes while Redis is down.
  balancer.dropAll()
  await sleep(1500)
  await redis.start()
  await sleep(4000)
  await publisher.stop()
  const recording = await pageHas(page, lastOf(publisher.published), 'the page has the last message of every channel')

  let accepted = 0
  let delivered = 0
  let resets = 0
  let lost = 0
  for (const channel of CHANNELS) {
    const published = publisher.published.get(channel) as Published[]
    const deliveries = recording.messages[channel]
    const channelResets = recording.resets[channel].length
    accepted += published.length
    delivered += deliveries.length
    resets += channelResets
    // Once each, in offset order, each offset with the data published at it.
    lost += verify(t, `page, ${channel}`, deliveries, published, channelResets)

    const seen = new Set(deliveries.map(key))
    const early = beforeRestart.get(channel) as Published[]
    if (resetsBeforeRestart.get(channel) === 0) {
      t.equal(early.filter((message) => !seen.has(key(message))).length, 0,
        `${channel}: all ${early.length} messages accepted before the Redis restart arrived, through the instance, subscriber and socket faults`)
    } else {
      t.comment(`${channel}: ${resetsBeforeRestart.get(channel)} reset(s) before the Redis restart`)
    }
    const epochs = [...new Set(published.map((message) => message.epoch))]
    t.equal(epochs.length, 2, `${channel}: the Redis restart started a new history`)
    t.ok(channelResets > (resetsBeforeRestart.get(channel) as number), `${channel}: the page was told of the lost history`)
    const after = published.filter((message) => message.epoch === epochs[1])
    t.equal(after.filter((message) => !seen.has(key(message))).length, 0, `${channel}: all ${after.length} messages accepted after the Redis restart arrived`)
  }

  const connects = recording.events.filter((entry) => entry.event === 'connected').length
  t.ok(connects >= 4, `the page connected ${connects} times (the instance killed, the socket dropped twice)`)
  t.same(recording.errors, [], 'no error reported to the page')
  t.same(pageErrors, [], 'no uncaught error in the page')
  t.ok(accepted > 300, `${accepted} messages accepted, ${publisher.refused()} refused while an instance or Redis was down`)
  t.comment(`delivered to the page: ${delivered} of ${accepted} accepted; resets: ${resets}; accepted messages not delivered, each on a channel that was reset: ${lost}`)
})
