import test from 'ava'

import * as wiremesh from '../index'
import { Envelope, Mesh, TcpTransport } from '../index'
import { connectionPair, meshPair as meshPairFor } from './helpers'

const classes = {
  AddError: wiremesh.AddErrorKind,
  RemoveError: wiremesh.RemoveErrorKind,
  SendError: wiremesh.SendErrorKind,
  RecvError: wiremesh.RecvErrorKind,
  RecvTimeoutError: wiremesh.RecvTimeoutErrorKind,
  ListenError: wiremesh.ListenErrorKind,
  ConnectError: wiremesh.ConnectErrorKind,
  AcceptError: wiremesh.AcceptErrorKind,
  DisconnectError: wiremesh.DisconnectErrorKind,
} as const

test('every error class has its kind enum, a stable code, and instanceof works', (t) => {
  const codes = new Set<string>()
  for (const [name, kinds] of Object.entries(classes)) {
    const ErrorClass = (wiremesh as unknown as Record<string, new (...args: unknown[]) => wiremesh.MeshError>)[name]
    for (const kind of Object.values(kinds)) {
      t.is(kinds[kind as keyof typeof kinds], kind, `${name}Kind.${kind} === '${kind}'`)
      const error = new ErrorClass(kind, 'message', 1, [])
      t.true(error instanceof ErrorClass)
      t.true(error instanceof wiremesh.MeshError)
      t.true(error instanceof Error)
      t.is(error.name, name)
      t.is(error.kind, kind)
      t.regex(error.code, /^ERR_WIREMESH_[A-Z_]+$/)
      codes.add(error.code)
    }
  }
  t.true(codes.has('ERR_WIREMESH_SEND_FULL'))
  t.true(codes.has('ERR_WIREMESH_RECV_TIMEOUT_TIMEOUT'))
  t.true(codes.has('ERR_WIREMESH_REMOVE_NOT_FOUND'))
  t.true(codes.has('ERR_WIREMESH_DISCONNECT_EOF_MID_FRAME'))
})

test('capacities must be integers >= 1', (t) => {
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 32]) {
    t.throws(() => new Mesh(bad, 1), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
    t.throws(() => new Mesh(1, bad), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  }
  for (const bad of ['1', null, undefined, {}, 1n]) {
    t.throws(() => new Mesh(bad as unknown as number, 1), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  }
})

test('envelopes check their id and payload', (t) => {
  t.throws(() => new Envelope(-1, 'x'), { instanceOf: RangeError })
  t.throws(() => new Envelope(1.5, 'x'), { instanceOf: RangeError })
  t.throws(() => new Envelope('1' as unknown as number, 'x'), { instanceOf: TypeError })
  t.throws(() => new Envelope(1, 42 as unknown as string), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new Envelope(1, [1, 2] as unknown as string), { instanceOf: TypeError })
})

test('unknown ids are NotFound, and the envelope comes back', async (t) => {
  const mesh = new Mesh(1, 1)
  const envelope = new Envelope(42, 'lost?')
  const error = t.throws<wiremesh.SendError>(() => mesh.send(envelope), {
    instanceOf: wiremesh.SendError,
    code: 'ERR_WIREMESH_SEND_NOT_FOUND',
  })
  t.is(error?.envelope, envelope)
  await t.throwsAsync(mesh.remove(42), { instanceOf: wiremesh.RemoveError, code: 'ERR_WIREMESH_REMOVE_NOT_FOUND' })
  await t.throwsAsync(mesh.sendWait(envelope), { code: 'ERR_WIREMESH_SEND_NOT_FOUND' })
  t.is(mesh.outgoing(42), null)
  mesh.shutdown()
})

test('wrong argument types are TypeErrors at the call', async (t) => {
  const mesh = new Mesh(1, 1)
  const transport = new TcpTransport()
  t.throws(() => mesh.send({ id: 1, payload: 'x' } as unknown as Envelope), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
  })
  t.throws(() => mesh.add({} as unknown as wiremesh.Connection), { instanceOf: TypeError })
  await t.throwsAsync(mesh.remove('1' as unknown as number), { instanceOf: TypeError })
  await t.throwsAsync(mesh.recvTimeout('5' as unknown as number), { instanceOf: TypeError })
  await t.throwsAsync(mesh.recvTimeout(-5), { instanceOf: RangeError })
  await t.throwsAsync(mesh.recvBatch(0), { instanceOf: RangeError })
  await t.throwsAsync(mesh.sendWait(new Envelope(1, 'x'), { signal: {} as AbortSignal }), { instanceOf: TypeError })
  await t.throwsAsync(transport.connect(42 as unknown as string), { instanceOf: TypeError })
  await t.throwsAsync(transport.listen(undefined as unknown as string), { instanceOf: TypeError })
  t.throws(() => new TcpTransport({ maxFrameSize: -1 }), { instanceOf: RangeError })
  t.throws(() => new TcpTransport({ maxFrameSize: 2 ** 32 }), { instanceOf: RangeError })
  t.throws(() => new TcpTransport({ noDelay: 'yes' as unknown as boolean }), { instanceOf: TypeError })
  t.throws(() => new wiremesh.Connection({} as never), { instanceOf: TypeError })
  mesh.shutdown()
})

