// What every peer of the comparison benchmark shares (benchmark/run.mjs spawns the peers;
// benchmark/README.md defines the scenarios). A peer is one process, one side of one run:
//
//   node benchmark/peers/<implementation>.mjs '<config as JSON>'
//
// config: { role: 'send' | 'recv', scenario: 'stream' | 'pingpong' | 'backpressure' |
//           'requests' (many-meshes: the sender is the clients, the receiver the echo server),
//           listen: boolean (this side listens) | port: number (this side connects),
//           conns, size, count, duration (s, backpressure), rate (msg/s, backpressure
//           consumer), timeout (s), meshes: 'per-connection' (wiremesh-50's clients) }
//
// The protocol with the harness: JSON lines on stdout, commands on stdin.
//   listening {port}  the listening side, once bound (port 0 picks one)
//   ready             every connection is established
//   <- go             (sender) start sending
//   done {...}        (sender) the last message is handed to the implementation
//   result {...}      receiver: every message arrived (or it stalled); sender: after exit
//   <- exit           close everything and exit
//
// Payload layout, shared with benchmark/limit: bytes 0..4 the sender's connection index,
// 4..8 the sequence number on that connection (big-endian u32), the last byte is
// seq & 0xff; the bytes between are whatever the allocation held. In backpressure, a
// final frame per connection has seq 0xffffffff and the count sent on it at bytes 8..12.

export const config = JSON.parse(process.argv[2] ?? '{}')
export const END_SEQ = 0xffffffff

export const now = () => process.hrtime.bigint()

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

export function fail(message) {
  process.stderr.write(`${process.argv[1].split('/').pop()}: ${message}\n`)
  process.exit(2)
}

// Bounded in time whatever happens: the harness kills too, but a peer never outlives it.
setTimeout(
  () => {
    process.stderr.write(`peer timed out after ${config.timeout} s\n`)
    process.exit(3)
  },
  (config.timeout ?? 120) * 1000,
).unref()

// Commands on stdin; the end of stdin (the harness went away) ends the process.
const commandWaiters = new Map()
const commandsSeen = new Set()
let stdinText = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  stdinText += chunk
  let newline
  while ((newline = stdinText.indexOf('\n')) >= 0) {
    const word = stdinText.slice(0, newline).trim()
    stdinText = stdinText.slice(newline + 1)
    commandsSeen.add(word)
    commandWaiters.get(word)?.()
    commandWaiters.delete(word)
  }
})
process.stdin.on('end', () => process.exit(0))

/** Resolves when the harness writes `word` on stdin. */
export function command(word) {
  if (commandsSeen.has(word)) return Promise.resolve()
  return new Promise((resolve) => commandWaiters.set(word, resolve))
}

/** After closing everything: stop reading stdin and let the process end by itself. */
export function leave() {
  process.stdin.pause()
  process.stdin.destroy()
  setTimeout(() => {
    process.stderr.write('peer did not exit by itself within 5 s of closing everything\n')
    process.exit(6)
  }, 5000).unref()
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** One payload, freshly allocated as an application would produce it. */
export function makePayload(size, conn, seq) {
  const payload = Buffer.allocUnsafe(size)
  payload.writeUInt32BE(conn, 0)
  payload.writeUInt32BE(seq, 4)
  payload[size - 1] = seq & 0xff
  return payload
}

/** A frame with the header in front, for implementations that write frames themselves. */
export function makeFrame(size, conn, seq) {
  const frame = Buffer.allocUnsafe(4 + size)
  frame.writeUInt32BE(size, 0)
  frame.writeUInt32BE(conn, 4)
  frame.writeUInt32BE(seq, 8)
  frame[3 + size] = seq & 0xff
  return frame
}

export function makeEndPayload(size, conn, sent) {
  const payload = Buffer.alloc(size)
  payload.writeUInt32BE(conn, 0)
  payload.writeUInt32BE(END_SEQ, 4)
  payload.writeUInt32BE(sent, 8)
  payload[size - 1] = END_SEQ & 0xff
  return payload
}

/**
 * Reads every payload: the sender's connection index, the sequence number (in order per
 * connection) and the last byte. Counts what arrived, what was wrong, and end frames.
 */
export class Checker {
  constructor(conns) {
    this.expected = new Uint32Array(conns)
    this.ended = new Int32Array(conns).fill(-1) // the count an end frame announced
    this.endFrames = 0
    this.received = 0
    this.errors = 0
    this.checksum = 0
  }

  check(payload) {
    const length = payload.length
    if (length < 9) {
      this.errors++
      this.received++
      return
    }
    const conn = payload.readUInt32BE(0)
    const seq = payload.readUInt32BE(4)
    const last = payload[length - 1]
    this.checksum += last
    if (conn >= this.expected.length) {
      this.errors++
      this.received++
      return
    }
    if (seq === END_SEQ) {
      this.ended[conn] = payload.readUInt32BE(8)
      this.endFrames++
      return
    }
    this.received++
    if (seq !== this.expected[conn] || last !== (seq & 0xff)) this.errors++
    this.expected[conn] = seq + 1
  }

  /** Backpressure: every connection sent its end frame. */
  allEnded() {
    return this.endFrames >= this.expected.length
  }

  /** Backpressure: connections whose received count differs from what their end frame announced. */
  mismatches() {
    if (this.endFrames === 0) return null
    let count = 0
    for (let i = 0; i < this.expected.length; i++) if (this.ended[i] !== this.expected[i]) count++
    return count
  }

  summary() {
    return { received: this.received, errors: this.errors, checksum: this.checksum }
  }
}

export function cpuFields(since) {
  const { user, system } = process.cpuUsage(since)
  return { cpu: { user, system } }
}

/** Reports a stalled receiver (nothing for `seconds`) and exits, rather than waiting forever. */
export function watchProgress(progress, report, seconds = 10, who = 'receiver') {
  let last = -1
  let lastChange = Date.now()
  const timer = setInterval(() => {
    const value = progress()
    if (value !== last) {
      last = value
      lastChange = Date.now()
    } else if (Date.now() - lastChange > seconds * 1000) {
      report()
      process.stderr.write(`${who} stalled: nothing arrived for ${seconds} s\n`)
      process.exit(4)
    }
  }, 250)
  timer.unref()
  return () => clearInterval(timer)
}

export function latencyStats(rtts) {
  const sorted = Float64Array.from(rtts).sort()
  return {
    p50: sorted[Math.floor(sorted.length / 2)],
    p99: sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * 99) / 100))],
  }
}

