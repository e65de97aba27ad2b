// A peer in a process of its own, for the fault suite: plain `net` sockets speaking the
// mesh's framing (a 4-byte big-endian length, then the payload). Its one argument is a
// JSON object; `mode` says what it does. It reports on stdout, one line per event:
//   `connected`            every connection is up
//   `bad <text>`           something arrived out of order or malformed
//   `partial`              (partial) the whole frames and the half frame are written
//   `ready`                (crowd) every connection has written what it holds;
//                          (flood) every connection is flooding
// Payloads of numbered frames start with the frame's sequence number (u64, big-endian),
// as `numbered` in ../helpers.ts writes them. The last sequence number received in order
// (stream, partial) is written, synchronously and in place, to the file `config.report`:
// unlike a line on a pipe, it is there even when the peer is killed right after.
'use strict'
const fs = require('node:fs')
const net = require('node:net')

const config = JSON.parse(process.argv[2])
const say = (line) => process.stdout.write(line + '\n')

const reportFd = config.report === undefined ? -1 : fs.openSync(config.report, 'w')
const reportLine = Buffer.alloc(16, 0x20)
function report(seq) {
  reportLine.fill(0x20)
  reportLine.write(String(seq))
  fs.writeSync(reportFd, reportLine, 0, reportLine.length, 0)
}

function frame(payload) {
  const header = Buffer.alloc(4)
  header.writeUInt32BE(payload.length)
  return Buffer.concat([header, payload])
}

function numbered(seq, size) {
  const payload = Buffer.alloc(Math.max(8, size))
  payload.writeBigUInt64BE(BigInt(seq))
  return frame(payload)
}

/** Reads numbered frames, checks they come in order from 0, reports the last. */
function readNumbered(socket) {
  let pending = Buffer.alloc(0)
  let expected = 0
  socket.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    let offset = 0
    while (pending.length - offset >= 4) {
      const length = pending.readUInt32BE(offset)
      if (pending.length - offset < 4 + length) break
      const seq = Number(pending.readBigUInt64BE(offset + 4))
      if (seq !== expected) say(`bad expected ${expected} got ${seq}`)
      expected = seq + 1
      offset += 4 + length
    }
    pending = pending.subarray(offset)
    if (offset > 0) report(expected - 1)
  })
}

function write(socket, bytes) {
  return new Promise((resolve) => socket.write(bytes, resolve))
}

function connect() {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: config.port, noDelay: true })
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

async function stream() {
  const socket = await connect()
  socket.on('error', () => {})
  readNumbered(socket)
  say('connected')
  let seq = 0
  const batch = config.batch ?? 16
  const next = () => {
    for (;;) {
      const frames = []
      for (let i = 0; i < batch; i++) frames.push(numbered(seq++, config.size))
      if (!socket.write(Buffer.concat(frames))) return socket.once('drain', next)
    }
  }
  next()
}

async function partial() {
  const socket = await connect()
  socket.on('error', () => {})
  readNumbered(socket)
  say('connected')
  const frames = []
  for (let seq = 0; seq < config.whole; seq++) frames.push(numbered(seq, config.size))
  // Then half a frame: a header announcing `size` bytes and half of them.
  const half = numbered(config.whole, config.size).subarray(0, 4 + (config.size >> 1))
  frames.push(half)
  await write(socket, Buffer.concat(frames))
  say('partial')
}

async function flood() {
  const sockets = []
  for (let i = 0; i < config.connections; i++) sockets.push(await connect())
  say('connected')
  // Empty frames: four zero bytes each, 16 384 of them per write.
  const zeros = Buffer.alloc(64 * 1024)
  for (const socket of sockets) {
    socket.on('error', () => {})
    const next = () => {
      while (socket.write(zeros));
      socket.once('drain', next)
    }
    next()
  }
  say('ready')
}

async function crowd() {
  // `count` connections. `idle`: they send nothing. `partial`: each holds part of a frame.
  const sockets = []
  const wave = 200
  for (let start = 0; start < config.count; start += wave) {
    const opened = []
    for (let i = start; i < Math.min(config.count, start + wave); i++) opened.push(connect())
    sockets.push(...(await Promise.all(opened)))
  }
  for (const socket of sockets) socket.on('error', () => {})
  say('connected')
  if (config.kind === 'partial') {
    // Half hold two bytes of a header. Half a header announcing `announce` bytes, then
    // `trickle` bytes of them in four short writes, each read by the mesh on its own.
    const header = Buffer.alloc(4)
    header.writeUInt32BE(config.announce)
    const pieces = []
    for (let i = 0; i < 4; i++) pieces.push(Buffer.alloc(config.trickle >> 2, 0x61))
    await Promise.all(sockets.map((socket, i) => write(socket, i % 2 === 0 ? Buffer.from([0, 0]) : header)))
    const announcing = sockets.filter((_, i) => i % 2 === 1)
    for (const piece of pieces) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      await Promise.all(announcing.map((socket) => write(socket, piece)))
    }
  }
  say('ready')
}

const modes = { stream, partial, flood, crowd }
modes[config.mode]().catch((error) => {
  say(`bad ${error && error.message}`)
  process.exit(1)
})
// Idle until killed, or until the test closes stdin.
process.stdout.on('error', () => process.exit(0))
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
