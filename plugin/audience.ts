import type { Filter } from './tags.js'

/**
 * Who listens on one channel here, grouped by subscription filter: a message is judged once per
 * distinct filter, and only the groups it passes are visited, so ten filters over five thousand
 * sockets cost ten checks per message, not five thousand.
 */
export class Audience<Member> {
  /** Listeners without a filter: they get every message. */
  readonly everyone = new Set<Member>()
  /** Listeners with a filter, by filter (shared by every subscription with the same one). */
  readonly byFilter = new Map<Filter, Set<Member>>()
  private count = 0

  get size (): number {
    return this.count
  }

  add (member: Member, filter: Filter | undefined): void {
    const group = filter === undefined ? this.everyone : this.groupOf(filter)
    if (group.has(member)) return
    group.add(member)
    this.count++
  }

  delete (member: Member, filter: Filter | undefined): void {
    const group = filter === undefined ? this.everyone : this.byFilter.get(filter)
    /* c8 ignore next -- the hub deletes a member with the filter it added it with (regroup keeps them in step) */
    if (group === undefined || !group.delete(member)) return
    this.count--
    if (filter !== undefined && group.size === 0) this.byFilter.delete(filter)
  }

  private groupOf (filter: Filter): Set<Member> {
    let group = this.byFilter.get(filter)
    if (group === undefined) {
      group = new Set()
      this.byFilter.set(filter, group)
    }
    return group
  }
}
