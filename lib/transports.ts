/**
 * Transports, listeners and connections outside a mesh.
 *
 * None of their operations takes a thread: they run in the environment's lobby (one event
 * loop thread in native code). Each takes `{ signal?, timeout? }`.
 *
 * @module
 */

import { Buffer } from 'node:buffer'
import { X509Certificate } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

import * as native from '../binding.js'
import {
  checkCount,
  checkOneOf,
  checkOptionalTimeout,
  checkOptions,
  checkSignal,
  checkString,
  invalidArgType,
  invalidArgValue,
  MAX_TIMEOUT,
  outOfRange,
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
import { publishRefused } from './diagnostics'
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
 * The certificate a TLS peer presented and the handshake verified, as Node's
 * `tlsSocket.getPeerCertificate()` shapes its main fields.
 */
export interface PeerCertificate {
  /** The subject's fields (`{ CN: 'node-1', O: 'Acme' }`); a field given twice is an array. */
  subject: Record<string, string | string[]>
  /** The SHA-256 fingerprint of `raw`, as Node spells it: `AB:CD:…`, uppercase hex. */
  fingerprint256: string
  /** The certificate, DER-encoded. */
  raw: Buffer
}

/** A {@link PeerCertificate} from its DER bytes, or null. */
function peerCertificateOf(raw: Buffer | null | undefined): PeerCertificate | null {
  if (raw === null || raw === undefined) return null
  const x509 = new X509Certificate(raw)
  const subject: Record<string, string | string[]> = {}
  for (const line of x509.subject.split('\n')) {
    const at = line.indexOf('=')
    if (at <= 0) continue
    const [field, value] = [line.slice(0, at), line.slice(at + 1)]
    const had = subject[field]
    subject[field] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value]
  }
  return { subject, fingerprint256: x509.fingerprint256, raw }
}

/** An operation waiting for its connection's earlier ones to end. */
interface Turn {
  /** Starts it (its signal and timer stop watching). */
  run(): void
}

/**
 * A framed connection. Before it joins a mesh it can exchange frames itself (`send`,
 * `recv`), for handshakes; once added to a mesh it is spent, and using it is an error.
 * `Mesh.remove` hands back a new `Connection` with the framing state.
 *
 * It does one operation at a time: a `send` or `recv` called while another runs waits for
 * its turn. Its `signal` and `timeout` count from the call, so they also end it while it
 * waits.
 */
export class Connection {
  /** This end's endpoint (`tcp://ip:port`). */
  readonly localEndpoint: string
  /** The peer's endpoint (`tcp://ip:port`). */
  readonly remoteEndpoint: string
  #native: native.NativeConnection
  /** An operation is under way (in the lobby, or about to be). */
  #running = false
  /** Operations waiting for their turn, oldest first. */
  #waiting: Turn[] = []
  /** The operation under way, so that `disconnect` can end it at once. */
  #current: { id: number; reject(error: Error): void; aborted: () => Error } | null = null
  #peerCertificate: PeerCertificate | null | undefined

  /** @internal Made by transports, listeners and `Mesh.remove`. */
  constructor(handle: native.NativeConnection) {
    if (!(handle instanceof native.NativeConnection)) {
      throw new TypeError("Connections are made by a transport's connect, Listener.accept and Mesh.remove")
    }
    this.#native = handle
    this.localEndpoint = handle.localEndpoint
    this.remoteEndpoint = handle.remoteEndpoint
    natives.set(this, handle)
  }

  /**
   * The certificate the TLS peer presented and the handshake verified; null for other
   * transports, and for a client that sent none (a listener without `requestCert`).
   * Still readable once the connection is spent; in a mesh, `mesh.peerCertificate(id)`.
   */
  get peerCertificate(): PeerCertificate | null {
    if (this.#peerCertificate === undefined) this.#peerCertificate = peerCertificateOf(this.#native.peerCertificate)
    return this.#peerCertificate
  }

  /** True once the connection joined a mesh or was disconnected. */
  get spent(): boolean {
    return this.#native.spent
  }

  /** Writes one frame (after any frames a mesh had queued but not written). */
  send(payload: Uint8Array | string, options?: OperationOptions): Promise<void> {
    let buffer: Buffer
    try {
      buffer = toBuffer(payload)
    } catch (error) {
      return Promise.reject(error)
    }
    return this.#operate(
      'send',
      options,
      sendFailure,
      (timeout) => this.#native.send(buffer, timeout),
      () => {},
    )
  }

