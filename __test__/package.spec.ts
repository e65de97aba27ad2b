// The package as a user gets it: `npm run pack` makes the main package's tarball and this
// platform's binary package's, both are installed into an empty project without asking the
// registry for anything, and the README example and every example in `examples/` run there
// with no Rust toolchain on PATH. The main tarball installed alone must fail to load with a
// message that names the missing platform package.
//
// Needs the build outputs in the repo root (`npm run build`): index.js, binding.js and
// `wiremesh.<platform>.node`. On Linux x64 glibc the binary must be there; on other
// platforms the test runs when that platform's binary was built, and skips otherwise.
// Windows skips: the PATH surgery and npm's .cmd shim need their own handling there.

import test from 'ava'
import { spawn } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
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

const platformPackage = `wiremesh-${name}`

interface Tarballs {
  main: string
  platform: string
}

const work = mkdtempSync(join(tmpdir(), 'wiremesh-package-'))
test.after.always(() => rmSync(work, { recursive: true, force: true }))

let packing: Promise<Tarballs> | undefined
/** `npm run pack`'s tarballs (`scripts/pack.mjs`), made once for this file into `work`. */
function tarballs(): Promise<Tarballs> {
  packing ??= (async () => {
    if (!existsSync(builtBinary)) {
      throw new Error(`${binaryFile} is missing from the repo root: run \`npm run build\` first`)
    }
    const destination = join(work, 'tarballs')
    const r = await run(process.execPath, [join(ROOT, 'scripts', 'pack.mjs'), destination], { cwd: ROOT })
    if (r.code !== 0) throw new Error(describe('scripts/pack.mjs', r))
    const printed = r.stdout
      .split('\n')
      .map((line) => /KiB {2}(.+\.tgz)$/.exec(line)?.[1])
      .filter((path): path is string => path !== undefined)
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string
    const main = join(destination, `wiremesh-${version}.tgz`)
    const platform = join(destination, `${platformPackage}-${version}.tgz`)
    for (const tarball of [main, platform]) {
      if (!printed.includes(tarball))
        throw new Error(`scripts/pack.mjs did not print ${tarball}: ${describe('pack', r)}`)
    }
    return { main, platform }
  })()
  return packing
}

