import t from 'tap'
import { request } from 'node:http'
import { build } from './helpers/app.js'
import { startRedis } from './helpers/redis-server.js'

// Keyless publishing (no publishKeys) is for programs on the same machine only. These are the
// ways an outside request was let in before, each over a real loopback connection.

const redis = await startRedis()
t.teardown(() => redis.stop())

/** POST /publish with exactly these headers (Host included), as a raw HTTP client sends them. */
async function post (url: string, headers: Record<string, string>, localAddress = '127.0.0.1'): Promise<{ status: number, body: string }> {
  const { hostname, port } = new URL(url)
  const body = JSON.stringify({ channel: 'news', data: 'x' })
  return await new Promise((resolve, reject) => {
    const req = request({
      host: hostname,
      port,
      localAddress,
      method: 'POST',
      path: '/publish',
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers }
    }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve({ status: res.statusCode as number, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test('without trustProxy, a request a proxy forwarded is refused (every request of a local proxy comes from 127.0.0.1)', async (t) => {
  const { url } = await build(t, { redis: redis.url })
  const host = new URL(url).host
  t.equal((await post(url, { host })).status, 202, 'a direct local request')
  for (const [name, value] of [['x-forwarded-for', '203.0.113.9'], ['x-forwarded-for', '127.0.0.1'], ['forwarded', 'for=203.0.113.9'], ['x-real-ip', '203.0.113.9']]) {
    const answer = await post(url, { host, [name]: value })
    t.equal(answer.status, 401, `${name}: ${value}`)
    t.match(JSON.parse(answer.body), { code: 'FRB_PUBLISH_KEY_REQUIRED' })
  }
})

t.test('with trustProxy: true, only a chain of loopback IP addresses is local', async (t) => {
  const { url } = await build(t, { redis: redis.url }, { trustProxy: true })
  const host = new URL(url).host
  t.equal((await post(url, { host, 'x-forwarded-for': '127.0.0.1' })).status, 202, 'a local client through a local proxy')
  t.equal((await post(url, { host, 'x-forwarded-for': '::1, 127.0.0.2' })).status, 202, 'two local hops')
  for (const chain of ['127.0.0.1, 203.0.113.9', '203.0.113.9, 127.0.0.1', '127.evil.example', '127.0.0.1.nip.io', '']) {
    t.equal((await post(url, { host, 'x-forwarded-for': chain })).status, 401, JSON.stringify(chain))
  }
  t.equal((await post(url, { host, 'x-forwarded-for': '127.0.0.1', 'x-forwarded-host': 'attacker.example' })).status, 401, 'a forwarded Host that is not local')
})

t.test('with trustProxy naming the proxy, the client the proxy saw must be local', async (t) => {
  const { url } = await build(t, { redis: redis.url }, { trustProxy: '127.0.0.1' })
  const host = new URL(url).host
  t.equal((await post(url, { host, 'x-forwarded-for': '127.0.0.5' })).status, 202)
  t.equal((await post(url, { host, 'x-forwarded-for': '127.0.0.1, 203.0.113.9' })).status, 401, 'the client appended by the proxy is remote')
  t.equal((await post(url, { host, 'x-forwarded-for': '203.0.113.9' })).status, 401)
  t.equal((await post(url, { host, 'x-forwarded-for': '127.0.0.5' }, '127.0.0.2')).status, 401, 'a peer that is not the named proxy')
})

t.test('with a hop count for trustProxy, a forwarded request is refused: the peer cannot be checked', async (t) => {
  const { url } = await build(t, { redis: redis.url }, { trustProxy: 1 as never })
  t.equal((await post(url, { host: new URL(url).host, 'x-forwarded-for': '127.0.0.1' })).status, 401)
})

t.test('the Host must be a loopback name or address, so DNS rebinding cannot reach the route', async (t) => {
  const { url } = await build(t, { redis: redis.url })
  const { port } = new URL(url)
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'LOCALHOST', '127.0.0.1']) {
    t.equal((await post(url, { host })).status, 202, host)
  }
  for (const host of [`attacker.example:${port}`, `127.0.0.1.attacker.example:${port}`, `localhost.attacker.example:${port}`, `[::2]:${port}`]) {
    t.equal((await post(url, { host })).status, 401, JSON.stringify(host))
  }
})

t.test('publish keys and insecurePublish are not subject to the local rule', async (t) => {
  const key = 'k1-0123456789abcdef'
  const keyed = await build(t, { redis: redis.url, publishKeys: [key] })
  t.equal((await post(keyed.url, { host: 'hub.example.com', 'x-forwarded-for': '203.0.113.9', authorization: `Bearer ${key}` })).status, 202)
  const open = await build(t, { redis: redis.url, insecurePublish: true })
  t.equal((await post(open.url, { host: 'hub.example.com', 'x-forwarded-for': '203.0.113.9' })).status, 202)
})
