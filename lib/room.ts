/**
 * Room waiters: the `sendWait`s of a mesh that found their connection's queue full.
 *
 * # Contract
 *
 * - Envelopes to one connection keep their order: while some wait for room, a later
 *   `send` to that connection is `Full` and a later `sendWait` waits behind them.
 * - The first waiter of a connection asks native code for a wake (`wantRoom`); the reactor
 *   wakes the mesh once the queue is down to half its capacity, or the connection leaves.
 *   Then the waiting envelopes are sent in order until one does not fit (which asks again).
 * - A waiter whose connection has left is rejected with the send's error (`Disconnected`);
 *   an aborted `signal` rejects it with the signal's reason.
 *
 * @module
 */

import * as native from '../binding.js'
import type { Envelope } from './envelope'
import { release, retain } from './waker'

interface RoomWaiter {
  envelope: Envelope
  id: number
  payload: Buffer
  resolve(): void
  reject(error: unknown): void
  signal?: AbortSignal
  onAbort?: () => void
}

/** What the room waiters ask of their mesh. */
export interface RoomOwner {
  send(id: number, payload: Buffer): native.SendStatus
  /** 1 if a wake was asked for, 0 if there is room (or the connection left) now, -1 if unknown. */
  wantRoom(id: number): number
  /** The error of a send refused with `status`. */
  sendError(status: native.SendStatus, envelope: Envelope): Error
  /** Waiters now wait (the mesh must be kept while they do). */
  waiting(): void
  /** No waiter waits any more. */
  idle(): void
}

export class RoomWaiters {
  readonly #owner: RoomOwner
  readonly #waiters = new Map<number, RoomWaiter[]>()

  constructor(owner: RoomOwner) {
    this.#owner = owner
  }

  /** True while envelopes to `id` wait for room (a later send must not overtake them). */
  waitsFor(id: number): boolean {
    if (this.#waiters.size === 0) return false
    const waiters = this.#waiters.get(id)
    return waiters !== undefined && waiters.length > 0
  }

  get size(): number {
    return this.#waiters.size
  }

  /** Waits for room to send `envelope` to `id`. */
  wait(envelope: Envelope, id: number, payload: Buffer, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: RoomWaiter = { envelope, id, payload, resolve, reject, signal }
      if (signal) {
        waiter.onAbort = () => {
          const list = this.#waiters.get(id)
          const index = list ? list.indexOf(waiter) : -1
          if (index >= 0) {
            list!.splice(index, 1)
            if (list!.length === 0) this.#waiters.delete(id)
            this.#drop(waiter)
            reject(signal.reason)
          }
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      this.#add(id, [waiter], false)
    })
  }

  /**
   * Puts envelopes a flush could not queue for lack of room in front of the waiters of
   * `id`; `lost` gets those that can never be sent.
   */
  requeue(id: number, envelopes: Envelope[], lost: (envelope: Envelope) => void): void {
    const waiters = envelopes.map((envelope): RoomWaiter => ({
      envelope,
      id,
      payload: envelope.payload,
      resolve: () => {},
      reject: () => lost(envelope),
    }))
    this.#add(id, waiters, true)
  }

  #add(id: number, added: RoomWaiter[], first: boolean): void {
    let waiters = this.#waiters.get(id)
    const asked = waiters !== undefined && waiters.length > 0
    if (waiters === undefined) this.#waiters.set(id, (waiters = []))
    if (first) waiters.unshift(...added)
    else waiters.push(...added)
    if (this.#waiters.size === 1 && !asked) this.#owner.waiting()
    for (let i = 0; i < added.length; i++) retain()
    if (!asked && this.#owner.wantRoom(id) !== 1) queueMicrotask(() => this.serviceFor(id))
  }

  /** Sends what waits, for every connection with waiters. */
  service(): void {
    for (const id of [...this.#waiters.keys()]) this.serviceFor(id)
  }

  /** Sends the envelopes waiting for `id`, in order, until one does not fit. */
  serviceFor(id: number): void {
    const waiters = this.#waiters.get(id)
    while (waiters !== undefined && waiters.length > 0) {
      const waiter = waiters[0]
      const status = this.#owner.send(id, waiter.payload)
      if (status === native.SendStatus.Full) {
        const asked = this.#owner.wantRoom(id)
        if (asked === 0) continue
        if (asked === 1) return
      }
      waiters.shift()
      this.#drop(waiter)
      if (status === native.SendStatus.Ok) waiter.resolve()
      else waiter.reject(this.#owner.sendError(status, waiter.envelope))
    }
    if (this.#waiters.delete(id) && this.#waiters.size === 0) this.#owner.idle()
  }

  #drop(waiter: RoomWaiter): void {
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort)
    release()
  }
}
