/** Waits for `promise` to settle, for `ms` at most; what it settled to, or that it did not, is not the caller's concern. */
export async function settleWithin (promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })
  try {
    await Promise.race([Promise.allSettled([promise]), expired])
  } finally {
    clearTimeout(timer)
  }
}

/** Settles like `promise`, or rejects with `onTimeout()` if it has not settled within `ms`. */
export async function withTimeout<T> (promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms)
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}
