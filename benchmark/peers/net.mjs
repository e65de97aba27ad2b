// The hand-written Node `net` side of the comparison benchmark (see common.mjs for the
// protocol and benchmark/README.md for the scenarios), written as a careful user would:
//
// - frames parsed in place: each frame that lies whole in a 'data' chunk is a `subarray`
//   of it; no Buffer.concat per chunk; only a frame cut by a chunk's end is copied, once,
//   into a buffer of its exact size (a cut header into 4 bytes);
// - the sender corks the sockets it writes in a batch of up to 4096 frames and uncorks
//   them at the end of the batch; when write() returns false, it ends the batch and waits
//   for that socket's 'drain';
// - the backpressure consumer pauses a socket while its application queue holds 4096
//   frames or more, and resumes every paused socket once the queue is down to 1024;
// - TCP_NODELAY on every socket (as the mesh sets it), default buffer sizes;
// - `tls` (the TLS scenarios): the same over Node's `tls` (the listener with the run's key
//   and certificate, the dialler verifying them against its CA), counted once the
//   handshake is done;
// - many-meshes (`requests`): each client loop writes a request as one frame and awaits a
//   promise its socket's parser resolves with the reply; the server writes every frame
//   back at once, as ping-pong's echo does.
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'
import {
  Checker,
  command,
  config,
  cpuFields,
  emit,
  latencyStats,
  leave,
  makeEndPayload,
  makeFrame,
  memoryFields,
  now,
  Pace,
  requestLoops,
  watchProgress,
  emitReceiverResult,
} from './common.mjs'

const { role, scenario, conns, size, count } = config
const MAX_FRAME = 16 * 1024 * 1024
const BATCH = 4096
const QUEUE_HIGH = 4096
const QUEUE_LOW = 1024

/** Splits a socket's byte stream into frames and hands each payload to `onFrame`. */
class FrameReader {
  constructor(socket, onFrame) {
    this.socket = socket
    this.onFrame = onFrame
    this.head = Buffer.alloc(4) // a header cut by the end of a chunk
    this.headLength = 0
    this.body = null // a payload cut by the end of a chunk
    this.bodyLength = 0
  }

  push(chunk) {
    const length = chunk.length
    let offset = 0
    if (this.body !== null) {
      const take = Math.min(this.body.length - this.bodyLength, length)
      chunk.copy(this.body, this.bodyLength, 0, take)
      this.bodyLength += take
      offset = take
      if (this.bodyLength < this.body.length) return
      const body = this.body
      this.body = null
      this.onFrame(body)
    } else if (this.headLength > 0) {
      while (this.headLength < 4 && offset < length) this.head[this.headLength++] = chunk[offset++]
      if (this.headLength < 4) return
      this.headLength = 0
      if (!this.startFrame(chunk, offset, this.head.readUInt32BE(0))) return
      offset += this.head.readUInt32BE(0)
    }
    while (length - offset >= 4) {
      const frameLength = chunk.readUInt32BE(offset)
      if (frameLength > MAX_FRAME) return this.protocolError(frameLength)
      if (length - offset - 4 < frameLength) break
      this.onFrame(chunk.subarray(offset + 4, offset + 4 + frameLength))
      offset += 4 + frameLength
    }
    if (offset === length) return
    if (length - offset < 4) {
      chunk.copy(this.head, 0, offset)
      this.headLength = length - offset
      return
    }
    const frameLength = chunk.readUInt32BE(offset)
    if (frameLength > MAX_FRAME) return this.protocolError(frameLength)
    this.startFrame(chunk, offset + 4, frameLength)
  }

  /** The header is read; the payload starts at `offset`. True if it was whole in the chunk. */
  startFrame(chunk, offset, frameLength) {
    if (frameLength > MAX_FRAME) {
      this.protocolError(frameLength)
      return false
    }
    if (chunk.length - offset >= frameLength) {
      this.onFrame(chunk.subarray(offset, offset + frameLength))
      return true
    }
    this.body = Buffer.allocUnsafe(frameLength)
    chunk.copy(this.body, 0, offset)
    this.bodyLength = chunk.length - offset
    return false
  }

