import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import redisBroadcast, { type RedisBroadcastOptions } from '../../plugin/index.js'
import { TestClient } from './client.js'

export type BusKind = 'redis' | 'memory'

export interface LogLine { level: number, msg: string, [key: string]: unknown }

export interface TestApp {
  app: FastifyInstance
  /** What the app logged at warn level and above, parsed. */
  logs: LogLine[]
  /** http://127.0.0.1:<port> */
  url: string
  connect (query?: string): Promise<TestClient>
  publish (body: unknown, headers?: Record<string, string>): Promise<Response>
}

/**
 * Starts an app with the plugin on a free port and closes it when the test ends, along with
 * every client it opened.
 */
export async function build (t: Test, options: RedisBroadcastOptions = {}, server: FastifyServerOptions = {}): Promise<TestApp> {
  const logs: LogLine[] = []
  const echo = process.env.TEST_LOG_LEVEL !== undefined
  const stream = {
    write (line: string) {
      logs.push(JSON.parse(line) as LogLine)
      if (echo) process.stderr.write(line)
    }
  }
  const app = Fastify({ logger: { level: process.env.TEST_LOG_LEVEL ?? 'warn', stream }, ...server })
  const clients: TestClient[] = []
  t.teardown(async () => {
    await Promise.all(clients.map((client) => client.close()))
    await app.close()
  })
  await app.register(redisBroadcast, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const url = `http://127.0.0.1:${port}`
  return {
    app,
    logs,
    url,
    async connect (query = '') {
      const client = await TestClient.connect(`ws://127.0.0.1:${port}/ws${query}`)
      clients.push(client)
      return client
    },
    async publish (body, headers = {}) {
      return await fetch(`${url}/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body)
      })
    }
  }
}

export function busOptions (kind: BusKind, redisUrl: string): RedisBroadcastOptions {
  return kind === 'redis' ? { redis: redisUrl } : {}
}

export const BUS_KINDS: BusKind[] = ['redis', 'memory']
