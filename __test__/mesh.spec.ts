import { inspect } from 'node:util'

import test from 'ava'

import {
  Envelope,
  Incoming,
  Mesh,
  MeshLifeCycle,
  MeshMatrixReceiver,
  MeshMatrixSender,
  Outgoing,
  RawTransport,
  TcpTransport,
} from '../index'
import { connectionPair, meshPair, numbered, numberOf } from './helpers'

test('the seed example: hello from the client reaches the server', async (t) => {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const mesh = new Mesh(1, 1)
  const client = mesh.add(await transport.connect(listener.endpoint))
  const server = mesh.add(await listener.accept())

  mesh.send(new Envelope(client, Buffer.from('hello')))
  const envelope = await mesh.recv()
  t.is(envelope.id, server)
  t.true(Buffer.isBuffer(envelope.payload))
  t.is(envelope.payload.toString(), 'hello')

  const clientConnection = await mesh.remove(client)
  const serverConnection = await mesh.remove(server)
  t.regex(clientConnection.remoteEndpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  t.is(serverConnection.remoteEndpoint, clientConnection.localEndpoint)
  mesh.shutdown()
  listener.close()
})

test('RawTransport is TcpTransport', (t) => {
  t.is(RawTransport, TcpTransport)
  t.true(new RawTransport() instanceof TcpTransport)
})

test('sixteen connections are added, then all removed', async (t) => {
  const mesh = new Mesh(16, 16)
  const pairs = await Promise.all(Array.from({ length: 8 }, () => connectionPair()))
  const ids = pairs.flatMap(([client, server]) => [mesh.add(client), mesh.add(server)])
  t.is(new Set(ids).size, 16, 'ids are unique')
  const removed = []
  for (const id of ids) removed.push(await mesh.remove(id))
  t.is(removed.length, 16)
  mesh.shutdown()
})

test('sixteen connections say hello and hear world back', async (t) => {
  const mesh = new Mesh(32, 32)
  const pairs = await Promise.all(Array.from({ length: 16 }, () => meshPair(mesh)))
  for (const [client] of pairs) mesh.send(new Envelope(client, 'hello'))
  const servers = new Set(pairs.map(([, server]) => server))
  for (let i = 0; i < 16; i++) {
    const envelope = await mesh.recv()
    t.is(envelope.payload.toString(), 'hello')
    t.true(servers.delete(envelope.id))
    mesh.send(new Envelope(envelope.id, 'world'))
  }
  const clients = new Set(pairs.map(([client]) => client))
  for (let i = 0; i < 16; i++) {
    const envelope = await mesh.recv()
    t.is(envelope.payload.toString(), 'world')
    t.true(clients.delete(envelope.id))
  }
  mesh.shutdown()
})

test('two hundred connections each deliver in order', async (t) => {
  const mesh = new Mesh(1024, 64)
  const pairs = await Promise.all(Array.from({ length: 100 }, () => meshPair(mesh)))
  for (let n = 0; n < 10; n++) for (const [client] of pairs) mesh.send(new Envelope(client, numbered(n)))
  const next = new Map<number, number>()
  for (let i = 0; i < 1000; i++) {
    const envelope = await mesh.recv()
    const expected = next.get(envelope.id) ?? 0
    t.is(numberOf(envelope.payload), expected)
    next.set(envelope.id, expected + 1)
  }
  t.is(next.size, 100)
  mesh.shutdown()
})

test('frames of 0 B, 1 B and 1 MiB arrive whole', async (t) => {
  const mesh = new Mesh(4, 4)
  const [client, server] = await meshPair(mesh)
  const big = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = i % 253
  for (const payload of [Buffer.alloc(0), Buffer.from([0xa5]), big]) {
    mesh.send(new Envelope(client, payload))
    const envelope = await mesh.recv()
    t.is(envelope.id, server)
    t.true(envelope.payload.equals(payload), `a payload of ${payload.length} bytes`)
  }
  mesh.shutdown()
})

test('received payloads are Buffers in every way a user touches them', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client] = await meshPair(mesh)
  const large = Buffer.alloc(64 * 1024, 7)
  mesh.send(new Envelope(client, 'abc'))
  mesh.send(new Envelope(client, large))
  for (const expected of [Buffer.from('abc'), large]) {
    const { payload } = await mesh.recv()
    t.true(payload instanceof Buffer)
    t.true(Buffer.isBuffer(payload))
    t.is(payload.constructor, Buffer)
    t.true(payload.equals(expected))
    t.is(payload.toString('hex'), expected.toString('hex'))
    t.is(payload.readUInt8(1), expected[1])
    t.true(payload.subarray(1).equals(expected.subarray(1)))
    t.true(Buffer.isBuffer(payload.subarray(1)))
    t.true(Buffer.isBuffer(payload.slice(1)))
    t.deepEqual(Buffer.concat([payload, payload]), Buffer.concat([expected, expected]))
    t.deepEqual(payload.toJSON(), expected.toJSON())
    t.regex(inspect(payload), /^<Buffer /)
  }
  mesh.shutdown()
})

