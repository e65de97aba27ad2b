// The mesh side of the slowloris test (crowd.spec.ts), in a process of its own so that its
// memory can be measured: a crowd of idle connections, then a crowd of connections each
// holding part of a frame, join one mesh while an honest pair streams through it. Prints
// one JSON line of findings (the spec judges them). Run with --expose-gc.
'use strict'
const path = require('node:path')
const { spawn } = require('node:child_process')
const { createInterface } = require('node:readline')
const { Envelope, Mesh, TcpTransport } = require('../..')

const count = Number(process.argv[2])
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function rss() {
  global.gc()
  return process.memoryUsage().rss
}

function crowd(port, kind) {
  const config = { mode: 'crowd', port, count, kind, announce: 16 * 1024 * 1024 - 1, trickle: 200 }
  const child = spawn(process.execPath, [path.join(__dirname, 'peer.cjs'), JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout })
  const ready = new Promise((resolve, reject) => {
    lines.on('line', (line) => (line === 'ready' ? resolve() : line.startsWith('bad') && reject(new Error(line))))
  })
  return { child, ready }
}

async function main() {
  const found = {}
  const mesh = new Mesh(1024, 64)
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const port = Number(listener.endpoint.split(':').pop())
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  const honestA = mesh.add(client)
  const honestB = mesh.add(server)
  let honestSeq = 0
  const honest = []
  const notices = {}
  mesh.on('disconnect', (_, error) => (notices[error.kind] = (notices[error.kind] ?? 0) + 1))
  // An honest exchange of `n` numbered envelopes, checked in order.
  async function exchange(n) {
    for (let i = 0; i < n; i++) {
      const payload = Buffer.alloc(64)
      payload.writeUInt32BE(honestSeq++)
      await mesh.sendWait(new Envelope(honestA, payload))
    }
    while (honest.length < honestSeq) {
      const envelope = await mesh.recv()
      if (envelope.id === honestB) honest.push(envelope.payload.readUInt32BE(0))
    }
  }
  async function join(kind) {
    const peer = crowd(port, kind)
    for (let i = 0; i < count; i++) mesh.add(await listener.accept())
    await peer.ready
    // The reactor reads what they hold while the honest pair goes on.
    await exchange(1000)
    await sleep(500)
    return peer
  }
  await exchange(1000)
  const before = rss()
  const idle = await join('idle')
  const withIdle = rss()
  const partial = await join('partial')
  const withPartial = rss()
  found.idlePerConnection = Math.round((withIdle - before) / count)
  found.partialPerConnection = Math.round((withPartial - withIdle) / count)
  // The crowds die: every connection is announced, the honest pair goes on.
  idle.child.kill('SIGKILL')
  partial.child.kill('SIGKILL')
  for (let waited = 0; (notices.Eof ?? 0) + (notices.EofMidFrame ?? 0) < 2 * count && waited < 20_000; waited += 20) {
    await sleep(20)
  }
  await exchange(1000)
  found.notices = notices
  found.honestInOrder = honest.every((seq, i) => seq === i) && honest.length === 4000
  found.count = count
  listener.close()
  mesh.shutdown()
  console.log(JSON.stringify(found))
}

main().catch((error) => {
  console.log(JSON.stringify({ failed: String(error && error.stack) }))
  process.exit(1)
})
