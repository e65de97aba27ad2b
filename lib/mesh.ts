/**
 * The mesh: many connections in one native reactor; send to any by id, receive from all.
 *
 * A `Mesh` handle is an `EventEmitter`; every clone of a mesh on this thread shares one
 * `MeshState`, which composes the parts: the {@link Outbox} (sends), the {@link Inbox}
 * (receives and notices, in order), the {@link RoomWaiters} (`sendWait`), and the
 * removals under way. The mesh's key in the environment's waker serves them when the
 * reactor has something for this mesh.
 *
 * @module
 */

import type { Buffer } from 'node:buffer'
import { EventEmitter } from 'node:events'

import * as native from '../binding.js'
import { checkCount, checkId, checkOptions, checkSignal, checkTimeout, invalidArgType } from './args'
import { adoptEnvelope, Envelope, envelopeId, envelopePayload, trustedEnvelope } from './envelope'
import {
  AddError,
  AddErrorKind,
  DisconnectError,
  DisconnectErrorKind,
  RecvError,
  RecvErrorKind,
  RecvTimeoutError,
  RecvTimeoutErrorKind,
  RemoveError,
  RemoveErrorKind,
  SendError,
  SendErrorKind,
} from './errors'
import { ARMED, endError, Inbox, type Notice, type RecvWaiter, STOPPED } from './inbox'
import { Outbox } from './outbox'
import { RoomWaiters } from './room'
import { systemError } from './system'
import { Connection, nativeConnection } from './transports'
import type { PeerCertificate } from './transports'
import { forget, onWake, release, retain, type Wakeable } from './waker'

/** Meshes with something pending (a receive, a `sendWait`, a removal), held strongly: a
 * waiting promise may be the only thing left that refers to its mesh, and it must settle. */
const held = new Set<MeshState>()

interface Removal {
  removal: native.NativeRemoval
  id: number
  resolve(connection: Connection): void
  reject(error: Error): void
}

/** What every handle (clone) of one mesh shares on this thread. */
class MeshState implements Wakeable {
  readonly native: native.NativeMesh
  readonly hot: native.ExternalObject<'HotMesh'>
  readonly key: number
  readonly outbox: Outbox
  readonly inbox: Inbox
  readonly room: RoomWaiters
  readonly removals: Removal[] = []
  readonly handles = new Set<WeakRef<Mesh>>()
  /** Handles that keep the process alive. */
  refs = 0
  shutdownCalled = false
  /** Envelopes a flush found their connection gone for: they join its notice. */
  readonly orphans = new Map<number, Envelope[]>()
  /**
   * The TLS peer certificates of the connections in the mesh, by id: taken from the
   * `Connection` at `add` (the reactor owns the connection then, and is never asked), dropped
   * at `remove`, at the connection's disconnect notice, and at shutdown.
   */
  readonly peerCertificates = new Map<number, PeerCertificate>()
  /** Reasons to be held: waiting receives, room waiters, removals. */
  #holds = 0

  constructor(handle: native.NativeMesh) {
    this.native = handle
    this.key = handle.key
    const hot = (this.hot = handle.hot())
    this.outbox = new Outbox(hot, (id, envelopes, status) => {
      if (status === native.SendStatus.Full) this.room.requeue(id, envelopes, (envelope) => this.orphan(id, envelope))
      else for (const envelope of envelopes) this.orphan(id, envelope)
    })
    this.inbox = new Inbox(hot, {
      onNotice: (notice) => this.onNotice(notice),
      waiting: () => this.hold(),
      idle: () => this.unhold(),
      endError: () => this.endError(),
    })
    this.room = new RoomWaiters({
      send: (id, payload) => this.send(id, payload),
      wantRoom: (id) => this.native.wantRoom(id),
      sendError,
      waiting: () => this.hold(),
      idle: () => this.unhold(),
    })
    onWake(this.key, this)
  }

