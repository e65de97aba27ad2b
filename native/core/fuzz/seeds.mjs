// Writes the hand-made seeds of the fuzz targets: corpus/<target>/seed-<name>. The input
// formats are described at the top of fuzz_targets/<target>.rs and in README.md.
//
//   node native/core/fuzz/seeds.mjs
//
// The fuzzer's own finds, minimized, sit beside them under their hash names.

import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** One frame: a 4-byte big-endian length, then the payload. */
function frame(payload) {
  const bytes = typeof payload === 'string' ? [...Buffer.from(payload)] : payload
  const len = bytes.length
  return [(len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff, ...bytes]
}

const pattern = (n) => Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff)

function write(target, name, bytes) {
  const folder = join(here, 'corpus', target)
  mkdirSync(folder, { recursive: true })
  writeFileSync(join(folder, `seed-${name}`), Buffer.from(bytes))
}

// ---- decoder: flags, a, b, c, n, n chunk sizes, then the wire ----

const decoder = (name, { flags = 0, a = 0, b = 0, c = 0, cuts = [], wire = [], v1 = false }) =>
  write('decoder', name, [flags, a, b, c, cuts.length | (v1 ? 0x80 : 0), ...cuts, ...wire])

/** One `splinter-v1` frame: version 1, the length, the checksum of those six bytes, the payload. */
function frameV1(payload, { version = 1, checksum } = {}) {
  const bytes = typeof payload === 'string' ? [...Buffer.from(payload)] : payload
  const len = bytes.length
  const head = [version >> 8, version & 0xff, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]
  const sum = head.reduce((a, b) => (a + b) & 0xff, 0)
  return [...head, checksum ?? ((sum ^ 0xff) + 1) & 0xff, ...bytes]
}

const RUNS = 0x04
const BELOW = 0x08
const FILL = 0x10
const SMALL_FILL = 0x20
const RANDOM = 0x40
const PROBE = 0x80
const three = [...frame('hello'), ...frame(''), ...frame('world')]

