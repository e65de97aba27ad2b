//! The wiremesh core: frames over many connections, driven by one background reactor.
//!
//! This crate has no Node dependency; the napi binding is a thin layer over it. The data
//! flows through one module per stage, each using only the ones before it:
//!
//! - [`codec`]: bytes to frames and back (4-byte big-endian length, then the payload, or
//!   Splinter's versioned frames: [`splinter`]); no I/O.
//! - [`transport`]: how connections are made (TCP today), and the [`Connection`] that
//!   carries a stream with its framing state, the one home of that state.
//! - the queues (private): each connection's bounded outgoing queue, and the incoming
//!   stream of frames and notices ([`Received`]), bounded in frames.
//! - the doorbell and the reactor (private): one thread, one `mio::Poll`, that owns every
//!   connection of a mesh and does all of their I/O; and its desk, where it leaves that
//!   state, by value, while it sleeps, for a sender to write with instead of waking it.
//! - [`Mesh`]: the handle a program uses: add and remove connections, send by id, receive
//!   from all; [`Notified`] for a consumer in an event loop.
//! - [`Lobby`]: an event loop for connections outside any mesh (connecting, accepting,
//!   their own sends and receives), so that none of it needs a thread of its own.
//!
//! Every error is in [`error`].

#![deny(missing_docs)]

pub mod codec;
pub mod counters;
mod desk;
mod doorbell;
mod envelope;
pub mod error;
mod frame_error;
mod incoming;
mod lobby;
mod mesh;
mod outgoing;
mod reactor;
pub mod splinter;
mod sync;
pub mod transport;

pub use envelope::Envelope;
pub use error::{
    AcceptError, AddError, BatchError, ConnectError, ConnectionError, DisconnectReason,
    ListenError, RecvError, RecvTimeoutError, RemoveError, SendEncodedError, SendError,
    TryRecvError,
};
pub use incoming::{Delivery, Disconnect, Received};
pub use lobby::{Done, Handed, ListenerId, Lobby, OperationId};
pub use mesh::{
    ConnectionStats, Disconnects, Ending, Incoming, Mesh, MeshOptions, MeshStats, Notified,
    Outgoing, Removal, WeakMesh,
};
pub use reactor::{Ended, Notify, QUANTUM};
pub use transport::{
    Connecting, Connection, InprocTransport, KeepAlive, Listener, Stream, TcpTransport, TlsOptions,
    TlsOptionsError, TlsTransport, Transport, UnixTransport, USER_TIMEOUT_SUPPORTED,
};
