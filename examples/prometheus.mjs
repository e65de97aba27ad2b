// A mesh's stats as Prometheus metrics, with prom-client: read at each scrape (one native
// call per mesh), nothing counted on the hot path in JavaScript.
//
//   node examples/prometheus.mjs           # prints one scrape, then exits
//   node examples/prometheus.mjs --serve   # serves http://127.0.0.1:9464/metrics until ^C
import { once } from 'node:events'
import { createServer } from 'node:http'

import client from 'prom-client'
import { Envelope, Mesh, TcpTransport } from 'wiremesh'

/** Registers the metrics of `mesh` (labelled `mesh="<name>"`) in `registry`. */
export function meshMetrics(mesh, name, registry) {
  const labelNames = ['mesh']
  // Totals only grow (they outlive connections): counters, set from the mesh at each scrape.
  const totals = {
    framesIn: 'wiremesh_frames_received_total',
    bytesIn: 'wiremesh_bytes_received_total',
    framesOut: 'wiremesh_frames_sent_total',
    bytesOut: 'wiremesh_bytes_sent_total',
  }
  let stats = mesh.stats()
  const read = () => (stats = mesh.stats())
  for (const [field, metric] of Object.entries(totals)) {
    let seen = 0
    new client.Counter({
      name: metric,
      help: `${field} of the mesh, over its life`,
      labelNames,
      registers: [registry],
      collect() {
        if (field === 'framesIn') read() // once per scrape, by the first metric collected
        this.inc({ mesh: name }, stats[field] - seen)
        seen = stats[field]
      },
    })
  }
  new client.Gauge({
    name: 'wiremesh_connections',
    help: 'connections of the mesh, by state',
    labelNames: ['mesh', 'state'],
    registers: [registry],
    collect() {
      for (const state of ['connecting', 'connected', 'ending']) this.set({ mesh: name, state }, stats[state])
    },
  })
  const gauges = {
    wiremesh_queued_frames: ['queuedFrames', 'frames accepted and not yet written, over every connection'],
    wiremesh_queued_bytes: ['queuedBytes', 'bytes of those frames'],
    wiremesh_incoming_envelopes: ['incoming', 'envelopes received and not yet taken by the program'],
    wiremesh_unreceived_frames: ['unreceived', 'frames read and held back for room in the incoming queue'],
  }
  for (const [metric, [field, help]] of Object.entries(gauges)) {
    new client.Gauge({
      name: metric,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.set({ mesh: name }, stats[field])
      },
    })
  }
}

// A mesh with some traffic to show.
const transport = new TcpTransport()
const listener = await transport.listen('127.0.0.1:0')
const mesh = new Mesh(1024, 1024)
const client1 = mesh.add(await transport.connect(listener.endpoint))
const server1 = mesh.add(await listener.accept())
listener.close()
for (let n = 0; n < 1000; n++) mesh.send(new Envelope(client1, `message ${n}`))
for (let n = 0; n < 1000; n++) await mesh.recv()

const registry = new client.Registry()
meshMetrics(mesh, 'main', registry)

const server = createServer(async (request, response) => {
  response.setHeader('Content-Type', registry.contentType)
  response.end(await registry.metrics())
})
server.listen(process.argv.includes('--serve') ? 9464 : 0, '127.0.0.1')
await once(server, 'listening')
const url = `http://127.0.0.1:${server.address().port}/metrics`

if (process.argv.includes('--serve')) {
  console.log(`serving ${url}`)
  setInterval(() => mesh.send(new Envelope(server1, 'tick')), 1000).unref()
  ;(async () => {
    for await (const _ of mesh);
  })()
} else {
  const scrape = await (await fetch(url)).text()
  console.log(scrape.trim())
  if (!/wiremesh_frames_sent_total\{mesh="main"\} 1000/.test(scrape)) throw new Error('the scrape lacks the counts')
  server.close()
  await mesh.close()
}