  /** Reads one frame, never past its end: later frames stay for whoever reads next. */
  recv(options?: OperationOptions): Promise<Buffer> {
    return this.#operate(
      'recv',
      options,
      recvFailure,
      (timeout) => this.#native.recv(timeout),
      (done) => done.payload as Buffer,
    )
  }

  /**
   * One of the connection's own operations, in its turn: `start` begins it in the lobby
   * (with the time left of its timeout), `value` reads its completion; `failure` makes the
   * operation's typed error.
   */
  #operate<T>(
    what: 'send' | 'recv',
    options: unknown,
    failure: (failure: native.Failure) => Error,
    start: (timeout: number) => number | native.Failure,
    value: (done: native.Completion) => T,
  ): Promise<T> {
    let checked: ReturnType<typeof operationOptions>
    try {
      checked = operationOptions(options)
    } catch (error) {
      return Promise.reject(error)
    }
    const { signal } = checked
    return this.#turn(
      (timeout) => {
        const started = start(nativeTimeout(timeout))
        if (isFailure(started)) throw failure(started)
        return this.#track(
          started,
          (done) => {
            if (done.failure) throw failure(done.failure)
            return value(done)
          },
          () => failure({ kind: 'Aborted', message: `the connection was disconnected during the ${what}` }),
          signal,
        )
      },
      checked,
      () => withCause(failure({ kind: 'Aborted', message: `the ${what} was aborted` }), signal),
      () => failure({ kind: 'Timeout', message: 'timed out waiting for the earlier operations to end' }),
    )
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

  /**
   * Runs `operation` (given the time left of its timeout) once the operations before it
   * have ended. A signal aborted before the call rejects at once; one that aborts, or a
   * timeout that passes, while the operation waits for its turn rejects it then.
   */
  #turn<T>(
    operation: (timeout: number | undefined) => Promise<T>,
    { signal, timeout }: { signal?: AbortSignal; timeout?: number },
    aborted: () => Error,
    timedOut: () => Error,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(aborted())
    return new Promise<T>((resolve, reject) => {
      const deadline = timeout === undefined ? undefined : performance.now() + timeout
      const run = () => {
        this.#running = true
        let started: Promise<T>
        try {
          const left = deadline === undefined ? undefined : Math.max(0, deadline - performance.now())
          started = operation(left)
        } catch (error) {
          started = Promise.reject(error)
        }
        const next = () => {
          this.#running = false
          this.#waiting.shift()?.run()
        }
        started.then(
          (value) => {
            next()
            resolve(value)
          },
          (error: unknown) => {
            next()
            reject(error)
          },
        )
      }
      if (!this.#running && this.#waiting.length === 0) return run()
      let timer: NodeJS.Timeout | undefined
      const stopWatching = () => {
        if (timer !== undefined) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const leave = (error: Error) => {
        const at = this.#waiting.indexOf(turn)
        if (at === -1) return
        this.#waiting.splice(at, 1)
        stopWatching()
        reject(error)
      }
      const onAbort = () => leave(aborted())
      const turn: Turn = {
        run: () => {
          stopWatching()
          run()
        },
      }
      this.#waiting.push(turn)
      signal?.addEventListener('abort', onAbort, { once: true })
      if (timeout !== undefined) timer = setTimeout(() => leave(timedOut()), timeout)
    })
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
}

/** `error`, with the signal's reason as its `cause` (an `Aborted` error of an aborted signal). */
function withCause<E extends Error>(error: E, signal: AbortSignal | undefined): E {
  if (signal?.aborted) Object.defineProperty(error, 'cause', { value: signal.reason, configurable: true })
  return error
}

/**
 * `promise`, unless `signal` aborts first (then it rejects with `aborted()`) or `timeout`
 * milliseconds pass first (then with `timedOut()`).
 */
function bounded<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  aborted: () => Error,
  timeout: number | undefined,
  timedOut: () => Error,
): Promise<T> {
  if (signal === undefined && timeout === undefined) return promise
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(aborted())
    signal?.addEventListener('abort', onAbort, { once: true })
    const timer = timeout === undefined ? undefined : setTimeout(() => reject(timedOut()), timeout)
    promise.then(resolve, reject).finally(() => {
      signal?.removeEventListener('abort', onAbort)
      if (timer !== undefined) clearTimeout(timer)
    })
  })
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
  #refusedTls = 0
  /** Ends the iterator's pause after a failed accept, when the listener closes. */
  #stopPause: (() => void) | undefined

  /** @internal Made by `TcpTransport.listen`. */
  constructor(handle: native.NativeListener) {
    this.#native = handle
    this.endpoint = handle.endpoint
  }

  /**
   * Connections refused so far because their TLS handshake failed or their client was not
   * authenticated (each an `accept` that rejected with kind `Tls`). Always 0 for other
   * transports.
   */
  get refusedTls(): number {
    return this.#refusedTls
  }

  /**
   * The next connection. Rejects with `AcceptError` (`Closed` once `close` is called; `Tls`
   * for a TLS client refused, after which the listener goes on).
   */
  accept(options?: OperationOptions): Promise<Connection> {
    let checked: ReturnType<typeof operationOptions>
    try {
      checked = operationOptions(options)
    } catch (error) {
      return Promise.reject(error)
    }
    if (checked.signal?.aborted) {
      return Promise.reject(
        withCause(new AcceptError(AcceptErrorKind.Aborted, 'the accept was aborted'), checked.signal),
      )
    }
    const listener = this.#native
    const id = listener.accept(nativeTimeout(checked.timeout))
    return completion(
      id,
      (done) => {
        // The accept holds its listener until it ends: a listener collected meanwhile
        // would close its socket under it.
        held(listener)
        if (done.failure) {
          const error = new AcceptError(done.failure.kind as AcceptErrorKind, done.failure.message)
          if (done.failure.kind === AcceptErrorKind.Tls) {
            this.#refusedTls++
            publishRefused({ side: 'accept', endpoint: this.endpoint, error })
          }
          throw error
        }
        return new Connection(done.connection as native.NativeConnection)
      },
      checked.signal,
    )
  }

  /** Stops listening; waiting accepts reject with `AcceptError` kind `Closed`. */
  close(): void {
    this.#closed = true
    this.#native.close()
    this.#stopPause?.()
  }

  /**
   * Accepted connections, until the listener is closed. A failure to accept (kind
   * `IoError`: out of descriptors, a connection reset in the backlog) does not end the
   * loop: it tries again after a pause that starts at 10 ms and doubles up to 1 s, and
   * goes back to no pause after an accept succeeds. A TLS client refused (kind `Tls`,
   * counted in {@link refusedTls}) is passed over at once.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<Connection> {
    let pause = 0
    while (!this.#closed) {
      let connection: Connection
      try {
        connection = await this.accept()
      } catch (error) {
        if (!(error instanceof AcceptError)) throw error
        if (error.kind === AcceptErrorKind.Closed) return
        if (error.kind === AcceptErrorKind.Tls) continue
        if (error.kind !== AcceptErrorKind.IoError) throw error
        pause = Math.min(Math.max(pause * 2, 10), 1000)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, pause)
          const self = this
          function done() {
            clearTimeout(timer)
            self.#stopPause = undefined
            resolve()
          }
          this.#stopPause = done
        })
        continue
      }
      pause = 0
      yield connection
    }
  }
}

/**
 * What every transport offers: a mesh takes the connections of any of them. Implemented by
 * {@link TcpTransport}, {@link TlsTransport}, {@link UnixTransport}, {@link InprocTransport}
 * and {@link MultiTransport}.
 */
