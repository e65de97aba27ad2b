import test from 'ava'

import * as wiremesh from '../index'
import { Envelope, Mesh, TcpTransport } from '../index'
import { connectionPair } from './helpers'

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
