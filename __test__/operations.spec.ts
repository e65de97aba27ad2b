import { spawnSync } from 'node:child_process'
import diagnostics_channel from 'node:diagnostics_channel'
import * as net from 'node:net'
import { once } from 'node:events'

import test from 'ava'

import {
  AddError,
  ConnectError,
  ConnectErrorKind,
  DisconnectError,
  DisconnectErrorKind,
  Envelope,
  Mesh,
  RemoveError,
  SendError,
  SendErrorKind,
  TcpTransport,
} from '../index'
import type { DisconnectInfo } from '../index'
import { frame, frameReader, meshPair, nextDisconnect, numbered, numberOf, rawPeer, sleep } from './helpers'

/** A plain `net` server that collects its peers' frames; `close` stops it (and its sockets). */
async function frameServer(port = 0) {
  const sockets = new Set<net.Socket>()
  const readers: Array<ReturnType<typeof frameReader>> = []
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    readers.push(frameReader(socket))
    server.emit('peer', socket)
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    sockets,
    readers,
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

test('end writes everything queued, then the peer reads the end of the stream', async (t) => {
  // The case: 100 x 100 kB queued, then a close of the one connection.
  const mesh = new Mesh(16, 128)
  const [peer, id] = await rawPeer(mesh)
  // The peer answers after our end of the stream, then ends its own side.
  ;(peer as net.Socket & { allowHalfOpen: boolean }).allowHalfOpen = true
  const reader = frameReader(peer)
  const ended = once(peer, 'end')
  for (let n = 0; n < 100; n++) mesh.send(new Envelope(id, numbered(n, 100_000)))
  await mesh.end(id)
  const error = t.throws(() => mesh.send(new Envelope(id, 'late')), { instanceOf: SendError })
  t.is(error?.kind, SendErrorKind.Disconnected)
  const got: number[] = []
  for (let n = 0; n < 100; n++) got.push(numberOf(await reader.next()))
  t.deepEqual(
    got,
    Array.from({ length: 100 }, (_, n) => n),
  )
  await ended
  t.is(mesh.stats(id)?.state, 'ending')
  // The peer's answer still arrives, then its own end closes the connection.
  const disconnected = nextDisconnect(mesh)
  peer.end(frame('bye'))
  t.is((await mesh.recv()).payload.toString(), 'bye')
  const [left, why] = await disconnected
  t.is(left, id)
  t.is(why.kind, DisconnectErrorKind.Eof)
  mesh.shutdown()
})

test('end of an unknown id rejects with NotFound; of a bad id with a TypeError', async (t) => {
  const mesh = new Mesh(1, 1)
  await t.throwsAsync(mesh.end(42), { instanceOf: RemoveError })
  await t.throwsAsync(mesh.end('1' as unknown as number), { instanceOf: TypeError })
  mesh.shutdown()
})

test('close ends every connection gracefully, then shuts down', async (t) => {
  const mesh = new Mesh(16, 64)
  const peers = await Promise.all([rawPeer(mesh), rawPeer(mesh), rawPeer(mesh)])
  const readers = peers.map(([socket]) => frameReader(socket))
  for (const [, id] of peers) for (let n = 0; n < 20; n++) mesh.send(new Envelope(id, numbered(n, 50_000)))
  await mesh.close()
  for (const reader of readers) {
    for (let n = 0; n < 20; n++) t.is(numberOf(await reader.next()), n)
  }
  await t.throwsAsync(mesh.recv())
  t.is(mesh.size, 0)
})

test('a connection silent for idleTimeout leaves with kind Timeout; a talkative one stays', async (t) => {
  t.throws(() => new Mesh(1, 1, { idleTimeout: 0 }), { instanceOf: RangeError })
  t.throws(() => new Mesh(1, 1, { idleTimeout: -5 }), { instanceOf: RangeError })
  t.throws(() => new Mesh(1, 1, { idleTimeout: '5' as unknown as number }), { instanceOf: TypeError })
  // A generous timeout: the talker's timer must never lag it, even with other test files
  // streaming on both cores.
  const mesh = new Mesh(64, 16, { idleTimeout: 1000 })
  const [talker, talking] = await rawPeer(mesh)
  const started = Date.now()
  const [, silent] = await rawPeer(mesh)
  const talk = setInterval(() => talker.write(frame('here')), 50)
  const received: number[] = []
  const receiving = (async () => {
    for await (const envelope of mesh) received.push(envelope.id)
  })()
  const [id, error] = await nextDisconnect(mesh)
  clearInterval(talk)
  t.is(id, silent)
  t.is(error.kind, DisconnectErrorKind.Timeout)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_TIMEOUT')
  t.true(Date.now() - started >= 990)
  t.not(mesh.stats(talking), null)
  t.true(received.every((from) => from === talking) && received.length > 0)
  mesh.shutdown()
  await receiving
})

test('a dialled id queues until it connects, then reconnects under the same id when its listener comes back', async (t) => {
  const first = await frameServer()
  const mesh = new Mesh(64, 64)
  const events: string[] = []
  mesh.on('connect', (id) => events.push(`connect ${id}`))
  mesh.on('reconnecting', (id, { attempt }) => events.push(`reconnecting ${id} ${attempt}`))
  const infos: DisconnectInfo[] = []
  mesh.on('disconnect', (id, error, info) => {
    events.push(`disconnect ${id} ${error.kind} ${info.willReconnect}`)
    infos.push(info)
  })
  const id = mesh.dial(`tcp://127.0.0.1:${first.port}`, { reconnect: { initialDelay: 20, maxDelay: 200 } })
  t.is(typeof id, 'number')
  mesh.send(new Envelope(id, numbered(0)))
  t.is(numberOf(await waitFrame(first.readers, 0)), 0)
  t.is(mesh.stats(id)?.state, 'connected')
  t.true(mesh.stats(id)?.dialled)

  // The listener goes away with its connections; sends wait in the id's queue.
  const port = first.port
  await first.close()
  await waitFor(() => mesh.stats(id)?.state === 'connecting')
  for (let n = 1; n <= 5; n++) mesh.send(new Envelope(id, numbered(n)))
  await sleep(100)
  const second = await frameServer(port)
  const got: number[] = []
  for (let n = 1; n <= 5; n++) got.push(numberOf(await waitFrame(second.readers, 0)))
  t.deepEqual(got, [1, 2, 3, 4, 5])
  t.is(mesh.stats(id)?.state, 'connected')
  t.is(mesh.stats(id)?.framesOut, 6, 'counted across both connections')
  t.true(events.includes(`connect ${id}`))
  t.true(events.includes(`disconnect ${id} Eof true`) || events.some((e) => e.startsWith(`disconnect ${id}`)))
  t.true(events.some((e) => e.startsWith(`reconnecting ${id} `)))
  t.is(events.filter((e) => e === `connect ${id}`).length, 2)
  t.true(infos[0]?.willReconnect)
  await mesh.close()
  await second.close()
})

test('a dial without reconnect that cannot connect leaves, handing back what waited, with the reason as cause', async (t) => {
  const probe = await frameServer()
  const port = probe.port
  await probe.close()
  const mesh = new Mesh(4, 4)
  const id = mesh.dial(`127.0.0.1:${port}`, { transport: new TcpTransport() })
  mesh.send(new Envelope(id, 'never delivered'))
  const [left, error, info] = await new Promise<[number, DisconnectError, DisconnectInfo]>((resolve) =>
    mesh.once('disconnect', (...args) => resolve(args)),
  )
  t.is(left, id)
  t.is(error.kind, DisconnectErrorKind.IoError)
  t.false(info.willReconnect)
  t.true(error.cause instanceof ConnectError)
  t.deepEqual(
    error.unsent.map((envelope) => envelope.payload.toString()),
    ['never delivered'],
  )
  const refused = t.throws(() => mesh.send(new Envelope(id, 'x')), { instanceOf: SendError })
  t.is(refused?.kind, SendErrorKind.Disconnected)
  mesh.shutdown()
})

test('maxAttempts gives up after that many failed attempts in a row', async (t) => {
  const probe = await frameServer()
  const port = probe.port
  await probe.close()
  const mesh = new Mesh(4, 4)
  const attempts: number[] = []
  mesh.on('reconnecting', (_id, { attempt, delay }) => {
    attempts.push(attempt)
    t.true(delay >= 0 && delay <= 40)
  })
  mesh.dial(`127.0.0.1:${port}`, { reconnect: { initialDelay: 10, maxDelay: 30, maxAttempts: 3 } })
  const [, error] = await nextDisconnect(mesh)
  t.deepEqual(attempts, [2, 3])
  t.regex(error.message, /after 3 attempts/)
  mesh.shutdown()
})

test('the handshake runs on every connection before the id carries traffic; a failing one is a failed attempt', async (t) => {
  const server = await frameServer()
  server.server.on('peer', (socket: net.Socket) => socket.write(frame('hello from the server')))
  const mesh = new Mesh(16, 16)
  let handshakes = 0
  const id = mesh.dial(`127.0.0.1:${server.port}`, {
    reconnect: { initialDelay: 10, maxDelay: 50 },
    handshake: async (connection) => {
      handshakes++
      const hello = await connection.recv({ timeout: 5000 })
      if (handshakes === 1) throw new Error('the first handshake fails')
      await connection.send(`ack ${hello.toString()}`)
    },
  })
  mesh.send(new Envelope(id, 'after the handshake'))
  // The first connection was closed by the failed handshake; the second carries the frames.
  await waitFor(() => server.readers.some((reader) => reader.frames.length >= 2))
  const reader = server.readers.find((candidate) => candidate.frames.length >= 2)!
  t.is(reader.frames[0]?.toString(), 'ack hello from the server')
  t.is(reader.frames[1]?.toString(), 'after the handshake')
  t.is(handshakes, 2)
  mesh.shutdown()
  await server.close()
})

test('dial refuses bad input at the call', (t) => {
  const mesh = new Mesh(1, 1)
  t.throws(() => mesh.dial(7 as unknown as string), { instanceOf: TypeError })
  t.throws(() => mesh.dial('127.0.0.1:1', { reconnect: { factor: 0.5 } }), { instanceOf: RangeError })
  t.throws(() => mesh.dial('127.0.0.1:1', { reconnect: { jitter: 2 } }), { instanceOf: RangeError })
  t.throws(() => mesh.dial('127.0.0.1:1', { reconnect: { initialDelay: 100, maxDelay: 10 } }), {
    instanceOf: RangeError,
  })
  t.throws(() => mesh.dial('127.0.0.1:1', { handshake: 'yes' as unknown as () => Promise<void> }), {
    instanceOf: TypeError,
  })
  const unknown = t.throws(() => mesh.dial('carrier-pigeon://coop'), { instanceOf: ConnectError })
  t.is(unknown?.kind, ConnectErrorKind.InvalidEndpoint)
  mesh.shutdown()
  t.throws(() => mesh.dial('127.0.0.1:1'), { instanceOf: AddError })
})

test('stats: size, ids, per connection and totals', async (t) => {
  const mesh = new Mesh(64, 64)
  t.is(mesh.size, 0)
  const [client, server] = await meshPair(mesh)
  t.is(mesh.size, 2)
  t.deepEqual(mesh.ids(), [client, server])
  for (let n = 0; n < 10; n++) mesh.send(new Envelope(client, Buffer.alloc(100)))
  for (let n = 0; n < 10; n++) await mesh.recv()
  const sent = mesh.stats(client)!
  const got = mesh.stats(server)!
  t.is(sent.framesOut, 10)
  t.is(sent.bytesOut, 1040)
  t.is(got.framesIn, 10)
  t.is(got.bytesIn, 1040)
  t.is(sent.state, 'connected')
  t.false(sent.dialled)
  t.regex(sent.remoteEndpoint!, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  t.true(sent.connectedSince instanceof Date)
  t.is(sent.fingerprint256, null)
  t.false(got.paused)
  const totals = mesh.stats()
  t.is(totals.connections, 2)
  t.is(totals.connected, 2)
  t.is(totals.framesIn, 10)
  t.is(totals.framesOut, 10)
  t.is(mesh.stats(999), null)
  t.throws(() => mesh.stats(-1), { instanceOf: RangeError })
  await mesh.remove(client)
  t.is(mesh.stats(client), null)
  t.is(mesh.stats().framesOut, 10, 'totals do not go back when a connection leaves')
  mesh.shutdown()
  t.is(mesh.size, 0)
})

test('queued frames and a paused peer show in the stats', async (t) => {
  const mesh = new Mesh(4, 1000)
  const [peer, id] = await rawPeer(mesh)
  peer.pause()
  for (let n = 0; n < 1000; n++) {
    try {
      mesh.send(new Envelope(id, Buffer.alloc(64 * 1024)))
    } catch {
      break
    }
  }
  await waitFor(() => (mesh.stats(id)?.queuedFrames ?? 0) > 0)
  t.true(mesh.stats(id)!.queuedBytes > 0)
  // The mesh's incoming queue holds 4: a peer that sends more is paused.
  const [talker, talking] = await rawPeer(mesh)
  for (let n = 0; n < 50; n++) talker.write(frame('x'))
  await waitFor(() => mesh.stats(talking)?.paused === true)
  t.is(mesh.stats().incoming, 4)
  mesh.shutdown()
  peer.destroy()
  talker.destroy()
})

test('connection events are published on diagnostics_channel', async (t) => {
  const seen: string[] = []
  let mesh: Mesh | undefined
  const mine = (message: unknown) => (message as { mesh: object }).mesh === mesh
  const onConnect = (message: unknown) => mine(message) && seen.push(`connect ${(message as { id: number }).id}`)
  const onDisconnect = (message: unknown) => mine(message) && seen.push(`disconnect ${(message as { id: number }).id}`)
  diagnostics_channel.subscribe('wiremesh:connect', onConnect)
  diagnostics_channel.subscribe('wiremesh:disconnect', onDisconnect)
  try {
    mesh = new Mesh(4, 4)
    const [peer, id] = await rawPeer(mesh)
    peer.destroy()
    await nextDisconnect(mesh)
    t.deepEqual(seen, [`connect ${id}`, `disconnect ${id}`])
    mesh.shutdown()
  } finally {
    diagnostics_channel.unsubscribe('wiremesh:connect', onConnect)
    diagnostics_channel.unsubscribe('wiremesh:disconnect', onDisconnect)
  }
})

test('NODE_DEBUG=wiremesh prints a line per connection event', (t) => {
  const script = `
    const { Mesh, TcpTransport } = require('./index.js')
    ;(async () => {
      const transport = new TcpTransport()
      const listener = await transport.listen('127.0.0.1:0')
      const mesh = new Mesh(4, 4)
      const id = mesh.dial(listener.endpoint)
      const server = mesh.add(await listener.accept())
      await new Promise((resolve) => mesh.once('connect', resolve))
      await mesh.remove(server).then((connection) => connection.disconnect())
      await new Promise((resolve) => mesh.once('disconnect', resolve))
      mesh.shutdown()
      listener.close()
    })()
  `
  const run = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, NODE_DEBUG: 'wiremesh' },
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.is(run.status, 0, run.stderr)
  t.regex(run.stderr, /WIREMESH \d+: connect id=1 remote=tcp:\/\/127\.0\.0\.1:\d+ .* dialled reconnects=0/)
  t.regex(run.stderr, /WIREMESH \d+: connect id=2 /)
  t.regex(run.stderr, /WIREMESH \d+: disconnect id=1 code=ERR_WIREMESH_DISCONNECT_EOF willReconnect=false/)
})

/** The next frame of the `index`th peer of a frame server, once it has connected. */
async function waitFrame(readers: Array<ReturnType<typeof frameReader>>, index: number): Promise<Buffer> {
  await waitFor(() => readers.length > index)
  // The newest connection carries the traffic.
  return readers[readers.length - 1]!.next()
}

async function waitFor(condition: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('the condition never held')
    await sleep(5)
  }
}

