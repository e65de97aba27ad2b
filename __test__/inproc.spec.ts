// The in-process transport (`inproc://name`): meshes in different worker threads of one
// process talk through the process-wide registry, with the same frames, backpressure and
// disconnect notices as the other transports.
import { once } from 'node:events'
import path from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import {
  ConnectError,
  ConnectErrorKind,
  DisconnectError,
  DisconnectErrorKind,
  Envelope,
  InprocTransport,
  ListenError,
  ListenErrorKind,
  Mesh,
  MultiTransport,
  RecvTimeoutError,
  RecvTimeoutErrorKind,
  SendError,
  SendErrorKind,
} from '../index'
import { numbered, numberOf, sleep } from './helpers'

const supported = process.platform === 'win32' ? test.skip : test
const WORKER = path.join(__dirname, 'workers', 'inproc.cjs')

let count = 0
const fresh = (what: string) => `inproc://${what}-${process.pid}-${count++}`

/** A worker in `mode`, once it posted `ready` (a message key). */
async function worker(workerData: Record<string, unknown>, ready: string): Promise<Worker> {
  const spawned = new Worker(WORKER, { workerData })
  const messages: Record<string, unknown>[] = []
  spawned.on('message', (message) => messages.push(message))
  while (!messages.some((message) => ready in message)) {
    const bad = messages.find((message) => 'bad' in message)
    if (bad) throw new Error(String(bad.bad))
    await once(spawned, 'message')
  }
  return spawned
}

supported('a mesh talks to a mesh in a worker thread, each connection in order', async (t) => {
  const name = fresh('echo')
  const server = await worker({ mode: 'serve', name }, 'listening')
  t.teardown(() => server.terminate())
  const transport = new InprocTransport()
  const mesh = new Mesh(1024, 128)
  t.teardown(() => mesh.shutdown())
  const ids: number[] = []
  for (let i = 0; i < 4; i++) {
    const connection = await transport.connect(name)
    t.is(connection.remoteEndpoint, name)
    ids.push(mesh.add(connection))
  }
  const N = 10_000
  const got = new Map<number, number[]>(ids.map((id) => [id, []]))
  const receiving = (async () => {
    let total = 0
    while (total < N * ids.length) {
      const envelope = await mesh.recv()
      got.get(envelope.id)!.push(numberOf(envelope.payload))
      total++
    }
  })()
  for (let seq = 0; seq < N; seq++) {
    for (const id of ids) await mesh.sendWait(new Envelope(id, numbered(seq, 64)))
    if (seq % 64 === 63) await new Promise((resolve) => setImmediate(resolve))
  }
  await receiving
  for (const seqs of got.values()) t.deepEqual(seqs, [...Array(N).keys()])
})

supported('a worker terminated mid-stream: a prefix in order, then its disconnect', async (t) => {
  const name = fresh('terminated')
  const transport = new InprocTransport()
  const listener = await transport.listen(name)
  t.teardown(() => listener.close())
  const mesh = new Mesh(256, 64)
  t.teardown(() => mesh.shutdown())
  for (let round = 0; round < 4; round++) {
    const streamer = new Worker(WORKER, { workerData: { mode: 'stream', name, size: round % 2 ? 20_000 : 64 } })
    const id = mesh.add(await listener.accept())
    const seqs: number[] = []
    let notice: DisconnectError | undefined
    const onDisconnect = (gone: number, error: DisconnectError) => {
      if (gone === id) notice = error
    }
    mesh.on('disconnect', onDisconnect)
    while (seqs.length < 2000) {
      const envelope = await mesh.recv()
      if (envelope.id === id) seqs.push(numberOf(envelope.payload))
    }
    await streamer.terminate()
    // Whatever was in flight arrives, then the notice.
    const until = Date.now() + 10_000
    while (!notice && Date.now() < until) {
      try {
        const envelope = await mesh.recvTimeout(100)
        if (envelope.id === id) seqs.push(numberOf(envelope.payload))
      } catch (error) {
        // The notice is not an envelope: a receive that waits past it times out.
        if ((error as RecvTimeoutError).kind !== RecvTimeoutErrorKind.Timeout) throw error
      }
    }
    if (!notice) return t.fail(`round ${round}: no disconnect within 10 s of the termination`)
    mesh.off('disconnect', onDisconnect)
    t.deepEqual(seqs, [...Array(seqs.length).keys()], `round ${round}: in order`)
    t.true([DisconnectErrorKind.Eof, DisconnectErrorKind.EofMidFrame].includes(notice.kind), notice.kind)
    t.log(`round ${round}: ${seqs.length} arrived, then ${notice.kind}`)
  }
})

