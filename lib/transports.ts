/**
 * Transports, listeners and connections outside a mesh.
 *
 * None of their operations takes a thread: they run in the environment's lobby (one event
 * loop thread in native code). Each takes `{ signal?, timeout? }`.
 *
 * @module
 */

import { Buffer } from 'node:buffer'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

import * as native from '../binding.js'
import {
  checkCount,
  checkOptionalTimeout,
  checkOptions,
  checkSignal,
  checkString,
  invalidArgType,
  toBuffer,
} from './args'
import {
  AcceptError,
  AcceptErrorKind,
  ConnectError,
  ConnectErrorKind,
  ListenError,
  ListenErrorKind,
  RecvError,
  RecvErrorKind,
  SendError,
  SendErrorKind,
} from './errors'
import { abandon, completion, isFailure, nativeTimeout } from './lobby'

/** The largest maximum frame size: 4 GiB - 1. */
const MAX_FRAME_SIZE_LIMIT = 0xffff_ffff
const DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

/** Options of an operation that may wait. */
export interface OperationOptions {
  /** Gives up: the operation ends with kind `Aborted` (its `cause` is the signal's reason). */
  signal?: AbortSignal
  /** Gives up after this many milliseconds: the operation ends with kind `Timeout`. */
  timeout?: number
}

function operationOptions(options: unknown): { signal?: AbortSignal; timeout?: number } {
  const checked = checkOptions<OperationOptions>(options)
  return {
    signal: checkSignal(checked.signal),
    timeout: checkOptionalTimeout(checked.timeout, 'options.timeout'),
  }
}

/** What a connection's `#native` is, for the mesh (which takes it). */
const natives = new WeakMap<Connection, native.NativeConnection>()

/** @internal The native side of a connection, for `Mesh.add`. */
export function nativeConnection(connection: Connection): native.NativeConnection | undefined {
  return natives.get(connection)
}

/**
 * A framed connection. Before it joins a mesh it can exchange frames itself (`send`,
 * `recv`), for handshakes; once added to a mesh it is spent, and using it is an error.
 * `Mesh.remove` hands back a new `Connection` with the framing state.
 */
export class Connection {
  /** This end's endpoint (`tcp://ip:port`). */
  readonly localEndpoint: string
  /** The peer's endpoint (`tcp://ip:port`). */
  readonly remoteEndpoint: string
  #native: native.NativeConnection
  #last: Promise<unknown> = Promise.resolve()
  /** The operation under way, so that `disconnect` can end it at once. */
  #current: { id: number; reject(error: Error): void; aborted: () => Error } | null = null

  /** @internal Made by transports, listeners and `Mesh.remove`. */
  constructor(handle: native.NativeConnection) {
    if (!(handle instanceof native.NativeConnection)) {
      throw new TypeError('Connections are made by TcpTransport.connect, Listener.accept and Mesh.remove')
    }
    this.#native = handle
    this.localEndpoint = handle.localEndpoint
    this.remoteEndpoint = handle.remoteEndpoint
    natives.set(this, handle)
  }

  /** True once the connection joined a mesh or was disconnected. */
  get spent(): boolean {
    return this.#native.spent
  }