test('sends to a dialled id that is not connected queue up to outgoingCapacity, then Full; sendWait waits for the connection', async (t) => {
  const probe = await frameServer()
  const port = probe.port
  await probe.close()
  const mesh = new Mesh(16, 4)
  const id = mesh.dial(`127.0.0.1:${port}`, { reconnect: { initialDelay: 20, maxDelay: 100 } })
  for (let n = 0; n < 4; n++) mesh.send(new Envelope(id, numbered(n)))
  const full = t.throws(() => mesh.send(new Envelope(id, numbered(4))), { instanceOf: SendError })
  t.is(full?.kind, SendErrorKind.Full)
  t.is(numberOf(full!.envelope.payload), 4)
  t.is(mesh.stats(id)?.queuedFrames, 4)
  const waiting = mesh.sendWait(new Envelope(id, numbered(4)))
  // The server comes up on the port: everything queued and waited for goes out, in order.
  const server = await frameServer(port)
  await waiting
  const got: number[] = []
  for (let n = 0; n < 5; n++) got.push(numberOf(await waitFrame(server.readers, 0)))
  t.deepEqual(got, [0, 1, 2, 3, 4])
  mesh.shutdown()
  await server.close()
})

test('end rejects with the envelopes it could not write when the peer resets first', async (t) => {
  const mesh = new Mesh(16, 256)
  const [peer, id] = await rawPeer(mesh)
  peer.pause() // reads nothing: the socket fills and the rest waits in the queue
  for (let n = 0; n < 200; n++) mesh.send(new Envelope(id, numbered(n, 64 * 1024)))
  await waitFor(() => (mesh.stats(id)?.queuedFrames ?? 0) > 0)
  const ending = mesh.end(id)
  peer.resetAndDestroy()
  const error = await t.throwsAsync(ending, { instanceOf: DisconnectError })
  t.is(error?.kind, DisconnectErrorKind.IoError)
  t.true(error!.unsent.length > 0)
  // The unwritten envelopes are the end of what was accepted, in order.
  const numbers = error!.unsent.map((envelope) => numberOf(envelope.payload))
  t.deepEqual(
    numbers,
    Array.from({ length: numbers.length }, (_, n) => 200 - numbers.length + n),
  )
  mesh.shutdown()
})
