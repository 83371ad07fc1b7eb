import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

// The declarations `npm run build` publishes, as a consumer's project compiles them: strict, with
// skipLibCheck off, and without @types/ws (which the plugin uses inside, and a consumer may lack).

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

const CONSUMER = `
import Fastify from 'fastify'
import redisBroadcast, { type RedisBroadcastOptions, type BroadcastConnection, errors } from 'fastify-redis-broadcast'

const options: RedisBroadcastOptions = { redis: 'redis://127.0.0.1:6379', history: { size: 10 }, presence: { channels: [] } }
const app = Fastify()
await app.register(redisBroadcast, options)
const result = await app.broadcast({ hello: 'world' }, { channel: 'news', idempotencyKey: 'k1' })
const offset: number | undefined = result.offset
const many = await app.broadcastMany([{ data: 1, channel: 'news' }])
const first: BroadcastConnection | undefined = [...app.broadcastConnections][0]
first?.close(4000, 'bye')
const channels: ReadonlySet<string> | undefined = first?.channels
const code: string = new errors.BusUnavailableError('down').code
const connections: number = app.broadcastStats().connections
export { offset, many, channels, code, connections }
`

t.test('the published declarations compile in a strict consumer project without @types/ws', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'frb-consumer-'))
  t.teardown(async () => await rm(dir, { recursive: true, force: true }))
  await mkdir(join(dir, 'node_modules'))
  // The package as an install would place it, and fastify beside it (a consumer has its own).
  await symlink(root, join(dir, 'node_modules', 'fastify-redis-broadcast'))
  await symlink(join(root, 'node_modules', 'fastify'), join(dir, 'node_modules', 'fastify'))
  await writeFile(join(dir, 'package.json'), '{"type":"module"}')
  await writeFile(join(dir, 'index.ts'), CONSUMER)
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', noEmit: true, skipLibCheck: false, types: [] },
    files: ['index.ts']
  }))
  const { stdout } = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--listFiles'], { cwd: dir })
    .catch((err: { stdout: string }) => ({ stdout: err.stdout }))
  const files = stdout.split('\n')
  t.same(files.filter((line) => line.includes(': error TS')), [], 'no type error, in ours or in what they import')
  t.ok(files.some((file) => file.endsWith('/dist/plugin/index.d.ts')), 'the published entry was compiled')
  t.same(files.filter((file) => file.includes('@types/ws') || /\/node_modules\/ws\//.test(file)), [], 'no ws types were needed')
})