  /** Writes one frame (after any frames a mesh had queued but not written). */
  send(payload: Uint8Array | string, options?: OperationOptions): Promise<void> {
    let buffer: Buffer
    let checked: ReturnType<typeof operationOptions>
    try {
      buffer = toBuffer(payload)
      checked = operationOptions(options)
    } catch (error) {
      return Promise.reject(error)
    }
    return this.#serial(() => {
      if (checked.signal?.aborted) throw sendFailure({ kind: 'Aborted', message: 'the send was aborted' })
      const started = this.#native.send(buffer, nativeTimeout(checked.timeout))
      if (isFailure(started)) throw sendFailure(started)
      return this.#track(
        started,
        (done) => {
          if (done.failure) throw sendFailure(done.failure)
        },
        () => sendFailure({ kind: 'Aborted', message: 'the connection was disconnected during the send' }),
        checked.signal,
      )
    })
  }

  /** Reads one frame, never past its end: later frames stay for whoever reads next. */
  recv(options?: OperationOptions): Promise<Buffer> {
    let checked: ReturnType<typeof operationOptions>
    try {
      checked = operationOptions(options)
    } catch (error) {
      return Promise.reject(error)
    }
    return this.#serial(() => {
      if (checked.signal?.aborted) throw recvFailure({ kind: 'Aborted', message: 'the recv was aborted' })
      const started = this.#native.recv(nativeTimeout(checked.timeout))
      if (isFailure(started)) throw recvFailure(started)
      return this.#track(
        started,
        (done) => {
          if (done.failure) throw recvFailure(done.failure)
          return done.payload as Buffer
        },
        () => recvFailure({ kind: 'Aborted', message: 'the connection was disconnected during the recv' }),
        checked.signal,
      )
    })
  }

  /**
   * Closes the connection; the peer sees the end of the stream. A `send` or `recv` under
   * way ends at once with kind `Aborted`; later ones with `Spent`.
   */
  disconnect(): void {
    this.#native.disconnect()
    const current = this.#current
    if (current !== null) {
      this.#current = null
      abandon(current.id)
      current.reject(current.aborted())
    }
  }

  /** Waits for operation `id`, which `disconnect` can end at once. */
  #track<T>(
    id: number,
    settle: (done: native.Completion) => T,
    aborted: () => Error,
    signal?: AbortSignal,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const current = { id, reject, aborted }
      this.#current = current
      completion(id, settle, signal).then(
        (value) => {
          if (this.#current === current) this.#current = null
          resolve(value)
        },
        (error: Error) => {
          if (this.#current === current) this.#current = null
          reject(error)
        },
      )
    })
  }

  /** Runs operations one after the other: a connection does one thing at a time. */
  #serial<T>(operation: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => operation()
    const result = this.#last.then(run, run)
    this.#last = result.catch(() => undefined)
    return result
  }
}

function sendFailure(failure: native.Failure): SendError {
  const kind = (failure.kind === 'Busy' ? 'IoError' : failure.kind) as SendErrorKind
  return new SendError(kind in SendErrorKind ? kind : SendErrorKind.IoError, failure.message)
}

function recvFailure(failure: native.Failure): RecvError {
  const kind = failure.kind as RecvErrorKind
  return new RecvError(kind in RecvErrorKind ? kind : RecvErrorKind.IoError, failure.message)
}

/** A listening socket; async-iterable over the connections it accepts. */
export class Listener implements AsyncIterable<Connection> {
  /** The endpoint peers connect to (`tcp://ip:port`), with the port actually bound. */
  readonly endpoint: string
  #native: native.NativeListener
  #closed = false

  /** @internal Made by `TcpTransport.listen`. */
  constructor(handle: native.NativeListener) {
    this.#native = handle
    this.endpoint = handle.endpoint
  }

  /** The next connection. Rejects with `AcceptError` (`Closed` once `close` is called). */
  accept(options?: OperationOptions): Promise<Connection> {
    let checked: ReturnType<typeof operationOptions>
    try {
      checked = operationOptions(options)
    } catch (error) {
      return Promise.reject(error)
    }
    if (checked.signal?.aborted) {
      return Promise.reject(new AcceptError(AcceptErrorKind.Aborted, 'the accept was aborted'))
    }
    const id = this.#native.accept(nativeTimeout(checked.timeout))
    return completion(
      id,
      (done) => {
        if (done.failure) throw new AcceptError(done.failure.kind as AcceptErrorKind, done.failure.message)
        return new Connection(done.connection as native.NativeConnection)
      },
      checked.signal,
    )
  }

  /** Stops listening; waiting accepts reject with `AcceptError` kind `Closed`. */
  close(): void {
    this.#closed = true
    this.#native.close()
  }

