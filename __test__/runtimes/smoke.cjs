'use strict'
// The runtime smoke test: the package, loaded from this checkout, under whichever runtime
// runs this file (Node, Bun or Deno; `run.mjs` runs it under all three). Plain CommonJS so
// that every runtime loads it as it is. One line per step; exits non-zero on any failure.
//
//   node --expose-gc __test__/runtimes/smoke.cjs            every step
//   node --expose-gc __test__/runtimes/smoke.cjs load-exit  only load, make a mesh, exit
//
// The last step is the clean exit: once everything is shut down, nothing may keep the
// process alive. It is checked from inside (an unref'd guard timer that fails the run if
// it ever fires) and by `run.mjs` (the exit code, every step's line, and a timeout).

const path = require('node:path')
const { setTimeout: timer } = require('node:timers')
const fs = require('node:fs')
const { Worker } = require('node:worker_threads')

const wiremesh = require('../..')
const { DisconnectError, Envelope, Mesh, SendError, SendErrorKind, TcpTransport } = wiremesh

const runtime =
  typeof globalThis.Deno !== 'undefined'
    ? `deno ${globalThis.Deno.version.deno}`
    : typeof globalThis.Bun !== 'undefined'
      ? `bun ${globalThis.Bun.version}`
      : `node ${process.versions.node}`

/** How long the process may take to exit by itself once everything is shut down. */
const EXIT_GUARD_MS = 5000

function check(condition, message) {
  if (!condition) throw new Error(message)
}

