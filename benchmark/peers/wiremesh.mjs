// The wiremesh side of the comparison benchmark (see common.mjs for the protocol and
// benchmark/README.md for the scenarios): both sides are meshes.
//
// - sender: `mesh.send`, and on SendError `Full` `await mesh.sendWait(envelope)`; message n
//   goes to connection n % conns; each payload is freshly allocated (send copies it once,
//   into the frame).
// - receiver: `await mesh.recvBatch(4096)`, reading every payload (Checker); the echo of
//   ping-pong is the README's `for await (const envelope of mesh)` loop.
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
  watchProgress,
  emitReceiverResult,
} from './common.mjs'

const { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } = wiremesh
const { role, scenario, conns, size, count } = config

// A sender's outgoing queue per connection: about 1 MiB of frames, 16 to 1024 of them.
const outgoingCapacity = Math.max(16, Math.min(1024, Math.floor((1 << 20) / size)))
// A receiver's incoming queue: about 16 MiB of frames, 256 to 4096 of them.
const incomingCapacity = Math.max(256, Math.min(4096, Math.floor((16 << 20) / size)))
const mesh = role === 'send' ? new Mesh(4096, outgoingCapacity) : new Mesh(incomingCapacity, 16)
const transport = new TcpTransport()

/** The connections' ids, in the order of the sender's connection index. */
async function establish() {
  const ids = []
  if (config.listen) {
    const listener = await transport.listen('127.0.0.1:0')
    emit('listening', { port: Number(listener.endpoint.split(':').pop()) })
    while (ids.length < conns) ids.push(mesh.add(await listener.accept()))
    listener.close()
  } else {
    while (ids.length < conns) ids.push(mesh.add(await transport.connect(`127.0.0.1:${config.port}`)))
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

async function sender() {
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
  emitReceiverResult(t1, checker, cpu0, baselineRss)
  await command('exit')
  mesh.shutdown()
  leave()
}

await (config.role === 'send' ? sender() : receiver())
