/**
 * Every error wiremesh throws or rejects with.
 *
 * Each class has `kind`, a value of the string enum named after it
 * (`SendErrorKind.Full === 'Full'`), and `code`, a stable string
 * `ERR_WIREMESH_<CLASS>_<KIND>` (`ERR_WIREMESH_SEND_FULL`). Match on `code` or on
 * `instanceof` and `kind`; messages may change.
 */

import type { Envelope } from './index'

/** Kinds of {@link AddError}. */
export enum AddErrorKind {
  /** The connection joined a mesh already, or was disconnected. */
  Spent = 'Spent',
  /** The connection is in the middle of its own `send` or `recv`. */
  Busy = 'Busy',
  /** The mesh has shut down. */
  Shutdown = 'Shutdown',
}

/** Kinds of {@link RemoveError}. */
export enum RemoveErrorKind {
  /** No connection has the id (never added, removed, disconnected, or shut down). */
  NotFound = 'NotFound',
}

/** Kinds of {@link SendError}. */
export enum SendErrorKind {
  /** No connection has the id. */
  NotFound = 'NotFound',
  /** The connection's outgoing queue is full; `error.envelope` is handed back. */
  Full = 'Full',
  /** The connection was disconnected, removed, or the mesh shut down; `error.envelope` is handed back. */
  Disconnected = 'Disconnected',
  /** The payload is longer than the connection's maximum frame size. */
  TooLarge = 'TooLarge',
  /** The socket failed (a connection's own `send`), or the reactor could not be woken. */
  IoError = 'IoError',
  /** A connection's own `send` after it joined a mesh. */
  Spent = 'Spent',
}

/** Kinds of {@link RecvError}. */
export enum RecvErrorKind {
  /** The reactor stopped unexpectedly; or, for a connection's own `recv`, the peer closed it. */
  Disconnected = 'Disconnected',
  /** The mesh was shut down and every envelope it had received has been taken. */
  Shutdown = 'Shutdown',
  /** A connection's own `recv`: the peer broke the framing. */
  Protocol = 'Protocol',
  /** A connection's own `recv`: the socket failed. */
  IoError = 'IoError',
  /** A connection's own `recv` after it joined a mesh. */
  Spent = 'Spent',
}

/** Kinds of {@link RecvTimeoutError}. */
export enum RecvTimeoutErrorKind {
  /** Nothing arrived in time. */
  Timeout = 'Timeout',
  /** The reactor stopped unexpectedly. */
  Disconnected = 'Disconnected',
  /** The mesh was shut down and every envelope it had received has been taken. */
  Shutdown = 'Shutdown',
}

/** Kinds of {@link ListenError}. */
export enum ListenErrorKind {
  /** The bind address is not one the transport accepts. */
  InvalidEndpoint = 'InvalidEndpoint',
  /** The operating system refused (address in use, permission, …). */
  IoError = 'IoError',
}

/** Kinds of {@link ConnectError}. */
export enum ConnectErrorKind {
  /** The endpoint is not one the transport accepts. */
  InvalidEndpoint = 'InvalidEndpoint',
  /** The connection failed (refused, unreachable, name not resolved). */
  IoError = 'IoError',
}

/** Kinds of {@link AcceptError}. */
export enum AcceptErrorKind {
  /** The listener was closed. */
  Closed = 'Closed',
  /** The operating system refused. */
  IoError = 'IoError',
}

/** Kinds of {@link DisconnectError}: why the reactor removed a connection by itself. */
export enum DisconnectErrorKind {
  /** The peer closed the connection between frames. */
  Eof = 'Eof',
  /** The peer closed the connection in the middle of a frame. */
  EofMidFrame = 'EofMidFrame',
  /** The peer broke the framing (for example, a length over the maximum frame size). */
  Protocol = 'Protocol',
  /** The socket failed (reset, broken pipe, …). */
  IoError = 'IoError',
}

function screamingSnake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
}

/** The base class of every wiremesh error. */
export class MeshError extends Error {
  /** What went wrong, as a value of the string enum named after the error's class. */
  readonly kind: string
  /** `ERR_WIREMESH_<CLASS>_<KIND>`: stable, for matching. */
  readonly code: string

  constructor(kind: string, message: string) {
    super(message)
    this.kind = kind
    const className = new.target.name.replace(/Error$/, '')
    this.code = `ERR_WIREMESH_${screamingSnake(className)}_${screamingSnake(kind)}`
    this.name = new.target.name
  }
}

/** `Mesh.add` refused a connection. */
export class AddError extends MeshError {
  declare readonly kind: AddErrorKind
  constructor(kind: AddErrorKind, message: string) {
    super(kind, message)
  }
}

/** `Mesh.remove` found no connection. */
export class RemoveError extends MeshError {
  declare readonly kind: RemoveErrorKind
  constructor(kind: RemoveErrorKind, message: string) {
    super(kind, message)
  }
}

/** A send did not queue its envelope; `envelope` is handed back (`null` for a connection's own `send`). */
export class SendError extends MeshError {
  declare readonly kind: SendErrorKind
  /** The envelope that was not sent. */
  readonly envelope: Envelope | null
  constructor(kind: SendErrorKind, message: string, envelope: Envelope | null = null) {
    super(kind, message)
    this.envelope = envelope
  }
}

/** A receive got no envelope. */
export class RecvError extends MeshError {
  declare readonly kind: RecvErrorKind
  constructor(kind: RecvErrorKind, message: string) {
    super(kind, message)
  }
}

/** `recvTimeout` got no envelope. */
export class RecvTimeoutError extends MeshError {
  declare readonly kind: RecvTimeoutErrorKind
  constructor(kind: RecvTimeoutErrorKind, message: string) {
    super(kind, message)
  }
}

/** A transport could not listen. */
export class ListenError extends MeshError {
  declare readonly kind: ListenErrorKind
  constructor(kind: ListenErrorKind, message: string) {
    super(kind, message)
  }
}

/** A transport could not connect. */
export class ConnectError extends MeshError {
  declare readonly kind: ConnectErrorKind
  constructor(kind: ConnectErrorKind, message: string) {
    super(kind, message)
  }
}

/** A listener could not accept. */
export class AcceptError extends MeshError {
  declare readonly kind: AcceptErrorKind
  constructor(kind: AcceptErrorKind, message: string) {
    super(kind, message)
  }
}

/**
 * The reason given with a `'disconnect'` event: why the reactor removed a connection by
 * itself. `unsent` holds the envelopes queued for it that were not fully written.
 */
export class DisconnectError extends MeshError {
  declare readonly kind: DisconnectErrorKind
  /** The connection's id. */
  readonly id: number
  /** Envelopes queued for the connection that were not fully written, oldest first. */
  readonly unsent: Envelope[]
  constructor(kind: DisconnectErrorKind, message: string, id: number, unsent: Envelope[]) {
    super(kind, message)
    this.id = id
    this.unsent = unsent
  }
}

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
