import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import * as net from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import test from 'ava'

import {
  AcceptError,
  Connection,
  ConnectError,
  Listener,
  RecvError,
  RecvErrorKind,
  SendError,
  TcpTransport,
} from '../index'
import { connectionPair, frame, listen, sleep } from './helpers'

/** The threads of this process (from /proc; 0 where there is none: macOS, Windows). */
function threads(): number {
  return existsSync('/proc/self/task') ? readdirSync('/proc/self/task').length : 0
}

/** A plain `net` socket connected to a connection accepted by a wiremesh listener: [socket, connection]. */
async function rawPair(transport = new TcpTransport()): Promise<[net.Socket, Connection]> {
  const listener = await listen(transport)
  const socket = net.connect({ host: '127.0.0.1', port: portOf(listener), noDelay: true })
  const [connection] = await Promise.all([
    listener.accept({ timeout: 5000 }),
    new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject)),
  ])
  listener.close()
  return [socket, connection]
}

function portOf(listener: Listener): number {
  return Number(listener.endpoint.split(':').pop())
}

/** Resolves once the socket has seen the end of its stream (or a reset); rejects after `ms`. */
function closedWithin(socket: net.Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.readableEnded || socket.destroyed) return resolve()
    const timer = setTimeout(() => reject(new Error(`the peer did not see the close within ${ms} ms`)), ms)
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    socket.once('end', done).once('close', done).once('error', done)
    socket.resume()
  })
}

/** Settles with the promise's outcome, or rejects if it is still pending after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} still pending after ${ms} ms`)), ms)
    }),
  ])
}

/** True if the promise is still pending after `ms`. */
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol('pending')
  const outcome = await Promise.race([
    promise.then(
      () => 'settled',
      () => 'settled',
    ),
    sleep(ms).then(() => marker),
  ])
  return outcome === marker
}

/**
 * An endpoint whose accept queue is full, so that new SYNs are dropped: a child Node process
 * listens with a backlog of 1 and then blocks its event loop for good, so it never accepts;
 * a few plain connections fill the queue. (A wiremesh listener asks for a backlog of 4096,
 * too deep to fill in a test.)
 */
async function fullEndpoint(): Promise<{ endpoint: string; close: () => void }> {
  const script = `
    const server = require('node:net').createServer()
    server.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {
      process.stdout.write(server.address().port + '\\n', () => {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
      })
    })`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(Number(out.trim()))
    })
    child.once('exit', (code) => reject(new Error(`the listening child exited (${code})`)))
  })
  const sockets: net.Socket[] = []
  for (let i = 0; i < 8; i++) {
    const socket = net.connect({ host: '127.0.0.1', port })
    socket.on('error', () => {})
    sockets.push(socket)
  }
  await sleep(100)
  return {
    endpoint: `127.0.0.1:${port}`,
    close: () => {
      for (const socket of sockets) socket.destroy()
      child.kill('SIGKILL')
    },
  }
}

test.serial('200 concurrent connects and accepts start no thread of their own', async (t) => {
  const transport = new TcpTransport()
  const listener = await listen(transport)
  // Warm up: the lobby's thread and one connection.
  const warm = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  const before = threads()
  const accepts = Array.from({ length: 200 }, () => listener.accept({ timeout: 8000 }))
  const connects = Array.from({ length: 200 }, () => transport.connect(listener.endpoint, { timeout: 8000 }))
  let most = threads()
  const sampler = setInterval(() => {
    most = Math.max(most, threads())
  }, 1)
  try {
    const [servers, clients] = await Promise.all([Promise.all(accepts), Promise.all(connects)])
    most = Math.max(most, threads())
    t.is(servers.length, 200)
    t.is(clients.length, 200)
    // Every accepted connection is one of the clients, once.
    const remotes = new Set(servers.map((server) => server.remoteEndpoint))
    t.is(remotes.size, 200)
    for (const client of clients) t.true(remotes.has(client.localEndpoint))
    for (const connection of [...servers, ...clients]) connection.disconnect()
  } finally {
    clearInterval(sampler)
  }
  if (before === 0) t.log(`threads not counted: no /proc on ${process.platform}`)
  t.true(most <= before + 2, `threads grew from ${before} to ${most}`)
  for (const connection of warm) connection.disconnect()
  listener.close()
})

