import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, startRedis } from './helpers/redis-server.js'
import { startService } from './helpers/service.js'
import { TestClient } from './helpers/client.js'

// deploy/nginx.conf as shipped, in front of two instances of the built service sharing one Redis:
// WebSocket upgrades, publishes and deliveries go through it, and a client's own
// X-Forwarded-For never reaches the service.

const root = fileURLToPath(new URL('../', import.meta.url))

function nginxBinary (): string {
  for (const candidate of ['nginx', '/usr/sbin/nginx']) {
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' })
      return candidate
    } catch {}
  }
  throw new Error('nginx is not installed: install it (Debian/Ubuntu: apt-get install nginx) to run the deployment test')
}

const redis = await startRedis()
t.teardown(() => redis.stop())

async function listening (port: number, timeout: number): Promise<boolean> {
  const deadline = Date.now() + timeout
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.on('connect', () => { socket.destroy(); resolve(true) })
      socket.on('error', () => { resolve(false) })
    })
    if (open) return true
    await sleep(50)
  }
  return false
}

/** nginx with deploy/nginx.conf, its listen port and upstream servers set to these, in a directory of its own. */
async function startNginx (t: Test, instances: string[]): Promise<string> {
  const binary = nginxBinary()
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'frb-nginx-'))
  const site = readFileSync(join(root, 'deploy', 'nginx.conf'), 'utf8')
    .replace(/^\s*listen 8080;$/m, `  listen 127.0.0.1:${port};`)
    .replace(/^\s*server 127\.0\.0\.1:3001;\n\s*server 127\.0\.0\.1:3002;$/m, instances.map((address) => `  server ${address};`).join('\n'))
  writeFileSync(join(dir, 'site.conf'), site)
  writeFileSync(join(dir, 'nginx.conf'), [
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 256; }',
    'http {',
    '  access_log off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${dir}/${kind};`),
    `  include ${dir}/site.conf;`,
    '}'
  ].join('\n'))
  const child = spawn(binary, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGQUIT')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  })
  if (!await listening(port, 10_000)) {
    const log = existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''
    throw new Error(`nginx did not listen on ${port}: ${output}${log}`)
  }
  return `127.0.0.1:${port}`
}

t.test('two instances behind deploy/nginx.conf: upgrades, publishes and deliveries go through it; a forged X-Forwarded-For does not', async (t) => {
  const env = { REDIS_URL: redis.url, FASTIFY_TRUST_PROXY_IPS: '127.0.0.1' }
  const instances = await Promise.all([startService(t, env), startService(t, env)])
  const proxy = await startNginx(t, instances.map((instance) => instance.url.replace('http://', '')))

  t.equal((await fetch(`http://${proxy}/health`)).status, 200, 'the health check answers through the proxy')
  const clients = await Promise.all(Array.from({ length: 4 }, async () => await TestClient.connect(`ws://${proxy}/ws?channels=news`)))
  t.teardown(async () => { await Promise.all(clients.map(async (client) => { await client.close() })) })
  await Promise.all(clients.map(async (client) => await client.waitFor((f) => f.type === 'subscribed')))
  const perInstance = await Promise.all(instances.map(async ({ url }) =>
    Number(/^frb_connections (\d+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1])))
  t.same(perInstance, [2, 2], 'the upgrades were spread over both instances')

  const publish = async (data: string, headers: Record<string, string> = {}): Promise<Response> => await fetch(`http://${proxy}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ channel: 'news', data })
  })
  t.equal((await publish('through the proxy')).status, 202, 'a keyless publish from this machine passes the proxy it trusts')
  // Had the client's header reached the service, the chain would hold 203.0.113.9 and the
  // publish would be refused (401) as not local: the proxy replaced it with the real address.
  t.equal((await publish('forged', { 'x-forwarded-for': '203.0.113.9' })).status, 202, 'a client\'s X-Forwarded-For is replaced, not appended')
  for (const client of clients) {
    t.same((await client.messages(2)).map((m) => m.data), ['through the proxy', 'forged'])
  }

  // The same forged header straight to an instance, past the proxy: the peer is loopback but the
  // chain names another address, so it is not local.
  const direct = await fetch(`${instances[0]?.url as string}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9' },
    body: JSON.stringify({ channel: 'news', data: 'direct' })
  })
  t.equal(direct.status, 401, 'a forwarded request naming a remote client is not local')
})
