// Dead-peer detection by the system (issue 14): the TCP and TLS transports' `keepAlive` and
// `userTimeout` options, and the disconnect kind `Timeout`.
//
// JavaScript cannot read a socket's options back, so that the options reach the sockets
// (dialled and accepted, TCP and TLS, idle and interval rounded up to seconds) is checked
// by the core's tests (`getsockopt` in native/core/src/transport/tcp.rs and tls.rs). A peer
// that vanishes without a word is detected in hosts.spec.ts, where a link between two
// network namespaces can drop every packet.

import test from 'ava'

import { codes, DisconnectErrorKind, Envelope, Mesh, TcpTransport, TlsTransport } from '../index'
import { certificates } from './certificates'
import { connectionPair, sleep } from './helpers'

const userTimeoutApplies = process.platform === 'linux' || process.platform === 'android'

type Options = ConstructorParameters<typeof TcpTransport>[0]

const accepted: Array<[string, Options]> = [
  ['every keepalive time', { keepAlive: { idle: 1000, interval: 1000, count: 2 } }],
  ['some keepalive times', { keepAlive: { idle: 30_000 } }],
  ['keepalive with the system times', { keepAlive: {} }],
  ['times under a second and fractions', { keepAlive: { idle: 0.5, interval: 1500.5, count: 127 } }],
  ['the longest keepalive times', { keepAlive: { idle: 32_767_000, interval: 32_767_000, count: 1 } }],
  ['keepalive undefined', { keepAlive: undefined, userTimeout: undefined }],
]

const refused: Array<[string, Options, { name: string; code: string }]> = [
  ['keepAlive not an object', { keepAlive: 1000 as never }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
  ['keepAlive null', { keepAlive: null as never }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
  ['idle a string', { keepAlive: { idle: '1000' as never } }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
  ['idle 0', { keepAlive: { idle: 0 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['idle negative', { keepAlive: { idle: -1 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['idle NaN', { keepAlive: { idle: NaN } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['idle Infinity', { keepAlive: { idle: Infinity } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['idle over 32 767 s', { keepAlive: { idle: 32_767_001 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['interval 0', { keepAlive: { interval: 0 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['interval a bigint', { keepAlive: { interval: 1n as never } }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
  ['count 0', { keepAlive: { count: 0 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['count fractional', { keepAlive: { count: 1.5 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['count over 127', { keepAlive: { count: 128 } }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout 0', { userTimeout: 0 }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout negative', { userTimeout: -5 }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout NaN', { userTimeout: NaN }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout Infinity', { userTimeout: Infinity }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout over 2^31 - 1', { userTimeout: 2 ** 31 }, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
  ['userTimeout a string', { userTimeout: '2000' as never }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
]

for (const [what, options] of accepted) {
  test(`TcpTransport and TlsTransport accept ${what}`, (t) => {
    t.notThrows(() => new TcpTransport(options))
    t.notThrows(() => new TlsTransport(options))
  })
}

for (const [what, options, expected] of refused) {
  test(`TcpTransport and TlsTransport refuse ${what} at the constructor`, (t) => {
    for (const make of [() => new TcpTransport(options), () => new TlsTransport(options)]) {
      const error = t.throws(make)
      t.is(error?.name, expected.name, error?.message)
      t.is((error as Error & { code: string }).code, expected.code)
      t.regex(error!.message, /options\.(keepAlive|userTimeout)/)
    }
  })
}

if (userTimeoutApplies) {
  test('userTimeout is taken on this platform (TCP_USER_TIMEOUT)', (t) => {
    t.notThrows(() => new TcpTransport({ userTimeout: 2000 }))
    t.notThrows(() => new TcpTransport({ userTimeout: 0.25 }))
    t.notThrows(() => new TlsTransport({ userTimeout: 2 ** 31 - 1, keepAlive: { idle: 1000 } }))
  })
} else {
  test('userTimeout is refused on this platform, which has no TCP_USER_TIMEOUT', (t) => {
    for (const make of [() => new TcpTransport({ userTimeout: 2000 }), () => new TlsTransport({ userTimeout: 2000 })]) {
      const error = t.throws(make, { instanceOf: TypeError })
      t.is((error as Error & { code: string }).code, 'ERR_INVALID_ARG_VALUE')
      t.regex(error!.message, /options\.userTimeout.*not supported/)
    }
  })
}

test('a Timeout disconnect has its kind and code', (t) => {
  t.is(DisconnectErrorKind.Timeout, 'Timeout')
  t.is(codes.DisconnectError.Timeout, 'ERR_WIREMESH_DISCONNECT_TIMEOUT')
})

/** Both ends of a pair over `transport` in a mesh: every disconnect of the mesh is collected. */
async function meshOver(transport: TcpTransport) {
  const mesh = new Mesh(16, 16)
  const disconnects: Array<[number, string]> = []
  mesh.on('disconnect', (id, error) => disconnects.push([id, error.code]))
  const [client, server] = await connectionPair(transport)
  return { mesh, disconnects, ids: [mesh.add(client), mesh.add(server)] as const }
}

// A live peer answers the probes: a connection idle for longer than idle + count × interval
// stays up, and still carries envelopes both ways.
test('with keepalive and a user timeout, a live idle connection outlives its bounds and still carries envelopes', async (t) => {
  t.timeout(20_000)
  const options: Options = { keepAlive: { idle: 1000, interval: 1000, count: 1 } }
  if (userTimeoutApplies) options.userTimeout = 1000
  const { mesh, disconnects, ids } = await meshOver(new TcpTransport(options))
  t.teardown(() => mesh.shutdown())
  // Some traffic (acknowledged within the user timeout), then idle: probes at 1 s and 2 s.
  mesh.send(new Envelope(ids[0], 'before'))
  t.is((await mesh.recvTimeout(5000)).payload.toString(), 'before')
  await sleep(3500)
  t.deepEqual(disconnects, [])
  mesh.send(new Envelope(ids[0], 'ping'))
  mesh.send(new Envelope(ids[1], 'pong'))
  const got = [await mesh.recvTimeout(5000), await mesh.recvTimeout(5000)]
  t.deepEqual(got.map((e) => e.payload.toString()).sort(), ['ping', 'pong'])
  t.deepEqual(disconnects, [])
})

test('TLS connections with keepalive and a user timeout carry envelopes', async (t) => {
  const c = await certificates()
  const options: Options = { keepAlive: { idle: 1000, interval: 1000, count: 2 } }
  if (userTimeoutApplies) options.userTimeout = 2000
  const listening = new TlsTransport({ ...c.server, ...options })
  const dialling = new TlsTransport({ ca: c.ca, ...options })
  const listener = await listening.listen('tcps://127.0.0.1:0')
  const [client, server] = await Promise.all([dialling.connect(listener.endpoint), listener.accept()])
  listener.close()
  const mesh = new Mesh(16, 16)
  t.teardown(() => mesh.shutdown())
  const ids = [mesh.add(client), mesh.add(server)]
  mesh.send(new Envelope(ids[0], 'over TLS'))
  const envelope = await mesh.recvTimeout(5000)
  t.is(envelope.id, ids[1])
  t.is(envelope.payload.toString(), 'over TLS')
})
