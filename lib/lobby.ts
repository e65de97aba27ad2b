/**
 * Operations of the environment's lobby (connect, accept, a connection's own send and
 * recv): each is started in native code, which returns an operation id at once, and ends
 * when the lobby's key is woken and its completion is taken.
 *
 * A pending operation keeps the process alive, as a pending socket operation does. An
 * aborted `signal` cancels it: it then ends with kind `Aborted` (the `cause` is the
 * signal's reason).
 *
 * @module
 */

import * as native from '../binding.js'
import { onWake, release, retain } from './waker'

interface Pending {
  settle(completion: native.Completion): void
  signal?: AbortSignal
  onAbort?: () => void
}

const pending = new Map<number, Pending>()

const lobby = {
  service(): void {
    for (const completion of native.takeCompletions()) {
      const waiting = pending.get(completion.id)
      if (waiting === undefined) continue
      pending.delete(completion.id)
      if (waiting.onAbort) waiting.signal!.removeEventListener('abort', waiting.onAbort)
      release()
      waiting.settle(completion)
    }
  },
}
// Kept by the waker: this module's `lobby` is referenced by nothing once it has loaded.
onWake(native.lobbyKey(), lobby, true)

/**
 * Waits for operation `id` to end; `settle` turns its completion into the promise's value
 * (or throws its error). An aborted `signal` cancels the operation.
 */
export function completion<T>(
  id: number,
  settle: (completion: native.Completion) => T,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const waiting: Pending = {
      settle(completion) {
        try {
          resolve(settle(completion))
        } catch (error) {
          if (signal?.aborted && error instanceof Error && !('cause' in error)) {
            Object.defineProperty(error, 'cause', { value: signal.reason, configurable: true })
          }
          reject(error)
        }
      },
    }
    if (signal !== undefined) {
      waiting.signal = signal
      waiting.onAbort = () => native.cancelOperation(id)
      signal.addEventListener('abort', waiting.onAbort, { once: true })
    }
    pending.set(id, waiting)
    retain()
  })
}

/** Forgets operation `id` (its promise was settled otherwise): its completion is ignored. */
export function abandon(id: number): void {
  const waiting = pending.get(id)
  if (waiting === undefined) return
  pending.delete(id)
  if (waiting.onAbort) waiting.signal!.removeEventListener('abort', waiting.onAbort)
  release()
}

/** True if `value` is a failure the binding returned instead of a result. */
export function isFailure(value: unknown): value is native.Failure {
  return typeof value === 'object' && value !== null && 'kind' in value && 'message' in value
}

/** A timeout option in the binding's form: milliseconds, or -1 for none. */
export function nativeTimeout(timeout: number | undefined): number {
  return timeout === undefined ? -1 : timeout
}
