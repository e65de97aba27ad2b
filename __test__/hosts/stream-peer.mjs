// One host's side of the several-hosts tests (__test__/hosts.spec.ts): a mesh with one
// connection to the other host, a numbered stream of envelopes each way, every envelope
// received checked (once, in order, intact). The harness starts one per host, inside the
// host's network namespace (__test__/hosts/netns.ts, Network.spawn):
//
//   ip netns exec <ns> node __test__/hosts/stream-peer.mjs '<config as JSON>'
//
// config: { listen: 'ip:port' (this side listens; port 0 picks one) | connect: endpoint,
//           size: payload bytes (>= 16), count: envelopes to send (absent: until `finish`),
//           rate: envelopes/s (absent: as fast as the mesh takes them; a sender that fell
//           behind catches up by at most 50 ms of them), incoming, outgoing: the mesh's
//           capacities, timeout: s (then the process exits with 3),
//           transport: TcpTransport options (keepAlive, userTimeout, …),
//           mayDisconnect: true if the connection is expected to end (the sender stops at
//           its first Disconnected or NotFound instead of failing; `exit` ends the
//           receiver) }
//
// The sender: `mesh.send`; on `Full`, `await mesh.sendWait(envelope)`, except in a partition
// probe (below). The receiver: `await mesh.recvBatch(1024)` until the other side's end
// marker. The process never reconnects: a connection that drops stays dropped (and is
// reported), so traffic after a partition flows on the connection TCP kept, or not at all.
//
// JSON lines on stdout (the harness's PeerProcess):
//   listening {endpoint}      the listening side, bound
//   ready {local, remote}     the connection is in the mesh
//   progress {sent, received, fulls, rss}   every 200 ms
//   disconnect {code, kind, unsent, afterCutMs}   the mesh announced the connection's end
//                             (unexpected unless mayDisconnect); afterCutMs: since `cut`
//   stopped {code}            mayDisconnect: the sender stopped, its connection gone
//   window {…}                at `heal`: what the sender saw during the partition (below)
//   resumed {…}               the first envelope accepted after `heal` (sendWait resolved)
//   flowing {afterHealMs}     the first envelope received after `heal`
//   sent {sent}               the end marker is accepted, after `sent` envelopes
//   result {…}                the end marker arrived: what was received, and anomalies
// Commands on stdin, one a line:
//   go         start sending
//   partition  the harness is about to cut the link: from now on a `Full` send is retried at
//              once, each time with a fresh envelope (same sequence number), counting
//              attempts (with a 2 ms pause every 256), and the RSS is sampled every 20 ms
//   cut        the link is down now (the sent count and the time are noted)
//   wait       the next `Full` is waited for with `sendWait` instead, and timed
//   heal       the harness repaired the link: report the window
//   finish     stop sending; send the end marker (sequence number = envelopes sent)
//   exit       shut the mesh down and exit
//
// Payload, output and commands: peer-process.mjs.

import wiremesh from '../../index.js'
import { onCommands, pacer, payload as payloadOf, peerProcess, StreamCheck } from './peer-process.mjs'

const { Envelope, Mesh, TcpTransport } = wiremesh
const config = JSON.parse(process.argv[2] ?? '{}')
const size = Math.max(16, config.size ?? 64)
const count = config.count ?? null
const rate = config.rate ?? null
const FULL = 'ERR_WIREMESH_SEND_FULL'

const ms = () => Number(process.hrtime.bigint() / 1000000n)
const sleep = (delay) => new Promise((resolve) => setTimeout(resolve, delay))
const yieldNow = () => new Promise((resolve) => setImmediate(resolve))
const rss = () => process.memoryUsage.rss()

const { emit } = peerProcess('stream-peer', config.timeout)
const payload = (kind, seq) => payloadOf(size, kind, seq)

// ---- commands

const seen = new Set()
const waiters = new Map()
onCommands((word) => {
  seen.add(word)
  onCommand(word)
  waiters.get(word)?.()
  waiters.delete(word)
})

const command = (word) => (seen.has(word) ? Promise.resolve() : new Promise((resolve) => waiters.set(word, resolve)))

// ---- the connection

const mesh = new Mesh(config.incoming ?? 1024, config.outgoing ?? 256)
const transport = new TcpTransport(config.transport ?? {})
let connection
if (config.listen) {
  const listener = await transport.listen(config.listen)
  emit('listening', { endpoint: listener.endpoint })
  connection = await listener.accept({ timeout: 15000 })
  listener.close()
} else {
  connection = await transport.connect(config.connect, { timeout: 15000 })
}
const local = connection.localEndpoint
const remote = connection.remoteEndpoint
const id = mesh.add(connection)
const disconnects = []
mesh.on('disconnect', (disconnected, error) => {
  disconnects.push({ id: disconnected, code: error.code, unsent: error.unsent.length })
  const afterCutMs = window.cutAt === null ? null : ms() - window.cutAt
  emit('disconnect', {
    code: error.code,
    kind: error.kind,
    message: error.message,
    unsent: error.unsent.length,
    afterCutMs,
  })
})
emit('ready', { local, remote })

// ---- sending

let sent = 0 // data envelopes accepted
let fulls = 0 // Full throws in all
let phase = 'normal' // 'probe' after `partition`, 'wait' after `wait`
let finishing = false
let exiting = false
const GONE = new Set(['ERR_WIREMESH_SEND_DISCONNECTED', 'ERR_WIREMESH_SEND_NOT_FOUND'])

