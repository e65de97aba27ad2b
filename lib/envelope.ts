/**
 * The envelope: a payload and the id of the connection it came from or goes to.
 *
 * An envelope of another installed copy of the package (two versions in one program) is
 * accepted by a send too: it carries a brand (`Symbol.for('wiremesh.envelope')`).
 *
 * Its fields are read-only: an envelope is checked once, when it is made, and what a send
 * reads from it is what was checked. Changing it means making a new one (or taking the
 * payload out with `takePayload`).
 *
 * @module
 */

import { Buffer } from 'node:buffer'
import { inspect } from 'node:util'

import { checkId, toBuffer } from './args'

const EMPTY = Buffer.alloc(0)
/** Passed by this package's own code for values it has checked already. */
const TRUSTED = Symbol('wiremesh.trusted')
/** What an envelope of any copy of the package carries (see {@link adoptEnvelope}). */
const BRAND = Symbol.for('wiremesh.envelope')

let idOf: (envelope: Envelope) => number
let payloadOf: (envelope: Envelope) => Buffer

/** A payload with the id of the connection it came from or goes to. */
export class Envelope {
  #id: number
  #payload: Buffer

  /** An envelope for connection `id`; a string payload is encoded as UTF-8. */
  constructor(id: number, payload: Uint8Array | string)
  /** @internal */
  constructor(id: number, payload: Buffer, trusted: typeof TRUSTED)
  constructor(id: number, payload: Uint8Array | string, trusted?: typeof TRUSTED) {
    if (trusted === TRUSTED) {
      this.#id = id
      this.#payload = payload as Buffer
    } else {
      this.#id = checkId(id)
      this.#payload = toBuffer(payload)
    }
  }

  /** The connection's id. */
  get id(): number {
    return this.#id
  }

  /**
   * The payload. A received one under 8 KiB is a view on memory shared with the other small
   * payloads of the same read, freed when the last of them is collected: copy it
   * (`Buffer.from(payload)`) to keep it long on its own.
   */
  get payload(): Buffer {
    return this.#payload
  }

  /** Takes the payload out, leaving an empty one. */
  takePayload(): Buffer {
    const payload = this.#payload
    this.#payload = EMPTY
    return payload
  }

  /** Shows the id and the payload (the fields are getters). */
  [inspect.custom](depth: number, options: object, show: typeof inspect): string {
    return `Envelope { id: ${this.#id}, payload: ${show(this.#payload, options)} }`
  }

  static {
    idOf = (envelope) => envelope.#id
    payloadOf = (envelope) => envelope.#payload
  }
}

Object.defineProperty(Envelope.prototype, BRAND, { value: true })

/** The id of an envelope of this copy of the package, as it was checked. */
export function envelopeId(envelope: Envelope): number {
  return idOf(envelope)
}

/** The payload of an envelope of this copy of the package, as it was checked. */
export function envelopePayload(envelope: Envelope): Buffer {
  return payloadOf(envelope)
}

/**
 * An envelope of another installed copy of the package, as one of this copy, its fields
 * read through their getters and checked again; `null` if `value` is no envelope at all.
 */
export function adoptEnvelope(value: unknown): Envelope | null {
  if (typeof value !== 'object' || value === null || (value as { [BRAND]?: unknown })[BRAND] !== true) return null
  const { id, payload } = value as { id: unknown; payload: unknown }
  return new Envelope(checkId(id, 'envelope.id'), toBuffer(payload, 'envelope.payload'))
}

/** An envelope of values this package checked already (received ones). */
export function trustedEnvelope(id: number, payload: Buffer): Envelope {
  return new Envelope(id, payload, TRUSTED)
}

/**
 * A `Buffer` view on a batch's shared buffer, made directly: it is a `Uint8Array` whose
 * prototype chain goes through `Buffer.prototype`, which is what a `Buffer` is (`instanceof
 * Buffer`, `Buffer.isBuffer`, every `Buffer` method, `constructor === Buffer`), without the
 * argument checks of `Buffer.from(arrayBuffer, offset, length)`: about half its cost.
 */
class PayloadView extends Uint8Array {}
Object.setPrototypeOf(PayloadView.prototype, Buffer.prototype)
Object.defineProperty(PayloadView.prototype, 'constructor', {
  value: Buffer,
  writable: true,
  configurable: true,
})

/**
 * A received payload: `length` bytes of `memory` from `offset`, as a `Buffer` view. (The
 * caller reads a batch buffer's `buffer` and `byteOffset` once, not once per payload: they
 * are getters implemented in C++.)
 */
export function payloadView(memory: ArrayBuffer, offset: number, length: number): Buffer {
  return new PayloadView(memory, offset, length) as Buffer
}