export interface Transport {
  /** True if the transport can listen on or connect to `address`. */
  accepts(address: string): boolean
  /** Listens on `bind`. */
  listen(bind: string): Promise<Listener>
  /** Connects to `endpoint`. */
  connect(endpoint: string, options?: OperationOptions): Promise<Connection>
}

/** Options of {@link TcpTransport}. */
export interface TcpTransportOptions {
  /** The largest payload a connection accepts, in bytes: default 16 MiB, at most 4 GiB - 1. */
  maxFrameSize?: number
  /** Set `TCP_NODELAY` (default `true`: the mesh batches writes itself). */
  noDelay?: boolean
  /**
   * TCP keepalive (`SO_KEEPALIVE`), for connections that may stay idle: once nothing has
   * arrived for `idle` ms the system sends a probe every `interval` ms, and after `count`
   * unanswered probes it declares the peer dead; the mesh then announces the connection's
   * `'disconnect'` with `DisconnectError` kind `Timeout`, about `idle + count × interval`
   * after the last packet from the peer. Probes run only while the connection has no data
   * of its own awaiting acknowledgement (for that, see `userTimeout`). Default: no
   * keepalive. A field left out keeps the system's default (Linux: 7200 s, 75 s, 9).
   * Applied to dialled and accepted sockets alike.
   */
  keepAlive?: KeepAliveOptions
  /**
   * The longest, in ms, that data written may stay unacknowledged by the peer before the
   * system declares it dead (`TCP_USER_TIMEOUT`); the connection's `'disconnect'` then has
   * kind `Timeout`. Default: the system's retransmission limit (Linux: about 15 minutes).
   * With `keepAlive` too, Linux also ends a connection whose probes went unanswered for
   * this long, whatever `count` says. A positive finite number up to 2^31 - 1, rounded up
   * to a whole millisecond. Linux and Android only: elsewhere the constructor throws a
   * `TypeError` with code `ERR_INVALID_ARG_VALUE`.
   */
  userTimeout?: number
  /**
   * How frames look on the wire: `'raw'` (default; a 4-byte length, then the payload) or
   * `'splinter-v1'` (Splinter's TCP transport from 0.3.13 on: a version negotiation when a
   * connection opens, then a 7-byte header with a checksum before each payload).
   */
  framing?: Framing
}

