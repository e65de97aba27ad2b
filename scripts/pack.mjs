// `npm run pack`: the tarballs a release publishes, from what this checkout has built.
//
// Copies each built binary in the repo root (`wiremesh.<platform>.node`, from
// `npm run build`) into its platform package (`npm/<platform>/`), then runs `npm pack` on
// each of those packages and on the main package, writing the tarballs to one directory
// (`dist/`, or the directory given as the first argument) and printing their names and
// sizes. Stale tarballs of ours in that directory are removed first. Fails, saying what to
// run, when no binary or no compiled JavaScript is there: a platform package without its
// binary would install and then fail to load.
//
//   npm run pack                      # into dist/
//   node scripts/pack.mjs /tmp/out    # into /tmp/out (the package test does this)

import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))
const destination = resolve(process.argv[2] ?? join(root, 'dist'))

function fail(message) {
  console.error(`npm run pack: ${message}`)
  process.exit(1)
}

for (const file of ['index.js', 'index.d.ts', 'binding.js', 'binding.d.ts']) {
  if (!existsSync(join(root, file))) fail(`${file} is missing from the repo root: run \`npm run build\` first.`)
}

const binaries = readdirSync(root).filter((file) => /^wiremesh\..+\.node$/.test(file))
if (binaries.length === 0) {
  fail(
    'no built binary (wiremesh.<platform>.node) in the repo root: run `npm run build` first ' +
      '(it builds the binary of this machine; other platforms are built by CI).',
  )
}

const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const platforms = []
for (const binary of binaries) {
  const platform = binary.slice('wiremesh.'.length, -'.node'.length)
  const dir = join(root, 'npm', platform)
  if (!existsSync(join(dir, 'package.json'))) fail(`${binary} has no package: npm/${platform}/package.json is missing.`)
  const platformManifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  if (platformManifest.main !== binary)
    fail(`npm/${platform}/package.json names ${platformManifest.main}, not ${binary}.`)
  if (platformManifest.version !== manifest.version) {
    fail(`npm/${platform} is version ${platformManifest.version}, the main package ${manifest.version}.`)
  }
  if (manifest.optionalDependencies?.[platformManifest.name] !== manifest.version) {
    fail(`package.json must list ${platformManifest.name}@${manifest.version} in optionalDependencies.`)
  }
  copyFileSync(join(root, binary), join(dir, binary))
  platforms.push(dir)
}

mkdirSync(destination, { recursive: true })
for (const file of readdirSync(destination)) {
  if (/^wiremesh(-[a-z0-9-]+)?-\d+\.\d+\.\d+.*\.tgz$/.test(file)) rmSync(join(destination, file))
}

const packed = []
for (const dir of [root, ...platforms]) {
  const output = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', destination], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const [report] = JSON.parse(output.slice(output.indexOf('[')))
  const tarball = join(destination, report.filename)
  if (dir !== root && !report.files.some((f) => f.path === report.name.replace(/^wiremesh-/, 'wiremesh.') + '.node')) {
    fail(`the tarball of ${report.name} has no binary (it has: ${report.files.map((f) => f.path).join(', ')}).`)
  }
  packed.push({ tarball, size: statSync(tarball).size })
}

for (const { tarball, size } of packed) {
  const kib = (size / 1024).toFixed(1).padStart(8)
  console.log(`${kib} KiB  ${tarball}`)
}
