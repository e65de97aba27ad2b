// The proof of the batched send: what a sender's JavaScript thread spends per message when
// every send crosses into native code (the path before the outbox, still exported as the
// free function `meshSend`), against `mesh.send`, which encodes into the mesh's outbox and
// crosses once per batch.
//
//   npm run build && node benchmark/send-batching.mjs
//
// One process: a mesh sends 64 B (and 1 KiB) payloads over one loopback connection to a
// plain `net` socket that reads and drops everything. A round is 1 000 000 sends timed on
// the sending thread (process CPU time and wall time), waiting for room when the queue is
// full. Rounds alternate between the two paths; the medians of 5 rounds each are printed.
import net from 'node:net'
import { once } from 'node:events'

import wiremesh from '../index.js'
import binding from '../binding.js'
import { nativeConnection } from '../lib/transports.js'

const { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } = wiremesh
const MESSAGES = 1_000_000
const ROUNDS = 5

const sink = net.createServer((socket) => socket.on('data', () => {}))
sink.listen(0, '127.0.0.1')
await once(sink, 'listening')
const mesh = new Mesh(16, 1024)
const id = mesh.add(await new TcpTransport().connect(`127.0.0.1:${sink.address().port}`))

function median(values) {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
}

// The per-message path: a native mesh of its own, with its own connection to the sink.
const nativeMesh = new binding.NativeMesh(16, 1024)
const hot = nativeMesh.hot()
const connection = nativeConnection(await new TcpTransport().connect(`127.0.0.1:${sink.address().port}`))
const nativeId = nativeMesh.add(connection)
if (!(nativeId >= 0)) throw new Error(`the native mesh refused the connection (${nativeId})`)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function timeRound(size, send) {
  const payload = Buffer.alloc(size, 7)
  const cpu0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  for (let n = 0; n < MESSAGES; n++) {
    while (!send(payload)) await sleep(0)
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu = process.cpuUsage(cpu0)
  return { rate: MESSAGES / wall, cpuNsPerMessage: ((cpu.user + cpu.system) * 1000) / MESSAGES }
}

// Before the outbox: one napi call (and one allocation) per send.
const perMessage = (payload) => {
  const status = binding.meshSend(hot, nativeId, payload)
  if (status === 0) return true
  if (status === 2) return false
  throw new Error(`send failed with status ${status}`)
}
// Now: mesh.send, encoded into the outbox; a Full waits for room.
const batched = (payload) => {
  try {
    mesh.send(new Envelope(id, payload))
    return true
  } catch (error) {
    if (error instanceof SendError && error.kind === SendErrorKind.Full) return false
    throw error
  }
}

for (const size of [64, 1024]) {
  const rounds = { perMessage: [], batched: [] }
  await timeRound(size, perMessage) // warm-up
  await timeRound(size, batched)
  for (let round = 0; round < ROUNDS; round++) {
    rounds.perMessage.push(await timeRound(size, perMessage))
    rounds.batched.push(await timeRound(size, batched))
  }
  const summary = (list) => ({
    rate: median(list.map((r) => r.rate)),
    cpuNsPerMessage: median(list.map((r) => r.cpuNsPerMessage)),
  })
  const [a, b] = [summary(rounds.perMessage), summary(rounds.batched)]
  console.log(
    `${String(size).padStart(5)} B  per-message ${(a.rate / 1e6).toFixed(2)} M msg/s, ${a.cpuNsPerMessage.toFixed(0)} ns CPU/msg` +
      `   batched ${(b.rate / 1e6).toFixed(2)} M msg/s, ${b.cpuNsPerMessage.toFixed(0)} ns CPU/msg` +
      `   batched/per-message ${(b.rate / a.rate).toFixed(2)}x`,
  )
}
nativeMesh.shutdown()
mesh.shutdown()
sink.close()
