// A peer that resets the connection in the middle of a large send, and a peer that ends
// its write side but keeps reading (half-close): the mesh's policy for each, with every
// envelope accounted for.
import { once } from 'node:events'
import type { Socket } from 'node:net'

import test from 'ava'

import { DisconnectError, DisconnectErrorKind, Envelope, Mesh, SendError } from '../../index'
import { frame, meshPair, numbered, numberOf, rawPeer, sleep } from '../helpers'
import { assertRun } from './peers'

/** Reads numbered frames from a plain socket: their numbers, and the bytes read. */
function reader(socket: Socket) {
  const state = { seqs: [] as number[], bytes: 0 }
  let pending = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => {
    state.bytes += chunk.length
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    let offset = 0
    while (pending.length - offset >= 4) {
      const length = pending.readUInt32BE(offset)
      if (pending.length - offset < 4 + length) break
      state.seqs.push(numberOf(pending.subarray(offset + 4)))
      offset += 4 + length
    }
    pending = pending.subarray(offset)
  })
  return state
}

test.serial(
  'a reset in the middle of a large send: the frames before it arrived, the large one and all after come back',
  async (t) => {
    const mesh = new Mesh(64, 64)
    const [socket, id] = await rawPeer(mesh)
    const [honestA, honestB] = await meshPair(mesh)
    socket.on('error', () => {})
    const read = reader(socket)
    const notice = once(mesh, 'disconnect') as Promise<[number, DisconnectError]>
    const large = 12 * 1024 * 1024
    const sizes = [100, 100, 100, large, 100, 100, 100, 100]
    for (const [seq, size] of sizes.entries()) mesh.send(new Envelope(id, numbered(seq, size)))
    // Reset once a megabyte of the large frame has arrived.
    while (read.bytes < 3 * 104 + 1024 * 1024) await sleep(1)
    socket.resetAndDestroy()
    const [gone, error] = await notice
    t.is(gone, id)
    t.is(error.kind, DisconnectErrorKind.IoError, error.message)
    t.deepEqual(read.seqs, [0, 1, 2])
    const unsent = error.unsent.map((envelope) => numberOf(envelope.payload))
    t.deepEqual(unsent, [3, 4, 5, 6, 7], 'the partly written frame comes back whole, then the rest')
    t.is(error.unsent[0].payload.length, large)
    t.true(error.unsent[0].payload.equals(numbered(3, large)))
    // Sends to it now hand the envelope back at the call.
    const refused = t.throws(() => mesh.send(new Envelope(id, numbered(8))), { instanceOf: SendError })
    t.is(numberOf(refused!.envelope!.payload), 8)
    // The other connection goes on.
    for (let seq = 0; seq < 200; seq++) await mesh.sendWait(new Envelope(honestA, numbered(seq)))
    const honest: number[] = []
    while (honest.length < 200) {
      const envelope = await mesh.recv()
      if (envelope.id === honestB) honest.push(numberOf(envelope.payload))
    }
    assertRun(t, honest, 0, 'the other connection')
    mesh.shutdown()
  },
)

test.serial(
  'half-close: a peer that ends its write side ends the connection; it reads everything written, the rest comes back',
  async (t) => {
    const mesh = new Mesh(1024, 64)
    const [socket, id] = await rawPeer(mesh)
    const read = reader(socket)
    const closed = once(socket, 'close')
    // The peer reads nothing at first: the sockets' buffers and the mesh's queue fill.
    socket.pause()
    const notices: DisconnectError[] = []
    mesh.on('disconnect', (_: number, error: DisconnectError) => notices.push(error))
    // The mesh streams to the peer until a send is refused.
    let accepted = 0
    let refused: SendError | undefined
    const sending = (async () => {
      for (let seq = 0; ; seq++) {
        try {
          await mesh.sendWait(new Envelope(id, numbered(seq, 1024)))
          accepted++
        } catch (error) {
          refused = error as SendError
          return
        }
        // A sendWait that finds room resolves at once: yield now and then (see kill.spec.ts).
        if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
      }
    })()
    // The peer sends a thousand frames, then ends its write side and goes on reading.
    const frames: Buffer[] = []
    for (let seq = 0; seq < 1000; seq++) frames.push(frame(numbered(seq, 100)))
    await sleep(200)
    socket.end(Buffer.concat(frames))
    const received: number[] = []
    while (received.length < 1000) received.push(numberOf((await mesh.recv()).payload))
    await sending
    while (notices.length === 0) await sleep(5)
    // Now it reads what the mesh wrote before it closed.
    socket.resume()
    await closed

    assertRun(t, received, 0, 'from the peer')
    t.is(notices.length, 1)
    t.is(notices[0].kind, DisconnectErrorKind.Eof)
    t.is(refused?.kind, 'Disconnected')
    t.true(notices[0].unsent.length > 0, 'the queue was full when the peer ended')
    // Nothing in flight: the peer read all the mesh wrote, up to its close.
    assertRun(t, read.seqs, 0, 'to the peer')
    const unsent = notices[0].unsent.map((envelope) => numberOf(envelope.payload))
    assertRun(t, unsent, read.seqs.length, 'unsent')
    t.is(read.seqs.length + unsent.length, accepted, 'every accepted envelope was read or came back')
    t.is(numberOf(refused!.envelope!.payload), accepted)
    t.log(`peer read ${read.seqs.length}, ${unsent.length} came back, ${accepted} accepted`)
    mesh.shutdown()
  },
)