/** With mayDisconnect, the sender's end at its connection's: true if `error` is that. */
function stoppedBy(error) {
  if (!config.mayDisconnect || !GONE.has(error?.code)) return false
  emit('stopped', { code: error.code })
  return true
}

/** The partition window: see `partition`, `wait`, `heal`. */
const window = {
  partitionAt: null,
  sentAtPartition: 0,
  sentAtCut: null,
  cutAt: null,
  rssAtPartition: 0,
  firstFullAt: null,
  lastAcceptAt: null, // the last send accepted in the probe
  attempts: 0, // Full throws in the probe
  attemptedBytes: 0,
  rssMax: 0,
  rssSamples: 0,
  waitAt: null, // the `wait` command
  sendWaitStartedAt: null,
  sendWaitResolvedAt: null,
  healAt: null,
  receivedAtHeal: 0,
}
let sampler = null

function onCommand(word) {
  const t = ms()
  if (word === 'partition') {
    window.partitionAt = t
    window.sentAtPartition = sent
    window.rssAtPartition = window.rssMax = rss()
    phase = 'probe'
    sampler = setInterval(() => {
      window.rssMax = Math.max(window.rssMax, rss())
      window.rssSamples++
    }, 20)
  } else if (word === 'cut') {
    window.sentAtCut = sent
    window.cutAt = t
  } else if (word === 'wait') {
    window.waitAt = t
    if (phase === 'probe') phase = 'wait'
  } else if (word === 'heal') {
    window.healAt = t
    window.receivedAtHeal = stream.received
    clearInterval(sampler)
    window.rssMax = Math.max(window.rssMax, rss())
    const since = (at) => (at === null ? null : at - window.partitionAt)
    emit('window', {
      partitionMs: t - window.partitionAt,
      sentAtPartition: window.sentAtPartition,
      sentAtCut: window.sentAtCut,
      sentAtHeal: sent,
      firstFullMs: since(window.firstFullAt),
      lastAcceptMs: since(window.lastAcceptAt),
      waitMs: since(window.waitAt),
      // The span before `wait` in which every send threw Full.
      fullOnlyMs: window.waitAt - Math.max(window.partitionAt, window.lastAcceptAt ?? window.partitionAt),
      attempts: window.attempts,
      attemptedBytes: window.attemptedBytes,
      rssAtPartition: window.rssAtPartition,
      rssMax: window.rssMax,
      rssSamples: window.rssSamples,
      sendWaitStartedMs: since(window.sendWaitStartedAt),
      sendWaitPending: window.sendWaitStartedAt !== null && window.sendWaitResolvedAt === null,
    })
  } else if (word === 'finish') {
    finishing = true
  } else if (word === 'exit') {
    exiting = true
    clearInterval(progressTimer)
    mesh.shutdown()
    process.stdin.destroy()
    setTimeout(() => process.exit(0), 50)
  }
}

function accepted() {
  sent++
  if (phase === 'probe' || phase === 'wait') window.lastAcceptAt = ms()
}

const pace = rate === null ? null : pacer(rate, ms)

async function sendLoop() {
  try {
    await sendStream()
  } catch (error) {
    if (!stoppedBy(error)) throw error
  }
}

async function sendStream() {
  pace?.start()
  while (!finishing && (count === null || sent < count)) {
    await pace?.next()
    for (;;) {
      const envelope = new Envelope(id, payload(0, sent))
      try {
        mesh.send(envelope)
        accepted()
        break
      } catch (error) {
        if (error.code !== FULL) throw error
        fulls++
        window.firstFullAt ??= phase === 'probe' ? ms() : null
        if (phase === 'probe') {
          // Keep trying, with a fresh envelope each time, as a careless sender would (256
          // attempts, then 2 ms for the rest of the machine).
          window.attempts++
          window.attemptedBytes += size
          if (window.attempts % 256 === 0) await sleep(2)
          continue
        }
        if (phase === 'wait') window.sendWaitStartedAt = ms()
        await mesh.sendWait(error.envelope)
        accepted()
        if (phase === 'wait') {
          window.sendWaitResolvedAt = ms()
          phase = 'normal'
          emit('resumed', {
            pendingMs: window.sendWaitResolvedAt - window.sendWaitStartedAt,
            afterHealMs: window.healAt === null ? null : window.sendWaitResolvedAt - window.healAt,
          })
        }
        break
      }
    }
    if (sent % 128 === 0) await yieldNow() // stdin, timers, receives
  }
  const end = new Envelope(id, payload(1, sent))
  try {
    mesh.send(end)
  } catch (error) {
    if (error.code !== FULL) throw error
    await mesh.sendWait(error.envelope)
  }
  emit('sent', { sent, fulls })
}

// ---- receiving

const stream = new StreamCheck(size)
let flowingReported = false

async function recvLoop() {
  while (stream.peerSent === null) {
    let batch
    try {
      batch = await mesh.recvBatch(1024)
    } catch (error) {
      if (config.mayDisconnect && exiting) return
      throw error
    }
    for (const envelope of batch) stream.check(envelope.payload)
    if (!flowingReported && window.healAt !== null && stream.received > window.receivedAtHeal) {
      flowingReported = true
      emit('flowing', { afterHealMs: ms() - window.healAt })
    }
  }
  emit('result', { ...stream.summary(), disconnects })
}

const progressTimer = setInterval(() => emit('progress', { sent, received: stream.received, fulls, rss: rss() }), 200)
const receiving = recvLoop()
await command('go')
await sendLoop()
await receiving
