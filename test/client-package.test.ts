import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'

// The client as it ships: small enough for a page, free of Node and of dependencies, importable
// by its package name, and typed for a browser project and for a Node one that passes ws.

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))
const run = promisify(execFile)
const BUDGET = 6144

t.test(`the client, minified and gzipped, stays within ${BUDGET} bytes, with no import of Node or of any package`, async (t) => {
  // platform neutral: a node: import or a bare package name would fail to resolve here.
  const result = await build({
    entryPoints: [join(root, 'client/index.ts')], bundle: true, minify: true, format: 'esm', platform: 'neutral', write: false, metafile: true
  })
  const bytes = gzipSync(result.outputFiles[0].contents, { level: 9 }).length
  t.ok(bytes <= BUDGET, `${bytes} bytes gzipped (${result.outputFiles[0].contents.length} minified)`)
  t.same(Object.keys(result.metafile.inputs).filter((file) => !file.startsWith('client/')), [], 'only the client\'s own files')
})

t.test('fastify-redis-broadcast/client is importable by its package name (the build\'s exports)', async (t) => {
  const script = "import * as client from 'fastify-redis-broadcast/client'; console.log(JSON.stringify(Object.keys(client).sort()))"
  // The build's JavaScript maps back onto client/*.ts: its coverage must not be merged with the suite's.
  const env = { ...process.env }
  delete env.NODE_V8_COVERAGE
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root, env })
  t.same(JSON.parse(stdout), ['BroadcastClient', 'BroadcastError', 'createPublisher'])
})

const BROWSER = `
import { BroadcastClient, createPublisher, type BroadcastError, type MessageInfo, type Subscription } from 'fastify-redis-broadcast/client'
const client = new BroadcastClient('wss://hub.example.com/ws', { WebSocket, token: async () => 'jwt' })
const sub: Subscription = client.subscribe('news', {
  onMessage (data: unknown, info: MessageInfo) { console.log(data, info.offset, info.epoch, info.tags) },
  onReset (info) { console.log(info.offset) },
  onError (error: BroadcastError) { console.log(error.code, error.channel) }
})
client.on('disconnected', ({ code, reason }) => console.log(code, reason))
const off = client.on('message', (data) => console.log(data))
off()
await sub.ready
const members: unknown[] = (await client.presence('news')).members
sub.unsubscribe()
client.close()
const { offset } = await createPublisher({ url: 'https://hub.example.com', key: 'k' }).publish('news', 1, { idempotencyKey: 'a' })
export { members, offset }
`

const NODE = `
import { WebSocket } from 'ws'
import { BroadcastClient } from 'fastify-redis-broadcast/client'
const client = new BroadcastClient('ws://127.0.0.1:3000/ws', { WebSocket, token: 'jwt', minReconnectDelay: 100 })
export const state: 'connecting' | 'connected' | 'disconnected' = client.state
`

for (const [kind, source, types, lib] of [['browser', BROWSER, [], ['ES2022', 'DOM']], ['Node', NODE, ['node'], ['ES2022']]] as const) {
  t.test(`the client's declarations compile in a strict ${kind} project`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'frb-client-consumer-'))
    t.teardown(async () => await rm(dir, { recursive: true, force: true }))
    await mkdir(join(dir, 'node_modules', '@types'), { recursive: true })
    await symlink(root, join(dir, 'node_modules', 'fastify-redis-broadcast'))
    if (kind === 'Node') {
      await symlink(join(root, 'node_modules', 'ws'), join(dir, 'node_modules', 'ws'))
      for (const name of ['ws', 'node']) await symlink(join(root, 'node_modules', '@types', name), join(dir, 'node_modules', '@types', name))
      await symlink(join(root, 'node_modules', 'undici-types'), join(dir, 'node_modules', 'undici-types'))
    }
    await writeFile(join(dir, 'package.json'), '{"type":"module"}')
    await writeFile(join(dir, 'index.ts'), source)
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib, noEmit: true, skipLibCheck: false, types },
      files: ['index.ts']
    }))
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
    const { stdout } = await run(process.execPath, [tsc, '-p', dir, '--listFiles'], { cwd: dir }).catch((err: { stdout: string }) => ({ stdout: err.stdout }))
    const files = stdout.split('\n')
    t.same(files.filter((line) => line.includes('error TS')), [], 'no type error')
    t.ok(files.some((file) => file.endsWith('/dist/client/index.d.ts')), 'the published declarations were compiled')
  })
}
