/**
 * Every error wiremesh throws or rejects with.
 *
 * Each class has `kind`, a value of the string enum named after it
 * (`SendErrorKind.Full === 'Full'`), and `code`, a stable literal string from
 * {@link codes} (`'ERR_WIREMESH_SEND_FULL'`), typed per kind so that `switch (error.code)`
 * narrows. Match on `code`, or on `instanceof` and `kind`; messages may change.
 *
 * `instanceof` works across two installed copies of the package: every error carries a
 * brand (`Symbol.for('wiremesh.error')`), and the classes check it.
 *
 * @module
 */

import type { Envelope } from './envelope'

/** Kinds of {@link AddError}. */
export enum AddErrorKind {
  /** The connection joined a mesh already, or was disconnected. */
  Spent = 'Spent',
  /** The connection is in the middle of its own `send` or `recv`. */
  Busy = 'Busy',
  /** The mesh has shut down; the connection stays usable. */
  Shutdown = 'Shutdown',
}

/** Kinds of {@link RemoveError}. */
export enum RemoveErrorKind {
  /** No connection has the id (never added, removed, disconnected, or shut down). */
  NotFound = 'NotFound',
}

/** Kinds of {@link SendError}. */
export enum SendErrorKind {
  /** The mesh never gave out the id. */
  NotFound = 'NotFound',
  /** The connection's outgoing queue is full; `error.envelope` is handed back. */
  Full = 'Full',
  /**
   * The connection has left the mesh (removed, disconnected, or the mesh shut down);
   * `error.envelope` is handed back. A connection's own `send`: the peer closed it.
   */
  Disconnected = 'Disconnected',
  /** The payload is longer than the connection's maximum frame size. */
  TooLarge = 'TooLarge',
  /** The socket failed (a connection's own `send`), or the reactor could not be woken. */
  IoError = 'IoError',
  /** A connection's own `send` after it joined a mesh or was disconnected. */
  Spent = 'Spent',
  /** A connection's own `send` did not finish within its `timeout`. */
  Timeout = 'Timeout',
  /** A connection's own `send` was aborted: its `signal`, or `disconnect()`. */
  Aborted = 'Aborted',
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
  /** A connection's own `recv` after it joined a mesh or was disconnected. */
  Spent = 'Spent',
  /** A connection's own `recv`: no frame arrived within its `timeout`. */
  Timeout = 'Timeout',
  /** A connection's own `recv` was aborted: its `signal`, or `disconnect()`. */
  Aborted = 'Aborted',
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
  /** Something else listens on the address. */
  AddressInUse = 'AddressInUse',
  /** The operating system refused (permission, no such address, …). */
  IoError = 'IoError',
  /** This platform lacks the transport (Unix sockets on Windows). */
  Unsupported = 'Unsupported',
}

/** Kinds of {@link ConnectError}. */
export enum ConnectErrorKind {
  /** The endpoint is not one the transport accepts. */
  InvalidEndpoint = 'InvalidEndpoint',
  /** The connection failed (refused, unreachable, name not resolved). */
  IoError = 'IoError',
  /** No connection within the `timeout`. */
  Timeout = 'Timeout',
  /** The `signal` aborted the attempt. */
  Aborted = 'Aborted',
  /** This platform lacks the transport (Unix sockets on Windows). */
  Unsupported = 'Unsupported',
  /**
   * The TLS handshake failed, or the server was not authenticated (unknown CA, expired
   * certificate, another name than `servername`).
   */
  Tls = 'Tls',
}

/** Kinds of {@link AcceptError}. */
export enum AcceptErrorKind {
  /** The listener was closed. */
  Closed = 'Closed',
  /** The operating system refused (for example, too many open files). */
  IoError = 'IoError',
  /** No connection within the `timeout`. */
  Timeout = 'Timeout',
  /** The `signal` aborted the accept. */
  Aborted = 'Aborted',
  /**
   * The TLS handshake of the connection accepted failed, or its client was not
   * authenticated (no certificate when `requestCert`, unknown CA, expired): the connection
   * was closed, and the listener goes on.
   */
  Tls = 'Tls',
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
  /**
   * Nothing came from the peer within the time allowed: the mesh's `idleTimeout` passed
   * without a byte from it, or the system declared it dead (TCP keepalive probes went
   * unanswered, or written data stayed unacknowledged for the transport's `userTimeout`).
   */
  Timeout = 'Timeout',
  /**
   * `shutdown()` was called with envelopes accepted for the connection and not written:
   * they are `unsent`.
   */
  Shutdown = 'Shutdown',
}

