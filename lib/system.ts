/**
 * Operating-system failures as Node reports them. The native core says why the system
 * refused (`Too many open files (os error 24)`); this turns such an error into the kind
 * of `Error` that `fs` and `net` throw: `code` the errno's name (`'EMFILE'`), `errno`
 * its negative number, and `syscall` what was being done.
 *
 * @module
 */

import { getSystemErrorName } from 'node:util'

/** A Node-style system error. */
export interface SystemError extends Error {
  code: string
  errno: number
  syscall: string
}

/** Windows error codes that Node names as it does their POSIX twins. */
const WINDOWS_NAMES: Record<number, string> = {
  4: 'EMFILE', // ERROR_TOO_MANY_OPEN_FILES
  8: 'ENOMEM', // ERROR_NOT_ENOUGH_MEMORY
  14: 'ENOMEM', // ERROR_OUTOFMEMORY
  10024: 'EMFILE', // WSAEMFILE
  10055: 'ENOBUFS', // WSAENOBUFS
}

/**
 * `error` as a system error of `syscall` if the native core said which OS error it was;
 * else `error` itself.
 */
export function systemError(error: unknown, syscall: string): unknown {
  if (!(error instanceof Error)) return error
  const found = /\(os error (\d+)\)$/.exec(error.message)
  if (found === null) return error
  const number = Number(found[1])
  let code: string
  let errno: number
  if (process.platform === 'win32') {
    code = WINDOWS_NAMES[number] ?? 'UNKNOWN'
    errno = number
  } else {
    errno = -number
    try {
      code = getSystemErrorName(errno)
    } catch {
      code = 'UNKNOWN'
    }
  }
  const reason = error.message.slice(0, found.index).trimEnd()
  const system = new Error(`${syscall} ${code}: ${reason}`, { cause: error }) as SystemError
  system.code = code
  system.errno = errno
  system.syscall = syscall
  return system
}
