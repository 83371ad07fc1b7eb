/**
 * The http(s) URL of one of the hub's HTTP routes, from the URL of its WebSocket route: same
 * host, `ws:` → `http:`, `wss:` → `https:`. `path` is absolute (`/presence/news`) or a whole URL.
 * A relative WebSocket URL (`/ws`, which browsers accept) is taken relative to the page.
 */
export function httpUrl (webSocketUrl: string, path: string): string {
  const page = (globalThis as { location?: { href: string } }).location?.href
  const url = new URL(path, new URL(webSocketUrl, page))
  url.protocol = url.protocol.replace(/^ws/, 'http')
  return url.href
}
