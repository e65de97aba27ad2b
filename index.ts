/**
 * wiremesh: many framed network connections in one native background reactor. Send to any
 * connection by id; `await` what arrives from all of them.
 *
 * This file is the public API, written by hand over the generated napi binding
 * (`binding.js`). The binding never waits and never throws for an expected outcome; this
 * file adds the promises, the typed errors, argument checks, and the one wake handler of
 * this JavaScript environment that settles every waiting receive.
 *
 * @packageDocumentation
 */

import { Buffer } from 'node:buffer'
import { EventEmitter } from 'node:events'

import * as native from './binding.js'
import {
  AcceptError,
  AcceptErrorKind,
  AddError,
  AddErrorKind,
  ConnectError,
  ConnectErrorKind,
  DisconnectError,
  DisconnectErrorKind,
  invalidArgType,
  ListenError,
  ListenErrorKind,
  outOfRange,
  RecvError,
  RecvErrorKind,
  RecvTimeoutError,
  RecvTimeoutErrorKind,
  RemoveError,
  RemoveErrorKind,
  SendError,
  SendErrorKind,
} from './errors'

export * from './errors'

/** The largest maximum frame size: 4 GiB - 1. */
const MAX_FRAME_SIZE_LIMIT = 0xffff_ffff
const DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
/** Envelopes taken from the native queue at a time when a receive finds them waiting. */
const PREFETCH = 256
/**
 * Sends are encoded into a per-mesh outbox and cross into native code together (one call,
 * one allocation per batch), at the end of the current task or when the outbox is full.
 * Payloads of at least `DIRECT_MIN` bytes skip it: they are queued at once, with one copy.
 */
const OUTBOX_BYTES = 256 * 1024
const OUTBOX_RUNS = 4096
const DIRECT_MIN = 16 * 1024

// The binding's status codes (see native/binding/mesh.rs).
const SEND_OK = 0
const SEND_NOT_FOUND = 1
const SEND_FULL = 2
const SEND_DISCONNECTED = 3
const SEND_TOO_LARGE = 4
const ADD_SPENT = -1
const ADD_SHUTDOWN = -2

// ---------------------------------------------------------------------------------------
// Argument checks

function checkId(id: unknown, name = 'id'): number {
  if (typeof id !== 'number') throw invalidArgType(name, 'of type number', id)
  if (!Number.isSafeInteger(id) || id < 0) throw outOfRange(name, 'a non-negative safe integer', id)
  return id
}

function checkCount(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(name, `an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}`, value)
  }
  return value
}

function toBuffer(payload: unknown, name = 'payload'): Buffer {
  if (Buffer.isBuffer(payload)) return payload
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  if (typeof payload === 'string') return Buffer.from(payload)
  throw invalidArgType(name, 'a Buffer, Uint8Array or string', payload)
}

function checkString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value)
  return value
}

function isFailure(value: unknown): value is native.Failure {
  return typeof value === 'object' && value !== null && 'kind' in value && 'message' in value
}

// ---------------------------------------------------------------------------------------
// Envelope

const EMPTY = Buffer.alloc(0)

/** A payload with the id of the connection it came from or goes to. */
export class Envelope {
  /** The connection's id. */
  readonly id: number
  /**
   * The payload. A received one under 8 KiB is a view on memory shared with the other small
   * payloads of the same read, freed when the last of them is collected: copy it
   * (`Buffer.from(payload)`) to keep it long on its own.
   */
  payload: Buffer

  /** An envelope for connection `id`; a string payload is encoded as UTF-8. */
  constructor(id: number, payload: Uint8Array | string) {
    this.id = checkId(id)
    this.payload = toBuffer(payload)
  }

  /** Takes the payload out, leaving an empty one. */
  takePayload(): Buffer {
    const payload = this.payload
    this.payload = EMPTY
    return payload
  }
}

/**
 * An envelope made here from values that are already checked: the same class to every
 * user (`instanceof Envelope`), without the constructor's argument checks.
 */
const received = function (this: { id: number; payload: Buffer }, id: number, payload: Buffer) {
  this.id = id
  this.payload = payload
} as unknown as new (id: number, payload: Buffer) => Envelope
received.prototype = Envelope.prototype

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

/** What `takeOrArm` returns when no envelope waits: a wake will come, or nothing will. */
const ARMED = 0
const STOPPED = 1

/** The most envelopes one native call hands over (its `meta` has room for as many). */
const BATCH_MAX = 4096

/** Makes the envelopes `meshRecvBatch` (or a disconnect notice) laid out in `meta` and `buffers`. */
function unpackReceived(buffers: Uint8Array[], meta: Float64Array, out: Envelope[]): void {
  let index = -1
  let buffer: ArrayBuffer = EMPTY.buffer as ArrayBuffer
  let base = 0
  for (let i = 1, end = 1 + 4 * meta[0]; i < end; i += 4) {
    if (meta[i + 1] !== index) {
      index = meta[i + 1]
      buffer = buffers[index].buffer as ArrayBuffer
      base = buffers[index].byteOffset
    }
    const start = meta[i + 2]
    out.push(new received(meta[i], new PayloadView(buffer, base + start, meta[i + 3] - start) as Buffer))
  }
}

