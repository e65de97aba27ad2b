// Lent reads: while a receive waits, the connection last sent to is read by the JavaScript
// thread itself (Unix). What a user relies on: replies still arrive whole and in order,
// with other connections' frames; a peer that ends, a remove or a shutdown while a receive
// waits behave as they always do; and a reply wakes JavaScript without the reactor.
import test from 'ava'
import * as fs from 'node:fs'
import type * as net from 'node:net'

import { DisconnectErrorKind, Envelope, Mesh, RecvError, RecvErrorKind } from '../index'
import { connectionPair, frame, frameReader, nextDisconnect, numbered, numberOf, rawPeer, sleep } from './helpers'

// Serial: it counts the reactors' wakes, and runs before this file's other tests start theirs.
const linuxOnly = process.platform === 'linux' ? test.serial : test.skip

/** Voluntary context switches of each of this process's reactor threads, by thread id (Linux). */
function reactorSwitches(): Map<string, number> {
  const switches = new Map<string, number>()
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (!fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('wiremesh-reacto')) continue
      const status = fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8')
      switches.set(tid, Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0))
    } catch {
      // The thread ended meanwhile.
    }
  }
  return switches
}

/** Wakes of the reactor threads alive at both samples, between them. */
function wakesBetween(before: Map<string, number>, after: Map<string, number>): number {
  let total = 0
  for (const [tid, count] of after) total += count - (before.get(tid) ?? count)
  return total
}

/**
 * Request and reply with a plain peer that answers each request with `reply-N`, so the
 * connection is lent from the second round on (a conversation with one peer).
 */
async function converse(
  mesh: Mesh,
  peer: net.Socket,
  id: number,
  requests: ReturnType<typeof frameReader>,
): Promise<void> {
  for (let n = 0; n < 3; n++) {
    mesh.send(new Envelope(id, `request-${n}`))
    check((await requests.next()).toString() === `request-${n}`)
    peer.write(frame(`reply-${n}`))
    check((await mesh.recv()).payload.toString() === `reply-${n}`)
  }
}

/** A mesh with one connection to a plain socket, lent after a conversation: [mesh, socket, id]. */
async function conversingPeer(incomingCapacity = 64): Promise<[Mesh, net.Socket, number]> {
  const mesh = new Mesh(incomingCapacity, 64)
  const [peer, id] = await rawPeer(mesh)
  await converse(mesh, peer, id, frameReader(peer))
  return [mesh, peer, id]
}

function check(condition: boolean): void {
  if (!condition) throw new Error('the conversation went wrong')
}

linuxOnly('a reply to a waiting receive wakes the JavaScript thread, not the reactor', async (t) => {
  // Two meshes, so each side of the connection has its own reactor.
  const left = new Mesh(64, 64)
  const right = new Mesh(64, 64)
  const [one, two] = await connectionPair()
  const l = left.add(one)
  const r = right.add(two)
  const rounds = 400
  // Warm up, so both connections are lent and both reactors asleep.
  for (let n = 0; n < 20; n++) {
    left.send(new Envelope(l, numbered(n)))
    const request = await right.recv()
    right.send(new Envelope(r, request.payload))
    await left.recv()
  }
  await sleep(20)
  const before = reactorSwitches()
  for (let n = 0; n < rounds; n++) {
    left.send(new Envelope(l, numbered(n)))
    const request = await right.recv()
    t.is(numberOf(request.payload), n)
    right.send(new Envelope(r, request.payload))
    const reply = await left.recv()
    if (numberOf(reply.payload) !== n) t.fail(`reply ${numberOf(reply.payload)} to request ${n}`)
  }
  const woken = wakesBetween(before, reactorSwitches())
  t.log(`reactor wakes in ${rounds} round trips: ${woken}`)
  // Without lending each round trip wakes both reactors (two wakes or more per round).
  t.true(woken < rounds / 4, `the reactors woke ${woken} times in ${rounds} round trips`)
  left.shutdown()
  right.shutdown()
})

