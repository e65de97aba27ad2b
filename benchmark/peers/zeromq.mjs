// The zeromq.js (v6) side of the comparison benchmark (see common.mjs for the protocol and
// benchmark/README.md for the scenarios), as its documentation has a user write it:
// `await socket.send(...)` for every message (one send may be pending per socket), and
// `await socket.receive()` for every message. ZMTP frames, not the mesh's framing.
//
// - the listening side binds a Router; the connecting side opens one Dealer socket per
//   connection (a Dealer connected once is one TCP connection), and each Dealer says
//   hello with an empty message first, so the Router knows every peer before `ready`;
// - stream, fan-in, ping-pong, backpressure: the Dealers send, the Router receives
//   (ping-pong: it echoes to the routing id); fan-out: the Router sends to each Dealer's
//   routing id in turn, with `mandatory: true` so that a full peer makes send wait
//   instead of dropping the message; every Dealer receives in its own loop;
// - default high-water marks (1000 messages per peer and direction);
// - the TLS scenarios run it over plain TCP all the same (zeromq.js has no TLS): the
//   baseline without encryption.
import {
  Checker,
  command,
  config,
  cpuFields,
  emit,
  fail,
  latencyStats,
  leave,
  makeEndPayload,
  makePayload,
  memoryFields,
  now,
  Pace,
  watchProgress,
  emitReceiverResult,
} from './common.mjs'

let zmq
try {
  zmq = await import('zeromq')
} catch (error) {
  fail(`zeromq cannot be loaded: ${error.message}`)
}

const { role, scenario, conns, size, count } = config
const routerSends = config.listen && role === 'send' // fan-out

/** Router side: binds, then learns every peer's routing id from its hello. */
async function bindRouter() {
  const router = new zmq.Router({ mandatory: routerSends })
  await router.bind('tcp://127.0.0.1:0')
  emit('listening', { port: Number(router.lastEndpoint.split(':').pop()) })
  const ids = []
  while (ids.length < conns) {
    const [id] = await router.receive()
    ids.push(id)
  }
  return { router, ids }
}

/** Dealer side: one socket per connection, each says hello. */
async function connectDealers() {
  const dealers = []
  for (let i = 0; i < conns; i++) {
    const dealer = new zmq.Dealer()
    dealer.connect(`tcp://127.0.0.1:${config.port}`)
    await dealer.send(Buffer.alloc(0))
    dealers.push(dealer)
  }
  return dealers
}

function close(sockets) {
  for (const socket of sockets) socket.close()
}

let waits = 0
/** Counts the sends that had to wait (the peer's high-water mark was reached). */
async function send(socket, message) {
  const sending = socket.send(message)
  // A send that could be queued at once resolves at once; peek whether it did.
  let settled = false
  sending.then(
    () => (settled = true),
    () => (settled = true),
  )
  await null
  if (!settled) waits++
  await sending
}

async function sender() {
  let sockets
  let sendTo
  if (routerSends) {
    const { router, ids } = await bindRouter()
    sockets = [router]
    sendTo = (conn, payload) => router.send([ids[conn], payload])
  } else {
    sockets = await connectDealers()
    sendTo = (conn, payload) => sockets[conn].send(payload)
  }
  const seqs = new Uint32Array(conns)
  emit('ready')
  await command('go')
  const cpu0 = process.cpuUsage()
  const t0 = now()
  if (scenario === 'pingpong') {
    const dealer = sockets[0]
    const checker = new Checker(1)
    const rtts = new Float64Array(count)
    for (let n = 0; n < count; n++) {
      const start = now()
      await dealer.send(makePayload(size, 0, n))
      const [reply] = await dealer.receive()
      checker.check(reply)
      rtts[n] = Number(now() - start)
    }
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count, ...checker.summary(), ...latencyStats(rtts) })
  } else if (scenario === 'stream') {
    for (let n = 0; n < count; n++) {
      const conn = n % conns
      await sendTo(conn, makePayload(size, conn, seqs[conn]++))
    }
    emit('done', { t0: String(t0), tEnd: String(now()), sent: count })
  } else {
    const deadline = t0 + BigInt(Math.round(config.duration * 1e9))
    let n = 0
    for (;;) {
      if ((n & 63) === 0 && now() >= deadline) break
      const conn = n % conns
      await send(sockets[conn], makePayload(size, conn, seqs[conn]++))
      n++
    }
    for (let conn = 0; conn < conns; conn++) await send(sockets[conn], makeEndPayload(size, conn, seqs[conn]))
    emit('done', { t0: String(t0), tEnd: String(now()), sent: n, waits })
  }
  await command('exit')
  emit('result', cpuFields(cpu0))
  close(sockets)
  leave()
}

async function receiver() {
  const checker = new Checker(conns)
  let sockets
  let receiveAll
  if (routerSends === false && config.listen) {
    const { router } = await bindRouter()
    sockets = [router]
    receiveAll = async () => {
      if (scenario === 'pingpong') {
        while (checker.received < count) {
          const [id, payload] = await router.receive()
          checker.check(payload)
          await router.send([id, payload])
        }
      } else if (scenario === 'stream') {
        while (checker.received < count) {
          const [, payload] = await router.receive()
          checker.check(payload)
        }
      } else {
        const pace = new Pace(config.rate)
        while (!checker.allEnded()) {
          if (pace.allowance() === 0) {
            await pace.wait()
            continue
          }
          const [, payload] = await router.receive()
          pace.took(1)
          checker.check(payload)
        }
      }
    }
  } else {
    // fan-out: every Dealer receives in its own loop
    if (scenario !== 'stream') fail(`the Dealer side receives only in stream scenarios, not ${scenario}`)
    sockets = await connectDealers()
    receiveAll = () =>
      new Promise((resolve, reject) => {
        for (const dealer of sockets) {
          ;(async () => {
            while (checker.received < count) {
              const [payload] = await dealer.receive()
              checker.check(payload)
              if (checker.received === count) resolve()
            }
          })().catch((error) => {
            if (checker.received < count) reject(error)
          })
        }
      })
  }
  const baselineRss = process.memoryUsage.rss()
  const report = () => emit('result', { t1: String(now()), ...checker.summary(), stalled: true })
  const unwatch = watchProgress(() => checker.received + checker.endFrames, report)
  const cpu0 = process.cpuUsage()
  emit('ready')
  await receiveAll()
  const t1 = now()
  unwatch()
  emitReceiverResult(t1, checker, cpu0, baselineRss)
  await command('exit')
  close(sockets)
  leave()
}

await (role === 'send' ? sender() : receiver())
