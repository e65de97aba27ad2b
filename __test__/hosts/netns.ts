/**
 * Several hosts on one Linux machine: each host is a network namespace of its own (its own
 * interfaces, routes, TCP stack), joined to the others by veth pairs that can be impaired
 * (`tc netem` delay, loss, reordering), cut (`ip link set … down`) and repaired. Peer
 * programs run inside a host with {@link Network.spawn} (`ip netns exec <ns> node …`) and
 * talk to the harness in JSON lines on stdout, commands on stdin ({@link PeerProcess}).
 *
 * Run the tests that use it alone (as root, with iproute2; `npm run build` done):
 *
 *   npm run test:hosts                    # = npx ava __test__/hosts.spec.ts
 *
 * Where namespaces are unavailable (not Linux, not root, no iproute2, `ip netns add`
 * refused) {@link probe} says why and the tests skip with that message. `.ci/run` installs
 * iproute2 when it is missing and it runs as root.
 *
 * Usage:
 *
 *   const network = Network.create(['a', 'b'])         // links every pair by default
 *   try {
 *     const link = network.link('a', 'b')
 *     link.impair({ delayMs: 20, lossPercent: 1, reorderPercent: 5 })
 *     const server = network.spawn('a', [peerScript, JSON.stringify({ listen: `${network.address('a', 'b')}:0` })])
 *     const { endpoint } = await server.waitFor('listening', 5000)
 *     …
 *     link.cut()      // a partition: both ends down, nothing passes either way
 *     link.repair()   // both ends up again, routes restored; TCP resumes by itself
 *     link.silence()  // a silent partition: both ends up, every packet dropped on arrival
 *   } finally {
 *     network.destroy()  // kills its peers, deletes its namespaces (also done on exit)
 *   }
 *
 * Naming and addresses: a network's namespaces are `wmt-<pid>-<n>-<host>`, unique per process
 * and network, so parallel runs never collide; namespaces left by a crashed run (whose pid is
 * gone) are deleted by the next {@link Network.create}. Link number i (in creation order)
 * is the subnet 10.231.i.0/24: its first host is .1, its second .2. The interface of host h
 * towards host p is `to-<p>`, inside h's namespace. These addresses exist only inside the
 * namespaces: nothing is configured in the machine's own namespace, and no route leads out.
 *
 * Impairments: with `sch_netem` in the kernel, {@link Link.impair} installs netem on each end
 * (each direction's egress). A kernel without netem (some VM kernels, this project's own
 * test machine) gets an emulation from what it has: each end's ingress redirected (`mirred`)
 * to an `ifb` device whose `htb` sends a random share of packets (a classic-BPF classifier on
 * `bpf_get_prandom_u32`) to a `pfifo` of limit 0 (lost) and another to a slow class (held
 * back while the rest pass: reordered). That is exact random loss and reordering, but no
 * fixed delay; `impair` returns which one it used and {@link probe} says why. Every
 * impairment also sets `gso_max_segs 1`, so that a loss drops one segment, not a 64 KiB burst.
 *
 * Everything here is synchronous except waiting for peers: the commands take milliseconds,
 * and cleanup must also work from a process `exit` handler.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

// ---------------------------------------------------------------------------------------
// Tools and support

const TOOL_DIRS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin']

/** The path of `name` (on the PATH, or in the usual sbin directories), or null. */
function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...TOOL_DIRS]
  for (const dir of dirs) {
    const candidate = path.join(dir, name)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return null
}

let ipPath = 'ip'
let tcPath = 'tc'

/** Runs a tool, returns its stdout; throws with its stderr. */
function run(tool: string, args: string[], timeoutMs = 10_000): string {
  const result = spawnSync(tool, args, { encoding: 'utf8', timeout: timeoutMs })
  if (result.error) throw new Error(`${path.basename(tool)} ${args.join(' ')}: ${result.error.message}`)
  if (result.status !== 0) {
    throw new Error(`${path.basename(tool)} ${args.join(' ')}: exit ${result.status}: ${result.stderr.trim()}`)
  }
  return result.stdout
}