test('requests and replies on one connection keep their order beside a stream from another', async (t) => {
  const mesh = new Mesh(1024, 256)
  const [echo, echoId] = await rawPeer(mesh)
  const [streamer, streamId] = await rawPeer(mesh)
  // The echo peer answers every frame with the same frame.
  const requests = frameReader(echo)
  void (async () => {
    for (;;) {
      const request = await requests.next()
      echo.write(frame(request))
    }
  })()
  // The other peer streams numbered frames meanwhile, in pieces.
  const streamed = 3000
  const wire = Buffer.concat(Array.from({ length: streamed }, (_, n) => frame(numbered(n, 40 + (n % 100)))))
  const writer = (async () => {
    for (let at = 0; at < wire.length; at += 1500) {
      streamer.write(wire.subarray(at, at + 1500))
      if ((at / 1500) % 10 === 0) await sleep(1)
    }
  })()
  let nextStreamed = 0
  let replies = 0
  const rounds = 300
  for (let n = 0; n < rounds || nextStreamed < streamed;) {
    if (n < rounds && replies === n) {
      mesh.send(new Envelope(echoId, numbered(n, 100)))
      n++
    }
    const envelope = await mesh.recv()
    if (envelope.id === echoId) {
      t.is(numberOf(envelope.payload), replies, 'replies in order')
      replies++
    } else {
      t.is(envelope.id, streamId)
      if (numberOf(envelope.payload) !== nextStreamed)
        t.fail(`streamed ${numberOf(envelope.payload)}, expected ${nextStreamed}`)
      nextStreamed++
    }
    if (n === rounds && replies === rounds && nextStreamed === streamed) break
  }
  await writer
  t.is(replies, rounds)
  t.is(nextStreamed, streamed)
  echo.destroy()
  streamer.destroy()
  mesh.shutdown()
})

test('a peer that ends while a receive waits on its connection: its frames, then its notice', async (t) => {
  const [mesh, peer, id] = await conversingPeer()
  const disconnected = nextDisconnect(mesh)
  const waiting = mesh.recv()
  await sleep(20)
  peer.end(Buffer.concat([frame('reply'), frame('cut short').subarray(0, 6)]))
  const reply = await waiting
  t.is(reply.payload.toString(), 'reply')
  const [gone, error] = await disconnected
  t.is(gone, id)
  t.is(error.kind, DisconnectErrorKind.EofMidFrame)
  mesh.shutdown()
})

test('remove, then shutdown, while a receive waits on the connection last sent to', async (t) => {
  const [mesh, peer, id] = await conversingPeer()
  const waiting = mesh.recv()
  await sleep(20)
  // The peer's half frame is in the lent reads' decoder when the connection leaves.
  const whole = frame('finished by the connection')
  peer.write(whole.subarray(0, 7))
  await sleep(20)
  const connection = await mesh.remove(id)
  peer.write(whole.subarray(7))
  t.is((await connection.recv()).toString(), 'finished by the connection')
  mesh.shutdown()
  const error = await t.throwsAsync(waiting, { instanceOf: RecvError })
  t.is(error?.kind, RecvErrorKind.Shutdown)
  connection.disconnect()
  peer.destroy()
})

test('frames that arrive while no receive waits are kept for the next one', async (t) => {
  const [mesh, peer, id] = await conversingPeer()
  const waiting = mesh.recv()
  peer.write(frame(numbered(0)))
  t.is(numberOf((await waiting).payload), 0)
  // Nothing waits now.
  peer.write(Buffer.concat([1, 2, 3].map((n) => frame(numbered(n)))))
  await sleep(50)
  const rest = []
  while (rest.length < 3) rest.push(...(await mesh.recvBatch(3)))
  t.deepEqual(
    rest.map((envelope) => numberOf(envelope.payload)),
    [1, 2, 3],
  )
  mesh.shutdown()
  peer.destroy()
})

test('a peer that floods a lent connection while the receiver is slow is held back by TCP', async (t) => {
  const [mesh, peer, id] = await conversingPeer(16)
  const waiting = mesh.recv()
  // 32 MiB of numbered 64-byte frames: far more than the kernel's buffers hold.
  const perChunk = 16384
  const chunks = 32
  for (let c = 0; c < chunks; c++) {
    peer.write(Buffer.concat(Array.from({ length: perChunk }, (_, n) => frame(numbered(c * perChunk + n, 60)))))
  }
  t.is(numberOf((await waiting).payload), 0)
  // No receive waits now: the mesh must not read on into memory.
  await sleep(300)
  const unread = peer.writableLength
  t.true(unread > 16 << 20, `the mesh read all but ${unread} bytes while nobody received`)
  let next = 1
  while (next < chunks * perChunk) {
    for (const envelope of await mesh.recvBatch(4096)) {
      if (numberOf(envelope.payload) !== next) t.fail(`frame ${numberOf(envelope.payload)}, expected ${next}`)
      next++
    }
  }
  t.is(next, chunks * perChunk)
  mesh.shutdown()
  peer.destroy()
})
