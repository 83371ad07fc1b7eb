import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Page } from 'playwright-core'
import { freePort } from '../helpers/redis-server.js'
import { launchChromium, openPage } from './helpers/chromium.js'

// The demo app as `npm run demo` starts it (after the build), in Chromium: live messages, the
// connection state, and the messages missed while offline, replayed from the history when the
// page comes back. The screenshot in the README is taken here.

const root = fileURLToPath(new URL('../../', import.meta.url))
const SCREENSHOT = 'docs/demo.png'

async function startDemo (t: Test, port: number): Promise<string> {
  const env: Record<string, string | undefined> = { ...process.env, PORT: String(port), HOST: '127.0.0.1' }
  delete env.REDIS_URL
  delete env.NODE_V8_COVERAGE
  const child = spawn(process.execPath, ['examples/demo/server.js'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20_000
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).status === 200) return url
    } catch {}
    if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}:\n${output}`)
    if (Date.now() > deadline) throw new Error(`the demo did not answer within 20 s:\n${output}`)
    await sleep(50)
  }
}

interface Shown { state: string, received: number, missed: number, resets: number, reconnects: number, offsets: Record<string, number[]> }

async function shown (page: Page): Promise<Shown> {
  const text = async (selector: string): Promise<string> => (await page.textContent(selector)) ?? ''
  const offsets = async (channel: string): Promise<number[]> =>
    (await page.locator(`#${channel} li .offset`).allTextContents()).filter((offset) => offset !== '').map((offset) => Number(offset.slice(1)))
  return {
    state: await text('#state'),
    received: Number(await text('#received')),
    missed: Number(await text('#missed')),
    resets: Number(await text('#resets')),
    reconnects: Number(await text('#reconnects')),
    offsets: { news: await offsets('news'), prices: await offsets('prices') }
  }
}

async function until (page: Page, done: (now: Shown) => boolean, what: string): Promise<Shown> {
  const deadline = Date.now() + 30_000
  for (;;) {
    const now = await shown(page)
    if (done(now)) return now
    if (Date.now() > deadline) throw new Error(`${what}: not within 30 s ${JSON.stringify(now)}`)
    await sleep(100)
  }
}

t.test('the demo page shows live messages, the connection state, and what it missed while offline', async (t) => {
  const url = await startDemo(t, await freePort())
  const browser = await launchChromium(t)
  const { page, pageErrors } = await openPage(browser, { width: 1000, height: 580 })
  await page.goto(url)

  const live = await until(page, (now) => now.state === 'connected' && now.offsets.news.length >= 2 && now.offsets.prices.length >= 2, 'live messages on both channels')
  t.equal(live.missed, 0, 'nothing missed while it stayed connected')

  await page.click('#offline')
  await until(page, (now) => now.state !== 'connected', 'the page goes offline')
  const back = await until(page, (now) => now.state === 'connected' && now.reconnects === 1 && now.missed > 0, 'the page is back with what it missed')
  // A message or two live after the replay, for the picture.
  const after = await until(page, (now) => now.received >= back.received + 2, 'live messages after the replay')
  await page.screenshot({ path: `${root}${SCREENSHOT}` })

  t.equal(after.resets, 0, 'the history filled the gap: no reset')
  t.ok(after.missed >= 2, `${after.missed} messages published while the page was offline were replayed when it came back`)
  for (const channel of ['news', 'prices']) {
    const offsets = after.offsets[channel]
    // Newest first, one apart: nothing lost or shown twice across the offline period.
    t.same(offsets, offsets.map((_, index) => offsets[0] - index), `${channel}: offsets ${offsets.join(', ')} with no gap and no repeat`)
  }
  t.equal(await page.locator('li.missed').count() > 0, true, 'the replayed messages are marked')
  t.same(pageErrors, [], 'no uncaught error in the page')
  t.comment(`screenshot: ${SCREENSHOT}`)
})
