import { createServer, connect, type Socket } from 'node:net'
import { once } from 'node:events'

/**
 * A TCP proxy on loopback that can turn into a black hole: every connection open at that moment,
 * and every one opened while it lasts, goes silent for good (bytes are swallowed, nothing is
 * closed), which is what a half-open link or a dead NAT entry looks like from both ends.
 * Connections opened after `pass()` work normally again.
 */
export interface TcpProxy {
  readonly port: number
  readonly url: string
  blackhole (): void
  /**
   * Only connections that subscribe (a Redis subscriber's) go silent, open ones now and new ones
   * as they subscribe, until `pass()`; the others keep working.
   */
  blackholeSubscribers (): void
  pass (): void
  close (): Promise<void>
}

interface Link { client: Socket, upstream: Socket, live: boolean, subscribed: boolean }

export async function startTcpProxy (targetPort: number): Promise<TcpProxy> {
  const links = new Set<Link>()
  let blackholed = false
  let subscribersBlackholed = false
  // allowHalfOpen: a silent link must not answer the FIN of a peer giving up on it.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true })
    const link: Link = { client, upstream, live: !blackholed, subscribed: false }
    links.add(link)
    const forget = (): void => {
      links.delete(link)
      client.destroy()
      upstream.destroy()
    }
    client.on('data', (chunk: Buffer) => {
      if (!link.subscribed && /subscribe/i.test(chunk.toString('latin1'))) {
        link.subscribed = true
        if (subscribersBlackholed) link.live = false
      }
      if (link.live) upstream.write(chunk)
    })
    upstream.on('data', (chunk) => { if (link.live) client.write(chunk) })
    client.on('end', () => { if (link.live) upstream.end() })
    upstream.on('end', () => { if (link.live) client.end() })
    client.on('close', forget)
    upstream.on('close', () => { if (link.live) forget() })
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    blackhole () {
      blackholed = true
      for (const link of links) link.live = false
    },
    blackholeSubscribers () {
      subscribersBlackholed = true
      for (const link of links) if (link.subscribed) link.live = false
    },
    pass () {
      blackholed = false
      subscribersBlackholed = false
    },
    async close () {
      for (const link of links) {
        link.client.destroy()
        link.upstream.destroy()
      }
      server.close()
      await once(server, 'close')
    }
  }
}
