import t from 'tap'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { promisify } from 'node:util'
import semver from 'semver'

// What `npm pack` ships and what installing the package pulls in: the library and its types, no
// maps to sources it does not ship, no CLI, and nothing that asks for a newer Node than it does.

const run = promisify(execFile)
const root = fileURLToPath(new URL('../', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

t.test('npm pack ships the library, the client and their types, and source maps only with their sources', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  t.equal(pkg.scripts.prepack, 'npm run build', 'packing builds first: a fresh clone packs a working package')
  // The build is the one `npm test` made: running prepack here would empty dist/ under the tests
  // that run beside this one.
  const { stdout } = await run(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, maxBuffer: 16 * 2 ** 20 })
  const [{ files }] = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{ files: Array<{ path: string }> }>
  const paths = files.map((file) => file.path)
  for (const path of ['dist/plugin/index.js', 'dist/plugin/index.d.ts', 'dist/client/index.js', 'dist/client/index.d.ts', 'dist/app.js', 'package.json', 'README.md']) {
    t.ok(paths.includes(path), path)
  }
  // Source maps carry their sources (inlineSources): none points at a file the package lacks.
  for (const map of paths.filter((path) => path.endsWith('.map'))) {
    const { sources, sourcesContent } = JSON.parse(await readFile(join(root, map), 'utf8')) as { sources: string[], sourcesContent?: Array<string | null> }
    if (sourcesContent?.length !== sources.length || sourcesContent.some((content) => typeof content !== 'string')) t.fail(`${map} lacks its sources`)
  }
  t.ok(paths.some((path) => path.endsWith('.map')), 'source maps ship, with their sources')
  t.same(paths.filter((path) => path.endsWith('.ts') && !path.endsWith('.d.ts')), [], 'no TypeScript sources')
  t.same(paths.filter((path) => /^(test|scripts|examples|dist\/scripts)\//.test(path)), [], 'no tests, benchmarks or examples')
})

t.test('installing it pulls no CLI, and no dependency asks for a newer Node than the package does', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
    engines: { node: string }, dependencies: Record<string, string>
  }
  t.notOk('fastify-cli' in pkg.dependencies, 'fastify-cli runs the service from this repository: a dev dependency')
  const floor = semver.minVersion(pkg.engines.node)?.version as string
  // Fastify's own tree is the app's (it brings its own Fastify): the rest is what this package adds.
  const { stdout } = await run(npm, ['query', ':root > .prod:not([name=fastify]), :root > .prod:not([name=fastify]) *'], { cwd: root, maxBuffer: 16 * 2 ** 20 })
  const installed = JSON.parse(stdout) as Array<{ name: string, version: string, engines?: { node?: string } }>
  t.ok(installed.length > 10, `${installed.length} packages checked`)
  const tooNew = installed.filter(({ engines }) => engines?.node !== undefined && !semver.satisfies(floor, engines.node))
  t.same(tooNew.map(({ name, version, engines }) => `${name}@${version} (${engines?.node})`), [], `every one runs on Node ${floor}`)
})