test('recv with a timeout rejects with kind Timeout, and the connection stays usable', async (t) => {
  const [client, server] = await connectionPair()
  const started = Date.now()
  const error = await t.throwsAsync(server.recv({ timeout: 50 }), { instanceOf: RecvError })
  const took = Date.now() - started
  t.is(error?.kind, RecvErrorKind.Timeout)
  t.is(error?.code, 'ERR_WIREMESH_RECV_TIMEOUT')
  t.true(took >= 45 && took < 2000, `timed out after ${took} ms`)
  t.false(server.spent)
  await client.send('after the timeout')
  t.is((await server.recv({ timeout: 5000 })).toString(), 'after the timeout')
  client.disconnect()
  server.disconnect()
})

test('a recv that times out keeps a partly arrived frame', async (t) => {
  const [socket, server] = await rawPair()
  const whole = frame('a frame in two parts')
  socket.write(whole.subarray(0, 7))
  await t.throwsAsync(server.recv({ timeout: 50 }), { code: 'ERR_WIREMESH_RECV_TIMEOUT' })
  socket.write(whole.subarray(7))
  t.is((await server.recv({ timeout: 5000 })).toString(), 'a frame in two parts')
  socket.destroy()
  server.disconnect()
})

test('disconnect settles the recv that waits at once, and the peer sees the close', async (t) => {
  const [socket, server] = await rawPair()
  const receiving = server.recv()
  await sleep(30)
  const asked = Date.now()
  server.disconnect()
  const error = await t.throwsAsync(within(receiving, 1000, 'the recv'), { instanceOf: RecvError })
  t.true(Date.now() - asked < 100, 'settled at once')
  t.is(error?.kind, RecvErrorKind.Aborted)
  t.is(error?.code, 'ERR_WIREMESH_RECV_ABORTED')
  await closedWithin(socket, 3000)
  t.true(server.spent)
  await t.throwsAsync(server.recv({ timeout: 1000 }), { instanceOf: RecvError, code: 'ERR_WIREMESH_RECV_SPENT' })
  await t.throwsAsync(server.send('x'), { instanceOf: SendError, code: 'ERR_WIREMESH_SEND_SPENT' })
  server.disconnect()
  socket.destroy()
})

test('disconnect settles a send that waits for a peer that does not read', async (t) => {
  const [socket, server] = await rawPair()
  socket.pause()
  const sending = server.send(Buffer.alloc(16 * 1024 * 1024 - 1))
  t.true(await pendingAfter(sending, 50), 'the send waits for the peer')
  server.disconnect()
  await t.throwsAsync(within(sending, 100, 'the send'), { code: 'ERR_WIREMESH_SEND_ABORTED' })
  await closedWithin(socket, 3000)
  socket.destroy()
})

test('operations queued behind one that disconnect ends reject with kind Spent', async (t) => {
  const [socket, server] = await rawPair()
  const first = server.recv()
  const second = server.recv({ timeout: 5000 })
  await sleep(20)
  server.disconnect()
  await t.throwsAsync(within(first, 1000, 'the first recv'), { code: 'ERR_WIREMESH_RECV_ABORTED' })
  await t.throwsAsync(within(second, 1000, 'the second recv'), { code: 'ERR_WIREMESH_RECV_SPENT' })
  socket.destroy()
})

test('an AbortSignal ends a pending recv with kind Aborted and its reason as the cause', async (t) => {
  const [client, server] = await connectionPair()
  const controller = new AbortController()
  const reason = new Error('the user gave up')
  const receiving = server.recv({ signal: controller.signal })
  t.true(await pendingAfter(receiving, 30))
  controller.abort(reason)
  const error = await t.throwsAsync(within(receiving, 1000, 'the recv'), { instanceOf: RecvError })
  t.is(error?.kind, RecvErrorKind.Aborted)
  t.is(error?.cause, reason)
  // The connection was handed back: it still works.
  t.false(server.spent)
  await client.send('still here')
  t.is((await server.recv({ timeout: 5000 })).toString(), 'still here')
  client.disconnect()
  server.disconnect()
})

