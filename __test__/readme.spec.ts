// The README's patterns are excerpts of the programs in examples/, which the package test
// runs: each excerpt must still be a verbatim part of its program, and every program must
// be shown.

import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

const ROOT = resolve(typeof __dirname === 'string' ? join(__dirname, '..') : process.cwd())
const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** Each excerpt: the example it is from and its code, for every `From [examples/…]` paragraph. */
function excerpts(): Array<{ example: string; code: string }> {
  const found: Array<{ example: string; code: string }> = []
  let example: string | undefined
  const lines = README.split('\n')
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]
    if (line.startsWith('#')) example = undefined // an excerpt belongs to its section
    const from = /^From \[(examples\/[\w-]+\.mjs)\]/.exec(line)
    if (from) example = from[1]
    if (line === '```js' && example !== undefined) {
      const end = lines.indexOf('```', n + 1)
      found.push({ example, code: lines.slice(n + 1, end).join('\n') + '\n' })
      n = end
    }
  }
  return found
}

test('every excerpt of an example in the README is a verbatim part of that example', (t) => {
  const all = excerpts()
  t.true(all.length >= 8, `the README has its excerpts (found ${all.length})`)
  for (const { example, code } of all) {
    const program = readFileSync(join(ROOT, example), 'utf8')
    t.true(program.includes(code), `${example} no longer contains this excerpt of the README:\n${code}`)
  }
})

test('every example in examples/ is shown in the README', (t) => {
  const shown = new Set(excerpts().map(({ example }) => example))
  for (const file of readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.mjs'))) {
    if (file === 'hello.mjs') continue // npm start; the README shows its first half as "Hello"
    t.true(shown.has(`examples/${file}`), `the README has no excerpt of examples/${file}`)
  }
})