test('many small frames taken a few at a time arrive once each, in order', async (t) => {
  // The reactor hands a read's small frames over together; receives of one, of a few and
  // of many take them in parts.
  const mesh = new Mesh(5000, 5000)
  const [client, server] = await meshPair(mesh)
  for (let n = 0; n < 4000; n++) mesh.send(new Envelope(client, numbered(n)))
  let next = 0
  const take = async (envelopes: Envelope[]) => {
    for (const envelope of envelopes) {
      t.is(envelope.id, server)
      t.is(numberOf(envelope.payload), next++)
    }
  }
  while (next < 4000) {
    await take([await mesh.recv()])
    await take(await mesh.recvBatch(3))
    const one = mesh.tryRecv()
    if (one !== null) await take([one])
    await take(await mesh.recvBatch(700))
  }
  t.is(next, 4000)
  t.is(mesh.tryRecv(), null)
  mesh.shutdown()
})

test('payloads may be Buffers, Uint8Arrays or strings', async (t) => {
  const mesh = new Mesh(4, 4)
  const [client] = await meshPair(mesh)
  const bytes = new Uint8Array([0, 1, 2, 3, 4, 5]).subarray(2, 5)
  mesh.send(new Envelope(client, bytes))
  mesh.send(new Envelope(client, 'héllo'))
  t.deepEqual([...(await mesh.recv()).payload], [2, 3, 4])
  t.is((await mesh.recv()).payload.toString(), 'héllo')
  mesh.shutdown()
})

test('takePayload hands the payload over and leaves an empty one', (t) => {
  const envelope = new Envelope(3, 'abc')
  const payload = envelope.takePayload()
  t.is(payload.toString(), 'abc')
  t.is(envelope.payload.length, 0)
  t.is(envelope.id, 3)
})

test('recvTimeout, tryRecv and recvBatch', async (t) => {
  const mesh = new Mesh(64, 64)
  const [client, server] = await meshPair(mesh)
  t.is(mesh.tryRecv(), null)
  const timeout = await t.throwsAsync(mesh.recvTimeout(20), { code: 'ERR_WIREMESH_RECV_TIMEOUT_TIMEOUT' })
  t.is(timeout?.kind, 'Timeout')

  for (let n = 0; n < 5; n++) mesh.send(new Envelope(client, numbered(n)))
  const got: number[] = []
  const first = await mesh.recvBatch(2)
  t.true(first.length >= 1 && first.length <= 2)
  got.push(...first.map((e) => numberOf(e.payload)))
  while (got.length < 5) {
    const batch = await mesh.recvBatch(100)
    t.true(batch.length >= 1 && batch.every((e) => e.id === server))
    got.push(...batch.map((e) => numberOf(e.payload)))
  }
  t.deepEqual(got, [0, 1, 2, 3, 4])
  mesh.send(new Envelope(client, 'x'))
  t.is((await mesh.recvTimeout(10_000)).payload.toString(), 'x')
  mesh.shutdown()
})