/**
 * The clients of many-meshes: `conns` loops at once, loop `conn` on connection `conn`, each
 * sending a request and awaiting its reply before the next, `count` round trips in all
 * (split evenly). `request(conn, seq)` sends request `seq` of connection `conn` (the
 * implementation allocates it) and resolves with the reply's payload, which must be that
 * request, echoed. Every reply is read (Checker, and its connection and sequence number
 * against the request's). A loop that waits 8 s with no round trip completing anywhere
 * is a stall: it is written to stderr and the process exits.
 */
export async function requestLoops(conns, count, size, request) {
  const checker = new Checker(conns)
  const rtts = new Float64Array(count)
  let completed = 0
  let finished = 0
  let mismatched = 0
  const unwatch = watchProgress(
    () => completed,
    () =>
      process.stderr.write(
        `clients: ${completed} of ${count} round trips done, ${conns - finished} loops waiting for a reply\n`,
      ),
    8,
    'clients',
  )
  const loop = async (conn) => {
    const rounds = Math.floor(count / conns) + (conn < count % conns ? 1 : 0)
    for (let seq = 0; seq < rounds; seq++) {
      const start = now()
      const reply = await request(conn, seq)
      rtts[completed++] = Number(now() - start)
      checker.check(reply)
      if (reply.length !== size || reply.readUInt32BE(0) !== conn || reply.readUInt32BE(4) !== seq) mismatched++
    }
    finished++
  }
  await Promise.all(Array.from({ length: conns }, (_, conn) => loop(conn)))
  const tEnd = now()
  unwatch()
  const summary = checker.summary()
  return { tEnd, ...summary, errors: summary.errors + mismatched, ...latencyStats(rtts) }
}

/**
 * The backpressure consumer's pace: `rate` messages per second from its first message.
 * Returns how many it may take now (0: it sleeps until it may take one).
 */
export class Pace {
  constructor(rate) {
    this.rate = rate
    this.start = null
    this.taken = 0
  }

  allowance() {
    if (this.start === null) return 256
    const allowed = Math.floor((this.rate * Number(now() - this.start)) / 1e9) - this.taken
    return Math.max(0, Math.min(allowed, 4096))
  }

  took(n) {
    if (this.start === null) this.start = now()
    this.taken += n
  }

  /** Waits until at least one message is allowed (at least 1 ms: a timer). */
  async wait() {
    const behind = this.taken + 1 - (this.rate * Number(now() - this.start)) / 1e9
    await sleep(Math.max(1, Math.ceil((behind / this.rate) * 1000)))
  }
}

/** Receiver-side memory: the baseline once ready, then the peak (getrusage maxrss). */
export function memoryFields(baselineRss) {
  return {
    baselineRss,
    finalRss: process.memoryUsage.rss(),
    maxRss: process.resourceUsage().maxRSS * 1024,
  }
}

/** Reports a receiver's result: when it finished, what it checked, its CPU and memory. */
export function emitReceiverResult(t1, checker, cpu0, baselineRss, extra = {}) {
  emit('result', {
    t1: String(t1),
    ...checker.summary(),
    mismatches: checker.mismatches(),
    ...cpuFields(cpu0),
    ...memoryFields(baselineRss),
    ...extra,
  })
}
