// What one crossing of the napi boundary costs, next to what a send does on top of it.
// The per-message send path of the stream benchmarks is bounded by these numbers.
//
//   npm run build && node benchmark/boundary-cost.mjs
//
// Each line is the median of 5 timings of a loop of 2 000 000 calls (ns per call).
import wiremesh from '../index.js' // registers this environment's waker
import binding from '../binding.js'

const { Envelope } = wiremesh
const native = new binding.NativeMesh(1, 1)
const payload = Buffer.alloc(64)
const calls = 2_000_000

function median(values) {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
}

function measure(label, loop) {
  loop(10_000)
  const timings = []
  for (let round = 0; round < 5; round++) {
    const started = process.hrtime.bigint()
    loop(calls)
    timings.push(Number(process.hrtime.bigint() - started) / calls)
  }
  console.log(`${label.padEnd(58)} ${median(timings).toFixed(0).padStart(5)} ns/call`)
}

let sink = 0
measure('NativeMesh.contains(id): a method call and a map lookup', (n) => {
  for (let i = 0; i < n; i++) if (native.contains(7)) sink++
})
const hot = native.hot()
measure('meshMaxFrameSize(hot, id): the same lookup, a free function', (n) => {
  for (let i = 0; i < n; i++) sink += binding.meshMaxFrameSize(hot, 7)
})
measure('meshSend(hot, id, 64 B) to an unknown id: + the payload crossing', (n) => {
  for (let i = 0; i < n; i++) sink += binding.meshSend(hot, 7, payload)
})
measure('new Envelope(id, 64 B): the JavaScript side of a send', (n) => {
  for (let i = 0; i < n; i++) sink += new Envelope(7, payload).id
})
native.shutdown()
if (sink < 0) console.log(sink)
