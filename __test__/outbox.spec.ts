// Sends are encoded into a per-mesh outbox and cross into native code in batches. What a
// user relies on must not change: order per connection, exact Full at the call, and every
// envelope either delivered or handed back.
import test from 'ava'

import { DisconnectError, Envelope, Mesh, SendError, SendErrorKind, TcpTransport } from '../index'
import { frameReader, meshPair, nextDisconnect, numbered, numberOf, rawPeer, sleep } from './helpers'

/** Blocks this thread (no event loop turn, no wake handler) for `ms` milliseconds. */
function blockFor(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

test('sends to many connections in one task arrive in order on each', async (t) => {
  const mesh = new Mesh(4096, 1024)
  const pairs = await Promise.all(Array.from({ length: 8 }, () => meshPair(mesh)))
  const perConnection = 500
  for (let n = 0; n < perConnection; n++) {
    for (const [client] of pairs) mesh.send(new Envelope(client, numbered(n)))
  }
  const seen = new Map<number, number>()
  for (let received = 0; received < perConnection * pairs.length;) {
    for (const envelope of await mesh.recvBatch(4096)) {
      const expected = seen.get(envelope.id) ?? 0
      t.is(numberOf(envelope.payload), expected, `connection ${envelope.id} in order`)
      seen.set(envelope.id, expected + 1)
      received++
    }
  }
  t.deepEqual(
    pairs.map(([, server]) => seen.get(server)),
    pairs.map(() => perConnection),
  )
  mesh.shutdown()
})

test('small and large payloads to one connection keep their order', async (t) => {
  const mesh = new Mesh(256, 256)
  const [client, server] = await meshPair(mesh)
  const sizes = [16, 64 * 1024, 16, 16, 1024 * 1024, 0 + 16, 20 * 1024, 16]
  sizes.forEach((size, n) => mesh.send(new Envelope(client, numbered(n, size))))
  for (let n = 0; n < sizes.length; n++) {
    const envelope = await mesh.recv()
    t.is(envelope.id, server)
    t.is(numberOf(envelope.payload), n)
    t.is(envelope.payload.length, sizes[n])
  }
  mesh.shutdown()
})

test('Full is thrown at the call, with the envelope, once the queue is full', async (t) => {
  const mesh = new Mesh(8, 100)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  // The queue holds 100; frames the reactor has already written to the socket make room,
  // so within one task at least 100 are accepted before the first Full.
  let sent = 0
  let error: SendError | undefined
  while (error === undefined && sent < 1_000_000) {
    try {
      mesh.send(new Envelope(id, numbered(sent)))
      sent++
    } catch (caught) {
      error = caught as SendError
    }
  }
  t.true(error instanceof SendError)
  t.is(error?.kind, SendErrorKind.Full)
  t.true(sent >= 100, `${sent} accepted`)
  t.is(numberOf(error!.envelope!.payload), sent, 'the envelope that did not fit comes back')
  const reader = frameReader(peer)
  peer.resume()
  for (let n = 0; n < sent; n++) t.is(numberOf(await reader.next()), n)
  mesh.send(new Envelope(id, numbered(sent + 1)))
  t.is(numberOf(await reader.next()), sent + 1, 'the refused envelope was not sent')
  peer.destroy()
  mesh.shutdown()
})

test('sends accepted just before the connection dropped come back with its disconnect', async (t) => {
  const mesh = new Mesh(8, 64)
  const [peer, id] = await rawPeer(mesh)
  const reader = frameReader(peer)
  mesh.send(new Envelope(id, numbered(0)))
  t.is(numberOf(await reader.next()), 0)
  const announced = nextDisconnect(mesh)
  peer.destroy()
  // The reactor closes the connection while this thread cannot hear of it; the mesh still
  // counts room for it, so these sends are accepted.
  blockFor(300)
  for (let n = 1; n <= 3; n++) mesh.send(new Envelope(id, numbered(n)))
  const [disconnected, error] = await announced
  t.is(disconnected, id)
  t.true(error instanceof DisconnectError)
  t.deepEqual(
    error.unsent.map((envelope) => [envelope.id, numberOf(envelope.payload)]),
    [
      [id, 1],
      [id, 2],
      [id, 3],
    ],
  )
  // An id the mesh gave out stays Disconnected, before and after its notice.
  const after = t.throws(() => mesh.send(new Envelope(id, numbered(4))), { instanceOf: SendError })
  t.is(after?.kind, SendErrorKind.Disconnected)
  mesh.shutdown()
})

test('frames sent just before remove leave with the connection, in order', async (t) => {
  const mesh = new Mesh(8, 64)
  const [peer, id] = await rawPeer(mesh)
  const reader = frameReader(peer)
  for (let n = 0; n < 3; n++) mesh.send(new Envelope(id, numbered(n)))
  const connection = await mesh.remove(id)
  await connection.send(numbered(3))
  for (let n = 0; n < 4; n++) t.is(numberOf(await reader.next()), n)
  t.throws(() => mesh.send(new Envelope(id, numbered(9))), {
    instanceOf: SendError,
    code: 'ERR_WIREMESH_SEND_DISCONNECTED',
  })
  peer.destroy()
  mesh.shutdown()
})

test('a payload over the limit is refused at the call, others to the same connection go on', async (t) => {
  const mesh = new Mesh(8, 64)
  const [client, server] = await meshPair(mesh, new TcpTransport({ maxFrameSize: 32 }))
  mesh.send(new Envelope(client, numbered(0, 32)))
  const error = t.throws(() => mesh.send(new Envelope(client, numbered(1, 33))), { instanceOf: SendError })
  t.is(error?.kind, SendErrorKind.TooLarge)
  mesh.send(new Envelope(client, numbered(2, 32)))
  t.deepEqual(
    [await mesh.recv(), await mesh.recv()].map((e) => [e.id, numberOf(e.payload)]),
    [
      [server, 0],
      [server, 2],
    ],
  )
  await sleep(1)
  mesh.shutdown()
})

test("the outbox writes the core codec's literal frames", async (t) => {
  // The same vectors as `encodes_literal_bytes` in native/core/src/codec.rs: the outbox
  // encodes headers in JavaScript (one copy per send, see benchmark/send-batching.mjs),
  // and they must be the codec's bytes exactly.
  const mesh = new Mesh(8, 64)
  const [peer, id] = await rawPeer(mesh)
  const received: Buffer[] = []
  peer.on('data', (chunk: Buffer) => received.push(chunk))
  mesh.send(new Envelope(id, Buffer.alloc(0)))
  mesh.send(new Envelope(id, Buffer.from([1])))
  mesh.send(new Envelope(id, 'ab'))
  const expected = Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0x61, 0x62])
  const deadline = Date.now() + 5000
  while (Buffer.concat(received).length < expected.length && Date.now() < deadline) await sleep(5)
  t.deepEqual(Buffer.concat(received), expected)
  peer.destroy()
  mesh.shutdown()
})
