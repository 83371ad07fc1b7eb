import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/', 'node_modules/', 'coverage/', '.tap/'],
  }),
  {
    rules: {
      // `void promise` marks a promise left unawaited on purpose (its errors are handled inside):
      // the statement form says so where a bare call would look like a forgotten await.
      'no-void': ['error', { allowAsStatement: true }],
    },
  },
]
