/**
 * Argument checks. A value of the wrong type is a `TypeError` with Node's
 * `ERR_INVALID_ARG_TYPE`; a number out of its range a `RangeError` with `ERR_OUT_OF_RANGE`;
 * a string that is not one of those allowed a `TypeError` with `ERR_INVALID_ARG_VALUE`.
 * Methods that return a promise reject with them instead of throwing.
 *
 * @module
 */

import { Buffer } from 'node:buffer'

/** A `TypeError` with Node's `ERR_INVALID_ARG_TYPE` code. */
export function invalidArgType(name: string, expected: string, actual: unknown): TypeError {
  const shown = actual === null ? 'null' : Array.isArray(actual) ? 'an array' : typeof actual
  const error = new TypeError(`The "${name}" argument must be ${expected}. Received ${shown}`)
  ;(error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE'
  return error
}

/** A `RangeError` with Node's `ERR_OUT_OF_RANGE` code. */
export function outOfRange(name: string, expected: string, actual: unknown): RangeError {
  const error = new RangeError(
    `The value of "${name}" is out of range. It must be ${expected}. Received ${String(actual)}`,
  )
  ;(error as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE'
  return error
}

/** A `TypeError` with Node's `ERR_INVALID_ARG_VALUE` code: a value of the right type that is not allowed. */
export function invalidArgValue(name: string, reason: string, actual: unknown): TypeError {
  const shown = typeof actual === 'string' ? `'${actual}'` : String(actual)
  const error = new TypeError(`The argument '${name}' ${reason}. Received ${shown}`)
  ;(error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE'
  return error
}

/** One of the strings `allowed`: another string is `ERR_INVALID_ARG_VALUE`, another type `ERR_INVALID_ARG_TYPE`. */
export function checkOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value)
  if (!(allowed as readonly string[]).includes(value)) {
    throw invalidArgValue(name, `must be one of: ${allowed.map((a) => `'${a}'`).join(', ')}`, value)
  }
  return value as T
}

/** A connection id: a non-negative safe integer. */
export function checkId(id: unknown, name = 'id'): number {
  if (typeof id !== 'number') throw invalidArgType(name, 'of type number', id)
  if (!Number.isSafeInteger(id) || id < 0) throw outOfRange(name, 'a non-negative safe integer', id)
  return id
}

/** An integer from `min` to `max`. */
export function checkCount(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(name, `an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}`, value)
  }
  return value
}

/** The longest a timer waits: what `setTimeout` takes. */
export const MAX_TIMEOUT = 0x7fff_ffff

/** A time in milliseconds: a finite number from 0 to {@link MAX_TIMEOUT}. */
export function checkTimeout(value: unknown, name: string): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!(value >= 0) || !Number.isFinite(value) || value > MAX_TIMEOUT) {
    throw outOfRange(name, `a finite number >= 0 and <= ${MAX_TIMEOUT}`, value)
  }
  return value
}

/** A payload as a `Buffer`: a `Buffer` as it is, another `Uint8Array` as a view, a string as UTF-8. */
export function toBuffer(payload: unknown, name = 'payload'): Buffer {
  if (Buffer.isBuffer(payload)) return payload
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  if (typeof payload === 'string') return Buffer.from(payload)
  throw invalidArgType(name, 'a Buffer, Uint8Array or string', payload)
}

export function checkString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value)
  return value
}

/** An options argument: an object, or `undefined` for none. */
export function checkOptions<T extends object>(options: unknown, name = 'options'): Partial<T> {
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null) throw invalidArgType(name, 'an object', options)
  return options as Partial<T>
}

/** An optional `AbortSignal`. */
export function checkSignal(signal: unknown, name = 'options.signal'): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw invalidArgType(name, 'an AbortSignal', signal)
  return signal
}

/** An optional timeout in milliseconds (`undefined`: none). */
export function checkOptionalTimeout(value: unknown, name: string): number | undefined {
  return value === undefined ? undefined : checkTimeout(value, name)
}

/** Runs `check` and turns what it throws into a rejected promise. */
export function rejecting<T>(check: () => T): { value: T } | { error: unknown } {
  try {
    return { value: check() }
  } catch (error) {
    return { error }
  }
}