/** The files in a tarball, without npm's `package/` prefix. */
async function tarballFiles(tarball: string): Promise<string[]> {
  const r = await run('tar', ['-tzf', tarball], { cwd: work })
  if (r.code !== 0) throw new Error(describe(`tar -tzf ${tarball}`, r))
  return r.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.replace(/^package\//, ''))
}

/**
 * A new empty project with `tarballs` installed, offline and with no Rust on PATH. Installed
 * together, the main package's optionalDependency on wiremesh-<name> is met by the local
 * tarball; `--offline` with an empty cache keeps npm from asking the registry for the
 * other, unpublished platform packages (a missing optional dependency is skipped).
 */
async function installProject(dir: string, packages: string[], flags: string[] = []): Promise<Run> {
  const project = join(work, dir)
  mkdirSync(project)
  const env = rustlessEnv()
  const init = await run('npm', ['init', '-y'], { cwd: project, env })
  if (init.code !== 0) return init
  return run(
    'npm',
    [
      'install',
      '--offline',
      '--no-audit',
      '--no-fund',
      '--no-update-notifier',
      '--cache',
      join(work, `npm-cache-${dir}`),
      ...flags,
      ...packages,
    ],
    { cwd: project, env, timeoutMs: 150_000 },
  )
}

let installing: Promise<string> | undefined
/** The project with both tarballs installed, made once for the tests that run code in it. */
function project(): Promise<string> {
  installing ??= (async () => {
    const { main, platform } = await tarballs()
    const install = await installProject('project', [main, platform])
    if (install.code !== 0) throw new Error(describe('npm install of the two tarballs', install))
    return join(work, 'project')
  })()
  return installing
}

if (skipReason) test.skip(`${TITLE} (${skipReason})`, () => {})
else {
  test.serial('npm run pack puts the binary in the platform tarball and none in the main one', async (t) => {
    t.timeout(180_000)
    const { main, platform } = await tarballs()
    const mainFiles = await tarballFiles(main)
    for (const file of ['package.json', 'index.js', 'index.d.ts', 'binding.js', 'binding.d.ts', 'lib/binary.js']) {
      t.true(mainFiles.includes(file), `the main tarball has ${file} (it has: ${mainFiles.join(', ')})`)
    }
    t.deepEqual(
      mainFiles.filter((f) => f.endsWith('.node')),
      [],
      'the main tarball carries no native binary: that is the platform packages’ job',
    )
    const platformFiles = await tarballFiles(platform)
    t.true(
      platformFiles.includes(binaryFile),
      `the ${platformPackage} tarball has ${binaryFile} (it has: ${platformFiles.join(', ')})`,
    )
    const rootManifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    t.is(
      rootManifest.optionalDependencies?.[platformPackage],
      rootManifest.version,
      `package.json must list ${platformPackage}@${rootManifest.version} in optionalDependencies`,
    )
  })

  test.serial(TITLE, async (t) => {
    t.timeout(180_000)
    const dir = await project()
    const installed = join(dir, 'node_modules')
    t.true(existsSync(join(installed, 'wiremesh', 'index.js')), 'wiremesh is installed')
    t.true(existsSync(join(installed, platformPackage, binaryFile)), `${platformPackage} is installed with its binary`)
    t.deepEqual(
      readdirSync(join(installed, 'wiremesh')).filter((f) => f.endsWith('.node')),
      [],
      'the binary comes from the platform package, not from the main one',
    )

    // No Rust here: the example must run from the prebuilt binary alone.
    const env = rustlessEnv()
    const cargo = await run('cargo', ['--version'], { cwd: dir, env })
    t.is(
      cargo.error?.code,
      'ENOENT',
      `cargo must not be found on the test PATH (${env.PATH}): ${describe('cargo --version', cargo)}`,
    )

    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    t.true(readme.includes('```js\n' + README_EXAMPLE + '```'), 'README.md shows this example verbatim')
    writeFileSync(join(dir, 'example.cjs'), README_EXAMPLE)
    const example = await run(process.execPath, ['example.cjs'], { cwd: dir, env, timeoutMs: 60_000 })
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
      { cwd: dir, env, timeoutMs: 60_000 },
    )
    t.is(esm.code, 0, describe('import { Mesh, Envelope, TcpTransport } from "wiremesh"', esm))
    t.is(esm.stdout.trim(), 'function function function', describe('ESM named imports', esm))
  })

  test.serial(
    'without its platform package, wiremesh fails to load naming the package and how to get it',
    async (t) => {
      t.timeout(180_000)
      const { main } = await tarballs()
      const install = await installProject('no-binary', [main], ['--omit=optional'])
      t.is(install.code, 0, describe('npm install --omit=optional of the main tarball', install))
      const dir = join(work, 'no-binary')
      t.false(existsSync(join(dir, 'node_modules', platformPackage)), `${platformPackage} is not installed`)

      const load = await run(
        process.execPath,
        [
          '-e',
          "try { require('wiremesh') } catch (e) { console.log(JSON.stringify({ message: e.message, cause: e.cause?.message })); process.exit(3) }",
        ],
        { cwd: dir, env: rustlessEnv(), timeoutMs: 60_000 },
      )
      t.is(load.code, 3, describe('require("wiremesh") must throw', load))
      const { message, cause } = JSON.parse(load.stdout) as { message: string; cause?: string }
      t.true(message.includes(`the package ${platformPackage} `), `the message names ${platformPackage}: ${message}`)
      t.true(message.includes('--omit=optional'), `the message says how to get it: ${message}`)
      t.true(message.includes('npm run build'), `the message says how to build it: ${message}`)
      t.false(/wasm|wasi|bug related/i.test(message), `the message is ours, not the generated loader's: ${message}`)
      t.is(typeof cause, 'string', 'the loader’s own error is the cause')
    },
  )
}

// Every example (the README's patterns) runs against the installed package, as a user would
// run it: `import … from 'wiremesh'` resolves to the project's node_modules, never to this
// checkout. tls.mjs makes its certificates with @peculiar/x509 (and reflect-metadata), which
// the project takes from this checkout's node_modules: npm is offline here.
const EXAMPLES = readdirSync(join(ROOT, 'examples')).filter((file) => file.endsWith('.mjs'))
for (const example of EXAMPLES) {
  const title = `examples/${example} runs to completion from the packed tarballs`
  if (skipReason) {
    test.skip(`${title} (${skipReason})`, () => {})
    continue
  }
  test.serial(title, async (t) => {
    t.timeout(180_000)
    const dir = await project()
    mkdirSync(join(dir, 'examples'), { recursive: true })
    // Every example, as an example may use another (hello.mjs runs reconnect.mjs's demo).
    for (const file of EXAMPLES) copyFileSync(join(ROOT, 'examples', file), join(dir, 'examples', file))
    for (const dependency of ['@peculiar/x509', 'reflect-metadata', 'prom-client']) {
      const link = join(dir, 'node_modules', dependency)
      if (existsSync(link)) continue
      mkdirSync(dirname(link), { recursive: true })
      symlinkSync(join(ROOT, 'node_modules', dependency), link, 'dir')
    }
    const r = await run(process.execPath, [join('examples', example)], {
      cwd: dir,
      env: rustlessEnv(),
      timeoutMs: 150_000,
    })
    t.is(r.code, 0, describe(`node examples/${example}`, r))
    t.log(
      r.stdout
        .trim()
        .split(/[\r\n]+/)
        .slice(-6)
        .join('\n'),
    )
  })
}
