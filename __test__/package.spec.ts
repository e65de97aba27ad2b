// The package as a user gets it: `npm pack` the main package and this platform's binary
// package, install both tarballs into an empty project without asking the registry for
// anything, and run the README example there with no Rust toolchain on PATH.
//
// Needs the build outputs in the repo root (`npm run build`): index.js, binding.js and
// `wiremesh.<platform>.node`. On Linux x64 glibc the binary must be there; on other
// platforms the test runs when that platform's binary was built, and skips otherwise.
// Windows skips: the PATH surgery and npm's .cmd shim need their own handling there.

import test from 'ava'
import { spawn } from 'node:child_process'
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, resolve } from 'node:path'

const ROOT = resolve(typeof __dirname === 'string' ? join(__dirname, '..') : process.cwd())

// The README example, verbatim.
const README_EXAMPLE = `const { Mesh, Envelope, TcpTransport } = require('wiremesh')
async function main() {
  const transport = new TcpTransport()
  const listener = await transport.listen('127.0.0.1:0')
  const mesh = new Mesh(1, 1)
  const client = mesh.add(await transport.connect(listener.endpoint))
  const server = mesh.add(await listener.accept())
  mesh.send(new Envelope(client, Buffer.from('hello')))
  const envelope = await mesh.recv()
  console.log(\`connection \${envelope.id} received \${envelope.payload.toString()} from connection \${client}\`)
  await mesh.remove(client)
  await mesh.remove(server)
  mesh.shutdown()
  listener.close()
}
main()
`

/** The napi-rs platform name of this process: `linux-x64-gnu`, `darwin-arm64`, ... */
function platformName(): string {
  const { platform, arch } = process
  if (platform === 'linux') {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return `linux-${arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  error?: NodeJS.ErrnoException
}

/** Runs a command without blocking the worker; never rejects. */
function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    // Our own timer, not spawn's `timeout` option: that one is only cleared on 'exit',
    // which a command that was never found does not emit, and would keep the worker alive.
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    let error: NodeJS.ErrnoException | undefined
    child.on('error', (e: NodeJS.ErrnoException) => {
      error = e
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      done({ code, signal, stdout, stderr, error })
    })
  })
}

function describe(what: string, r: Run): string {
  return `${what}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.error ? ` (${r.error.message})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`
}

/**
 * The environment of a machine without Rust: every PATH entry naming cargo or rustup is
 * gone, and so are the variables that point at a toolchain or at a prebuilt binary.
 * The directory of this node stays first, so `npm` and `node` are the ones under test.
 */
function rustlessEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(CARGO|RUSTUP|RUSTC|RUSTFLAGS|RUST_)/i.test(key)) continue
    if (key === 'NAPI_RS_NATIVE_LIBRARY_PATH' || key === 'NODE_OPTIONS' || key === 'NODE_PATH') continue
    if (key.startsWith('npm_')) continue // the settings of the npm that started ava
    env[key] = value
  }
  const path = (process.env.PATH ?? '').split(delimiter).filter((entry) => entry !== '' && !/cargo|rustup/i.test(entry))
  env.PATH = [dirname(process.execPath), ...path].join(delimiter)
  return env
}

