/// <reference types="node" preserve="true" />

/**
 * wiremesh: many framed network connections in one native background reactor. Send to any
 * connection by id; `await` what arrives from all of them.
 *
 * This file is only the export list. The public API is written by hand over the generated
 * napi binding (`binding.js`), in modules by role under `lib/`: `envelope`, `errors`,
 * `transports` (and `lobby`, their operations), `mesh` (and `outbox`, `inbox`, `room`,
 * its parts), `waker` (the one wake of this JavaScript environment), `args`.
 *
 * @packageDocumentation
 */

// First: a missing native binary fails here, with the name of the package to install.
import './lib/binary'

export { Envelope } from './lib/envelope'
export {
  AcceptError,
  AcceptErrorKind,
  AddError,
  AddErrorKind,
  codes,
  ConnectError,
  ConnectErrorKind,
  DisconnectError,
  DisconnectErrorKind,
  ListenError,
  ListenErrorKind,
  MeshError,
  RecvError,
  RecvErrorKind,
  RecvTimeoutError,
  RecvTimeoutErrorKind,
  RemoveError,
  RemoveErrorKind,
  SendError,
  SendErrorKind,
} from './lib/errors'
export type { ErrorCode } from './lib/errors'
export {
  Connection,
  InprocTransport,
  Listener,
  MultiTransport,
  RawTransport,
  TcpTransport,
  TlsTransport,
  UnixTransport,
} from './lib/transports'
export type {
  Framing,
  InprocTransportOptions,
  KeepAliveOptions,
  OperationOptions,
  PeerCertificate,
  Pem,
  TcpTransportOptions,
  TlsTransportOptions,
  Transport,
  UnixTransportOptions,
} from './lib/transports'
export { Incoming, Mesh, MeshLifeCycle, MeshMatrixReceiver, MeshMatrixSender, Outgoing } from './lib/mesh'
export type {
  ConnectionStats,
  DisconnectInfo,
  MeshEvents,
  MeshOptions,
  MeshStats,
  ReconnectingInfo,
  SendWaitOptions,
  Traffic,
} from './lib/mesh'
export type { DialOptions, ReconnectOptions } from './lib/dialer'
export { channels } from './lib/diagnostics'
export type { ConnectMessage, DisconnectMessage, ReconnectingMessage, RefusedMessage } from './lib/diagnostics'