test('a signal aborted before the call rejects at once, with its reason as the cause', async (t) => {
  const transport = new TcpTransport()
  const [client, server] = await connectionPair(transport)
  const reason = new Error('too late')
  const signal = AbortSignal.abort(reason)
  const recv = await t.throwsAsync(within(server.recv({ signal }), 100, 'the recv'), {
    code: 'ERR_WIREMESH_RECV_ABORTED',
  })
  t.is(recv?.cause, reason)
  const send = await t.throwsAsync(within(server.send('x', { signal }), 100, 'the send'), {
    code: 'ERR_WIREMESH_SEND_ABORTED',
  })
  t.is(send?.cause, reason)
  const listener = await listen(transport)
  const accept = await t.throwsAsync(within(listener.accept({ signal }), 100, 'the accept'), {
    code: 'ERR_WIREMESH_ACCEPT_ABORTED',
  })
  t.is(accept?.cause, reason)
  const connect = await t.throwsAsync(within(transport.connect(listener.endpoint, { signal }), 100, 'the connect'), {
    code: 'ERR_WIREMESH_CONNECT_ABORTED',
  })
  t.is(connect?.cause, reason)
  // Nothing was started: the connection is still usable and the listener's backlog is empty.
  await client.send('fine')
  t.is((await server.recv({ timeout: 5000 })).toString(), 'fine')
  client.disconnect()
  server.disconnect()
  listener.close()
})

test('operations called together run one at a time, in the order of the calls', async (t) => {
  const [client, server] = await connectionPair()
  const sends = Array.from({ length: 20 }, (_, i) => client.send(`frame ${i}`, { timeout: 5000 }))
  const recvs = Array.from({ length: 20 }, () => server.recv({ timeout: 5000 }))
  await within(Promise.all(sends), 5000, 'the sends')
  const got = await within(Promise.all(recvs), 5000, 'the recvs')
  t.deepEqual(
    got.map((payload) => payload.toString()),
    Array.from({ length: 20 }, (_, i) => `frame ${i}`),
  )
  client.disconnect()
  server.disconnect()
})

test('aborting a recv that waits behind another rejects it at once', async (t) => {
  const [client, server] = await connectionPair()
  const first = server.recv()
  const controller = new AbortController()
  const second = server.recv({ signal: controller.signal })
  await sleep(20)
  controller.abort()
  await t.throwsAsync(within(second, 500, 'the queued recv'), { code: 'ERR_WIREMESH_RECV_ABORTED' })
  // The first is untouched, and takes the next frame.
  await client.send('first')
  t.is((await within(first, 5000, 'the first recv')).toString(), 'first')
  client.disconnect()
  server.disconnect()
})

test('a recv timeout counts from the call, even while it waits behind another', async (t) => {
  const [client, server] = await connectionPair()
  const first = server.recv()
  const second = server.recv({ timeout: 50 })
  await t.throwsAsync(within(second, 1000, 'the queued recv'), { code: 'ERR_WIREMESH_RECV_TIMEOUT' })
  await client.send('first')
  t.is((await within(first, 5000, 'the first recv')).toString(), 'first')
  client.disconnect()
  server.disconnect()
})

// A full accept queue drops new SYNs on Linux and macOS; Windows refuses them instead.
const dropsSyns = process.platform !== 'win32' ? test : test.skip

