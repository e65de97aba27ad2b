// A worker thread's side of a conversation (workers.spec.ts): its own mesh, one connection
// to the endpoint it is given, numbered envelopes streamed out with sendWait and read in,
// checked in order. It posts how far it got, until it is terminated.
'use strict'
const { parentPort, workerData } = require('node:worker_threads')
const { Envelope, Mesh, TcpTransport } = require('../..')

async function main() {
  const mesh = new Mesh(256, 64)
  const id = mesh.add(await new TcpTransport().connect(workerData.endpoint))
  parentPort.postMessage({ connected: true })
  let expected = 0
  ;(async () => {
    for await (const envelope of mesh) {
      const seq = Number(envelope.payload.readBigUInt64BE(0))
      if (seq !== expected) parentPort.postMessage({ bad: `expected ${expected} got ${seq}` })
      expected = seq + 1
      if (expected % 1000 === 0) parentPort.postMessage({ received: expected })
    }
  })()
  for (let seq = 0; ; seq++) {
    const payload = Buffer.alloc(workerData.size)
    payload.writeBigUInt64BE(BigInt(seq))
    await mesh.sendWait(new Envelope(id, payload))
    // A sendWait that finds room resolves at once: yield now and then, so the receiving
    // loop gets its turns.
    if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
  }
}

main().catch((error) => parentPort.postMessage({ bad: String(error) }))
