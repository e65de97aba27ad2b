/**
 * The fault suite's tools: peers in processes of their own (`peer.cjs`), numbered
 * payloads, and the checks every fault test makes — what arrived is each envelope once, in
 * order; what did not arrive came back to its sender.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'

import type { ExecutionContext } from 'ava'

/** A peer process running `peer.cjs` with `config`. */
export class Peer {
  readonly child: ChildProcess
  readonly #report: string
  /** Its `bad …` lines: anything out of order. */
  readonly bad: string[] = []
  readonly lines: string[] = []
  readonly exited: Promise<unknown>
  #waiters: Array<{ test: () => boolean; resolve: () => void }> = []

  constructor(config: Record<string, unknown>) {
    this.#report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wiremesh-peer-')), 'received')
    fs.writeFileSync(this.#report, '-1')
    const argument = JSON.stringify({ ...config, report: this.#report })
    this.child = spawn(process.execPath, [path.join(__dirname, 'peer.cjs'), argument], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    // 'close', not 'exit': every line it printed has been read by then.
    this.exited = once(this.child, 'close')
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(line)
      if (line.startsWith('bad')) this.bad.push(line)
      this.#check()
    })
    void this.exited.then(() => {
      this.#lastReceived = this.received
      fs.rmSync(path.dirname(this.#report), { recursive: true, force: true })
    })
  }

  /** The last sequence number it received in order (-1: none); exact even after a kill. */
  get received(): number {
    try {
      return Number(fs.readFileSync(this.#report, 'utf8').trim())
    } catch {
      return this.#lastReceived
    }
  }

  #lastReceived = -1

  /** Resolves once `test` holds (checked at each line the peer prints, and every 5 ms). */
  until(test: () => boolean, what: string, ms = 30_000): Promise<void> {
    if (test()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const poll = setInterval(() => this.#check(), 5)
      const timer = setTimeout(() => {
        clearInterval(poll)
        reject(new Error(`peer: timed out waiting for ${what}`))
      }, ms)
      this.#waiters.push({
        test,
        resolve: () => {
          clearTimeout(timer)
          clearInterval(poll)
          resolve()
        },
      })
    })
  }

  /** Resolves once the peer printed a line starting with `prefix`. */
  line(prefix: string): Promise<void> {
    return this.until(() => this.lines.some((line) => line.startsWith(prefix)), `"${prefix}"`)
  }

  /** SIGKILL, and wait for it to be gone (what it received is then fixed). */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL')
    await this.exited
  }

  #check(): void {
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.test()) return true
      waiter.resolve()
      return false
    })
  }
}

/** The port of an endpoint `tcp://ip:port`. */
export function portOf(endpoint: string): number {
  return Number(endpoint.split(':').pop())
}

/** Asserts `seqs` is `from, from + 1, …` with no gap, repeat or reordering. */
export function assertRun(t: ExecutionContext, seqs: number[], from: number, what: string): void {
  const wrong = seqs.findIndex((seq, i) => seq !== from + i)
  t.is(wrong, -1, `${what}: expected ${from + Math.max(wrong, 0)} at ${wrong}, got ${seqs[wrong]}`)
}
