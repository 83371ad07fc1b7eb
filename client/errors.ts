/**
 * What the hub refused or what went wrong, with the hub's `FRB_*` code when it gave one (see the
 * error catalogue in the package README), the HTTP status for an HTTP answer, and the channel when
 * the error concerns one subscription.
 */
export class BroadcastError extends Error {
  constructor (
    message: string,
    readonly code?: string,
    readonly status?: number,
    readonly channel?: string
  ) {
    super(message)
    this.name = 'BroadcastError'
  }
}
