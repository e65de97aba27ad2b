import test from 'ava'

import { DisconnectError, DisconnectErrorKind, Envelope, Mesh, MeshError, RemoveError, SendError } from '../index'
import { frame, meshPair, nextDisconnect, numbered, numberOf, rawPeer, sleep } from './helpers'

async function stillDelivers(t: import('ava').ExecutionContext, mesh: Mesh, client: number, server: number) {
  mesh.send(new Envelope(client, 'still here'))
  const envelope = await mesh.recv()
  t.is(envelope.id, server)
  t.is(envelope.payload.toString(), 'still here')
}

test('a peer that closes between frames is announced once, after its last frame', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client, server] = await meshPair(mesh)
  const [peer, id] = await rawPeer(mesh)
  const events: Array<[number, DisconnectError]> = []
  mesh.on('disconnect', (disconnectedId, error) => events.push([disconnectedId, error]))
  const announced = nextDisconnect(mesh)
  peer.end(frame('last words'))

  const envelope = await mesh.recv()
  t.is(envelope.id, id)
  t.is(envelope.payload.toString(), 'last words')
  const [disconnectedId, error] = await announced
  t.is(disconnectedId, id)
  t.true(error instanceof DisconnectError)
  t.true(error instanceof MeshError)
  t.is(error.kind, DisconnectErrorKind.Eof)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_EOF')
  t.is(error.id, id)
  t.deepEqual(error.unsent, [])
  await sleep(100)
  t.is(events.length, 1, 'announced once')
  await stillDelivers(t, mesh, client, server)
  mesh.shutdown()
})

test('a peer that vanishes mid-frame is announced with EofMidFrame and delivers nothing partial', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client, server] = await meshPair(mesh)
  const [peer, id] = await rawPeer(mesh)
  const announced = nextDisconnect(mesh)
  peer.write(frame('0123456789').subarray(0, 7))
  await sleep(20)
  peer.end()
  const [disconnectedId, error] = await announced
  t.is(disconnectedId, id)
  t.is(error.kind, DisconnectErrorKind.EofMidFrame)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_EOF_MID_FRAME')
  t.is(mesh.tryRecv(), null)
  await stillDelivers(t, mesh, client, server)
  mesh.shutdown()
})

test('a hostile 0xFFFFFFFF length header closes only that connection', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client, server] = await meshPair(mesh)
  const [peer, id] = await rawPeer(mesh)
  const announced = nextDisconnect(mesh)
  const closed = new Promise((resolve) => peer.once('close', resolve))
  peer.on('error', () => {})
  peer.write(Buffer.concat([frame('fine'), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])]))
  t.is((await mesh.recv()).payload.toString(), 'fine')
  const [disconnectedId, error] = await announced
  t.is(disconnectedId, id)
  t.is(error.kind, DisconnectErrorKind.Protocol)
  t.regex(error.message, /4294967295 bytes exceeds the maximum frame size/)
  await closed
  await stillDelivers(t, mesh, client, server)
  mesh.shutdown()
})

test('after a disconnect, sends are refused with the envelope and remove is NotFound', async (t) => {
  const mesh = new Mesh(8, 8)
  const [peer, id] = await rawPeer(mesh)
  const announced = nextDisconnect(mesh)
  peer.end()
  await announced
  const error = t.throws<SendError>(() => mesh.send(new Envelope(id, 'too late')))
  t.true(error?.code === 'ERR_WIREMESH_SEND_NOT_FOUND' || error?.code === 'ERR_WIREMESH_SEND_DISCONNECTED')
  t.is(error?.envelope?.payload.toString(), 'too late')
  await t.throwsAsync<RemoveError>(mesh.remove(id), { code: 'ERR_WIREMESH_REMOVE_NOT_FOUND' })
  mesh.shutdown()
})

test('frames queued for a peer that resets come back with the disconnect', async (t) => {
  const mesh = new Mesh(8, 16)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  let queued = 0
  for (;;) {
    try {
      mesh.send(new Envelope(id, numbered(queued, 64 * 1024)))
      queued++
    } catch {
      break
    }
    if (queued % 4 === 0) await sleep(2)
  }
  const announced = nextDisconnect(mesh)
  peer.resetAndDestroy()
  const [, error] = await announced
  t.is(error.kind, DisconnectErrorKind.IoError, error.message)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_IO_ERROR')
  t.true(error.unsent.length > 0, 'a full queue has frames to give back')
  const numbers = error.unsent.map((e) => numberOf(e.payload))
  t.deepEqual(
    numbers,
    Array.from({ length: numbers.length }, (_, k) => queued - numbers.length + k),
    'the newest, in order',
  )
  t.true(error.unsent.every((e) => e.id === id && e.payload.length === 64 * 1024))
  mesh.shutdown()
})

test("'disconnect' is emitted after every envelope of its connection was received", async (t) => {
  // The peer writes its frames and closes at once; the receiving loop must have every one
  // of them when the event comes, in each of ten rounds.
  const frames = 2000
  for (let round = 0; round < 10; round++) {
    const mesh = new Mesh(64, 8)
    const [peer, id] = await rawPeer(mesh)
    peer.on('error', () => {})
    const received: number[] = []
    const announced = new Promise<number>((resolve) =>
      mesh.once('disconnect', (disconnected) => {
        t.is(disconnected, id)
        resolve(received.length)
      }),
    )
    peer.end(Buffer.concat(Array.from({ length: frames }, (_, n) => frame(numbered(n)))))
    const receiving = (async () => {
      for await (const envelope of mesh) {
        received.push(numberOf(envelope.payload))
        if (received.length === frames) return
      }
    })()
    await receiving
    t.is(await announced, frames, `round ${round}: the event came after the last envelope`)
    t.deepEqual(
      received,
      Array.from({ length: frames }, (_, n) => n),
    )
    mesh.shutdown()
  }
})

test("'disconnect' reaches a mesh that only sends", async (t) => {
  const mesh = new Mesh(8, 8)
  const [peer, id] = await rawPeer(mesh)
  const announced = nextDisconnect(mesh)
  peer.end()
  const [disconnected, error] = await announced
  t.is(disconnected, id)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_EOF')
  mesh.shutdown()
})
