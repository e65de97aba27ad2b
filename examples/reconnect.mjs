// A client that dials and reconnects: `mesh.dial` returns an id at once and keeps it across
// connections. The server here goes away and comes back on the same port; what the client
// sends meanwhile waits in the id's queue and arrives, in order, once it is back.
//
//   node examples/reconnect.mjs
import { pathToFileURL } from 'node:url'

import { Envelope, Mesh, TcpTransport } from 'wiremesh'

/** A server that prints what it receives: a mesh, a listener, an accept loop. */
async function startServer(bind, log) {
  const transport = new TcpTransport()
  const listener = await transport.listen(bind)
  const mesh = new Mesh(256, 256)
  const accepting = (async () => {
    for await (const connection of listener) mesh.add(connection)
  })()
  const serving = (async () => {
    for await (const { payload } of mesh) log(`server got "${payload}"`)
  })()
  return {
    endpoint: listener.endpoint,
    async stop() {
      listener.close()
      mesh.shutdown() // closes every connection: the client sees its connection end
      await Promise.all([accepting, serving])
    },
  }
}

/** Runs the demonstration; `log` prints a line. */
export async function reconnectDemo(log = console.log) {
  let server = await startServer('127.0.0.1:0', log)
  const endpoint = server.endpoint

  const client = new Mesh(256, 256)
  client.on('connect', (id) => log(`client: connection ${id} is up`))
  client.on('disconnect', (id, error, { willReconnect }) =>
    log(`client: connection ${id} lost (${error.kind}); reconnecting: ${willReconnect}`),
  )
  client.on('reconnecting', (id, { attempt, delay }) => log(`client: attempt ${attempt} for ${id} in ${delay} ms`))

  const server1 = client.dial(endpoint, {
    transport: new TcpTransport(),
    reconnect: { initialDelay: 50, maxDelay: 1000, factor: 2, jitter: 0.2 },
  })
  client.send(new Envelope(server1, 'hello')) // queued until the connection is up
  await new Promise((resolve) => client.once('connect', resolve))
  await waitFor(() => client.stats(server1)?.framesOut === 1)

  await server.stop() // the server goes away...
  await new Promise((resolve) => client.once('disconnect', resolve))
  for (let n = 1; n <= 3; n++) client.send(new Envelope(server1, `sent while away ${n}`))
  await new Promise((resolve) => setTimeout(resolve, 300))

  server = await startServer(endpoint, log) // ...and comes back on the same port
  await new Promise((resolve) => client.once('connect', resolve))
  await waitFor(() => client.stats(server1)?.framesOut === 4)
  const { framesOut, connectedSince } = client.stats(server1)
  log(`client: ${framesOut} envelopes written to id ${server1}, connected again since ${connectedSince.toISOString()}`)

  await client.close() // writes what is queued, ends every connection, shuts down
  await new Promise((resolve) => setTimeout(resolve, 50))
  await server.stop()
}

async function waitFor(condition) {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10))
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await reconnectDemo()