// ---------------------------------------------------------------------------------------
// Keeping the process alive, and waking

let keepAliveCount = 0
/** Whether the waker is ref'd (it lags `keepAliveCount` by a few microtasks when that reaches 0). */
let keptAlive = false
/** Microtask hops left before an idle waker is unref'd; 0 when no check is queued. */
let unrefHops = 0

function retain(): void {
  keepAliveCount++
  if (!keptAlive) {
    keptAlive = true
    native.keepAlive(true)
  }
}

/**
 * Unrefs the waker once nothing waits: a few microtasks later, so that code which takes an
 * envelope and waits again at once (`await mesh.recv()` in a loop) does not unref and ref it
 * for every envelope.
 */
function release(): void {
  if (--keepAliveCount === 0 && unrefHops === 0) {
    unrefHops = 4
    queueMicrotask(unrefIfIdle)
  }
}

function unrefIfIdle(): void {
  if (keepAliveCount !== 0 || !keptAlive) {
    unrefHops = 0
  } else if (--unrefHops > 0) {
    queueMicrotask(unrefIfIdle)
  } else {
    keptAlive = false
    native.keepAlive(false)
  }
}

/** Every mesh of this environment, for the wake handler. */
const states = new Set<WeakRef<MeshState>>()

/**
 * Meshes with a pending receive or `sendWait`, held strongly: a waiting promise may be
 * the only thing left that refers to its mesh, and it must still settle.
 */
const waiting = new Set<MeshState>()

/** Runs on this environment's JavaScript thread when a reactor woke it. */
function onWake(): void {
  for (const ref of states) {
    const state = ref.deref()
    if (state === undefined) {
      states.delete(ref)
      continue
    }
    state.service()
  }
}

native.registerWaker(onWake)

// ---------------------------------------------------------------------------------------
// Connections, listeners, transports

const connections = new WeakMap<Connection, native.NativeConnection>()

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

  /** @internal Made by transports, listeners and `Mesh.remove`. */
  constructor(handle: native.NativeConnection) {
    if (!(handle instanceof native.NativeConnection)) {
      throw new TypeError('Connections are made by TcpTransport.connect, Listener.accept and Mesh.remove')
    }
    this.#native = handle
    this.localEndpoint = handle.localEndpoint
    this.remoteEndpoint = handle.remoteEndpoint
    connections.set(this, handle)
  }

  /** True once the connection joined a mesh or was disconnected. */
  get spent(): boolean {
    return this.#native.spent
  }

  /** Writes one frame (after any frames a mesh had queued but not written). */
  send(payload: Uint8Array | string): Promise<void> {
    const buffer = toBuffer(payload)
    return this.#serial(async () => {
      if (this.#native.spent) throw spentSend()
      const failure = await this.#native.send(buffer)
      if (failure) throw new SendError(failure.kind as SendErrorKind, failure.message)
    })
  }

  /** Reads one frame, never past its end: later frames stay for whoever reads next. */
  recv(): Promise<Buffer> {
    return this.#serial(async () => {
      if (this.#native.spent) throw spentRecv()
      const result = await this.#native.recv()
      if (isFailure(result)) {
        throw new RecvError(result.kind as RecvErrorKind, result.message)
      }
      return result
    })
  }

  /** Closes the connection; the peer sees the end of the stream. */
  disconnect(): void {
    this.#native.disconnect()
  }

  /** Runs operations one after the other: a connection does one thing at a time. */
  #serial<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.#last.then(operation, operation)
    this.#last = result.catch(() => undefined)
    return result
  }
}

function spentSend(): SendError {
  return new SendError(SendErrorKind.Spent, 'the connection joined a mesh or was disconnected; it cannot be used again')
}

function spentRecv(): RecvError {
  return new RecvError(RecvErrorKind.Spent, 'the connection joined a mesh or was disconnected; it cannot be used again')
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
  async accept(): Promise<Connection> {
    const result = await this.#native.accept()
    if (isFailure(result)) throw new AcceptError(result.kind as AcceptErrorKind, result.message)
    return new Connection(result)
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
    if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options)
    const maxFrameSize =
      options.maxFrameSize === undefined
        ? DEFAULT_MAX_FRAME_SIZE
        : checkCount(options.maxFrameSize, 'options.maxFrameSize', 0, MAX_FRAME_SIZE_LIMIT)
    const noDelay = options.noDelay ?? true
    if (typeof noDelay !== 'boolean') throw invalidArgType('options.noDelay', 'of type boolean', noDelay)
    this.#native = new native.NativeTransport(maxFrameSize, noDelay)
  }

  /** True for `host:port` and `tcp://host:port`. */
  accepts(address: string): boolean {
    return this.#native.accepts(checkString(address, 'address'))
  }

  /** Listens on `bind` (`host:port` or `tcp://host:port`; port 0 picks one). */
  async listen(bind: string): Promise<Listener> {
    const result = await this.#native.listen(checkString(bind, 'bind'))
    if (isFailure(result)) throw new ListenError(result.kind as ListenErrorKind, result.message)
    return new Listener(result)
  }

  /** Connects to `endpoint` (`host:port` or `tcp://host:port`). */
  async connect(endpoint: string): Promise<Connection> {
    const result = await this.#native.connect(checkString(endpoint, 'endpoint'))
    if (isFailure(result)) throw new ConnectError(result.kind as ConnectErrorKind, result.message)
    return new Connection(result)
  }
}

