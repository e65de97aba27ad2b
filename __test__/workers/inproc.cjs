// A worker thread's side of the in-process tests (inproc.spec.ts), by `workerData.mode`:
//   serve   listens on `workerData.name` with a mesh of its own and echoes every envelope
//           back on its connection; posts { listening } once it serves, and closes the
//           listener when it is sent 'close' (then posts { closed })
//   stream  connects to `workerData.name` and streams numbered envelopes (u64 big-endian
//           sequence numbers) until it is terminated; posts { connected }
'use strict'
const { parentPort, workerData } = require('node:worker_threads')
const { Envelope, InprocTransport, Mesh } = require('../..')

async function serve() {
  const transport = new InprocTransport()
  const listener = await transport.listen(workerData.name)
  const mesh = new Mesh(1024, 256)
  parentPort.on('message', (message) => {
    if (message === 'close') {
      listener.close()
      parentPort.postMessage({ closed: true })
    }
  })
  parentPort.postMessage({ listening: listener.endpoint })
  ;(async () => {
    for await (const connection of listener) mesh.add(connection)
  })()
  let echoed = 0
  for await (const { id, payload } of mesh) {
    await mesh.sendWait(new Envelope(id, payload))
    if (++echoed % 256 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
}

async function stream() {
  const mesh = new Mesh(256, 64)
  const id = mesh.add(await new InprocTransport().connect(workerData.name))
  parentPort.postMessage({ connected: true })
  for (let seq = 0; ; seq++) {
    const payload = Buffer.alloc(workerData.size ?? 64)
    payload.writeBigUInt64BE(BigInt(seq))
    await mesh.sendWait(new Envelope(id, payload))
    if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
  }
}

const modes = { serve, stream }
modes[workerData.mode]().catch((error) => parentPort.postMessage({ bad: String(error) }))
