// What the several-host peer processes (stream-peer.mjs, redial-peer.mjs) share: their
// JSON-lines output, how they fail and time out, the commands on stdin, the payload's wire
// format and its check, and the pacing of a sender.
//
// Payload: u32 kind (0 data, 1 end), u32 seq, u32 seq ^ 0x9e3779b9, then bytes of seq & 0xff.

const CHECK = 0x9e3779b9

/**
 * Sets up a peer process named `name`: failures exit with 2 (and the stack on stderr), the
 * process exits with 3 after `timeout` seconds (default 60). Returns `emit(event, fields)`,
 * which writes one JSON line with `at` (the wall clock, comparable with the harness's), and
 * `fail(message)`.
 */
export function peerProcess(name, timeout = 60) {
  const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, at: Date.now(), ...fields }) + '\n')
  const fail = (message) => {
    process.stderr.write(`${name}: ${message}\n`)
    process.exit(2)
  }
  process.on('uncaughtException', (error) => fail(error.stack ?? String(error)))
  process.on('unhandledRejection', (error) => fail(error?.stack ?? String(error)))
  setTimeout(() => {
    process.stderr.write(`${name}: timed out after ${timeout} s\n`)
    process.exit(3)
  }, timeout * 1000).unref()
  return { emit, fail }
}

/** Calls `onWord` with each command line on stdin; the process exits when stdin ends (the harness went away). */
export function onCommands(onWord) {
  let text = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    text += chunk
    let newline
    while ((newline = text.indexOf('\n')) >= 0) {
      const word = text.slice(0, newline).trim()
      text = text.slice(newline + 1)
      onWord(word)
    }
  })
  process.stdin.on('end', () => process.exit(0))
}

/** A payload of `size` bytes (>= 16): `kind` 0 for data, 1 for the end marker. */
export function payload(size, kind, seq) {
  const buffer = Buffer.allocUnsafe(size)
  buffer.writeUInt32BE(kind, 0)
  buffer.writeUInt32BE(seq, 4)
  buffer.writeUInt32BE((seq ^ CHECK) >>> 0, 8)
  buffer.fill(seq & 0xff, 12)
  return buffer
}

/** `{ kind, seq }` of a payload of `size` bytes, or a string saying why it is corrupt. */
export function readPayload(bytes, size) {
  if (bytes.length !== size) return `length ${bytes.length}`
  const kind = bytes.readUInt32BE(0)
  const seq = bytes.readUInt32BE(4)
  if (bytes.readUInt32BE(8) !== (seq ^ CHECK) >>> 0 || bytes[size - 1] !== (seq & 0xff) || kind > 1) {
    return 'corrupt payload'
  }
  return { kind, seq }
}

/**
 * A token bucket of `rate` envelopes a second, at most 50 ms of them at once: `await
 * pacer.next()` before each envelope; `pacer.start(now)` when sending begins. `now` is the
 * caller's clock in milliseconds.
 */
export function pacer(rate, now) {
  let tokens = 0
  let refilledAt = 0
  return {
    start() {
      refilledAt = now()
    },
    async next() {
      for (;;) {
        const t = now()
        tokens = Math.min(rate / 20, tokens + ((t - refilledAt) * rate) / 1000)
        refilledAt = t
        if (tokens >= 1) {
          tokens--
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    },
  }
}

/**
 * The receiver's check of one numbered stream: each payload intact, each sequence number
 * once and in order (a gap is counted, not fatal), until the end marker (`peerSent`: the
 * number of data envelopes the other side sent). `check` returns the data payload's
 * sequence number, or null (corrupt, or the end marker).
 */
export class StreamCheck {
  received = 0
  expected = 0
  duplicates = 0
  gaps = 0
  corrupt = 0
  anomalies = []
  peerSent = null

  constructor(size) {
    this.size = size
  }

  #note(anomaly) {
    if (this.anomalies.length < 10) this.anomalies.push(anomaly)
  }

  check(bytes) {
    const read = readPayload(bytes, this.size)
    if (typeof read === 'string') {
      this.corrupt++
      this.#note(`${read} after seq ${this.expected - 1}`)
      return null
    }
    const { kind, seq } = read
    if (kind === 1) {
      this.peerSent = seq
      return null
    }
    this.received++
    if (seq === this.expected) this.expected++
    else if (seq < this.expected) {
      this.duplicates++
      this.#note(`seq ${seq} again (or late), expecting ${this.expected}`)
    } else {
      this.gaps += seq - this.expected
      this.#note(`seq ${seq} while expecting ${this.expected}: ${seq - this.expected} missing`)
      this.expected = seq + 1
    }
    return seq
  }

  /** The counts, for the `result` event. */
  summary() {
    const { received, expected, duplicates, gaps, corrupt, anomalies, peerSent } = this
    return { received, expected, duplicates, gaps, corrupt, anomalies, peerSent }
  }
}