/** `promise`, or a rejection after `ms` naming `what`. */
function within(ms, what, promise) {
  let guard
  const timeout = new Promise((_, reject) => {
    guard = timer(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(guard))
}

/** A connected pair over loopback TCP: `[dialled, accepted]`. */
async function pair(transport, listener) {
  return Promise.all([transport.connect(listener.endpoint), listener.accept()])
}

/** Sends, waiting for room whenever the outgoing queue is full. */
async function sendWaiting(mesh, envelope) {
  try {
    mesh.send(envelope)
  } catch (error) {
    if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
    await mesh.sendWait(error.envelope)
  }
}

// ---------------------------------------------------------------------------------------
// Steps

/** What a step returns when it cannot run here (`run.mjs` requires ok from every step). */
const SKIPPED = Symbol('skipped')

/** A full garbage collection, where the runtime exposes one; false if it does not. */
function collectGarbage() {
  if (typeof globalThis.gc === 'function') globalThis.gc()
  else if (typeof globalThis.Bun !== 'undefined') globalThis.Bun.gc(true)
  else return false
  return true
}

/**
 * Right after loading, a full GC, then operations of the lobby (listen, connect, accept, a
 * connection's own send and recv). Regression: the waker held the lobby weakly and nothing
 * else held it, so a GC lost every wake of the lobby and each of these waited forever.
 */
async function gc() {
  if (!collectGarbage()) return SKIPPED
  await new Promise((resolve) => setImmediate(resolve))
  collectGarbage()
  const transport = new TcpTransport()
  const listener = await within(5000, 'listen after a GC', transport.listen('127.0.0.1:0'))
  const [dialled, accepted] = await within(5000, 'connect and accept after a GC', pair(transport, listener))
  listener.close()
  await within(5000, "a connection's send after a GC", dialled.send('after gc'))
  const payload = await within(5000, "a connection's recv after a GC", accepted.recv())
  check(payload.toString() === 'after gc', `received "${payload}"`)
  dialled.disconnect()
  accepted.disconnect()
  return 'the lobby still answers after a full GC'
}

/** The README's example, as it is written there. */
async function readme() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const mesh = new Mesh(1, 1)
  const client = mesh.add(await transport.connect(listener.endpoint))
  const server = mesh.add(await listener.accept())
  mesh.send(new Envelope(client, Buffer.from('hello')))
  const envelope = await mesh.recv()
  check(envelope.id === server, `the envelope came from connection ${envelope.id}, not ${server}`)
  check(envelope.payload.toString() === 'hello', `received "${envelope.payload}"`)
  const clientConnection = await mesh.remove(client)
  const serverConnection = await mesh.remove(server)
  mesh.shutdown()
  listener.close()
  clientConnection.disconnect()
  serverConnection.disconnect()
  return `connection ${envelope.id} received ${envelope.payload.toString()} from connection ${client}`
}

/** 100 000 envelopes over one connection, received in order. */
async function stream() {
  const count = 100_000
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const [dialled, accepted] = await pair(transport, listener)
  listener.close()
  const sender = new Mesh(16, 1024)
  const receiver = new Mesh(4096, 16)
  const client = sender.add(dialled)
  receiver.add(accepted)
  const started = Date.now()
  const sending = (async () => {
    for (let n = 0; n < count; n++) {
      const payload = Buffer.allocUnsafe(8)
      payload.writeUInt32BE(n, 0)
      payload.writeUInt32BE(n ^ 0x5a5a5a5a, 4)
      await sendWaiting(sender, new Envelope(client, payload))
    }
  })()
  let next = 0
  while (next < count) {
    for (const { payload } of await receiver.recvBatch(4096)) {
      check(payload.length === 8, `envelope ${next} has ${payload.length} bytes`)
      const n = payload.readUInt32BE(0)
      check(n === next, `envelope ${n} arrived where ${next} was due`)
      check(payload.readUInt32BE(4) === (n ^ 0x5a5a5a5a) >>> 0, `envelope ${n} is corrupt`)
      next++
    }
  }
  await sending
  sender.shutdown()
  receiver.shutdown()
  return `${count} envelopes in order in ${Date.now() - started} ms`
}

/** 1 000 round trips between two meshes. */
async function pingPong() {
  const rounds = 1000
  const transport = new TcpTransport({ noDelay: true })
  const listener = await transport.listen('127.0.0.1:0')
  const [dialled, accepted] = await pair(transport, listener)
  listener.close()
  const left = new Mesh(4, 4)
  const right = new Mesh(4, 4)
  const leftId = left.add(dialled)
  const rightId = right.add(accepted)
  const started = Date.now()
  const echo = (async () => {
    for (let n = 0; n < rounds; n++) {
      const { id, payload } = await right.recv()
      check(id === rightId, `the echo side received from ${id}`)
      right.send(new Envelope(rightId, payload))
    }
  })()
  for (let n = 0; n < rounds; n++) {
    left.send(new Envelope(leftId, `ping ${n}`))
    const { payload } = await left.recv()
    check(payload.toString() === `ping ${n}`, `round ${n} came back as "${payload}"`)
  }
  await echo
  left.shutdown()
  right.shutdown()
  return `${rounds} round trips in ${Date.now() - started} ms`
}

/** A peer removed from its mesh and disconnected: the other side's mesh says 'disconnect'. */
async function disconnect() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const [dialled, accepted] = await pair(transport, listener)
  listener.close()
  const mesh = new Mesh(4, 4)
  const peer = new Mesh(4, 4)
  const id = mesh.add(dialled)
  const peerId = peer.add(accepted)
  const event = new Promise((resolve) => mesh.once('disconnect', (...args) => resolve(args)))
  const connection = await peer.remove(peerId)
  connection.disconnect()
  const [eventId, error] = await within(5000, "the 'disconnect' event", event)
  check(eventId === id, `the event named connection ${eventId}, not ${id}`)
  check(
    error instanceof DisconnectError,
    `the event's error is ${error && error.constructor && error.constructor.name}`,
  )
  peer.shutdown()
  // A plain second mesh shut down: the same event, for a connection of its own.
  const [dialled2, accepted2] = await (async () => {
    const listener2 = await transport.listen('127.0.0.1:0')
    try {
      return await pair(transport, listener2)
    } finally {
      listener2.close()
    }
  })()
  const other = new Mesh(4, 4)
  const id2 = mesh.add(dialled2)
  other.add(accepted2)
  const event2 = new Promise((resolve) => mesh.once('disconnect', (...args) => resolve(args)))
  other.shutdown()
  const [eventId2, error2] = await within(5000, "the 'disconnect' event after a shutdown", event2)
  check(eventId2 === id2, `the event named connection ${eventId2}, not ${id2}`)
  check(
    error2 instanceof DisconnectError,
    `the event's error is ${error2 && error2.constructor && error2.constructor.name}`,
  )
  mesh.shutdown()
  return `removed and disconnected: ${error.kind} (${error.code}); peer shut down: ${error2.kind}`
}