dropsSyns('connect with a timeout to a listener that cannot answer rejects with kind Timeout', async (t) => {
  const transport = new TcpTransport()
  const full = await fullEndpoint()
  try {
    const started = Date.now()
    const error = await t.throwsAsync(transport.connect(full.endpoint, { timeout: 100 }), {
      instanceOf: ConnectError,
    })
    const took = Date.now() - started
    t.is(error?.kind, 'Timeout')
    t.is(error?.code, 'ERR_WIREMESH_CONNECT_TIMEOUT')
    t.true(took >= 90 && took < 2000, `timed out after ${took} ms`)
    // And a signal aborts such an attempt.
    const controller = new AbortController()
    const connecting = transport.connect(full.endpoint, { signal: controller.signal })
    t.true(await pendingAfter(connecting, 30))
    controller.abort('stop')
    const aborted = await t.throwsAsync(within(connecting, 1000, 'the connect'), {
      code: 'ERR_WIREMESH_CONNECT_ABORTED',
    })
    t.is(aborted?.cause, 'stop')
  } finally {
    full.close()
  }
})

test('accept with a timeout rejects with kind Timeout; with a signal, kind Aborted', async (t) => {
  const transport = new TcpTransport()
  const listener = await listen(transport)
  const started = Date.now()
  const timedOut = await t.throwsAsync(listener.accept({ timeout: 50 }), { instanceOf: AcceptError })
  t.is(timedOut?.kind, 'Timeout')
  t.is(timedOut?.code, 'ERR_WIREMESH_ACCEPT_TIMEOUT')
  t.true(Date.now() - started >= 45)

  const controller = new AbortController()
  const accepting = listener.accept({ signal: controller.signal })
  t.true(await pendingAfter(accepting, 30))
  const reason = new Error('enough')
  controller.abort(reason)
  const aborted = await t.throwsAsync(within(accepting, 1000, 'the accept'), { instanceOf: AcceptError })
  t.is(aborted?.kind, 'Aborted')
  t.is(aborted?.code, 'ERR_WIREMESH_ACCEPT_ABORTED')
  t.is(aborted?.cause, reason)

  // The listener still accepts.
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept({ timeout: 5000 })])
  t.is(server.remoteEndpoint, client.localEndpoint)
  client.disconnect()
  server.disconnect()
  listener.close()
})

test('a server times out a client that never completes its handshake', async (t) => {
  const transport = new TcpTransport()
  const listener = await listen(transport)
  const socket = net.connect({ host: '127.0.0.1', port: portOf(listener) })
  const connection = await listener.accept({ timeout: 5000 })
  // The client sends half a header, then nothing.
  socket.write(Buffer.from([0, 0]))
  await t.throwsAsync(connection.recv({ timeout: 100 }), { code: 'ERR_WIREMESH_RECV_TIMEOUT' })
  connection.disconnect()
  await closedWithin(socket, 3000)
  t.true(connection.spent)
  socket.destroy()
  listener.close()
})

/** V8's `gc()`, without starting node with `--expose-gc`. */
function collector(): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

test('lobby operations still complete after a garbage collection', async (t) => {
  const gc = collector()
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(10)
  }
  const transport = new TcpTransport()
  const listener = await listen(transport)
  const [client, server] = await within(
    Promise.all([transport.connect(listener.endpoint), listener.accept()]),
    3000,
    'connect and accept after a gc',
  )
  await within(client.send('after gc'), 3000, 'the send')
  t.is((await within(server.recv(), 3000, 'the recv')).toString(), 'after gc')
  client.disconnect()
  server.disconnect()
  listener.close()
})

test('a pending accept keeps its listener alive', async (t) => {
  const gc = collector()
  const transport = new TcpTransport()
  let listener: Listener | null = await listen(transport)
  const endpoint = listener.endpoint
  const accepting = listener.accept({ timeout: 5000 })
  listener = null
  for (let i = 0; i < 5; i++) {
    gc()
    await sleep(10)
  }
  const [client, server] = await Promise.all([transport.connect(endpoint, { timeout: 5000 }), accepting])
  t.is(server.remoteEndpoint, client.localEndpoint)
  client.disconnect()
  server.disconnect()
})

