// The Unix-socket transport (`unix:///absolute/path`) and MultiTransport: a mesh over Unix
// sockets, the same framing as Node's `net` on the same socket path, stale socket files,
// bad endpoints, and dispatch by scheme.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import test from 'ava'

import {
  ConnectError,
  ConnectErrorKind,
  DisconnectErrorKind,
  Envelope,
  ListenError,
  ListenErrorKind,
  Mesh,
  MultiTransport,
  TcpTransport,
  UnixTransport,
} from '../index'
import { frame, frameReader, nextDisconnect, numbered, numberOf, sleep } from './helpers'

const unixOnly = process.platform === 'win32' ? test.skip : test
const windowsOnly = process.platform === 'win32' ? test : test.skip

const dir = mkdtempSync(path.join(os.tmpdir(), 'wiremesh-unix-'))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

let count = 0
/** A fresh socket path and its endpoint. */
function socketPath(): { file: string; endpoint: string } {
  const file = path.join(dir, `s${count++}.sock`)
  return { file, endpoint: `unix://${file}` }
}

unixOnly('a mesh streams both ways over Unix sockets, in order, and hears the peer leave', async (t) => {
  const transport = new UnixTransport()
  const { file, endpoint } = socketPath()
  const listener = await transport.listen(endpoint)
  t.is(listener.endpoint, endpoint)
  const [client, server] = await Promise.all([transport.connect(endpoint), listener.accept()])
  t.is(client.remoteEndpoint, endpoint)
  t.is(server.localEndpoint, endpoint)
  t.is(server.remoteEndpoint, 'unix://')
  const mesh = new Mesh(256, 64)
  const a = mesh.add(client)
  const b = mesh.add(server)
  const N = 20_000
  const got = new Map<number, number[]>([
    [a, []],
    [b, []],
  ])
  const receiving = (async () => {
    while (got.get(a)!.length + got.get(b)!.length < 2 * N) {
      const envelope = await mesh.recv()
      got.get(envelope.id)!.push(numberOf(envelope.payload))
    }
  })()
  for (let seq = 0; seq < N; seq++) {
    await mesh.sendWait(new Envelope(a, numbered(seq, 100)))
    await mesh.sendWait(new Envelope(b, numbered(seq, 100)))
    if (seq % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
  }
  await receiving
  for (const seqs of got.values()) t.deepEqual(seqs, [...Array(N).keys()])
  // One side leaves: the other hears it after its envelopes.
  const left = nextDisconnect(mesh)
  const clientBack = await mesh.remove(a)
  clientBack.disconnect()
  const [id, error] = await left
  t.is(id, b)
  t.is(error.kind, DisconnectErrorKind.Eof)
  mesh.shutdown()
  listener.close()
  // The lobby drops the listener, and its file, just after close() returns.
  for (let i = 0; i < 100 && existsSync(file); i++) await sleep(10)
  t.false(existsSync(file), 'closing the listener removes its socket file')
})

unixOnly('the framing is the same as a plain net socket on the same path, both ways', async (t) => {
  const transport = new UnixTransport()
  const mesh = new Mesh(64, 64)
  t.teardown(() => mesh.shutdown())

  // A net client dials a wiremesh listener.
  const first = socketPath()
  const listener = await transport.listen(first.endpoint)
  const socket = net.createConnection({ path: first.file })
  const [accepted] = await Promise.all([listener.accept(), new Promise((resolve) => socket.once('connect', resolve))])
  listener.close()
  const id = mesh.add(accepted)
  const reader = frameReader(socket)
  socket.write(Buffer.concat([frame('hello'), frame(''), frame(Buffer.alloc(70_000, 7))]))
  t.is((await mesh.recv()).payload.toString(), 'hello')
  t.is((await mesh.recv()).payload.length, 0)
  t.deepEqual((await mesh.recv()).payload, Buffer.alloc(70_000, 7))
  mesh.send(new Envelope(id, 'world'))
  t.is((await reader.next()).toString(), 'world')
  socket.destroy()

  // wiremesh dials a net server.
  const second = socketPath()
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(second.file, resolve))
  const peer = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
  const dialled = mesh.add(await transport.connect(second.endpoint))
  const netPeer = await peer
  const netReader = frameReader(netPeer)
  mesh.send(new Envelope(dialled, 'to net'))
  t.is((await netReader.next()).toString(), 'to net')
  netPeer.write(frame('from net'))
  const envelope = await mesh.recv()
  t.is(envelope.id, dialled)
  t.is(envelope.payload.toString(), 'from net')
  netPeer.destroy()
  await new Promise((resolve) => server.close(resolve))
})