/** `npm pack` of `dir` into `destination`; the tarball's path and its file list. */
async function pack(dir: string, destination: string): Promise<{ tarball: string; files: string[] }> {
  const r = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', destination], { cwd: dir })
  if (r.code !== 0) throw new Error(describe(`npm pack in ${dir}`, r))
  // npm prints the JSON report on stdout; anything else (warnings) goes to stderr.
  const report = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Array<{
    filename: string
    files: Array<{ path: string }>
  }>
  const [{ filename, files }] = report
  // npm 9+ reports the file name as it wrote it (scoped names become `scope-name-x.tgz`).
  return { tarball: join(destination, filename.replace(/^@/, '').replace(/\//, '-')), files: files.map((f) => f.path) }
}

const name = platformName()
const binaryFile = `wiremesh.${name}.node`
const builtBinary = join(ROOT, binaryFile)
const TITLE = 'the packed tarballs install offline and run the README example without Rust'

// On Linux x64 glibc the test always runs (and fails without the binary); elsewhere it is
// skipped, with the reason in its title, when it cannot run.
const skipReason =
  process.platform === 'win32'
    ? `skipped on Windows (${name}): this test checks the Linux and macOS packages`
    : name !== 'linux-x64-gnu' && !existsSync(builtBinary)
      ? `skipped: no ${binaryFile} in the repo root, and this is ${name}, not linux-x64-gnu`
      : undefined

if (skipReason) test.skip(`${TITLE} (${skipReason})`, () => {})
else
  test(TITLE, async (t) => {
    t.timeout(180_000)

    if (!existsSync(builtBinary)) {
      t.fail(
        `${binaryFile} is missing from the repo root: run \`npm run build\` first (it is required on Linux x64 glibc)`,
      )
      return
    }
    for (const file of ['index.js', 'binding.js']) {
      t.true(existsSync(join(ROOT, file)), `${file} is missing from the repo root: run \`npm run build\` first`)
    }
    const platformDir = join(ROOT, 'npm', name)
    t.true(
      existsSync(join(platformDir, 'package.json')),
      `npm/${name}/package.json is missing (napi create-npm-dirs makes it)`,
    )

    const work = mkdtempSync(join(tmpdir(), 'wiremesh-package-'))
    t.teardown(() => rmSync(work, { recursive: true, force: true }))
    const tarballs = join(work, 'tarballs')
    mkdirSync(tarballs)

    // The main package, packed straight from the repo root: `files` decides what goes in.
    const rootManifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    const platformPackage = `wiremesh-${name}`
    t.is(
      rootManifest.optionalDependencies?.[platformPackage],
      rootManifest.version,
      `package.json must list ${platformPackage}@${rootManifest.version} in optionalDependencies`,
    )
    const main = await pack(ROOT, tarballs)
    for (const file of ['package.json', 'index.js', 'index.d.ts', 'binding.js', 'binding.d.ts']) {
      t.true(main.files.includes(file), `the main tarball has ${file} (it has: ${main.files.join(', ')})`)
    }
    t.deepEqual(
      main.files.filter((f) => f.endsWith('.node')),
      [],
      'the main tarball carries no native binary: that is the platform packages’ job',
    )

    // The platform package, from a copy of npm/<name> with the built binary beside it.
    const platformCopy = join(work, name)
    cpSync(platformDir, platformCopy, { recursive: true })
    copyFileSync(builtBinary, join(platformCopy, binaryFile))
    const platformManifest = JSON.parse(readFileSync(join(platformCopy, 'package.json'), 'utf8'))
    t.is(platformManifest.name, platformPackage)
    t.is(platformManifest.version, rootManifest.version, `npm/${name} has the main package's version`)
    t.is(platformManifest.main, binaryFile)
    const platform = await pack(platformCopy, tarballs)
    t.true(
      platform.files.includes(binaryFile),
      `the ${platformPackage} tarball has ${binaryFile} (it has: ${platform.files.join(', ')})`,
    )

    // An empty project. Both tarballs go in with one command, so the main package's
    // optionalDependency on wiremesh-<name> is met by the local tarball; `--offline` with an
    // empty cache keeps npm from asking the registry for the other, unpublished platform
    // packages (a missing optional dependency is skipped, not an error). No Rust on PATH.
    const project = join(work, 'project')
    mkdirSync(project)
    const env = rustlessEnv()
    const init = await run('npm', ['init', '-y'], { cwd: project, env })
    t.is(init.code, 0, describe('npm init -y', init))
    const install = await run(
      'npm',
      [
        'install',
        '--offline',
        '--no-audit',
        '--no-fund',
        '--no-update-notifier',
        '--cache',
        join(work, 'npm-cache'),
        main.tarball,
        platform.tarball,
      ],
      { cwd: project, env, timeoutMs: 150_000 },
    )
    t.is(install.code, 0, describe('npm install of the two tarballs', install))
    if (install.code !== 0) return

    const installed = join(project, 'node_modules')
    t.true(existsSync(join(installed, 'wiremesh', 'index.js')), 'wiremesh is installed')
    t.true(existsSync(join(installed, platformPackage, binaryFile)), `${platformPackage} is installed with its binary`)
    t.deepEqual(
      readdirSync(join(installed, 'wiremesh')).filter((f) => f.endsWith('.node')),
      [],
      'the binary comes from the platform package, not from the main one',
    )

    // No Rust here: the example must run from the prebuilt binary alone.
    const cargo = await run('cargo', ['--version'], { cwd: project, env })
    t.is(
      cargo.error?.code,
      'ENOENT',
      `cargo must not be found on the test PATH (${env.PATH}): ${describe('cargo --version', cargo)}`,
    )

    writeFileSync(join(project, 'example.cjs'), README_EXAMPLE)
    const example = await run(process.execPath, ['example.cjs'], { cwd: project, env, timeoutMs: 60_000 })
    t.is(example.code, 0, describe('node example.cjs', example))
    const line = /^connection (\S+) received hello from connection (\S+)$/m.exec(example.stdout)
    t.truthy(line, `the README example prints its line: ${describe('node example.cjs', example)}`)
    if (line) t.not(line[1], line[2], 'the envelope arrives on the server end, not on the client that sent it')
    t.log(example.stdout.trim())

    // ESM users get the same names through Node's CommonJS named-export detection.
    const esm = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import { Mesh, Envelope, TcpTransport } from 'wiremesh'; console.log([Mesh, Envelope, TcpTransport].map((f) => typeof f).join(' '))",
      ],
      { cwd: project, env, timeoutMs: 60_000 },
    )
    t.is(esm.code, 0, describe('import { Mesh, Envelope, TcpTransport } from "wiremesh"', esm))
    t.is(esm.stdout.trim(), 'function function function', describe('ESM named imports', esm))
  })