/**
 * The times of TCP keepalive ({@link TcpTransportOptions.keepAlive}). The system takes
 * `idle` and `interval` in whole seconds: they are rounded up (500 ms is 1 s, 1500 ms is
 * 2 s). Each is optional; one left out keeps the system's default.
 */
export interface KeepAliveOptions {
  /**
   * How long, in ms, nothing may arrive before the first probe (`TCP_KEEPIDLE`): a positive
   * finite number up to 32 767 000 (32 767 s).
   */
  idle?: number
  /** The time, in ms, between unanswered probes (`TCP_KEEPINTVL`): as `idle`. */
  interval?: number
  /** How many unanswered probes make the peer dead (`TCP_KEEPCNT`): an integer from 1 to 127. */
  count?: number
}

/** The most `TCP_KEEPIDLE` and `TCP_KEEPINTVL` take (Linux: 32 767 s), in ms. */
const MAX_KEEPALIVE_TIME = 32_767_000
/** The most `TCP_KEEPCNT` takes (Linux). */
const MAX_KEEPALIVE_COUNT = 127

/** A positive finite number of ms up to `max`: another type is a `TypeError`, another number a `RangeError`. */
function checkPositiveMs(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!(value > 0) || !Number.isFinite(value) || value > max) {
    throw outOfRange(name, `a finite number > 0 and <= ${max}`, value)
  }
  return value
}