/** Splinter's name for {@link TcpTransport}: the same class. */
export const RawTransport = TcpTransport
/** Splinter's name for {@link TcpTransport}: the same class. */
export type RawTransport = TcpTransport

// ---------------------------------------------------------------------------------------
// The mesh

interface RecvWaiter {
  /** 0 for a single envelope; otherwise the most a batch takes. */
  max: number
  resolve(value: Envelope & Envelope[]): void
  reject(error: Error): void
  timer?: NodeJS.Timeout
}

interface Credit {
  room: number
  max: number
}

interface RoomWaiter {
  envelope: Envelope
  resolve(): void
  reject(error: Error): void
  signal?: AbortSignal
  onAbort?: () => void
}

/** What every handle (clone) of one mesh shares on this thread. */
class MeshState {
  readonly native: native.NativeMesh
  /** The same mesh for the per-message calls: a free function on it costs half a method call. */
  readonly hot: native.ExternalObject<'HotMesh'>
  /** Envelopes taken from the native queue, not yet handed out. */
  readonly ready: Envelope[] = []
  readyHead = 0
  readonly recvWaiters: RecvWaiter[] = []
  readonly roomWaiters = new Map<number, RoomWaiter[]>()
  readonly handles = new Set<WeakRef<Mesh>>()
  /** Handles that keep the process alive. */
  refs = 0
  shutdownCalled = false
  stopped = false
  armed = false

  // The outbox: frames encoded as they go on the wire, in runs of one connection each.
  readonly outbox = Buffer.allocUnsafeSlow(OUTBOX_BYTES)
  outboxLength = 0
  /** (id, end offset) per run. */
  readonly runs = new Float64Array(2 * OUTBOX_RUNS)
  runCount = 0
  lastRunId = -1
  flushQueued = false
  readonly flushTask = (): void => {
    this.flushQueued = false
    this.flush()
  }
  /**
   * Per connection: frames it can still take (a floor: only this thread's sends lower the
   * native room, and every send counts here first) and its largest payload. So `Full`
   * and `TooLarge` are exact at the call, without crossing into native code per send.
   */
  readonly credits = new Map<number, Credit>()
  /** Where `meshRecvBatch` describes the envelopes it hands over; reused by every call. */
  readonly meta = new Float64Array(1 + 4 * BATCH_MAX)
  /** The credit last used, and its id (0: none): a stream to one connection skips the map. */
  lastCreditId = 0
  lastCredit: Credit | undefined = undefined
  /** Envelopes refused at a flush because their connection had gone: they join its notice. */
  readonly orphans = new Map<number, Envelope[]>()

  constructor(handle: native.NativeMesh) {
    this.native = handle
    this.hot = handle.hot()
  }

  /** Queues a payload for connection `id` (after any waiting `sendWait`s: see `Mesh.send`). */
  enqueue(id: number, payload: Buffer): number {
    if (this.shutdownCalled) return native.meshSend(this.hot, id, payload)
    let credit = id === this.lastCreditId ? this.lastCredit : this.credits.get(id)
    if (credit === undefined || credit.room === 0) {
      const status = this.refill(id)
      if (status !== SEND_OK) return status
      credit = this.credits.get(id) as Credit
    }
    this.lastCreditId = id
    this.lastCredit = credit
    const length = payload.length
    if (length > credit.max) return SEND_TOO_LARGE
    if (length >= DIRECT_MIN) {
      this.flush()
      const status = native.meshSend(this.hot, id, payload)
      if (status === SEND_OK) credit.room--
      return status
    }
    let at = this.outboxLength
    if (at + 4 + length > OUTBOX_BYTES || (this.runCount === OUTBOX_RUNS && id !== this.lastRunId)) {
      this.flush()
      at = 0
    }
    credit.room--
    const out = this.outbox
    out[at] = length >>> 24
    out[at + 1] = (length >>> 16) & 0xff
    out[at + 2] = (length >>> 8) & 0xff
    out[at + 3] = length & 0xff
    out.set(payload, at + 4)
    at += 4 + length
    this.outboxLength = at
    if (id === this.lastRunId) {
      this.runs[2 * this.runCount - 1] = at
    } else {
      this.runs[2 * this.runCount] = id
      this.runs[2 * this.runCount + 1] = at
      this.runCount++
      this.lastRunId = id
    }
    if (!this.flushQueued) {
      this.flushQueued = true
      queueMicrotask(this.flushTask)
    }
    return SEND_OK
  }

