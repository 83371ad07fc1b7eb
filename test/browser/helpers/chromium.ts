import { existsSync } from 'node:fs'
import type { Test } from 'tap'
import { chromium, type Browser, type Page } from 'playwright-core'

/** The distribution's chromium (`apt-get install chromium`); CHROMIUM_PATH names another Chromium or Chrome. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** A headless Chromium for one test file, closed when it ends. */
export async function launchChromium (t: Test): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`no browser at ${CHROMIUM_PATH}. The browser tests drive a real Chromium: install it with ` +
      '`sudo apt-get install chromium` (Debian/Ubuntu), or set CHROMIUM_PATH to a Chromium or Chrome executable.')
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    timeout: 60_000,
    // Chromium refuses to start its sandbox as root (CI runs as root).
    args: process.getuid?.() === 0 ? ['--no-sandbox'] : []
  })
  t.teardown(async () => await browser.close())
  return browser
}

/** A new page whose uncaught errors are collected, for a test to check there were none. */
export async function openPage (browser: Browser, viewport = { width: 1000, height: 600 }): Promise<{ page: Page, pageErrors: string[] }> {
  const page = await browser.newPage({ viewport })
  const pageErrors: string[] = []
  page.on('pageerror', (error) => pageErrors.push(error.message))
  return { page, pageErrors }
}
