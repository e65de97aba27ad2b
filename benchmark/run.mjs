// The comparison benchmark: wiremesh against a hand-written Node `net` peer, zeromq.js,
// and the limit (the same framing in Rust with no JavaScript), in one run. The scenarios
// are defined in benchmark/README.md ("Against the peers"); read them before any number.
//
//   npm run build && node benchmark/run.mjs [--quick] [--runs=N]
//        [--scenarios=stream-64B-1,fan-in,many-meshes,...] [--impls=wiremesh,wiremesh-50,net,zeromq,limit]
//   node benchmark/run.mjs [--quick] --replot    (tables and charts from the saved JSON)
//
// Every run is two processes, a sender and a receiver (benchmark/peers/*.mjs, or
// benchmark/limit's `limit send|recv`), talking over 127.0.0.1. Each scenario runs
// `--runs` times (3; --quick: once, with a tenth of the messages) per implementation,
// the implementations interleaved (their order rotates every round); the medians are
// printed as tables, and written with every run to benchmark/results/latest.json, with
// two charts of the ratios to `net`: benchmark/results/throughput.svg and cost.svg.
// --quick writes to benchmark/results/quick/ instead, and a run filtered by --scenarios,
// --impls or --runs (quick or not) to benchmark/results/partial/.
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const argv = process.argv.slice(2)
const option = (name) => argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3)
const quick = argv.includes('--quick')
const runs = Number(option('runs') ?? (quick ? 1 : 3))
const scale = quick ? 0.1 : 1
const onlyScenarios = option('scenarios')?.split(',')
const onlyImpls = option('impls')?.split(',')
// A filtered run does not replace the full run's results.
const partial = Boolean(onlyScenarios || onlyImpls || option('runs'))
const outDir = path.join(here, 'results', partial ? 'partial' : quick ? 'quick' : '')
const started = Date.now()

// ---------------------------------------------------------------------------------------
// Scenarios (benchmark/README.md defines each one)

const KiB = 1024
const sizeName = (size) => (size >= KiB ? `${size / KiB} KiB` : `${size} B`)
const stream = (size, conns, count) => ({
  id: `stream-${sizeName(size).replace(' ', '')}-${conns}`,
  title: `stream ${sizeName(size)} x${conns}`,
  kind: 'stream',
  size,
  conns,
  count,
})
const UNIX_IMPLS = ['wiremesh', 'wiremesh-tcp', 'net']
const TLS_IMPLS = ['wiremesh', 'net', 'zeromq']
const scenarios = [
  stream(64, 1, 2_000_000),
  stream(KiB, 1, 1_000_000),
  stream(64 * KiB, 1, 80_000),
  stream(64, 100, 2_000_000),
  stream(KiB, 100, 1_000_000),
  stream(64 * KiB, 100, 80_000),
  { id: 'pingpong', title: 'ping-pong 64 B', kind: 'pingpong', size: 64, conns: 1, count: 50_000 },
  { id: 'fan-in', title: 'fan-in 64 B x1000', kind: 'stream', size: 64, conns: 1000, count: 1_000_000 },
  {
    id: 'fan-out',
    title: 'fan-out 64 B x1000',
    kind: 'stream',
    size: 64,
    conns: 1000,
    count: 1_000_000,
    listener: 'send',
  },
  {
    id: 'backpressure',
    title: 'backpressure 1 KiB x10',
    kind: 'backpressure',
    size: KiB,
    conns: 10,
    duration: 30,
    rate: 50_000,
    impls: ['wiremesh', 'net', 'zeromq'],
  },
  // Unix sockets: wiremesh and net over one socket path, and wiremesh over loopback TCP.
  { ...stream(64, 1, 2_000_000), id: 'unix-64B-1', title: 'unix 64 B x1', transport: 'unix', impls: UNIX_IMPLS },
  {
    ...stream(64 * KiB, 1, 80_000),
    id: 'unix-64KiB-1',
    title: 'unix 64 KiB x1',
    transport: 'unix',
    impls: UNIX_IMPLS,
  },
  // TLS: wiremesh's TlsTransport and Node's tls with the same framing; zeromq over plain
  // TCP (zeromq.js has no TLS), the baseline without encryption.
  { ...stream(64, 1, 2_000_000), id: 'tls-64B-1', title: 'tls 64 B x1', transport: 'tls', impls: TLS_IMPLS },
  {
    ...stream(64 * KiB, 1, 80_000),
    id: 'tls-64KiB-1',
    title: 'tls 64 KiB x1',
    transport: 'tls',
    impls: TLS_IMPLS,
  },
  {
    // 50 request/response loops against an echo server: one mesh for the 50 client
    // connections (wiremesh) against a mesh per connection (wiremesh-50)
    id: 'many-meshes',
    title: 'many meshes 64 B x50',
    kind: 'requests',
    size: 64,
    conns: 50,
    count: 200_000,
    impls: ['wiremesh', 'wiremesh-50', 'net'],
  },
].map((scenario) => ({
  ...scenario,
  count: scenario.count === undefined ? undefined : Math.round(scenario.count * scale),
  duration: scenario.duration === undefined ? undefined : scenario.duration * scale,
}))