  protocolError(frameLength) {
    this.socket.destroy(new Error(`a frame of ${frameLength} bytes is over the limit`))
  }
}

const errors = []
function prepare(socket) {
  socket.setNoDelay(true)
  socket.on('error', (error) => errors.push(error.code ?? error.message))
  return socket
}

/** The sockets, in the order of the sender's connection index. */
async function establish() {
  const sockets = []
  if (config.listen) {
    const server = config.tls ? tls.createServer({ key: config.tls.key, cert: config.tls.cert }) : net.createServer()
    const all = new Promise((resolve) => {
      server.on(config.tls ? 'secureConnection' : 'connection', (socket) => {
        sockets.push(prepare(socket))
        if (sockets.length === conns) resolve()
      })
    })
    // `path`: over a Unix socket at that path, else over loopback TCP.
    server.listen(config.path ? { path: config.path, backlog: 1024 } : { host: '127.0.0.1', port: 0, backlog: 1024 })
    await once(server, 'listening')
    emit('listening', { port: config.path ? 0 : server.address().port })
    await all
    server.close()
  } else {
    for (let i = 0; i < conns; i++) {
      if (config.tls) {
        const socket = tls.connect({ host: '127.0.0.1', port: config.port, ca: config.tls.ca })
        await once(socket, 'secureConnect')
        sockets.push(prepare(socket))
        continue
      }
      const socket = net.connect(config.path ? { path: config.path } : { host: '127.0.0.1', port: config.port })
      await once(socket, 'connect')
      sockets.push(prepare(socket))
    }
  }
  return sockets
}

let waits = 0

/**
 * Writes `total` frames round-robin over the sockets (frame n to socket n % sockets),
 * corked in batches, honouring 'drain'. `frameFor(conn)` makes the next frame of a socket.
 */
async function pump(sockets, total, frameFor, stop = () => false) {
  const count = sockets.length
  const corked = []
  let n = 0
  while (n < total && !stop()) {
    const end = Math.min(total, n + BATCH)
    let blocked = null
    while (n < end) {
      const conn = n % count
      const socket = sockets[conn]
      if (!socket.writableCorked) {
        socket.cork()
        corked.push(socket)
      }
      n++
      if (!socket.write(frameFor(conn))) {
        blocked = socket
        break
      }
    }
    for (const socket of corked) socket.uncork()
    corked.length = 0
    if (blocked !== null && blocked.writableNeedDrain) {
      waits++
      await once(blocked, 'drain')
    }
  }
  return n
}

async function sender() {
  const sockets = await establish()
  const seqs = new Uint32Array(conns)
  emit('ready')
  await command('go')
  const cpu0 = process.cpuUsage()
  const t0 = now()
  if (scenario === 'pingpong') {
    const checker = new Checker(1)
    const rtts = new Float64Array(count)
    const socket = sockets[0]
    let wake = null
    const reader = new FrameReader(socket, (payload) => {
      checker.check(payload)
      wake()
    })
    socket.on('data', (chunk) => reader.push(chunk))
    for (let n = 0; n < count; n++) {
      const start = now()
      const reply = new Promise((resolve) => (wake = resolve))
      socket.write(makeFrame(size, 0, n))
      await reply
      rtts[n] = Number(now() - start)
    }
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count, ...checker.summary(), ...latencyStats(rtts) })
  } else if (scenario === 'requests') {
    // many-meshes: a loop per socket, one request in flight on each
    const waiting = new Array(conns).fill(null)
    let stray = 0
    sockets.forEach((socket, conn) => {
      const reader = new FrameReader(socket, (payload) => {
        const wake = waiting[conn]
        if (wake === null) {
          stray++
          return
        }
        waiting[conn] = null
        wake(payload)
      })
      socket.on('data', (chunk) => reader.push(chunk))
    })
    const request = (conn, seq) =>
      new Promise((resolve) => {
        waiting[conn] = resolve
        sockets[conn].write(makeFrame(size, conn, seq))
      })
    const { tEnd, errors, ...result } = await requestLoops(conns, count, size, request)
    emit('done', { t0: String(t0), tEnd: String(tEnd), sent: count, errors: errors + stray, ...result })
  } else if (scenario === 'stream') {
    await pump(sockets, count, (conn) => makeFrame(size, conn, seqs[conn]++))
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count, waits })
  } else {
    const deadline = t0 + BigInt(Math.round(config.duration * 1e9))
    const sent = await pump(
      sockets,
      Infinity,
      (conn) => makeFrame(size, conn, seqs[conn]++),
      () => now() >= deadline,
    )
    const ends = sockets.map((_, conn) => {
      const payload = makeEndPayload(size, conn, seqs[conn])
      const header = Buffer.allocUnsafe(4)
      header.writeUInt32BE(size, 0)
      return Buffer.concat([header, payload])
    })
    await pump(sockets, conns, (conn) => ends[conn])
    emit('done', { t0: String(t0), tEnd: String(now()), sent, waits })
  }
  await command('exit')
  emit('result', { ...cpuFields(cpu0), socketErrors: errors.length })
  for (const socket of sockets) socket.end()
  leave()
}

