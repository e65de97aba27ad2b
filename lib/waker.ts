/**
 * This JavaScript environment's one waker, and keeping the process alive.
 *
 * The binding calls {@link wake} through one weak threadsafe function per environment. A
 * wake says which keys have work (`takeWoken`): each mesh and the lobby have a key, and
 * only those woken are served, so a wake never costs anything for a mesh that has nothing
 * for JavaScript. The waker keeps the process alive only while something needs it
 * ({@link retain}, {@link release}): a ref'd mesh, a pending receive, a pending operation.
 *
 * @module
 */

import * as native from '../binding.js'

/** Something a wake serves. */
export interface Wakeable {
  /** Called on the JavaScript thread when its key was woken. */
  service(): void
}

/** What each key serves; meshes are held weakly (a pending promise holds them strongly). */
const wakeables = new Map<number, WeakRef<Wakeable>>()
const keys = new Uint32Array(256)

/**
 * What is served for the environment's whole life (the lobby), held strongly: nothing else
 * may hold it, and a collected wakeable would lose every wake of its key.
 */
const kept = new Set<Wakeable>()

/**
 * Serves `wakeable` whenever `key` is woken, until {@link forget}. It is held weakly unless
 * `keep` is true (then it is served for the environment's whole life).
 */
export function onWake(key: number, wakeable: Wakeable, keep = false): void {
  wakeables.set(key, new WeakRef(wakeable))
  if (keep) kept.add(wakeable)
}

/** Stops serving `key`. */
export function forget(key: number): void {
  wakeables.delete(key)
}

/** Runs on this environment's JavaScript thread when something woke it. */
function wake(): void {
  for (;;) {
    const count = native.takeWoken(keys)
    for (let i = 0; i < count; i++) {
      const ref = wakeables.get(keys[i])
      const wakeable = ref?.deref()
      if (wakeable !== undefined) wakeable.service()
      else if (ref !== undefined) wakeables.delete(keys[i])
    }
    if (count < keys.length) return
  }
}

native.registerWaker(wake)

let keepAliveCount = 0
/** Whether the waker is ref'd (it lags `keepAliveCount` by a few microtasks when that reaches 0). */
let keptAlive = false
/** Microtask hops left before an idle waker is unref'd; 0 when no check is queued. */
let unrefHops = 0

/** One more reason to keep the process alive. */
export function retain(): void {
  keepAliveCount++
  if (!keptAlive) {
    keptAlive = true
    native.keepAlive(true)
  }
}

/**
 * One reason fewer. The waker is unref'd once none is left, a few microtasks later, so that
 * code which takes an envelope and waits again at once (`await mesh.recv()` in a loop) does
 * not unref and ref it for every envelope.
 */
export function release(): void {
  if (--keepAliveCount === 0 && unrefHops === 0) {
    unrefHops = 4
    queueMicrotask(unrefIfIdle)
  }
}

function unrefIfIdle(): void {
  if (keepAliveCount !== 0 || !keptAlive) {
    unrefHops = 0
  } else if (--unrefHops > 0) {
    queueMicrotask(unrefIfIdle)
  } else {
    keptAlive = false
    native.keepAlive(false)
  }
}
