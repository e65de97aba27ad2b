// Runs the runtime smoke test (smoke.cjs) under Node, Bun and Deno, each with a timeout, and
// fails if any of them fails: a non-zero exit code, a signal, a timeout, a step that did not
// say ok, or (for the load-and-exit run) anything on stderr.
//
//   node __test__/runtimes/run.mjs              all three
//   node __test__/runtimes/run.mjs deno bun     only those
//
// Bun and Deno are the project's devDependencies `bun` and `deno` (exact versions). npm may
// not run their install scripts, so their binaries are taken from the platform packages
// that npm installs as their optional dependencies, `@oven/bun-linux-x64` (bin/bun) and
// `@deno/linux-x64-glibc` (deno); where the install scripts did run, Bun's has moved its
// binary into `bun/bin/bun.exe` and Deno's has linked its binary to `deno/deno`, and those
// are taken instead. Only Linux x64 (glibc) is covered: elsewhere Bun and Deno are skipped,
// with a message saying so, and only Node runs.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..')
const smoke = path.join(here, 'smoke.cjs')
const requireFromRoot = createRequire(path.join(root, 'package.json'))

/** The full smoke run's steps, each of which must print `<runtime> <step>: ok`. */
const STEPS = ['gc', 'readme', 'stream', 'ping-pong', 'disconnect', 'worker', 'worker-terminate', 'clean exit']
/** Steps of the load-and-exit run (the Deno exit crash pin). */
const LOAD_EXIT_STEPS = ['load-exit', 'clean exit']
/** Per runtime: the full smoke run, then the load-and-exit run. */
const SMOKE_TIMEOUT_MS = 90_000
const LOAD_EXIT_TIMEOUT_MS = 20_000

const platform = `${process.platform}-${process.arch}`

/** True on Linux with glibc (Deno's npm package has no musl build). */
function isGlibc() {
  const report = process.report?.getReport?.()
  return Boolean(report && report.header && report.header.glibcVersionRuntime)
}

/** True if `file` is an executable ELF file (not the placeholder an install script replaces). */
function isElfExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    const fd = fs.openSync(file, 'r')
    try {
      const magic = Buffer.alloc(4)
      fs.readSync(fd, magic, 0, 4, 0)
      return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return false
  }
}

/** The directory of package `name`, resolved from `from` (a file path), or null. */
function packageDir(name, from) {
  try {
    return path.dirname(createRequire(from).resolve(`${name}/package.json`))
  } catch {
    return null
  }
}

/**
 * A binary from npm package `wrapper` (a devDependency) and its platform package
 * `platformPackage` (its optional dependency): `platformPath` in the platform package, or
 * `wrapperPath` in the wrapper if its install script moved or linked the binary there.
 */
function findBinary(wrapper, platformPackage, platformPath, wrapperPath) {
  const wrapperDir = packageDir(wrapper, path.join(root, 'package.json'))
  if (wrapperDir === null) {
    return { error: `npm package ${wrapper} is not installed (run npm install)` }
  }
  const platformDir = packageDir(platformPackage, path.join(wrapperDir, 'package.json'))
  const candidates = []
  if (platformDir !== null) candidates.push(path.join(platformDir, platformPath))
  candidates.push(path.join(wrapperDir, wrapperPath))
  for (const candidate of candidates) if (isElfExecutable(candidate)) return { file: candidate }
  return {
    error: `no ${wrapper} binary: none of ${candidates.map((file) => path.relative(root, file)).join(', ')} is an executable (is ${platformPackage} installed?)`,
  }
}

