// In-process benchmark: a worker thread streams messages to the main thread of the same
// process, through wiremesh's in-process transport (`inproc://`), against the ways Node
// offers: a MessagePort (structured clone, and with the buffer transferred), and wiremesh
// over loopback TCP between the same two threads.
//
//   node benchmark/inproc.mjs [--runs=5] [--quick] [--sizes=64,65536] [--impls=...] [--await]
//
// Every implementation streams `count` messages of `size` bytes from the worker to the main
// thread, each numbered and checked in order on arrival. The MessagePort sender is careful
// in the way a production one must be: it keeps at most 4096 messages in flight, the
// receiver acknowledging every 1024 (without that, a fast sender queues without bound: 80 000
// messages of 64 KiB would be 5 GiB). wiremesh needs no such protocol: `sendWait` waits for
// room (the sender sends, and waits with `sendWait` when a send meets `Full`; with --await it
// awaits every `sendWait`, the plain pattern). Runs are interleaved (the order rotates each round) and the medians printed; CPU is
// the process's (both threads). Results: benchmark/results/inproc.json (or results/quick/).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'

import wiremesh from '../index.js'

const { Envelope, InprocTransport, Mesh, TcpTransport } = wiremesh
const IN_FLIGHT = 4096
const ACK_EVERY = 1024

// ---------------------------------------------------------------------------------------
// The worker: the sending side.

async function send({ impl, size, count, endpoint, port, awaitEach }) {
  const payload = (seq) => {
    const bytes = Buffer.allocUnsafe(size)
    bytes.writeUInt32BE(seq, 0)
    return bytes
  }
  if (impl.startsWith('wiremesh')) {
    const transport = impl === 'wiremesh-tcp' ? new TcpTransport() : new InprocTransport()
    const mesh = new Mesh(1024, Math.max(16, Math.min(1024, Math.floor((1 << 20) / size))))
    const id = mesh.add(await transport.connect(endpoint))
    parentPort.postMessage({ ready: true })
    await new Promise((resolve) => parentPort.once('message', resolve))
    if (awaitEach) {
      // The plain pattern: await every sendWait (it resolves at once while there is room).
      for (let seq = 0; seq < count; seq++) {
        await mesh.sendWait(new Envelope(id, payload(seq)))
        if (seq % 1024 === 1023) await new Promise((resolve) => setImmediate(resolve))
      }
    } else {
      // As a fast sender does: send, and wait for room only when the queue is full.
      for (let seq = 0; seq < count; seq++) {
        const envelope = new Envelope(id, payload(seq))
        try {
          mesh.send(envelope)
        } catch {
          await mesh.sendWait(envelope)
        }
      }
    }
    // Wait for the receiver's word that all arrived, then leave.
    await new Promise((resolve) => parentPort.once('message', resolve))
    mesh.shutdown()
    return
  }
  // MessagePort: `port` carries the stream; acknowledgements come back on it.
  let acked = 0
  let wake = null
  port.on('message', (message) => {
    acked = message
    if (wake) wake()
  })
  parentPort.postMessage({ ready: true })
  await new Promise((resolve) => parentPort.once('message', resolve))
  const transfer = impl === 'messageport-transfer'
  for (let seq = 0; seq < count; seq++) {
    while (seq - acked >= IN_FLIGHT) await new Promise((resolve) => (wake = resolve))
    const bytes = payload(seq)
    if (transfer) {
      // A buffer of its own (not a view on Node's shared pool), so it can be transferred.
      const own = new Uint8Array(new ArrayBuffer(size))
      own.set(bytes)
      port.postMessage(own, [own.buffer])
    } else {
      port.postMessage(bytes)
    }
  }
  await new Promise((resolve) => parentPort.once('message', resolve))
  port.close()
}

if (!isMainThread) {
  send(workerData).catch((error) => {
    console.error(error)
    process.exit(1)
  })
}

// ---------------------------------------------------------------------------------------
// The main thread: the receiving side, and the runs.

const here = path.dirname(fileURLToPath(import.meta.url))
const argv = process.argv.slice(2)
const option = (name) => argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3)
const quick = argv.includes('--quick')
// --await: wiremesh's senders await each sendWait instead of sending until Full.
const awaitEach = argv.includes('--await')
const runs = Number(option('runs') ?? (quick ? 1 : 5))
const sizes = (option('sizes') ?? '64,65536').split(',').map(Number)
const IMPLS = (option('impls') ?? 'wiremesh,wiremesh-tcp,messageport,messageport-transfer').split(',')
const countFor = (size) => Math.round((size >= 16384 ? 80_000 : 2_000_000) * (quick ? 0.1 : 1))

let names = 0

