// The demo: one instance of the hub, a page that uses the client from the package's build, and a
// publisher that keeps two channels busy. `npm run demo`, then open http://127.0.0.1:3000.
// PORT and HOST choose where it listens; REDIS_URL puts the hub on Redis instead of the
// in-process bus.
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import redisBroadcast, { redactingLogger } from 'fastify-redis-broadcast'

const PUBLIC = fileURLToPath(new URL('public/', import.meta.url))
const CLIENT_BUILD = fileURLToPath(new URL('../../dist/client/', import.meta.url))
const CHANNELS = ['news', 'prices']
const PUBLISH_EVERY = 700
const HEADLINES = ['deploy finished', 'new signup', 'order shipped', 'build green', 'cache warmed', 'backup done']

export async function startDemo ({ port = 3000, host = '127.0.0.1', redis, logLevel = 'warn' } = {}) {
  const app = Fastify({ logger: { level: logLevel, ...redactingLogger } })

  // "Go offline" on the page: every socket is closed, and upgrades are refused until `offlineUntil`,
  // so the page stays away for a while and resumes from the history when it is let back in.
  let offlineUntil = 0
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith('/ws') && Date.now() < offlineUntil) {
      return await reply.code(503).send({ message: 'the demo is offline for a moment' })
    }
  })

  await app.register(redisBroadcast, redis === undefined ? {} : { redis })

  app.get('/', async (request, reply) => await reply.type('text/html; charset=utf-8').send(await readFile(`${PUBLIC}index.html`)))
  app.get('/demo.js', async (request, reply) => await reply.type('text/javascript').send(await readFile(`${PUBLIC}demo.js`)))
  // The client, as the package ships it (`npm run build` puts it in dist/client).
  app.get('/client/:file', async (request, reply) => {
    const { file } = request.params
    if (!/^[a-z-]+\.js$/.test(file)) return await reply.code(404).send({ message: 'not found' })
    try {
      return await reply.type('text/javascript').send(await readFile(`${CLIENT_BUILD}${file}`))
    } catch {
      return await reply.code(404).send({ message: `${file} is not in dist/client: run npm run build` })
    }
  })
  app.post('/demo/offline', async (request) => {
    const seconds = Math.min(Number(request.query.seconds ?? 5) || 5, 30)
    offlineUntil = Date.now() + seconds * 1000
    // 1012, "service restart": the client comes back with back-off, and resumes where it was.
    for (const connection of app.broadcastConnections) connection.close(1012, 'the demo went offline')
    return { offlineFor: seconds }
  })

  let count = 0
  const timer = setInterval(() => {
    count++
    const channel = CHANNELS[count % CHANNELS.length]
    const data = channel === 'news'
      ? { text: HEADLINES[count % HEADLINES.length], n: count }
      : { text: `ACME ${(100 + 5 * Math.sin(count / 7)).toFixed(2)}`, n: count }
    app.broadcast(data, { channel }).catch((err) => app.log.warn({ err, channel }, 'demo publish failed'))
  }, PUBLISH_EVERY)
  app.addHook('onClose', async () => clearInterval(timer))

  await app.listen({ port, host })
  return app
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const app = await startDemo({
    port: Number(process.env.PORT ?? 3000),
    host: process.env.HOST ?? '127.0.0.1',
    redis: process.env.REDIS_URL === '' ? undefined : process.env.REDIS_URL,
    logLevel: process.env.LOG_LEVEL ?? 'warn'
  })
  const { address, port } = app.server.address()
  console.log(`demo page: http://${address}:${port}/ (Ctrl-C stops it)`)
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => { void app.close() })
}
