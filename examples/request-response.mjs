// Request and response over a mesh, matched by correlation ids.
//
// A mesh delivers whatever arrives, from every connection, in one stream: replies come back
// in the order the peers send them, not the order of the requests. Each request therefore
// carries a number, and its reply carries the same number back:
//
//   request:  [number u32][body]          reply:  [number u32][body]
//
// `Client.request()` returns a promise for the reply's body. One receive loop settles the
// promises; a request gets a timeout, and a connection that leaves rejects the requests it
// still owed. The example runs a server and a client in one process, on loopback.

import { Envelope, Mesh, SendError, SendErrorKind, TcpTransport } from 'wiremesh'

/** Sends requests over the connections of `mesh` and matches the replies. */
class Client {
  #mesh
  #next = 0
  /** Request number → { id, resolve, reject, timer }. */
  #pending = new Map()
  late = 0
  overtaken = 0
  #highest = -1

  constructor(mesh) {
    this.#mesh = mesh
    // A connection that leaves will never answer what it still owes.
    mesh.on('disconnect', (id, error) => {
      for (const [number, request] of this.#pending) {
        if (request.id === id) this.#settle(number, null, error)
      }
    })
    this.#receive()
  }

  async #receive() {
    for await (const { id, payload } of this.#mesh) {
      const number = payload.readUInt32BE(0)
      const request = this.#pending.get(number)
      if (request === undefined || request.id !== id) {
        this.late++ // the reply to a request that timed out: nobody waits for it now
        continue
      }
      if (number < this.#highest) this.overtaken++ // a later request's reply came first
      this.#highest = Math.max(this.#highest, number)
      this.#settle(number, payload.subarray(4))
    }
  }

  #settle(number, body, error) {
    const request = this.#pending.get(number)
    this.#pending.delete(number)
    clearTimeout(request.timer)
    if (error) request.reject(error)
    else request.resolve(body)
  }

  /** The reply of connection `id` to `body`; rejects after `timeout` ms. */
  async request(id, body, { timeout = 5000 } = {}) {
    const number = this.#next++ >>> 0
    const payload = Buffer.alloc(4 + Buffer.byteLength(body))
    payload.writeUInt32BE(number, 0)
    payload.write(body, 4)
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#settle(number, null, new Error(`request ${number} timed out`)), timeout)
      this.#pending.set(number, { id, resolve, reject, timer })
    })
    try {
      await this.#mesh.sendWait(new Envelope(id, payload)) // waits for room instead of failing on Full
    } catch (error) {
      this.#settle(number, null, error) // NotFound, Disconnected: nothing was sent
    }
    return reply
  }
}

/** Answers each request after a random delay, so replies come back out of order. */
async function serve(mesh) {
  for await (const { id, payload } of mesh) {
    const number = payload.readUInt32BE(0)
    const body = payload.subarray(4).toString()
    const answer = async () => {
      if (body === 'never') return // a request this server does not answer
      await new Promise((resolve) => setTimeout(resolve, body === 'slow' ? 500 : Math.random() * 20))
      const reply = Buffer.alloc(4 + Buffer.byteLength(body))
      reply.writeUInt32BE(number, 0)
      reply.write(body.toUpperCase(), 4)
      try {
        await mesh.sendWait(new Envelope(id, reply))
      } catch (error) {
        if (!(error instanceof SendError) || error.kind !== SendErrorKind.Disconnected) throw error
      }
    }
    answer()
  }
}

const transport = new TcpTransport()
const listener = await transport.listen('127.0.0.1:0')
const serverMesh = new Mesh(1024, 1024)
const serving = serve(serverMesh)
const clientMesh = new Mesh(1024, 1024)
const client = new Client(clientMesh)

const [server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()]).then(
  ([dialled, accepted]) => [clientMesh.add(dialled), serverMesh.add(accepted)],
)

// 1000 requests at once; each reply must be its own request's.
const words = Array.from({ length: 1000 }, (_, n) => `word ${n}`)
const replies = await Promise.all(words.map((word) => client.request(server, word)))
replies.forEach((reply, n) => {
  if (reply.toString() !== words[n].toUpperCase()) throw new Error(`request ${n} got ${reply}`)
})
console.log(`1000 concurrent requests, each matched with its reply (${client.overtaken} overtaken by a later one's)`)

// A request that takes longer than its timeout: the promise rejects, the late reply is dropped.
await client.request(server, 'slow', { timeout: 50 }).then(
  () => {
    throw new Error('the slow request should have timed out')
  },
  (error) => console.log(`a slow request: ${error.message}`),
)
const deadline = Date.now() + 10_000 // the server answers it after 500 ms
while (client.late === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
if (client.late !== 1) throw new Error(`expected 1 late reply, got ${client.late}`)
console.log(`its late reply arrived after the timeout and was dropped`)

// A connection that leaves rejects the requests it still owed.
const owed = client.request(server, 'never')
await new Promise((resolve) => setTimeout(resolve, 50))
listener.close()
serverMesh.shutdown() // the server goes away with the request unanswered
await owed.then(
  () => {
    throw new Error('the owed request should have been rejected')
  },
  (error) => console.log(`a request the server never answered: rejected with ${error.code} when it left`),
)

clientMesh.shutdown()
await serving
