import * as net from 'node:net'

import test from 'ava'

import { AcceptError, Connection, ConnectError, Envelope, Listener, ListenError, Mesh, TcpTransport } from '../index'
import { connectionPair, frame, frameReader, listen, rawPeer, sleep } from './helpers'

test('accepts host:port and tcp://host:port, nothing else', (t) => {
  const transport = new TcpTransport()
  for (const good of ['127.0.0.1:0', 'tcp://127.0.0.1:8080', 'localhost:65535', 'tcp://[::1]:80'])
    t.true(transport.accepts(good), good)
  for (const bad of ['', '127.0.0.1', '127.0.0.1:65536', 'tls://127.0.0.1:80', ':80', 'tcp://'])
    t.false(transport.accepts(bad), bad)
})

test('listen names the bound port, and connect reaches it', async (t) => {
  const transport = new TcpTransport()
  const listener = await transport.listen('tcp://127.0.0.1:0')
  t.true(listener instanceof Listener)
  t.regex(listener.endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  t.not(listener.endpoint, 'tcp://127.0.0.1:0')
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  t.true(client instanceof Connection)
  t.is(client.remoteEndpoint, listener.endpoint)
  t.is(server.remoteEndpoint, client.localEndpoint)
  listener.close()
})

test('a handshake over the connections, then frames through a mesh', async (t) => {
  const [client, server] = await connectionPair()
  await client.send('HELLO v1')
  t.is((await server.recv()).toString(), 'HELLO v1')
  await server.send('OK')
  await server.send('first through the mesh')
  t.is((await client.recv()).toString(), 'OK')

  const mesh = new Mesh(4, 4)
  const id = mesh.add(client)
  t.true(client.spent)
  const envelope = await mesh.recv()
  t.is(envelope.id, id)
  t.is(envelope.payload.toString(), 'first through the mesh')
  server.disconnect()
  mesh.shutdown()
})

test('a spent connection refuses to be used again', async (t) => {
  const [client, server] = await connectionPair()
  const mesh = new Mesh(4, 4)
  mesh.add(client)
  t.throws(() => mesh.add(client), { code: 'ERR_WIREMESH_ADD_SPENT' })
  await t.throwsAsync(client.send('x'), { code: 'ERR_WIREMESH_SEND_SPENT' })
  await t.throwsAsync(client.recv(), { code: 'ERR_WIREMESH_RECV_SPENT' })
  server.disconnect()
  mesh.shutdown()
})

test('a connection in the middle of its own recv cannot join a mesh', async (t) => {
  const [client, server] = await connectionPair()
  const mesh = new Mesh(4, 4)
  const receiving = server.recv()
  await sleep(20)
  t.throws(() => mesh.add(server), { code: 'ERR_WIREMESH_ADD_BUSY' })
  await client.send('done')
  t.is((await receiving).toString(), 'done')
  // Once its recv is over, it can.
  t.true(mesh.add(server) > 0)
  client.disconnect()
  mesh.shutdown()
})

test('remove hands back a connection that finishes a half-read frame', async (t) => {
  const mesh = new Mesh(8, 8)
  const [peer, id] = await rawPeer(mesh)
  const whole = frame('split across the mesh and the handshake')
  peer.write(whole.subarray(0, 10))
  await sleep(50)
  const connection = await mesh.remove(id)
  peer.write(whole.subarray(10))
  t.is((await connection.recv()).toString(), 'split across the mesh and the handshake')
  peer.destroy()
  mesh.shutdown()
})

test('frames written one byte at a time by a plain net socket arrive whole', async (t) => {
  const mesh = new Mesh(8, 8)
  const [peer, id] = await rawPeer(mesh)
  const payloads = [
    Buffer.alloc(0),
    Buffer.from('a'),
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
    Buffer.from('end'),
  ]
  const wire = Buffer.concat(payloads.map((p) => frame(p)))
  for (const byte of wire) {
    peer.write(Buffer.from([byte]))
    await new Promise((resolve) => setImmediate(resolve))
  }
  for (const payload of payloads) {
    const envelope = await mesh.recv()
    t.is(envelope.id, id)
    t.true(envelope.payload.equals(payload))
  }
  peer.destroy()
  mesh.shutdown()
})

test('the mesh speaks the Splinter framing to a plain net socket', async (t) => {
  const mesh = new Mesh(8, 8)
  const [peer, id] = await rawPeer(mesh)
  const reader = frameReader(peer)
  mesh.send(new Envelope(id, 'abc'))
  mesh.send(new Envelope(id, Buffer.alloc(0)))
  t.is((await reader.next()).toString(), 'abc')
  t.is((await reader.next()).length, 0)
  peer.destroy()
  mesh.shutdown()
})

test('a listener is async-iterable until it is closed', async (t) => {
  const transport = new TcpTransport()
  const listener = await listen(transport)
  const accepted: Connection[] = []
  const loop = (async () => {
    for await (const connection of listener) {
      accepted.push(connection)
      if (accepted.length === 3) listener.close()
    }
  })()
  const clients = await Promise.all([1, 2, 3].map(() => transport.connect(listener.endpoint)))
  await loop
  t.is(accepted.length, 3)
  await t.throwsAsync(listener.accept(), { code: 'ERR_WIREMESH_ACCEPT_CLOSED', instanceOf: AcceptError })
  for (const client of clients) client.disconnect()
})

test('closing a listener rejects the accept that waits', async (t) => {
  const listener = await listen()
  const waiting = listener.accept()
  await sleep(20)
  listener.close()
  const error = await t.throwsAsync<AcceptError>(waiting, { instanceOf: AcceptError })
  t.is(error?.kind, 'Closed')
})

test('malformed endpoints and refused connections are typed errors', async (t) => {
  const transport = new TcpTransport()
  await t.throwsAsync(transport.connect('nonsense'), {
    instanceOf: ConnectError,
    code: 'ERR_WIREMESH_CONNECT_INVALID_ENDPOINT',
  })
  await t.throwsAsync(transport.listen('tcp://x'), {
    instanceOf: ListenError,
    code: 'ERR_WIREMESH_LISTEN_INVALID_ENDPOINT',
  })
  const port = await new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
  await t.throwsAsync(transport.connect(`127.0.0.1:${port}`), {
    instanceOf: ConnectError,
    code: 'ERR_WIREMESH_CONNECT_IO_ERROR',
  })
  const taken = await listen(transport)
  await t.throwsAsync(transport.listen(taken.endpoint), {
    instanceOf: ListenError,
    code: 'ERR_WIREMESH_LISTEN_ADDRESS_IN_USE',
  })
  taken.close()
})

test('a connection reports a peer that closes and a hostile header', async (t) => {
  const transport = new TcpTransport({ maxFrameSize: 8 })
  const [client, server] = await connectionPair(transport)
  await t.throwsAsync(client.send(Buffer.alloc(9)), { code: 'ERR_WIREMESH_SEND_TOO_LARGE' })
  await client.send(Buffer.alloc(8, 1))
  t.deepEqual([...(await server.recv())], Array(8).fill(1))
  client.disconnect()
  await t.throwsAsync(server.recv(), { code: 'ERR_WIREMESH_RECV_DISCONNECTED' })

  const listener = await listen(transport)
  const port = Number(listener.endpoint.split(':').pop())
  const raw = net.connect({ host: '127.0.0.1', port })
  const accepted = await listener.accept()
  raw.write(Buffer.from([0, 0, 0, 9]))
  await t.throwsAsync(accepted.recv(), { code: 'ERR_WIREMESH_RECV_PROTOCOL' })
  raw.destroy()
  listener.close()
})

test('a payload over the maximum frame size is refused at send with the envelope', async (t) => {
  const transport = new TcpTransport({ maxFrameSize: 1024 })
  const mesh = new Mesh(4, 4)
  const [clientConnection, serverConnection] = await connectionPair(transport)
  const client = mesh.add(clientConnection)
  mesh.add(serverConnection)
  mesh.send(new Envelope(client, Buffer.alloc(1024)))
  const envelope = new Envelope(client, Buffer.alloc(1025))
  const error = t.throws(() => mesh.send(envelope), { code: 'ERR_WIREMESH_SEND_TOO_LARGE' })
  t.is((error as unknown as { envelope: Envelope }).envelope, envelope)
  mesh.shutdown()
})
