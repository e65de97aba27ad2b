import { createHash, X509Certificate } from 'node:crypto'
import diagnostics_channel from 'node:diagnostics_channel'
import * as net from 'node:net'
import * as tls from 'node:tls'

import test from 'ava'

import {
  AcceptError,
  AcceptErrorKind,
  Connection,
  ConnectError,
  ConnectErrorKind,
  DisconnectErrorKind,
  Envelope,
  ListenError,
  ListenErrorKind,
  Mesh,
  MultiTransport,
  TcpTransport,
  TlsTransport,
} from '../index'
import { certificates } from './certificates'
import { frame, frameReader, nextDisconnect, numberOf, numbered } from './helpers'

const LOCAL = 'tcps://127.0.0.1:0'

/** A listening side and a dialling side that authenticate each other. */
async function mutual(framing: 'raw' | 'splinter-v1' = 'raw'): Promise<[TlsTransport, TlsTransport]> {
  const c = await certificates()
  const server = new TlsTransport({ ...c.server, ca: c.ca, requestCert: true, framing })
  const client = new TlsTransport({ ...c.client, ca: c.ca, framing })
  return [server, client]
}

/** A connected pair through `server`'s listener and `client`: [client, server]. */
async function tlsPair(server: TlsTransport, client: TlsTransport): Promise<[Connection, Connection]> {
  const listener = await server.listen(LOCAL)
  const [dialled, accepted] = await Promise.all([client.connect(listener.endpoint), listener.accept()])
  listener.close()
  return [dialled, accepted]
}

function portOf(endpoint: string): number {
  return Number(endpoint.split(':').pop())
}

function fingerprintOf(pem: string): string {
  const der = new X509Certificate(pem).raw
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':')
}

test('a mesh carries envelopes both ways over mutual TLS, in order, small and 1 MiB', async (t) => {
  const c = await certificates()
  const [server, client] = await mutual()
  const [dialled, accepted] = await tlsPair(server, client)
  t.is(dialled.peerCertificate?.subject.CN, 'server')
  t.is(accepted.peerCertificate?.subject.CN, 'client-1')
  t.is(dialled.peerCertificate?.fingerprint256, fingerprintOf(c.server.cert))
  t.true(accepted.remoteEndpoint.startsWith('tcps://127.0.0.1:'))
  const mesh = new Mesh(64, 64)
  const a = mesh.add(dialled)
  const b = mesh.add(accepted)
  t.is(mesh.peerCertificate(a)?.subject.CN, 'server')
  t.is(mesh.peerCertificate(b)?.subject.CN, 'client-1')
  t.true(Buffer.isBuffer(mesh.peerCertificate(b)?.raw))
  t.is(dialled.peerCertificate?.subject.O, 'wiremesh tests', 'still readable once spent')

  const count = 3000
  const big = 8
  const sending = (async () => {
    for (let i = 0; i < count; i++) {
      await mesh.sendWait(new Envelope(a, numbered(i, 64)))
      await mesh.sendWait(new Envelope(b, numbered(i, 64)))
    }
    for (let i = 0; i < big; i++) {
      await mesh.sendWait(new Envelope(a, numbered(count + i, 1024 * 1024)))
      await mesh.sendWait(new Envelope(b, numbered(count + i, 1024 * 1024)))
    }
  })()
  const next = new Map([
    [a, 0],
    [b, 0],
  ])
  for (let got = 0; got < 2 * (count + big); got++) {
    const envelope = await mesh.recv()
    const n = numberOf(envelope.payload)
    t.is(n, next.get(envelope.id)!, `in order on ${envelope.id}`)
    if (n >= count) t.is(envelope.payload.length, 1024 * 1024)
    next.set(envelope.id, n + 1)
  }
  await sending
  const removed = await mesh.remove(a)
  t.is(mesh.peerCertificate(a), null, 'dropped at remove')
  t.is(removed.peerCertificate?.subject.CN, 'server')
  const again = mesh.add(removed)
  t.is(mesh.peerCertificate(again)?.subject.CN, 'server', 'taken again at add')
  mesh.shutdown()
  t.is(mesh.peerCertificate(b), null, 'dropped at shutdown')
})

