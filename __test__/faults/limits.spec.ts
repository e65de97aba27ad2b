import { execFileSync } from 'node:child_process'
import path from 'node:path'

import test from 'ava'

test('at the file-descriptor limit every call fails with a typed error, and all recovers once descriptors are freed', (t) => {
  if (process.platform === 'win32') {
    t.log('skipped: no ulimit on Windows')
    t.pass()
    return
  }
  const child = path.join(__dirname, 'fd-exhaustion.cjs')
  const output = execFileSync('sh', ['-c', `ulimit -n 256 && exec "${process.execPath}" "${child}"`], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  const found = JSON.parse(output.trim().split('\n').pop() as string)
  t.is(found.failed, undefined)
  t.is(found.exhausted, 'EMFILE')
  t.like(found.mesh, { name: 'Error', code: 'EMFILE', errno: -24 })
  t.like(found.connect, { name: 'ConnectError', code: 'ERR_WIREMESH_CONNECT_IO_ERROR' })
  t.like(found.listen, { name: 'ListenError', code: 'ERR_WIREMESH_LISTEN_IO_ERROR' })
  t.is(found.acceptedWhileExhausted, 0)
  t.is(found.loopAccepted, 2, "the listener's loop took the peer's connection and the mesh's own")
  t.true(found.recovered, 'a mesh, a connection and the listener loop work again')
})