// ---------------------------------------------------------------------------------------
// Implementations, and whether each can run here

const limitBinary = path.join(here, 'limit', 'target', 'release', 'limit')
const nodePeer = (name) => (config) => [
  process.execPath,
  path.join(here, 'peers', `${name}.mjs`),
  JSON.stringify(config),
]
const implementations = {
  wiremesh: { command: nodePeer('wiremesh') },
  // The clients of many-meshes with a Mesh per connection; the server is wiremesh's.
  'wiremesh-50': {
    command: (config) => nodePeer('wiremesh')({ ...config, meshes: 'per-connection' }),
    scenarios: ['many-meshes'],
  },
  // The unix scenarios' wiremesh over loopback TCP instead, for comparison.
  'wiremesh-tcp': { command: nodePeer('wiremesh'), scenarios: ['unix-64B-1', 'unix-64KiB-1'] },
  net: { command: nodePeer('net') },
  zeromq: { command: nodePeer('zeromq') },
  limit: {
    command: (config) => [
      limitBinary,
      config.role,
      ...(config.listen ? ['--listen'] : ['--port', String(config.port)]),
      ...['--scenario', config.scenario, '--conns', String(config.conns), '--size', String(config.size)],
      ...['--count', String(config.count), '--timeout', String(config.timeout)],
    ],
  },
}
const IMPLS = Object.keys(implementations).filter((name) => !onlyImpls || onlyImpls.includes(name))
const skipped = {}

/** The error line of a child's stderr (Node ends it with its version). */
function firstLine(text) {
  const lines = String(text).trim().split('\n').filter(Boolean)
  return lines.find((line) => /(^|\s)\w*Error\b/.test(line)) ?? lines.slice(-1)[0] ?? ''
}

function checkAvailable() {
  const probe = (code) => execFileSync(process.execPath, ['-e', code], { cwd: root, stdio: 'pipe', timeout: 60_000 })
  try {
    probe("require('./index.js')")
  } catch (error) {
    skipped.wiremesh = `wiremesh does not load (run \`npm run build\` first): ${firstLine(error.stderr)}`
    skipped['wiremesh-50'] = skipped.wiremesh
  }
  try {
    probe("const z = require('zeromq'); if (typeof z.Router !== 'function') throw new Error('no Router')")
  } catch (error) {
    skipped.zeromq =
      'zeromq is not installed or its native addon does not load (`npm install --no-save zeromq@6`; ' +
      `see benchmark/README.md): ${firstLine(error.stderr)}`
  }
  if (IMPLS.includes('limit')) {
    try {
      execFileSync(
        'cargo',
        ['build', '--release', '--quiet', '--manifest-path', path.join(here, 'limit', 'Cargo.toml')],
        {
          cwd: root,
          stdio: 'pipe',
          timeout: 300_000,
        },
      )
    } catch (error) {
      skipped.limit = `the limit does not build (cargo build --release --manifest-path benchmark/limit/Cargo.toml): ${firstLine(error.stderr ?? error.message)}`
    }
  }
}

/** 1000 connections need file descriptors: raise the soft limit in the peers' shells if needed. */
function fileLimit() {
  const limits = fs.readFileSync('/proc/self/limits', 'utf8')
  const [, soft, hard] = limits.match(/Max open files\s+(\S+)\s+(\S+)/) ?? []
  const number = (value) => (value === 'unlimited' ? Infinity : Number(value))
  const want = 4096
  return { soft: number(soft), hard: number(hard), want }
}
const files = fileLimit()
// (Node raises its own soft limit to the hard one at startup, and the peers inherit it; the
// shell is for a harness started some other way.)
const raise = Math.min(files.want, files.hard) > files.soft ? Math.min(files.want, files.hard) : null
const maxConns = (raise ?? files.soft) - 100