/** Every error code, by class and kind: stable, for matching. */
export const codes = {
  AddError: {
    Spent: 'ERR_WIREMESH_ADD_SPENT',
    Busy: 'ERR_WIREMESH_ADD_BUSY',
    Shutdown: 'ERR_WIREMESH_ADD_SHUTDOWN',
  },
  RemoveError: {
    NotFound: 'ERR_WIREMESH_REMOVE_NOT_FOUND',
  },
  SendError: {
    NotFound: 'ERR_WIREMESH_SEND_NOT_FOUND',
    Full: 'ERR_WIREMESH_SEND_FULL',
    Disconnected: 'ERR_WIREMESH_SEND_DISCONNECTED',
    TooLarge: 'ERR_WIREMESH_SEND_TOO_LARGE',
    IoError: 'ERR_WIREMESH_SEND_IO_ERROR',
    Spent: 'ERR_WIREMESH_SEND_SPENT',
    Timeout: 'ERR_WIREMESH_SEND_TIMEOUT',
    Aborted: 'ERR_WIREMESH_SEND_ABORTED',
  },
  RecvError: {
    Disconnected: 'ERR_WIREMESH_RECV_DISCONNECTED',
    Shutdown: 'ERR_WIREMESH_RECV_SHUTDOWN',
    Protocol: 'ERR_WIREMESH_RECV_PROTOCOL',
    IoError: 'ERR_WIREMESH_RECV_IO_ERROR',
    Spent: 'ERR_WIREMESH_RECV_SPENT',
    Timeout: 'ERR_WIREMESH_RECV_TIMEOUT',
    Aborted: 'ERR_WIREMESH_RECV_ABORTED',
  },
  RecvTimeoutError: {
    Timeout: 'ERR_WIREMESH_RECV_TIMEOUT_TIMEOUT',
    Disconnected: 'ERR_WIREMESH_RECV_TIMEOUT_DISCONNECTED',
    Shutdown: 'ERR_WIREMESH_RECV_TIMEOUT_SHUTDOWN',
  },
  ListenError: {
    InvalidEndpoint: 'ERR_WIREMESH_LISTEN_INVALID_ENDPOINT',
    AddressInUse: 'ERR_WIREMESH_LISTEN_ADDRESS_IN_USE',
    IoError: 'ERR_WIREMESH_LISTEN_IO_ERROR',
    Unsupported: 'ERR_WIREMESH_LISTEN_UNSUPPORTED',
  },
  ConnectError: {
    InvalidEndpoint: 'ERR_WIREMESH_CONNECT_INVALID_ENDPOINT',
    IoError: 'ERR_WIREMESH_CONNECT_IO_ERROR',
    Timeout: 'ERR_WIREMESH_CONNECT_TIMEOUT',
    Aborted: 'ERR_WIREMESH_CONNECT_ABORTED',
    Unsupported: 'ERR_WIREMESH_CONNECT_UNSUPPORTED',
    Tls: 'ERR_WIREMESH_CONNECT_TLS',
  },
  AcceptError: {
    Closed: 'ERR_WIREMESH_ACCEPT_CLOSED',
    IoError: 'ERR_WIREMESH_ACCEPT_IO_ERROR',
    Timeout: 'ERR_WIREMESH_ACCEPT_TIMEOUT',
    Aborted: 'ERR_WIREMESH_ACCEPT_ABORTED',
    Tls: 'ERR_WIREMESH_ACCEPT_TLS',
  },
  DisconnectError: {
    Eof: 'ERR_WIREMESH_DISCONNECT_EOF',
    EofMidFrame: 'ERR_WIREMESH_DISCONNECT_EOF_MID_FRAME',
    Protocol: 'ERR_WIREMESH_DISCONNECT_PROTOCOL',
    IoError: 'ERR_WIREMESH_DISCONNECT_IO_ERROR',
    Timeout: 'ERR_WIREMESH_DISCONNECT_TIMEOUT',
    Shutdown: 'ERR_WIREMESH_DISCONNECT_SHUTDOWN',
  },
} as const

type Codes = typeof codes
/** Every error code. */
export type ErrorCode = { [C in keyof Codes]: Codes[C][keyof Codes[C]] }[keyof Codes]

/** The brand every wiremesh error carries: its class's name, as `codes` spells it. */
const BRAND = Symbol.for('wiremesh.error')

