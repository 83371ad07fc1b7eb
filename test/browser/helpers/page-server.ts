import { createServer } from 'node:http'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

const root = fileURLToPath(new URL('../../../', import.meta.url))

/**
 * Serves a test page and the client as the package ships it (`dist/client`, built by `npm run
 * build`), on an origin of its own: the page reaches the hub cross-origin, as most pages do.
 */
export async function startPageServer (t: Test, files: Record<string, string>): Promise<{ url: string }> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname
    const file = files[path] ?? (/^\/client\/[a-z-]+\.js$/.test(path) ? `dist${path}` : undefined)
    if (file === undefined) {
      response.writeHead(404).end()
      return
    }
    readFile(`${root}${file}`).then((body) => {
      response.writeHead(200, { 'content-type': file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript' }).end(body)
    }, () => response.writeHead(404).end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    server.closeAllConnections()
    server.close()
    await once(server, 'close')
  })
  const { port } = server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}` }
}