  /** Drops the credit of `id` (its connection went, or its room must be asked again). */
  forgetCredit(id: number): void {
    this.credits.delete(id)
    if (id === this.lastCreditId) {
      this.lastCreditId = 0
      this.lastCredit = undefined
    }
  }

  /**
   * Asks the native queue of `id` for its room, after a flush (so the outbox counts in
   * it, and frames the reactor has written since make room).
   */
  refill(id: number): number {
    this.flush()
    const room = native.meshRoom(this.hot, id)
    if (room < 0) return -room
    let credit = this.credits.get(id)
    if (credit === undefined) {
      credit = { room, max: native.meshMaxFrameSize(this.hot, id) }
      this.credits.set(id, credit)
    } else {
      credit.room = room
    }
    return room === 0 ? SEND_FULL : SEND_OK
  }

  /** Hands the outbox to the native queues. */
  flush(): void {
    const count = this.runCount
    if (count === 0) return
    const length = this.outboxLength
    this.runCount = 0
    this.outboxLength = 0
    this.lastRunId = -1
    const refused = native.meshSendEncoded(this.hot, this.outbox, length, this.runs, count)
    if (refused !== null) this.refused(refused)
  }

  /**
   * Runs a flush could not queue. Their connection went away after the send counted its
   * room (the reactor closed it): the envelopes join its disconnect notice as unsent. A
   * refusal for room cannot happen (the credit is a floor), nor for an unknown id (a
   * notice or `remove` flushes first); if one did, the envelopes would still not be lost:
   * they wait for room like a `sendWait`.
   */
  refused(pairs: number[]): void {
    for (let i = 0; i < pairs.length; i += 2) {
      const run = pairs[i]
      const id = this.runs[2 * run]
      const end = this.runs[2 * run + 1]
      const envelopes: Envelope[] = []
      for (let at = run === 0 ? 0 : this.runs[2 * run - 1]; at < end;) {
        const length = this.outbox.readUInt32BE(at)
        envelopes.push(new Envelope(id, Buffer.from(this.outbox.subarray(at + 4, at + 4 + length))))
        at += 4 + length
      }
      if (pairs[i + 1] === SEND_FULL) {
        this.forgetCredit(id)
        this.requeue(id, envelopes)
      } else {
        let orphans = this.orphans.get(id)
        if (orphans === undefined) this.orphans.set(id, (orphans = []))
        orphans.push(...envelopes)
      }
    }
  }

  /** Puts envelopes in front of the `sendWait`s of `id`. */
  requeue(id: number, envelopes: Envelope[]): void {
    let waiters = this.roomWaiters.get(id)
    if (waiters === undefined) this.roomWaiters.set(id, (waiters = []))
    waiters.unshift(
      ...envelopes.map((envelope) => ({
        envelope,
        resolve: () => {},
        reject: () => {
          let orphans = this.orphans.get(id)
          if (orphans === undefined) this.orphans.set(id, (orphans = []))
          orphans.push(envelope)
        },
      })),
    )
    for (let i = 0; i < envelopes.length; i++) retain()
    waiting.add(this)
    if (this.native.wantRoom(id) !== 1) queueMicrotask(() => this.serviceRoomFor(id))
  }

  /** The next envelope if one is waiting, without waiting. */
  take(): Envelope | undefined {
    if (this.readyHead === this.ready.length) {
      this.ready.length = 0
      this.readyHead = 0
      const buffers = native.meshRecvBatch(this.hot, PREFETCH, this.meta)
      if (buffers === null) return undefined
      unpackReceived(buffers, this.meta, this.ready)
    }
    const envelope = this.ready[this.readyHead]
    this.ready[this.readyHead++] = undefined as unknown as Envelope
    return envelope
  }

  /**
   * The next envelope if one is waiting; if none, asks for a wake (`ARMED`), or says that
   * none will come (`STOPPED`). One native call where `take`, `isStopped` and `arm` make three.
   */
  takeOrArm(): Envelope | typeof ARMED | typeof STOPPED {
    if (this.readyHead === this.ready.length) {
      this.ready.length = 0
      this.readyHead = 0
      const buffers = native.meshTakeOrArm(this.hot, PREFETCH, this.meta)
      if (buffers === null) {
        if (this.meta[0] === 0) return ARMED
        this.stopped = true
        return STOPPED
      }
      unpackReceived(buffers, this.meta, this.ready)
    }
    const envelope = this.ready[this.readyHead]
    this.ready[this.readyHead++] = undefined as unknown as Envelope
    return envelope
  }

