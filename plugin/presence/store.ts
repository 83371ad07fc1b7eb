/**
 * Where presence lives: who is on each channel, across instances. An identity is a JSON text (a
 * string or a number); each instance says which identities it has on a channel, and the store
 * counts an identity once however many instances and connections have it.
 */
export interface PresenceStore {
  /**
   * Applies this instance's changes on `channel` in order: identities that arrived (or are still
   * there: a refresh) and identities that left. Join and leave frames go to the channel when
   * `events` is set.
   */
  update (channel: string, changes: readonly PresenceChange[], events: boolean): Promise<void>
  /** The identities present on `channel`, each once, as JSON texts. */
  members (channel: string, events: boolean): Promise<string[]>
}

/** An identity that came to a channel on this instance (or is still there), or left it. */
export type PresenceChange = ['join' | 'leave', string]

/** `{"type":"join","channel":"c","identity":…}`, or leave: what subscribers get when an identity comes or goes. */
export function presenceFrame (kind: 'join' | 'leave', channel: string, identity: string): string {
  return `{"type":"${kind}","channel":${JSON.stringify(channel)},"identity":${identity}}`
}

/** The store of the in-process bus: one instance, so its counts are the truth. */
export class MemoryPresenceStore implements PresenceStore {
  private readonly channels = new Map<string, Set<string>>()

  constructor (private readonly announce: (channel: string, frame: string) => Promise<void>) {}

  async update (channel: string, changes: readonly PresenceChange[], events: boolean): Promise<void> {
    let members = this.channels.get(channel)
    if (members === undefined) {
      members = new Set()
      this.channels.set(channel, members)
    }
    for (const [kind, identity] of changes) {
      // A refresh of an identity already there changes nothing; Presence sends a leave only after a join.
      if (kind === 'join' && members.has(identity)) continue
      if (kind === 'join') members.add(identity)
      else members.delete(identity)
      if (events) await this.announce(channel, presenceFrame(kind, channel, identity))
    }
    if (members.size === 0) this.channels.delete(channel)
  }

  async members (channel: string): Promise<string[]> {
    return [...this.channels.get(channel) ?? []]
  }
}
