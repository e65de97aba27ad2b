// How received payloads cross into JavaScript: copied into one Buffer shared by the batch
// (JavaScript takes `subarray`s of it), or each handed over as its own Buffer without a
// copy (an external buffer that owns the Rust allocation). This decided the binding's
// SHARED_LIMIT: below it, payloads share; at and above it, they are handed over uncopied.
// Since then the reactor hands frames under the same 8 KiB over in runs (one buffer per
// read, itself handed over uncopied), so the limit set here changes only payloads of 8 KiB
// and more: below that both strategies measure the same path.
//
//   npm run build && node benchmark/payload-handover.mjs [--quick]
//
// For each payload size, the same mesh and connection carry N messages one way under
// each strategy, alternating, 5 rounds; the consumer reads a byte of every payload.
// Prints the median messages per second of each strategy and their ratio.
import wiremesh from '../index.js'
import binding from '../binding.js'

const { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } = wiremesh
const quick = process.argv.includes('--quick')
const rounds = quick ? 1 : 5
const sizes = [64, 1024, 4 * 1024, 8 * 1024, 16 * 1024, 64 * 1024, 256 * 1024]
const bytesPerRun = quick ? 16e6 : 64e6

async function pair(receiver, sender) {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const client = sender.add(await transport.connect(listener.endpoint))
  receiver.add(await listener.accept())
  listener.close()
  return client
}

async function run(sender, receiver, client, size, messages) {
  const payload = Buffer.alloc(size, 1)
  const started = process.hrtime.bigint()
  const sending = (async () => {
    for (let n = 0; n < messages; n++) {
      const envelope = new Envelope(client, payload)
      try {
        sender.send(envelope)
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
        await sender.sendWait(envelope)
      }
    }
  })()
  let received = 0
  let checksum = 0
  while (received < messages) {
    for (const envelope of await receiver.recvBatch(4096)) {
      checksum += envelope.payload[0]
      received++
    }
  }
  await sending
  if (checksum !== messages) throw new Error('lost payload bytes')
  return messages / (Number(process.hrtime.bigint() - started) / 1e9)
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

const sender = new Mesh(1024, 1024)
const receiver = new Mesh(4096, 16)
const client = await pair(receiver, sender)
const setLimit = (limit) => binding.setSharedLimit(limit)

console.log(`payload hand-over, ${rounds} rounds, medians (messages/s)`)
console.log('size      shared+copy   own buffer   own/shared')
for (const size of sizes) {
  const messages = Math.max(1000, Math.floor(bytesPerRun / size))
  const shared = []
  const own = []
  for (let round = 0; round < rounds; round++) {
    setLimit(0xffffffff)
    shared.push(await run(sender, receiver, client, size, messages))
    setLimit(0)
    own.push(await run(sender, receiver, client, size, messages))
  }
  const s = median(shared)
  const o = median(own)
  console.log(
    `${String(size).padEnd(9)} ${s.toFixed(0).padStart(11)} ${o.toFixed(0).padStart(12)} ${(o / s).toFixed(2).padStart(12)}`,
  )
}
setLimit(8 * 1024)
sender.shutdown()
receiver.shutdown()