const ip = (...args: string[]) => run(ipPath, args)
const tc = (...args: string[]) => run(tcPath, args)

/** How {@link Link.impair} impairs a link: `netem`, or the emulation (see the module doc). */
export type Impairer = 'netem' | 'emulation'

/** What {@link probe} found. */
export type Support =
  | {
      ok: true
      /** How links can be impaired: null if neither netem nor the emulation works. */
      impairer: Impairer | null
      /** Why netem (or every impairment) is unavailable, when it is. */
      impairerNote: string | null
    }
  | { ok: false; reason: string }

let support: Support | null = null

/**
 * Whether network namespaces can be used here, and how links can be impaired. Synchronous
 * (a few `ip` and `tc` commands in a throwaway namespace), cached. Never installs anything:
 * `.ci/run` installs iproute2.
 */
export function probe(): Support {
  support ??= probeOnce()
  return support
}

function probeOnce(): Support {
  if (process.platform !== 'linux')
    return { ok: false, reason: `network namespaces need Linux, not ${process.platform}` }
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, reason: 'network namespaces need root (ip netns add); CI runs the tests as root' }
  }
  const foundIp = findTool('ip')
  const foundTc = findTool('tc')
  if (!foundIp || !foundTc) {
    return {
      ok: false,
      reason: `iproute2 is not installed (no ${!foundIp ? '`ip`' : '`tc`'}); .ci/run installs it (apt-get install -y iproute2)`,
    }
  }
  ipPath = foundIp
  tcPath = foundTc
  sweepStale()
  const ns = `wmt-${process.pid}-probe`
  try {
    try {
      ip('netns', 'add', ns)
    } catch (error) {
      return { ok: false, reason: `ip netns add failed: ${(error as Error).message}` }
    }
    try {
      ip('-n', ns, 'link', 'add', 'to-x', 'type', 'veth', 'peer', 'name', 'to-y')
      ip('-n', ns, 'link', 'set', 'to-x', 'up')
      ip('-n', ns, 'link', 'set', 'to-y', 'up')
    } catch (error) {
      return { ok: false, reason: `cannot make a veth pair in a namespace: ${(error as Error).message}` }
    }
    let netemError: string
    try {
      tc('-n', ns, 'qdisc', 'add', 'dev', 'to-x', 'root', 'netem', 'delay', '1ms', 'loss', '1%')
      return { ok: true, impairer: 'netem', impairerNote: null }
    } catch (error) {
      netemError = (error as Error).message
    }
    try {
      installEmulation(ns, 'to-y', { lossPercent: 1, reorderPercent: 1 })
      return {
        ok: true,
        impairer: 'emulation',
        impairerNote: `tc netem is unavailable (${netemError}); links are impaired by the emulation: loss and reordering, no fixed delay`,
      }
    } catch (error) {
      return {
        ok: true,
        impairer: null,
        impairerNote: `tc netem is unavailable (${netemError}), and so is its emulation (${(error as Error).message})`,
      }
    }
  } finally {
    try {
      ip('netns', 'del', ns)
    } catch {
      // it was never made
    }
  }
}

