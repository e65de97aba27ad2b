// The main example (`npm start`): the seed exchange of the mesh, a short one-way
// throughput run with a progress bar, then a dialled peer that reconnects after its
// listener restarts (examples/reconnect.mjs). Run it from a checkout after `npm run build` (there
// 'wiremesh' is the checkout itself: the package's name refers to itself), or in a project
// that installed wiremesh.
import { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } from 'wiremesh'

import { reconnectDemo } from './reconnect.mjs'

async function hello() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const mesh = new Mesh(1, 1)

  const client = mesh.add(await transport.connect(listener.endpoint))
  const server = mesh.add(await listener.accept())

  mesh.send(new Envelope(client, Buffer.from('hello')))
  const envelope = await mesh.recv()
  console.log(
    `connection ${envelope.id} received "${envelope.payload}" from connection ${client} over ${listener.endpoint}`,
  )
  if (envelope.id !== server) throw new Error('the envelope should come from the server side')

  // Keep both connections: dropping one closes its socket, and the reactor would then
  // remove the other by itself.
  const clientConnection = await mesh.remove(client)
  const serverConnection = await mesh.remove(server)
  clientConnection.disconnect()
  serverConnection.disconnect()
  mesh.shutdown()
  listener.close()
}

/** 500 000 messages of 64 bytes one way, sender and receiver in this process. */
async function throughput() {
  const messages = 500_000
  const size = 64
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const sender = new Mesh(1024, 1024)
  const receiver = new Mesh(4096, 16)
  const client = sender.add(await transport.connect(listener.endpoint))
  receiver.add(await listener.accept())
  listener.close()

  const started = process.hrtime.bigint()
  const sending = (async () => {
    const payload = Buffer.alloc(size, 7)
    for (let n = 0; n < messages; n++) {
      const envelope = new Envelope(client, payload)
      try {
        sender.send(envelope)
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
        await sender.sendWait(error.envelope)
      }
    }
  })()

  let received = 0
  let bytes = 0
  let shown = -1
  const width = 40
  while (received < messages) {
    for (const envelope of await receiver.recvBatch(4096)) {
      bytes += envelope.payload.length
      received++
    }
    const filled = Math.floor((received * width) / messages)
    if (filled !== shown) {
      shown = filled
      process.stdout.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(received).padStart(7)}/${messages}`,
      )
    }
  }
  await sending
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  process.stdout.write('\n')
  console.log(
    `${messages} messages of ${size} B in ${seconds.toFixed(2)} s: ` +
      `${Math.round(messages / seconds).toLocaleString('en-US')} msg/s, ${(bytes / seconds / 1e6).toFixed(1)} MB/s`,
  )
  sender.shutdown()
  receiver.shutdown()
}

await hello()
await throughput()
console.log('a dialled peer whose listener restarts:')
await reconnectDemo((line) => console.log(`  ${line}`))
