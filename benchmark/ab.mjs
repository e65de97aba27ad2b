// Same-session A/B of builds of the addon: runs the wiremesh stream peers of run.mjs (one
// receiving and one sending process over loopback) with each build in turn, alternating
// run by run so both see the same machine, and prints medians. This is how an optimisation
// is proved against the build before it (README, Performance):
//
//   cp wiremesh.linux-x64-gnu.node /tmp/after.node
//   git checkout <commit before> && npm run build && cp wiremesh.linux-x64-gnu.node /tmp/before.node
//   git checkout main && npm run build
//   node benchmark/ab.mjs /tmp/before.node /tmp/after.node [--size=64] [--conns=1]
//        [--count=2000000] [--runs=8] [--pingpong]
//
// `--pingpong` runs the ping-pong scenario instead (one connection, 64 B, `--count` round
// trips, default 20000) and prints round trips per second and p50/p99 latency.
//
// Each build is copied over the package's binary for its runs; the binary is put back at
// the end. Only the addon changes between builds: index.js is the one in the checkout.

import { spawn } from 'node:child_process'
import { copyFileSync, readdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const argv = process.argv.slice(2)
const option = (name, fallback) =>
  Number(argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback)
const builds = argv.filter((arg) => !arg.startsWith('--'))
const pingpong = argv.includes('--pingpong')
const size = option('size', 64)
const conns = pingpong ? 1 : option('conns', 1)
const count = option('count', pingpong ? 20_000 : 2_000_000)
const runs = option('runs', 8)
if (builds.length < 2) {
  console.error(
    'usage: node benchmark/ab.mjs <build.node> <build.node>... [--size=] [--conns=] [--count=] [--runs=] [--pingpong]',
  )
  process.exit(2)
}
const binary = readdirSync(root).find((name) => /^wiremesh\..*\.node$/.test(name))
if (binary === undefined) {
  console.error('no built addon in the package root: run `npm run build` first')
  process.exit(2)
}
const installed = path.join(root, binary)
const saved = `${installed}.ab-saved`
copyFileSync(installed, saved)

/** Starts a peer; `next(event)` resolves with its next JSON line of that event. */
function peer(config) {
  const child = spawn(process.execPath, [path.join(here, 'peers', 'wiremesh.mjs'), JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const events = []
  const waiters = []
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      events.push(JSON.parse(line))
    } catch {
      return
    }
    waiters.splice(0).forEach((wake) => wake())
  })
  child.next = async (name) => {
    for (;;) {
      const at = events.findIndex((event) => event.event === name)
      if (at >= 0) return events.splice(at, 1)[0]
      await new Promise((resolve) => waiters.push(resolve))
    }
  }
  return child
}

const cpu = (result) => (result.cpu.user + result.cpu.system) / 1e6

async function once() {
  const base = { scenario: pingpong ? 'pingpong' : 'stream', conns, size, count, timeout: 60 }
  const recv = peer({ ...base, role: 'recv', listen: true })
  const { port } = await recv.next('listening')
  const send = peer({ ...base, role: 'send', port })
  await Promise.all([recv.next('ready'), send.next('ready')])
  send.stdin.write('go\n')
  const done = await send.next('done')
  const received = await recv.next('result')
  recv.stdin.write('exit\n')
  send.stdin.write('exit\n')
  const sent = await send.next('result')
  const seconds = Number(BigInt(received.t1) - BigInt(done.t0)) / 1e9
  const latency = { p50: Number(done.p50) / 1e3, p99: Number(done.p99) / 1e3 }
  return { rate: count / seconds, recvCpu: cpu(received), sendCpu: cpu(sent), ...latency }
}

const rateText = (rate) => (rate >= 1e6 ? `${(rate / 1e6).toFixed(2)} M` : `${(rate / 1e3).toFixed(1)} k`)

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const results = new Map(builds.map((build) => [build, []]))
try {
  for (let run = 0; run < runs; run++) {
    for (const build of builds) {
      copyFileSync(build, installed)
      results.get(build).push(await once())
    }
  }
} finally {
  copyFileSync(saved, installed)
  rmSync(saved)
}
const what = pingpong ? `ping-pong ${size} B, ${count} round trips` : `stream ${size} B x${conns}, ${count} messages`
console.log(`${what}, ${runs} alternating runs per build; medians`)
for (const [build, list] of results) {
  if (pingpong) {
    const p50 = list.map((r) => r.p50.toFixed(1))
    const p99 = list.map((r) => r.p99.toFixed(1))
    console.log(
      `${build}: ${rateText(median(list.map((r) => r.rate)))} round trips/s, ` +
        `p50 ${median(list.map((r) => r.p50)).toFixed(1)} us, p99 ${median(list.map((r) => r.p99)).toFixed(1)} us, ` +
        `CPU ${median(list.map((r) => r.recvCpu + r.sendCpu)).toFixed(3)} s (p50s: ${p50.join(', ')}; p99s: ${p99.join(', ')})`,
    )
    continue
  }
  const rate = median(list.map((r) => r.rate))
  const recvCpu = median(list.map((r) => r.recvCpu))
  const sendCpu = median(list.map((r) => r.sendCpu))
  const each = list.map((r) => rateText(r.rate)).join(', ')
  const mbps = ((rate * size) / 1e6).toFixed(0)
  console.log(
    `${build}: ${rateText(rate)} msg/s (${mbps} MB/s), CPU receiver ${recvCpu.toFixed(3)} s, ` +
      `sender ${sendCpu.toFixed(3)} s (runs: ${each})`,
  )
}