  /** Queues a payload: the outbox, or, once shut down, native code (which refuses it). */
  send(id: number, payload: Buffer): native.SendStatus {
    if (this.shutdownCalled) return native.meshSend(this.hot, id, payload)
    return this.outbox.send(id, payload)
  }

  orphan(id: number, envelope: Envelope): void {
    let orphans = this.orphans.get(id)
    if (orphans === undefined) this.orphans.set(id, (orphans = []))
    orphans.push(envelope)
  }

  hold(): void {
    if (this.#holds++ === 0) held.add(this)
  }

  unhold(): void {
    if (--this.#holds === 0) held.delete(this)
  }

  /** Called on a wake: waiting receives and notices, waiting sends, removals. */
  service(): void {
    this.inbox.service()
    if (this.room.size !== 0) this.room.service()
    if (this.removals.length !== 0) this.serviceRemovals()
  }

  /** A notice is due: every envelope its connection sent has been taken. */
  onNotice({ id, notice }: Notice): void {
    // Frames sent before the notice is taken go into its connection's queue, or join it.
    this.outbox.flush()
    this.announce(id, notice)
  }

  /** Emits `'disconnect'` for connection `id`, with what it had not written. */
  announce(id: number, notice: native.DisconnectNotice): void {
    const unsent = notice.unsent.map((payload) => trustedEnvelope(id, payload))
    const orphans = this.orphans.get(id)
    if (orphans !== undefined) {
      unsent.push(...orphans)
      this.orphans.delete(id)
    }
    this.outbox.forget(id)
    this.peerCertificates.delete(id)
    const error = new DisconnectError(notice.kind as DisconnectErrorKind, notice.message, id, unsent)
    // After the continuation of the receive that took the last envelope.
    setImmediate(() => {
      for (const ref of this.handles) {
        const mesh = ref.deref()
        if (mesh === undefined) this.handles.delete(ref)
        else mesh.emit('disconnect', id, error)
      }
    })
    // Senders waiting for room on it learn now.
    if (this.room.waitsFor(id)) this.room.serviceFor(id)
  }

  serviceRemovals(): void {
    let kept = 0
    for (const waiting of this.removals) {
      const taken = waiting.removal.take()
      if (taken === null) {
        this.removals[kept++] = waiting
        continue
      }
      release()
      this.unhold()
      if (taken instanceof native.NativeConnection) waiting.resolve(new Connection(taken))
      else waiting.reject(new RemoveError(RemoveErrorKind.NotFound, `no connection with id ${waiting.id}`))
    }
    this.removals.length = kept
  }

  /** The error a receive gets once nothing more can arrive. */
  endError(): RecvError {
    return endError(this.shutdownCalled)
  }

  shutdown(): void {
    if (!this.shutdownCalled) {
      this.outbox.flush()
      this.shutdownCalled = true
      // What the connections had not written comes back, in a 'disconnect' of kind
      // Shutdown each (and the notices of connections that were ending).
      for (const notice of this.native.shutdown()) this.announce(notice.id, notice)
      // Every connection is closed: none has a peer any more.
      this.peerCertificates.clear()
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

/** The error of a send refused with `status`, handing `envelope` back. */
function sendError(status: native.SendStatus, envelope: Envelope): SendError {
  const id = envelope.id
  switch (status) {
    case native.SendStatus.NotFound:
      return new SendError(SendErrorKind.NotFound, `no connection ever had id ${id}`, envelope)
    case native.SendStatus.Full:
      return new SendError(SendErrorKind.Full, `the outgoing queue of connection ${id} is full`, envelope)
    case native.SendStatus.Disconnected:
      return new SendError(SendErrorKind.Disconnected, `connection ${id} has left the mesh`, envelope)
    case native.SendStatus.TooLarge:
      return new SendError(
        SendErrorKind.TooLarge,
        `a payload of ${envelope.payload.length} bytes exceeds the maximum frame size of connection ${id}`,
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

/** The events of a {@link Mesh}. */
export interface MeshEvents {
  disconnect: [id: number, error: DisconnectError]
}

/** The envelope `value` is, or a `TypeError`. */
function envelopeArgument(value: unknown): Envelope {
  if (value instanceof Envelope) return value
  const adopted = adoptEnvelope(value)
  if (adopted === null) throw invalidArgType('envelope', 'an Envelope', value)
  return adopted
}

/**
 * A connection reactor: sends to and receives from many connections in a native
 * background thread.
 *
 * A mesh keeps the process alive until it is shut down, like a server; after `unref()`
 * only a pending receive (or `sendWait`, or `remove`) does. Connections the reactor
 * removes by itself (end of stream, reset, protocol error) are announced once with a
 * `'disconnect'` event, after every envelope they sent has been received.
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
      let handle: native.NativeMesh
      try {
        handle = new native.NativeMesh(incoming, outgoing)
      } catch (error) {
        // Out of descriptors or threads: a Node-style system error (`code: 'EMFILE'`).
        throw systemError(error, 'mesh')
      }
      this.#state = new MeshState(handle)
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
    const handle = connection instanceof Connection ? nativeConnection(connection) : undefined
    if (handle === undefined) throw invalidArgType('connection', 'a Connection', connection)
    const id = this.#state.native.add(handle)
    if (id >= 0) {
      const certificate = connection.peerCertificate
      if (certificate !== null) this.#state.peerCertificates.set(id, certificate)
      return id
    }
    if (id === native.AddStatus.Spent) {
      throw new AddError(AddErrorKind.Spent, 'the connection joined a mesh already or was disconnected')
    }
    if (id === native.AddStatus.Shutdown) {
      throw new AddError(AddErrorKind.Shutdown, 'the mesh has shut down; the connection is still yours')
    }
    throw new AddError(AddErrorKind.Busy, 'the connection is in the middle of its own send or recv')
  }

  /**
   * Takes a connection out and hands it back, with its unwritten frames, the frames read
   * but not yet received, and any half-read frame. Never blocks the event loop: the
   * reactor's answer settles the promise.
   */
  remove(id: number): Promise<Connection> {
    try {
      checkId(id)
    } catch (error) {
      return Promise.reject(error)
    }
    const state = this.#state
    // What was sent before leaves with the connection.
    state.outbox.flush()
    state.outbox.forget(id)
    state.peerCertificates.delete(id)
    const removal = state.native.beginRemove(id)
    if (removal === null)
      return Promise.reject(new RemoveError(RemoveErrorKind.NotFound, `no connection with id ${id}`))
    return new Promise((resolve, reject) => {
      state.removals.push({ removal, id, resolve, reject })
      state.hold()
      retain()
    })
  }

  /**
   * The certificate the TLS peer of connection `id` presented (see
   * `Connection.peerCertificate`); null for an id not in the mesh (removed, disconnected)
   * and for connections without one.
   */
  peerCertificate(id: number): PeerCertificate | null {
    checkId(id)
    return this.#state.peerCertificates.get(id) ?? null
  }

  /** Queues an envelope without blocking; throws `SendError` (`Full` and `Disconnected` carry the envelope). */
  send(envelope: Envelope): void {
    const checked = envelopeArgument(envelope)
    const state = this.#state
    const id = envelopeId(checked)
    // Envelopes to this id wait for room already: this one must not overtake them.
    if (state.room.waitsFor(id)) throw sendError(native.SendStatus.Full, checked)
    const status = state.send(id, envelopePayload(checked))
    if (status !== native.SendStatus.Ok) throw sendError(status, checked)
  }

  /** Like `send`, but waits for room instead of throwing `Full`. Envelopes to one connection keep their order. */
  sendWait(envelope: Envelope, options?: SendWaitOptions): Promise<void> {
    let checked: Envelope
    let signal: AbortSignal | undefined
    try {
      checked = envelopeArgument(envelope)
      signal = checkSignal(checkOptions<SendWaitOptions>(options).signal)
    } catch (error) {
      return Promise.reject(error)
    }
    if (signal?.aborted) return Promise.reject(signal.reason)
    const state = this.#state
    const id = envelopeId(checked)
    const payload = envelopePayload(checked)
    if (!state.room.waitsFor(id)) {
      const status = state.send(id, payload)
      if (status === native.SendStatus.Ok) return Promise.resolve()
      if (status !== native.SendStatus.Full) return Promise.reject(sendError(status, checked))
    }
    return state.room.wait(checked, id, payload, signal)
  }

  /** The next envelope from any connection. Rejects with `RecvError` (`Shutdown` once shut down and drained). */
  recv(): Promise<Envelope> {
    const inbox = this.#state.inbox
    if (!inbox.hasWaiters) {
      const envelope = inbox.takeOrArm()
      if (envelope === STOPPED) return Promise.reject(this.#state.endError())
      if (envelope !== ARMED) return Promise.resolve(envelope)
      return new Promise((resolve, reject) => inbox.wait({ max: 0, resolve, reject }, true))
    }
    return new Promise((resolve, reject) => inbox.wait({ max: 0, resolve, reject }))
  }

  /** Like `recv`, but rejects with `RecvTimeoutError` kind `Timeout` after `ms` milliseconds. */
  recvTimeout(ms: number): Promise<Envelope> {
    try {
      checkTimeout(ms, 'ms')
    } catch (error) {
      return Promise.reject(error)
    }
    const inbox = this.#state.inbox
    if (!inbox.hasWaiters) {
      const envelope = inbox.takeOrArm()
      if (envelope === STOPPED) return Promise.reject(toTimeoutError(this.#state.endError()))
      if (envelope !== ARMED) return Promise.resolve(envelope)
    }
    return new Promise((resolve, reject) => {
      const waiter: RecvWaiter = {
        max: 0,
        resolve,
        reject: (error) => reject(error instanceof RecvError ? toTimeoutError(error) : error),
      }
      waiter.timer = setTimeout(() => {
        if (inbox.settle(waiter)) {
          reject(new RecvTimeoutError(RecvTimeoutErrorKind.Timeout, `no envelope arrived within ${ms} ms`))
        }
      }, ms)
      inbox.wait(waiter, true)
    })
  }

  /** The next envelope if one is waiting, else `null`. Throws `RecvError` once shut down and drained. */
  tryRecv(): Envelope | null {
    const state = this.#state
    if (state.inbox.hasWaiters) return null
    const envelope = state.inbox.takeOrArm()
    if (envelope === STOPPED) throw state.endError()
    return envelope === ARMED ? null : envelope
  }

  /** Waits for at least one envelope, then takes up to `max` (an integer >= 1) of those waiting. */
  recvBatch(max: number): Promise<Envelope[]> {
    try {
      checkCount(max, 'max', 1, 0xffff_ffff)
    } catch (error) {
      return Promise.reject(error)
    }
    const state = this.#state
    const inbox = state.inbox
    if (!inbox.hasWaiters) {
      const batch = inbox.takeMany(max)
      if (batch.length > 0) return Promise.resolve(batch)
      if (inbox.stopped) return Promise.reject(state.endError())
    }
    return new Promise((resolve, reject) => inbox.wait({ max, resolve, reject }))
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
   * blocking) and joins the thread. Envelopes accepted and not written come back: a
   * `'disconnect'` of kind `Shutdown` per connection that has some, with them in
   * `error.unsent`. Envelopes already received can still be taken; then receives reject
   * with `RecvError` kind `Shutdown`. Idempotent; applies to every clone.
   */
  shutdown(): void {
    this.#refed.value = false
    this.#state.shutdown()
    // The reactor is joined: no wake will come for this mesh again.
    forget(this.#state.key)
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
