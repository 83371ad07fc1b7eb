import { personalChannel } from './personal.js'
import type { Session } from './session/session.js'

/**
 * Commands from the back end about one identity's connections, on every instance: join or leave a
 * channel, or be disconnected. They travel on the bus's broadcast-to-all channel, told from
 * messages by their type.
 */
export type Command =
  | { type: 'command', op: 'subscribe' | 'unsubscribe', identity: string, channel: string }
  | { type: 'command', op: 'disconnect', identity: string, code: number, reason: string }

const COMMAND_PREFIX = Buffer.from('{"type":"command"')
/** How long a command is kept for connections that were still connecting when it came. */
const CONNECTING_WINDOW = 30_000

export function encodeCommand (command: Command): string {
  return JSON.stringify(command)
}

/** A command, if these bytes are one (the plugin writes them; anything else is not). */
export function parseCommand (payload: Buffer): Command | undefined {
  if (payload.length < COMMAND_PREFIX.length || payload.compare(COMMAND_PREFIX, 0, COMMAND_PREFIX.length, 0, COMMAND_PREFIX.length) !== 0) return undefined
  try {
    return JSON.parse(payload.toString()) as Command
  } catch {
    return undefined
  }
}

export class CommandRouter {
  /** Commands of the last CONNECTING_WINDOW, for connections whose upgrade began before they came. */
  private recent: Array<{ at: number, command: Command, target: string }> = []

  constructor (private readonly sessions: ReadonlySet<Session>) {}

  apply (command: Command): void {
    const target = personalChannel(command.identity)
    if (target === undefined) return
    const at = Date.now()
    this.recent = this.recent.filter((entry) => at - entry.at < CONNECTING_WINDOW)
    this.recent.push({ at, command, target })
    for (const session of this.sessions) if (session.personal === target) run(session, command)
  }

  /** A connection that joined now, whose upgrade began at `since`: the commands it missed meanwhile. */
  catchUp (session: Session, since: number): void {
    const own = session.personal
    if (own === undefined) return
    for (const { at, command, target } of this.recent) if (at >= since && target === own) run(session, command)
  }
}

function run (session: Session, command: Command): void {
  if (command.op === 'disconnect') session.disconnect(command.code, command.reason)
  else if (command.op === 'subscribe') session.subscribeFromServer(command.channel)
  else session.unsubscribeFromServer(command.channel)
}
