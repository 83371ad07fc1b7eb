/**
 * A benchmark's settings from its command line, or the exit code when there is nothing to run:
 * 0 after --help (the usage printed), 2 after a flag it does not take (the error and the usage).
 */
export function settingsOrExitCode<S> (parse: (argv: string[]) => S | 'help', usage: string): S | number {
  try {
    const settings = parse(process.argv.slice(2))
    if (settings !== 'help') return settings
    process.stdout.write(`${usage}\n`)
    return 0
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage}\n`)
    return 2
  }
}