async function receiver() {
  const sockets = await establish()
  const checker = new Checker(conns)
  const baselineRss = process.memoryUsage.rss()
  const report = () => emit('result', { t1: String(now()), ...checker.summary(), stalled: true })
  const unwatch = watchProgress(() => checker.received + checker.endFrames, report)
  let finish
  const finished = new Promise((resolve) => (finish = resolve))
  let cpu0
  if (scenario === 'pingpong' || scenario === 'requests') {
    // the echo: one socket (ping-pong) or every socket (many-meshes' server)
    for (const socket of sockets) {
      const reader = new FrameReader(socket, (payload) => {
        checker.check(payload)
        const frame = Buffer.allocUnsafe(4 + payload.length)
        frame.writeUInt32BE(payload.length, 0)
        payload.copy(frame, 4)
        socket.write(frame)
        if (checker.received === count) finish()
      })
      socket.on('data', (chunk) => reader.push(chunk))
    }
  } else if (scenario === 'stream') {
    for (const socket of sockets) {
      const reader = new FrameReader(socket, (payload) => {
        checker.check(payload)
        if (checker.received === count) finish()
      })
      socket.on('data', (chunk) => reader.push(chunk))
    }
  } else {
    // backpressure: frames queue for a consumer slower than the sender
    const queue = []
    let head = 0
    const paused = new Set()
    let waiting = null
    for (const socket of sockets) {
      const reader = new FrameReader(socket, (payload) => {
        queue.push(payload)
        if (queue.length - head >= QUEUE_HIGH && !paused.has(socket)) {
          socket.pause()
          paused.add(socket)
        }
        if (waiting !== null) {
          const wake = waiting
          waiting = null
          wake()
        }
      })
      socket.on('data', (chunk) => reader.push(chunk))
    }
    const consume = async () => {
      const pace = new Pace(config.rate)
      while (!checker.allEnded()) {
        const allowance = pace.allowance()
        if (allowance === 0) {
          await pace.wait()
          continue
        }
        if (queue.length === head) {
          await new Promise((resolve) => (waiting = resolve))
          continue
        }
        const take = Math.min(allowance, queue.length - head)
        for (let i = 0; i < take; i++) {
          checker.check(queue[head])
          queue[head++] = undefined
        }
        pace.took(take)
        if (head > 65536 && head * 2 > queue.length) {
          queue.splice(0, head)
          head = 0
        }
        if (paused.size > 0 && queue.length - head <= QUEUE_LOW) {
          for (const socket of paused) socket.resume()
          paused.clear()
        }
      }
      finish()
    }
    setImmediate(consume)
  }
  cpu0 = process.cpuUsage()
  emit('ready')
  await finished
  const t1 = now()
  unwatch()
  emitReceiverResult(t1, checker, cpu0, baselineRss, { socketErrors: errors.length })
  await command('exit')
  for (const socket of sockets) socket.destroy()
  leave()
}

await (role === 'send' ? sender() : receiver())
