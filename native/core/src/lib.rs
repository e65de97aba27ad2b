//! The wiremesh core: frames over many connections, driven by one background reactor.
//!
//! This crate has no Node dependency; the napi binding is a thin layer over it. The data
//! flows through one module per stage:
//!
//! - [`codec`]: bytes to frames and back (4-byte big-endian length, then the payload).
//! - [`transport`]: how connections are made (TCP today) and the [`Connection`] that
//!   carries a stream with its framing state.
//! - the reactor (private): one thread, one `mio::Poll`, bounded queues; small frames
//!   leave it in runs, one buffer per read (the incoming queue, private, and [`Delivery`]).
//! - reading (private): one read and the frames it completes, shared by the reactor and a
//!   thread a connection's reads are lent to ([`Mesh::lend_reads`], [`LentReads`]).
//! - [`Mesh`]: the handle a program uses: add and remove connections, send by id, receive
//!   from all.
//!
//! Every error is in [`error`].

#![deny(missing_docs)]

pub mod codec;
mod envelope;
pub mod error;
mod incoming;
mod mesh;
mod outgoing;
mod reactor;
mod reading;
pub mod transport;

pub use envelope::Envelope;
pub use error::{
    AcceptError, AddError, ConnectError, ConnectionError, DisconnectReason, ListenError, RecvError,
    RecvTimeoutError, RemoveError, SendEncodedError, SendError, TryRecvError,
};
pub use incoming::Delivery;
pub use mesh::{Disconnect, Disconnects, Incoming, Mesh, Outgoing, WeakMesh};
pub use reactor::Notify;
pub use reading::{Lent, LentReads};
pub use transport::{Connection, Listener, Stream, TcpTransport, Transport};