/** `options.keepAlive` and `options.userTimeout`, checked, as the native transport takes them. */
function tcpOptionsOf(options: TcpTransportOptions): {
  keepAlive: native.NativeKeepAlive | undefined
  userTimeout: number | undefined
} {
  const userTimeout =
    options.userTimeout === undefined
      ? undefined
      : checkPositiveMs(options.userTimeout, 'options.userTimeout', MAX_TIMEOUT)
  if (options.keepAlive === undefined) return { keepAlive: undefined, userTimeout }
  const keepAlive = checkOptions<KeepAliveOptions>(options.keepAlive, 'options.keepAlive')
  const time = (name: 'idle' | 'interval') =>
    keepAlive[name] === undefined
      ? undefined
      : checkPositiveMs(keepAlive[name], `options.keepAlive.${name}`, MAX_KEEPALIVE_TIME)
  return {
    keepAlive: {
      idle: time('idle'),
      interval: time('interval'),
      count:
        keepAlive.count === undefined
          ? undefined
          : checkCount(keepAlive.count, 'options.keepAlive.count', 1, MAX_KEEPALIVE_COUNT),
    },
    userTimeout,
  }
}

/**
 * An option the native side refused (its message `options.name: why`), as Node's
 * `ERR_INVALID_ARG_VALUE`; `shown` gives what to show as the value received.
 */
function refusedOption(error: unknown, shown: (name: string) => unknown): TypeError {
  const message = (error as Error).message
  const match = /^(options\.\w+): (.*)$/s.exec(message)
  const name = match ? match[1] : 'options'
  return invalidArgValue(name, `is invalid: ${match ? match[2] : message}`, shown(name))
}

/** The framings a {@link TcpTransport} speaks. */
export type Framing = 'raw' | 'splinter-v1'
const FRAMINGS: readonly Framing[] = ['raw', 'splinter-v1']

/** `options.maxFrameSize`, checked, or the default. */
function maxFrameSizeOf(options: { maxFrameSize?: number }): number {
  return options.maxFrameSize === undefined
    ? DEFAULT_MAX_FRAME_SIZE
    : checkCount(options.maxFrameSize, 'options.maxFrameSize', 0, MAX_FRAME_SIZE_LIMIT)
}

/** Listens on `bind` through a native transport. */
async function listenWith(transport: native.NativeTransport, bind: string): Promise<Listener> {
  const listening = transport.listen(checkString(bind, 'bind'))
  if (isFailure(listening)) throw new ListenError(listening.kind as ListenErrorKind, listening.message)
  return new Listener(listening)
}

/**
 * Connects to `endpoint` through a native transport; `address` turns the endpoint into what
 * the native side connects to (TCP resolves the host name), bounded by the same signal and
 * timeout.
 */