/** Deletes namespaces of this harness whose process is gone (a crashed or killed run). */
function sweepStale(): void {
  let list: string
  try {
    list = ip('netns', 'list')
  } catch {
    return
  }
  for (const line of list.split('\n')) {
    const match = /^(wmt-(\d+)-\S+)/.exec(line.trim())
    if (!match) continue
    const pid = Number(match[2])
    if (pid === process.pid || isAlive(pid)) continue
    try {
      ip('netns', 'del', match[1])
    } catch {
      // another sweeper got it first
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

// ---------------------------------------------------------------------------------------
// Impairments

/** What {@link Link.impair} does to each direction of a link. */
export interface Impairment {
  /** Added to every packet (netem only). */
  delayMs?: number
  /** Random variation of the delay (netem only). */
  jitterMs?: number
  /** Packets dropped at random, in percent. */
  lossPercent?: number
  /** Packets reordered, in percent: netem sends them without the delay; the emulation holds
   * them back in a slow class. */
  reorderPercent?: number
}

/** A classic-BPF classifier that matches `percent` % of packets at random (`ld rand`). */
function randomMatch(percent: number): string {
  const threshold = Math.min(0xffffffff, Math.round((percent / 100) * 2 ** 32))
  const SKF_AD_RANDOM = 0xfffff000 + 56 // SKF_AD_OFF + SKF_AD_RANDOM
  // A = random; if A >= threshold: no match (0) else: match, the filter's flowid (-1)
  return `4,32 0 0 ${SKF_AD_RANDOM},53 0 1 ${threshold},6 0 0 0,6 0 0 4294967295,`
}

/** The ifb device that holds the emulated impairment of what arrives at `dev` (to-b: im-b). */
const emulationDev = (dev: string) => `im-${dev.slice(3)}`

/**
 * The emulation of netem's loss and reordering (see the module doc), on what arrives at
 * `dev`: its ingress is redirected to an ifb device, whose queue drops a random share of the
 * packets (a class whose pfifo holds nothing) and holds back another (a class of 20 Mbit/s)
 * while the rest passes. On ingress, because a drop by an egress qdisc is reported to the
 * sending socket, and TCP simply sends that segment again: no loss for it to recover from.
 */
function installEmulation(ns: string, dev: string, impairment: Impairment): void {
  const ifb = emulationDev(dev)
  const tcIn = (...args: string[]) => tc('-n', ns, ...args)
  const leaf = (minor: number, rate: string, limit: number) => {
    tcIn('class', 'add', 'dev', ifb, 'parent', '1:', 'classid', `1:${minor}`, 'htb', 'rate', rate, 'quantum', '60000')
    tcIn('qdisc', 'add', 'dev', ifb, 'parent', `1:${minor}`, 'handle', `${minor}:`, 'pfifo', 'limit', `${limit}`)
  }
  ip('-n', ns, 'link', 'add', ifb, 'type', 'ifb')
  ip('-n', ns, 'link', 'set', ifb, 'up')
  tcIn('qdisc', 'add', 'dev', ifb, 'root', 'handle', '1:', 'htb', 'default', '10')
  leaf(10, '10gbit', 10000)
  if (impairment.lossPercent) {
    leaf(30, '10gbit', 0)
    const bytecode = randomMatch(impairment.lossPercent)
    tcIn('filter', 'add', 'dev', ifb, 'parent', '1:', 'prio', '1', 'bpf', 'bytecode', bytecode, 'flowid', '1:30')
  }
  if (impairment.reorderPercent) {
    leaf(20, '20mbit', 10000)
    const bytecode = randomMatch(impairment.reorderPercent)
    tcIn('filter', 'add', 'dev', ifb, 'parent', '1:', 'prio', '2', 'bpf', 'bytecode', bytecode, 'flowid', '1:20')
  }
  tcIn('qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress')
  const everything = '1,6 0 0 4294967295,'
  tcIn(
    'filter',
    'add',
    'dev',
    dev,
    'parent',
    'ffff:',
    'prio',
    '1',
    'bpf',
    'bytecode',
    everything,
    'action',
    'mirred',
    'egress',
    'redirect',
    'dev',
    ifb,
  )
}

/** Undoes {@link installEmulation}. */
function removeEmulation(ns: string, dev: string): void {
  try {
    tc('-n', ns, 'qdisc', 'del', 'dev', dev, 'ingress')
  } catch {
    // not there
  }
  try {
    ip('-n', ns, 'link', 'del', emulationDev(dev))
  } catch {
    // not there
  }
}

/** The ifb device that swallows what arrives at `dev` during a silence (to-b: sl-b). */
const silenceDev = (dev: string) => `sl-${dev.slice(3)}`

/** Undoes {@link Link.silence} at one end. */
function removeSilence(ns: string, dev: string): void {
  try {
    tc('-n', ns, 'qdisc', 'del', 'dev', dev, 'ingress')
  } catch {
    // not there
  }
  try {
    ip('-n', ns, 'link', 'del', silenceDev(dev))
  } catch {
    // not there
  }
}

/** The netem arguments of an impairment. */
function netemArgs(impairment: Impairment): string[] {
  const args = ['limit', '100000']
  const delay = impairment.delayMs ?? 0
  // netem reorders only packets it delays: reordering without a delay gets 1 ms.
  const effectiveDelay = delay === 0 && impairment.reorderPercent ? 1 : delay
  if (effectiveDelay > 0) {
    args.push('delay', `${effectiveDelay}ms`)
    if (impairment.jitterMs) args.push(`${impairment.jitterMs}ms`)
  }
  if (impairment.lossPercent) args.push('loss', `${impairment.lossPercent}%`)
  if (impairment.reorderPercent) args.push('reorder', `${impairment.reorderPercent}%`, '50%')
  return args
}

// ---------------------------------------------------------------------------------------
// Networks, hosts, links

/** One end of a link: a host, its interface and its address on the link. */
export interface LinkEnd {
  host: string
  ns: string
  dev: string
  address: string
}

/** Counters of a link end's root qdisc (`tc -s`): what it sent and what it dropped. */
export interface QdiscStats {
  sentPackets: number
  dropped: number
}

/** A veth pair between two hosts. */
export class Link {
  readonly ends: readonly [LinkEnd, LinkEnd]
  #impaired: Impairer | null = null
  #cut = false
  #silenced = false

  constructor(ends: [LinkEnd, LinkEnd]) {
    this.ends = ends
  }

  /** The end of this link in `host`. */
  end(host: string): LinkEnd {
    const end = this.ends.find((e) => e.host === host)
    if (!end) throw new Error(`host ${host} is not on this link`)
    return end
  }

  /**
   * Impairs both directions (netem on each end's egress, or the emulation where the kernel
   * has no netem; see the module doc), replacing any impairment before. Returns which.
   */
  impair(impairment: Impairment): Impairer {
    const support = probe()
    if (!support.ok || !support.impairer) throw new Error(`links cannot be impaired here: ${describe(support)}`)
    this.clear()
    for (const end of this.ends) {
      try {
        ip('-n', end.ns, 'link', 'set', end.dev, 'gso_max_segs', '1')
      } catch {
        // older iproute2: a loss may then drop a whole GSO burst
      }
      if (support.impairer === 'netem') {
        tc('-n', end.ns, 'qdisc', 'add', 'dev', end.dev, 'root', 'netem', ...netemArgs(impairment))
      } else {
        installEmulation(end.ns, end.dev, impairment)
      }
    }
    this.#impaired = support.impairer
    return support.impairer
  }

  /** Removes the impairment of both ends (if any). */
  clear(): void {
    if (this.#impaired === null) return
    for (const end of this.ends) {
      if (this.#impaired === 'emulation') removeEmulation(end.ns, end.dev)
      else {
        try {
          tc('-n', end.ns, 'qdisc', 'del', 'dev', end.dev, 'root')
        } catch {
          // nothing was there
        }
      }
    }
    this.#impaired = null
  }

  /**
   * What the impairment of each end did, in the order of {@link ends}: packets it passed and
   * packets it dropped (`tc -s`, the root qdisc that impairs: netem on the end's egress, or
   * the emulation's ifb on its ingress). Zeros when the link is not impaired.
   */
  stats(): QdiscStats[] {
    return this.ends.map((end) => {
      if (this.#impaired === null) return { sentPackets: 0, dropped: 0 }
      const dev = this.#impaired === 'emulation' ? emulationDev(end.dev) : end.dev
      const text = tc('-n', end.ns, '-s', 'qdisc', 'show', 'dev', dev)
      // The first "Sent … pkt (dropped …" is the root qdisc's; it counts its children's.
      const match = /Sent \d+ bytes (\d+) pkt \(dropped (\d+)/.exec(text)
      return { sentPackets: match ? Number(match[1]) : 0, dropped: match ? Number(match[2]) : 0 }
    })
  }

  /**
   * A partition: both ends down. Nothing passes either way, and each host loses its route
   * to the link's subnet (sends fail locally); TCP connections stay open and retransmit
   * (with back-off) until {@link repair}, or until they give up (`tcp_retries2`: about
   * 15 minutes by default).
   */
  cut(): void {
    for (const end of this.ends) ip('-n', end.ns, 'link', 'set', end.dev, 'down')
    this.#cut = true
  }

  /**
   * A silent partition: both ends stay up, with their routes, but every packet that arrives
   * at either end is dropped before the host's stack sees it: the end's ingress is
   * redirected (`mirred`) to an ifb device whose queue holds nothing (`pfifo limit 0`; the
   * kernels this runs on may lack `act_gact`, tc's `action drop`). Unlike {@link cut}, sending never fails locally and nothing answers (no RST, no
   * ICMP): TCP sees only silence, as when the peer's host dies or the path drops everything,
   * and its timers decide (keepalive, user timeout, retransmission limit). Not on a link
   * impaired by the emulation, which holds the ingress ({@link clear} it first).
   */
  silence(): void {
    if (this.#impaired === 'emulation') throw new Error('clear() the emulated impairment before silence()')
    const everything = '1,6 0 0 4294967295,'
    this.#silenced = true
    for (const end of this.ends) {
      const sink = silenceDev(end.dev)
      ip('-n', end.ns, 'link', 'add', sink, 'type', 'ifb')
      ip('-n', end.ns, 'link', 'set', sink, 'up')
      tc('-n', end.ns, 'qdisc', 'add', 'dev', sink, 'root', 'pfifo', 'limit', '0')
      tc('-n', end.ns, 'qdisc', 'add', 'dev', end.dev, 'handle', 'ffff:', 'ingress')
      // Redirect the packets as the emulation does (module doc).
      const filter = ['filter', 'add', 'dev', end.dev, 'parent', 'ffff:', 'prio', '1', 'bpf', 'bytecode', everything]
      tc('-n', end.ns, ...filter, 'action', 'mirred', 'egress', 'redirect', 'dev', sink)
    }
  }

  /** Packets dropped so far by {@link silence}, at each end, in the order of {@link ends}. */
  silencedDrops(): number[] {
    return this.ends.map((end) => {
      if (!this.#silenced) return 0
      const text = tc('-n', end.ns, '-s', 'qdisc', 'show', 'dev', silenceDev(end.dev))
      const match = /\(dropped (\d+)/.exec(text)
      return match ? Number(match[1]) : 0
    })
  }

  /** Undoes {@link cut} (both ends up again, the subnet's routes with them) and {@link silence}. */
  repair(): void {
    if (this.#cut) for (const end of this.ends) ip('-n', end.ns, 'link', 'set', end.dev, 'up')
    if (this.#silenced) for (const end of this.ends) removeSilence(end.ns, end.dev)
    this.#cut = false
    this.#silenced = false
  }

  get isCut(): boolean {
    return this.#cut
  }

  get isSilenced(): boolean {
    return this.#silenced
  }
}

/** The message of a failed {@link probe}, or its impairment note. */
export function describe(support: Support): string {
  return support.ok ? (support.impairerNote ?? `links are impaired with ${support.impairer}`) : support.reason
}

const live = new Set<Network>()
let exitHooked = false
let networkCounter = 0

function hookExit(): void {
  if (exitHooked) return
  exitHooked = true
  process.on('exit', () => {
    for (const network of [...live]) network.destroy()
  })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      for (const network of [...live]) network.destroy()
      // Then die of the signal as if nobody had listened.
      process.removeListener(signal, onSignal)
      process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}

/**
 * Hosts (network namespaces) and the links between them. Make one with
 * {@link Network.create}; {@link destroy} it when done (it is also destroyed when the
 * process exits or is interrupted).
 */
export class Network {
  /** Unique per process and network: the prefix of its namespaces' names. */
  readonly id: string
  readonly hosts: readonly string[]
  readonly links: readonly Link[]
  readonly #namespaces: string[] = []
  readonly #peers = new Set<PeerProcess>()
  #destroyed = false

  private constructor(id: string, hosts: string[]) {
    this.id = id
    this.hosts = hosts
    this.links = []
  }

  /**
   * Makes the hosts (each a namespace with its loopback up) and a veth pair for each link
   * (default: every pair of hosts), addressed and up. Throws (after cleaning up) if the
   * machine refuses; call {@link probe} first to skip where namespaces are unavailable.
   */
  static create(hosts: string[], links?: Array<[string, string]>): Network {
    const support = probe()
    if (!support.ok) throw new Error(support.reason)
    for (const host of hosts) {
      if (!/^[a-z][a-z0-9]{0,11}$/.test(host)) throw new Error(`host name ${host}: 1 to 12 of [a-z0-9], a letter first`)
    }
    if (new Set(hosts).size !== hosts.length) throw new Error('host names must be distinct')
    const pairs = links ?? hosts.flatMap((a, i) => hosts.slice(i + 1).map((b): [string, string] => [a, b]))
    if (pairs.length > 256) throw new Error('at most 256 links')
    const network = new Network(`wmt-${process.pid}-${networkCounter++}`, hosts)
    hookExit()
    live.add(network)
    try {
      for (const host of hosts) {
        const ns = network.ns(host)
        ip('netns', 'add', ns)
        network.#namespaces.push(ns)
        ip('-n', ns, 'link', 'set', 'lo', 'up')
      }
      const seen = new Set<string>()
      pairs.forEach(([a, b], index) => {
        if (!hosts.includes(a) || !hosts.includes(b) || a === b) throw new Error(`bad link ${a}-${b}`)
        const key = [a, b].sort().join('-')
        if (seen.has(key)) throw new Error(`two links between ${a} and ${b}`)
        seen.add(key)
        const ends: [LinkEnd, LinkEnd] = [
          { host: a, ns: network.ns(a), dev: `to-${b}`, address: `10.231.${index}.1` },
          { host: b, ns: network.ns(b), dev: `to-${a}`, address: `10.231.${index}.2` },
        ]
        // Made directly in the two namespaces: nothing appears in the machine's own.
        ip(
          'link',
          'add',
          ends[0].dev,
          'netns',
          ends[0].ns,
          'type',
          'veth',
          'peer',
          'name',
          ends[1].dev,
          'netns',
          ends[1].ns,
        )
        for (const end of ends) {
          ip('-n', end.ns, 'addr', 'add', `${end.address}/24`, 'dev', end.dev)
          ip('-n', end.ns, 'link', 'set', end.dev, 'up')
        }
        ;(network.links as Link[]).push(new Link(ends))
      })
    } catch (error) {
      network.destroy()
      throw error
    }
    return network
  }

  /** The namespace of `host`. */
  ns(host: string): string {
    if (!this.hosts.includes(host)) throw new Error(`no host ${host}`)
    return `${this.id}-${host}`
  }

  /** The link between `a` and `b`. */
  link(a: string, b: string): Link {
    const link = this.links.find((l) => l.ends.some((e) => e.host === a) && l.ends.some((e) => e.host === b))
    if (!link || a === b) throw new Error(`no link between ${a} and ${b}`)
    return link
  }

  /** The address of `host` on its link to `peer` (what `peer` connects to). */
  address(host: string, peer: string): string {
    return this.link(host, peer).end(host).address
  }

  /** Runs a command inside `host`'s namespace; returns its stdout. */
  exec(host: string, argv: string[]): string {
    return ip('netns', 'exec', this.ns(host), ...argv)
  }

  /**
   * TCP counters of `host`'s stack since it was made (`/proc/net/snmp` and
   * `/proc/net/netstat` read inside it), e.g. `RetransSegs`, `TCPSACKReorder`.
   */
  tcpCounters(host: string): Record<string, number> {
    const counters: Record<string, number> = {}
    const text = this.exec(host, ['cat', '/proc/net/snmp', '/proc/net/netstat'])
    const lines = text.split('\n')
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i].split(/\s+/)
      const values = lines[i + 1].split(/\s+/)
      if (names[0] !== values[0] || !/^(Tcp|TcpExt):$/.test(names[0])) continue
      names.slice(1).forEach((name, k) => (counters[name] = Number(values[k + 1])))
    }
    return counters
  }

  /**
   * Starts `node <argv…>` inside `host`'s namespace (`ip netns exec`), with this process's
   * Node. The process is killed by {@link destroy} if it is still running.
   */
  spawn(host: string, argv: string[], name = host): PeerProcess {
    if (this.#destroyed) throw new Error('the network is destroyed')
    const child = spawn(ipPath, ['netns', 'exec', this.ns(host), process.execPath, ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    const peer = new PeerProcess(child, name)
    this.#peers.add(peer)
    void peer.exited.then(() => this.#peers.delete(peer))
    return peer
  }

  /** Kills its peers (SIGKILL, by pid) and deletes its namespaces (and so its links). Idempotent. */
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    live.delete(this)
    for (const peer of this.#peers) peer.kill()
    for (const ns of this.#namespaces) {
      try {
        ip('netns', 'del', ns)
      } catch {
        // gone already
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Peer processes

/** One JSON line a peer wrote: `{ event, …fields }`. */
export type PeerEvent = { event: string; [field: string]: any }

/**
 * A process started by {@link Network.spawn} that reports JSON lines on stdout (`{"event":
 * …}`), takes commands (one word a line) on stdin, and writes diagnostics on stderr.
 */
export class PeerProcess {
  readonly name: string
  readonly child: ChildProcess
  /** Every event so far, in order. */
  readonly events: PeerEvent[] = []
  /** What it wrote on stderr (the last 16 KiB). */
  stderr = ''
  /** Resolves when it exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null
  #consumed = new Set<PeerEvent>()
  #listeners = new Set<() => void>()

  constructor(child: ChildProcess, name: string) {
    this.child = child
    this.name = name
    let text = ''
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (chunk: string) => {
      text += chunk
      let newline
      while ((newline = text.indexOf('\n')) >= 0) {
        const line = text.slice(0, newline).trim()
        text = text.slice(newline + 1)
        if (!line) continue
        try {
          this.events.push(JSON.parse(line) as PeerEvent)
        } catch {
          this.events.push({ event: 'unparsed', line })
        }
      }
      this.#notify()
    })
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-16384)
    })
    child.stdin!.on('error', () => {}) // it may exit before reading
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exit = { code, signal }
        resolve(this.#exit)
        this.#notify()
      })
    })
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener()
  }

  /**
   * The first event named `event` (and matching `accept`, if given) not returned before;
   * rejects if the process exits first or none comes within `timeoutMs`.
   */
  waitFor(event: string, timeoutMs: number, accept: (e: PeerEvent) => boolean = () => true): Promise<PeerEvent> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.find((e) => e.event === event && !this.#consumed.has(e) && accept(e))
        if (found) {
          this.#consumed.add(found)
          done()
          resolve(found)
        } else if (this.#exit) {
          done()
          reject(new Error(`${this.name} exited (${JSON.stringify(this.#exit)}) before '${event}'${this.#tail()}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.name}: no '${event}' within ${timeoutMs} ms${this.#tail()}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        this.#listeners.delete(check)
      }
      this.#listeners.add(check)
      check()
    })
  }

  /** The last event named `event`, or undefined. */
  last(event: string): PeerEvent | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) if (this.events[i].event === event) return this.events[i]
    return undefined
  }

  /** Writes `word` and a newline on its stdin. */
  command(word: string): void {
    if (!this.#exit) this.child.stdin!.write(`${word}\n`)
  }

  /** Resolves with its exit once it exits; kills it (SIGKILL) if that takes over `timeoutMs`. */
  async exit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    await Promise.race([this.exited, timedOut])
    clearTimeout(timer)
    if (!this.#exit) this.kill()
    return this.exited
  }

  /** SIGKILL, by pid, if it is still running. */
  kill(): void {
    if (!this.#exit && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, 'SIGKILL')
      } catch {
        // exited meanwhile
      }
    }
  }

  #tail(): string {
    const tail = this.stderr.trim().split('\n').slice(-8).join('\n')
    return tail ? `; stderr:\n${tail}` : ''
  }
}
