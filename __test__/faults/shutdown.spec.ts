// Shutdown in the middle of everything: thousands of receives and sendWaits pending, full
// queues to peers that do not read. All settle; every accepted envelope is read by its
// peer or handed back, once, in order.
import type { Socket } from 'node:net'

import test from 'ava'

import {
  DisconnectError,
  DisconnectErrorKind,
  Envelope,
  Mesh,
  RecvError,
  RecvErrorKind,
  SendError,
  SendErrorKind,
} from '../../index'
import { numbered, numberOf, rawPeer, sleep } from '../helpers'
import { assertRun } from './peers'

/** The numbers of the frames a plain socket reads until it closes. */
function readAll(socket: Socket): Promise<number[]> {
  const seqs: number[] = []
  let pending = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    let offset = 0
    while (pending.length - offset >= 4 && pending.length - offset >= 4 + pending.readUInt32BE(offset)) {
      seqs.push(numberOf(pending.subarray(offset + 4)))
      offset += 4 + pending.readUInt32BE(offset)
    }
    pending = pending.subarray(offset)
  })
  return new Promise((resolve) => socket.once('close', () => resolve(seqs)))
}

test.serial(
  'shutdown with thousands of pending receives and sendWaits: all settle, nothing accepted is lost',
  async (t) => {
    const PEERS = 8
    const WAITS = 250
    const RECEIVES = 2000
    const mesh = new Mesh(64, 32)
    const clone = mesh.clone()
    const peers: Array<{ socket: Socket; id: number; sent: number }> = []
    for (let i = 0; i < PEERS; i++) {
      const [socket, id] = await rawPeer(mesh)
      socket.pause()
      peers.push({ socket, id, sent: 0 })
    }
    const receives = Array.from({ length: RECEIVES }, (_, i) =>
      (i % 2 === 0 ? mesh : clone).recv().then(
        () => 'an envelope',
        (error: unknown) => error,
      ),
    )
    // Fill every queue (and the sockets' buffers behind them), then wait for room.
    const waits: Array<Promise<{ id: number; seq: number; error?: SendError }>> = []
    for (const peer of peers) {
      for (;;) {
        try {
          mesh.send(new Envelope(peer.id, numbered(peer.sent, 1024)))
          peer.sent++
        } catch (error) {
          t.is((error as SendError).kind, SendErrorKind.Full)
          // Some room may come as the reactor writes: try again after it has had a turn.
          await sleep(20)
          try {
            mesh.send(new Envelope(peer.id, numbered(peer.sent, 1024)))
            peer.sent++
            continue
          } catch {
            break
          }
        }
      }
      for (let k = 0; k < WAITS; k++) {
        const seq = peer.sent++
        waits.push(
          mesh.sendWait(new Envelope(peer.id, numbered(seq, 1024))).then(
            () => ({ id: peer.id, seq }),
            (error: SendError) => ({ id: peer.id, seq, error }),
          ),
        )
      }
    }
    const notices = new Map<number, DisconnectError>()
    mesh.on('disconnect', (id: number, error: DisconnectError) => notices.set(id, error))
    const reads = peers.map((peer) => readAll(peer.socket))

    mesh.shutdown()

    // Every receive settles with Shutdown.
    const received = await Promise.all(receives)
    t.true(
      received.every((error) => error instanceof RecvError && error.kind === RecvErrorKind.Shutdown),
      'every pending receive rejects with Shutdown',
    )
    // Every sendWait settles; those refused hand their envelope back.
    const settled = await Promise.all(waits)
    t.is(settled.length, PEERS * WAITS)
    for (const wait of settled) {
      if (wait.error === undefined) continue
      t.is(wait.error.kind, SendErrorKind.Disconnected)
      t.is(numberOf(wait.error.envelope!.payload), wait.seq)
    }
    await sleep(0)
    await new Promise((resolve) => setImmediate(resolve))
    // The peers read what was written before the close; the rest came back.
    for (const peer of peers) peer.socket.resume()
    const read = await Promise.all(reads)
    for (const [i, peer] of peers.entries()) {
      const notice = notices.get(peer.id)
      const unsent = (notice?.unsent ?? []).map((envelope) => numberOf(envelope.payload))
      if (notice) t.is(notice.kind, DisconnectErrorKind.Shutdown)
      const refused = settled.filter((wait) => wait.id === peer.id && wait.error).map((wait) => wait.seq)
      assertRun(t, read[i], 0, `peer ${i} read`)
      assertRun(t, unsent, read[i].length, `peer ${i} unsent`)
      assertRun(t, refused, read[i].length + unsent.length, `peer ${i} refused sendWaits`)
      t.is(read[i].length + unsent.length + refused.length, peer.sent, `peer ${i}: every envelope accounted for`)
    }
    const handedBack = [...notices.values()].reduce((sum, notice) => sum + notice.unsent.length, 0)
    t.log(
      `${RECEIVES} receives rejected; ${settled.filter((w) => w.error).length} sendWaits refused;` +
        ` ${handedBack} handed back in notices; ${read.reduce((sum, r) => sum + r.length, 0)} read by the peers`,
    )
  },
)