test('bad input rejects with typed errors, never throws', async (t) => {
  const transport = new TcpTransport()
  const [client, server] = await connectionPair(transport)
  const listener = await listen(transport)
  const calls: Array<[() => Promise<unknown>, { instanceOf: ErrorConstructor; code: string }]> = [
    [() => client.send(42 as unknown as string), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [() => client.send('x', 5 as unknown as object), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [() => client.send('x', { timeout: NaN }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }],
    [() => client.recv({ timeout: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }],
    [() => client.recv({ timeout: Infinity }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }],
    [() => client.recv({ timeout: '5' as unknown as number }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [
      () => client.recv({ signal: 'x' as unknown as AbortSignal }),
      { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
    ],
    [() => client.recv(null as unknown as object), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [() => transport.connect(123 as unknown as string), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [() => transport.connect(listener.endpoint, { timeout: -5 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }],
    [
      () => transport.connect(listener.endpoint, { signal: {} as AbortSignal }),
      { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
    ],
    [() => transport.listen(80 as unknown as string), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
    [() => listener.accept({ timeout: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }],
    [() => listener.accept('soon' as unknown as object), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }],
  ]
  for (const [call, expected] of calls) {
    let promise: Promise<unknown> | undefined
    t.notThrows(() => {
      promise = call()
    })
    t.true(promise instanceof Promise)
    await t.throwsAsync(promise!, expected)
  }
  await t.throwsAsync(transport.connect('not an endpoint'), {
    instanceOf: ConnectError,
    code: 'ERR_WIREMESH_CONNECT_INVALID_ENDPOINT',
  })
  // None of it took the connection: it still works.
  await client.send('after bad input')
  t.is((await server.recv({ timeout: 5000 })).toString(), 'after bad input')
  client.disconnect()
  server.disconnect()
  listener.close()
})

test('connect resolves host names (localhost) before connecting', async (t) => {
  const transport = new TcpTransport()
  const listener = await listen(transport)
  const port = portOf(listener)
  for (const endpoint of [`localhost:${port}`, `tcp://localhost:${port}`]) {
    const [client, server] = await Promise.all([
      transport.connect(endpoint, { timeout: 5000 }),
      listener.accept({ timeout: 5000 }),
    ])
    t.is(client.remoteEndpoint, listener.endpoint)
    await client.send(endpoint)
    t.is((await server.recv({ timeout: 5000 })).toString(), endpoint)
    client.disconnect()
    server.disconnect()
  }
  listener.close()
})

test.serial('the timeout and the signal of connect also bound the host name lookup', async (t) => {
  // A resolver that does not answer (as a dead DNS server): the lookup never settles.
  const dns = require('node:dns/promises') as { lookup: unknown }
  const lookup = dns.lookup
  dns.lookup = () => new Promise(() => {})
  try {
    const transport = new TcpTransport()
    const started = Date.now()
    const error = await t.throwsAsync(
      within(transport.connect('stalled.example:80', { timeout: 100 }), 2000, 'the connect'),
      { instanceOf: ConnectError },
    )
    t.is(error?.code, 'ERR_WIREMESH_CONNECT_TIMEOUT')
    t.true(Date.now() - started < 1000)
    const controller = new AbortController()
    const connecting = transport.connect('stalled.example:80', { signal: controller.signal })
    await sleep(20)
    controller.abort('no')
    const aborted = await t.throwsAsync(within(connecting, 1000, 'the connect'), { instanceOf: ConnectError })
    t.is(aborted?.code, 'ERR_WIREMESH_CONNECT_ABORTED')
    t.is(aborted?.cause, 'no')
  } finally {
    dns.lookup = lookup
  }
})

test('a large send completes once a slow peer has read all of it', async (t) => {
  const [socket, server] = await rawPair()
  const payload = Buffer.alloc(8 * 1024 * 1024)
  for (let i = 0; i < payload.length; i += 4096) payload[i] = (i / 4096) % 251
  socket.pause()
  const sending = server.send(payload)
  t.true(await pendingAfter(sending, 50), 'the send waits for the reader')
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.resume()
  await within(sending, 5000, 'the send')
  const wire = await within(
    (async () => {
      while (chunks.reduce((n, c) => n + c.length, 0) < payload.length + 4) await sleep(5)
      return Buffer.concat(chunks)
    })(),
    5000,
    'the frame',
  )
  t.true(wire.equals(frame(payload)))
  socket.destroy()
  server.disconnect()
})