  /** Up to `max` envelopes waiting, without waiting. */
  takeMany(max: number): Envelope[] {
    const out: Envelope[] = []
    while (out.length < max) {
      if (this.readyHead === this.ready.length) {
        this.ready.length = 0
        this.readyHead = 0
        // The native side hands over at most what is asked: straight into `out`.
        const buffers = native.meshRecvBatch(this.hot, Math.max(Math.min(max - out.length, BATCH_MAX), 1), this.meta)
        if (buffers === null) break
        unpackReceived(buffers, this.meta, out)
        continue
      }
      out.push(this.ready[this.readyHead])
      this.ready[this.readyHead++] = undefined as unknown as Envelope
    }
    return out
  }

  /** The error a receive gets once nothing more can arrive. */
  endError(): RecvError {
    return this.shutdownCalled
      ? new RecvError(RecvErrorKind.Shutdown, 'the mesh has shut down')
      : new RecvError(RecvErrorKind.Disconnected, 'the mesh reactor stopped unexpectedly')
  }

  isStopped(): boolean {
    if (!this.stopped && this.native.isShutdown()) this.stopped = true
    return this.stopped
  }

  /** Adds a waiting receive; `armed`: `takeOrArm` asked for the wake already. */
  addRecvWaiter(waiter: RecvWaiter, armed = false): void {
    this.recvWaiters.push(waiter)
    waiting.add(this)
    retain()
    if (!armed) this.arm()
  }

  /** Lets go of the strong reference once nothing waits. */
  idle(): void {
    if (this.recvWaiters.length === 0 && this.roomWaiters.size === 0) waiting.delete(this)
  }

  settleRecvWaiter(waiter: RecvWaiter): boolean {
    const index = this.recvWaiters.indexOf(waiter)
    if (index < 0) return false
    this.recvWaiters.splice(index, 1)
    if (waiter.timer !== undefined) clearTimeout(waiter.timer)
    release()
    this.idle()
    return true
  }

  /** Asks the reactor for a wake; if something is there already, serves it now. */
  arm(): void {
    if (!this.native.armRecv()) queueMicrotask(() => this.service())
  }

  /** Called on every wake: notices, waiting receives, waiting sends. */
  service(): void {
    this.serviceDisconnects()
    this.serviceRecv()
    this.serviceRoom()
  }

  serviceDisconnects(): void {
    // Frames sent before the notice is taken go into its connection's queue, or join it.
    this.flush()
    for (const notice of this.native.takeDisconnects()) {
      const unsent: Envelope[] = []
      if (notice.unsent) unpackReceived(notice.unsent.buffers, notice.unsent.meta, unsent)
      const orphans = this.orphans.get(notice.id)
      if (orphans !== undefined) {
        unsent.push(...orphans)
        this.orphans.delete(notice.id)
      }
      this.forgetCredit(notice.id)
      const error = new DisconnectError(notice.kind as DisconnectErrorKind, notice.message, notice.id, unsent)
      for (const ref of this.handles) {
        const mesh = ref.deref()
        if (mesh === undefined) this.handles.delete(ref)
        else mesh.emit('disconnect', notice.id, error)
      }
      // Senders waiting for room on it learn now.
      this.serviceRoomFor(notice.id)
    }
  }

  serviceRecv(): void {
    while (this.recvWaiters.length > 0) {
      const waiter = this.recvWaiters[0]
      let value: Envelope | Envelope[] | undefined
      if (waiter.max === 0) {
        value = this.take()
      } else {
        const batch = this.takeMany(waiter.max)
        value = batch.length > 0 ? batch : undefined
      }
      if (value === undefined) {
        if (this.isStopped()) {
          for (const waiter of this.recvWaiters.slice()) {
            this.settleRecvWaiter(waiter)
            waiter.reject(this.endError())
          }
          return
        }
        if (!this.native.armRecv()) continue
        return
      }
      this.settleRecvWaiter(waiter)
      waiter.resolve(value as Envelope & Envelope[])
    }
  }

  serviceRoom(): void {
    for (const id of [...this.roomWaiters.keys()]) this.serviceRoomFor(id)
  }

  /** Sends waiting envelopes for `id`, in order, until one does not fit. */
  serviceRoomFor(id: number): void {
    const waiters = this.roomWaiters.get(id)
    while (waiters !== undefined && waiters.length > 0) {
      const waiter = waiters[0]
      const status = this.enqueue(id, waiter.envelope.payload)
      if (status === SEND_FULL) {
        const asked = this.native.wantRoom(id)
        if (asked === 0) continue
        if (asked === 1) return
      }
      waiters.shift()
      this.dropRoomWaiter(waiter)
      if (status === SEND_OK) waiter.resolve()
      else waiter.reject(sendError(status, waiter.envelope))
    }
    this.roomWaiters.delete(id)
    this.idle()
  }

  dropRoomWaiter(waiter: RoomWaiter): void {
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort)
    release()
  }

  shutdown(): void {
    if (!this.shutdownCalled) {
      this.flush()
      this.shutdownCalled = true
      this.native.shutdown()
      this.stopped = true
      while (this.refs > 0) {
        this.refs--
        release()
      }
    }
    this.service()
  }
}

