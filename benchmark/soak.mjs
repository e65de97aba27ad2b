// The soak test: one Mesh (the system under test) serving many connections at full rate
// with churn, for minutes or hours, with exact accounting of every envelope and the RSS of
// its process sampled every second.
//
//   npm run soak -- [--minutes N] [--connections N] [--payload BYTES] [--peers wiremesh,net] [--seed N]
//   node benchmark/soak.mjs --minutes 30
//
// --minutes: how long connections are opened (default 1; fractions allowed), then a wind-down
// in which no connection is replaced and every one closes at its time. --connections: the
// pool, shared by the peers (default 128). --payload: bytes per data envelope (default 64, at
// least 16). --peers: the peer processes (default `wiremesh,net`: one of each).
//
// Processes. This process holds one Mesh and a listener. The peers are child processes
// (this file again, with --role=peer): `wiremesh` connects with TcpTransport and runs its own
// Mesh; `net` is plain node:net with the 4-byte big-endian length framing. Each keeps its share
// of the pool connected: a connection says hello (its key, its close mode, its lifetime), both
// sides then stream sequence-numbered envelopes to each other as fast as backpressure allows,
// and after 0.5-5 s one side closes it; once it is closed, the peer opens a new one.
//
// Close modes, by turns (a connection's mode is in its hello, so only one side ever starts a
// close and the accounting is exact):
//   mesh-graceful   the mesh side stops, sends END(count), receives until END_ACK(count), then
//                   `mesh.remove(id)` and `connection.disconnect()`; the peer sees the end.
//   mesh-remove     the mesh side calls `mesh.remove(id)` in the middle of the stream, then on
//                   the connection handed back: `send(END)` (its unwritten frames go first) and
//                   `recv()` (the frames read but not received come first) up to 256 frames or
//                   END_ACK; if END_ACK has not come, `mesh.add()` takes the connection again
//                   (a new id) and the rest arrives through the mesh until END_ACK; then
//                   `disconnect()`. The envelopes the reactor had read before the removal
//                   still come out of the mesh under the old id, even after remove() resolved:
//                   they are checked as a prefix of what the connection then gives.
//   peer-graceful   the same as mesh-graceful, started by the peer; the mesh side sees the end
//                   of the stream ('disconnect' Eof, nothing unsent).
//   peer-remove     (wiremesh peer) the same as mesh-remove, started by the peer.
//   peer-halfclose  (net peer) the peer stops, sends END and half-closes (FIN), and reads
//                   until the end of the stream; the mesh side streams on until its 'disconnect'
//                   (Eof), which hands back in `error.unsent` what it had not written.
//
// Accounting. `sent` counts the data envelopes a sender's `send()`/`sendWait()` accepted (a
// net peer: the frames it wrote), `received` those a receiver got (each checked: its
// connection, its sequence number exactly the next, its bytes), `handedBack` those the mesh
// gave back after accepting them ('disconnect' `error.unsent`, shutdown). A SendError at the
// call (the envelope is in `error.envelope`) is `refused`: never accepted, never counted as
// sent. Per direction lost = sent - received - handedBack; the run fails (exit code 1) unless
// both are 0, every connection's two records agree, and nothing was out of order or corrupt.
//
// Output: a progress line every 10 s (every minute for runs over 5 minutes), a summary, and a
// last line with the result as one JSON object. The RSS slope is the least-squares fit of this
// process's RSS, sampled every second, after the first 10% of the run (warm-up).
import { fork } from 'node:child_process'
import net from 'node:net'
import os from 'node:os'
import { setImmediate as immediate } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

import wiremesh from '../index.js'

const { DisconnectErrorKind, Envelope, Mesh, RecvError, RecvErrorKind, SendError, SendErrorKind, TcpTransport } =
  wiremesh

const self = fileURLToPath(import.meta.url)

// ---------------------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(arg)}`)
    const eq = arg.indexOf('=')
    if (eq > 0) out[arg.slice(2, eq)] = arg.slice(eq + 1)
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[arg.slice(2)] = argv[++i]
    else out[arg.slice(2)] = 'true'
  }
  return out
}

