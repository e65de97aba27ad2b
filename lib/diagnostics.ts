/**
 * Connection events for tools: `node:diagnostics_channel` channels, as undici publishes its
 * own, and a line per event on `NODE_DEBUG=wiremesh` through `util.debuglog`.
 *
 * Publishing costs nothing while nobody subscribes (`channel.hasSubscribers` is checked
 * first) and debug lines are built only when `NODE_DEBUG` names wiremesh. Nothing here is
 * on the per-envelope path: only connections joining, leaving, reconnecting and refused.
 *
 * @module
 */

import diagnostics_channel from 'node:diagnostics_channel'
import { debuglog } from 'node:util'

/** The message of `wiremesh:connect`: a connection joined a mesh (added, or a dialled id connected). */
export interface ConnectMessage {
  /** The mesh (its `Mesh` handle that made the call, or the first of its clones). */
  mesh: object
  /** The connection's id. */
  id: number
  /** The peer's endpoint. */
  remoteEndpoint: string
  /** This end's endpoint. */
  localEndpoint: string
  /** True for an id made by `mesh.dial`. */
  dialled: boolean
  /** For a dialled id: how many connections it had before this one. */
  reconnects: number
}

/** The message of `wiremesh:disconnect`: a connection left a mesh by itself. */
export interface DisconnectMessage {
  mesh: object
  id: number
  /** Why (a `DisconnectError`). */
  error: Error
  /** A dialled id that will connect again. */
  willReconnect: boolean
  /** Frames written that the peer had not acknowledged (at most), where the system tells. */
  unacknowledged: number | null
}

/** The message of `wiremesh:reconnecting`: a dialled id waits `delay` ms before attempt `attempt`. */
export interface ReconnectingMessage {
  mesh: object
  id: number
  attempt: number
  delay: number
  /** Why the last attempt or connection ended. */
  error: Error
}

/** The message of `wiremesh:refused`: a TLS handshake failed or its peer was not authenticated. */
export interface RefusedMessage {
  /** `'accept'` (a listener refused a client) or `'connect'` (a dial was refused). */
  side: 'accept' | 'connect'
  /** The listener's endpoint, or the endpoint dialled. */
  endpoint: string
  /** The `AcceptError` or `ConnectError`, kind `Tls`. */
  error: Error
}

/** The channels, by name. */
export const channels = {
  connect: diagnostics_channel.channel('wiremesh:connect'),
  disconnect: diagnostics_channel.channel('wiremesh:disconnect'),
  reconnecting: diagnostics_channel.channel('wiremesh:reconnecting'),
  refused: diagnostics_channel.channel('wiremesh:refused'),
}

let log: ReturnType<typeof debuglog> | undefined
/** `NODE_DEBUG=wiremesh`'s logger, or undefined when it is off. */
function debug(): ReturnType<typeof debuglog> | undefined {
  log ??= debuglog('wiremesh')
  return log.enabled ? log : undefined
}

export function publishConnect(message: ConnectMessage): void {
  if (channels.connect.hasSubscribers) channels.connect.publish(message)
  debug()?.(
    'connect id=%d remote=%s local=%s%s',
    message.id,
    message.remoteEndpoint,
    message.localEndpoint,
    message.dialled ? ` dialled reconnects=${message.reconnects}` : '',
  )
}

export function publishDisconnect(message: DisconnectMessage): void {
  if (channels.disconnect.hasSubscribers) channels.disconnect.publish(message)
  const code = (message.error as { code?: string }).code
  debug()?.(
    'disconnect id=%d code=%s willReconnect=%s unacknowledged=%s: %s',
    message.id,
    code,
    message.willReconnect,
    message.unacknowledged,
    message.error.message,
  )
}

export function publishReconnecting(message: ReconnectingMessage): void {
  if (channels.reconnecting.hasSubscribers) channels.reconnecting.publish(message)
  debug()?.(
    'reconnecting id=%d attempt=%d delay=%dms: %s',
    message.id,
    message.attempt,
    message.delay,
    message.error.message,
  )
}

export function publishRefused(message: RefusedMessage): void {
  if (channels.refused.hasSubscribers) channels.refused.publish(message)
  debug()?.('refused %s %s: %s', message.side, message.endpoint, message.error.message)
}