test('after shutdown: add is refused with Shutdown, sends are Disconnected, receives are Shutdown', async (t) => {
  const mesh = new Mesh(1, 1)
  const [client, server] = await connectionPair()
  const id = mesh.add(client)
  mesh.shutdown()
  t.throws(() => mesh.add(server), { instanceOf: wiremesh.AddError, code: 'ERR_WIREMESH_ADD_SHUTDOWN' })
  t.throws(() => mesh.send(new Envelope(id, 'late')), { code: 'ERR_WIREMESH_SEND_DISCONNECTED' })
  await t.throwsAsync(mesh.recv(), { instanceOf: wiremesh.RecvError, code: 'ERR_WIREMESH_RECV_SHUTDOWN' })
  await t.throwsAsync(mesh.recvTimeout(10), {
    instanceOf: wiremesh.RecvTimeoutError,
    code: 'ERR_WIREMESH_RECV_TIMEOUT_SHUTDOWN',
  })
  await t.throwsAsync(mesh.recvBatch(4), { code: 'ERR_WIREMESH_RECV_SHUTDOWN' })
  t.throws(() => mesh.tryRecv(), { code: 'ERR_WIREMESH_RECV_SHUTDOWN' })
  mesh.shutdown()
  server.disconnect()
})

test('a connection refused by a mesh that has shut down is still usable', async (t) => {
  const mesh = new Mesh(1, 1)
  mesh.shutdown()
  const [client, server] = await connectionPair()
  t.throws(() => mesh.add(client), { code: 'ERR_WIREMESH_ADD_SHUTDOWN' })
  t.false(client.spent)
  await client.send('still mine')
  t.is((await server.recv()).toString(), 'still mine')
  client.disconnect()
  server.disconnect()
})

test('every code is a literal of the codes table, and code narrows kind in TypeScript', (t) => {
  const error: wiremesh.SendError = new wiremesh.SendError(wiremesh.SendErrorKind.Full, 'full', new Envelope(1, 'x'))
  // Compiles only because `code` narrows the union: a Full error's envelope is an Envelope.
  switch (error.code) {
    case 'ERR_WIREMESH_SEND_FULL': {
      const envelope: Envelope = error.envelope
      t.is(envelope.payload.toString(), 'x')
      break
    }
    default:
      t.fail(`unexpected ${error.code}`)
  }
  for (const [name, table] of Object.entries(wiremesh.codes)) {
    const kinds = classes[name as keyof typeof classes]
    t.deepEqual(Object.keys(table).sort(), Object.values(kinds).sort(), `${name}: a code per kind`)
    for (const code of Object.values(table)) t.regex(code, /^ERR_WIREMESH_[A-Z_]+$/)
  }
  t.is(wiremesh.codes.SendError.Full, 'ERR_WIREMESH_SEND_FULL')
})

test('instanceof works across two installed copies of the package', (t) => {
  // A second copy of the errors module, as a second install would load it.
  const path = require.resolve('../lib/errors')
  const first = require(path) as typeof import('../lib/errors')
  delete require.cache[path]
  const second = require(path) as typeof import('../lib/errors')
  t.not(first.SendError, second.SendError, 'two copies of the class')
  const error = new second.SendError(second.SendErrorKind.Full, 'full', null)
  t.true(error instanceof first.SendError)
  t.true(error instanceof first.MeshError)
  t.false(error instanceof first.RecvError)
  t.false(new Error('plain') instanceof first.MeshError)
  t.false({ kind: 'Full' } instanceof first.SendError)
})

test('a mutated envelope cannot change what is sent', async (t) => {
  const mesh = new Mesh(8, 8)
  const [client, server] = await meshPairFor(mesh)
  const envelope = new Envelope(client, 'original')
  // The fields are getters: assigning throws in strict code and is ignored in sloppy code.
  for (const [field, value] of [
    ['payload', 'text'],
    ['payload', null],
    ['id', client + 0.5],
    ['id', 'x'],
  ] as const) {
    try {
      ;(envelope as unknown as Record<string, unknown>)[field] = value
    } catch (error) {
      t.true(error instanceof TypeError)
    }
  }
  t.is(envelope.id, client)
  t.is(envelope.payload.toString(), 'original')
  mesh.send(envelope)
  const received = await mesh.recv()
  t.is(received.id, server)
  t.is(received.payload.toString(), 'original')
  t.throws(() => mesh.send({ id: client, payload: 'forged' } as unknown as Envelope), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
  })
  mesh.shutdown()
})