test('waiting receives are settled in order, each with its own envelope', async (t) => {
  const mesh = new Mesh(64, 64)
  const [client] = await meshPair(mesh)
  const waiting = [mesh.recv(), mesh.recvBatch(3), mesh.recv()]
  for (let n = 0; n < 5; n++) mesh.send(new Envelope(client, numbered(n)))
  const [a, batch, c] = await Promise.all(waiting)
  const numbers = [numberOf(a.payload), ...batch.map((e) => numberOf(e.payload)), numberOf(c.payload)]
  t.is(numbers[0], 0)
  t.deepEqual(
    [...numbers].sort((x, y) => x - y),
    numbers,
    'in order',
  )
  t.is(new Set(numbers).size, numbers.length, 'no envelope twice')
  mesh.shutdown()
})

test('for await receives every envelope and ends at shutdown', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client] = await meshPair(mesh)
  for (let n = 0; n < 3; n++) mesh.send(new Envelope(client, numbered(n)))
  const seen: number[] = []
  for await (const envelope of mesh) {
    seen.push(numberOf(envelope.payload))
    if (seen.length === 3) setImmediate(() => mesh.shutdown())
  }
  t.deepEqual(seen, [0, 1, 2])
})

test('clones share the reactor and the incoming queue', async (t) => {
  const mesh = new Mesh(64, 64)
  const clone = mesh.clone()
  t.true(clone instanceof Mesh)
  const [client] = await meshPair(mesh)
  const received = [mesh.recv(), clone.recv(), mesh.recv(), clone.recv()]
  for (let n = 0; n < 4; n++) clone.send(new Envelope(client, numbered(n)))
  const numbers = (await Promise.all(received)).map((e) => numberOf(e.payload)).sort()
  t.deepEqual(numbers, [0, 1, 2, 3], 'each envelope reaches exactly one receive')
  clone.shutdown()
  await t.throwsAsync(mesh.recv(), { code: 'ERR_WIREMESH_RECV_SHUTDOWN' })
})

test('outgoing, incoming, life cycle, sender and receiver handles', async (t) => {
  const mesh = new Mesh(8, 8)
  const lifeCycle = mesh.getLifeCycle()
  const sender = mesh.getSender()
  const receiver = mesh.getReceiver()
  const incoming = mesh.incoming()
  t.true(lifeCycle instanceof MeshLifeCycle)
  t.true(sender instanceof MeshMatrixSender)
  t.true(receiver instanceof MeshMatrixReceiver)
  t.true(incoming instanceof Incoming)

  const [clientConnection, serverConnection] = await connectionPair()
  const client = lifeCycle.add(clientConnection)
  const server = lifeCycle.add(serverConnection)
  const outgoing = mesh.outgoing(client)
  t.true(outgoing instanceof Outgoing)
  t.is(outgoing?.id, client)
  t.is(mesh.outgoing(999_999), null)

  outgoing!.send('via outgoing')
  t.is((await incoming.recv()).payload.toString(), 'via outgoing')
  sender.send(server, 'via sender')
  const envelope = await receiver.recv()
  t.is(envelope.id, client)
  t.is(envelope.payload.toString(), 'via sender')
  sender.send(client, 'x')
  t.is((await receiver.recvTimeout(10_000)).payload.toString(), 'x')
  t.is(incoming.tryRecv(), null)
  sender.send(client, 'y')
  t.is((await incoming.recvBatch(4))[0].payload.toString(), 'y')

  const removed = await lifeCycle.remove(client)
  t.regex(removed.localEndpoint, /^tcp:\/\//)
  mesh.shutdown()
})
