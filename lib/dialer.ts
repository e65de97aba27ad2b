/**
 * A dialled peer: connects an id a mesh reserved, and, with `reconnect`, connects it again
 * whenever its connection ends, with exponential backoff and jitter, keeping the id.
 *
 * The mesh owns the id's queue (sends wait there, bounded, while there is no connection;
 * what a lost connection had not written goes first on the next); the dialler only makes
 * connections and hands them over (`attach`). It hears of a lost connection from the
 * mesh's notice, in order after the envelopes that connection delivered.
 *
 * @module
 */

import { checkCount, checkOptions, checkSignal, checkTimeout, invalidArgType, outOfRange } from './args'
import { publishRefused } from './diagnostics'
import { ConnectError, ConnectErrorKind } from './errors'
import type { Connection, Transport } from './transports'

/** Backoff of {@link DialOptions.reconnect}. */
export interface ReconnectOptions {
  /** The wait before the first attempt after a connection ends or an attempt fails, in ms (default 100). */
  initialDelay?: number
  /** The longest wait between attempts, in ms (default 30 000). */
  maxDelay?: number
  /** Each wait is this many times the one before, up to `maxDelay` (default 2). */
  factor?: number
  /** Each wait is moved by up to this fraction of itself, either way, at random (default 0.2; 0 to 1). */
  jitter?: number
  /** Attempts in a row that may fail before the mesh gives the id up (default: no limit). */
  maxAttempts?: number
}

/** Options of {@link Mesh.dial}. */
export interface DialOptions {
  /** The transport that connects (default: a `MultiTransport` of TCP, Unix and in-process; pass a `TlsTransport` for `tcps://`). */
  transport?: Transport
  /** Connect again when the connection ends or an attempt fails (`true`: the default backoff). Without it, one attempt. */
  reconnect?: boolean | ReconnectOptions
  /**
   * Runs on each new connection before the id carries traffic (an authentication, a
   * hello): use `connection.send`/`recv` with a `timeout`. A rejection closes the
   * connection and counts as a failed attempt.
   */
  handshake?: (connection: Connection) => Promise<void>
  /** The longest one connect attempt takes, in ms (default 10 000). */
  timeout?: number
  /** Aborting stops dialling and ends the id gracefully (as `mesh.end(id)`). */
  signal?: AbortSignal
  /** The largest payload sends to the id may carry (default 16 MiB, as the transports). */
  maxFrameSize?: number
}

/** What a dialler needs of its mesh. */
export interface DialHost {
  /** Gives the id its connection; false if the mesh has shut down (the connection is closed). */
  attach(id: number, connection: Connection, redial: boolean): boolean
  /** Gives the id up: its notice hands back what waits for it. */
  abandon(id: number, message: string): void
  /** Ends the id gracefully (the dial's signal aborted). */
  end(id: number): void
  connected(id: number, connection: Connection, reconnects: number): void
  reconnecting(id: number, attempt: number, delay: number, error: Error): void
}

interface Backoff {
  initialDelay: number
  maxDelay: number
  factor: number
  jitter: number
  maxAttempts: number
}

const DEFAULT_CONNECT_TIMEOUT = 10_000

/** `options.reconnect`, checked: the backoff, or null for none. */
function backoffOf(reconnect: unknown): Backoff | null {
  if (reconnect === undefined || reconnect === false) return null
  const options = reconnect === true ? {} : checkOptions<ReconnectOptions>(reconnect, 'options.reconnect')
  const initialDelay = checkTimeout(options.initialDelay ?? 100, 'options.reconnect.initialDelay')
  const maxDelay = checkTimeout(options.maxDelay ?? 30_000, 'options.reconnect.maxDelay')
  if (maxDelay < initialDelay) {
    throw outOfRange('options.reconnect.maxDelay', `>= initialDelay (${initialDelay})`, maxDelay)
  }
  const factor = options.factor ?? 2
  if (typeof factor !== 'number') throw invalidArgType('options.reconnect.factor', 'of type number', factor)
  if (!(factor >= 1) || !Number.isFinite(factor))
    throw outOfRange('options.reconnect.factor', 'a finite number >= 1', factor)
  const jitter = options.jitter ?? 0.2
  if (typeof jitter !== 'number') throw invalidArgType('options.reconnect.jitter', 'of type number', jitter)
  if (!(jitter >= 0 && jitter <= 1)) throw outOfRange('options.reconnect.jitter', 'a number from 0 to 1', jitter)
  const maxAttempts =
    options.maxAttempts === undefined || options.maxAttempts === Infinity
      ? Infinity
      : checkCount(options.maxAttempts, 'options.reconnect.maxAttempts', 1)
  return { initialDelay, maxDelay, factor, jitter, maxAttempts }
}