test("wiremesh dials Node's tls server, with and without a client certificate", async (t) => {
  const c = await certificates()
  for (const requestCert of [false, true]) {
    const server = tls.createServer({ ...c.server, ca: c.ca, requestCert, rejectUnauthorized: requestCert })
    let peerCN: unknown
    server.on('secureConnection', (socket) => {
      peerCN = socket.getPeerCertificate().subject?.CN
      // Echoes each frame back, as it came.
      socket.pipe(socket)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as net.AddressInfo).port
    const client = new TlsTransport(requestCert ? { ...c.client, ca: c.ca } : { ca: c.ca })
    const connection = await client.connect(`tcps://localhost:${port}`)
    t.is(connection.peerCertificate?.subject.CN, 'server')
    await connection.send('hello over tls')
    t.is((await connection.recv()).toString(), 'hello over tls')
    const mesh = new Mesh(16, 16)
    const id = mesh.add(connection)
    const payload = Buffer.alloc(300_000, 7)
    mesh.send(new Envelope(id, payload))
    t.deepEqual((await mesh.recv()).payload, payload)
    t.is(peerCN, requestCert ? 'client-1' : undefined)
    mesh.shutdown()
    server.close()
  }
})

test("Node's tls client dials a wiremesh listener, with and without a client certificate", async (t) => {
  const c = await certificates()
  for (const requestCert of [false, true]) {
    const transport = new TlsTransport({ ...c.server, ca: c.ca, requestCert })
    const listener = await transport.listen(LOCAL)
    const socket = tls.connect({
      host: '127.0.0.1',
      port: portOf(listener.endpoint),
      ca: c.ca,
      ...(requestCert ? c.client : {}),
    })
    const reader = frameReader(socket)
    const accepted = await listener.accept()
    t.is(accepted.peerCertificate?.subject.CN, requestCert ? 'client-1' : undefined)
    if (!requestCert) t.is(accepted.peerCertificate, null)
    socket.write(frame('from node'))
    t.is((await accepted.recv()).toString(), 'from node')
    const mesh = new Mesh(16, 128)
    const id = mesh.add(accepted)
    for (let i = 0; i < 100; i++) mesh.send(new Envelope(id, numbered(i, 100)))
    for (let i = 0; i < 100; i++) t.is(numberOf(await reader.next()), i)
    socket.write(frame(Buffer.alloc(200_000, 1)))
    t.is((await mesh.recv()).payload.length, 200_000)
    socket.destroy()
    listener.close()
    mesh.shutdown()
  }
})

/** Expects the next accept on `listener` to be refused with kind Tls, then an honest client to get in. */
async function refusedThenHonest(
  t: import('ava').ExecutionContext,
  listener: import('../index').Listener,
  dishonest: () => Promise<unknown>,
  honest: TlsTransport,
): Promise<void> {
  const refused = listener.accept()
  void dishonest().catch(() => {})
  const error = await t.throwsAsync(refused, { instanceOf: AcceptError })
  t.is(error?.kind, AcceptErrorKind.Tls)
  t.is(error?.code, 'ERR_WIREMESH_ACCEPT_TLS')
  const [dialled, accepted] = await Promise.all([honest.connect(listener.endpoint), listener.accept()])
  await dialled.send('still here')
  t.is((await accepted.recv()).toString(), 'still here')
  dialled.disconnect()
  accepted.disconnect()
}

test('a listener that requires client certificates refuses clients without one, of another CA, or expired, and goes on', async (t) => {
  const c = await certificates()
  const [server, honest] = await mutual()
  const listener = await server.listen(LOCAL)
  // No certificate.
  await refusedThenHonest(t, listener, () => new TlsTransport({ ca: c.ca }).connect(listener.endpoint), honest)
  // Another CA's.
  await refusedThenHonest(
    t,
    listener,
    () => new TlsTransport({ ...c.stranger, ca: c.ca }).connect(listener.endpoint),
    honest,
  )
  // Expired.
  await refusedThenHonest(
    t,
    listener,
    () => new TlsTransport({ ...c.expired, ca: c.ca }).connect(listener.endpoint),
    honest,
  )
  // Node's own client without a certificate.
  await refusedThenHonest(
    t,
    listener,
    () =>
      new Promise((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port: portOf(listener.endpoint), ca: c.ca })
        socket.on('error', resolve)
        socket.on('close', resolve)
      }),
    honest,
  )
  t.is(listener.refusedTls, 4)
  listener.close()
})

test('a dialling side refuses a server of another CA, with an expired certificate, or of another name', async (t) => {
  const c = await certificates()
  const client = new TlsTransport({ ...c.client, ca: c.ca })
  const cases: Array<[string, TlsTransport, TlsTransport]> = [
    ['another CA', new TlsTransport({ ...c.stranger }), client],
    ['expired', new TlsTransport({ ...c.expired }), client],
    [
      'another name',
      new TlsTransport({ ...c.server }),
      new TlsTransport({ ca: c.ca, servername: 'elsewhere.example' }),
    ],
  ]
  for (const [what, server, dialler] of cases) {
    const listener = await server.listen(LOCAL)
    const accepting = listener.accept().catch((error: unknown) => error)
    const error = await t.throwsAsync(dialler.connect(listener.endpoint), { instanceOf: ConnectError }, what)
    t.is(error?.kind, ConnectErrorKind.Tls, what)
    t.is(error?.code, 'ERR_WIREMESH_CONNECT_TLS', what)
    t.true((await accepting) instanceof AcceptError, `${what}: the server sees the refusal too`)
    listener.close()
  }
  // By a Node server whose certificate names localhost: connecting by another name fails.
  const server = tls.createServer({ ...c.server })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const error = await t.throwsAsync(
    new TlsTransport({ ca: c.ca, servername: 'nothere.example' }).connect(`tcps://127.0.0.1:${port}`),
    { instanceOf: ConnectError },
  )
  t.is(error?.kind, ConnectErrorKind.Tls)
  server.close()
})

