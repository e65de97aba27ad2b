import test from 'ava'
import { ChildProcess, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'

import { Envelope, Mesh, RecvError, RecvErrorKind, TcpTransport } from '../index'

// ---------------------------------------------------------------------------------------
// Helpers

/** The package root, wherever this clone lives. */
const ROOT = path.resolve(__dirname, '..')
/** `require(...)` argument for the built library, as a JavaScript string literal. */
const LIB = JSON.stringify(path.join(ROOT, 'index.js'))
/** How long a child may take to exit by itself before it is killed and the test fails. */
const EXIT_GUARD_MS = 30_000

const isLinux = process.platform === 'linux'

let tempDir: string | undefined

function scriptDir(): string {
  if (tempDir === undefined) tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wiremesh-lifetime-'))
  return tempDir
}

test.after.always(() => {
  if (tempDir !== undefined) fs.rmSync(tempDir, { recursive: true, force: true })
})

let scriptCounter = 0

/** Writes a CommonJS script into the temp dir; `__LIB__` becomes the library's absolute path. */
function writeScript(name: string, source: string): string {
  const file = path.join(scriptDir(), `${++scriptCounter}-${name}.js`)
  fs.writeFileSync(file, source.split('__LIB__').join(LIB))
  return file
}

/**
 * Counts this process's threads whose name starts with `prefix`, from /proc/self/task.
 * Linux truncates thread names to 15 bytes: `wiremesh-reactor` reads back as `wiremesh-reacto`.
 * Source text for child scripts and workers (Linux only; -1 elsewhere).
 */
const COUNT_REACTORS_SOURCE = `
function countReactors() {
  if (process.platform !== 'linux') return -1
  const fs = require('fs')
  let n = 0
  for (const task of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync('/proc/self/task/' + task + '/comm', 'utf8').trim().startsWith('wiremesh-reac')) n++
    } catch {
      // the thread ended while we looked
    }
  }
  return n
}
`

/** One frame on the wire: 4-byte big-endian length, then the payload. */
function frame(payload: string): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(4)
  header.writeUInt32BE(body.length)
  return Buffer.concat([header, body])
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** True if the guard had to kill it: it did not exit by itself. */
  timedOut: boolean
}

interface RunningChild {
  child: ChildProcess
  /** Settles when the child has exited (by itself, or killed by the guard). */
  result: Promise<ChildResult>
  /** Resolves with the first stdout line starting with `prefix`; rejects if the child exits first or after `ms`. */
  line(prefix: string, ms?: number): Promise<string>
  /** Kills the child (if it still runs). */
  kill(): void
}