  /** Accepted connections, until the listener is closed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Connection> {
    while (!this.#closed) {
      try {
        yield await this.accept()
      } catch (error) {
        if (error instanceof AcceptError && error.kind === AcceptErrorKind.Closed) return
        throw error
      }
    }
  }
}

/** Options of {@link TcpTransport}. */
export interface TcpTransportOptions {
  /** The largest payload a connection accepts, in bytes: default 16 MiB, at most 4 GiB - 1. */
  maxFrameSize?: number
  /** Set `TCP_NODELAY` (default `true`: the mesh batches writes itself). */
  noDelay?: boolean
}

/**
 * The TCP transport: frames (a 4-byte big-endian length, then the payload) over TCP,
 * byte-compatible with Splinter's raw transport. `RawTransport` is the same class.
 */
export class TcpTransport {
  #native: native.NativeTransport

  constructor(options: TcpTransportOptions = {}) {
    const checked = checkOptions<TcpTransportOptions>(options)
    const maxFrameSize =
      checked.maxFrameSize === undefined
        ? DEFAULT_MAX_FRAME_SIZE
        : checkCount(checked.maxFrameSize, 'options.maxFrameSize', 0, MAX_FRAME_SIZE_LIMIT)
    const noDelay = checked.noDelay ?? true
    if (typeof noDelay !== 'boolean') throw invalidArgType('options.noDelay', 'of type boolean', noDelay)
    this.#native = new native.NativeTransport(maxFrameSize, noDelay)
  }

  /** True for `host:port` and `tcp://host:port`. */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /** Listens on `bind` (`host:port` or `tcp://host:port`; port 0 picks one). */
  async listen(bind: string): Promise<Listener> {
    const listening = this.#native.listen(checkString(bind, 'bind'))
    if (isFailure(listening)) throw new ListenError(listening.kind as ListenErrorKind, listening.message)
    return new Listener(listening)
  }

  /** Connects to `endpoint` (`host:port` or `tcp://host:port`); a host name is resolved first. */
  async connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    checkString(endpoint, 'endpoint')
    const { signal, timeout } = operationOptions(options)
    if (!this.#native.accepts(endpoint)) {
      throw new ConnectError(ConnectErrorKind.InvalidEndpoint, `not a valid endpoint: ${JSON.stringify(endpoint)}`)
    }
    const aborted = () => new ConnectError(ConnectErrorKind.Aborted, `the connection to ${endpoint} was aborted`)
    if (signal?.aborted) throw aborted()
    const started = Date.now()
    const address = await resolve(endpoint)
    if (signal?.aborted) throw aborted()
    const left = timeout === undefined ? undefined : Math.max(0, timeout - (Date.now() - started))
    const id = this.#native.connect(address, nativeTimeout(left))
    if (isFailure(id)) throw new ConnectError(id.kind as ConnectErrorKind, `${id.message} (${endpoint})`)
    return completion(
      id,
      (done) => {
        if (done.failure) {
          throw new ConnectError(done.failure.kind as ConnectErrorKind, `${done.failure.message} (${endpoint})`)
        }
        return new Connection(done.connection as native.NativeConnection)
      },
      signal,
    )
  }
}

/** `ip:port` for `host:port` or `tcp://host:port`, the host name resolved as `net` would. */
async function resolve(endpoint: string): Promise<string> {
  const rest = endpoint.startsWith('tcp://') ? endpoint.slice('tcp://'.length) : endpoint
  const colon = rest.lastIndexOf(':')
  const host = rest.slice(0, colon)
  const port = rest.slice(colon + 1)
  const bare = host.startsWith('[') ? host.slice(1, -1) : host
  if (isIP(bare) !== 0) return rest
  try {
    const { address, family } = await lookup(bare)
    return family === 6 ? `[${address}]:${port}` : `${address}:${port}`
  } catch (error) {
    throw new ConnectError(ConnectErrorKind.IoError, `could not resolve ${bare}: ${(error as Error).message}`)
  }
}

/** Splinter's name for {@link TcpTransport}: the same class. */
export const RawTransport = TcpTransport
/** Splinter's name for {@link TcpTransport}: the same class. */
export type RawTransport = TcpTransport
