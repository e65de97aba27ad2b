// Same-session A/B of builds: runs the wiremesh stream (or ping-pong) peers of run.mjs, one
// receiving and one sending process over loopback, with each checkout's own build in turn,
// alternating run by run so both see the same machine, and prints medians. This is how a
// change is proved against the build before it (benchmark/README.md):
//
//   git worktree add /tmp/before <commit before> && (cd /tmp/before && npm install && npm run build)
//   npm run build
//   node benchmark/ab.mjs /tmp/before . [--size=64] [--conns=1] [--count=2000000] [--runs=8]
//        [--pingpong] [--tls] [--profile=DIR]
//
// Each argument is a package directory with its addon built and its TypeScript compiled
// (`npm run build`); its own `benchmark/peers/wiremesh.mjs` runs, so the builds may differ
// in their native interface. `--pingpong` runs the ping-pong scenario instead (one
// connection, 64 B, `--count` round trips, default 20000) and prints round trips per
// second and p50/p99 latency. `--tls` runs the stream over `TlsTransport` (the
// `tls-*` scenarios of run.mjs: one certificate set, made once, for every run).

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'

const argv = process.argv.slice(2)
const option = (name, fallback) =>
  Number(argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback)
const builds = argv.filter((arg) => !arg.startsWith('--')).map((dir) => path.resolve(dir))
const pingpong = argv.includes('--pingpong')
const tls = argv.includes('--tls')
const size = option('size', 64)
const conns = pingpong ? 1 : option('conns', 1)
const count = option('count', pingpong ? 20_000 : 2_000_000)
const runs = option('runs', 8)
// --profile=DIR: every peer writes a V8 CPU profile there (node --cpu-prof).
const profile = argv.find((arg) => arg.startsWith('--profile='))?.slice('--profile='.length)
const nodeArgs = profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profile)}`]
if (builds.length < 2) {
  console.error(
    'usage: node benchmark/ab.mjs <checkout> <checkout>... [--size=] [--conns=] [--count=] [--runs=] [--pingpong] [--tls]',
  )
  process.exit(2)
}
for (const build of builds) {
  if (!existsSync(path.join(build, 'index.js')) || !existsSync(path.join(build, 'benchmark/peers/wiremesh.mjs'))) {
    console.error(`${build}: not a built checkout (run \`npm run build\` there first)`)
    process.exit(2)
  }
}

/** Starts a peer of `build`; `next(event)` resolves with its next JSON line of that event. */
function peer(build, config) {
  const script = path.join(build, 'benchmark/peers/wiremesh.mjs')
  const child = spawn(process.execPath, [...nodeArgs, script, JSON.stringify(config)], {
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

// The TLS runs' key, certificate and CA (PEM), as run.mjs makes them.
const certificates = tls
  ? await import('./certificates.mjs').then(({ benchmarkCertificates }) => benchmarkCertificates())
  : undefined

const cpu = (result) => (result.cpu.user + result.cpu.system) / 1e6

async function once(build) {
  const base = { scenario: pingpong ? 'pingpong' : 'stream', conns, size, count, timeout: 60, tls: certificates }
  const recv = peer(build, { ...base, role: 'recv', listen: true })
  const { port } = await recv.next('listening')
  const send = peer(build, { ...base, role: 'send', port })
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
for (let run = 0; run < runs; run++) {
  for (const build of builds) results.get(build).push(await once(build))
}
const what =
  (pingpong ? `ping-pong ${size} B, ${count} round trips` : `stream ${size} B x${conns}, ${count} messages`) +
  (tls ? ' over TLS' : '')
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