function toTimeoutError(error: RecvError): RecvTimeoutError {
  return new RecvTimeoutError(error.kind as unknown as RecvTimeoutErrorKind, error.message)
}

function sendError(status: number, envelope: Envelope): SendError {
  switch (status) {
    case SEND_NOT_FOUND:
      return new SendError(SendErrorKind.NotFound, `no connection with id ${envelope.id}`, envelope)
    case SEND_FULL:
      return new SendError(SendErrorKind.Full, `the outgoing queue of connection ${envelope.id} is full`, envelope)
    case SEND_DISCONNECTED:
      return new SendError(SendErrorKind.Disconnected, `connection ${envelope.id} is disconnected`, envelope)
    case SEND_TOO_LARGE:
      return new SendError(
        SendErrorKind.TooLarge,
        `a payload of ${envelope.payload.length} bytes exceeds the maximum frame size of connection ${envelope.id}`,
        envelope,
      )
    default:
      return new SendError(SendErrorKind.IoError, 'the reactor could not be woken', envelope)
  }
}

const finalizer = new FinalizationRegistry<{ state: MeshState; refed: { value: boolean } }>(({ state, refed }) => {
  if (refed.value && !state.shutdownCalled) {
    state.refs--
    release()
  }
})

/** Options of {@link Mesh.sendWait}. */
export interface SendWaitOptions {
  /** Gives up waiting: the promise rejects with the signal's reason. */
  signal?: AbortSignal
}

/** The `'disconnect'` event of a {@link Mesh}. */
export interface MeshEvents {
  disconnect: [id: number, error: DisconnectError]
}

/**
 * A connection reactor: sends to and receives from many connections in a native
 * background thread.
 *
 * A mesh keeps the process alive until it is shut down, like a server; after `unref()`
 * only a pending receive (or `sendWait`) does. Connections the reactor removes by itself
 * (end of stream, reset, protocol error) are announced once with a `'disconnect'` event.
 */
export class Mesh extends EventEmitter<MeshEvents> implements AsyncIterable<Envelope> {
  #state: MeshState
  #refed = { value: true }