// ---------------------------------------------------------------------------------------
// One run: two processes

const children = new Set()

function startPeer(impl, config) {
  let [command, ...args] = implementations[impl].command(config)
  if (raise !== null) {
    args = ['-c', `ulimit -n ${raise} && exec "$0" "$@"`, command, ...args]
    command = '/bin/sh'
  }
  const child = spawn(command, args, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  const peer = { child, role: config.role, events: [], stderr: '', exit: null, listeners: new Set() }
  const notify = () => {
    for (const listener of peer.listeners) listener()
  }
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      peer.events.push(JSON.parse(line))
    } catch {
      peer.stderr += `(stdout) ${line}\n`
    }
    notify()
  })
  child.stderr.on('data', (data) => (peer.stderr += data))
  child.stdin.on('error', () => {})
  child.on('exit', (code, signal) => {
    children.delete(child)
    peer.exit = { code, signal }
    notify()
  })
  /** The first `event` line of the peer; rejects if it exits first or after `ms`. */
  peer.next = (event, ms) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = peer.events.find((line) => line.event === event)
        if (found) done(() => resolve(found))
        else if (peer.exit) {
          done(() => reject(new Error(`${peer.role} exited (${peer.exit.code ?? peer.exit.signal}) before '${event}'`)))
        }
      }
      const timer = setTimeout(
        () => done(() => reject(new Error(`${peer.role}: no '${event}' within ${ms / 1000} s`))),
        ms,
      )
      const done = (settle) => {
        clearTimeout(timer)
        peer.listeners.delete(check)
        settle()
      }
      peer.listeners.add(check)
      check()
    })
  peer.tell = (word) => child.stdin.write(`${word}\n`)
  /** Waits for the process to exit by itself (it is killed after `ms`). */
  peer.exited = (ms) =>
    new Promise((resolve) => {
      if (peer.exit) return resolve(peer.exit)
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        resolve({ code: null, signal: 'SIGKILL', forced: true })
      }, ms)
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        resolve({ code, signal })
      })
    })
  return peer
}

const cpuSeconds = (cpu) => (cpu.user + cpu.system) / 1e6

let runCounter = 0
let certificatesMade

/** The TLS scenarios' certificates, made once per benchmark run. */
function tlsCertificates() {
  certificatesMade ??= import('./certificates.mjs').then(({ benchmarkCertificates }) => benchmarkCertificates())
  return certificatesMade
}

async function runOnce(scenario, impl) {
  const timeout = scenario.kind === 'backpressure' ? scenario.duration + 90 : quick ? 60 : 120
  const base = {
    scenario: scenario.kind,
    conns: scenario.conns,
    size: scenario.size,
    count: scenario.count,
    duration: scenario.duration,
    rate: scenario.rate,
    timeout: timeout + 30,
    // A unix scenario: a fresh socket path per run, except for the TCP comparison.
    path:
      scenario.transport === 'unix' && impl !== 'wiremesh-tcp'
        ? path.join(os.tmpdir(), `wiremesh-bench-${process.pid}-${runCounter++}.sock`)
        : undefined,
    // A TLS scenario: the run's key, certificate and CA, as PEM (zeromq ignores them).
    tls: scenario.transport === 'tls' ? await tlsCertificates() : undefined,
  }
  const listenerRole = scenario.listener ?? 'recv'
  const peers = []
  try {
    const first = startPeer(impl, { ...base, role: listenerRole, listen: true })
    peers.push(first)
    const { port } = await first.next('listening', 30_000)
    const second = startPeer(impl, { ...base, role: listenerRole === 'recv' ? 'send' : 'recv', port })
    peers.push(second)
    const [sender, receiver] = listenerRole === 'send' ? [first, second] : [second, first]
    await Promise.all([sender.next('ready', 60_000), receiver.next('ready', 60_000)])
    sender.tell('go')
    const doneP = sender.next('done', timeout * 1000)
    doneP.catch(() => {})
    const received = await receiver.next('result', timeout * 1000)
    if (received.stalled) {
      throw new Error(`the receiver stalled: ${received.received} received, ${received.errors} wrong`)
    }
    const done = await doneP
    sender.tell('exit')
    const sent = await sender.next('result', 30_000)
    receiver.tell('exit')
    const exits = await Promise.all([sender.exited(15_000), receiver.exited(15_000)])
    const metrics = measure(scenario, done, received, sent)
    const problems = []
    exits.forEach((exit, i) => {
      if (exit.code !== 0) problems.push(`${i ? 'receiver' : 'sender'} exit ${exit.code ?? exit.signal}`)
    })
    if (metrics.problem) problems.push(metrics.problem)
    return {
      ok: problems.length === 0,
      problem: problems.join('; ') || undefined,
      metrics,
      sender: { ...done, ...sent },
      receiver: received,
    }
  } catch (error) {
    const stderr = peers
      .map((peer) => peer.stderr.trim() && `${peer.role}: ${peer.stderr.trim().split('\n').slice(-3).join(' | ')}`)
      .filter(Boolean)
      .join('; ')
    return { ok: false, problem: `${error.message}${stderr ? ` [${stderr}]` : ''}` }
  } finally {
    for (const peer of peers) if (!peer.exit) peer.child.kill('SIGKILL')
    await Promise.all(peers.map((peer) => peer.exited(5_000)))
  }
}

