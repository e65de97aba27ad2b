// A server loop: one mesh for every client, replies sent with `send`, and `sendWait` when a
// client's outgoing queue is full. It must not crash under load, so it also handles the
// clients that leave with replies still on their way to them.
//
// The example runs the server and its clients in one process, on loopback: CLIENTS clients
// (one client mesh, a connection each) each send MESSAGES messages as fast as they can and
// check that every echo comes back in order; every tenth client leaves half-way through. One
// more client sends and never reads: the server drops it.
//
//   node examples/server.mjs [clients] [messages]     (default 100 1000)

import { once } from 'node:events'

import { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } from 'wiremesh'

const CLIENTS = Number(process.argv[2] ?? 100)
const MESSAGES = Number(process.argv[3] ?? 1000)
const SIZE = 256
const REPLY_DEADLINE = 1000 // ms a reply may wait for room before its client is dropped

// ---- the server -------------------------------------------------------------------------

const stats = { full: 0, gone: 0, slow: 0, left: 0 }

/**
 * Sends one reply. Returns at once while the client's queue has room; on `Full` it waits, at
 * most REPLY_DEADLINE: a client that reads nothing for that long is dropped, so that it
 * cannot stall the loop for every other client. A client that has left is not an error.
 */
async function reply(mesh, envelope) {
  try {
    mesh.send(envelope)
    return
  } catch (error) {
    if (!(error instanceof SendError)) throw error
    if (error.kind === SendErrorKind.Disconnected) return void stats.gone++ // it left; 'disconnect' says why
    if (error.kind !== SendErrorKind.Full) throw error
    stats.full++
  }
  try {
    await mesh.sendWait(envelope, { signal: AbortSignal.timeout(REPLY_DEADLINE) })
  } catch (error) {
    if (error instanceof SendError && error.kind === SendErrorKind.Disconnected) return void stats.gone++
    if (error?.name !== 'TimeoutError') throw error
    stats.slow++
    const connection = await mesh.remove(envelope.id).catch(() => null) // it may have left meanwhile
    connection?.disconnect()
  }
}

async function serve(listener) {
  const mesh = new Mesh(1024, 16) // 16 replies queued per client at most: Full comes quickly
  mesh.on('disconnect', () => stats.left++) // a client that left by itself (end of stream, reset)

  // Accept in the background: the loop ends when the listener closes.
  const accepting = (async () => {
    for await (const connection of listener) mesh.add(connection)
  })()

  // The loop over every client's messages; it ends cleanly when the mesh shuts down.
  const serving = (async () => {
    for await (const envelope of mesh) await reply(mesh, envelope) // echo
  })()

  return { mesh, done: Promise.all([accepting, serving]) }
}

// ---- the clients ------------------------------------------------------------------------

async function clients(endpoint) {
  const transport = new TcpTransport()
  const mesh = new Mesh(4096, 64)
  const ids = []
  for (let n = 0; n < CLIENTS; n++) ids.push(mesh.add(await transport.connect(endpoint)))

  // Every echo, in order: the first 4 bytes of a message are its number.
  const expected = new Map(ids.map((id) => [id, 0]))
  const leavers = new Set(ids.filter((_, n) => n % 10 === 9))
  let complete = 0
  const receiving = (async () => {
    while (complete < ids.length - leavers.size) {
      for (const { id, payload } of await mesh.recvBatch(1024)) {
        if (leavers.has(id)) continue // echoes read before it left still arrive: ignore them
        const number = payload.readUInt32BE(0)
        if (number !== expected.get(id)) throw new Error(`client ${id}: echo ${number}, expected ${expected.get(id)}`)
        expected.set(id, number + 1)
        if (number + 1 === MESSAGES) complete++
      }
    }
  })()

  const sending = ids.map(async (id) => {
    const count = leavers.has(id) ? MESSAGES / 2 : MESSAGES
    for (let number = 0; number < count; number++) {
      const payload = Buffer.alloc(SIZE)
      payload.writeUInt32BE(number, 0)
      try {
        mesh.send(new Envelope(id, payload))
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
        await mesh.sendWait(error.envelope)
      }
      if (number % 256 === 255) await new Promise(setImmediate) // let the others run
    }
    if (leavers.has(id)) (await mesh.remove(id)).disconnect() // leave, with echoes on their way
  })

  await Promise.all([...sending, receiving])
  mesh.shutdown()
  return complete
}

/** A client that sends as fast as it can and never reads, until the server drops it. */
async function stuckClient(endpoint) {
  const mesh = new Mesh(16, 64) // nothing receives from it: its reactor stops reading at 16
  const id = mesh.add(await new TcpTransport().connect(endpoint))
  const payload = Buffer.alloc(16384)
  let sent = 0
  try {
    for (;;) {
      await mesh.sendWait(new Envelope(id, payload))
      if (++sent % 64 === 0) await new Promise(setImmediate)
    }
  } catch (error) {
    if (!(error instanceof SendError) || error.kind !== SendErrorKind.Disconnected) throw error
  } finally {
    mesh.shutdown()
  }
  return sent
}

// ---- run both ---------------------------------------------------------------------------

const listener = await new TcpTransport().listen('127.0.0.1:0')
const server = await serve(listener)
const started = Date.now()
const [complete, stuck] = await Promise.all([clients(listener.endpoint), stuckClient(listener.endpoint)])
const seconds = (Date.now() - started) / 1000

// Every client has gone by now (the last ones when their mesh shut down): the server hears of
// each, once it has received everything that client sent. The one it dropped is not announced.
const deadline = AbortSignal.timeout(10_000)
while (stats.left < CLIENTS) await once(server.mesh, 'disconnect', { signal: deadline })

listener.close()
server.mesh.shutdown()
await server.done

const leavers = Math.floor(CLIENTS / 10)
console.log(
  `${CLIENTS} clients sent ${MESSAGES} messages of ${SIZE} B each in ${seconds.toFixed(2)} s; ` +
    `${complete} got every echo in order, ${leavers} left half-way; one sent ${stuck} messages and never read`,
)
console.log(
  `the server met Full ${stats.full} times (and waited), found ${stats.gone} replies for clients that had left, ` +
    `dropped ${stats.slow} slow clients; ${stats.left} disconnects announced`,
)
if (complete !== CLIENTS - leavers) throw new Error(`${CLIENTS - leavers - complete} clients are missing echoes`)
if (stats.slow !== 1) throw new Error(`the client that never reads should have been dropped`)
if (stats.left !== CLIENTS) throw new Error(`${CLIENTS} clients left, ${stats.left} disconnects were announced`)