test("a TLS peer that vanishes mid-frame ends with 'disconnect' EofMidFrame", async (t) => {
  const c = await certificates()
  const transport = new TlsTransport({ ...c.server })
  const listener = await transport.listen(LOCAL)
  // A mesh waited on only through its events does not hold the process open, nor itself:
  // once nothing else refers to it, it is collected and shut down (by design). A timer
  // holds both here.
  let mesh: Mesh | undefined
  const hold = setInterval(() => void mesh, 1000)
  for (const end of ['destroy', 'end'] as const) {
    const socket = tls.connect({ host: '127.0.0.1', port: portOf(listener.endpoint), ca: c.ca })
    socket.on('error', () => {})
    const accepted = await listener.accept()
    mesh = new Mesh(4, 4)
    const id = mesh.add(accepted)
    const disconnected = nextDisconnect(mesh)
    const partial = frame(Buffer.alloc(100, 9)).subarray(0, 40)
    socket.write(partial, () => (end === 'end' ? socket.end() : setTimeout(() => socket.destroy(), 50)))
    const [gone, error] = await disconnected
    t.is(gone, id)
    t.is(error.kind, DisconnectErrorKind.EofMidFrame, end)
    mesh.shutdown()
  }
  clearInterval(hold)
  listener.close()
})

test('connect gives up on a handshake a server never answers: timeout and signal', async (t) => {
  const c = await certificates()
  const sockets: net.Socket[] = []
  const silent = net.createServer((socket) => sockets.push(socket))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  const endpoint = `tcps://127.0.0.1:${(silent.address() as net.AddressInfo).port}`
  const transport = new TlsTransport({ ca: c.ca })
  const timedOut = await t.throwsAsync(transport.connect(endpoint, { timeout: 200 }), { instanceOf: ConnectError })
  t.is(timedOut?.kind, ConnectErrorKind.Timeout)
  const controller = new AbortController()
  setTimeout(() => controller.abort(), 100)
  const aborted = await t.throwsAsync(transport.connect(endpoint, { signal: controller.signal }), {
    instanceOf: ConnectError,
  })
  t.is(aborted?.kind, ConnectErrorKind.Aborted)
  for (const socket of sockets) socket.destroy()
  silent.close()
})

test('splinter-v1 framing negotiates inside TLS, after the handshake', async (t) => {
  const [server, client] = await mutual('splinter-v1')
  const [dialled, accepted] = await tlsPair(server, client)
  await dialled.send('versioned')
  t.is((await accepted.recv()).toString(), 'versioned')
  const mesh = new Mesh(8, 8)
  const a = mesh.add(dialled)
  const b = mesh.add(accepted)
  mesh.send(new Envelope(b, 'back'))
  const envelope = await mesh.recv()
  t.is(envelope.id, a)
  t.is(envelope.payload.toString(), 'back')
  mesh.shutdown()
})

