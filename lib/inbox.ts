/**
 * The inbox: what a mesh received, on its way to the receives that wait for it.
 *
 * # Contract
 *
 * - Envelopes come from native code in batches (`meshTakeOrArm`), laid out as
 *   `native/binding/handover.rs` says, with the disconnect notices among them in the order
 *   of the stream. A receive with envelopes waiting settles without crossing threads; one
 *   that finds none arms the mesh's wake in the same native call.
 * - A notice is due once every envelope before it has been taken by a receive; it is then
 *   handed on ({@link Inbox} `onNotice`), which emits it after the receive's own
 *   continuation has run. When nothing waits and every envelope taken has been handed
 *   out, notices at the front of the stream are taken too, so they reach the mesh even
 *   while nobody receives.
 * - Receives are served in the order they were made.
 *
 * @module
 */

import * as native from '../binding.js'
import { payloadView, trustedEnvelope, type Envelope } from './envelope'
import { RecvError, RecvErrorKind } from './errors'
import { release, retain } from './waker'

/** Envelopes taken from the native queue at a time when a receive finds them waiting. */
const PREFETCH = 256
/** The most envelopes and notices one native call hands over (its `meta` has room for as many). */
const BATCH_MAX = 4096

/** A disconnect notice in the received stream. */
export class Notice {
  constructor(
    readonly id: number,
    readonly notice: native.DisconnectNotice,
  ) {}
}

/** A receive that waits. */
export interface RecvWaiter {
  /** 0 for a single envelope; otherwise the most a batch takes. */
  max: number
  resolve(value: Envelope & Envelope[]): void
  reject(error: Error): void
  timer?: ReturnType<typeof setTimeout>
}

const EMPTY_MEMORY = new ArrayBuffer(0)

/** What a batch's take says when it hands nothing over. */
export const ARMED = 0
export const STOPPED = 1

/** What the inbox asks of its mesh. */
export interface InboxOwner {
  /** A notice is due. */
  onNotice(notice: Notice): void
  /** Receives now wait (the mesh must be kept while they do). */
  waiting(): void
  /** No receive waits any more. */
  idle(): void
  /** The error receives get once nothing more can arrive. */
  endError(): RecvError
}

export class Inbox {
  readonly #hot: native.ExternalObject<'HotMesh'>
  readonly #owner: InboxOwner
  /** Where `meshTakeOrArm` describes what it hands over; reused by every call. */
  readonly #meta = new Float64Array(1 + 4 * BATCH_MAX)
  /** Envelopes and notices taken from the native queue, not yet handed out. */
  #ready: Array<Envelope | Notice> = []
  #head = 0
  readonly #waiters: RecvWaiter[] = []
  #stopped = false

  /** Envelopes (and notices) taken from the native queue and not yet received. */
  get buffered(): number {
    return this.#ready.length - this.#head
  }
  /** A wake may have come for notices that were behind envelopes not yet handed out. */
  #noticesBehind = false
  #checkQueued = false

  constructor(hot: native.ExternalObject<'HotMesh'>, owner: InboxOwner) {
    this.#hot = hot
    this.#owner = owner
  }

  /** True once nothing more can arrive (and everything taken was handed out). */
  get stopped(): boolean {
    return this.#stopped && this.#head === this.#ready.length
  }

  /** True while a receive waits. */
  get hasWaiters(): boolean {
    return this.#waiters.length > 0
  }

  /** The next envelope if one is waiting; if none, arms the wake ({@link ARMED}) or says none will come ({@link STOPPED}). */
  takeOrArm(): Envelope | typeof ARMED | typeof STOPPED {
    for (;;) {
      while (this.#head < this.#ready.length) {
        const item = this.#ready[this.#head]
        this.#ready[this.#head++] = undefined as unknown as Envelope
        if (item instanceof Notice) {
          this.#owner.onNotice(item)
          continue
        }
        this.#taken()
        return item
      }
      const status = this.#fill(PREFETCH)
      if (status !== undefined) return status
    }
  }

