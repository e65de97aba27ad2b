// Worker threads terminated in the middle of a conversation with the main thread's mesh:
// the process goes on, the main mesh sees the connection end after every whole envelope
// arrived in order, and no reactor thread is left behind.
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { DisconnectError, DisconnectErrorKind, Envelope, Mesh, TcpTransport } from '../../index'
import { numbered, numberOf, sleep } from '../helpers'
import { assertRun } from './peers'

/** This process's reactor threads (Linux), or undefined where /proc is missing. */
function reactorThreads(): number | undefined {
  try {
    return readdirSync('/proc/self/task').filter((task) => {
      try {
        return readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('wiremesh-reac')
      } catch {
        return false
      }
    }).length
  } catch {
    return undefined
  }
}

test.serial('workers terminated mid-conversation: every whole envelope arrived in order, nothing leaks', async (t) => {
  const ROUNDS = 8
  const mesh = new Mesh(1024, 64)
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const before = reactorThreads()
  const fromWorker = new Map<number, number[]>()
  const notices = new Map<number, DisconnectError>()
  mesh.on('disconnect', (id: number, error: DisconnectError) => notices.set(id, error))
  const receiving = (async () => {
    for await (const envelope of mesh) fromWorker.get(envelope.id)?.push(numberOf(envelope.payload))
  })()
  for (let round = 0; round < ROUNDS; round++) {
    const size = round % 2 === 0 ? 64 : 20_000
    const worker = new Worker(path.join(__dirname, 'worker.cjs'), {
      workerData: { endpoint: listener.endpoint, size },
    })
    const bad: string[] = []
    let workerReceived = 0
    worker.on('message', (message) => {
      if (message.bad) bad.push(message.bad)
      if (message.received) workerReceived = message.received
    })
    const id = mesh.add(await listener.accept())
    fromWorker.set(id, [])
    // The main mesh streams to the worker as well.
    let stop = false
    const sending = (async () => {
      for (let seq = 0; !stop; seq++) {
        try {
          await mesh.sendWait(new Envelope(id, numbered(seq, size)))
        } catch {
          return
        }
        if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
      }
    })()
    while (fromWorker.get(id)!.length < 2000 || workerReceived < 2000) await sleep(5)
    await worker.terminate()
    while (!notices.has(id)) await sleep(5)
    stop = true
    await sending
    const notice = notices.get(id)!
    t.true(
      [DisconnectErrorKind.Eof, DisconnectErrorKind.EofMidFrame, DisconnectErrorKind.IoError].includes(notice.kind),
      notice.kind,
    )
    t.deepEqual(bad, [], 'the worker received in order')
    assertRun(t, fromWorker.get(id)!, 0, `round ${round}`)
    t.log(`round ${round} (${size} B): ${fromWorker.get(id)!.length} arrived, then ${notice.kind}`)
  }
  listener.close()
  mesh.shutdown()
  await receiving
  const after = reactorThreads()
  if (before === undefined || after === undefined) t.log('reactor threads not counted: no /proc')
  else t.is(after, before - 1, "the workers' reactor threads were joined, and the main mesh's")
})