decoder('empty', {})
decoder('three-frames-whole', { wire: three })
decoder('three-frames-cut', { flags: RUNS, cuts: [3, 5, 1, 0, 7], wire: three })
decoder('one-byte-at-a-time', {
  flags: RUNS | PROBE,
  cuts: Array(three.length).fill(1),
  wire: three,
})
decoder('runs-below-4', {
  flags: RUNS | BELOW,
  b: 4,
  cuts: [9, 2],
  wire: [...frame('ab'), ...frame('cde'), ...frame('fghij'), ...frame('k'), ...frame('')],
})
decoder('max-10-then-11', {
  flags: 1 | RUNS,
  a: 10,
  cuts: [6, 4, 3],
  wire: [...frame('12345'), 0, 0, 0, 11, ...pattern(11)],
})
decoder('exactly-max', { flags: 1, a: 3, wire: [...frame('abc'), ...frame('')] })
decoder('max-0', { flags: 1 | RUNS, a: 0, wire: [...frame(''), ...frame(''), ...frame('x')] })
decoder('hostile-4gib', { cuts: [2], wire: [...frame('fine'), 0xff, 0xff, 0xff, 0xff, 1, 2, 3] })
decoder('hostile-trickle-u32-max', {
  flags: 3 | FILL | SMALL_FILL | PROBE,
  c: 4,
  cuts: [4, 1, 2, 3, 5, 8, 13],
  wire: [0xff, 0xff, 0xff, 0xff, ...pattern(60)],
})
decoder('incomplete-tail', { flags: RUNS, cuts: [10], wire: [...three, 0, 0, 1, 0, 1, 2, 3] })
decoder('split-header', { flags: RUNS | PROBE, cuts: [1, 1, 1, 1, 1], wire: frame('abcdef') })
decoder('fill-small-window', {
  flags: RUNS | FILL | SMALL_FILL,
  c: 16,
  cuts: [0x81, 0x81, 0x83],
  wire: [...frame(pattern(300)), ...frame('after')],
})
decoder('fill-random-failures', {
  flags: RUNS | FILL | SMALL_FILL | RANDOM,
  c: 8,
  cuts: [7, 0x82, 33, 0x81],
  wire: [...frame(pattern(200)), ...frame('x'), ...frame(pattern(90))],
})
// A payload of 20000 bytes announced: read straight into its buffer (DIRECT_READ), in
// windows that grow with what arrived; 3000 bytes of it arrive (inputs stay under 4 KiB).
decoder('direct-read-partial', {
  flags: RUNS | FILL | PROBE,
  cuts: [100, 0x90, 1, 0xa0],
  wire: frame(pattern(20000)).slice(0, 3004),
})
decoder('runs-and-a-large-frame', {
  flags: RUNS | BELOW | FILL,
  b: 100,
  cuts: [0xa0, 0xa0, 1],
  wire: [...frame('a'), ...frame('bc'), ...frame(pattern(3000)), ...frame('d'), ...frame('')],
})
// splinter-v1: Splinter's own vectors (00 01 00 00 00 00 ff heads an empty payload), split
// headers, a bad checksum, a version other than 1, runs, and a large frame filled directly.
const threeV1 = [...frameV1('hello'), ...frameV1(''), ...frameV1('world')]
decoder('v1-three-frames-cut', { v1: true, flags: RUNS, cuts: [3, 5, 1, 0, 7], wire: threeV1 })
decoder('v1-one-byte-at-a-time', { v1: true, flags: RUNS | PROBE, cuts: Array(20).fill(1), wire: threeV1 })
decoder('v1-bad-checksum', { v1: true, cuts: [6, 1], wire: [...frameV1('ok'), ...frameV1('no', { checksum: 0 })] })
decoder('v1-version-2', { v1: true, wire: [...frameV1('ok'), ...frameV1('no', { version: 2 })] })
decoder('v1-max-10-then-11', {
  v1: true,
  flags: 1 | RUNS,
  a: 10,
  wire: [...frameV1(pattern(10)), ...frameV1(pattern(11))],
})
decoder('v1-large-fill', {
  v1: true,
  flags: FILL | SMALL_FILL | RANDOM,
  c: 16,
  cuts: [0x81, 0x82, 0x90],
  wire: [...frameV1('x'), ...frameV1(pattern(3000)), ...frameV1('y')],
})
decoder('medium-max', {
  flags: 2 | RUNS | FILL | SMALL_FILL,
  a: 1,
  c: 64,
  cuts: [0x85, 3],
  wire: [...frame(pattern(500)), ...frame(pattern(513))],
})
decoder('random-choices', {
  flags: RUNS | BELOW | FILL | SMALL_FILL | RANDOM | PROBE,
  b: 6,
  c: 2,
  cuts: [5, 9, 0, 1, 17, 3],
  wire: [...frame('short'), ...frame('longer one'), ...frame(''), ...frame(pattern(40))],
})

// ---- mesh: shape, small mask, capacities, then operations ----

const mesh = (name, { peers = 1, eventLoop = false, shutdown = false, small = 0, caps = 0x33, ops }) =>
  write('mesh', name, [(peers - 1) | (eventLoop ? 0x08 : 0) | (shutdown ? 0x10 : 0), small, caps, ...ops])

// Operations on peer k.
const raw = (k, bytes) => [(k << 3) | 0, bytes.length, ...bytes]
const write_frame = (k, payload) => {
  const bytes = typeof payload === 'string' ? [...Buffer.from(payload)] : payload
  return [(k << 3) | 1, bytes.length, ...bytes]
}
const write_pattern = (k, blocks) => [(k << 3) | 1, 0x80 | blocks] // blocks * 512 bytes
const shut = (k) => [(k << 3) | 2]
const drop = (k) => [(k << 3) | 3]
const send = (k, payload) => {
  const bytes = [...Buffer.from(payload)]
  return [(k << 3) | 4, bytes.length, ...bytes]
}
const send_pattern = (k, blocks) => [(k << 3) | 4, 0x80 | blocks]
const remove = (k) => [(k << 3) | 5]
// k < 16 here, so that bit 7 is the end flag and not part of k.
const end = (k) => [0x80 | (k << 3) | 5]
const take = 0x06
const take_wait = 0x0e
const take_batch = 0x16
const read = (k) => [(k << 3) | 7]

