'use strict'
// Run by smoke.cjs in a worker thread; `workerData` says what to do:
//
// - 'exchange': load the package, make a mesh, exchange one envelope with itself (both
//   ends of one loopback connection in the same mesh), shut everything down and let the
//   worker end by itself.
// - 'linger': make two meshes, one ref'd with a receive pending, and say so: the parent
//   then terminates the worker with them running.

const { parentPort, threadId, workerData } = require('node:worker_threads')
const { Envelope, Mesh, TcpTransport } = require('../..')

async function exchange() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const [dialled, accepted] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  listener.close()
  const mesh = new Mesh(1, 1)
  const client = mesh.add(dialled)
  const server = mesh.add(accepted)
  mesh.send(new Envelope(client, `from worker ${threadId}`))
  const envelope = await mesh.recv()
  if (envelope.id !== server) throw new Error(`the envelope came from ${envelope.id}, not ${server}`)
  mesh.shutdown()
  return `worker ${threadId} received "${envelope.payload}"`
}

async function linger() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const [dialled, accepted] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  const mesh = new Mesh(4, 4)
  const other = new Mesh(4, 4).unref()
  mesh.add(dialled)
  other.add(accepted)
  // Never settles: the worker is terminated first (a rejection would be a RecvError).
  mesh.recv().catch(() => undefined)
  return `worker ${threadId} runs two meshes, a receive pending`
}

const run = workerData === 'linger' ? linger : exchange
run().then(
  (detail) => parentPort.postMessage({ ok: true, detail }),
  (error) => parentPort.postMessage({ ok: false, error: error && error.stack ? error.stack : String(error) }),
)
