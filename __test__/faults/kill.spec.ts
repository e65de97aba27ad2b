// Peers killed with SIGKILL while the mesh streams both ways with them: what arrived is a
// prefix, each envelope once and in order; what the mesh had not written comes back; the
// rest of the mesh goes on.
import { readFileSync } from 'node:fs'

import test from 'ava'

import {
  DisconnectError,
  DisconnectErrorKind,
  Envelope,
  Mesh,
  SendError,
  SendErrorKind,
  TcpTransport,
} from '../../index'
import { meshPair, numbered, numberOf, sleep } from '../helpers'
import { assertRun, Peer, portOf } from './peers'

/** The most a sending and a receiving TCP socket buffer hold together (Linux), in bytes. */
function socketBuffers(): number | undefined {
  try {
    const most = (name: string) => Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[2])
    return most('tcp_wmem') + most('tcp_rmem')
  } catch {
    return undefined
  }
}

const ENDED_BY_KILL = [DisconnectErrorKind.Eof, DisconnectErrorKind.EofMidFrame, DisconnectErrorKind.IoError]

/**
 * One round: a peer streams numbered frames to the mesh while the mesh streams numbered
 * envelopes to it; the peer is killed once `after` envelopes from it have arrived.
 */
async function killRound(t: import('ava').ExecutionContext, after: number, size: number) {
  const mesh = new Mesh(1024, 128)
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const peer = new Peer({ mode: 'stream', port: portOf(listener.endpoint), size })
  const id = mesh.add(await listener.accept())
  listener.close()
  const [honestA, honestB] = await meshPair(mesh, transport)

  const fromPeer: number[] = []
  const fromHonest: number[] = []
  let fromPeerAfterNotice = 0
  let notice: DisconnectError | undefined
  mesh.on('disconnect', (gone: number, error: DisconnectError) => {
    if (gone === id) notice = error
  })
  const receiving = (async () => {
    for await (const envelope of mesh) {
      if (envelope.id === id) {
        fromPeer.push(numberOf(envelope.payload))
        if (notice) fromPeerAfterNotice++
      } else if (envelope.id === honestB) fromHonest.push(numberOf(envelope.payload))
    }
  })()

  // The mesh streams to the peer until a send is refused.
  let accepted = 0
  let refused: SendError | undefined
  const sending = (async () => {
    for (let seq = 0; ; seq++) {
      try {
        await mesh.sendWait(new Envelope(id, numbered(seq, size)))
        accepted++
      } catch (error) {
        refused = error as SendError
        return
      }
      // A sendWait that finds room resolves at once, and a loop of them is one task: yield
      // now and then, or a peer that keeps up starves the receives and timers.
      if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
    }
  })()

  await peer.until(() => fromPeer.length >= after && peer.received >= after, `${after} each way`)
  await peer.kill()
  await sending
  // The notice comes after every envelope the peer sent.
  while (!notice) await sleep(5)

  t.true(ENDED_BY_KILL.includes(notice.kind), `ended with ${notice.kind}`)
  t.is(fromPeerAfterNotice, 0, "no envelope of the peer's after its notice")
  t.true(fromPeer.length >= after)
  assertRun(t, fromPeer, 0, 'from the killed peer')
  t.deepEqual(peer.bad, [])

  // To the peer: it received 0..r in order; the mesh hands back a run k..accepted-1 in
  // `unsent`, then the refused one; between r and k, what was in the sockets' buffers.
  t.true(refused instanceof SendError)
  t.is(refused!.kind, SendErrorKind.Disconnected)
  const unsent = notice.unsent.map((envelope) => numberOf(envelope.payload))
  const firstUnsent = unsent.length > 0 ? unsent[0] : accepted
  assertRun(t, unsent, firstUnsent, 'unsent')
  t.is(firstUnsent + unsent.length, accepted, 'unsent ends with the last envelope accepted')
  t.is(numberOf(refused!.envelope!.payload), accepted, 'the refused send hands its envelope back')
  t.true(peer.received < firstUnsent, `received ${peer.received} < first unsent ${firstUnsent}`)
  // What was in flight fit in the two sockets' buffers: nothing piled up elsewhere.
  const inFlight = (firstUnsent - peer.received - 1) * (size + 4)
  const buffers = socketBuffers()
  if (buffers !== undefined) t.true(inFlight <= buffers, `${inFlight} bytes in flight > ${buffers}`)
  t.log(
    `size ${size}: accepted ${accepted}, peer received 0..${peer.received}, unsent ${unsent.length},` +
      ` ${firstUnsent - peer.received - 1} in flight at the kill; ${notice.kind}`,
  )

  // The rest of the mesh goes on.
  for (let seq = 0; seq < 1000; seq++) await mesh.sendWait(new Envelope(honestA, numbered(seq, size)))
  while (fromHonest.length < 1000) await sleep(5)
  assertRun(t, fromHonest, 0, 'honest pair after the kill')
  mesh.shutdown()
  await receiving
}

for (const [after, size] of [
  [1, 1024],
  [2000, 16],
  [5000, 1024],
  [300, 100_000],
] as const) {
  test.serial(
    `a peer killed after ${after} envelopes of ${size} B each way: a prefix arrived, the rest came back`,
    async (t) => {
      await killRound(t, after, size)
    },
  )
}

test.serial('a peer killed in the middle of a frame: every whole frame arrives, then EofMidFrame', async (t) => {
  const mesh = new Mesh(1024, 1024)
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const peer = new Peer({ mode: 'partial', port: portOf(listener.endpoint), whole: 100, size: 3000 })
  const id = mesh.add(await listener.accept())
  listener.close()
  const notices: DisconnectError[] = []
  mesh.on('disconnect', (_: number, error: DisconnectError) => notices.push(error))
  // The mesh sends to it too; the peer reads everything before it dies (so its end closes
  // with FIN, not RST).
  for (let seq = 0; seq < 500; seq++) mesh.send(new Envelope(id, numbered(seq, 1000)))
  const fromPeer: number[] = []
  while (fromPeer.length < 100) fromPeer.push(numberOf((await mesh.recv()).payload))
  await peer.line('partial')
  await peer.until(() => peer.received === 499, 'all 500 envelopes')
  await sleep(50)
  await peer.kill()
  await t.throwsAsync(mesh.recvTimeout(200))
  while (notices.length === 0) await sleep(5)
  assertRun(t, fromPeer, 0, 'whole frames')
  t.is(notices[0].kind, DisconnectErrorKind.EofMidFrame)
  t.is(notices[0].unsent.length, 0)
  t.is(notices.length, 1)
  mesh.shutdown()
})
