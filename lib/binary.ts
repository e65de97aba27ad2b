/**
 * Loading the native binary, first of all the modules, so that a missing one fails with a
 * message a user can act on.
 *
 * The generated loader (`binding.js`, from `napi build`) looks for a binary built in the
 * checkout, then for this platform's package (`wiremesh-linux-x64-gnu`, …), which npm
 * installs as an optional dependency. When neither is there it throws a message about a
 * bug of npm and a WebAssembly package that is not one of ours; this module catches that
 * and says which package is missing and how to get it. The other modules then import the
 * loader themselves and get the cached binding.
 *
 * @module
 */

/** The napi-rs name of this platform's package: `wiremesh-linux-x64-gnu`, `wiremesh-darwin-arm64`, … */
function platformPackage(): string {
  const { platform, arch } = process
  if (platform === 'linux') {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return `wiremesh-linux-${arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `wiremesh-win32-${arch}-msvc`
  return `wiremesh-${platform}-${arch}`
}

/** Whether `name` resolves from here (installed beside this package, or above it). */
function installed(name: string): boolean {
  try {
    require.resolve(`${name}/package.json`)
    return true
  } catch {
    return false
  }
}

/** The message for a binary that did not load, naming the package it should come from. */
function missingBinaryMessage(): string {
  const name = platformPackage()
  const manifest = require('../package.json') as { optionalDependencies?: Record<string, string> }
  const target = `${process.platform} ${process.arch}`
  const build = 'or build it from a clone of the repository (npm install && npm run build, which needs Rust)'
  if (!manifest.optionalDependencies || !(name in manifest.optionalDependencies)) {
    return `wiremesh has no prebuilt binary for this platform (${target}; its package would be ${name}): ${build}.`
  }
  if (installed(name)) {
    return `wiremesh could not load its native binary from the package ${name}, which is installed: reinstall it, ${build}.`
  }
  return (
    `wiremesh could not load its native binary: the package ${name} (the binary for ${target}) is not installed. ` +
    'npm installs it as an optional dependency of wiremesh: reinstall without --no-optional or --omit=optional ' +
    '(a package-lock.json written on another platform may lack it: delete it and node_modules, then npm install), ' +
    `${build}.`
  )
}

try {
  require('../binding.js')
} catch (cause) {
  throw new Error(missingBinaryMessage(), { cause })
}
export {}