mesh('hello-then-close', { ops: [...write_frame(0, 'hello'), take_wait, ...drop(0)] })
mesh('close-between-frames', {
  ops: [...write_frame(0, 'last words'), ...drop(0)],
})
mesh('close-mid-frame', {
  ops: [...raw(0, [...frame('0123456789')].slice(0, 7)), ...shut(0)],
})
mesh('hostile-header-one-of-two', {
  peers: 2,
  ops: [
    ...write_frame(0, 'fine'),
    ...raw(0, [0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
    ...write_frame(1, 'still here'),
    take_wait,
    ...write_frame(1, 'and here'),
  ],
})
mesh('small-max-over', {
  peers: 2,
  small: 0b01,
  ops: [...write_frame(0, pattern(64)), ...write_frame(0, pattern(65)), ...write_frame(1, pattern(65))],
})
mesh('send-and-read', {
  peers: 2,
  ops: [...send(0, 'to zero'), ...send(1, 'to one'), ...send(0, 'again'), ...read(0), ...read(1), ...drop(0)],
})
mesh('remove-with-frames-in-flight', {
  caps: 0x10,
  ops: [...write_frame(0, 'a'), ...write_frame(0, 'b'), ...write_frame(0, 'c'), ...remove(0), take, ...remove(0)],
})
mesh('send-after-remove', {
  peers: 2,
  ops: [...remove(1), ...send(1, 'late'), ...send(0, 'fine'), ...read(0)],
})
mesh('eight-close-at-once', {
  peers: 8,
  caps: 0x22,
  ops: [
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => [...write_frame(k, `from ${k}`), ...write_frame(k, 'bye')]),
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => (k % 2 ? drop(k) : shut(k))),
    take_wait,
  ],
})
mesh('eight-event-loop', {
  peers: 8,
  eventLoop: true,
  small: 0b10100000,
  caps: 0x01,
  ops: [
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => write_frame(k, pattern(10 + k * 10))),
    take_wait,
    ...[0, 2, 4, 6].flatMap(drop),
    ...remove(1),
    take_wait,
  ],
})
mesh('large-frames', {
  peers: 2,
  ops: [
    ...write_pattern(0, 32),
    ...write_pattern(0, 127),
    ...write_frame(0, 'small'),
    ...write_pattern(1, 20),
    take_batch,
  ],
})
mesh('shutdown-with-unsent', {
  peers: 2,
  shutdown: true,
  caps: 0xf3,
  ops: [...Array(12).fill(send_pattern(0, 127)).flat(), ...send(1, 'one'), ...write_frame(1, 'x')],
})
mesh('reset-with-unread', {
  ops: [...send(0, 'unread'), take_wait, ...write_frame(0, 'and then'), ...drop(0)],
})
mesh('split-header-across-writes', {
  peers: 3,
  eventLoop: true,
  ops: [
    ...raw(0, [0, 0]),
    take,
    ...raw(0, [0, 3, 0x61]),
    ...raw(0, [0x62, 0x63]),
    ...raw(2, [...frame('ab'), ...frame('cd'), 0]),
    ...shut(2),
    take_wait,
  ],
})
mesh('full-queue', {
  caps: 0x00,
  ops: [...send(0, 'a'), ...send(0, 'b'), ...send(0, 'c'), ...send(0, 'd'), ...read(0), ...send(0, 'e'), ...shut(0)],
})
mesh('small-incoming', {
  peers: 2,
  caps: 0x00,
  ops: [
    ...[1, 2, 3, 4, 5, 6].flatMap((i) => write_frame(0, `n${i}`)),
    ...[1, 2, 3].flatMap((i) => write_frame(1, `m${i}`)),
    take,
    ...drop(0),
    take_batch,
  ],
})
// More than the sockets hold (the peer reads nothing until the end): the mesh hands the
// rest back, in the shutdown's notice, or in the notice of a peer that ends its stream.
mesh('shutdown-with-a-full-socket', {
  shutdown: true,
  caps: 0xf0,
  ops: Array(200).fill(send_pattern(0, 127)).flat(),
})
mesh('eof-with-unsent', {
  peers: 2,
  caps: 0xf0,
  ops: [...Array(80).fill(send_pattern(0, 127)).flat(), ...write_frame(0, 'bye'), ...shut(0), ...send(1, 'other')],
})
// Ends: what was sent before goes out, then the end of the stream; the peer's frames still
// arrive; a send after it is refused; one peer ends with more than its socket holds.
mesh('end-then-peer-answers', {
  peers: 2,
  ops: [
    ...send(0, 'question'),
    ...end(0),
    ...send(0, 'late'),
    ...read(0),
    ...write_frame(0, 'answer'),
    take_wait,
    ...shut(0),
  ],
})
mesh('end-with-a-full-socket', {
  peers: 2,
  caps: 0xf0,
  ops: [...Array(60).fill(send_pattern(0, 127)).flat(), ...end(0), ...send(1, 'other'), ...end(1), ...read(1)],
})