supported('backpressure: Full and sendWait while the other side does not receive, then all in order', async (t) => {
  const name = fresh('slow')
  const transport = new InprocTransport()
  const listener = await transport.listen(name)
  const sender = new Mesh(16, 8)
  const receiver = new Mesh(4, 8)
  t.teardown(() => {
    sender.shutdown()
    receiver.shutdown()
    listener.close()
  })
  const [client, server] = await Promise.all([transport.connect(name), listener.accept()])
  const id = sender.add(client)
  receiver.add(server)
  // Nobody receives: the receiving mesh's queue, the pair's rings and the sending
  // queue fill, until sends meet Full for half a second on end (a loaded machine may pause
  // the reactor for a while).
  let accepted = 0
  let full: SendError | undefined
  for (let fullFor = 0; fullFor < 10;) {
    try {
      sender.send(new Envelope(id, numbered(accepted, 1024)))
      accepted++
      fullFor = 0
    } catch (error) {
      full = error as SendError
      t.is(full.kind, SendErrorKind.Full)
      t.is(numberOf(full.envelope!.payload), accepted, 'Full hands back the envelope refused')
      fullFor++
      await sleep(50)
    }
    if (accepted % 64 === 63) await sleep(1)
  }
  const waiting = sender.sendWait(new Envelope(id, numbered(accepted, 1024)))
  let settled = false
  void waiting.then(() => (settled = true))
  await sleep(100)
  t.false(settled, 'sendWait waits while the receiver does not read')
  // Receiving drains everything, in order.
  const seqs: number[] = []
  while (seqs.length <= accepted) seqs.push(numberOf((await receiver.recv()).payload))
  await waiting
  t.deepEqual(seqs, [...Array(accepted + 1).keys()])
  t.log(`${accepted} accepted before Full`)
})

supported('names: one listener per name across threads, nobody is IoError, bad names InvalidEndpoint', async (t) => {
  const name = fresh('taken')
  const server = await worker({ mode: 'serve', name }, 'listening')
  t.teardown(() => server.terminate())
  const transport = new InprocTransport()
  const taken = await t.throwsAsync(transport.listen(name), { instanceOf: ListenError })
  t.is(taken?.kind, ListenErrorKind.AddressInUse)
  t.is(taken?.code, 'ERR_WIREMESH_LISTEN_ADDRESS_IN_USE')
  // The worker closes its listener: the name is free again.
  server.postMessage('close')
  while (!(await once(server, 'message')).some((message) => message?.closed)) {}
  const mine = await transport.listen(name)
  mine.close()
  const nobody = await t.throwsAsync(transport.connect(fresh('nobody')), { instanceOf: ConnectError })
  t.is(nobody?.kind, ConnectErrorKind.IoError)
  for (const bad of ['inproc://', 'jobs', `inproc://${'x'.repeat(256)}`, 'unix:///tmp/x']) {
    t.false(transport.accepts(bad), bad)
    t.is(
      (await t.throwsAsync(transport.listen(bad), { instanceOf: ListenError }))?.kind,
      ListenErrorKind.InvalidEndpoint,
    )
    t.is(
      (await t.throwsAsync(transport.connect(bad), { instanceOf: ConnectError }))?.kind,
      ConnectErrorKind.InvalidEndpoint,
    )
  }
  // A worker that ends frees its name (its listener is dropped with it).
  const other = fresh('ended')
  const ending = await worker({ mode: 'serve', name: other }, 'listening')
  await ending.terminate()
  const free = await transport.listen(other)
  free.close()
  t.throws(() => new InprocTransport({ maxFrameSize: 2 ** 32 }), { code: 'ERR_OUT_OF_RANGE' })
})

supported('a closed listener frees its name before close returns', async (t) => {
  const transport = new InprocTransport()
  const name = fresh('reopened')
  for (let round = 0; round < 50; round++) {
    const listener = await transport.listen(name)
    listener.close()
  }
  const last = await transport.listen(name)
  last.close()
  t.pass()
})

supported('MultiTransport reaches in-process listeners by default', async (t) => {
  const name = fresh('multi')
  const multi = new MultiTransport()
  t.true(multi.accepts(name))
  const listener = await multi.listen(name)
  const [client, server] = await Promise.all([multi.connect(name), listener.accept()])
  listener.close()
  await client.send('through the registry')
  t.is((await server.recv()).toString(), 'through the registry')
  client.disconnect()
  server.disconnect()
})