  /**
   * @param incomingCapacity envelopes the incoming queue holds (an integer >= 1).
   * @param outgoingCapacity envelopes each connection's outgoing queue holds (an integer >= 1).
   */
  constructor(incomingCapacity: number, outgoingCapacity: number)
  /** @internal */
  constructor(incomingCapacity: number | MeshState, outgoingCapacity?: number)
  constructor(incomingCapacity: number | MeshState, outgoingCapacity?: number) {
    super()
    if (incomingCapacity instanceof MeshState) {
      this.#state = incomingCapacity
    } else {
      const incoming = checkCount(incomingCapacity, 'incomingCapacity', 1, 0xffff_ffff)
      const outgoing = checkCount(outgoingCapacity, 'outgoingCapacity', 1, 0xffff_ffff)
      this.#state = new MeshState(new native.NativeMesh(incoming, outgoing))
      states.add(new WeakRef(this.#state))
    }
    this.#state.handles.add(new WeakRef(this))
    if (!this.#state.shutdownCalled) {
      this.#state.refs++
      retain()
      finalizer.register(this, { state: this.#state, refed: this.#refed })
    } else {
      this.#refed.value = false
    }
  }

  /** Adds a connection and returns its id at once. The `Connection` object is spent. */
  add(connection: Connection): number {
    if (!(connection instanceof Connection)) throw invalidArgType('connection', 'a Connection', connection)
    const handle = connections.get(connection) as native.NativeConnection
    const id = this.#state.native.add(handle)
    if (id >= 0) return id
    if (id === ADD_SPENT)
      throw new AddError(AddErrorKind.Spent, 'the connection joined a mesh already or was disconnected')
    if (id === ADD_SHUTDOWN) throw new AddError(AddErrorKind.Shutdown, 'the mesh has shut down')
    throw new AddError(AddErrorKind.Busy, 'the connection is in the middle of its own send or recv')
  }

  /** Takes a connection out and hands it back, with its unwritten frames and any half-read frame. */
  async remove(id: number): Promise<Connection> {
    checkId(id)
    const state = this.#state
    // What was sent before leaves with the connection.
    state.flush()
    state.forgetCredit(id)
    const handle = state.native.remove(id)
    if (handle === null) throw new RemoveError(RemoveErrorKind.NotFound, `no connection with id ${id}`)
    return new Connection(handle)
  }

  /** Queues an envelope without blocking; throws `SendError` (`Full` and `Disconnected` carry the envelope). */
  send(envelope: Envelope): void {
    if (!(envelope instanceof Envelope)) throw invalidArgType('envelope', 'an Envelope', envelope)
    const state = this.#state
    if (state.roomWaiters.size !== 0) {
      // Envelopes to this id wait for room already: this one must not overtake them.
      const waiting = state.roomWaiters.get(envelope.id)
      if (waiting !== undefined && waiting.length > 0) throw sendError(SEND_FULL, envelope)
    }
    const status = state.enqueue(envelope.id, envelope.payload)
    if (status !== SEND_OK) throw sendError(status, envelope)
  }

  /** Like `send`, but waits for room instead of throwing `Full`. Envelopes to one connection keep their order. */
  sendWait(envelope: Envelope, options: SendWaitOptions = {}): Promise<void> {
    if (!(envelope instanceof Envelope)) return Promise.reject(invalidArgType('envelope', 'an Envelope', envelope))
    const { signal } = options ?? {}
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      return Promise.reject(invalidArgType('options.signal', 'an AbortSignal', signal))
    }
    if (signal?.aborted) return Promise.reject(signal.reason)
    const state = this.#state
    let waiters = state.roomWaiters.get(envelope.id)
    if (waiters === undefined || waiters.length === 0) {
      const status = state.enqueue(envelope.id, envelope.payload)
      if (status === SEND_OK) return Promise.resolve()
      if (status !== SEND_FULL) return Promise.reject(sendError(status, envelope))
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: RoomWaiter = { envelope, resolve, reject, signal }
      if (signal) {
        waiter.onAbort = () => {
          const list = state.roomWaiters.get(envelope.id)
          const index = list ? list.indexOf(waiter) : -1
          if (index >= 0) {
            list!.splice(index, 1)
            if (list!.length === 0) state.roomWaiters.delete(envelope.id)
            state.dropRoomWaiter(waiter)
            state.idle()
            reject(signal.reason)
          }
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      if (waiters === undefined) {
        waiters = []
        state.roomWaiters.set(envelope.id, waiters)
      }
      waiters.push(waiter)
      waiting.add(state)
      retain()
      if (waiters.length === 1) {
        const asked = state.native.wantRoom(envelope.id)
        if (asked !== 1) queueMicrotask(() => state.serviceRoomFor(envelope.id))
      }
    })
  }

  /** The next envelope from any connection. Rejects with `RecvError` (`Shutdown` once shut down and drained). */
  recv(): Promise<Envelope> {
    const state = this.#state
    const envelope = state.takeOrArm()
    if (envelope === STOPPED) return Promise.reject(state.endError())
    if (envelope !== ARMED) return Promise.resolve(envelope)
    return new Promise((resolve, reject) => {
      state.addRecvWaiter({ max: 0, resolve, reject }, true)
    })
  }

  /** Like `recv`, but rejects with `RecvTimeoutError` kind `Timeout` after `ms` milliseconds. */
  recvTimeout(ms: number): Promise<Envelope> {
    if (typeof ms !== 'number') return Promise.reject(invalidArgType('ms', 'of type number', ms))
    if (!(ms >= 0) || !Number.isFinite(ms) || ms > 0x7fff_ffff) {
      return Promise.reject(outOfRange('ms', 'a finite number >= 0 and <= 2147483647', ms))
    }
    const state = this.#state
    const envelope = state.take()
    if (envelope !== undefined) return Promise.resolve(envelope)
    if (state.isStopped()) return Promise.reject(toTimeoutError(state.endError()))
    return new Promise((resolve, reject) => {
      const waiter: RecvWaiter = {
        max: 0,
        resolve,
        reject: (error) => reject(error instanceof RecvError ? toTimeoutError(error) : error),
      }
      waiter.timer = setTimeout(() => {
        if (state.settleRecvWaiter(waiter)) {
          reject(new RecvTimeoutError(RecvTimeoutErrorKind.Timeout, `no envelope arrived within ${ms} ms`))
        }
      }, ms)
      state.addRecvWaiter(waiter)
    })
  }

  /** The next envelope if one is waiting, else `null`. Throws `RecvError` once shut down and drained. */
  tryRecv(): Envelope | null {
    const state = this.#state
    const envelope = state.take()
    if (envelope !== undefined) return envelope
    if (state.isStopped()) throw state.endError()
    return null
  }

  /** Waits for at least one envelope, then takes up to `max` (an integer >= 1) of those waiting. */
  recvBatch(max: number): Promise<Envelope[]> {
    try {
      checkCount(max, 'max', 1, 0xffff_ffff)
    } catch (error) {
      return Promise.reject(error)
    }
    const state = this.#state
    const batch = state.takeMany(max)
    if (batch.length > 0) return Promise.resolve(batch)
    if (state.isStopped()) return Promise.reject(state.endError())
    return new Promise((resolve, reject) => {
      state.addRecvWaiter({ max, resolve, reject })
    })
  }

  /** Every envelope, until the mesh shuts down (then the loop ends cleanly). */
  async *[Symbol.asyncIterator](): AsyncIterator<Envelope> {
    for (;;) {
      let envelope: Envelope
      try {
        envelope = await this.recv()
      } catch (error) {
        if (error instanceof RecvError && error.kind === RecvErrorKind.Shutdown) return
        throw error
      }
      yield envelope
    }
  }

  /** A handle that sends to one connection, or `null` if no connection has the id. */
  outgoing(id: number): Outgoing | null {
    checkId(id)
    return this.#state.native.contains(id) ? new Outgoing(this, id) : null
  }

  /** A handle with this mesh's receive methods. */
  incoming(): Incoming {
    return new Incoming(this)
  }

  /** Another handle on the same reactor and queues; receives through several handles share the envelopes. */
  clone(): Mesh {
    return new Mesh(this.#state)
  }

  /** The add/remove half of the mesh (Splinter's `MeshLifeCycle`). */
  getLifeCycle(): MeshLifeCycle {
    return new MeshLifeCycle(this)
  }

  /** The send half of the mesh (Splinter's `MeshMatrixSender`). */
  getSender(): MeshMatrixSender {
    return new MeshMatrixSender(this)
  }

  /** The receive half of the mesh (Splinter's `MeshMatrixReceiver`). */
  getReceiver(): MeshMatrixReceiver {
    return new MeshMatrixReceiver(this)
  }

  /**
   * Stops the reactor, closes every connection (after writing what the sockets take without
   * blocking) and joins the thread. Envelopes already received can still be taken; then
   * receives reject with `RecvError` kind `Shutdown`. Idempotent; applies to every clone.
   */
  shutdown(): void {
    this.#refed.value = false
    this.#state.shutdown()
  }

  /** Keeps the process alive while the mesh runs (the default). */
  ref(): this {
    if (!this.#refed.value && !this.#state.shutdownCalled) {
      this.#refed.value = true
      this.#state.refs++
      retain()
    }
    return this
  }

  /** Lets the process exit while the mesh is idle; a pending receive still keeps it alive. */
  unref(): this {
    if (this.#refed.value && !this.#state.shutdownCalled) {
      this.#refed.value = false
      this.#state.refs--
      release()
    }
    return this
  }
}

/** Sends to one connection of a mesh. */
export class Outgoing {
  readonly #mesh: Mesh
  /** The connection's id. */
  readonly id: number

  /** @internal Made by `Mesh.outgoing`. */
  constructor(mesh: Mesh, id: number) {
    this.#mesh = mesh
    this.id = id
  }

  /** Queues a payload without blocking; errors as `Mesh.send`. */
  send(payload: Uint8Array | string): void {
    this.#mesh.send(new Envelope(this.id, payload))
  }
}

/** The receive methods of a mesh. */
export class Incoming implements AsyncIterable<Envelope> {
  readonly #mesh: Mesh

  /** @internal Made by `Mesh.incoming`. */
  constructor(mesh: Mesh) {
    this.#mesh = mesh
  }

  /** See `Mesh.recv`. */
  recv(): Promise<Envelope> {
    return this.#mesh.recv()
  }

  /** See `Mesh.recvTimeout`. */
  recvTimeout(ms: number): Promise<Envelope> {
    return this.#mesh.recvTimeout(ms)
  }

  /** See `Mesh.tryRecv`. */
  tryRecv(): Envelope | null {
    return this.#mesh.tryRecv()
  }

  /** See `Mesh.recvBatch`. */
  recvBatch(max: number): Promise<Envelope[]> {
    return this.#mesh.recvBatch(max)
  }

  [Symbol.asyncIterator](): AsyncIterator<Envelope> {
    return this.#mesh[Symbol.asyncIterator]()
  }
}

/** Adds and removes connections (Splinter's `MeshLifeCycle`). */
export class MeshLifeCycle {
  readonly #mesh: Mesh

  /** @internal Made by `Mesh.getLifeCycle`. */
  constructor(mesh: Mesh) {
    this.#mesh = mesh
  }

  /** See `Mesh.add`. */
  add(connection: Connection): number {
    return this.#mesh.add(connection)
  }

  /** See `Mesh.remove`. */
  remove(id: number): Promise<Connection> {
    return this.#mesh.remove(id)
  }
}

/** Sends by id (Splinter's `MeshMatrixSender`). */
export class MeshMatrixSender {
  readonly #mesh: Mesh

  /** @internal Made by `Mesh.getSender`. */
  constructor(mesh: Mesh) {
    this.#mesh = mesh
  }

  /** Queues `payload` for connection `id`; errors as `Mesh.send`. */
  send(id: number, payload: Uint8Array | string): void {
    this.#mesh.send(new Envelope(id, payload))
  }
}

/** Receives (Splinter's `MeshMatrixReceiver`). */
export class MeshMatrixReceiver {
  readonly #mesh: Mesh

  /** @internal Made by `Mesh.getReceiver`. */
  constructor(mesh: Mesh) {
    this.#mesh = mesh
  }

  /** See `Mesh.recv`. */
  recv(): Promise<Envelope> {
    return this.#mesh.recv()
  }

  /** See `Mesh.recvTimeout`. */
  recvTimeout(ms: number): Promise<Envelope> {
    return this.#mesh.recvTimeout(ms)
  }
}
