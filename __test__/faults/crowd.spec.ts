// Crowds: thousands of connections that each hold part of a frame (slowloris), and peers
// flooding empty frames beside an honest one. Neither costs the mesh more than the bytes
// that arrived, nor keeps the honest connections from their turn.
import { execFileSync } from 'node:child_process'
import path from 'node:path'

import test from 'ava'

import { Mesh, TcpTransport } from '../../index'
import { frame, numbered, numberOf, rawPeer } from '../helpers'
import { assertRun, Peer, portOf } from './peers'

/** `ulimit -n` raised as far as the hard limit allows, in a shell for the child. */
const RAISE_LIMIT = 'ulimit -n 16384 2>/dev/null || ulimit -n $(ulimit -Hn) 2>/dev/null; '

test.serial('a slowloris crowd costs what arrived, and the honest pair beside it goes on', (t) => {
  if (process.platform === 'win32') {
    t.log('skipped: the crowd runs under sh with ulimit')
    t.pass()
    return
  }
  const limit = Number(execFileSync('sh', ['-c', `${RAISE_LIMIT}ulimit -n`], { encoding: 'utf8' }).trim())
  // Each crowd connection is two descriptors in the mesh's process and one in the crowd's;
  // two crowds at once.
  const count = Math.min(2000, Math.floor((limit - 200) / 4))
  t.true(count >= 200, `a descriptor limit of ${limit} leaves room for a crowd`)
  const child = path.join(__dirname, 'crowd-mesh.cjs')
  const output = execFileSync(
    'sh',
    ['-c', `${RAISE_LIMIT}exec "${process.execPath}" --expose-gc "${child}" ${count}`],
    { encoding: 'utf8', timeout: 100_000 },
  )
  const found = JSON.parse(output.trim().split('\n').pop() as string)
  t.log(
    `${count} connections each: idle ${found.idlePerConnection} B,` +
      ` holding part of a frame ${found.partialPerConnection} B of resident memory`,
  )
  t.is(found.failed, undefined)
  t.true(found.honestInOrder, 'the honest pair delivered every envelope in order')
  // Half hold two bytes of a header; half a header announcing 16 MiB and 200 bytes of it.
  // A connection that kept a 64 KiB read buffer for its partial frame would cost 32 KiB
  // more on average; what arrived costs at most a 4 KiB first chunk.
  t.true(
    found.partialPerConnection - found.idlePerConnection < 16 * 1024,
    `a partial frame costs ${found.partialPerConnection - found.idlePerConnection} B more than an idle connection`,
  )
  t.deepEqual(found.notices, { Eof: count, EofMidFrame: count }, 'every connection of the dead crowds is announced')
})

test.serial('peers flooding empty frames get a quantum per round like the honest one beside them', async (t) => {
  const QUANTUM = 256
  const mesh = new Mesh(1024, 64)
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const flood = new Peer({ mode: 'flood', port: portOf(listener.endpoint), connections: 2 })
  mesh.add(await listener.accept())
  mesh.add(await listener.accept())
  listener.close()
  await flood.line('ready')
  const [socket, honest] = await rawPeer(mesh, transport)
  // Let the flood fill everything first: the incoming queue, the sockets.
  let flooded = 0
  while (flooded < 100_000) flooded += (await mesh.recvBatch(256)).length
  // Then the honest peer's 2000 frames arrive in one write.
  const frames: Buffer[] = []
  for (let seq = 0; seq < 2000; seq++) frames.push(frame(numbered(seq, 8)))
  socket.write(Buffer.concat(frames))
  const seqs: number[] = []
  let run = 0
  let longestRun = 0
  let between = 0
  while (seqs.length < 2000) {
    for (const envelope of await mesh.recvBatch(256)) {
      if (envelope.id === honest) {
        if (seqs.length > 0) longestRun = Math.max(longestRun, run)
        seqs.push(numberOf(envelope.payload))
        run = 0
      } else {
        run++
        if (seqs.length > 0 && seqs.length < 2000) between++
      }
    }
  }
  await flood.kill()
  socket.destroy()
  assertRun(t, seqs, 0, 'the honest peer')
  t.log(`${between} flood envelopes among the honest ones; at most ${longestRun} in a row`)
  // The flooders competed all along (each round gave them their quanta)...
  t.true(between >= 1000, `${between} flood envelopes among the honest ones`)
  // ...and never more than a quantum each between two of the honest peer's envelopes.
  t.true(longestRun <= 2 * QUANTUM, `${longestRun} flood envelopes in a row`)
  mesh.shutdown()
})