test('TlsTransport checks its options at construction', async (t) => {
  const c = await certificates()
  t.throws(() => new TlsTransport({ key: 42 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new TlsTransport({ requestCert: 'yes' as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new TlsTransport({ servername: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new TlsTransport({ framing: 'tls' as never }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => new TlsTransport({ key: 'not pem', cert: c.server.cert }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /options\.key/,
  })
  t.throws(() => new TlsTransport({ key: c.server.key, cert: 'nope' }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => new TlsTransport({ key: c.client.key, cert: c.server.cert }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /does not fit/,
  })
  t.throws(() => new TlsTransport({ ...c.server, requestCert: true }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => new TlsTransport({ cert: c.server.cert }), { code: 'ERR_INVALID_ARG_VALUE' })
  // Buffers and lists of PEM blocks, as Node's tls takes them.
  t.notThrows(
    () => new TlsTransport({ key: Buffer.from(c.server.key), cert: [c.server.cert, c.ca], ca: [c.ca, c.otherCa] }),
  )
  // Without key and cert it only dials.
  const error = await t.throwsAsync(new TlsTransport({ ca: c.ca }).listen(LOCAL), { instanceOf: ListenError })
  t.is(error?.kind, ListenErrorKind.Unsupported)
})

test('TlsTransport takes tcps:// only; MultiTransport takes it in a list', async (t) => {
  const c = await certificates()
  const transport = new TlsTransport({ ...c.server, ca: c.ca })
  t.true(transport.accepts('tcps://127.0.0.1:80'))
  t.true(transport.accepts('tcps://localhost:80'))
  t.false(transport.accepts('tcp://127.0.0.1:80'))
  t.false(transport.accepts('127.0.0.1:80'))
  const multi = new MultiTransport([new TcpTransport(), transport])
  const listener = await multi.listen(LOCAL)
  t.true(listener.endpoint.startsWith('tcps://127.0.0.1:'))
  const [dialled, accepted] = await Promise.all([multi.connect(listener.endpoint), listener.accept()])
  t.is(dialled.peerCertificate?.subject.CN, 'server')
  t.is(accepted.peerCertificate, null)
  t.false(new MultiTransport().accepts('tcps://127.0.0.1:80'))
  dialled.disconnect()
  accepted.disconnect()
  listener.close()
})

test('TLS 1.2 both ways with Node, mutual authentication', async (t) => {
  const c = await certificates()
  // A Node server that speaks at most TLS 1.2 and requires a client certificate.
  const server = tls.createServer({
    ...c.server,
    ca: c.ca,
    requestCert: true,
    rejectUnauthorized: true,
    maxVersion: 'TLSv1.2',
  })
  let protocol: string | null = null
  server.on('secureConnection', (socket) => {
    protocol = socket.getProtocol()
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const [, client] = await mutual()
  const dialled = await client.connect(`tcps://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
  await dialled.send('one-two')
  t.is((await dialled.recv()).toString(), 'one-two')
  t.is(protocol, 'TLSv1.2')
  // Payloads of many records through a mesh, whose reactor reads them straight into
  // their buffers: echoed byte for byte.
  const mesh = new Mesh(4, 4)
  const id = mesh.add(dialled)
  for (const size of [64 * 1024, 1024 * 1024 + 3]) {
    const payload = Buffer.alloc(size)
    for (let i = 0; i < size; i++) payload[i] = (i * 7) % 251
    mesh.send(new Envelope(id, payload))
    t.true((await mesh.recv()).payload.equals(payload), `${size} B echoed`)
  }
  mesh.shutdown()
  server.close()

  // A Node client that speaks at most TLS 1.2 to a wiremesh listener that requires one.
  const [listening] = await mutual()
  const listener = await listening.listen(LOCAL)
  const socket = tls.connect({
    host: '127.0.0.1',
    port: portOf(listener.endpoint),
    ca: c.ca,
    ...c.client,
    maxVersion: 'TLSv1.2',
  })
  const accepted = await listener.accept()
  t.is(socket.getProtocol(), 'TLSv1.2')
  t.is(accepted.peerCertificate?.subject.CN, 'client-1')
  socket.write(frame('twelve'))
  t.is((await accepted.recv()).toString(), 'twelve')
  socket.destroy()
  accepted.disconnect()
  listener.close()
})

test('refused TLS handshakes are published on wiremesh:refused', async (t) => {
  const c = await certificates()
  const server = new TlsTransport({ ...c.server, ca: c.ca, requestCert: true })
  const listener = await server.listen(LOCAL)
  const seen: Array<{ side: string; kind: string }> = []
  const onRefused = (message: unknown) => {
    const { side, endpoint, error } = message as { side: string; endpoint: string; error: { kind: string } }
    // Other tests of this file run at the same time: keep this listener's events.
    if (endpoint === listener.endpoint) seen.push({ side, kind: error.kind })
  }
  diagnostics_channel.subscribe('wiremesh:refused', onRefused)
  const mesh = new Mesh(4, 4)
  try {
    // A client without a certificate: the listener refuses it. (With TLS 1.3 the client's
    // handshake is done before the server checks it: the dialled id connects, then its
    // connection ends with the server's alert.)
    const accepting = listener.accept().catch((error: AcceptError) => error)
    const id = mesh.dial(listener.endpoint, { transport: new TlsTransport({ ca: c.ca }) })
    const accepted = await accepting
    t.true(accepted instanceof AcceptError)
    t.is((accepted as AcceptError).kind, AcceptErrorKind.Tls)
    const [left] = await nextDisconnect(mesh)
    t.is(left, id)
    t.deepEqual(seen, [{ side: 'accept', kind: 'Tls' }])
    t.is(listener.refusedTls, 1)
  } finally {
    mesh.shutdown()
    diagnostics_channel.unsubscribe('wiremesh:refused', onRefused)
    listener.close()
  }
})
