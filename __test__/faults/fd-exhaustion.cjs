// Runs under a low `ulimit -n` (see limits.spec.ts): uses up the process's file
// descriptors, checks that every wiremesh call then fails with a typed error, frees them,
// and checks that everything works again. Prints one JSON line of findings, and exits 0
// once it has them (the spec judges them).
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const { Envelope, Mesh, TcpTransport } = require('../..')

async function main() {
  const found = {}
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const accepted = []
  // The listener's loop must outlive the exhaustion: a peer process (started now, while
  // there are descriptors for its pipes) connects while none are left, so accepts fail;
  // the loop takes its connection once they are freed, and then the mesh's own.
  const peer = spawn(
    process.execPath,
    [
      '-e',
      `process.stdin.once('data', () => {
         const socket = require('node:net').connect(${listener.endpoint.split(':').pop()}, '127.0.0.1')
         socket.on('connect', () => process.stdout.write('connected\\n'))
         socket.on('error', () => {})
       })`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const peerConnected = new Promise((resolve) => peer.stdout.once('data', resolve))
  const iterating = (async () => {
    for await (const connection of listener) {
      accepted.push(connection)
      if (accepted.length === 2) return
    }
  })()
  await new Promise((resolve) => setTimeout(resolve, 100))
  // Use up the descriptors.
  const held = []
  for (;;) {
    try {
      held.push(fs.openSync('/dev/null', 'r'))
    } catch (error) {
      found.exhausted = error.code
      break
    }
  }
  try {
    new Mesh(1, 1)
    found.mesh = 'no error'
  } catch (error) {
    found.mesh = { name: error.name, code: error.code, errno: error.errno, syscall: error.syscall }
  }
  try {
    await transport.connect(listener.endpoint, { timeout: 2000 })
    found.connect = 'no error'
  } catch (error) {
    found.connect = { name: error.name, code: error.code }
  }
  try {
    await transport.listen('127.0.0.1:0')
    found.listen = 'no error'
  } catch (error) {
    found.listen = { name: error.name, code: error.code }
  }
  // The peer connects: the kernel completes the handshake, and the accept that the
  // listener's loop has waiting fails for want of a descriptor.
  peer.stdin.write('go\n')
  await peerConnected
  await new Promise((resolve) => setTimeout(resolve, 300))
  found.acceptedWhileExhausted = accepted.length
  // Free them: everything works again, and the listener's loop goes on.
  for (const fd of held) fs.closeSync(fd)
  const mesh = new Mesh(4, 4)
  const client = mesh.add(await transport.connect(listener.endpoint, { timeout: 5000 }))
  await Promise.race([iterating, new Promise((_, reject) => setTimeout(() => reject(new Error('no accept')), 5000))])
  found.loopAccepted = accepted.length
  const server = mesh.add(accepted[1])
  accepted[0].disconnect()
  peer.kill()
  mesh.send(new Envelope(client, 'after'))
  const envelope = await mesh.recvTimeout(5000)
  found.recovered = envelope.id === server && envelope.payload.toString() === 'after'
  listener.close()
  mesh.shutdown()
  console.log(JSON.stringify(found))
}

main().catch((error) => {
  console.log(JSON.stringify({ failed: String(error && error.stack) }))
})
