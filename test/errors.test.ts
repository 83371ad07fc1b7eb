import t from 'tap'
import { readFileSync } from 'node:fs'
import * as errors from '../plugin/errors.js'
import { toWireError } from '../plugin/frames.js'

// One catalogue: every code a client can receive is one of plugin/errors.ts, and README.md lists each.

const codes = Object.values(errors).map((ErrorClass) => new (ErrorClass as new (...args: unknown[]) => { code: string })('x', 'y').code)

t.test('every error code of the catalogue is documented in README.md', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  t.same(codes.filter((code) => !readme.includes(`| \`${code}\` |`)), [], 'each has a row in the error code table')
  t.ok(codes.every((code) => code.startsWith('FRB_')), 'all under the FRB_ prefix')
})

t.test('a code from outside the catalogue reaches a client as FRB_INTERNAL, with its message', async (t) => {
  const foreign = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })
  t.same(toWireError(foreign), { code: 'FRB_INTERNAL', message: 'socket hang up' })
  t.ok(codes.includes('FRB_INTERNAL'))
})
