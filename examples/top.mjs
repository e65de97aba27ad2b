// A live terminal dashboard of a mesh: its connections, their rates in and out, queue depths,
// and who is paused, redrawn twice a second from `mesh.stats`. It watches a demonstration
// load: a server mesh that echoes for fast, steady and slow clients.
//
//   node examples/top.mjs [seconds]    # default 10 s; ^C to stop
import { Envelope, Mesh, TcpTransport } from 'wiremesh'

const seconds = Number(process.argv[2] ?? (process.stdout.isTTY ? 10 : 2))

/** Draws `mesh`'s table: one row per connection, rates since the last draw. */
function dashboard(mesh, title) {
  let last = new Map()
  let lastTime = performance.now()
  return function draw() {
    const now = performance.now()
    const elapsed = (now - lastTime) / 1000
    lastTime = now
    const totals = mesh.stats()
    const lines = [
      `${title}: ${totals.connections} connections (${totals.connected} connected, ${totals.connecting} connecting, ` +
        `${totals.ending} ending); incoming ${totals.incoming}, queued ${totals.queuedFrames} frames`,
      '',
      `${'id'.padStart(4)} ${'state'.padEnd(10)} ${'peer'.padEnd(22)} ${'in/s'.padStart(9)} ${'out/s'.padStart(9)} ` +
        `${'in MB/s'.padStart(8)} ${'out MB/s'.padStart(8)} ${'queued'.padStart(7)} paused`,
    ]
    const seen = new Map()
    for (const id of mesh.ids()) {
      const stats = mesh.stats(id)
      if (stats === null) continue
      seen.set(id, stats)
      const before = last.get(id) ?? stats
      const rate = (field) => (stats[field] - before[field]) / elapsed
      lines.push(
        `${String(id).padStart(4)} ${stats.state.padEnd(10)} ${(stats.remoteEndpoint ?? '-').padEnd(22)} ` +
          `${Math.round(rate('framesIn')).toLocaleString('en-US').padStart(9)} ` +
          `${Math.round(rate('framesOut')).toLocaleString('en-US').padStart(9)} ` +
          `${(rate('bytesIn') / 1e6).toFixed(2).padStart(8)} ${(rate('bytesOut') / 1e6).toFixed(2).padStart(8)} ` +
          `${String(stats.queuedFrames).padStart(7)} ${stats.paused ? 'yes' : ''}`,
      )
    }
    last = seen
    // Home the cursor and clear below it on a terminal; plain lines elsewhere.
    if (process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[J')
    console.log(lines.join('\n') + '\n')
  }
}

// The demonstration load: a server that echoes, and clients that send at their own pace.
const transport = new TcpTransport()
const listener = await transport.listen('127.0.0.1:0')
const server = new Mesh(4096, 512)
const accepting = (async () => {
  for await (const connection of listener) server.add(connection)
})()
const echoing = (async () => {
  for await (const envelope of server) {
    try {
      server.send(envelope) // echo; a client that does not read gets Full, and loses echoes
    } catch {}
  }
})()

const clients = new Mesh(4096, 512)
const stop = AbortSignal.timeout(seconds * 1000)
const paces = [
  { name: 'fast', every: 0, batch: 256, size: 64 },
  { name: 'steady', every: 10, batch: 16, size: 1024 },
  { name: 'bulk', every: 20, batch: 4, size: 64 * 1024 },
]
const sending = paces.map(async ({ every, batch, size }) => {
  const id = clients.dial(listener.endpoint, { transport, reconnect: true })
  const payload = Buffer.alloc(size, 1)
  while (!stop.aborted) {
    for (let n = 0; n < batch; n++) await clients.sendWait(new Envelope(id, payload), { signal: stop }).catch(() => {})
    await new Promise((resolve) => setTimeout(resolve, every))
  }
})
const receiving = (async () => {
  for await (const _ of clients);
})()

if (process.stdout.isTTY) process.stdout.write('\x1b[2J')
const draw = dashboard(server, `server ${listener.endpoint}`)
const timer = setInterval(draw, 500)
await Promise.all(sending)
clearInterval(timer)
draw()

await clients.close()
listener.close()
server.shutdown()
await Promise.all([accepting, echoing, receiving])
