/**
 * The outbox: a mesh's sends of one task, encoded as frames and handed to native code in
 * one call.
 *
 * # Contract
 *
 * - `send` encodes the frame (header and payload) into a per-mesh buffer; once the sends
 *   of the task stop coming (a microtask turn that brings none, or 1024 sends), or when the
 *   buffer is full, the buffer crosses into native code in one call, and each connection's
 *   run of frames is queued there as one item.
 *   Payloads of {@link DIRECT_MIN} bytes or more skip the buffer: they are queued at once,
 *   with one copy.
 * - `Full` and `TooLarge` are exact at the call: for each connection the outbox counts
 *   down the room its queue had when last asked (only this thread's sends lower it) and
 *   asks again only when the count reaches zero.
 * - The one framing of the package is the core's; the header written here is the same
 *   four bytes (a big-endian length), and the core checks every run it is handed
 *   (`EncodedFrames::new`), so a frame written wrong here is refused there, not sent.
 *
 * @module
 */

import { Buffer } from 'node:buffer'

import * as native from '../binding.js'
import { Envelope } from './envelope'

const OUTBOX_BYTES = 256 * 1024
const OUTBOX_RUNS = 4096
/** Payloads this large are queued at once, not copied into the outbox. */
export const DIRECT_MIN = 16 * 1024
/** The most sends the flush task waits for, one microtask at a time (see `#flushTask`). */
const FLUSH_AFTER_SENDS = 1024

interface Credit {
  room: number
  max: number
}

/** What the outbox does with runs a flush could not queue (their connection had gone). */
export type Refused = (id: number, envelopes: Envelope[], status: native.SendStatus) => void

export class Outbox {
  readonly #hot: native.ExternalObject<'HotMesh'>
  readonly #refused: Refused
  readonly #buffer = Buffer.allocUnsafeSlow(OUTBOX_BYTES)
  #length = 0
  /** (id, end offset) per run. */
  readonly #runs = new Float64Array(2 * OUTBOX_RUNS)
  #runCount = 0
  #lastRunId = -1
  #flushQueued = false
  /** Sends since the last flush, and their count when the flush task last looked. */
  #sends = 0
  #sendsSeen = -1
  readonly #flushTask = (): void => {
    // A loop that awaits each send (`await mesh.sendWait(…)` finding room) runs one send per
    // microtask, each queued after this task: flushing now would cross into native code
    // once per envelope. So the task looks again one microtask later while sends keep
    // coming, up to FLUSH_AFTER_SENDS of them; then (or as soon as a turn brings none) it
    // flushes. A batch of sends in one go costs one extra microtask turn.
    if (this.#sends !== this.#sendsSeen && this.#sends < FLUSH_AFTER_SENDS) {
      this.#sendsSeen = this.#sends
      queueMicrotask(this.#flushTask)
      return
    }
    this.#flushQueued = false
    this.flush()
  }
  /** Per connection: frames it can still take (a floor) and its largest payload. */
  readonly #credits = new Map<number, Credit>()
  /** The credit last used, and its id (0: none): a stream to one connection skips the map. */
  #lastCreditId = 0
  #lastCredit: Credit | undefined = undefined

  constructor(hot: native.ExternalObject<'HotMesh'>, refused: Refused) {
    this.#hot = hot
    this.#refused = refused
  }

  /** Queues a payload for connection `id`: a [`SendStatus`](native.SendStatus). */
  send(id: number, payload: Buffer): native.SendStatus {
    let credit = id === this.#lastCreditId ? this.#lastCredit : this.#credits.get(id)
    if (credit === undefined || credit.room === 0) {
      const status = this.#refill(id)
      if (status !== native.SendStatus.Ok) return status
      credit = this.#credits.get(id) as Credit
    }
    this.#lastCreditId = id
    this.#lastCredit = credit
    const length = payload.length
    if (length > credit.max) return native.SendStatus.TooLarge
    if (length >= DIRECT_MIN) {
      this.flush()
      const status = native.meshSend(this.#hot, id, payload)
      if (status === native.SendStatus.Ok) credit.room--
      return status
    }
    let at = this.#length
    if (at + 4 + length > OUTBOX_BYTES || (this.#runCount === OUTBOX_RUNS && id !== this.#lastRunId)) {
      this.flush()
      at = 0
    }
    credit.room--
    const out = this.#buffer
    out[at] = length >>> 24
    out[at + 1] = (length >>> 16) & 0xff
    out[at + 2] = (length >>> 8) & 0xff
    out[at + 3] = length & 0xff
    out.set(payload, at + 4)
    at += 4 + length
    this.#length = at
    if (id === this.#lastRunId) {
      this.#runs[2 * this.#runCount - 1] = at
    } else {
      this.#runs[2 * this.#runCount] = id
      this.#runs[2 * this.#runCount + 1] = at
      this.#runCount++
      this.#lastRunId = id
    }
    this.#sends++
    if (!this.#flushQueued) {
      this.#flushQueued = true
      this.#sendsSeen = -1
      queueMicrotask(this.#flushTask)
    }
    return native.SendStatus.Ok
  }

  /** Drops the credit of `id` (its connection went, or its room must be asked again). */
  forget(id: number): void {
    this.#credits.delete(id)
    if (id === this.#lastCreditId) {
      this.#lastCreditId = 0
      this.#lastCredit = undefined
    }
  }

  /** Hands the outbox to the native queues. */
  flush(): void {
    const count = this.#runCount
    this.#sends = 0
    if (count === 0) return
    const length = this.#length
    this.#runCount = 0
    this.#length = 0
    this.#lastRunId = -1
    const refused = native.meshSendEncoded(this.#hot, this.#buffer, length, this.#runs, count)
    if (refused !== null) this.#refuse(refused)
  }

  /**
   * Asks the native queue of `id` for its room, after a flush (so the outbox counts in it,
   * and frames the reactor has written since make room).
   */
  #refill(id: number): native.SendStatus {
    this.flush()
    const room = native.meshRoom(this.#hot, id)
    if (room < 0) return -room as native.SendStatus
    let credit = this.#credits.get(id)
    if (credit === undefined) {
      credit = { room, max: native.meshMaxFrameSize(this.#hot, id) }
      this.#credits.set(id, credit)
    } else {
      credit.room = room
    }
    return room === 0 ? native.SendStatus.Full : native.SendStatus.Ok
  }

  /** The envelopes of runs a flush could not queue, handed to the mesh. */
  #refuse(pairs: number[]): void {
    for (let i = 0; i < pairs.length; i += 2) {
      const run = pairs[i]
      const id = this.#runs[2 * run]
      const end = this.#runs[2 * run + 1]
      const envelopes: Envelope[] = []
      for (let at = run === 0 ? 0 : this.#runs[2 * run - 1]; at < end;) {
        const length = this.#buffer.readUInt32BE(at)
        envelopes.push(new Envelope(id, Buffer.from(this.#buffer.subarray(at + 4, at + 4 + length))))
        at += 4 + length
      }
      this.forget(id)
      this.#refused(id, envelopes, pairs[i + 1] as native.SendStatus)
    }
  }
}