async function runOnce(impl, size) {
  const count = countFor(size)
  const started = { cpu: null, at: 0n }
  let received = 0
  let wrong = 0
  const check = (bytes) => {
    if (bytes.length !== size || bytes.readUInt32BE(0) !== received) wrong++
    received++
  }
  let worker
  let finish
  if (impl.startsWith('wiremesh')) {
    const transport = impl === 'wiremesh-tcp' ? new TcpTransport() : new InprocTransport()
    const bind = impl === 'wiremesh-tcp' ? '127.0.0.1:0' : `inproc://bench-${process.pid}-${names++}`
    const listener = await transport.listen(bind)
    const mesh = new Mesh(1024, 16)
    worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { impl, size, count, endpoint: listener.endpoint, awaitEach },
    })
    // Listened for before anything is awaited: the worker may be ready before the accept
    // resolves, and a message with no listener is lost.
    const ready = new Promise((resolve) => worker.once('message', resolve))
    mesh.add(await listener.accept())
    listener.close()
    await ready
    started.cpu = process.cpuUsage()
    started.at = process.hrtime.bigint()
    worker.postMessage('go')
    while (received < count) {
      for (const envelope of await mesh.recvBatch(256)) check(envelope.payload)
    }
    finish = () => mesh.shutdown()
  } else {
    const { port1, port2 } = new MessageChannel()
    worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { impl, size, count, port: port2 },
      transferList: [port2],
    })
    await new Promise((resolve) => worker.once('message', resolve))
    started.cpu = process.cpuUsage()
    started.at = process.hrtime.bigint()
    const done = new Promise((resolve) => {
      port1.on('message', (bytes) => {
        check(bytes instanceof Uint8Array ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length) : bytes)
        if (received % ACK_EVERY === 0 || received === count) port1.postMessage(received)
        if (received === count) resolve()
      })
    })
    worker.postMessage('go')
    await done
    finish = () => port1.close()
  }
  const seconds = Number(process.hrtime.bigint() - started.at) / 1e9
  const cpu = process.cpuUsage(started.cpu)
  worker.postMessage('done')
  await new Promise((resolve) => worker.once('exit', resolve))
  finish()
  return {
    ok: wrong === 0 && received === count,
    messagesPerSecond: count / seconds,
    megabytesPerSecond: (count * size) / seconds / 1e6,
    cpuPerMillion: ((cpu.user + cpu.system) / 1e6 / count) * 1e6,
    wrong,
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

if (isMainThread) {
  const cpus = os.cpus()
  console.log(
    `${cpus[0]?.model.trim()}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
      `Linux ${os.release()}, Node ${process.version}; ${runs} run(s), interleaved`,
  )
  const results = {}
  for (const size of sizes) {
    const records = Object.fromEntries(IMPLS.map((impl) => [impl, []]))
    for (let round = 0; round < runs; round++) {
      const order = IMPLS.map((_, i) => IMPLS[(i + round) % IMPLS.length])
      for (const impl of order) {
        const result = await runOnce(impl, size)
        records[impl].push(result)
        console.log(
          `${size} B ${round + 1}/${runs} ${impl.padEnd(20)} ${result.ok ? 'ok' : 'WRONG'} ` +
            `${(result.messagesPerSecond / 1e6).toFixed(2)} M msg/s, ${result.cpuPerMillion.toFixed(2)} CPU s/M`,
        )
      }
    }
    results[size] = Object.fromEntries(
      IMPLS.map((impl) => [
        impl,
        {
          messagesPerSecond: median(records[impl].map((r) => r.messagesPerSecond)),
          megabytesPerSecond: median(records[impl].map((r) => r.megabytesPerSecond)),
          cpuPerMillion: median(records[impl].map((r) => r.cpuPerMillion)),
          okRuns: records[impl].filter((r) => r.ok).length,
        },
      ]),
    )
  }
  console.log(`\nMedians of ${runs} run(s); ratios to messageport (structured clone) in the same run\n`)
  console.log('size      impl                   msg/s      MB/s  CPU s/M msg  vs messageport  ok runs')
  let failed = false
  for (const size of sizes) {
    const base = (results[size].messageport ?? results[size][IMPLS[0]]).messagesPerSecond
    for (const impl of IMPLS) {
      const r = results[size][impl]
      if (r.okRuns !== runs) failed = true
      console.log(
        `${String(size).padEnd(8)}  ${impl.padEnd(20)} ${(r.messagesPerSecond / 1e6).toFixed(2).padStart(6)} M ` +
          `${r.megabytesPerSecond.toFixed(1).padStart(8)}  ${r.cpuPerMillion.toFixed(2).padStart(11)}  ` +
          `${(r.messagesPerSecond / base).toFixed(2).padStart(13)}x  ${r.okRuns}/${runs}`,
      )
    }
  }
  const out = path.join(here, 'results', quick ? 'quick' : '', 'inproc.json')
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), runs, results }, null, 2) + '\n')
  console.log(`\nwrote ${path.relative(process.cwd(), out)}`)
  if (failed) process.exit(1)
}