/** Runs `node [nodeArgs] file`, killing it after `guardMs` (then `timedOut` is true). */
function startChild(file: string, nodeArgs: string[] = [], guardMs = EXIT_GUARD_MS): RunningChild {
  const child = spawn(process.execPath, [...nodeArgs, file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let exited = false
  let timedOut = false
  const lineWaiters: Array<{ prefix: string; resolve(line: string): void; reject(error: Error): void }> = []
  const seen: string[] = []
  let partial = ''
  child.stdout!.setEncoding('utf8')
  child.stderr!.setEncoding('utf8')
  child.stdout!.on('data', (chunk: string) => {
    stdout += chunk
    partial += chunk
    let newline: number
    while ((newline = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, newline)
      partial = partial.slice(newline + 1)
      seen.push(line)
      for (const waiter of lineWaiters.slice()) {
        if (line.startsWith(waiter.prefix)) {
          lineWaiters.splice(lineWaiters.indexOf(waiter), 1)
          waiter.resolve(line)
        }
      }
    }
  })
  child.stderr!.on('data', (chunk: string) => {
    stderr += chunk
  })
  const guard = setTimeout(() => {
    timedOut = true
    child.kill('SIGKILL')
  }, guardMs)
  const result = new Promise<ChildResult>((resolve) => {
    child.on('close', (code, signal) => {
      exited = true
      clearTimeout(guard)
      for (const waiter of lineWaiters.splice(0)) {
        waiter.reject(
          new Error(
            `the child exited (code ${code}, signal ${signal}) before printing "${waiter.prefix}"; stdout: ${stdout}; stderr: ${stderr}`,
          ),
        )
      }
      resolve({ code, signal, stdout, stderr, timedOut })
    })
  })
  return {
    child,
    result,
    line(prefix, ms = EXIT_GUARD_MS) {
      const found = seen.find((line) => line.startsWith(prefix))
      if (found !== undefined) return Promise.resolve(found)
      if (exited)
        return Promise.reject(
          new Error(`the child exited before printing "${prefix}"; stdout: ${stdout}; stderr: ${stderr}`),
        )
      return new Promise((resolve, reject) => {
        const waiter = {
          prefix,
          resolve: (line: string) => {
            clearTimeout(timer)
            resolve(line)
          },
          reject: (error: Error) => {
            clearTimeout(timer)
            reject(error)
          },
        }
        const timer = setTimeout(() => {
          lineWaiters.splice(lineWaiters.indexOf(waiter), 1)
          reject(new Error(`no "${prefix}" line within ${ms} ms; stdout: ${stdout}; stderr: ${stderr}`))
        }, ms)
        lineWaiters.push(waiter)
      })
    },
    kill() {
      if (!exited) child.kill('SIGKILL')
    },
  }
}

function describe(result: ChildResult): string {
  return `code ${result.code}, signal ${result.signal}, timedOut ${result.timedOut}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`
}

function lines(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line.length > 0)
}

// ---------------------------------------------------------------------------------------
// Child processes: what keeps the process alive

test('a process that exchanges a message, shuts its mesh down and closes the listener exits by itself', async (t) => {
  const file = writeScript(
    'shutdown-exits',
    `'use strict';
const { Mesh, Envelope, TcpTransport } = require(__LIB__);
(async () => {
  const transport = new TcpTransport();
  const listener = await transport.listen('127.0.0.1:0');
  const mesh = new Mesh(4, 4);
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()]);
  const clientId = mesh.add(client);
  mesh.add(server);
  mesh.send(new Envelope(clientId, 'hello'));
  const envelope = await mesh.recv();
  console.log('received ' + envelope.payload.toString());
  mesh.shutdown();
  listener.close();
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`,
  )
  const result = await startChild(file).result
  t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
  t.is(result.code, 0, describe(result))
  t.is(result.signal, null, describe(result))
  t.deepEqual(lines(result.stdout), ['received hello'])
})

test("a process whose idle mesh is unref'd exits by itself without shutting it down", async (t) => {
  const file = writeScript(
    'unref-exits',
    `'use strict';
const { Mesh } = require(__LIB__);
const mesh = new Mesh(4, 4);
mesh.unref();
console.log('unref');
`,
  )
  const result = await startChild(file).result
  t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
  t.is(result.code, 0, describe(result))
  t.is(result.signal, null, describe(result))
  t.deepEqual(lines(result.stdout), ['unref'])
})

test("a ref'd mesh that is never shut down keeps the process alive like a server", async (t) => {
  const file = writeScript(
    'ref-stays',
    `'use strict';
const { Mesh } = require(__LIB__);
const mesh = new Mesh(4, 4);
console.log('ready');
`,
  )
  const running = startChild(file)
  try {
    await running.line('ready')
    await sleep(1500)
    t.is(running.child.exitCode, null, "the child exited though its mesh is ref'd")
    t.is(running.child.signalCode, null, 'the child died of a signal')
  } finally {
    running.kill()
  }
  const result = await running.result
  t.false(result.timedOut)
  t.is(result.signal, 'SIGKILL', 'it ran until the test killed it')
  t.is(result.stderr, '')
})

test('a pending recv keeps the process alive until the envelope arrives', async (t) => {
  const file = writeScript(
    'pending-recv',
    `'use strict';
const { Mesh, TcpTransport } = require(__LIB__);
(async () => {
  const transport = new TcpTransport();
  const listener = await transport.listen('127.0.0.1:0');
  const mesh = new Mesh(4, 4);
  mesh.unref();
  console.log('listening ' + listener.endpoint);
  const connection = await listener.accept();
  listener.close();
  mesh.add(connection);
  // From here on only the pending recv can keep this process alive.
  const pending = mesh.recv();
  console.log('waiting');
  const envelope = await pending;
  console.log('received ' + envelope.payload.toString());
  mesh.shutdown();
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`,
  )
  const running = startChild(file)
  let socket: net.Socket | undefined
  try {
    const listening = await running.line('listening ')
    const port = Number(listening.split(':').pop())
    socket = net.connect({ host: '127.0.0.1', port })
    socket.on('error', () => undefined) // the child closes its end when it shuts down
    await new Promise<void>((resolve, reject) => {
      socket!.once('connect', resolve)
      socket!.once('error', reject)
    })
    await running.line('waiting')
    // Long enough that an unref'd, otherwise idle child would have exited by now.
    await sleep(1000)
    t.is(running.child.exitCode, null, 'the child exited while its recv was pending')
    socket.write(frame('late frame'))
    const result = await running.result
    t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
    t.is(result.code, 0, describe(result))
    t.is(result.signal, null, describe(result))
    t.deepEqual(lines(result.stdout).slice(1), ['waiting', 'received late frame'])
  } finally {
    socket?.destroy()
    running.kill()
  }
})

// Regression: a pending receive may be the only reference left to its mesh. Before
// index.ts held waiting meshes strongly, GC collected the mesh, the reactor shut down and
// closed the connection, and the receive never settled while its retain() kept the
// process alive forever.
test('a pending recv keeps its mesh running after the last handle is dropped', async (t) => {
  const file = writeScript(
    'pending-recv-gc',
    `'use strict';
const { Mesh, TcpTransport } = require(__LIB__);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
(async () => {
  const transport = new TcpTransport();
  const listener = await transport.listen('127.0.0.1:0');
  console.log('listening ' + listener.endpoint);
  const connection = await listener.accept();
  listener.close();
  const pending = (() => {
    const mesh = new Mesh(4, 4);
    mesh.unref();
    mesh.add(connection);
    return mesh.recv(); // the only reference left to the mesh is this receive
  })();
  pending.then(
    (envelope) => console.log('received ' + envelope.payload.toString()),
    (error) => console.log('rejected ' + error.kind),
  );
  for (let i = 0; i < 10; i++) {
    global.gc();
    await new Promise((resolve) => setImmediate(resolve));
    await sleep(20);
  }
  console.log('collected');
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`,
  )
  const running = startChild(file, ['--expose-gc'], 10_000)
  let socket: net.Socket | undefined
  try {
    const listening = await running.line('listening ')
    socket = net.connect({ host: '127.0.0.1', port: Number(listening.split(':').pop()) })
    socket.on('error', () => undefined)
    await new Promise<void>((resolve, reject) => {
      socket!.once('connect', resolve)
      socket!.once('error', reject)
    })
    await running.line('collected')
    socket.write(frame('late frame'))
    const result = await running.result
    t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
    t.is(result.code, 0, describe(result))
    t.deepEqual(lines(result.stdout).slice(1), ['collected', 'received late frame'])
  } finally {
    socket?.destroy()
    running.kill()
  }
})

test('garbage collection of the last handle stops and joins the reactor thread', async (t) => {
  if (!isLinux) {
    t.log(`skipped: counting threads by name needs /proc (platform ${process.platform})`)
    t.pass()
    return
  }
  const file = writeScript(
    'gc-joins',
    `'use strict';
const { Mesh } = require(__LIB__);
${COUNT_REACTORS_SOURCE}
const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
(async () => {
  const initial = countReactors();
  let meshes = [];
  for (let i = 0; i < 50; i++) meshes.push(new Mesh(4, 4).unref());
  // A new thread names itself once it runs: wait (the meshes are held) until all have.
  const named = Date.now() + 10000;
  while (countReactors() < 50 && Date.now() < named) await sleep(20);
  const before = countReactors();
  meshes = null; // the last handles are dropped here
  // Mesh finalizers run, then the state and its native handle go in later cycles.
  const deadline = Date.now() + 10000;
  let rounds = 0;
  do {
    global.gc();
    await tick();
    global.gc();
    await tick();
    await sleep(20);
    rounds++;
  } while (countReactors() > 0 && Date.now() < deadline);
  const after = countReactors();
  console.log(JSON.stringify({ initial, before, after, rounds }));
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`,
  )
  const result = await startChild(file, ['--expose-gc']).result
  t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
  t.is(result.code, 0, describe(result))
  t.is(result.signal, null, describe(result))
  const out = lines(result.stdout)
  t.is(out.length, 1, describe(result))
  const counts = JSON.parse(out[0]) as { initial: number; before: number; after: number; rounds: number }
  t.log(`reactor threads: ${counts.before} before GC, ${counts.after} after ${counts.rounds} GC rounds`)
  t.is(counts.initial, 0)
  t.is(counts.before, 50, 'one reactor thread per mesh')
  t.true(counts.after <= 2, `reactor threads left after GC: ${counts.after}`)
})

// ---------------------------------------------------------------------------------------
// Worker threads

test('the addon loads inside a worker thread, exchanges a message and the worker exits normally', async (t) => {
  const code = `'use strict';
const { parentPort } = require('worker_threads');
const { Mesh, Envelope, TcpTransport } = require(${LIB});
(async () => {
  const transport = new TcpTransport();
  const listener = await transport.listen('127.0.0.1:0');
  const mesh = new Mesh(4, 4);
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()]);
  listener.close();
  const clientId = mesh.add(client);
  const serverId = mesh.add(server);
  mesh.send(new Envelope(clientId, 'hello from a worker'));
  const envelope = await mesh.recv();
  parentPort.postMessage({ payload: envelope.payload.toString(), fromServer: envelope.id === serverId });
  mesh.shutdown();
})();
`
  const worker = new Worker(code, { eval: true })
  const messages: unknown[] = []
  worker.on('message', (message) => messages.push(message))
  const errors: unknown[] = []
  worker.on('error', (error) => errors.push(error))
  let guard: NodeJS.Timeout | undefined
  const exitCode = await new Promise<number | 'timeout'>((resolve) => {
    worker.once('exit', resolve)
    guard = setTimeout(() => {
      resolve('timeout')
      void worker.terminate()
    }, EXIT_GUARD_MS)
  })
  clearTimeout(guard)
  t.deepEqual(errors, [])
  t.is(exitCode, 0, 'the worker exits by itself, normally')
  t.deepEqual(messages, [{ payload: 'hello from a worker', fromServer: true }])
})

/** A child that starts a worker with a live mesh (connections, pending recv), then ends it by `how`. */
function liveWorkerScript(how: 'exit' | 'terminate'): string {
  const workerCode = `'use strict';
const { parentPort } = require('worker_threads');
const { Mesh, Envelope, TcpTransport } = require(${LIB});
${COUNT_REACTORS_SOURCE}
(async () => {
  const transport = new TcpTransport();
  const listener = await transport.listen('127.0.0.1:0');
  const mesh = new Mesh(16, 16);
  const ids = [];
  for (let i = 0; i < 2; i++) {
    const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()]);
    ids.push(mesh.add(client), mesh.add(server));
  }
  listener.close();
  // Traffic in flight both ways, one envelope taken, then a receive left pending.
  mesh.send(new Envelope(ids[0], 'ping'));
  const first = await mesh.recv();
  mesh.send(new Envelope(first.id, 'pong'));
  await mesh.recv();
  mesh.recv().then(
    (envelope) => parentPort.postMessage({ unexpected: 'recv resolved: ' + envelope.payload }),
    (error) => parentPort.postMessage({ unexpected: 'recv rejected: ' + error }),
  );
  parentPort.postMessage({ live: countReactors() });
  ${how === 'exit' ? 'setImmediate(() => process.exit(7));' : '// the parent terminates this worker'}
})();
`
  return `'use strict';
const { Worker } = require('worker_threads');
${COUNT_REACTORS_SOURCE}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const worker = new Worker(${JSON.stringify(workerCode)}, { eval: true });
worker.on('error', (error) => {
  console.log('worker error ' + (error && error.stack));
  process.exitCode = 3;
});
worker.on('message', (message) => {
  if (message.unexpected) {
    console.log('unexpected ' + message.unexpected);
    return;
  }
  console.log('live ' + message.live);
  ${how === 'terminate' ? 'worker.terminate();' : ''}
});
worker.on('exit', async (code) => {
  console.log('worker exit ' + code);
  const deadline = Date.now() + 5000;
  while (countReactors() > 0 && Date.now() < deadline) await sleep(20);
  console.log('reactors ' + countReactors());
  console.log('OK');
});
`
}

function checkLiveWorkerChild(t: import('ava').ExecutionContext, result: ChildResult, exitCode: number): void {
  t.false(result.timedOut, `the child did not exit by itself: ${describe(result)}`)
  t.is(result.signal, null, `the process crashed: ${describe(result)}`)
  t.is(result.code, 0, describe(result))
  const expectedReactors = isLinux ? 1 : -1
  const expectedAfter = isLinux ? 0 : -1
  t.deepEqual(
    lines(result.stdout),
    [`live ${expectedReactors}`, `worker exit ${exitCode}`, `reactors ${expectedAfter}`, 'OK'],
    describe(result),
  )
  if (!isLinux) t.log(`reactor threads not counted: no /proc on ${process.platform}`)
}

test('a worker that exits with a live mesh neither crashes the process nor leaks the reactor thread', async (t) => {
  const file = writeScript('worker-exit', liveWorkerScript('exit'))
  const result = await startChild(file).result
  checkLiveWorkerChild(t, result, 7)
})

test('a worker terminated while a recv is pending neither crashes the process nor leaks the reactor thread', async (t) => {
  const file = writeScript('worker-terminate', liveWorkerScript('terminate'))
  const result = await startChild(file).result
  checkLiveWorkerChild(t, result, 1)
})

// ---------------------------------------------------------------------------------------
// In process: shutdown and receiving

async function connectedPair(mesh: Mesh, transport = new TcpTransport()): Promise<[number, number]> {
  const listener = await transport.listen('127.0.0.1:0')
  try {
    const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
    return [mesh.add(client), mesh.add(server)]
  } finally {
    listener.close()
  }
}

test('shutdown while a recv is pending rejects it with RecvError kind Shutdown', async (t) => {
  const mesh = new Mesh(4, 4)
  await connectedPair(mesh)
  let settled = false
  const pending = mesh.recv()
  pending.then(
    () => (settled = true),
    () => (settled = true),
  )
  await sleep(50)
  t.false(settled, 'nothing was sent: the recv waits')
  mesh.shutdown()
  const error = await t.throwsAsync(pending, { instanceOf: RecvError })
  t.is(error?.kind, RecvErrorKind.Shutdown)
  // And every later receive too.
  const again = await t.throwsAsync(mesh.recv(), { instanceOf: RecvError })
  t.is(again?.kind, RecvErrorKind.Shutdown)
})

test('for await over a mesh ends cleanly when the mesh shuts down', async (t) => {
  const mesh = new Mesh(4, 4)
  const [client] = await connectedPair(mesh)
  mesh.send(new Envelope(client, 'one'))
  const received: string[] = []
  const loop = (async () => {
    for await (const envelope of mesh) {
      received.push(envelope.payload.toString())
      // The loop's next recv is pending when this runs.
      setTimeout(() => mesh.shutdown(), 50)
    }
    return 'ended'
  })()
  t.is(await loop, 'ended')
  t.deepEqual(received, ['one'])
})

test('envelopes received before shutdown can still be taken after it, then recv rejects with Shutdown', async (t) => {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const port = Number(listener.endpoint.split(':').pop())
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
  socket.on('error', () => undefined) // shutdown closes the mesh's end
  t.teardown(() => socket.destroy())
  const [connection] = await Promise.all([listener.accept(), new Promise((resolve) => socket.once('connect', resolve))])
  listener.close()
  const mesh = new Mesh(16, 4)
  const id = mesh.add(connection)
  // One write: the reactor reads and queues all four frames together.
  socket.write(Buffer.concat(['a', 'b', 'c', 'd'].map(frame)))
  const first = await mesh.recv()
  t.is(first.id, id)
  t.is(first.payload.toString(), 'a')
  mesh.shutdown()
  const rest: string[] = []
  rest.push((await mesh.recv()).payload.toString())
  const tried = mesh.tryRecv()
  t.not(tried, null)
  rest.push(tried!.payload.toString())
  rest.push(...(await mesh.recvBatch(8)).map((envelope) => envelope.payload.toString()))
  t.deepEqual(rest, ['b', 'c', 'd'])
  const error = await t.throwsAsync(mesh.recv(), { instanceOf: RecvError })
  t.is(error?.kind, RecvErrorKind.Shutdown)
  const tryError = t.throws(() => mesh.tryRecv(), { instanceOf: RecvError })
  t.is(tryError?.kind, RecvErrorKind.Shutdown)
})