/** The base class of every wiremesh error. */
export class MeshError extends Error {
  /** The name `instanceof` checks, the same in every copy of the package. */
  static readonly brand: string = 'MeshError'
  /** What went wrong, as a value of the string enum named after the error's class. */
  readonly kind: string
  /** A stable string from {@link codes}, for matching. */
  readonly code: ErrorCode

  /** @internal */
  constructor(brand: keyof Codes, kind: string, message: string) {
    super(message)
    this.kind = kind
    this.code = (codes[brand] as Record<string, ErrorCode>)[kind]
    this.name = brand
    Object.defineProperty(this, BRAND, { value: brand })
  }

  /** True for a wiremesh error of this class, made by this copy of the package or another. */
  static [Symbol.hasInstance](this: { brand: string }, value: unknown): boolean {
    if (typeof value !== 'object' || value === null) return false
    const brand = (value as { [BRAND]?: unknown })[BRAND]
    if (typeof brand !== 'string') return Function.prototype[Symbol.hasInstance].call(this, value)
    return this.brand === MeshError.brand || this.brand === brand
  }
}

/** One kind of an error class: its `kind` and `code` as literal types. */
type Variant<Class, C extends keyof Codes, K extends keyof Codes[C] & string> = Class & {
  readonly kind: K
  readonly code: Codes[C][K]
}

/** An error class whose instances are the union of its kinds (so `kind` and `code` narrow). */
type Narrowing<Instance, Args extends unknown[]> = {
  new (...args: Args): Instance
  readonly prototype: Instance
  readonly brand: string
}

const AddErrorClass = class AddError extends MeshError {
  static readonly brand: string = 'AddError'
  declare readonly kind: AddErrorKind
  /** @internal */
  constructor(kind: AddErrorKind, message: string) {
    super('AddError', kind, message)
  }
}
/** `Mesh.add` refused a connection. */
export type AddError = { [K in AddErrorKind]: Variant<InstanceType<typeof AddErrorClass>, 'AddError', K> }[AddErrorKind]
/** `Mesh.add` refused a connection. */
export const AddError = AddErrorClass as Narrowing<AddError, [kind: AddErrorKind, message: string]>

const RemoveErrorClass = class RemoveError extends MeshError {
  static readonly brand: string = 'RemoveError'
  declare readonly kind: RemoveErrorKind
  /** @internal */
  constructor(kind: RemoveErrorKind, message: string) {
    super('RemoveError', kind, message)
  }
}
/** `Mesh.remove` found no connection. */
export type RemoveError = Variant<InstanceType<typeof RemoveErrorClass>, 'RemoveError', RemoveErrorKind.NotFound>
/** `Mesh.remove` found no connection. */
export const RemoveError = RemoveErrorClass as Narrowing<RemoveError, [kind: RemoveErrorKind, message: string]>

const SendErrorClass = class SendError extends MeshError {
  static readonly brand: string = 'SendError'
  declare readonly kind: SendErrorKind
  /** The envelope that was not sent; `null` for a connection's own `send`. */
  readonly envelope: Envelope | null
  /** @internal */
  constructor(kind: SendErrorKind, message: string, envelope: Envelope | null = null) {
    super('SendError', kind, message)
    this.envelope = envelope
  }
}
/** The kinds only a mesh's sends give: they always hand the envelope back. */
type MeshSendKind = SendErrorKind.NotFound | SendErrorKind.Full
/**
 * A send did not queue its envelope. `Full` and `NotFound` (a mesh's sends) always carry
 * it in `envelope`; so do `Disconnected`, `TooLarge` and `IoError` from a mesh's sends,
 * while a connection's own `send` has no envelope (`null`).
 */
export type SendError =
  | {
      [K in MeshSendKind]: Variant<InstanceType<typeof SendErrorClass>, 'SendError', K> & {
        readonly envelope: Envelope
      }
    }[MeshSendKind]
  | {
      [K in Exclude<SendErrorKind, MeshSendKind>]: Variant<InstanceType<typeof SendErrorClass>, 'SendError', K>
    }[Exclude<SendErrorKind, MeshSendKind>]
/** A send did not queue its envelope. */
export const SendError = SendErrorClass as Narrowing<
  SendError,
  [kind: SendErrorKind, message: string, envelope?: Envelope | null]
>

