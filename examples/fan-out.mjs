// Fan-out: one publisher, many subscribers, one of them slow.
//
// Each subscriber's connection has its own bounded outgoing queue in the publisher's mesh.
// A subscriber that reads slowly fills its queue (and the sockets' buffers) and `send` to it
// throws `Full`; the others' queues are not affected. The publisher decides, per subscriber,
// what `Full` means:
//
//   - 'wait': `await mesh.sendWait(envelope)`: nothing is lost, and the publisher goes at
//     that subscriber's pace (right for a subscriber that must see everything);
//   - 'drop': count the message as dropped for that subscriber alone and go on (right for
//     updates a late reader can do without, such as prices or positions).
//
// The example runs the publisher and four subscribers in one process, on loopback: three
// fast ones that must get everything, and a slow one whose messages are dropped while it
// falls behind. Each subscriber has a mesh of its own: a subscriber on another host would.

import { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } from 'wiremesh'

const MESSAGES = 8000
const SIZE = 4096 // 32 MB to each subscriber: more than the sockets' buffers hold
const END = Buffer.from('end')

const transport = new TcpTransport()
const listener = await transport.listen('127.0.0.1:0')
const publisher = new Mesh(16, 64) // 64 messages queued per subscriber at most

/**
 * A subscriber: its own mesh and connection; reads until the end marker, at most 8 messages
 * every `pause` ms (the slow one: 8 messages of 4 KiB every 5 ms, 6.5 MB/s).
 */
async function subscribe(name, pause) {
  const mesh = new Mesh(64, 16)
  mesh.add(await transport.connect(listener.endpoint))
  const id = publisher.add(await listener.accept())
  const reading = (async () => {
    let received = 0
    let last = -1
    for (;;) {
      for (const { payload } of await mesh.recvBatch(pause > 0 ? 8 : 256)) {
        if (payload.equals(END)) {
          mesh.shutdown()
          return { received, last }
        }
        const number = payload.readUInt32BE(0)
        if (number <= last) throw new Error(`${name}: message ${number} after ${last}`)
        last = number
        received++
      }
      if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause))
    }
  })()
  return { name, id, reading }
}

const subscribers = [
  { ...(await subscribe('fast 1', 0)), policy: 'wait', dropped: 0 },
  { ...(await subscribe('fast 2', 0)), policy: 'wait', dropped: 0 },
  { ...(await subscribe('fast 3', 0)), policy: 'wait', dropped: 0 },
  { ...(await subscribe('slow', 5)), policy: 'drop', dropped: 0 },
]
listener.close()

/** Publishes one message to one subscriber, by its policy. */
async function publish(subscriber, payload) {
  const envelope = new Envelope(subscriber.id, payload)
  try {
    publisher.send(envelope)
  } catch (error) {
    if (!(error instanceof SendError) || error.kind !== SendErrorKind.Full) throw error
    if (subscriber.policy === 'drop') subscriber.dropped++
    else await publisher.sendWait(error.envelope)
  }
}

const started = Date.now()
for (let number = 0; number < MESSAGES; number++) {
  const payload = Buffer.alloc(SIZE)
  payload.writeUInt32BE(number, 0)
  for (const subscriber of subscribers) await publish(subscriber, payload)
  if (number % 256 === 255) await new Promise(setImmediate) // let the subscribers' loops run
}
// The end marker must reach everyone, the slow one included: wait for room for it.
for (const { id } of subscribers) await publisher.sendWait(new Envelope(id, END))
const published = Date.now() - started

for (const subscriber of subscribers) {
  const { received } = await subscriber.reading
  console.log(
    `${subscriber.name.padEnd(6)} (${subscriber.policy}): received ${received}, dropped ${subscriber.dropped}`,
  )
  if (received + subscriber.dropped !== MESSAGES) throw new Error(`${subscriber.name}: messages lost unaccounted`)
  if (subscriber.policy === 'wait' && subscriber.dropped !== 0) throw new Error(`${subscriber.name} dropped some`)
  if (subscriber.policy === 'drop' && subscriber.dropped === 0) throw new Error('the slow subscriber never fell behind')
}
console.log(`published ${MESSAGES} messages of ${SIZE} B to each in ${published} ms; the slow one delayed nobody`)
publisher.shutdown()