/** How to run a script under each runtime, or why it is skipped or cannot run. */
function runtimes() {
  const supported = process.platform === 'linux' && process.arch === 'x64' && isGlibc()
  const skip = `skipped: Bun and Deno are run from their npm packages on Linux x64 with glibc only (this is ${platform}${process.platform === 'linux' && !isGlibc() ? ' without glibc' : ''})`
  const list = [{ name: 'node', command: process.execPath, args: ['--expose-gc'] }]
  if (!supported) {
    list.push({ name: 'bun', skip }, { name: 'deno', skip })
    return list
  }
  const bun = findBinary('bun', '@oven/bun-linux-x64', 'bin/bun', 'bin/bun.exe')
  list.push(bun.error ? { name: 'bun', error: bun.error } : { name: 'bun', command: bun.file, args: [] })
  const deno = findBinary('deno', '@deno/linux-x64-glibc', 'deno', 'deno')
  list.push(
    deno.error
      ? { name: 'deno', error: deno.error }
      : {
          name: 'deno',
          command: deno.file,
          // -A: the addon needs ffi, and the smoke test the network, files, env and sys;
          // the V8 flag exposes gc() for the gc step.
          args: ['run', '--allow-all', '--v8-flags=--expose-gc'],
          env: { DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
        },
  )
  return list
}

/** Runs `command args` from the package root; kills it after `timeoutMs`. */
function run(command, args, timeoutMs, env) {
  return new Promise((resolve) => {
    const started = Date.now()
    const child = spawn(command, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk))
    const guard = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (error) => {
      clearTimeout(guard)
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}${error.stack}\n`, timedOut, ms: 0 })
    })
    child.on('close', (code, signal) => {
      clearTimeout(guard)
      resolve({ code, signal, stdout, stderr, timedOut, ms: Date.now() - started })
    })
  })
}

/** What is wrong with a run whose output must say ok for every one of `steps` (empty: nothing). */
function problems(result, steps, { quietStderr }) {
  const found = []
  if (result.timedOut) found.push('timed out: killed')
  else if (result.signal !== null) found.push(`killed by ${result.signal}`)
  else if (result.code !== 0) found.push(`exit code ${result.code}`)
  const lines = result.stdout.split('\n')
  for (const step of steps) {
    if (!lines.some((line) => new RegExp(`^\\S+ \\S+ ${step}: ok\\b`).test(line))) found.push(`no ok from step ${step}`)
  }
  if (quietStderr && result.stderr.trim() !== '') found.push('wrote to stderr')
  return found
}

function indent(text) {
  return text
    .trimEnd()
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n')
}

const only = process.argv.slice(2)
const unknown = only.filter((name) => !['node', 'bun', 'deno'].includes(name))
if (unknown.length > 0) {
  console.error(`unknown runtime ${unknown.join(', ')}: use node, bun or deno`)
  process.exit(2)
}

let passed = 0
let failed = 0
let skipped = 0
for (const runtime of runtimes()) {
  if (only.length > 0 && !only.includes(runtime.name)) continue
  if (runtime.skip) {
    console.log(`== ${runtime.name}: ${runtime.skip}`)
    skipped++
    continue
  }
  if (runtime.error) {
    console.log(`== ${runtime.name}: FAIL: ${runtime.error}`)
    failed++
    continue
  }
  const relative = path.relative(root, runtime.command)
  const shown = relative.startsWith('..') ? runtime.command : relative
  console.log(`== ${runtime.name}: ${[shown, ...runtime.args].join(' ')}`)
  const runs = [
    { what: 'smoke', args: [smoke], steps: STEPS, timeoutMs: SMOKE_TIMEOUT_MS, quietStderr: false },
    // The pin of Deno's exit crash: load, make a mesh, exit: code 0 and nothing on stderr.
    {
      what: 'load-exit',
      args: [smoke, 'load-exit'],
      steps: LOAD_EXIT_STEPS,
      timeoutMs: LOAD_EXIT_TIMEOUT_MS,
      quietStderr: true,
    },
  ]
  for (const { what, args, steps, timeoutMs, quietStderr } of runs) {
    const result = await run(runtime.command, [...runtime.args, ...args], timeoutMs, runtime.env)
    if (result.stdout.trim() !== '') console.log(indent(result.stdout))
    const found = problems(result, steps, { quietStderr })
    if (found.length === 0) {
      passed++
      console.log(`  ${runtime.name} ${what}: passed in ${result.ms} ms`)
    } else {
      failed++
      if (result.stderr.trim() !== '') console.log(`  stderr:\n${indent(result.stderr)}`)
      console.log(`  ${runtime.name} ${what}: FAIL (${found.join('; ')})`)
    }
  }
}

console.log(`runtimes: ${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
process.exitCode = failed > 0 ? 1 : 0