const RecvErrorClass = class RecvError extends MeshError {
  static readonly brand: string = 'RecvError'
  declare readonly kind: RecvErrorKind
  /** @internal */
  constructor(kind: RecvErrorKind, message: string) {
    super('RecvError', kind, message)
  }
}
/** A receive got no envelope. */
export type RecvError = {
  [K in RecvErrorKind]: Variant<InstanceType<typeof RecvErrorClass>, 'RecvError', K>
}[RecvErrorKind]
/** A receive got no envelope. */
export const RecvError = RecvErrorClass as Narrowing<RecvError, [kind: RecvErrorKind, message: string]>

const RecvTimeoutErrorClass = class RecvTimeoutError extends MeshError {
  static readonly brand: string = 'RecvTimeoutError'
  declare readonly kind: RecvTimeoutErrorKind
  /** @internal */
  constructor(kind: RecvTimeoutErrorKind, message: string) {
    super('RecvTimeoutError', kind, message)
  }
}
/** `recvTimeout` got no envelope. */
export type RecvTimeoutError = {
  [K in RecvTimeoutErrorKind]: Variant<InstanceType<typeof RecvTimeoutErrorClass>, 'RecvTimeoutError', K>
}[RecvTimeoutErrorKind]
/** `recvTimeout` got no envelope. */
export const RecvTimeoutError = RecvTimeoutErrorClass as Narrowing<
  RecvTimeoutError,
  [kind: RecvTimeoutErrorKind, message: string]
>

const ListenErrorClass = class ListenError extends MeshError {
  static readonly brand: string = 'ListenError'
  declare readonly kind: ListenErrorKind
  /** @internal */
  constructor(kind: ListenErrorKind, message: string) {
    super('ListenError', kind, message)
  }
}
/** A transport could not listen. */
export type ListenError = {
  [K in ListenErrorKind]: Variant<InstanceType<typeof ListenErrorClass>, 'ListenError', K>
}[ListenErrorKind]
/** A transport could not listen. */
export const ListenError = ListenErrorClass as Narrowing<ListenError, [kind: ListenErrorKind, message: string]>

const ConnectErrorClass = class ConnectError extends MeshError {
  static readonly brand: string = 'ConnectError'
  declare readonly kind: ConnectErrorKind
  /** @internal */
  constructor(kind: ConnectErrorKind, message: string) {
    super('ConnectError', kind, message)
  }
}
/** A transport could not connect. */
export type ConnectError = {
  [K in ConnectErrorKind]: Variant<InstanceType<typeof ConnectErrorClass>, 'ConnectError', K>
}[ConnectErrorKind]
/** A transport could not connect. */
export const ConnectError = ConnectErrorClass as Narrowing<ConnectError, [kind: ConnectErrorKind, message: string]>

const AcceptErrorClass = class AcceptError extends MeshError {
  static readonly brand: string = 'AcceptError'
  declare readonly kind: AcceptErrorKind
  /** @internal */
  constructor(kind: AcceptErrorKind, message: string) {
    super('AcceptError', kind, message)
  }
}
/** A listener could not accept. */
export type AcceptError = {
  [K in AcceptErrorKind]: Variant<InstanceType<typeof AcceptErrorClass>, 'AcceptError', K>
}[AcceptErrorKind]
/** A listener could not accept. */
export const AcceptError = AcceptErrorClass as Narrowing<AcceptError, [kind: AcceptErrorKind, message: string]>

const DisconnectErrorClass = class DisconnectError extends MeshError {
  static readonly brand: string = 'DisconnectError'
  declare readonly kind: DisconnectErrorKind
  /** The connection's id. */
  readonly id: number
  /** Envelopes queued for the connection that were not fully written, oldest first. */
  readonly unsent: Envelope[]
  /** @internal */
  constructor(kind: DisconnectErrorKind, message: string, id: number, unsent: Envelope[]) {
    super('DisconnectError', kind, message)
    this.id = id
    this.unsent = unsent
  }
}
/**
 * The reason given with a `'disconnect'` event: why the reactor removed a connection by
 * itself. `unsent` holds the envelopes queued for it that were not fully written.
 */
export type DisconnectError = {
  [K in DisconnectErrorKind]: Variant<InstanceType<typeof DisconnectErrorClass>, 'DisconnectError', K>
}[DisconnectErrorKind]
/** The reason given with a `'disconnect'` event. */
export const DisconnectError = DisconnectErrorClass as Narrowing<
  DisconnectError,
  [kind: DisconnectErrorKind, message: string, id: number, unsent: Envelope[]]
>