unixOnly('a socket file left by a process that died is replaced; a served one is AddressInUse', async (t) => {
  const transport = new UnixTransport()
  const { file, endpoint } = socketPath()
  // A child listens on the path and is killed: its socket file stays behind.
  const child = spawn(
    process.execPath,
    ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => console.log('listening'))`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  await new Promise((resolve) => child.stdout!.once('data', resolve))
  // Served: refused, and the file is left alone.
  const inUse = await t.throwsAsync(transport.listen(endpoint), { instanceOf: ListenError })
  t.is(inUse?.kind, ListenErrorKind.AddressInUse)
  t.is(inUse?.code, 'ERR_WIREMESH_LISTEN_ADDRESS_IN_USE')
  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('close', resolve))
  t.true(existsSync(file), 'the killed process left its socket file')
  // Stale: replaced, and it works.
  const listener = await transport.listen(endpoint)
  const [client, server] = await Promise.all([transport.connect(endpoint), listener.accept()])
  await client.send('after the replacement')
  t.is((await server.recv()).toString(), 'after the replacement')
  client.disconnect()
  server.disconnect()
  listener.close()
  // The lobby drops the listener, and its file, just after close() returns.
  for (let i = 0; i < 100 && existsSync(file); i++) await sleep(10)
  t.false(existsSync(file), 'closing the listener removes its socket file')
  // A file that is not a socket is never replaced.
  writeFileSync(file, 'mine')
  const notSocket = await t.throwsAsync(transport.listen(endpoint), { instanceOf: ListenError })
  t.is(notSocket?.kind, ListenErrorKind.AddressInUse)
  t.true(existsSync(file))
})

unixOnly('bad endpoints and nobody listening are typed errors', async (t) => {
  const transport = new UnixTransport()
  t.true(transport.accepts('unix:///tmp/x.sock'))
  for (const bad of ['unix://relative.sock', 'unix://', '/tmp/x.sock', 'tcp://127.0.0.1:1', '127.0.0.1:1']) {
    t.false(transport.accepts(bad), bad)
    const listen = await t.throwsAsync(transport.listen(bad), { instanceOf: ListenError })
    t.is(listen?.kind, ListenErrorKind.InvalidEndpoint, bad)
    const connect = await t.throwsAsync(transport.connect(bad), { instanceOf: ConnectError })
    t.is(connect?.kind, ConnectErrorKind.InvalidEndpoint, bad)
  }
  // Too long for a socket address.
  const long = `unix://${path.join(dir, 'x'.repeat(200))}`
  t.is(
    (await t.throwsAsync(transport.listen(long), { instanceOf: ListenError }))?.kind,
    ListenErrorKind.InvalidEndpoint,
  )
  t.is(
    (await t.throwsAsync(transport.connect(long), { instanceOf: ConnectError }))?.kind,
    ConnectErrorKind.InvalidEndpoint,
  )
  const nobody = await t.throwsAsync(transport.connect(socketPath().endpoint), { instanceOf: ConnectError })
  t.is(nobody?.kind, ConnectErrorKind.IoError)
  t.throws(() => new UnixTransport({ maxFrameSize: -1 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new UnixTransport('big' as never), { code: 'ERR_INVALID_ARG_TYPE' })
})

unixOnly('maxFrameSize applies to Unix connections', async (t) => {
  const transport = new UnixTransport({ maxFrameSize: 8 })
  const { endpoint } = socketPath()
  const listener = await transport.listen(endpoint)
  const [client, server] = await Promise.all([transport.connect(endpoint), listener.accept()])
  listener.close()
  await t.throwsAsync(client.send('nine bytes'), { code: 'ERR_WIREMESH_SEND_TOO_LARGE' })
  await client.send('eight b.')
  t.is((await server.recv()).toString(), 'eight b.')
  client.disconnect()
  server.disconnect()
})

windowsOnly('on Windows the Unix transport is Unsupported', async (t) => {
  const transport = new UnixTransport()
  const listen = await t.throwsAsync(transport.listen('unix:///C:/x.sock'), { instanceOf: ListenError })
  t.is(listen?.code, 'ERR_WIREMESH_LISTEN_UNSUPPORTED')
  const connect = await t.throwsAsync(transport.connect('unix:///C:/x.sock'), { instanceOf: ConnectError })
  t.is(connect?.code, 'ERR_WIREMESH_CONNECT_UNSUPPORTED')
})

unixOnly('MultiTransport dispatches by scheme, to its own transports', async (t) => {
  const multi = new MultiTransport()
  t.true(multi.accepts('tcp://127.0.0.1:1'))
  t.true(multi.accepts('127.0.0.1:1'))
  t.true(multi.accepts('unix:///tmp/x.sock'))
  t.false(multi.accepts('pigeon://coop'))
  const mesh = new Mesh(16, 16)
  t.teardown(() => mesh.shutdown())
  for (const bind of ['127.0.0.1:0', socketPath().endpoint]) {
    const listener = await multi.listen(bind)
    const [client, server] = await Promise.all([multi.connect(listener.endpoint), listener.accept()])
    listener.close()
    const id = mesh.add(client)
    mesh.add(server)
    mesh.send(new Envelope(id, `through ${bind.split(':')[0]}`))
    t.is((await mesh.recv()).payload.toString(), `through ${bind.split(':')[0]}`)
  }
  const listen = await t.throwsAsync(multi.listen('pigeon://coop'), { instanceOf: ListenError })
  t.is(listen?.kind, ListenErrorKind.InvalidEndpoint)
  const connect = await t.throwsAsync(multi.connect('pigeon://coop'), { instanceOf: ConnectError })
  t.is(connect?.kind, ConnectErrorKind.InvalidEndpoint)

  // Its own list, copied: options come from the transports given.
  const list = [new UnixTransport({ maxFrameSize: 4 })]
  const small = new MultiTransport(list)
  list.push(new TcpTransport() as never)
  t.false(small.accepts('127.0.0.1:1'), 'changing the array afterwards changes nothing')
  t.is(small.transports.length, 1)
  const { endpoint } = socketPath()
  const listener = await small.listen(endpoint)
  const [client, server] = await Promise.all([small.connect(endpoint), listener.accept()])
  listener.close()
  await t.throwsAsync(client.send('too long'), { code: 'ERR_WIREMESH_SEND_TOO_LARGE' })
  client.disconnect()
  server.disconnect()

  t.throws(() => new MultiTransport('tcp' as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new MultiTransport([{}] as never), { code: 'ERR_INVALID_ARG_TYPE' })
})