  /** Up to `max` envelopes waiting, without waiting (none: an empty array). */
  takeMany(max: number): Envelope[] {
    const out: Envelope[] = []
    const ready = this.#ready
    while (out.length < max && this.#head < ready.length) {
      const item = ready[this.#head]
      ready[this.#head++] = undefined as unknown as Envelope
      if (item instanceof Notice) this.#owner.onNotice(item)
      else out.push(item)
    }
    // Then straight from native code into `out`; the wake is armed only if nothing came.
    while (out.length < max) {
      const arm = out.length === 0
      if (this.#fill(Math.min(max - out.length, BATCH_MAX), arm, out) !== undefined) break
    }
    if (out.length > 0) this.#taken()
    return out
  }

  /**
   * After envelopes were handed out: the notices right behind them are due. If that left
   * nothing taken and a notice was signalled behind envelopes, look for it soon (the wake
   * that signalled it has passed).
   */
  #taken(): void {
    this.#dueNotices()
    if (this.#noticesBehind && this.#head === this.#ready.length && !this.#checkQueued) {
      this.#checkQueued = true
      setImmediate(() => {
        this.#checkQueued = false
        if (this.#waiters.length === 0) this.#takeNotices()
      })
    }
  }

  /** Hands out the notices at the head of `ready`: every envelope before them is taken. */
  #dueNotices(): void {
    while (this.#head < this.#ready.length) {
      const item = this.#ready[this.#head]
      if (!(item instanceof Notice)) return
      this.#ready[this.#head++] = undefined as unknown as Envelope
      this.#owner.onNotice(item)
    }
  }

  /**
   * Takes a batch from the native queue into `ready` (or `into`); if there was nothing,
   * returns {@link STOPPED} if nothing will come, else {@link ARMED} (with the wake armed,
   * if `arm`).
   */
  #fill(max: number, arm = true, into?: Envelope[]): typeof ARMED | typeof STOPPED | undefined {
    this.#ready.length = 0
    this.#head = 0
    if (this.#stopped) return STOPPED
    const meta = this.#meta
    const handed = arm ? native.meshTakeOrArm(this.#hot, max, meta) : native.meshTake(this.#hot, max, meta)
    if (handed === null) {
      if (meta[0] === native.TakeStatus.Armed) return ARMED
      this.#stopped = true
      return STOPPED
    }
    // Into `into`, a receive's result: the notices among them are due at once (every
    // envelope before them is in that result).
    const ready = into ?? (this.#ready as Envelope[])
    let index = -1
    let memory = EMPTY_MEMORY
    let base = 0
    for (let i = 1, end = 1 + 4 * meta[0]; i < end; i += 4) {
      const of = meta[i + 1]
      if (of === -1) {
        const notice = new Notice(meta[i], handed[meta[i + 2]] as native.DisconnectNotice)
        if (into === undefined) this.#ready.push(notice)
        else this.#owner.onNotice(notice)
        continue
      }
      if (of !== index) {
        index = of
        const buffer = handed[of] as Uint8Array
        memory = buffer.buffer as ArrayBuffer
        base = buffer.byteOffset
      }
      const start = meta[i + 2]
      ready.push(trustedEnvelope(meta[i], payloadView(memory, base + start, meta[i + 3] - start)))
    }
    return undefined
  }

  /** Adds a waiting receive; `armed`: `takeOrArm` armed the wake already. */
  wait(waiter: RecvWaiter, armed = false): void {
    this.#waiters.push(waiter)
    if (this.#waiters.length === 1) this.#owner.waiting()
    retain()
    if (!armed) this.#arm()
  }

  /** Removes a waiting receive (its timer fired); false if it was served already. */
  settle(waiter: RecvWaiter): boolean {
    const index = this.#waiters.indexOf(waiter)
    if (index < 0) return false
    this.#waiters.splice(index, 1)
    if (waiter.timer !== undefined) clearTimeout(waiter.timer)
    release()
    if (this.#waiters.length === 0) this.#owner.idle()
    return true
  }

  /** Asks for a wake; if something is there already, serves it now. */
  #arm(): void {
    if (this.#head < this.#ready.length) {
      queueMicrotask(() => this.service())
      return
    }
    const taken = this.takeOrArm()
    if (taken === ARMED) return
    // Taken by the arming: it goes back where it was, first in line.
    if (taken !== STOPPED) this.#ready[--this.#head] = taken
    queueMicrotask(() => this.service())
  }

  /** Serves the waiting receives with what has arrived; then, if nobody waits, due notices. */
  service(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0]
      let value: Envelope | Envelope[] | undefined
      if (waiter.max === 0) {
        const taken = this.takeOrArm()
        if (taken === ARMED) return
        value = taken === STOPPED ? undefined : taken
      } else {
        const batch = this.takeMany(waiter.max)
        value = batch.length > 0 ? batch : undefined
      }
      if (value === undefined) {
        if (this.stopped) {
          for (const waiter of this.#waiters.slice()) {
            this.settle(waiter)
            waiter.reject(this.#owner.endError())
          }
          return
        }
        // takeMany found nothing and armed: wait for the wake.
        return
      }
      this.settle(waiter)
      waiter.resolve(value as Envelope & Envelope[])
    }
    this.#takeNotices()
  }

  /** With no receive waiting: the notices due in `ready`, then those at the front of the stream. */
  #takeNotices(): void {
    this.#dueNotices()
    if (this.#head < this.#ready.length) {
      this.#noticesBehind = true
      return
    }
    this.#noticesBehind = false
    if (this.#stopped) return
    for (const notice of native.meshTakeNotices(this.#hot)) this.#owner.onNotice(new Notice(notice.id, notice))
  }
}

/** The error a receive gets once nothing more can arrive. */
export function endError(shutdown: boolean): RecvError {
  return shutdown
    ? new RecvError(RecvErrorKind.Shutdown, 'the mesh has shut down')
    : new RecvError(RecvErrorKind.Disconnected, 'the mesh reactor stopped unexpectedly')
}