function numberArg(args, name, fallback, { min = 0, integer = false } = {}) {
  if (args[name] === undefined) return fallback
  const value = Number(args[name])
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new Error(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, not ${args[name]}`)
  }
  return value
}

// ---------------------------------------------------------------------------------------
// The protocol between the mesh and its peers
//
// data      [1][0][0][0][seq u32][key32 u32] ... [seq & 0xff]   (--payload bytes)
// END       [2][0][0][0][count u32][key32 u32]                    (12 bytes)
// END_ACK   [3][0][0][0][count u32][key32 u32]                    (12 bytes)
// hello     [4][mode][0][0][key32 u32][peer u32][n u32][lifetime ms u32]   (20 bytes)
//
// count: the data envelopes the sender of END/END_ACK had sent on the connection, all of them
// before it on the wire. key32 names the connection, so a frame on the wrong one is seen.

const DATA = 1
const END = 2
const END_ACK = 3
const HELLO = 4
const CONTROL_LENGTH = 12
const HELLO_LENGTH = 20
const MODES = ['mesh-graceful', 'mesh-remove', 'peer-graceful', 'peer-remove', 'peer-halfclose']
const PEER_MODES = {
  wiremesh: ['mesh-graceful', 'mesh-remove', 'peer-graceful', 'peer-remove'],
  net: ['mesh-graceful', 'mesh-remove', 'peer-graceful', 'peer-halfclose'],
}
const LIFETIME_MIN = 500
const LIFETIME_MAX = 5000
/** Envelopes a mesh sender queues before it yields to the event loop. */
const BURST = 64
/** Frames a net peer writes at once. */
const NET_BATCH = 64
/** A connection closing (or open) longer than this is reported as stuck. */
const STUCK_MS = 30_000
/** Frames a removed connection's own recv takes before it joins the mesh again. */
const RECV_AFTER_REMOVE = 256
/** Incoming and per-connection outgoing capacities of every mesh. */
const INCOMING_CAPACITY = 4096
const OUTGOING_CAPACITY = 256

const keyName = (peer, n) => `${peer}:${n}`
const key32Of = (peer, n) => ((peer << 24) ^ n) >>> 0

function dataPayload(size, key32, seq) {
  const payload = Buffer.allocUnsafe(size)
  payload.writeUInt32BE(DATA << 24, 0)
  payload.writeUInt32BE(seq, 4)
  payload.writeUInt32BE(key32, 8)
  payload[size - 1] = seq & 0xff
  return payload
}

function controlPayload(type, key32, count) {
  const payload = Buffer.alloc(CONTROL_LENGTH)
  payload[0] = type
  payload.writeUInt32BE(count, 4)
  payload.writeUInt32BE(key32, 8)
  return payload
}

function helloPayload(mode, key32, peer, n, lifetime) {
  const payload = Buffer.alloc(HELLO_LENGTH)
  payload[0] = HELLO
  payload[1] = MODES.indexOf(mode)
  payload.writeUInt32BE(key32, 4)
  payload.writeUInt32BE(peer, 8)
  payload.writeUInt32BE(n, 12)
  payload.writeUInt32BE(lifetime, 16)
  return payload
}

function parseHello(payload) {
  if (payload.length !== HELLO_LENGTH || payload[0] !== HELLO || payload[1] >= MODES.length) return null
  const peer = payload.readUInt32BE(8)
  const n = payload.readUInt32BE(12)
  return {
    mode: MODES[payload[1]],
    key32: payload.readUInt32BE(4),
    key: keyName(peer, n),
    lifetime: payload.readUInt32BE(16),
  }
}

function frame(payload) {
  const out = Buffer.allocUnsafe(4 + payload.length)
  out.writeUInt32BE(payload.length, 0)
  payload.copy(out, 4)
  return out
}

/** A small seeded generator (mulberry32), so that a run's lifetimes can be repeated. */
function random(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Error reports: all counted, the first ones printed (a broken run would print millions). */
class Errors {
  constructor(name, print) {
    this.name = name
    this.print = print
    this.count = 0
  }

  add(message) {
    this.count++
    if (this.count <= 30) this.print(`${this.name}: ${message}`)
    else if (this.count === 31) this.print(`${this.name}: (more errors: only counted from now on)`)
  }
}

// ---------------------------------------------------------------------------------------
// One side of many connections on a Mesh: the mesh under test, and the wiremesh peer

class Link {
  constructor(id, key, key32, mode, initiator) {
    this.id = id
    this.key = key
    this.key32 = key32
    this.mode = mode
    this.initiator = initiator
    this.state = 'streaming'
    this.createdAt = Date.now()
    this.closingSince = 0
    // Outgoing
    this.out = 'stream' // 'stream' | 'end' (send `control`, then stop) | 'stop'
    this.control = 0
    this.sent = 0
    this.handedBack = 0
    this.refused = 0
    this.unsentSeqs = []
    this.senderDone = false
    this.senderPromise = null
    // Incoming: through the mesh, then (after our own remove) through the connection
    this.received = 0
    this.meshNext = 0
    this.connStart = -1
    this.connNext = 0
    this.peerCount = -1
    this.removedByUs = false
    this.readdedId = -1
    this.removeResolved = false
    // The end
    this.ended = false
    this.finished = false
    this.timer = null
    this.waitTimer = null
    this.waitExpired = false
    this.stuckReported = false
  }

  describe() {
    return (
      `link ${this.key} (${this.mode}, id ${this.id}, ${this.state}; sent ${this.sent}, received ${this.received}, ` +
      `mesh path ${this.meshNext}, connection path ${this.connStart}..${this.connNext}` +
      `${this.readdedId >= 0 ? ` (then id ${this.readdedId})` : ''}, peer count ${this.peerCount}, ` +
      `sender ${this.senderDone ? 'done' : this.out}, ended ${this.ended})`
    )
  }
}

class MeshSide {
  /**
   * hooks: onClosing(link) when a connection starts closing (either side), onFinished(record)
   * when it is over and checked, print(line).
   */
  constructor(mesh, name, size, hooks) {
    this.mesh = mesh
    this.name = name
    this.size = size
    this.hooks = hooks
    this.links = new Map()
    this.errors = new Errors(name, hooks.print)
    this.sent = 0
    this.received = 0
    this.handedBack = 0
    this.refused = 0
    this.finished = 0
    this.opened = 0
    this.lateAfterRemove = 0
    mesh.on('disconnect', (id, error) => this.onDisconnect(id, error))
  }

  error(link, message) {
    this.errors.add(link ? `${link.describe()}: ${message}` : message)
  }

  /** Takes every envelope until the mesh shuts down. */
  async receive() {
    for (;;) {
      let batch
      try {
        batch = await this.mesh.recvBatch(1024)
      } catch (error) {
        if (error instanceof RecvError && error.kind === RecvErrorKind.Shutdown) return
        throw error
      }
      for (let i = 0; i < batch.length; i++) this.onMeshEnvelope(batch[i].id, batch[i].payload)
    }
  }

  add(id, key, key32, mode, initiator, lifetime) {
    const link = new Link(id, key, key32, mode, initiator)
    this.links.set(id, link)
    this.opened++
    link.senderPromise = this.sender(link)
      .catch((error) => this.error(link, `sender: ${error?.stack ?? error}`))
      .finally(() => {
        link.senderDone = true
        this.tryFinalize(link)
      })
    if (initiator) link.timer = setTimeout(() => this.initiate(link), lifetime)
    return link
  }

  /** Streams data envelopes at full rate until told to stop; then END or END_ACK if asked. */
  async sender(link) {
    const { mesh, size } = this
    for (;;) {
      if (link.out === 'stop') return
      if (link.out === 'end') return this.sendControl(link)
      let waited = false
      for (let i = 0; i < BURST && link.out === 'stream'; i++) {
        const envelope = new Envelope(link.id, dataPayload(size, link.key32, link.sent))
        try {
          mesh.send(envelope)
        } catch (error) {
          if (!(error instanceof SendError)) throw error
          if (error.kind !== SendErrorKind.Full) return this.refusedSend(link, error, envelope)
          try {
            await mesh.sendWait(envelope)
          } catch (error) {
            if (!(error instanceof SendError)) throw error
            return this.refusedSend(link, error, envelope)
          }
          waited = true
        }
        link.sent++
        this.sent++
        if (waited) break
      }
      if (!waited) await immediate()
    }
  }

  /** A send refused at the call: the envelope is handed back there, it was never accepted. */
  refusedSend(link, error, envelope) {
    link.refused++
    this.refused++
    if (error.envelope !== envelope) this.error(link, `${error.code} did not hand back the envelope`)
    if (error.kind !== SendErrorKind.Disconnected) this.error(link, `send refused: ${error.code}`)
    // Disconnected: the connection left (our removal, or its end); the rest is checked there.
  }

  async sendControl(link) {
    const envelope = new Envelope(link.id, controlPayload(link.control, link.key32, link.sent))
    try {
      await this.mesh.sendWait(envelope)
      if (link.control === END_ACK) link.state = link.state.replace('sending END_ACK', 'sent END_ACK')
    } catch (error) {
      this.error(link, `${link.control === END ? 'END' : 'END_ACK'} refused: ${error.code ?? error}`)
    }
  }

  /** This side's turn to close the connection (its lifetime is over). */
  initiate(link) {
    link.timer = null
    if (link.finished || link.state !== 'streaming') return
    link.closingSince = Date.now()
    this.hooks.onClosing(link)
    if (link.mode.endsWith('graceful')) {
      link.state = 'sent END'
      link.control = END
      link.out = 'end'
    } else {
      this.closeByRemove(link)
    }
  }

  /** mesh-remove / peer-remove: take the connection out mid-stream and finish on it. */
  async closeByRemove(link) {
    link.state = 'removing'
    link.out = 'stop'
    link.removedByUs = true
    let connection
    try {
      connection = await this.mesh.remove(link.id)
    } catch (error) {
      this.error(link, `remove: ${error.code ?? error}`)
      link.ended = true
      return this.tryFinalize(link)
    }
    link.removeResolved = true
    // A sendWait under way when remove was called is settled by now or soon (refused).
    await link.senderPromise
    link.state = 'removed, sending END'
    let again = true
    try {
      // Its unwritten frames go first.
      await connection.send(controlPayload(END, link.key32, link.sent), { timeout: STUCK_MS })
      // Its frames read but not received come first. One frame a call is slow on a busy
      // event loop (a turn each), and the other side streams until it reads END: after a
      // few frames, the connection joins the mesh again for the rest.
      link.state = 'removed, receiving until END_ACK'
      for (let i = 0; i < RECV_AFTER_REMOVE; i++) {
        const payload = await connection.recv({ timeout: STUCK_MS })
        if (this.onConnectionPayload(link, payload)) {
          link.state = 'removed, got END_ACK'
          again = false
          break
        }
      }
    } catch (error) {
      this.error(link, `on the removed connection: ${error.code ?? error}`)
      again = false
    }
    if (again) {
      try {
        link.readdedId = this.mesh.add(connection)
        this.links.set(link.readdedId, link)
        link.state = `added again as id ${link.readdedId}, receiving until END_ACK`
        return // END_ACK through the mesh on the new id: closeAfterAck
      } catch (error) {
        this.error(link, `adding the removed connection again: ${error.code ?? error}`)
      }
    }
    connection.disconnect()
    link.ended = true
    this.tryFinalize(link)
  }

  /** mesh-graceful / peer-graceful: END_ACK came through the mesh; take the connection out and close it. */
  async closeAfterAck(link) {
    link.state = 'removing after END_ACK'
    await link.senderPromise
    try {
      const connection = await this.mesh.remove(link.readdedId >= 0 ? link.readdedId : link.id)
      connection.disconnect()
    } catch (error) {
      this.error(link, `remove after END_ACK: ${error.code ?? error}`)
    }
    link.state = 'closed after END_ACK'
    link.ended = true
    this.tryFinalize(link)
  }

  onData(link, payload, viaMesh) {
    const seq = payload.readUInt32BE(4)
    if (
      payload.length !== this.size ||
      payload.readUInt32BE(8) !== link.key32 ||
      payload[payload.length - 1] !== (seq & 0xff)
    ) {
      this.error(
        link,
        `corrupt data envelope (${viaMesh ? 'mesh' : 'connection'}): ${payload.subarray(0, 16).toString('hex')}…, length ${payload.length}`,
      )
    }
    if (viaMesh) {
      if (link.connStart >= 0 && seq >= link.connStart) {
        this.error(link, `the mesh delivered seq ${seq} after the removed connection gave ${link.connStart}`)
      }
      if (seq !== link.meshNext)
        this.error(link, `out of order through the mesh: seq ${seq}, expected ${link.meshNext}`)
      link.meshNext = seq + 1
      // Read by the reactor before the removal, still in the incoming stream when it resolved.
      if (link.removeResolved) this.lateAfterRemove++
    } else {
      if (link.connStart < 0) {
        link.connStart = link.connNext = seq
        if (seq < link.meshNext) this.error(link, `the removed connection gave seq ${seq}, the mesh had delivered it`)
      }
      if (seq !== link.connNext) {
        this.error(link, `out of order through the connection: seq ${seq}, expected ${link.connNext}`)
      }
      link.connNext = seq + 1
    }
    link.received++
    this.received++
  }

  onMeshEnvelope(id, payload) {
    const link = this.links.get(id)
    if (link === undefined) {
      this.error(null, `an envelope for id ${id}, which has no connection (type ${payload[0]})`)
      return
    }
    const type = payload[0]
    if (id === link.readdedId) {
      // After our remove and the connection's own recv: the same path, in order.
      if (this.onConnectionPayload(link, payload)) this.closeAfterAck(link)
      else if (link.waitTimer !== null) this.tryFinalize(link)
      return
    }
    if (type === DATA) {
      this.onData(link, payload, true)
      if (link.waitTimer !== null) this.tryFinalize(link)
      return
    }
    if (payload.length !== CONTROL_LENGTH || payload.readUInt32BE(8) !== link.key32) {
      this.error(link, `unexpected envelope ${payload.subarray(0, 16).toString('hex')}, length ${payload.length}`)
      return
    }
    const count = payload.readUInt32BE(4)
    if (type === END) {
      if (link.initiator || link.state !== 'streaming') {
        this.error(link, 'END, but this side was not waiting for one')
        return
      }
      link.peerCount = count
      link.closingSince = Date.now()
      this.hooks.onClosing(link)
      if (link.mode === 'peer-halfclose') {
        // Stream on: the peer reads until the end, and the mesh hands back what it did not write.
        link.state = 'peer half-closed'
      } else {
        link.state = 'sending END_ACK'
        link.control = END_ACK
        link.out = 'end'
      }
    } else if (type === END_ACK) {
      if (!link.initiator || link.state !== 'sent END') {
        this.error(link, 'END_ACK through the mesh, but this side was not waiting for one there')
        return
      }
      link.peerCount = count
      this.closeAfterAck(link)
    } else {
      this.error(link, `unexpected envelope type ${type}`)
    }
  }

  /** A frame through the removed connection's own recv; true at END_ACK. */
  onConnectionPayload(link, payload) {
    const type = payload[0]
    if (type === DATA) {
      this.onData(link, payload, false)
      return false
    }
    if (type === END_ACK && payload.length === CONTROL_LENGTH && payload.readUInt32BE(8) === link.key32) {
      link.peerCount = payload.readUInt32BE(4)
      return true
    }
    this.error(link, `unexpected frame on the removed connection: ${payload.subarray(0, 16).toString('hex')}`)
    return false
  }

  onDisconnect(id, error) {
    const link = this.links.get(id)
    if (link === undefined) {
      this.error(null, `'disconnect' for id ${id}, which has no connection: ${error.code}`)
      return
    }
    const expected =
      link.mode === 'peer-halfclose'
        ? link.state === 'peer half-closed'
        : !link.initiator && (link.state === 'sending END_ACK' || link.state === 'sent END_ACK')
    if (error.kind !== DisconnectErrorKind.Eof || !expected || link.ended) {
      this.error(link, `unexpected 'disconnect' ${error.code} (${error.message})`)
    }
    for (const envelope of error.unsent) {
      const payload = envelope.payload
      if (envelope.id !== id) this.error(link, `an unsent envelope for id ${envelope.id}`)
      if (payload[0] === DATA && payload.length === this.size && payload.readUInt32BE(8) === link.key32) {
        link.unsentSeqs.push(payload.readUInt32BE(4))
        link.handedBack++
        this.handedBack++
      } else {
        this.error(link, `handed back: ${payload.subarray(0, 16).toString('hex')} (not one of its data envelopes)`)
      }
    }
    link.state += ', disconnected'
    link.out = 'stop'
    link.ended = true
    this.tryFinalize(link)
  }

  /** Once both directions are over: checks the connection and reports its record. */
  tryFinalize(link) {
    if (link.finished || !link.senderDone || !link.ended) return
    // After our own remove, envelopes the reactor had delivered before it may still be on
    // their way through the mesh: wait for them (a while).
    if (link.removedByUs && link.peerCount >= 0 && link.received < link.peerCount && !link.waitExpired) {
      if (link.waitTimer === null) {
        link.waitTimer = setTimeout(() => {
          link.waitExpired = true
          this.tryFinalize(link)
        }, 10_000)
      }
      return
    }
    if (link.connStart >= 0 && link.meshNext !== link.connStart) {
      this.error(
        link,
        `the mesh delivered up to seq ${link.meshNext}, the removed connection started at ${link.connStart}`,
      )
    }
    if (link.peerCount < 0) this.error(link, 'no END or END_ACK count from the other side')
    else if (link.received !== link.peerCount) {
      this.error(link, `received ${link.received}, the other side sent ${link.peerCount}`)
    }
    const tail = link.sent - link.unsentSeqs.length
    if (link.unsentSeqs.some((seq, i) => seq !== tail + i)) {
      this.error(
        link,
        `handed back seqs ${link.unsentSeqs.slice(0, 5).join(',')}… are not the last ${link.unsentSeqs.length} sent`,
      )
    }
    if (link.timer !== null) clearTimeout(link.timer)
    if (link.waitTimer !== null) clearTimeout(link.waitTimer)
    link.finished = true
    this.links.delete(link.id)
    if (link.readdedId >= 0) this.links.delete(link.readdedId)
    this.finished++
    this.hooks.onFinished({
      key: link.key,
      mode: link.mode,
      sent: link.sent,
      received: link.received,
      handedBack: link.handedBack,
      refused: link.refused,
      closeMs: Date.now() - link.closingSince,
      viaConnection: link.connStart < 0 ? 0 : link.connNext - link.connStart,
    })
  }

  /** Connections closing (or open) for too long: reported once each. */
  checkStuck(now) {
    for (const link of this.links.values()) {
      const since = link.closingSince || link.createdAt
      if (!link.stuckReported && now - since > STUCK_MS + LIFETIME_MAX) {
        link.stuckReported = true
        this.error(link, `stuck for ${((now - since) / 1000).toFixed(0)} s`)
      }
    }
  }

  /** What shutdown handed back (it should find nothing: every connection is closed by then). */
  shutdown() {
    let handedBack = 0
    const onDisconnect = (id, error) => {
      handedBack += error.unsent.length
    }
    this.mesh.on('disconnect', onDisconnect)
    this.mesh.shutdown()
    return new Promise((resolve) =>
      setImmediate(() => {
        this.mesh.off('disconnect', onDisconnect)
        resolve(handedBack)
      }),
    )
  }
}

// ---------------------------------------------------------------------------------------
// The net peer: plain node:net sockets, 4-byte big-endian length framing

class NetSide {
  constructor(port, name, size, hooks) {
    this.port = port
    this.name = name
    this.size = size
    this.hooks = hooks
    this.links = new Map()
    this.errors = new Errors(name, hooks.print)
    this.sent = 0
    this.received = 0
    this.handedBack = 0
    this.refused = 0
    this.finished = 0
    this.opened = 0
  }

  error(link, message) {
    this.errors.add(
      link
        ? `net link ${link.key} (${link.mode}, ${link.state}; sent ${link.sent}, received ${link.received}, peer count ${link.peerCount}): ${message}`
        : message,
    )
  }

  /** Connects, says hello and starts streaming; resolves once connected. */
  open(key, key32, mode, lifetime, hello) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: this.port, allowHalfOpen: true, noDelay: true })
      const link = {
        key,
        key32,
        mode,
        initiator: mode.startsWith('peer-'),
        socket,
        state: 'connecting',
        createdAt: Date.now(),
        closingSince: 0,
        stopOut: false,
        sent: 0,
        received: 0,
        next: 0,
        peerCount: -1,
        rest: null,
        gotEof: false,
        timer: null,
        stuckReported: false,
      }
      this.links.set(key, link)
      this.opened++
      socket.once('connect', () => {
        link.state = 'streaming'
        socket.write(frame(hello))
        this.sender(link).catch((error) => this.error(link, `sender: ${error?.stack ?? error}`))
        if (link.initiator) link.timer = setTimeout(() => this.initiate(link), lifetime)
        resolve()
      })
      socket.on('data', (chunk) => this.onData(link, chunk))
      socket.on('end', () => this.onEnd(link))
      socket.on('error', (error) => {
        this.error(link, `socket error: ${error.code ?? error.message}`)
        if (link.state === 'connecting') reject(error)
      })
      socket.on('close', () => this.onClose(link))
    })
  }

  async sender(link) {
    const { size } = this
    const frameLength = 4 + size
    const socket = link.socket
    while (!link.stopOut && !socket.destroyed) {
      const batch = Buffer.allocUnsafe(NET_BATCH * frameLength)
      for (let i = 0, at = 0; i < NET_BATCH; i++, at += frameLength) {
        const seq = link.sent + i
        batch.writeUInt32BE(size, at)
        batch.writeUInt32BE(DATA << 24, at + 4)
        batch.writeUInt32BE(seq, at + 8)
        batch.writeUInt32BE(link.key32, at + 12)
        batch[at + 3 + size] = seq & 0xff
      }
      link.sent += NET_BATCH
      this.sent += NET_BATCH
      if (socket.write(batch)) await immediate()
      else {
        await new Promise((resolve) => {
          const done = () => {
            socket.off('drain', done)
            socket.off('close', done)
            resolve()
          }
          socket.on('drain', done)
          socket.on('close', done)
        })
      }
    }
  }

  initiate(link) {
    link.timer = null
    if (link.state !== 'streaming') return
    link.closingSince = Date.now()
    this.hooks.onClosing(link)
    link.stopOut = true
    link.socket.write(frame(controlPayload(END, link.key32, link.sent)))
    if (link.mode === 'peer-halfclose') {
      link.state = 'half-closed'
      link.socket.end()
    } else {
      link.state = 'sent END'
    }
  }

  onData(link, chunk) {
    let buffer = link.rest === null ? chunk : Buffer.concat([link.rest, chunk])
    let at = 0
    while (buffer.length - at >= 4) {
      const length = buffer.readUInt32BE(at)
      if (buffer.length - at < 4 + length) break
      this.onPayload(link, buffer.subarray(at + 4, at + 4 + length))
      at += 4 + length
    }
    link.rest = at < buffer.length ? buffer.subarray(at) : null
  }

  onPayload(link, payload) {
    const type = payload[0]
    if (type === DATA) {
      const seq = payload.readUInt32BE(4)
      if (
        payload.length !== this.size ||
        payload.readUInt32BE(8) !== link.key32 ||
        payload[payload.length - 1] !== (seq & 0xff)
      ) {
        this.error(link, `corrupt data frame: ${payload.subarray(0, 16).toString('hex')}…, length ${payload.length}`)
      }
      if (seq !== link.next) this.error(link, `out of order: seq ${seq}, expected ${link.next}`)
      link.next = seq + 1
      link.received++
      this.received++
      return
    }
    if (payload.length !== CONTROL_LENGTH || payload.readUInt32BE(8) !== link.key32) {
      this.error(link, `unexpected frame ${payload.subarray(0, 16).toString('hex')}, length ${payload.length}`)
      return
    }
    const count = payload.readUInt32BE(4)
    if (type === END && !link.initiator && link.state === 'streaming') {
      link.peerCount = count
      link.closingSince = Date.now()
      this.hooks.onClosing(link)
      link.stopOut = true
      link.socket.write(frame(controlPayload(END_ACK, link.key32, link.sent)))
      link.state = 'sent END_ACK'
    } else if (type === END_ACK && link.state === 'sent END') {
      link.peerCount = count
      link.state = 'got END_ACK, half-closed'
      link.socket.end()
    } else {
      this.error(link, `unexpected control frame ${type}`)
    }
  }

  onEnd(link) {
    link.gotEof = true
    const partial = link.rest === null ? 0 : link.rest.length
    // A half-written last frame is possible only where the mesh hands it back: after a half-close.
    if (partial > 0 && link.mode !== 'peer-halfclose') this.error(link, `${partial} bytes of a frame at the end`)
    const expected =
      link.state === 'half-closed' || link.state === 'got END_ACK, half-closed' || link.state === 'sent END_ACK'
    if (!expected) this.error(link, 'the mesh closed the connection unexpectedly')
    if (link.state === 'sent END_ACK') link.socket.end()
    link.state += ', end'
  }

  onClose(link) {
    if (link.timer !== null) clearTimeout(link.timer)
    if (!link.gotEof) this.error(link, 'closed without the end of the stream')
    if (link.mode === 'peer-halfclose') {
      // The mesh's side is checked by the parent: its sent = our received + its handed back.
    } else if (link.peerCount < 0) this.error(link, 'no END or END_ACK count from the mesh')
    else if (link.received !== link.peerCount)
      this.error(link, `received ${link.received}, the mesh sent ${link.peerCount}`)
    this.links.delete(link.key)
    this.finished++
    this.hooks.onFinished({
      key: link.key,
      mode: link.mode,
      sent: link.sent,
      received: link.received,
      handedBack: 0,
      refused: 0,
    })
  }

  checkStuck(now) {
    for (const link of this.links.values()) {
      const since = link.closingSince || link.createdAt
      if (!link.stuckReported && now - since > STUCK_MS + LIFETIME_MAX) {
        link.stuckReported = true
        this.error(link, `stuck for ${((now - since) / 1000).toFixed(0)} s`)
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// A peer process

async function runPeer() {
  const config = await new Promise((resolve) => process.once('message', resolve))
  const { index, kind, connections, payload, port, seed } = config
  const rand = random(seed)
  const modes = PEER_MODES[kind]
  const print = (line) => process.stderr.write(`[${kind} peer ${index}] ${line}\n`)
  let records = []
  let stopping = false
  let opening = 0
  let next = 0
  let openFailures = 0
  let leaving = false
  // The parent is gone: nothing to report to.
  process.on('disconnect', () => {
    if (!leaving) process.exit(3)
  })

  const hooks = {
    print,
    onClosing: () => {},
    // A connection is replaced once it is closed: the pool never holds more than its size.
    onFinished: (record) => {
      records.push(record)
      if (!stopping) openOne()
    },
  }
  let side
  let mesh = null
  let transport = null
  if (kind === 'wiremesh') {
    transport = new TcpTransport()
    mesh = new Mesh(INCOMING_CAPACITY, OUTGOING_CAPACITY)
    side = new MeshSide(mesh, `${kind} peer ${index}`, payload, hooks)
    side.receive().catch((error) => {
      print(`receive loop failed: ${error?.stack ?? error}`)
      process.exit(2)
    })
  } else {
    side = new NetSide(port, `${kind} peer ${index}`, payload, hooks)
  }

  async function openOne() {
    const n = next++
    const mode = modes[n % modes.length]
    const lifetime = Math.round(LIFETIME_MIN + rand() * (LIFETIME_MAX - LIFETIME_MIN))
    const key32 = key32Of(index, n)
    const key = keyName(index, n)
    const hello = helloPayload(mode, key32, index, n, lifetime)
    opening++
    try {
      if (kind === 'wiremesh') {
        const connection = await transport.connect(`127.0.0.1:${port}`, { timeout: STUCK_MS })
        await connection.send(hello, { timeout: STUCK_MS })
        const id = mesh.add(connection)
        side.add(id, key, key32, mode, mode.startsWith('peer-'), lifetime)
      } else {
        await side.open(key, key32, mode, lifetime, hello)
      }
    } catch (error) {
      openFailures++
      side.errors.add(`could not open connection ${key}: ${error?.code ?? error}`)
      if (!stopping) setTimeout(openOne, 100)
    } finally {
      opening--
    }
  }

  const stats = () => ({
    sent: side.sent,
    received: side.received,
    handedBack: side.handedBack,
    refused: side.refused,
    open: side.links.size,
    opened: side.opened,
    finished: side.finished,
    errors: side.errors.count,
    rss: process.memoryUsage.rss(),
  })
  const tick = setInterval(() => {
    side.checkStuck(Date.now())
    process.send({ type: 'stats', stats: stats(), records })
    records = []
  }, 1000)

  process.on('message', async (message) => {
    if (message.type === 'stop') {
      stopping = true
      const wait = setInterval(() => {
        if (side.links.size > 0 || opening > 0) return
        clearInterval(wait)
        clearInterval(tick)
        process.send({ type: 'done', stats: stats(), records })
        records = []
      }, 50)
    } else if (message.type === 'exit') {
      if (mesh !== null) {
        const handedBack = await side.shutdown()
        if (handedBack > 0) side.errors.add(`shutdown handed back ${handedBack} envelopes`)
      }
      process.send({ type: 'exited', errors: side.errors.count }, () => {
        leaving = true
        process.disconnect()
        // Everything is closed: the process must end by itself.
        setTimeout(() => {
          print('did not exit by itself within 5 s of closing everything')
          process.exit(4)
        }, 5000).unref()
      })
    }
  })

  for (let i = 0; i < connections; i++) openOne()
  process.send({ type: 'started' })
}

// ---------------------------------------------------------------------------------------
// The soak: this process holds the mesh under test

const MiB = 1024 * 1024
/** The peer processes, killed if this one fails. */
const children = new Set()
const fmt = (n) =>
  n >= 1e9
    ? `${(n / 1e9).toFixed(2)}G`
    : n >= 1e6
      ? `${(n / 1e6).toFixed(2)}M`
      : n >= 1e4
        ? `${(n / 1e3).toFixed(1)}k`
        : `${n}`

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length
  if (n < 2) return 0
  let sx = 0
  let sy = 0
  for (const [x, y] of points) {
    sx += x
    sy += y
  }
  const mx = sx / n
  const my = sy / n
  let num = 0
  let den = 0
  for (const [x, y] of points) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

async function runSoak(args) {
  const minutes = numberArg(args, 'minutes', 1, { min: 0.05 })
  const connections = numberArg(args, 'connections', 128, { min: 1, integer: true })
  const payload = numberArg(args, 'payload', 64, { min: 16, integer: true })
  const seed = numberArg(args, 'seed', Math.floor(Math.random() * 2 ** 31), { integer: true })
  const kinds = (args.peers ?? 'wiremesh,net').split(',').filter(Boolean)
  for (const kind of kinds) if (!PEER_MODES[kind]) throw new Error(`--peers: unknown peer ${kind} (wiremesh, net)`)
  if (connections < kinds.length) throw new Error(`--connections must be at least ${kinds.length}, one per peer`)
  const runMs = minutes * 60_000
  const progressMs = minutes > 5 ? 60_000 : 10_000
  const print = (line) => process.stderr.write(`${line}\n`)

  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  const shares = kinds.map((_, i) => Math.floor(connections / kinds.length) + (i < connections % kinds.length ? 1 : 0))
  console.log(
    `soak: ${minutes} min, ${connections} connections (${kinds.map((kind, i) => `${kind} peer ${shares[i]}`).join(', ')}), ` +
      `payload ${payload} B, seed ${seed}; ${os.cpus().length} CPUs (${cpu}), Node ${process.version}, pid ${process.pid}`,
  )

  // The system under test
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const port = Number(listener.endpoint.split(':').pop())
  const mesh = new Mesh(INCOMING_CAPACITY, OUTGOING_CAPACITY)

  // Per-connection records, from both sides, matched by key
  const pendingMesh = new Map()
  const pendingPeer = new Map()
  const byMode = {}
  let matched = 0
  let mismatched = 0
  const matchErrors = new Errors('check', print)
  const check = (ours, theirs) => {
    matched++
    byMode[ours.mode] = (byMode[ours.mode] ?? 0) + 1
    if (ours.mode !== theirs.mode) matchErrors.add(`${ours.key}: modes ${ours.mode} and ${theirs.mode}`)
    const toPeer = ours.sent - theirs.received - ours.handedBack
    const toMesh = theirs.sent - ours.received - theirs.handedBack
    if (toPeer !== 0 || toMesh !== 0) {
      mismatched++
      matchErrors.add(
        `${ours.key} (${ours.mode}): mesh -> peer lost ${toPeer}, peer -> mesh lost ${toMesh}; mesh ${JSON.stringify(ours)}, peer ${JSON.stringify(theirs)}`,
      )
    }
  }
  const closing = {}
  const onMeshRecord = (record) => {
    const c = (closing[record.mode] ??= { n: 0, ms: 0, maxMs: 0, viaConnection: 0 })
    c.n++
    c.ms += record.closeMs
    c.maxMs = Math.max(c.maxMs, record.closeMs)
    c.viaConnection += record.viaConnection
    const theirs = pendingPeer.get(record.key)
    if (theirs === undefined) pendingMesh.set(record.key, record)
    else {
      pendingPeer.delete(record.key)
      check(record, theirs)
    }
  }
  const onPeerRecord = (record) => {
    const ours = pendingMesh.get(record.key)
    if (ours === undefined) pendingPeer.set(record.key, record)
    else {
      pendingMesh.delete(record.key)
      check(ours, record)
    }
  }

  const side = new MeshSide(mesh, 'mesh', payload, { print, onClosing: () => {}, onFinished: onMeshRecord })
  const receiving = side.receive()

  // Connections: the hello first (the connection's own recv, before it joins the mesh)
  let handshakes = 0
  const admit = async (connection) => {
    handshakes++
    try {
      const hello = parseHello(await connection.recv({ timeout: STUCK_MS }))
      if (hello === null) {
        side.errors.add(`a connection from ${connection.remoteEndpoint} did not say hello`)
        connection.disconnect()
        return
      }
      const id = mesh.add(connection)
      side.add(id, hello.key, hello.key32, hello.mode, hello.mode.startsWith('mesh-'), hello.lifetime)
    } catch (error) {
      side.errors.add(`handshake with ${connection.remoteEndpoint}: ${error?.code ?? error}`)
      connection.disconnect()
    } finally {
      handshakes--
    }
  }
  const accepting = (async () => {
    for await (const connection of listener) admit(connection)
  })()

  // The peers
  const peers = kinds.map((kind, index) => {
    const child = fork(self, ['--role=peer'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.add(child)
    const peer = { kind, index, child, stats: null, done: false, exitRequested: false, exited: false, exit: null }
    child.on('message', (message) => {
      for (const record of message.records ?? []) onPeerRecord(record)
      if (message.stats) peer.stats = message.stats
      if (message.type === 'done') peer.done = true
      if (message.type === 'exited') peer.exited = true
    })
    child.on('exit', (code, signal) => {
      children.delete(child)
      peer.exit = { code, signal }
      if (!peer.exited && !peer.exitRequested) fatal(`${kind} peer ${index} exited (${code ?? signal}) before the end`)
    })
    child.send({ index, kind, connections: shares[index], payload, port, seed: seed + index })
    return peer
  })
  let failed = false
  function fatal(message) {
    if (failed) return
    failed = true
    print(`soak: ${message}; stopping`)
    for (const child of children) child.kill('SIGKILL')
    process.exit(1)
  }
  process.on('SIGINT', () => fatal('interrupted'))
  process.on('SIGTERM', () => fatal('terminated'))

  // RSS every second; progress; stalls and stuck connections
  const started = Date.now()
  const samples = []
  let lastProgress = { t: started, through: 0 }
  let lastMovement = { t: started, through: 0 }
  const through = () => side.sent + side.received
  const peersSum = (field) => peers.reduce((sum, peer) => sum + (peer.stats?.[field] ?? 0), 0)
  const sampler = setInterval(() => {
    const now = Date.now()
    samples.push([(now - started) / 60_000, process.memoryUsage.rss()])
    side.checkStuck(now)
    if (through() !== lastMovement.through) lastMovement = { t: now, through: through() }
    else if (now - lastMovement.t > STUCK_MS && side.links.size > 0) {
      for (const link of [...side.links.values()].slice(0, 10)) print(`  ${link.describe()}`)
      fatal(`nothing sent or received by the mesh for ${STUCK_MS / 1000} s with ${side.links.size} connections open`)
    }
  }, 1000)
  const progress = setInterval(() => {
    const now = Date.now()
    const rate = ((through() - lastProgress.through) * 1000) / (now - lastProgress.t)
    lastProgress = { t: now, through: through() }
    const rss = samples.length ? samples[samples.length - 1][1] : process.memoryUsage.rss()
    console.log(
      `[${String(Math.round((now - started) / 1000)).padStart(5)} s] ${side.links.size} open, ${side.finished} churned; ` +
        `mesh sent ${fmt(side.sent)} received ${fmt(side.received)} handed back ${fmt(side.handedBack)} refused ${side.refused}; ` +
        `${fmt(Math.round(rate))} envelopes/s through the mesh; RSS ${(rss / MiB).toFixed(1)} MiB ` +
        `(JS heap ${(process.memoryUsage().heapUsed / MiB).toFixed(0)} MiB); ` +
        `peers RSS ${peers.map((peer) => ((peer.stats?.rss ?? 0) / MiB).toFixed(0)).join('/')} MiB; ` +
        `errors ${side.errors.count + peersSum('errors') + matchErrors.count}`,
    )
  }, progressMs)

  // Run, then wind down: no more new connections, every one closes at its time
  await new Promise((resolve) => setTimeout(resolve, runMs))
  const runEnded = Date.now()
  const runSamples = samples.slice()
  for (const peer of peers) peer.child.send({ type: 'stop' })
  console.log(`[${String(Math.round((runEnded - started) / 1000)).padStart(5)} s] winding down`)
  const windDownLimit = Date.now() + 2 * STUCK_MS
  while (!(peers.every((peer) => peer.done) && side.links.size === 0 && handshakes === 0)) {
    if (Date.now() > windDownLimit) {
      for (const link of [...side.links.values()].slice(0, 20)) print(`  still open: ${link.describe()}`)
      print(`  peers done: ${peers.map((peer) => `${peer.kind} ${peer.done}`).join(', ')}`)
      side.errors.add(`the wind-down did not end within ${(2 * STUCK_MS) / 1000} s`)
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const ended = Date.now()
  clearInterval(sampler)
  clearInterval(progress)

  // Shut everything down
  const shutdownHandedBack = await side.shutdown()
  if (shutdownHandedBack > 0) side.errors.add(`shutdown handed back ${shutdownHandedBack} envelopes`)
  side.handedBack += shutdownHandedBack
  listener.close()
  await receiving
  await accepting
  for (const peer of peers) {
    peer.exitRequested = true
    if (!peer.exit) peer.child.send({ type: 'exit' })
  }
  await Promise.all(
    peers.map(
      (peer) =>
        new Promise((resolve) => {
          if (peer.exit) return resolve()
          const timer = setTimeout(() => {
            side.errors.add(`${peer.kind} peer ${peer.index} did not exit within 10 s: killed`)
            peer.exited = true
            peer.child.kill('SIGKILL')
          }, 10_000)
          peer.child.once('exit', () => {
            clearTimeout(timer)
            resolve()
          })
        }),
    ),
  )
  for (const peer of peers) {
    if (peer.exit.code !== 0)
      side.errors.add(`${peer.kind} peer ${peer.index} exited with ${peer.exit.code ?? peer.exit.signal}`)
  }
  if (pendingMesh.size || pendingPeer.size) {
    matchErrors.add(
      `connections reported by one side only: mesh ${[...pendingMesh.keys()].slice(0, 5).join(',')} (${pendingMesh.size}), ` +
        `peers ${[...pendingPeer.keys()].slice(0, 5).join(',')} (${pendingPeer.size})`,
    )
  }

  // The result
  const meshToPeers = {
    sent: side.sent,
    received: peersSum('received'),
    handedBack: side.handedBack,
  }
  meshToPeers.lost = meshToPeers.sent - meshToPeers.received - meshToPeers.handedBack
  const peersToMesh = {
    sent: peersSum('sent'),
    received: side.received,
    handedBack: peersSum('handedBack'),
  }
  peersToMesh.lost = peersToMesh.sent - peersToMesh.received - peersToMesh.handedBack
  const lost = meshToPeers.lost + peersToMesh.lost
  const errors = side.errors.count + peersSum('errors') + matchErrors.count
  const seconds = (ended - started) / 1000
  const warm = runSamples.filter(([t]) => t >= minutes * 0.1)
  const rssSlope = slope(warm.map(([t, rss]) => [t, rss / 1024]))
  const rssOf = (i) => (runSamples.length ? runSamples.at(i)[1] / MiB : process.memoryUsage.rss() / MiB)
  const rssMax = Math.max(...samples.map(([, rss]) => rss)) / MiB
  const result = {
    minutes,
    connections,
    peers: kinds.join(','),
    payload,
    seconds: Number(seconds.toFixed(1)),
    opened: side.opened,
    churned: side.finished,
    checked: matched,
    mismatched,
    byMode,
    sent: meshToPeers.sent + peersToMesh.sent,
    received: meshToPeers.received + peersToMesh.received,
    handedBack: meshToPeers.handedBack + peersToMesh.handedBack,
    lost,
    refused: side.refused + peersSum('refused'),
    deliveredAfterRemove: side.lateAfterRemove,
    errors,
    meshToPeers,
    peersToMesh,
    envelopesPerSecond: Math.round((meshToPeers.received + peersToMesh.received) / seconds),
    rssStartMiB: Number(rssOf(0).toFixed(1)),
    rssAfterWarmUpMiB: Number(((warm[0]?.[1] ?? 0) / MiB).toFixed(1)),
    rssEndMiB: Number(rssOf(-1).toFixed(1)),
    rssMaxMiB: Number(rssMax.toFixed(1)),
    rssSlopeKiBPerMin: Number(rssSlope.toFixed(1)),
    rssSamples: warm.length,
    peersRssEndMiB: peers.map((peer) => Number(((peer.stats?.rss ?? 0) / MiB).toFixed(1))),
    ok: lost === 0 && errors === 0 && mismatched === 0,
  }
  console.log(
    [
      '',
      `summary (${seconds.toFixed(0)} s: ${((runEnded - started) / 1000).toFixed(0)} s of churn, then ${((ended - runEnded) / 1000).toFixed(1)} s of wind-down)`,
      `  connections: ${side.opened} opened and closed (${Object.entries(byMode)
        .map(([mode, n]) => `${mode} ${n}`)
        .join(', ')}); ${matched} checked on both sides, ${mismatched} mismatched`,
      `  mesh -> peers: sent ${meshToPeers.sent}, received ${meshToPeers.received}, handed back ${meshToPeers.handedBack}, lost ${meshToPeers.lost}`,
      `  peers -> mesh: sent ${peersToMesh.sent}, received ${peersToMesh.received}, handed back ${peersToMesh.handedBack}, lost ${peersToMesh.lost}`,
      `  closing, seen from the mesh: ${Object.entries(closing)
        .map(
          ([mode, c]) =>
            `${mode} mean ${(c.ms / c.n).toFixed(0)} ms max ${c.maxMs} ms` +
            (c.viaConnection ? ` (${(c.viaConnection / c.n).toFixed(0)} frames received after the remove, each)` : ''),
        )
        .join(', ')}`,
      `  envelopes the mesh delivered after remove() had resolved (read before the removal): ${side.lateAfterRemove}`,
      `  refused at the call (SendError with the envelope, never accepted): ${result.refused}`,
      `  errors (order, corruption, protocol, stuck): ${errors}`,
      `  throughput: ${fmt(result.envelopesPerSecond)} envelopes/s received, both directions`,
      `  RSS of the mesh process: start ${result.rssStartMiB} MiB, after warm-up ${result.rssAfterWarmUpMiB} MiB, end ${result.rssEndMiB} MiB, max ${result.rssMaxMiB} MiB, ` +
        `slope ${result.rssSlopeKiBPerMin} KiB/min (least squares over ${warm.length} samples after the first 10%)`,
      `  ${result.ok ? 'OK' : 'FAILED'}: lost ${lost}`,
    ].join('\n'),
  )
  console.log(JSON.stringify(result))
  process.exitCode = result.ok ? 0 : 1
  // Everything is closed: the process must end by itself.
  setTimeout(() => {
    print('soak: did not exit by itself within 5 s of closing everything')
    process.exit(process.exitCode || 4)
  }, 5000).unref()
}

// ---------------------------------------------------------------------------------------

const args = parseArgs(process.argv.slice(2))
if (args.role === 'peer') {
  runPeer().catch((error) => {
    process.stderr.write(`peer: ${error?.stack ?? error}\n`)
    process.exit(2)
  })
} else {
  runSoak(args).catch((error) => {
    process.stderr.write(`soak: ${error?.stack ?? error}\n`)
    for (const child of children) child.kill('SIGKILL')
    process.exit(1)
  })
}
