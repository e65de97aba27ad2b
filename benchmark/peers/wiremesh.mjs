// The wiremesh side of the comparison benchmark (see common.mjs for the protocol and
// benchmark/README.md for the scenarios): both sides are meshes.
//
// - sender: `mesh.send`, and on SendError `Full` `await mesh.sendWait(envelope)`; message n
//   goes to connection n % conns; each payload is freshly allocated (send copies it once,
//   into the frame).
// - receiver: `await mesh.recvBatch(4096)`, reading every payload (Checker); the echo of
//   ping-pong is the README's `for await (const envelope of mesh)` loop.
// - many-meshes (`requests`): the server echoes on one mesh (`for await`, `sendWait` on
//   Full); the clients' 50 loops share one mesh and one receive loop that hands each reply
//   to the loop of its connection, or (`meshes: 'per-connection'`, wiremesh-50) each loop
//   has a mesh of its own and calls `mesh.send` then `await mesh.recv()` on it.
import wiremesh from '../../index.js'
import {
  Checker,
  command,
  config,
  cpuFields,
  emit,
  latencyStats,
  leave,
  makeEndPayload,
  makePayload,
  memoryFields,
  now,
  Pace,
  requestLoops,
  watchProgress,
  emitReceiverResult,
} from './common.mjs'

const { Envelope, Mesh, SendError, SendErrorKind, TcpTransport, TlsTransport, UnixTransport } = wiremesh
const { role, scenario, conns, size, count } = config

// A sender's outgoing queue per connection: about 1 MiB of frames, 16 to 1024 of them.
const outgoingCapacity = Math.max(16, Math.min(1024, Math.floor((1 << 20) / size)))
// A receiver's incoming queue: about 16 MiB of frames, 256 to 4096 of them.
const incomingCapacity = Math.max(256, Math.min(4096, Math.floor((16 << 20) / size)))
const newMesh = () => (role === 'send' ? new Mesh(4096, outgoingCapacity) : new Mesh(incomingCapacity, 16))
// wiremesh-50's clients make a mesh per connection (`clients`), none for all.
const meshPerConnection = config.meshes === 'per-connection' && role === 'send'
const mesh = meshPerConnection ? null : newMesh()
// `path`: over a Unix socket at that path; `tls`: over TLS (the listener has the key and
// certificate, the dialler trusts the CA); else over loopback TCP.
const transport = config.path
  ? new UnixTransport()
  : config.tls
    ? new TlsTransport(config.listen ? { key: config.tls.key, cert: config.tls.cert } : { ca: config.tls.ca })
    : new TcpTransport()
const bind = config.path ? `unix://${config.path}` : config.tls ? 'tcps://127.0.0.1:0' : '127.0.0.1:0'
const dial = () =>
  config.path ? `unix://${config.path}` : config.tls ? `tcps://127.0.0.1:${config.port}` : `127.0.0.1:${config.port}`

/** The connections' ids, in the order of the sender's connection index. */
async function establish() {
  const ids = []
  if (config.listen) {
    const listener = await transport.listen(bind)
    emit('listening', { port: config.path ? 0 : Number(listener.endpoint.split(':').pop()) })
    while (ids.length < conns) ids.push(mesh.add(await listener.accept()))
    listener.close()
  } else {
    while (ids.length < conns) ids.push(mesh.add(await transport.connect(dial())))
  }
  return ids
}

let waits = 0

async function send(envelope) {
  try {
    mesh.send(envelope)
  } catch (error) {
    if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
    waits++
    await mesh.sendWait(envelope)
  }
}

/**
 * The clients of many-meshes: 50 request/response loops (common.mjs `requestLoops`), over one
 * mesh, or over a mesh each.
 */