/** The dial options, checked (throws `TypeError`/`RangeError` at the call). */
export function checkDialOptions(options: unknown, defaultTransport: () => Transport) {
  const checked = checkOptions<DialOptions>(options)
  const transport = checked.transport ?? defaultTransport()
  if (typeof transport !== 'object' || transport === null || typeof transport.connect !== 'function') {
    throw invalidArgType('options.transport', 'a Transport', transport)
  }
  const handshake = checked.handshake
  if (handshake !== undefined && typeof handshake !== 'function') {
    throw invalidArgType('options.handshake', 'a function', handshake)
  }
  return {
    transport,
    backoff: backoffOf(checked.reconnect),
    handshake,
    timeout: checkTimeout(checked.timeout ?? DEFAULT_CONNECT_TIMEOUT, 'options.timeout'),
    signal: checkSignal(checked.signal),
    maxFrameSize:
      checked.maxFrameSize === undefined
        ? 16 * 1024 * 1024
        : checkCount(checked.maxFrameSize, 'options.maxFrameSize', 0, 0xffff_ffff),
  }
}

/** One dialled id's connecting. */
export class Dialer {
  readonly id: number
  readonly endpoint: string
  readonly #host: DialHost
  readonly #options: ReturnType<typeof checkDialOptions>
  /** Attempts that failed in a row. */
  #failures = 0
  /** Connections it has had. */
  #connections = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #attempt: AbortController | undefined
  #stopped = false
  #onAbort: (() => void) | undefined
  /** Why the last attempt or connection ended. */
  lastError: Error | undefined
  /** It gave the id up (attempts exhausted, or no reconnect). */
  gaveUp = false

  constructor(host: DialHost, id: number, endpoint: string, options: ReturnType<typeof checkDialOptions>) {
    this.#host = host
    this.id = id
    this.endpoint = endpoint
    this.#options = options
  }

  /** True while it will connect again when the connection ends. */
  get redials(): boolean {
    return !this.#stopped && this.#options.backoff !== null
  }

  start(): void {
    const signal = this.#options.signal
    if (signal !== undefined) {
      this.#onAbort = () => {
        this.stop()
        this.#host.end(this.id)
      }
      if (signal.aborted) return this.#onAbort()
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
    void this.#connect()
  }

  /** No more attempts; an attempt under way is aborted. */
  stop(): void {
    if (this.#stopped) return
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#attempt?.abort()
    if (this.#onAbort !== undefined) this.#options.signal?.removeEventListener('abort', this.#onAbort)
  }

  /** The mesh's notice: the connection ended and the id waits for the next. */
  dropped(error: Error): void {
    this.lastError = error
    if (this.#stopped) return this.#giveUp(error, false)
    this.#schedule(error)
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return
    const attempt = (this.#attempt = new AbortController())
    let connection: Connection
    try {
      connection = await this.#options.transport.connect(this.endpoint, {
        signal: attempt.signal,
        timeout: this.#options.timeout,
      })
    } catch (error) {
      return this.#failed(error)
    }
    try {
      if (this.#options.handshake !== undefined && !this.#stopped) await this.#options.handshake(connection)
    } catch (error) {
      connection.disconnect()
      return this.#failed(error)
    }
    if (this.#stopped) {
      connection.disconnect()
      return
    }
    const redial = this.#options.backoff !== null
    if (!this.#host.attach(this.id, connection, redial)) {
      this.stop()
      return
    }
    this.#failures = 0
    this.#host.connected(this.id, connection, this.#connections++)
  }

  #failed(reason: unknown): void {
    const error = reason instanceof Error ? reason : new Error(String(reason))
    this.lastError = error
    if (error instanceof ConnectError && error.kind === ConnectErrorKind.Tls) {
      publishRefused({ side: 'connect', endpoint: this.endpoint, error })
    }
    if (this.#stopped) return
    this.#failures++
    const backoff = this.#options.backoff
    if (backoff === null || this.#failures >= backoff.maxAttempts) return this.#giveUp(error, true)
    this.#schedule(error)
  }

  #schedule(error: Error): void {
    const backoff = this.#options.backoff as Backoff
    const attempt = this.#failures + 1
    const base = Math.min(backoff.maxDelay, backoff.initialDelay * backoff.factor ** (attempt - 1))
    const delay = Math.max(0, Math.round(base * (1 + backoff.jitter * (2 * Math.random() - 1))))
    this.#host.reconnecting(this.id, attempt, delay, error)
    this.#timer = setTimeout(() => void this.#connect(), delay)
    // The mesh keeps the process alive (while it is ref'd), not its dialler's timer.
    this.#timer.unref?.()
  }

  #giveUp(error: Error, counted: boolean): void {
    this.gaveUp = true
    this.stop()
    const attempts = counted ? ` after ${this.#failures} attempt${this.#failures === 1 ? '' : 's'}` : ''
    this.#host.abandon(this.id, `gave up connecting to ${this.endpoint}${attempts}: ${error.message}`)
  }
}