/** A worker thread that loads the package, makes a mesh, exchanges one envelope and exits. */
async function worker() {
  const worker = new Worker(path.join(__dirname, 'worker.cjs'), { workerData: 'exchange' })
  const message = new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  const reply = await within(10_000, "the worker's message", message)
  check(reply && reply.ok, `the worker failed: ${reply && reply.error}`)
  const code = await within(10_000, "the worker's exit", exited)
  check(code === 0, `the worker exited with code ${code}`)
  return `${reply.detail}; exited with code ${code}`
}

/** This process's reactor threads (Linux: by name, from /proc; -1 elsewhere). */
function countReactors() {
  if (process.platform !== 'linux') return -1
  let count = 0
  for (const task of fs.readdirSync('/proc/self/task')) {
    try {
      // Linux keeps 15 bytes of a thread's name: wiremesh-reactor reads back as wiremesh-reacto.
      if (fs.readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('wiremesh-reac')) count++
    } catch {
      // the thread ended while we looked
    }
  }
  return count
}

/**
 * A worker terminated while its meshes run (one ref'd, with a receive pending): the
 * environment's teardown shuts them down and joins their reactor threads, and the process
 * goes on.
 */
async function workerTerminate() {
  const before = countReactors()
  const worker = new Worker(path.join(__dirname, 'worker.cjs'), { workerData: 'linger' })
  const message = new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  const reply = await within(10_000, "the worker's message", message)
  check(reply && reply.ok, `the worker failed: ${reply && reply.error}`)
  // A new thread names itself once it runs: wait until both have.
  const named = Date.now()
  let running = countReactors()
  while (before >= 0 && running < before + 2 && Date.now() - named < 5000) {
    await new Promise((resolve) => timer(resolve, 20))
    running = countReactors()
  }
  await within(10_000, "the worker's termination", worker.terminate())
  if (before < 0) return `${reply.detail}; terminated (reactor threads not counted off Linux)`
  check(running >= before + 2, `${running} reactor threads with the worker's two meshes running, ${before} before`)
  const since = Date.now()
  let now = countReactors()
  while (now > before && Date.now() - since < 5000) {
    await new Promise((resolve) => timer(resolve, 20))
    now = countReactors()
  }
  check(now <= before, `${now} reactor threads 5 s after the termination, ${before} before the worker`)
  return `${reply.detail}; terminated: reactor threads ${before} -> ${running} -> ${now} in ${Date.now() - since} ms`
}

// ---------------------------------------------------------------------------------------

const steps = [
  ['gc', gc],
  ['readme', readme],
  ['stream', stream],
  ['ping-pong', pingPong],
  ['disconnect', disconnect],
  ['worker', worker],
  ['worker-terminate', workerTerminate],
]

function report(name, ok, detail) {
  console.log(`${runtime} ${name}: ${ok ? 'ok' : 'FAIL'}${detail ? ` (${detail})` : ''}`)
}

/** From here on nothing may keep the process alive: it must exit by itself, with code 0. */
function awaitCleanExit() {
  const since = Date.now()
  const guard = timer(() => {
    report('clean exit', false, `still alive ${EXIT_GUARD_MS} ms after everything was shut down`)
    process.exit(1)
  }, EXIT_GUARD_MS)
  guard.unref()
  process.on('exit', (code) => {
    if (code === 0) report('clean exit', true, `exited by itself after ${Date.now() - since} ms`)
    else report('clean exit', false, `exit code ${code}`)
  })
}

async function main() {
  if (process.argv[2] === 'load-exit') {
    // Load, make a mesh, and exit with the mesh still running: the environment's teardown
    // must shut it down without crashing the runtime.
    const mesh = new Mesh(1, 1)
    mesh.unref()
    report('load-exit', true, "loaded, made an unref'd mesh, exiting")
    awaitCleanExit()
    return
  }
  for (const [name, step] of steps) {
    try {
      const detail = await within(20_000, name, step())
      if (detail === SKIPPED) console.log(`${runtime} ${name}: skipped (no gc: run node and deno with --expose-gc)`)
      else report(name, true, detail)
    } catch (error) {
      report(name, false, error && error.stack ? error.stack : String(error))
      // Something may still be running: do not wait for a clean exit.
      process.exit(1)
    }
  }
  awaitCleanExit()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
