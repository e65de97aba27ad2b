import test from 'ava'

import { Envelope, Mesh, SendError, SendErrorKind } from '../index'
import { frame, frameReader, meshPair, numbered, numberOf, rawPeer, sleep } from './helpers'

/** Sends to `id` until the queue reports Full; returns how many were queued and the error. */
async function fill(mesh: Mesh, id: number, size = 64 * 1024): Promise<[number, SendError]> {
  let fullOnce = false
  for (let n = 0; ;) {
    try {
      mesh.send(new Envelope(id, numbered(n, size)))
      n++
      fullOnce = false
    } catch (error) {
      if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
      // Full twice, with time between for the reactor to move frames into the socket: the
      // socket and the queue are both full, so room only comes once the peer reads.
      if (fullOnce) return [n, error]
      fullOnce = true
      await sleep(20)
      continue
    }
    // Let the reactor move frames into the socket as far as it goes.
    if (n % 4 === 0) await sleep(2)
  }
}

test('a peer that never reads fills its queue, Full hands the envelope back, another connection keeps delivering', async (t) => {
  const mesh = new Mesh(64, 8)
  const [stuckPeer, stuck] = await rawPeer(mesh)
  stuckPeer.pause()
  const [client, server] = await meshPair(mesh)

  const [queued, full] = await fill(mesh, stuck)
  t.true(queued > 0)
  t.is(full.code, 'ERR_WIREMESH_SEND_FULL')
  t.is(full.envelope?.id, stuck)
  t.is(numberOf(full.envelope!.payload), queued, 'the envelope that did not fit comes back whole')

  for (let n = 0; n < 100; n++) {
    mesh.send(new Envelope(client, numbered(n)))
    const envelope = await mesh.recv()
    t.is(envelope.id, server)
    t.is(numberOf(envelope.payload), n)
  }
  stuckPeer.destroy()
  mesh.shutdown()
})

test('sendWait waits for room instead of throwing, and keeps the order', async (t) => {
  const mesh = new Mesh(8, 4)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  const [queued] = await fill(mesh, id)
  const waits = [0, 1, 2].map((k) => mesh.sendWait(new Envelope(id, numbered(queued + k, 64 * 1024))))
  // A plain send behind waiting sendWaits must not overtake them.
  t.throws(() => mesh.send(new Envelope(id, numbered(999))), { code: 'ERR_WIREMESH_SEND_FULL' })
  const reader = frameReader(peer)
  peer.resume()
  await Promise.all(waits)
  for (let n = 0; n < queued + 3; n++) t.is(numberOf(await reader.next()), n)
  peer.destroy()
  mesh.shutdown()
})

test('sendWait gives up when its signal aborts', async (t) => {
  const mesh = new Mesh(8, 4)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  await fill(mesh, id)
  const controller = new AbortController()
  const waiting = mesh.sendWait(new Envelope(id, 'never'), { signal: controller.signal })
  controller.abort()
  // The signal's reason, an AbortError DOMException, is what the promise rejects with.
  const reason = await waiting.then(
    () => null,
    (error: unknown) => error,
  )
  t.is((reason as DOMException | null)?.name, 'AbortError')
  const early = await mesh.sendWait(new Envelope(id, 'x'), { signal: AbortSignal.abort() }).then(
    () => null,
    (error: unknown) => error,
  )
  t.is((early as DOMException | null)?.name, 'AbortError')
  peer.destroy()
  mesh.shutdown()
})

test('sendWait rejects with Disconnected when the connection goes while it waits', async (t) => {
  const mesh = new Mesh(8, 4)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  await fill(mesh, id)
  const waiting = mesh.sendWait(new Envelope(id, 'too late'))
  peer.destroy()
  const error = await t.throwsAsync<SendError>(waiting)
  t.is(error?.kind, SendErrorKind.Disconnected, 'one rule: an id the mesh gave out is Disconnected once it left')
  t.is(error?.envelope?.payload.toString(), 'too late')
  mesh.shutdown()
})

test('sendWait rejects with Disconnected when its connection is removed while it waits, in every round', async (t) => {
  for (let round = 0; round < 10; round++) {
    const mesh = new Mesh(8, 4)
    const [peer, id] = await rawPeer(mesh)
    peer.pause()
    await fill(mesh, id)
    const waiting = mesh.sendWait(new Envelope(id, 'too late'))
    const removed = mesh.remove(id)
    const error = await t.throwsAsync<SendError>(waiting)
    t.is(error?.code, 'ERR_WIREMESH_SEND_DISCONNECTED', `round ${round}`)
    ;(await removed).disconnect()
    peer.destroy()
    mesh.shutdown()
  }
})

test('shutdown hands back every envelope it did not write, in a disconnect of kind Shutdown', async (t) => {
  // A peer that reads nothing until the mesh is shut down, and a queue filled up: what
  // the peer then reads and what the event hands back are every envelope sent, once, in
  // order.
  const mesh = new Mesh(8, 64)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  const reader = frameReader(peer)
  const [sent] = await fill(mesh, id)
  const announced = new Promise<import('../index').DisconnectError>((resolve) =>
    mesh.once('disconnect', (_, error) => resolve(error)),
  )
  mesh.shutdown()
  const error = await announced
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_SHUTDOWN')
  t.is(error.id, id)
  const back = error.unsent.map((envelope) => numberOf(envelope.payload))
  t.true(back.length > 0, 'a full queue leaves envelopes to hand back')
  const ended = new Promise((resolve) => peer.once('end', resolve))
  peer.resume()
  await ended
  const read = reader.frames.map(numberOf)
  t.deepEqual(
    [...read, ...back],
    Array.from({ length: sent }, (_, n) => n),
    'every envelope once, in order',
  )
})

test('sendWaits pending at shutdown reject with Disconnected and hand their envelopes back', async (t) => {
  const mesh = new Mesh(8, 4)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  await fill(mesh, id)
  const waiting = Array.from({ length: 1000 }, (_, n) => mesh.sendWait(new Envelope(id, numbered(n))))
  mesh.shutdown()
  const settled = await Promise.allSettled(waiting)
  for (const [n, result] of settled.entries()) {
    t.is(result.status, 'rejected')
    const error = (result as PromiseRejectedResult).reason as SendError
    t.is(error.code, 'ERR_WIREMESH_SEND_DISCONNECTED')
    t.is(numberOf(error.envelope!.payload), n)
  }
  peer.destroy()
})

test('a slow consumer with room for four receives a hundred thousand envelopes once, in order', async (t) => {
  const total = 100_000
  const mesh = new Mesh(4, 4)
  const [peer, id] = await rawPeer(mesh)
  const chunks: Buffer[] = []
  for (let n = 0; n < total; n++) chunks.push(frame(numbered(n)))
  peer.write(Buffer.concat(chunks))
  for (let n = 0; n < total; n++) {
    const envelope = await mesh.recv()
    if (envelope.id !== id || numberOf(envelope.payload) !== n) {
      t.fail(`envelope ${n}: got ${numberOf(envelope.payload)} from ${envelope.id}`)
      break
    }
    if (n % 20_000 === 0) await sleep(20)
  }
  t.is(mesh.tryRecv(), null, 'nothing more than was sent')
  peer.destroy()
  mesh.shutdown()
})