function measure(scenario, done, received, sent) {
  const cpu = cpuSeconds(sent.cpu) + cpuSeconds(received.cpu)
  if (scenario.kind === 'stream') {
    const seconds = Number(BigInt(received.t1) - BigInt(done.t0)) / 1e9
    const wrong = received.received !== scenario.count || received.errors !== 0
    return {
      seconds,
      messagesPerSecond: scenario.count / seconds,
      megabytesPerSecond: (scenario.count * scenario.size) / seconds / 1e6,
      cpuSeconds: cpu,
      cpuPerMillion: (cpu / scenario.count) * 1e6,
      senderCpu: cpuSeconds(sent.cpu),
      receiverCpu: cpuSeconds(received.cpu),
      senderWaits: done.waits,
      problem: wrong ? `received ${received.received} of ${scenario.count}, ${received.errors} wrong` : undefined,
    }
  }
  if (scenario.kind === 'pingpong' || scenario.kind === 'requests') {
    const seconds = Number(BigInt(done.tEnd) - BigInt(done.t0)) / 1e9
    const wrong = done.received !== scenario.count || done.errors !== 0 || received.errors !== 0
    return {
      seconds,
      roundTripsPerSecond: scenario.count / seconds,
      p50Microseconds: done.p50 / 1e3,
      p99Microseconds: done.p99 / 1e3,
      cpuSeconds: cpu,
      cpuPerMillion: (cpu / scenario.count) * 1e6,
      problem: wrong
        ? `${done.received} replies of ${scenario.count}, ${done.errors + received.errors} wrong`
        : undefined,
    }
  }
  // backpressure
  const seconds = Number(BigInt(received.t1) - BigInt(done.t0)) / 1e9
  const lost = done.sent - received.received
  const problems = []
  if (lost !== 0) problems.push(`${lost} of ${done.sent} lost`)
  if (received.errors !== 0) problems.push(`${received.errors} out of order or wrong`)
  if (received.mismatches !== 0)
    problems.push(`${received.mismatches} connections' counts differ from their end frames`)
  return {
    seconds,
    sent: done.sent,
    received: received.received,
    lost,
    outOfOrder: received.errors,
    mismatches: received.mismatches,
    consumedPerSecond: received.received / seconds,
    senderWaits: done.waits,
    baselineRssMiB: received.baselineRss / 2 ** 20,
    peakRssMiB: received.maxRss / 2 ** 20,
    cpuSeconds: cpu,
    problem: problems.join('; ') || undefined,
  }
}

// ---------------------------------------------------------------------------------------
// Medians, tables, charts

