import * as net from 'node:net'

import test from 'ava'

import {
  AcceptError,
  AcceptErrorKind,
  ConnectError,
  ConnectErrorKind,
  DisconnectErrorKind,
  Envelope,
  Mesh,
  RecvError,
  RecvErrorKind,
  TcpTransport,
} from '../index'
import { frame, listen, nextDisconnect, sleep } from './helpers'

// Splinter's version 1 frames, by hand: [version u16 = 1][length u32][checksum u8][payload],
// big-endian, the checksum the ISO 1155 LRC of the six bytes before it. The vectors are
// those of Splinter's `libsplinter/src/transport/socket/frame.rs` tests.
const LENGTH_0 = Buffer.from([0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff])
const LENGTH_2 = Buffer.from([0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0xfd])
const LENGTH_3 = Buffer.from([0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xfc])

function checksum(bytes: Buffer): number {
  let sum = 0
  for (const byte of bytes) sum = (sum + byte) & 0xff
  return ((sum ^ 0xff) + 1) & 0xff
}

function v1Frame(payload: Uint8Array | string): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(7)
  header.writeUInt16BE(1, 0)
  header.writeUInt32BE(body.length, 2)
  header[6] = checksum(header.subarray(0, 6))
  return Buffer.concat([header, body])
}

/** What a plain socket receives, read as it arrives: `take(n)` resolves with the next `n` bytes. */
function byteReader(socket: net.Socket): { take(n: number): Promise<Buffer>; frame(): Promise<Buffer> } {
  let pending = Buffer.alloc(0)
  let wake: (() => void) | undefined
  let ended = false
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk])
    wake?.()
  })
  socket.on('close', () => {
    ended = true
    wake?.()
  })
  const take = async (n: number): Promise<Buffer> => {
    while (pending.length < n) {
      if (ended) throw new Error(`the peer closed with ${pending.length} of ${n} bytes`)
      await new Promise<void>((resolve) => (wake = resolve))
    }
    const bytes = pending.subarray(0, n)
    pending = pending.subarray(n)
    return bytes
  }
  return {
    take,
    async frame() {
      const header = await take(7)
      if (header.readUInt16BE(0) !== 1 || header[6] !== checksum(header.subarray(0, 6))) {
        throw new Error(`not a version 1 header: ${header.toString('hex')}`)
      }
      return take(header.readUInt32BE(2))
    },
  }
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => (socket.closed ? resolve() : socket.once('close', () => resolve())))
}

/** A plain socket dialling `endpoint`, connected. */
async function dial(endpoint: string): Promise<net.Socket> {
  const port = Number(endpoint.split(':').pop())
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
  await new Promise((resolve) => socket.once('connect', resolve))
  return socket
}

