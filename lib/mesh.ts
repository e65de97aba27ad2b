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
import { checkCount, checkId, checkOptions, checkSignal, checkString, checkTimeout, invalidArgType } from './args'
import { publishConnect, publishDisconnect, publishReconnecting } from './diagnostics'
import { checkDialOptions, Dialer, type DialOptions } from './dialer'
import { adoptEnvelope, Envelope, envelopeId, envelopePayload, trustedEnvelope } from './envelope'
import {
  AddError,
  AddErrorKind,
  ConnectError,
  ConnectErrorKind,
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
import { Connection, MultiTransport, nativeConnection } from './transports'
import type { PeerCertificate, Transport } from './transports'
import { forget, onWake, release, retain, type Wakeable } from './waker'

/** Meshes with something pending (a receive, a `sendWait`, a removal), held strongly: a
 * waiting promise may be the only thing left that refers to its mesh, and it must settle. */
const held = new Set<MeshState>()

/**
 * Handles that keep the process alive (ref'd, not shut down), held strongly: a running
 * mesh, like a listening server, is not collected while it may still do something (dial,
 * reconnect, announce a disconnect to its listeners) just because the program kept no
 * variable for it. An unref'd handle is held only by the program, and the last one's
 * collection shuts the mesh down.
 */
const running = new Set<Mesh>()

interface Removal {
  removal: native.NativeRemoval
  id: number
  resolve(connection: Connection): void
  reject(error: Error): void
}

interface Ending {
  ending: native.NativeEnding | null
  id: number
  resolve(): void
  reject(error: Error): void
}

/** The endpoints of a connection in the mesh, for `stats`. */
interface Endpoints {
  remoteEndpoint: string
  localEndpoint: string
}

let multiTransport: MultiTransport | undefined
/** The transport `dial` uses when given none. */
function defaultTransport(): Transport {
  return (multiTransport ??= new MultiTransport())
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
  /** Graceful ends under way, until their answer (or their connection's notice). */
  readonly endings: Ending[] = []
  /** The dialled ids' diallers, until the id leaves. */
  readonly dialers = new Map<number, Dialer>()
  /** The endpoints of the connections in the mesh, by id (as `peerCertificates`). */
  readonly endpoints = new Map<number, Endpoints>()
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
    if (this.endings.length !== 0) this.serviceEndings()
  }

  /** The first live handle, for events. */
  firstHandle(): Mesh | undefined {
    for (const ref of this.handles) {
      const mesh = ref.deref()
      if (mesh !== undefined) return mesh
    }
    return undefined
  }

  /** Emits an event on every live handle. */
  emit(event: 'connect' | 'reconnecting' | 'disconnect', ...args: unknown[]): void {
    for (const ref of this.handles) {
      const mesh = ref.deref()
      if (mesh === undefined) this.handles.delete(ref)
      else (mesh.emit as (event: string, ...args: unknown[]) => boolean)(event, ...args)
    }
  }

  /** A connection joined under `id`. */
  joined(id: number, connection: Connection, dialled: boolean, reconnects: number): void {
    const { remoteEndpoint, localEndpoint } = connection
    this.endpoints.set(id, { remoteEndpoint, localEndpoint })
    const certificate = connection.peerCertificate
    if (certificate !== null) this.peerCertificates.set(id, certificate)
    const mesh = this.firstHandle()
    if (mesh !== undefined) publishConnect({ mesh, id, remoteEndpoint, localEndpoint, dialled, reconnects })
  }

  /** What a dialler needs of the mesh. */
  readonly dialHost = {
    attach: (id: number, connection: Connection, redial: boolean): boolean => {
      const handle = nativeConnection(connection)
      const status = handle === undefined ? native.AddStatus.Spent : this.native.attach(id, handle, redial)
      if (status !== 0) connection.disconnect()
      return status === 0
    },
    abandon: (id: number, message: string) => this.native.abandon(id, message),
    end: (id: number) => {
      const mesh = this.firstHandle()
      // The 'disconnect' event says how it went.
      if (mesh !== undefined) mesh.end(id).catch(() => {})
    },
    connected: (id: number, connection: Connection, reconnects: number) => {
      this.joined(id, connection, true, reconnects)
      this.emit('connect', id)
    },
    reconnecting: (id: number, attempt: number, delay: number, error: Error) => {
      const mesh = this.firstHandle()
      if (mesh !== undefined) publishReconnecting({ mesh, id, attempt, delay, error })
      this.emit('reconnecting', id, { attempt, delay, error })
    },
  }

  serviceEndings(): void {
    let kept = 0
    for (const waiting of this.endings) {
      const taken = waiting.ending?.take() ?? null
      if (taken === null || taken === 'Disconnected') {
        // No answer yet; or the connection left first, and its notice (which hands back
        // what it had not written) settles the end.
        if (taken === 'Disconnected') waiting.ending = null
        this.endings[kept++] = waiting
        continue
      }
      release()
      this.unhold()
      if (taken === 'Finished') waiting.resolve()
      else waiting.reject(new RemoveError(RemoveErrorKind.NotFound, `no connection with id ${waiting.id}`))
    }
    this.endings.length = kept
  }

  /** Settles the ends waiting on connection `id` with the error of its notice. */
  failEndings(id: number, error: DisconnectError): void {
    let kept = 0
    for (const waiting of this.endings) {
      if (waiting.id !== id) {
        this.endings[kept++] = waiting
        continue
      }
      release()
      this.unhold()
      // The end may have finished just before the notice (the peer then closed its side,
      // as it should): the answer, taken in the same wake, says so. A peer that closed its
      // side first, with everything written, ended it as well as our FIN would have.
      const clean = error.kind === DisconnectErrorKind.Eof && error.unsent.length === 0
      if (waiting.ending?.take() === 'Finished' || clean) waiting.resolve()
      else waiting.reject(error)
    }
    this.endings.length = kept
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
    this.endpoints.delete(id)
    const error = new DisconnectError(notice.kind as DisconnectErrorKind, notice.message, id, unsent)
    const dialer = this.dialers.get(id)
    // (A dialler stopped by `end` or `remove` meanwhile gives the parked id up instead.)
    const willReconnect = notice.parked && dialer !== undefined && dialer.redials
    if (dialer !== undefined && !notice.parked) {
      this.dialers.delete(id)
      dialer.stop()
      // It gave up: the last attempt's error says why.
      if (dialer.gaveUp && dialer.lastError !== undefined) {
        Object.defineProperty(error, 'cause', { value: dialer.lastError, configurable: true, writable: true })
      }
    }
    const info: DisconnectInfo = { willReconnect, unacknowledged: notice.unacknowledged ?? null }
    if (!notice.parked) this.failEndings(id, error)
    const mesh = this.firstHandle()
    if (mesh !== undefined) publishDisconnect({ mesh, id, error, ...info })
    // After the continuation of the receive that took the last envelope.
    setImmediate(() => {
      this.emit('disconnect', id, error, info)
      if (notice.parked) dialer?.dropped(error)
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
      for (const dialer of this.dialers.values()) dialer.stop()
      this.outbox.flush()
      this.shutdownCalled = true
      // What the connections had not written comes back, in a 'disconnect' of kind
      // Shutdown each (and the notices of connections that were ending).
      for (const notice of this.native.shutdown()) this.announce(notice.id, notice)
      // Every connection is closed: none has a peer any more.
      this.peerCertificates.clear()
      this.endpoints.clear()
      this.dialers.clear()
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

/** The third argument of a `'disconnect'` event. */
export interface DisconnectInfo {
  /**
   * A dialled id with `reconnect`: it connects again, keeping its id; envelopes sent
   * meanwhile wait in its queue, and those its connection had not written go first.
   */
  willReconnect: boolean
  /**
   * Of the envelopes written on the connection, how many the peer's system had not
   * acknowledged when it ended (at most: counted by whole writes). They may be lost: they
   * are not sent again. In process, those the peer had not taken. `null` where the system
   * does not tell (TLS, Unix sockets; TCP on platforms other than Linux).
   */
  unacknowledged: number | null
}

/** The second argument of a `'reconnecting'` event. */
export interface ReconnectingInfo {
  /** The attempt about to be made, counted from 1 since the last connection. */
  attempt: number
  /** Milliseconds before it. */
  delay: number
  /** Why the connection or the last attempt ended. */
  error: Error
}

/** The events of a {@link Mesh}. */
export interface MeshEvents {
  /** A connection left by itself (see {@link DisconnectInfo}). */
  disconnect: [id: number, error: DisconnectError, info: DisconnectInfo]
  /** A dialled id has its (next) connection. */
  connect: [id: number]
  /** A dialled id waits before its next attempt. */
  reconnecting: [id: number, info: ReconnectingInfo]
}

/** Options of {@link Mesh}. */
export interface MeshOptions {
  /**
   * Ends a connection from which nothing arrives for this many milliseconds: a
   * `'disconnect'` of kind `Timeout`, between the timeout and a quarter more after its
   * last byte. No frame is sent for it: the peer must speak often enough (or use TCP
   * keepalive, `keepAlive` of the TCP transport, for peers that may stay quiet).
   */
  idleTimeout?: number
}

/** What a connection, or a whole mesh, carried and holds (see {@link Mesh.stats}). */
export interface Traffic {
  /** Frames received (read and decoded, whether or not `recv` took them yet). */
  framesIn: number
  /** Bytes read, headers included (for TLS, the plaintext). */
  bytesIn: number
  /** Frames written in full. */
  framesOut: number
  /** Bytes written, headers included (for TLS, the plaintext). */
  bytesOut: number
  /** Frames accepted and not yet written in full (outgoing queues and the reactor's backlog). */
  queuedFrames: number
  /** Their bytes, headers included. */
  queuedBytes: number
  /** Frames read and held back because the mesh's incoming queue is full. */
  unreceived: number
}

/** What {@link Mesh.stats} says of one connection. */
export interface ConnectionStats extends Traffic {
  id: number
  /** `'connecting'` (a dialled id between connections), `'connected'`, or `'ending'` (after `end`). */
  state: 'connecting' | 'connected' | 'ending'
  /** Made by `dial`: its counts span its connections. */
  dialled: boolean
  /** The peer's endpoint; null while connecting. */
  remoteEndpoint: string | null
  localEndpoint: string | null
  /** The TLS peer certificate's SHA-256 fingerprint, if it presented one. */
  fingerprint256: string | null
  /** When its current connection joined; null while connecting. */
  connectedSince: Date | null
  /**
   * Reading from this peer is paused: frames it sent wait for room in the mesh's incoming
   * queue (read and held, or still in the socket while the queue is full). TCP then pushes
   * back on the peer.
   */
  paused: boolean
}

/**
 * What {@link Mesh.stats} says of the whole mesh: the frames and bytes in and out over its
 * life (they never go back when a connection leaves), and what waits now over every
 * connection.
 */
export interface MeshStats extends Traffic {
  /** Ids in the mesh (connected, connecting, ending). */
  connections: number
  /** Of those, dialled ids between connections. */
  connecting: number
  /** Of those, carrying traffic. */
  connected: number
  /** Of those, ending (after `end`). */
  ending: number
  /** Envelopes in the incoming queue, not yet received. */
  incoming: number
}

const STATES = ['connecting', 'connected', 'ending'] as const

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
 * A mesh keeps the process alive until it is shut down, like a server, and is held until
 * then even if the program keeps no reference to it; after `unref()` only a pending
 * receive (or `sendWait`, `remove`, `end`) keeps the process alive, and collecting the last
 * handle of an unref'd mesh shuts it down. Connections the reactor
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
  constructor(incomingCapacity: number, outgoingCapacity: number, options?: MeshOptions)
  /** @internal */
  constructor(incomingCapacity: number | MeshState, outgoingCapacity?: number, options?: MeshOptions)
  constructor(incomingCapacity: number | MeshState, outgoingCapacity?: number, options?: MeshOptions) {
    super()
    if (incomingCapacity instanceof MeshState) {
      this.#state = incomingCapacity
    } else {
      const incoming = checkCount(incomingCapacity, 'incomingCapacity', 1, 0xffff_ffff)
      const outgoing = checkCount(outgoingCapacity, 'outgoingCapacity', 1, 0xffff_ffff)
      const { idleTimeout } = checkOptions<MeshOptions>(options)
      if (idleTimeout !== undefined) {
        checkTimeout(idleTimeout, 'options.idleTimeout')
        if (idleTimeout === 0) throw new RangeError('options.idleTimeout must be longer than 0 ms')
      }
      let handle: native.NativeMesh
      try {
        handle = new native.NativeMesh(incoming, outgoing, idleTimeout)
      } catch (error) {
        // Out of descriptors or threads: a Node-style system error (`code: 'EMFILE'`).
        throw systemError(error, 'mesh')
      }
      this.#state = new MeshState(handle)
    }
    this.#state.handles.add(new WeakRef(this))
    if (!this.#state.shutdownCalled) {
      this.#state.refs++
      running.add(this)
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
      this.#state.joined(id, connection, false, 0)
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
    state.endpoints.delete(id)
    const dialer = state.dialers.get(id)
    if (dialer !== undefined) {
      // A dialled id that waits for a connection leaves with a 'disconnect' that hands
      // back what waits for it; this rejects with NotFound.
      dialer.stop()
      state.dialers.delete(id)
    }
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
   * Dials `endpoint` and returns the id at once; the mesh connects in the background
   * (through `options.transport`). Sends to the id are queued (up to `outgoingCapacity`;
   * `Full` beyond) until it connects. With `options.reconnect`, a connection that ends is
   * replaced under the same id, after a backoff with jitter: `'disconnect'` says
   * `willReconnect`, `'reconnecting'` announces each wait, `'connect'` each connection.
   *
   * Delivery across a reconnect: envelopes accepted and not yet written when a connection
   * ends go out first, in order, on the next one, and are never written twice. Envelopes
   * written to the lost connection are not sent again: the peer got them unless the
   * connection failed before its system acknowledged them; `'disconnect'`'s
   * `info.unacknowledged` counts those (at most). For end-to-end delivery, acknowledge in
   * your protocol.
   *
   * Without `reconnect`, one attempt: if it fails, or when the connection ends, the id
   * leaves with a `'disconnect'` that hands back what waited for it (kind `IoError` with
   * the attempt's error as `cause`, for a dial that never connected). Throws `ConnectError`
   * kind `InvalidEndpoint` for an endpoint the transport does not take, `AddError` kind
   * `Shutdown` once shut down.
   */
  dial(endpoint: string, options?: DialOptions): number {
    checkString(endpoint, 'endpoint')
    const checked = checkDialOptions(options, defaultTransport)
    if (!checked.transport.accepts(endpoint)) {
      throw new ConnectError(ConnectErrorKind.InvalidEndpoint, `the transport does not take the endpoint ${endpoint}`)
    }
    const state = this.#state
    const id = state.shutdownCalled ? -1 : state.native.reserve(checked.maxFrameSize)
    if (id < 0) throw new AddError(AddErrorKind.Shutdown, 'the mesh has shut down')
    const dialer = new Dialer(state.dialHost, id, endpoint, checked)
    state.dialers.set(id, dialer)
    dialer.start()
    return id
  }

  /**
   * Ends connection `id` gracefully: sends to it are refused from now on (`Disconnected`),
   * what was queued before is written, then the write side is closed (FIN; TLS sends
   * `close_notify` first) and the promise resolves. The peer reads every envelope, then
   * the end of the stream. The connection still receives until the peer closes its side,
   * then leaves with a `'disconnect'` of kind `Eof` (or `Timeout`, with `idleTimeout`).
   *
   * Rejects with the `DisconnectError` of its `'disconnect'` if the connection fails first
   * (what it had not written is in `error.unsent`; a peer that closed its side first, once
   * everything was written, counts as ended), and with `RemoveError` kind `NotFound` for an
   * id not in the mesh. A dialled id stops reconnecting; one that has no
   * connection leaves at once, handing back what waited for it.
   */
  end(id: number): Promise<void> {
    try {
      checkId(id)
    } catch (error) {
      return Promise.reject(error)
    }
    const state = this.#state
    state.outbox.flush()
    const dialer = state.dialers.get(id)
    dialer?.stop()
    const ending = state.native.beginEnd(id)
    // Its queue is closed now: the next send asks native code, which refuses it.
    state.outbox.forget(id)
    if (ending === null) return Promise.reject(new RemoveError(RemoveErrorKind.NotFound, `no connection with id ${id}`))
    return new Promise((resolve, reject) => {
      state.endings.push({ ending, id, resolve, reject })
      state.hold()
      retain()
    })
  }

  /**
   * Ends every connection gracefully (as `end`), waits until each has written what was
   * queued, then shuts the mesh down. Rejects, after the shutdown, with an `AggregateError`
   * of the ends that failed (each `DisconnectError` hands back what it had not written).
   */
  async close(): Promise<void> {
    const state = this.#state
    if (state.shutdownCalled) return
    for (const dialer of state.dialers.values()) dialer.stop()
    const ends = this.ids().map((id) => this.end(id))
    const settled = await Promise.allSettled(ends)
    this.shutdown()
    const failed = settled
      .filter((result): result is PromiseRejectedResult => result.status === 'rejected')
      .map((result) => result.reason as Error)
      .filter((error) => !(error instanceof RemoveError))
    if (failed.length > 0)
      throw new AggregateError(failed, `${failed.length} connection(s) failed before they were ended`)
  }

  /** How many connections the mesh has (dialled ids between connections included). */
  get size(): number {
    return this.#state.shutdownCalled ? 0 : this.#state.native.size
  }

  /** The ids of the mesh's connections, ascending. */
  ids(): number[] {
    return this.#state.shutdownCalled ? [] : this.#state.native.ids()
  }

  /**
   * What connection `id` has carried and what waits in it (null for an id not in the
   * mesh); without an id, the totals of the mesh. One native call; the counters are kept
   * by the reactor as it works, each exact as of a moment ago.
   */
  stats(): MeshStats
  stats(id: number): ConnectionStats | null
  stats(id?: number): ConnectionStats | MeshStats | null {
    const state = this.#state
    if (id === undefined) {
      // Sends of this turn are counted as queued.
      if (!state.shutdownCalled) state.outbox.flush()
      const values = state.shutdownCalled ? null : state.native.totals()
      const at = (i: number) => (values === null ? 0 : (values[i] as number))
      return {
        connections: at(8),
        connecting: at(9),
        connected: at(10),
        ending: at(11),
        framesIn: at(0),
        bytesIn: at(1),
        framesOut: at(2),
        bytesOut: at(3),
        queuedFrames: at(12) + at(4),
        queuedBytes: at(13) + at(5),
        unreceived: at(6),
        incoming: at(7) + state.inbox.buffered,
      }
    }
    checkId(id)
    if (state.shutdownCalled) return null
    // Sends of this turn are counted as queued.
    state.outbox.flush()
    const values = state.native.stats(id)
    if (values === null) return null
    const endpoints = state.endpoints.get(id)
    const since = values[2] as number
    const unreceived = values[9] as number
    return {
      id,
      state: STATES[values[0] as number] ?? 'connected',
      dialled: values[1] === 1,
      remoteEndpoint: endpoints?.remoteEndpoint ?? null,
      localEndpoint: endpoints?.localEndpoint ?? null,
      fingerprint256: state.peerCertificates.get(id)?.fingerprint256 ?? null,
      connectedSince: since === 0 ? null : new Date(since),
      framesIn: values[3] as number,
      bytesIn: values[4] as number,
      framesOut: values[5] as number,
      bytesOut: values[6] as number,
      queuedFrames: (values[10] as number) + (values[7] as number),
      queuedBytes: (values[11] as number) + (values[8] as number),
      unreceived,
      paused: values[12] === 1,
    }
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
    for (const ref of this.#state.handles) {
      const handle = ref.deref()
      if (handle !== undefined) running.delete(handle)
    }
    this.#state.shutdown()
    // The reactor is joined: no wake will come for this mesh again.
    forget(this.#state.key)
  }

  /** Keeps the process alive while the mesh runs (the default). */
  ref(): this {
    if (!this.#refed.value && !this.#state.shutdownCalled) {
      this.#refed.value = true
      this.#state.refs++
      running.add(this)
      retain()
    }
    return this
  }

  /** Lets the process exit while the mesh is idle; a pending receive still keeps it alive. */
  unref(): this {
    if (this.#refed.value && !this.#state.shutdownCalled) {
      this.#refed.value = false
      this.#state.refs--
      running.delete(this)
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