const median = (values) => {
  const sorted = values.filter((value) => typeof value === 'number' && Number.isFinite(value)).sort((a, b) => a - b)
  if (sorted.length === 0) return undefined
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

function medians(records) {
  const ok = records.filter((record) => record.ok)
  const keys = new Set(ok.flatMap((record) => Object.keys(record.metrics)))
  const result = { runs: records.length, ok: ok.length }
  for (const key of keys) {
    const value = median(ok.map((record) => record.metrics[key]))
    if (value !== undefined) result[key] = value
  }
  // backpressure: what happened, even in runs that were not ok (zeromq's behaviour is recorded)
  if (ok.length === 0 && records.some((record) => record.metrics)) {
    for (const key of ['lost', 'sent', 'received', 'peakRssMiB']) {
      const value = median(records.filter((record) => record.metrics).map((record) => record.metrics[key]))
      if (value !== undefined) result[key] = value
    }
  }
  return result
}

function rate(value) {
  if (value === undefined) return '-'
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M`
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)} k`
  return value.toFixed(0)
}
const fixed = (value, digits = 2) => (value === undefined ? '-' : value.toFixed(digits))
const ratio = (value, base) => (value === undefined || base === undefined ? '-' : `${(value / base).toFixed(2)}x`)

function table(headers, rows) {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => String(row[i]).length)))
  const line = (cells) =>
    cells.map((cell, i) => (i < 2 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  ')
  return [line(headers), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n')
}

function report(summary) {
  const out = []
  const streamRows = []
  const pingRows = []
  const requestRows = []
  const pressureRows = []
  for (const scenario of scenarios) {
    const byImpl = summary[scenario.id]
    if (!byImpl) continue
    const net = byImpl.net
    for (const impl of Object.keys(byImpl)) {
      const m = byImpl[impl]
      const runsCell = `${m.ok}/${m.runs}`
      if (scenario.kind === 'stream') {
        streamRows.push([
          scenario.title,
          impl,
          rate(m.messagesPerSecond),
          fixed(m.megabytesPerSecond, 1),
          fixed(m.cpuPerMillion),
          ratio(m.messagesPerSecond, net?.messagesPerSecond),
          ratio(m.cpuPerMillion, net?.cpuPerMillion),
          runsCell,
        ])
      } else if (scenario.kind === 'requests') {
        const one = byImpl.wiremesh
        requestRows.push([
          scenario.title,
          impl,
          rate(m.roundTripsPerSecond),
          fixed(m.p50Microseconds, 1),
          fixed(m.p99Microseconds, 1),
          fixed(m.cpuPerMillion),
          ratio(m.roundTripsPerSecond, one?.roundTripsPerSecond),
          ratio(m.cpuPerMillion, one?.cpuPerMillion),
          ratio(m.roundTripsPerSecond, net?.roundTripsPerSecond),
          ratio(m.cpuPerMillion, net?.cpuPerMillion),
          runsCell,
        ])
      } else if (scenario.kind === 'pingpong') {
        pingRows.push([
          scenario.title,
          impl,
          rate(m.roundTripsPerSecond),
          fixed(m.p50Microseconds, 1),
          fixed(m.p99Microseconds, 1),
          fixed(m.cpuPerMillion),
          ratio(m.roundTripsPerSecond, net?.roundTripsPerSecond),
          runsCell,
        ])
      } else {
        pressureRows.push([
          scenario.title,
          impl,
          m.sent ?? '-',
          m.received ?? '-',
          m.lost ?? '-',
          fixed(m.outOfOrder, 0),
          rate(m.consumedPerSecond),
          fixed(m.baselineRssMiB, 1),
          fixed(m.peakRssMiB, 1),
          fixed(m.senderWaits, 0),
          runsCell,
        ])
      }
    }
  }
  if (streamRows.length) {
    out.push(
      table(['scenario', 'impl', 'msg/s', 'MB/s', 'CPU s/M msg', 'msg/s vs net', 'CPU vs net', 'ok runs'], streamRows),
    )
  }
  if (pingRows.length) {
    out.push(
      table(
        ['scenario', 'impl', 'round trips/s', 'p50 us', 'p99 us', 'CPU s/M rt', 'rt/s vs net', 'ok runs'],
        pingRows,
      ),
    )
  }
  if (requestRows.length) {
    out.push(
      table(
        [
          'scenario',
          'impl',
          'round trips/s',
          'p50 us',
          'p99 us',
          'CPU s/M rt',
          'rt/s vs wiremesh',
          'CPU vs wiremesh',
          'rt/s vs net',
          'CPU vs net',
          'ok runs',
        ],
        requestRows,
      ),
    )
  }
  if (pressureRows.length) {
    out.push(
      table(
        [
          'scenario',
          'impl',
          'sent',
          'received',
          'lost',
          'out of order',
          'consumed/s',
          'RSS ready MiB',
          'peak RSS MiB',
          'sender waits',
          'ok runs',
        ],
        pressureRows,
      ),
    )
  }
  return out.join('\n\n')
}

const COLORS = { wiremesh: '#2563eb', 'wiremesh-50': '#7c3aed', net: '#6b7280', zeromq: '#ea580c', limit: '#16a34a' }
const escape = (text) => String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/**
 * A horizontal bar chart of ratios to `net` on a log2 axis: every group a scenario, every
 * bar an implementation, drawn from the 1x line (net) to its ratio.
 */
function chart({ title, subtitle, groups }) {
  const impls = [...new Set(groups.flatMap((group) => group.bars.map((bar) => bar.impl)))]
  const ratios = groups.flatMap((group) => group.bars.map((bar) => bar.ratio)).filter((r) => r > 0)
  const low = Math.min(-1, Math.floor(Math.log2(Math.min(...ratios, 1)) - 0.5)) // room for a label
  const high = Math.max(1, Math.ceil(Math.log2(Math.max(...ratios, 1))))
  const longest = Math.max(
    ...groups.map((group) => Math.max(group.label.length * 6.6, (group.base ?? '').length * 5.6)),
  )
  const left = Math.ceil(Math.max(150, longest + 24))
  const plotWidth = 560
  const barHeight = 16
  const groupGap = 14
  const top = 104
  const x = (r) => left + ((Math.log2(r) - low) / (high - low)) * plotWidth
  let y = top
  const body = []
  for (const group of groups) {
    const height = Math.max(group.bars.length * barHeight, 30)
    const middle = y + height / 2
    body.push(
      `<text x="${left - 10}" y="${middle - 1}" text-anchor="end" font-size="12" fill="#111">${escape(group.label)}</text>`,
      `<text x="${left - 10}" y="${middle + 12}" text-anchor="end" font-size="10" fill="#6b7280">${escape(group.base ?? '')}</text>`,
    )
    let barY = y + (height - group.bars.length * barHeight) / 2
    for (const bar of group.bars) {
      const x0 = x(1)
      if (bar.ratio > 0) {
        const x1 = x(bar.ratio)
        body.push(
          `<rect x="${Math.min(x0, x1).toFixed(1)}" y="${barY + 2}" width="${Math.max(1, Math.abs(x1 - x0)).toFixed(1)}" height="${barHeight - 4}" fill="${COLORS[bar.impl] ?? '#999'}"><title>${escape(`${group.label}, ${bar.impl}: ${bar.ratio.toFixed(2)}x net (${bar.detail})`)}</title></rect>`,
        )
        const labelX = bar.ratio >= 1 ? x1 + 4 : x1 - 4
        body.push(
          `<text x="${labelX.toFixed(1)}" y="${barY + barHeight - 4}" font-size="10" fill="#333" text-anchor="${bar.ratio >= 1 ? 'start' : 'end'}">${bar.ratio.toFixed(2)}x</text>`,
        )
      } else {
        body.push(
          `<text x="${x0 + 4}" y="${barY + barHeight - 4}" font-size="10" fill="#999">${escape(`${bar.impl}: ${bar.detail}`)}</text>`,
        )
      }
      barY += barHeight
    }
    y += height + groupGap
  }
  const bottom = y
  const grid = []
  for (let p = low; p <= high; p++) {
    const gx = x(2 ** p).toFixed(1)
    const label = p >= 0 ? `${2 ** p}x` : `1/${2 ** -p}x`
    grid.push(
      `<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${bottom - groupGap + 4}" stroke="${p === 0 ? '#111' : '#ddd'}" stroke-width="${p === 0 ? 1.5 : 1}"/>`,
      `<text x="${gx}" y="${bottom + 6}" font-size="10" text-anchor="middle" fill="#555">${label}</text>`,
    )
  }
  const legend = impls.map(
    (impl, i) =>
      `<rect x="${left + i * 110}" y="70" width="12" height="12" fill="${COLORS[impl] ?? '#999'}"/><text x="${left + i * 110 + 17}" y="80" font-size="12" fill="#111">${impl}</text>`,
  )
  const width = left + plotWidth + 70
  const height = bottom + 40
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="#fff"/>
<text x="16" y="24" font-size="15" font-weight="bold" fill="#111">${escape(title)}</text>
${subtitle.map((line, i) => `<text x="16" y="${43 + i * 15}" font-size="11" fill="#555">${escape(line)}</text>`).join('\n')}
${legend.join('\n')}
<text x="${x(1) + 4}" y="${top - 10}" font-size="10" fill="#111">net = 1x</text>
${grid.join('\n')}
${body.join('\n')}
</svg>
`
}

function charts(summary, machine, rounds = runs) {
  const others = Object.keys(implementations).filter((impl) => impl !== 'net')
  const groupsFor = (pick) =>
    scenarios
      .map((scenario) => {
        const byImpl = summary[scenario.id]
        const picked = byImpl && pick(scenario)
        if (!picked) return null
        const [metric, format] = picked
        const base = byImpl.net?.[metric]
        const bars = others
          .filter((impl) => byImpl[impl])
          .map((impl) => {
            const value = byImpl[impl][metric]
            const ok = value !== undefined && base !== undefined && byImpl[impl].ok > 0
            return { impl, ratio: ok ? value / base : 0, detail: ok ? format(value) : 'no result' }
          })
        return bars.length
          ? { label: scenario.title, base: base === undefined ? 'net: no result' : `net: ${format(base)}`, bars }
          : null
      })
      .filter(Boolean)
  const where = `${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.date}; medians of ${rounds} run(s)${quick ? ' (--quick)' : ''}; benchmark/README.md defines the scenarios`
  const throughput = chart({
    title: 'Throughput relative to a hand-written net peer (higher is better)',
    subtitle: [
      'messages/s delivered to JavaScript (ping-pong, many meshes: round trips/s); bars from net (1x) to each ratio, log scale',
      where,
    ],
    groups: groupsFor((scenario) => {
      if (scenario.kind === 'stream') return ['messagesPerSecond', (v) => `${rate(v)} msg/s`]
      if (scenario.kind === 'pingpong' || scenario.kind === 'requests') {
        return ['roundTripsPerSecond', (v) => `${rate(v)} rt/s`]
      }
      return null
    }),
  })
  const cost = chart({
    title: 'Cost relative to a hand-written net peer (lower is better)',
    subtitle: [
      'CPU seconds per million messages (sender + receiver); ping-pong p99 latency; backpressure receiver peak RSS; log scale',
      where,
    ],
    groups: [
      ...groupsFor((scenario) =>
        scenario.kind !== 'backpressure' ? ['cpuPerMillion', (v) => `${v.toFixed(2)} CPU s/M`] : null,
      ).map((group) => ({ ...group, label: `${group.label}: CPU` })),
      ...groupsFor((scenario) =>
        scenario.kind === 'pingpong' ? ['p99Microseconds', (v) => `${v.toFixed(1)} us`] : null,
      ).map((group) => ({ ...group, label: `${group.label}: p99` })),
      ...groupsFor((scenario) =>
        scenario.kind === 'backpressure' ? ['peakRssMiB', (v) => `${v.toFixed(1)} MiB`] : null,
      ).map((group) => ({ ...group, label: `${group.label}: peak RSS` })),
    ],
  })
  return { throughput, cost }
}

/** Writes JSON as the project's prettier would (CI checks it), if prettier is installed. */
async function writeJson(file, text) {
  try {
    const prettier = await import('prettier')
    const options = (await prettier.resolveConfig(file)) ?? {}
    text = await prettier.format(text, { ...options, filepath: file })
  } catch {}
  fs.writeFileSync(file, text)
}

function machineInfo() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  const model = cpuinfo.match(/model name\s*:\s*(.+)/)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown'
  let commit
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, stdio: 'pipe' }).toString().trim()
  } catch {}
  let zeromq
  try {
    zeromq = JSON.parse(fs.readFileSync(path.join(root, 'node_modules', 'zeromq', 'package.json'), 'utf8')).version
  } catch {}
  return {
    cpu: model,
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    zeromq,
    wiremeshCommit: commit,
    openFiles: { soft: files.soft, hard: files.hard, raisedTo: raise },
    date: new Date().toISOString().slice(0, 10),
  }
}

// ---------------------------------------------------------------------------------------
// Main

process.on('SIGINT', () => {
  for (const child of children) child.kill('SIGKILL')
  process.exit(130)
})

if (argv.includes('--replot')) {
  // Tables and charts again from the saved results, without running anything.
  const saved = JSON.parse(fs.readFileSync(path.join(outDir, quick ? 'quick.json' : 'latest.json'), 'utf8'))
  console.log(report(saved.medians))
  const { throughput, cost } = charts(saved.medians, saved.machine, saved.runsPerScenario)
  fs.writeFileSync(path.join(outDir, 'throughput.svg'), throughput)
  fs.writeFileSync(path.join(outDir, 'cost.svg'), cost)
  process.exit(0)
}

checkAvailable()
const active = IMPLS.filter((impl) => !skipped[impl])
for (const [impl, reason] of Object.entries(skipped)) console.log(`skipping ${impl}: ${reason}`)
const machine = machineInfo()
console.log(
  `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.kernel}, Node ${machine.node}` +
    `${machine.zeromq ? `, zeromq ${machine.zeromq}` : ''}; open files ${files.soft}` +
    `${raise !== null ? ` (raised to ${raise} in the peers' shells)` : ''}`,
)
console.log(`${runs} run(s) per scenario and implementation, interleaved${quick ? ' (--quick)' : ''}\n`)

const allRuns = []
const summary = {}
for (const scenario of scenarios) {
  if (onlyScenarios && !onlyScenarios.includes(scenario.id)) continue
  const impls = active.filter(
    (impl) =>
      (!scenario.impls || scenario.impls.includes(impl)) &&
      (!implementations[impl].scenarios || implementations[impl].scenarios.includes(scenario.id)),
  )
  if (scenario.conns > maxConns) {
    console.log(
      `skipping ${scenario.id}: ${scenario.conns} connections need more open files than ${files.hard} (ulimit -Hn)`,
    )
    continue
  }
  const records = Object.fromEntries(impls.map((impl) => [impl, []]))
  for (let round = 0; round < runs; round++) {
    const order = impls.map((_, i) => impls[(i + round) % impls.length])
    for (const impl of order) {
      const t = Date.now()
      const record = await runOnce(scenario, impl)
      const entry = { scenario: scenario.id, impl, round: round + 1, wallSeconds: (Date.now() - t) / 1000, ...record }
      records[impl].push(entry)
      allRuns.push(entry)
      const m = record.metrics ?? {}
      const headline =
        m.messagesPerSecond !== undefined
          ? `${rate(m.messagesPerSecond)} msg/s, ${fixed(m.cpuPerMillion)} CPU s/M`
          : m.roundTripsPerSecond !== undefined
            ? `${rate(m.roundTripsPerSecond)} rt/s, p99 ${fixed(m.p99Microseconds, 1)} us` +
              (scenario.kind === 'requests' ? `, ${fixed(m.cpuPerMillion)} CPU s/M` : '')
            : m.sent !== undefined
              ? `${m.sent} sent, ${m.lost} lost, peak RSS ${fixed(m.peakRssMiB, 1)} MiB`
              : ''
      console.log(
        `${scenario.id.padEnd(17)} ${String(round + 1).padStart(2)}/${runs} ${impl.padEnd(11)} ${record.ok ? 'ok ' : 'FAIL'} ${headline}${record.problem ? ` (${record.problem})` : ''}`,
      )
    }
  }
  summary[scenario.id] = Object.fromEntries(impls.map((impl) => [impl, medians(records[impl])]))
}

const wallSeconds = (Date.now() - started) / 1000
console.log(`\nMedians (${runs} run(s) each); wall time ${wallSeconds.toFixed(0)} s\n`)
console.log(report(summary))

fs.mkdirSync(outDir, { recursive: true })
const jsonFile = path.join(outDir, quick ? 'quick.json' : 'latest.json')
await writeJson(
  jsonFile,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine,
      quick,
      runsPerScenario: runs,
      wallSeconds,
      skipped,
      scenarios: scenarios.filter((scenario) => summary[scenario.id]),
      medians: summary,
      runs: allRuns,
    },
    null,
    2,
  ) + '\n',
)
const { throughput, cost } = charts(summary, machine)
fs.writeFileSync(path.join(outDir, 'throughput.svg'), throughput)
fs.writeFileSync(path.join(outDir, 'cost.svg'), cost)
console.log(
  `\nwrote ${path.relative(root, jsonFile)}, ${path.relative(root, path.join(outDir, 'throughput.svg'))}, ${path.relative(root, path.join(outDir, 'cost.svg'))}`,
)
const failed = allRuns.filter((run) => !run.ok)
if (failed.length) console.log(`${failed.length} run(s) failed or lost messages: see the lines marked FAIL above`)
