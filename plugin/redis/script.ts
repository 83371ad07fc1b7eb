import { createHash } from 'node:crypto'
import type { RedisClient } from './client.js'

// How the plugin runs its Lua scripts. Each script lives beside the code that calls it, as a
// TypeScript string: it is compiled into dist/ with the rest, with no file to copy or find at run time.

export interface Script {
  source: string
  sha: string
}

export function script (source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') }
}

/** ioredis makes a Buffer variant of every command at run time; its types list only some. */
interface BufferEval {
  evalshaBuffer: (sha: string, keys: number, ...args: Array<string | number>) => Promise<unknown>
  evalBuffer: (source: string, keys: number, ...args: Array<string | number>) => Promise<unknown>
}

/**
 * Runs a script by its SHA1, sending its source only when Redis does not have it yet. Replies come
 * as Buffers: stored frames go out to sockets as the bytes they are, never decoded.
 *
 * `keys` are the keys the script declares. Every name a script touches is in one slot (one
 * channel's names, plugin/redis/keys.ts), so a cluster client sends it to the shard that owns them;
 * on a cluster they must be all the keys it touches, so that while their slot migrates Redis runs
 * it where they all are, or answers TRYAGAIN, rather than on a master that holds only some.
 */
export async function runScript (client: RedisClient, { source, sha }: Script, keys: readonly string[], args: Array<string | number>): Promise<unknown> {
  const buffered = client as unknown as BufferEval
  try {
    return await buffered.evalshaBuffer(sha, keys.length, ...keys, ...args)
  } catch (err) {
    if (!(err as Error).message.startsWith('NOSCRIPT')) throw err
    return await buffered.evalBuffer(source, keys.length, ...keys, ...args)
  }
}
