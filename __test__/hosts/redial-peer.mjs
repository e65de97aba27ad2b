// One host's side of the several-hosts tests of dialled ids and dead peers
// (__test__/hosts.spec.ts): a numbered stream one way, from a `dial` side to a `listen`
// side, across connections. Unlike stream-peer.mjs, the dialling side uses `mesh.dial` (with
// `reconnect`, it connects again under the same id) and the listening side accepts every
// connection that comes, so a stream can outlive its connection. The harness starts one per
// host, inside the host's network namespace (__test__/hosts/netns.ts, Network.spawn):
//
//   ip netns exec <ns> node __test__/hosts/redial-peer.mjs '<config as JSON>'
//
// config: { role: 'listen' | 'dial',
//           listen: 'ip:port' (listen: where; port 0 picks one), endpoint (dial: where to),
//           size: payload bytes (>= 16), rate: envelopes/s the dial side sends (a sender that
//           fell behind catches up by at most 50 ms of them), incoming, outgoing: the mesh's
//           capacities, idleTimeout: the mesh's option (absent: none), timeout: s (then the
//           process exits with 3), transport: TcpTransport options (keepAlive, userTimeout),
//           reconnect: dial's ReconnectOptions (absent: one connection), connectTimeout: ms,
//           dial's `timeout` (one attempt) }
//
// The dial side sends with `mesh.send`, and on `Full` waits with `mesh.sendWait`; without
// `reconnect` it stops at its first `Disconnected` (its connection is gone). The listen side
// receives with `recvBatch` until the end marker, and checks the stream as a whole (each
// sequence number once, in order; a gap is counted, not fatal) and per connection.
//
// Every event carries `at`: the wall clock (Date.now()) when it happened, comparable with
// the harness's (the same machine).
//
// JSON lines on stdout (the harness's PeerProcess):
//   listening {endpoint}                 listen: bound
//   accepted {id, remote}                listen: a connection joined its mesh
//   connect {id, sent}                   dial: the id has its (next) connection; sent: so far
//   reconnecting {id, attempt, delay, error}   dial: the id waits `delay` ms before an attempt
//   disconnect {id, kind, code, message, willReconnect, unacknowledged, unsent, sent,
//               lastReceivedAt}          the mesh's 'disconnect' (lastReceivedAt: when the
//                                        last envelope from that connection was received)
//   stopped {code}                       dial without reconnect: the sender stopped
//   progress {sent, received}            every 200 ms
//   sent {sent}                          dial: the end marker is accepted after `sent`
//   result {…}                           listen: the end marker arrived: what was received
// Commands on stdin, one a line:
//   go       dial: start sending
//   finish   dial: stop sending, send the end marker (sequence number = envelopes sent)
//   exit     shut the mesh down and exit
//
// Payload, output and commands: peer-process.mjs.

import wiremesh from '../../index.js'
import { onCommands, pacer, payload as payloadOf, peerProcess, StreamCheck } from './peer-process.mjs'

const { Envelope, Mesh, TcpTransport } = wiremesh
const config = JSON.parse(process.argv[2] ?? '{}')
const size = Math.max(16, config.size ?? 64)
const rate = config.rate ?? 100
const FULL = 'ERR_WIREMESH_SEND_FULL'
const GONE = new Set(['ERR_WIREMESH_SEND_DISCONNECTED', 'ERR_WIREMESH_SEND_NOT_FOUND'])
const { emit, fail } = peerProcess('redial-peer', config.timeout)
const payload = (kind, seq) => payloadOf(size, kind, seq)

// ---- commands

let going = false
let finishing = false
let exiting = false
let wakeSender = () => {}
onCommands((word) => {
  if (word === 'go') going = true
  else if (word === 'finish') finishing = true
  else if (word === 'exit') exit()
  wakeSender()
})

const options = config.idleTimeout === undefined ? undefined : { idleTimeout: config.idleTimeout }
const mesh = new Mesh(config.incoming ?? 1024, config.outgoing ?? 1024, options)
const transport = new TcpTransport(config.transport ?? {})
let listener = null
let sent = 0

/** When the last envelope from each connection was received (Date.now()). */
const lastReceivedAt = new Map()

mesh.on('disconnect', (id, error, info) => {
  emit('disconnect', {
    id,
    kind: error.kind,
    code: error.code,
    message: error.message,
    willReconnect: info.willReconnect,
    unacknowledged: info.unacknowledged,
    unsent: error.unsent.length,
    sent,
    lastReceivedAt: lastReceivedAt.get(id) ?? null,
  })
})

function exit() {
  exiting = true
  clearInterval(progressTimer)
  listener?.close()
  mesh.shutdown()
  process.stdin.destroy()
  setTimeout(() => process.exit(0), 50)
}

const progressTimer = setInterval(() => emit('progress', { sent, received: stream.received }), 200)

// ---- the listening side: every connection that comes joins the mesh; one stream across them

/** Per connection: the first and last sequence number, how many, and whether each followed the one before. */
const connections = new Map()
const stream = new StreamCheck(size)

function check(id, bytes) {
  const seq = stream.check(bytes)
  if (seq === null) return
  let stats = connections.get(id)
  if (stats === undefined) connections.set(id, (stats = { id, first: seq, last: seq, count: 0, contiguous: true }))
  else if (seq !== stats.last + 1) stats.contiguous = false
  stats.last = seq
  stats.count++
}

async function acceptLoop() {
  try {
    for await (const connection of listener) {
      const remote = connection.remoteEndpoint
      const id = mesh.add(connection)
      emit('accepted', { id, remote })
    }
  } catch (error) {
    if (!exiting) throw error
  }
}

async function recvLoop() {
  while (stream.peerSent === null) {
    let batch
    try {
      batch = await mesh.recvBatch(1024)
    } catch (error) {
      if (exiting) return
      throw error
    }
    const at = Date.now()
    for (const envelope of batch) {
      lastReceivedAt.set(envelope.id, at)
      check(envelope.id, envelope.payload)
    }
  }
  emit('result', { ...stream.summary(), connections: [...connections.values()] })
}

// ---- the dialling side: one id, a paced stream

const pace = pacer(rate, Date.now)

async function sendOne(id, envelope) {
  try {
    mesh.send(envelope)
  } catch (error) {
    if (error.code !== FULL) throw error
    await mesh.sendWait(error.envelope)
  }
}

async function sendLoop(id) {
  while (!going && !finishing) await new Promise((resolve) => (wakeSender = resolve))
  pace.start()
  try {
    while (!finishing) {
      await pace.next()
      await sendOne(id, new Envelope(id, payload(0, sent)))
      sent++
    }
    await sendOne(id, new Envelope(id, payload(1, sent)))
  } catch (error) {
    if (config.reconnect === undefined && GONE.has(error?.code)) {
      emit('stopped', { code: error.code })
      return
    }
    throw error
  }
  emit('sent', { sent })
}

if (config.role === 'listen') {
  listener = await transport.listen(config.listen)
  emit('listening', { endpoint: listener.endpoint })
  void acceptLoop()
  await recvLoop()
} else if (config.role === 'dial') {
  const id = mesh.dial(config.endpoint, {
    transport,
    reconnect: config.reconnect,
    timeout: config.connectTimeout,
  })
  mesh.on('connect', (connected) => emit('connect', { id: connected, sent }))
  mesh.on('reconnecting', (waiting, { attempt, delay, error }) =>
    emit('reconnecting', { id: waiting, attempt, delay, error: `${error.code ?? error.name}: ${error.message}` }),
  )
  await sendLoop(id)
} else {
  fail(`unknown role ${config.role}`)
}