async function clients() {
  const meshes = []
  let request
  let dispatch = async () => 0
  if (meshPerConnection) {
    const ids = []
    for (let conn = 0; conn < conns; conn++) {
      const own = newMesh()
      meshes.push(own)
      ids.push(own.add(await transport.connect(dial())))
    }
    request = async (conn, seq) => {
      const own = meshes[conn]
      own.send(new Envelope(ids[conn], makePayload(size, conn, seq)))
      return (await own.recv()).payload
    }
  } else {
    const ids = await establish()
    meshes.push(mesh)
    const connOf = new Map(ids.map((id, conn) => [id, conn]))
    // The reply each loop waits for, resolved by the receive loop.
    const waiting = new Array(conns).fill(null)
    request = (conn, seq) =>
      new Promise((resolve) => {
        waiting[conn] = resolve
        mesh.send(new Envelope(ids[conn], makePayload(size, conn, seq)))
      })
    // One receive loop for the mesh: every reply to the loop waiting on its connection.
    dispatch = async () => {
      let stray = 0
      for (let replies = 0; replies < count;) {
        for (const envelope of await mesh.recvBatch(4096)) {
          replies++
          const conn = connOf.get(envelope.id)
          const wake = conn === undefined ? null : waiting[conn]
          if (wake === null) {
            stray++
            continue
          }
          waiting[conn] = null
          wake(envelope.payload)
        }
      }
      return stray
    }
  }
  emit('ready')
  await command('go')
  const cpu0 = process.cpuUsage()
  const t0 = now()
  const dispatching = dispatch()
  const { tEnd, errors, ...result } = await requestLoops(conns, count, size, request)
  const stray = await dispatching
  emit('done', { t0: String(t0), tEnd: String(tEnd), sent: count, errors: errors + stray, ...result })
  await command('exit')
  emit('result', cpuFields(cpu0))
  for (const each of meshes) each.shutdown()
  leave()
}

async function sender() {
  if (scenario === 'requests') return clients()
  const ids = await establish()
  const seqs = new Uint32Array(conns)
  emit('ready')
  await command('go')
  const cpu0 = process.cpuUsage()
  const t0 = now()
  if (scenario === 'pingpong') {
    const checker = new Checker(1)
    const rtts = new Float64Array(count)
    const id = ids[0]
    for (let n = 0; n < count; n++) {
      const start = now()
      mesh.send(new Envelope(id, makePayload(size, 0, n)))
      checker.check((await mesh.recv()).payload)
      rtts[n] = Number(now() - start)
    }
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count, ...checker.summary(), ...latencyStats(rtts) })
  } else if (scenario === 'stream') {
    for (let n = 0; n < count; n++) {
      const conn = n % conns
      const envelope = new Envelope(ids[conn], makePayload(size, conn, seqs[conn]++))
      try {
        mesh.send(envelope)
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
        waits++
        await mesh.sendWait(envelope)
      }
    }
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count, waits })
  } else {
    // backpressure: as fast as the mesh takes them, for `duration` seconds, then an end frame each
    const deadline = t0 + BigInt(Math.round(config.duration * 1e9))
    let n = 0
    for (;;) {
      if ((n & 63) === 0 && now() >= deadline) break
      const conn = n % conns
      await send(new Envelope(ids[conn], makePayload(size, conn, seqs[conn]++)))
      n++
    }
    for (let conn = 0; conn < conns; conn++) await send(new Envelope(ids[conn], makeEndPayload(size, conn, seqs[conn])))
    emit('done', { t0: String(t0), tEnd: String(now()), sent: n, waits })
  }
  await command('exit')
  emit('result', cpuFields(cpu0))
  mesh.shutdown()
  leave()
}

async function receiver() {
  await establish()
  const checker = new Checker(conns)
  const baselineRss = process.memoryUsage.rss()
  const report = () => emit('result', { t1: String(now()), ...checker.summary(), stalled: true })
  const unwatch = watchProgress(() => checker.received + checker.endFrames, report)
  const cpu0 = process.cpuUsage()
  emit('ready')
  if (scenario === 'pingpong') {
    for await (const envelope of mesh) {
      checker.check(envelope.payload)
      mesh.send(new Envelope(envelope.id, envelope.payload))
      if (checker.received === count) break
    }
  } else if (scenario === 'requests') {
    // many-meshes: the server, every connection on this one mesh
    for await (const envelope of mesh) {
      checker.check(envelope.payload)
      const reply = new Envelope(envelope.id, envelope.payload)
      try {
        mesh.send(reply)
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
        waits++
        await mesh.sendWait(reply)
      }
      if (checker.received === count) break
    }
  } else if (scenario === 'stream') {
    while (checker.received < count) {
      for (const envelope of await mesh.recvBatch(4096)) checker.check(envelope.payload)
    }
  } else {
    // backpressure: a consumer slower than the sender, at `rate` messages per second
    const pace = new Pace(config.rate)
    while (!checker.allEnded()) {
      const allowance = pace.allowance()
      if (allowance === 0) {
        await pace.wait()
        continue
      }
      const batch = await mesh.recvBatch(allowance)
      pace.took(batch.length)
      for (const envelope of batch) checker.check(envelope.payload)
    }
  }
  const t1 = now()
  unwatch()
  emitReceiverResult(t1, checker, cpu0, baselineRss, scenario === 'requests' ? { waits } : {})
  await command('exit')
  mesh.shutdown()
  leave()
}

await (config.role === 'send' ? sender() : receiver())