/** A plain listener; `next()` resolves with its next socket. */
async function plainListener(): Promise<{ endpoint: string; next(): Promise<net.Socket>; close(): void }> {
  const server = net.createServer({ noDelay: true })
  const sockets: net.Socket[] = []
  const waiting: Array<(socket: net.Socket) => void> = []
  server.on('connection', (socket) => {
    const resolve = waiting.shift()
    if (resolve) resolve(socket)
    else sockets.push(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  return {
    endpoint: `tcp://127.0.0.1:${port}`,
    next: () => {
      const ready = sockets.shift()
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve))
    },
    close: () => server.close(),
  }
}

const splinter = () => new TcpTransport({ framing: 'splinter-v1' })

test('framing is raw or splinter-v1; anything else is a typed argument error', (t) => {
  t.notThrows(() => new TcpTransport({ framing: 'raw' }))
  t.notThrows(() => new TcpTransport({ framing: 'splinter-v1' }))
  t.notThrows(() => new TcpTransport({ framing: undefined }))
  t.throws(() => new TcpTransport({ framing: 'splinter-v2' as 'raw' }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_VALUE',
    message: "The argument 'options.framing' must be one of: 'raw', 'splinter-v1'. Received 'splinter-v2'",
  })
  t.throws(() => new TcpTransport({ framing: 1 as unknown as 'raw' }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
  })
})

test('the literal headers of Splinter are what this spec writes', (t) => {
  t.deepEqual(v1Frame(''), LENGTH_0)
  t.deepEqual(v1Frame('ab').subarray(0, 7), LENGTH_2)
  t.deepEqual(v1Frame('abc').subarray(0, 7), LENGTH_3)
})

test('two splinter-v1 connections negotiate and talk, alone and through a mesh', async (t) => {
  const transport = splinter()
  const listener = await listen(transport)
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  listener.close()
  await client.send('handshake')
  t.is((await server.recv()).toString(), 'handshake')
  const mesh = new Mesh(64, 64)
  const [a, b] = [mesh.add(client), mesh.add(server)]
  const big = Buffer.alloc(200_000, 7)
  mesh.send(new Envelope(a, 'small'))
  mesh.send(new Envelope(a, big))
  t.is((await mesh.recv()).payload.toString(), 'small')
  t.deepEqual((await mesh.recv()).payload, big)
  mesh.send(new Envelope(b, 'back'))
  const back = await mesh.recv()
  t.deepEqual([back.id, back.payload.toString()], [a, 'back'])
  // Removed, a connection keeps its framing.
  const removed = await mesh.remove(b)
  mesh.send(new Envelope(a, 'after'))
  t.is((await removed.recv()).toString(), 'after')
  removed.disconnect()
  mesh.shutdown()
})

test('the listening side answers a dialler speaking Splinter by hand, and frames go both ways through a mesh', async (t) => {
  const listener = await listen(splinter())
  const socket = await dial(listener.endpoint)
  const reader = byteReader(socket)
  // The offer and the first frames in one write: nothing after the handshake is lost.
  socket.write(Buffer.concat([Buffer.from([0, 1, 0, 1]), v1Frame('first'), v1Frame('')]))
  const connection = await listener.accept()
  listener.close()
  t.deepEqual(await reader.take(2), Buffer.from([0, 1]), 'answers version 1')
  t.is((await connection.recv()).toString(), 'first')
  t.is((await connection.recv()).toString(), '')
  await connection.send('from the connection')
  t.is((await reader.frame()).toString(), 'from the connection')

  const mesh = new Mesh(256, 256)
  const id = mesh.add(connection)
  for (let i = 0; i < 100; i++) mesh.send(new Envelope(id, `out ${i}`))
  for (let i = 0; i < 100; i++) t.is((await reader.frame()).toString(), `out ${i}`)
  // A header split byte by byte.
  const split = v1Frame('split')
  for (const byte of split) {
    socket.write(Buffer.from([byte]))
    await sleep(2)
  }
  socket.write(Buffer.concat(Array.from({ length: 100 }, (_, i) => v1Frame(`in ${i}`))))
  const first = await mesh.recv()
  t.deepEqual([first.id, first.payload.toString()], [id, 'split'])
  for (let i = 0; i < 100; i++) t.is((await mesh.recv()).payload.toString(), `in ${i}`)
  socket.destroy()
  mesh.shutdown()
})

test('the dialling side offers 1..=1 to a listener speaking Splinter by hand', async (t) => {
  const peer = await plainListener()
  const connecting = splinter().connect(peer.endpoint)
  const socket = await peer.next()
  const reader = byteReader(socket)
  t.deepEqual(await reader.take(4), Buffer.from([0, 1, 0, 1]))
  // The answer and a frame in one write.
  socket.write(Buffer.concat([Buffer.from([0, 1]), v1Frame('welcome')]))
  const connection = await connecting
  t.is((await connection.recv()).toString(), 'welcome')
  const mesh = new Mesh(8, 8)
  const id = mesh.add(connection)
  mesh.send(new Envelope(id, 'hello splinter'))
  t.is((await reader.frame()).toString(), 'hello splinter')
  socket.write(v1Frame('hello wiremesh'))
  t.is((await mesh.recv()).payload.toString(), 'hello wiremesh')
  socket.destroy()
  peer.close()
  mesh.shutdown()
})

test('a bad checksum ends the connection as a Protocol disconnect, the others carry on', async (t) => {
  const transport = splinter()
  const listener = await listen(transport)
  const socket = await dial(listener.endpoint)
  socket.on('error', () => {})
  const reader = byteReader(socket)
  socket.write(Buffer.from([0, 1, 0, 1]))
  const connection = await listener.accept()
  t.deepEqual(await reader.take(2), Buffer.from([0, 1]))
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  listener.close()
  const mesh = new Mesh(8, 8)
  const id = mesh.add(connection)
  const [a, b] = [mesh.add(client), mesh.add(server)]
  const announced = nextDisconnect(mesh)
  // Splinter's `fail_checksum` header: length 2, checksum 0.
  socket.write(Buffer.from([0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x68, 0x69]))
  const [disconnected, error] = await announced
  t.is(disconnected, id)
  t.is(error.kind, DisconnectErrorKind.Protocol)
  t.is(error.code, 'ERR_WIREMESH_DISCONNECT_PROTOCOL')
  t.regex(error.message, /checksum/)
  await closed(socket)
  mesh.send(new Envelope(a, 'still here'))
  const envelope = await mesh.recv()
  t.deepEqual([envelope.id, envelope.payload.toString()], [b, 'still here'])
  mesh.shutdown()
})

test('a dialler answered 0 gets ConnectError IoError; a listener offered no version 1 answers 0, closes and goes on', async (t) => {
  const peer = await plainListener()
  const connecting = splinter().connect(peer.endpoint)
  const socket = await peer.next()
  await byteReader(socket).take(4)
  socket.end(Buffer.from([0, 0]))
  const refused = await t.throwsAsync(connecting, { instanceOf: ConnectError })
  t.is(refused?.kind, ConnectErrorKind.IoError)
  t.is(refused?.code, 'ERR_WIREMESH_CONNECT_IO_ERROR')
  t.regex(refused?.message ?? '', /no splinter frame version in common/)
  peer.close()

  const listener = await listen(splinter())
  const unoffered = await dial(listener.endpoint)
  unoffered.on('error', () => {})
  const reader = byteReader(unoffered)
  unoffered.write(Buffer.from([0, 3, 0, 5]))
  const failed = await t.throwsAsync(listener.accept(), { instanceOf: AcceptError })
  t.is(failed?.kind, AcceptErrorKind.IoError)
  t.is(failed?.code, 'ERR_WIREMESH_ACCEPT_IO_ERROR')
  t.regex(failed?.message ?? '', /versions 3\.\.=5, without version 1/)
  t.deepEqual(await reader.take(2), Buffer.from([0, 0]))
  await closed(unoffered)
  // The listener's loop (its async iterator) goes on past a refusal, to the next dialler.
  const refusedAgain = await dial(listener.endpoint)
  refusedAgain.on('error', () => {})
  refusedAgain.write(Buffer.from([0, 2, 0, 2]))
  await sleep(20)
  const next = await dial(listener.endpoint)
  next.write(Buffer.from([0, 1, 0, 1]))
  const iterator = listener[Symbol.asyncIterator]()
  const accepted = await iterator.next()
  t.false(accepted.done)
  next.write(v1Frame('made it'))
  t.is((await accepted.value.recv()).toString(), 'made it')
  listener.close()
  accepted.value.disconnect()
  next.destroy()
  refusedAgain.destroy()
})

test('a connect timeout still applies while the listener does not answer', async (t) => {
  const peer = await plainListener()
  const started = performance.now()
  await t.throwsAsync(splinter().connect(peer.endpoint, { timeout: 100 }), {
    instanceOf: ConnectError,
    code: 'ERR_WIREMESH_CONNECT_TIMEOUT',
  })
  t.true(performance.now() - started < 5000)
  const controller = new AbortController()
  const aborted = splinter().connect(peer.endpoint, { signal: controller.signal })
  const socket = await peer.next()
  await byteReader(socket).take(4)
  controller.abort()
  await t.throwsAsync(aborted, { instanceOf: ConnectError, code: 'ERR_WIREMESH_CONNECT_ABORTED' })
  peer.close()
})

test('raw and splinter-v1 transports do not mix silently', async (t) => {
  // A raw dialler to a splinter-v1 listener: its first frame's length reads as an offer,
  // and what follows as a header of another version: a Protocol error, not a frame.
  const listener = await listen(splinter())
  const accepting = listener.accept()
  const client = await new TcpTransport().connect(listener.endpoint)
  await client.send('hello, world')
  const server = await accepting
  const error = await t.throwsAsync(server.recv(), { instanceOf: RecvError })
  t.is(error?.kind, RecvErrorKind.Protocol)
  client.disconnect()
  server.disconnect()
  listener.close()

  // A splinter-v1 dialler to a raw listener: its offer reads as part of a frame header
  // and the raw side never answers, so the connect waits until its timeout.
  const raw = await listen(new TcpTransport())
  const connecting = splinter().connect(raw.endpoint, { timeout: 300 })
  const accepted = await raw.accept()
  await t.throwsAsync(connecting, { code: 'ERR_WIREMESH_CONNECT_TIMEOUT' })
  const mesh = new Mesh(4, 4)
  mesh.add(accepted)
  await t.throwsAsync(mesh.recvTimeout(100), { code: 'ERR_WIREMESH_RECV_TIMEOUT_TIMEOUT' })
  raw.close()
  mesh.shutdown()
  t.deepEqual(frame('x').length, 5)
})