async function connectWith(
  transport: native.NativeTransport,
  endpoint: string,
  options: OperationOptions | undefined,
  address: (endpoint: string) => Promise<string>,
  serverName?: string,
): Promise<Connection> {
  checkString(endpoint, 'endpoint')
  const { signal, timeout } = operationOptions(options)
  if (!transport.accepts(endpoint)) {
    throw new ConnectError(ConnectErrorKind.InvalidEndpoint, `not a valid endpoint: ${JSON.stringify(endpoint)}`)
  }
  const aborted = () =>
    withCause(new ConnectError(ConnectErrorKind.Aborted, `the connection to ${endpoint} was aborted`), signal)
  if (signal?.aborted) throw aborted()
  const started = performance.now()
  const timedOut = () => new ConnectError(ConnectErrorKind.Timeout, `timed out resolving the host of ${endpoint}`)
  const resolved = await bounded(address(endpoint), signal, aborted, timeout, timedOut)
  if (signal?.aborted) throw aborted()
  const left = timeout === undefined ? undefined : Math.max(0, timeout - (performance.now() - started))
  const id = transport.connect(resolved, nativeTimeout(left), serverName)
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

/**
 * The TCP transport: frames (a 4-byte big-endian length, then the payload) over TCP,
 * byte-compatible with Splinter's raw transport; with `framing: 'splinter-v1'`, with
 * Splinter's TCP transport (0.3.13 on). `RawTransport` is the same class.
 */
export class TcpTransport implements Transport {
  #native: native.NativeTransport

  constructor(options: TcpTransportOptions = {}) {
    const checked = checkOptions<TcpTransportOptions>(options)
    const maxFrameSize = maxFrameSizeOf(checked)
    const noDelay = checked.noDelay ?? true
    if (typeof noDelay !== 'boolean') throw invalidArgType('options.noDelay', 'of type boolean', noDelay)
    const framing = checked.framing === undefined ? 'raw' : checkOneOf(checked.framing, 'options.framing', FRAMINGS)
    const { keepAlive, userTimeout } = tcpOptionsOf(checked)
    try {
      this.#native = new native.NativeTransport(maxFrameSize, noDelay, framing, keepAlive, userTimeout)
    } catch (error) {
      // `options.userTimeout: not supported on this platform …`
      throw refusedOption(error, () => userTimeout)
    }
  }

  /** True for `host:port` and `tcp://host:port`. */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /** Listens on `bind` (`host:port` or `tcp://host:port`; port 0 picks one). */
  listen(bind: string): Promise<Listener> {
    return listenWith(this.#native, bind)
  }

  /** Connects to `endpoint` (`host:port` or `tcp://host:port`); a host name is resolved first. */
  connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    return connectWith(this.#native, endpoint, options, resolve)
  }
}

/** PEM text as Node's `tls` takes it: a string, bytes, or a list of them. */
export type Pem = string | Uint8Array | readonly (string | Uint8Array)[]

/** Options of {@link TlsTransport}: those of TLS, and those of {@link TcpTransport}. */
export interface TlsTransportOptions extends TcpTransportOptions {
  /** This side's private key (PEM): needed to listen, and to dial with a client certificate. */
  key?: Pem
  /** This side's certificate chain (PEM), end-entity first. */
  cert?: Pem
  /**
   * The CA certificates (PEM) that sign the peers this side trusts. Without it a dialling
   * side trusts the Mozilla roots, as Node's `tls` does by default.
   */
  ca?: Pem
  /**
   * Listening side: require a client certificate signed by `ca` (mutual authentication).
   * Default `false`: clients are not asked for one.
   */
  requestCert?: boolean
  /** Dialling side: the name the server's certificate must carry; default the host of the endpoint. */
  servername?: string
}

/** PEM option `name` as one Buffer, or undefined. */
function pemOf(value: unknown, name: string): Buffer | undefined {
  if (value === undefined) return undefined
  const parts = Array.isArray(value) ? value : [value]
  const buffers = parts.map((part: unknown, i) => {
    if (typeof part === 'string') return Buffer.from(part)
    if (part instanceof Uint8Array) return toBuffer(part)
    const where = Array.isArray(value) ? `${name}[${i}]` : name
    throw invalidArgType(where, 'of type string, Buffer, Uint8Array or an array of them', part)
  })
  // Blocks of several parts, each on its own lines.
  return Buffer.concat(buffers.flatMap((buffer) => [buffer, Buffer.from('\n')]))
}

/**
 * TLS over TCP (`tcps://host:port`), with rustls (TLS 1.3 and 1.2): the frames of
 * {@link TcpTransport} inside TLS. The handshake is part of opening a connection, in the
 * lobby: `connect` resolves once the server is authenticated (and, with `requestCert`, the
 * listener's `accept` once the client is). A peer that fails authentication is refused
 * with kind `Tls` on the side that refuses it; a listener goes on accepting others
 * ({@link Listener.refusedTls} counts them). Each {@link Connection} has its
 * `peerCertificate`.
 *
 * Options it cannot use (unparsable PEM, a key that does not fit its certificate,
 * `requestCert` without `ca`) throw at construction: `TypeError` with code
 * `ERR_INVALID_ARG_VALUE` (a value of the wrong type: `ERR_INVALID_ARG_TYPE`).
 */
export class TlsTransport implements Transport {
  #native: native.NativeTransport
  #servername: string | undefined

  constructor(options: TlsTransportOptions = {}) {
    const checked = checkOptions<TlsTransportOptions>(options)
    const maxFrameSize = maxFrameSizeOf(checked)
    const noDelay = checked.noDelay ?? true
    if (typeof noDelay !== 'boolean') throw invalidArgType('options.noDelay', 'of type boolean', noDelay)
    const framing = checked.framing === undefined ? 'raw' : checkOneOf(checked.framing, 'options.framing', FRAMINGS)
    const requestCert = checked.requestCert ?? false
    if (typeof requestCert !== 'boolean') throw invalidArgType('options.requestCert', 'of type boolean', requestCert)
    const servername = checked.servername
    if (servername !== undefined && typeof servername !== 'string') {
      throw invalidArgType('options.servername', 'of type string', servername)
    }
    const { keepAlive, userTimeout } = tcpOptionsOf(checked)
    const nativeOptions: native.NativeTlsOptions = {
      key: pemOf(checked.key, 'options.key'),
      cert: pemOf(checked.cert, 'options.cert'),
      ca: pemOf(checked.ca, 'options.ca'),
      requestCert,
      servername,
      maxFrameSize,
      noDelay,
      framing,
      keepAlive,
      userTimeout,
    }
    try {
      this.#native = native.NativeTransport.tls(nativeOptions)
    } catch (error) {
      // `options.key: does not fit the cert: …`, `options.userTimeout: not supported …`
      throw refusedOption(error, (name) => (name === 'options.userTimeout' ? userTimeout : '[PEM]'))
    }
    this.#servername = servername
  }

  /** True for `tcps://host:port`. */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /**
   * Listens on `bind` (`tcps://host:port`; port 0 picks one). A transport without `key`
   * and `cert` cannot: `ListenError` kind `Unsupported`.
   */
  listen(bind: string): Promise<Listener> {
    return listenWith(this.#native, bind)
  }

  /**
   * Connects to `endpoint` (`tcps://host:port`) and completes the handshake; the server's
   * certificate must carry `servername` (default the endpoint's host). A host name is
   * resolved first.
   */
  connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    let serverName: string | undefined
    if (typeof endpoint === 'string' && endpoint.startsWith(TLS_SCHEME)) {
      const rest = endpoint.slice(TLS_SCHEME.length)
      const host = rest.slice(0, rest.lastIndexOf(':'))
      serverName = this.#servername ?? (host.startsWith('[') ? host.slice(1, -1) : host)
    }
    return connectWith(
      this.#native,
      endpoint,
      options,
      async (address) => TLS_SCHEME + (await resolve(address.slice(TLS_SCHEME.length))),
      serverName,
    )
  }
}

const TLS_SCHEME = 'tcps://'

/** Options of {@link UnixTransport}. */
export interface UnixTransportOptions {
  /** The largest payload a connection accepts, in bytes: default 16 MiB, at most 4 GiB - 1. */
  maxFrameSize?: number
}

/**
 * Unix domain sockets (`unix:///absolute/path`): the same frames as TCP, for peers on one
 * host. `listen` replaces a socket file nobody serves (left by a process that died) and
 * refuses a served one with `AddressInUse`; a listener removes its file when it is closed.
 * On Windows every call rejects with kind `Unsupported`.
 */
export class UnixTransport implements Transport {
  #native: native.NativeTransport

  constructor(options: UnixTransportOptions = {}) {
    const checked = checkOptions<UnixTransportOptions>(options)
    this.#native = native.NativeTransport.unix(maxFrameSizeOf(checked))
  }

  /** True for `unix:///absolute/path`. */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /** Listens on `bind` (`unix:///absolute/path`). */
  listen(bind: string): Promise<Listener> {
    return listenWith(this.#native, bind)
  }

  /** Connects to `endpoint` (`unix:///absolute/path`). */
  connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    return connectWith(this.#native, endpoint, options, async (path) => path)
  }
}

/** Options of {@link InprocTransport}. */
export interface InprocTransportOptions {
  /** The largest payload a connection accepts, in bytes: default 16 MiB, at most 4 GiB - 1. */
  maxFrameSize?: number
}

/**
 * In-process connections (`inproc://name`) between meshes of one process, across its worker
 * threads: one registry per process, so a mesh in one worker listens on `inproc://jobs` and
 * meshes in others connect to it. Nothing outside the process can reach them. The same
 * frames, backpressure and disconnect notices as the other transports (a worker that ends
 * or is terminated closes its connections). A name has one listener at a time
 * (`AddressInUse`); a name nobody serves is `IoError`. On Windows every call rejects with
 * kind `Unsupported`.
 */
export class InprocTransport implements Transport {
  #native: native.NativeTransport

  constructor(options: InprocTransportOptions = {}) {
    const checked = checkOptions<InprocTransportOptions>(options)
    this.#native = native.NativeTransport.inproc(maxFrameSizeOf(checked))
  }

  /** True for `inproc://name` (a name of 1 to 255 bytes). */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /** Serves `bind` (`inproc://name`) in this process. */
  listen(bind: string): Promise<Listener> {
    return listenWith(this.#native, bind)
  }

  /** Connects to the listener of `endpoint` (`inproc://name`) in this process. */
  connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    return connectWith(this.#native, endpoint, options, async (name) => name)
  }
}

/**
 * One transport for every scheme (Splinter's name): `listen` and `connect` go to the first
 * of its transports that accepts the address. `new MultiTransport()` holds TCP, Unix
 * sockets and in-process connections with their default options; give your own list to choose options (a
 * {@link TlsTransport} needs its keys, so it joins only a list you give). An address no
 * transport accepts is `InvalidEndpoint`.
 */
export class MultiTransport implements Transport {
  readonly #transports: readonly Transport[]

  constructor(transports?: readonly Transport[]) {
    if (transports === undefined) {
      this.#transports = [new TcpTransport(), new UnixTransport(), new InprocTransport()]
      return
    }
    if (!Array.isArray(transports)) throw invalidArgType('transports', 'an array of transports', transports)
    transports.forEach((transport, i) => {
      const looksLike =
        typeof transport === 'object' &&
        transport !== null &&
        typeof transport.accepts === 'function' &&
        typeof transport.listen === 'function' &&
        typeof transport.connect === 'function'
      if (!looksLike) throw invalidArgType(`transports[${i}]`, 'a transport (accepts, listen, connect)', transport)
    })
    // A copy: changing the caller's array later does not change this transport.
    this.#transports = Object.freeze([...transports])
  }

  /** The transports it dispatches to, in the order it tries them. */
  get transports(): readonly Transport[] {
    return this.#transports
  }

  /** True if one of its transports accepts `address`. */
  accepts(address: string): boolean {
    checkString(address, 'address')
    return this.#transports.some((transport) => transport.accepts(address))
  }

  /** Listens through the first transport that accepts `bind`. */
  async listen(bind: string): Promise<Listener> {
    checkString(bind, 'bind')
    const transport = this.#transports.find((candidate) => candidate.accepts(bind))
    if (!transport) {
      throw new ListenError(ListenErrorKind.InvalidEndpoint, `no transport accepts ${JSON.stringify(bind)}`)
    }
    return transport.listen(bind)
  }

  /** Connects through the first transport that accepts `endpoint`. */
  async connect(endpoint: string, options?: OperationOptions): Promise<Connection> {
    checkString(endpoint, 'endpoint')
    const transport = this.#transports.find((candidate) => candidate.accepts(endpoint))
    if (!transport) {
      throw new ConnectError(ConnectErrorKind.InvalidEndpoint, `no transport accepts ${JSON.stringify(endpoint)}`)
    }
    return transport.connect(endpoint, options)
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

/** Keeps `value` reachable from the closure that calls it. */
function held(value: unknown): void {
  void value
}

/** Splinter's name for {@link TcpTransport}: the same class. */
export const RawTransport = TcpTransport
/** Splinter's name for {@link TcpTransport}: the same class. */
export type RawTransport = TcpTransport
