import * as net from 'node:net'

import { Connection, Listener, Mesh, TcpTransport } from '../index'

/** A listener on an ephemeral loopback port. */
export async function listen(transport = new TcpTransport()): Promise<Listener> {
  return transport.listen('127.0.0.1:0')
}

/** A connected pair: [client, server]. */
export async function connectionPair(transport = new TcpTransport()): Promise<[Connection, Connection]> {
  const listener = await listen(transport)
  const [client, server] = await Promise.all([transport.connect(listener.endpoint), listener.accept()])
  listener.close()
  return [client, server]
}

/** Both ends of a new pair added to `mesh`: [client id, server id]. */
export async function meshPair(mesh: Mesh, transport = new TcpTransport()): Promise<[number, number]> {
  const [client, server] = await connectionPair(transport)
  return [mesh.add(client), mesh.add(server)]
}

/** A plain `net` socket connected to a connection that joined `mesh`: [socket, id]. */
export async function rawPeer(mesh: Mesh, transport = new TcpTransport()): Promise<[net.Socket, number]> {
  const listener = await listen(transport)
  const port = Number(listener.endpoint.split(':').pop())
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
  const [connection] = await Promise.all([listener.accept(), new Promise((resolve) => socket.once('connect', resolve))])
  listener.close()
  return [socket, mesh.add(connection)]
}

/** One frame on the wire: 4-byte big-endian length, then the payload. */
export function frame(payload: Uint8Array | string): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(4)
  header.writeUInt32BE(body.length)
  return Buffer.concat([header, body])
}

/** Collects the frames a plain socket receives. */
export function frameReader(socket: net.Socket): { frames: Buffer[]; next(): Promise<Buffer> } {
  let pending = Buffer.alloc(0)
  const frames: Buffer[] = []
  const waiting: Array<(frame: Buffer) => void> = []
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk])
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
      const length = pending.readUInt32BE(0)
      const payload = pending.subarray(4, 4 + length)
      pending = pending.subarray(4 + length)
      const resolve = waiting.shift()
      if (resolve) resolve(payload)
      else frames.push(payload)
    }
  })
  return {
    frames,
    next() {
      const ready = frames.shift()
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve))
    },
  }
}

/** A payload that carries a sequence number in its first 8 bytes. */
export function numbered(n: number, length = 16): Buffer {
  const payload = Buffer.alloc(Math.max(length, 8), n % 251)
  payload.writeBigUInt64BE(BigInt(n))
  return payload
}

/** The sequence number of a {@link numbered} payload. */
export function numberOf(payload: Buffer): number {
  return Number(payload.readBigUInt64BE(0))
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Resolves once the mesh announces a disconnect: [id, error]. */
export function nextDisconnect(mesh: Mesh): Promise<[number, import('../index').DisconnectError]> {
  return new Promise((resolve) => mesh.once('disconnect', (id, error) => resolve([id, error])))
}
