/** A listener that throws must not break the client's bookkeeping: its error is rethrown later, on its own. */
export function call<A extends unknown[]> (listener: ((...args: A) => void) | undefined, ...args: A): void {
  try {
    listener?.(...args)
  } catch (err) {
    setTimeout(() => { throw err })
  }
}

/** A small typed event emitter: `on()` returns the function that removes the listener. */
export class Emitter<Events extends { [event: string]: unknown[] }> {
  private readonly listeners: { [E in keyof Events]?: Set<(...args: Events[E]) => void> } = {}

  on<E extends keyof Events> (event: E, listener: (...args: Events[E]) => void): () => void {
    (this.listeners[event] ??= new Set()).add(listener)
    return () => this.off(event, listener)
  }

  off<E extends keyof Events> (event: E, listener: (...args: Events[E]) => void): void {
    this.listeners[event]?.delete(listener)
  }

  protected emit<E extends keyof Events> (event: E, ...args: Events[E]): void {
    for (const listener of [...this.listeners[event] ?? []]) call(listener, ...args)
  }
}
