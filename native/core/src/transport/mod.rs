//! Transports: how connections are made. Everything above sees only [`Connection`]s, so new
//! transports (TLS, Unix sockets, in-process) add a [`Stream`] and a [`Transport`]
//! without touching the reactor.
//!
//! # Contract
//!
//! - A [`Stream`] is a byte stream that mio can poll. Inside a mesh it is non-blocking and
//!   registered edge-triggered for reading and writing; its reads and writes are retried
//!   until `WouldBlock`.
//! - A [`Connection`] is a stream plus its framing state: the partial frame it is reading,
//!   the frames it has read that nobody has received, and the frames it has not finished
//!   writing. That state travels with it into a mesh and back out of
//!   [`Mesh::remove`](crate::Mesh::remove), so no byte is lost or repeated.
//! - Making a connection never needs a thread: [`Transport::start_connect`] gives a
//!   [`Connecting`] that an event loop drives, and a [`Listener`] accepts without blocking
//!   when it is readable. The blocking [`Transport::connect`] and [`Listener::accept`] are
//!   for programs without an event loop.
//! - Endpoints are strings. The TCP transport takes `host:port` and `tcp://host:port`,
//!   and names its endpoints `tcp://ip:port`; the TLS transport takes and names
//!   `tcps://host:port`; the Unix transport takes and names `unix:///absolute/path`; the
//!   in-process one `inproc://name`.
//! - A stream may have an opening of its own (a TLS handshake, [`Stream::open_some`]) and
//!   output of its own to finish writing after its caller's bytes are all taken
//!   ([`Stream::flush_output`]): whoever owns the connection drives both without blocking.
//! - A stream whose readiness events do not say which direction is ready (the in-memory
//!   streams of in-process connections) says so ([`Stream::events_wake_both`]); its owner
//!   then tries both directions at each event.

/// Implements mio's `Source` for a type by handing every call to one of its fields.
#[allow(unused_macros)] // where no transport of the platform needs it
macro_rules! delegate_source {
    ($type:ty, $field:ident) => {
        impl mio::event::Source for $type {
            fn register(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.$field.register(registry, token, interests)
            }

            fn reregister(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.$field.reregister(registry, token, interests)
            }

            fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
                self.$field.deregister(registry)
            }
        }
    };
}

pub(crate) mod connection;
pub mod error;
mod inproc;
mod memory;
mod tcp;
mod tls;
mod unix;

use std::time::Duration;
use std::{fmt, io};

pub use connection::{Connection, DIRECT_READ, RUN_PAYLOAD_LIMIT};
pub use error::{AcceptError, ConnectError, ConnectionError, DisconnectReason, ListenError};
pub use inproc::InprocTransport;
#[cfg(unix)]
pub use inproc::{InprocConnecting, InprocListener};
pub use tcp::{KeepAlive, TcpConnecting, TcpListener, TcpTransport, USER_TIMEOUT_SUPPORTED};
pub use tls::{TlsOptions, TlsOptionsError, TlsTransport};
pub use unix::UnixTransport;
#[cfg(unix)]
pub use unix::{UnixConnecting, UnixListener};

/// A byte stream a [`Connection`] runs over.
pub trait Stream: io::Read + io::Write + mio::event::Source + Send + fmt::Debug {
    /// This end's endpoint, in the transport's own form (`tcp://127.0.0.1:4000`).
    fn local_endpoint(&self) -> String;
    /// The peer's endpoint.
    fn remote_endpoint(&self) -> String;
    /// Puts the stream in non-blocking (`true`) or blocking mode.
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
    /// The longest a blocking read waits; `None` waits for ever.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Shuts both directions down, so the peer sees the end of the stream.
    fn shutdown(&self) -> io::Result<()>;
    /// Closes the stream for good: as [`shutdown`](Self::shutdown), after telling the peer
    /// at the stream's own level if it has one (TLS's `close_notify`, best effort).
    fn close(&mut self) -> io::Result<()> {
        self.shutdown()
    }
    /// False while the stream's own opening (a TLS handshake) is not done; nothing but
    /// [`open_some`](Self::open_some) may be called until it is.
    fn is_open(&self) -> bool {
        true
    }
    /// Takes the stream's own opening as far as it goes without blocking: `Ok(true)` once
    /// it is open, `Ok(false)` while it waits for the socket to be readable or writable.
    fn open_some(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// True while the stream holds bytes of its own that the socket has not taken (TLS
    /// records made from plaintext it accepted, or by reading).
    fn has_pending_output(&self) -> bool {
        false
    }
    /// Writes the stream's own pending bytes: `Ok(true)` once none are left, `Ok(false)`
    /// if the socket would block first (its next writable event is the time to go on).
    fn flush_output(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// The peer's certificate (DER) that the stream's opening verified, if any.
    fn peer_certificate(&self) -> Option<&[u8]> {
        None
    }
    /// True if a readiness event of the stream may stand for either direction, whatever
    /// the poll says it is (an in-memory stream's bells, which are polled for reading):
    /// its owner then tries both reading and writing at each event.
    fn events_wake_both(&self) -> bool {
        false
    }
    /// Ends the writing direction, so that the peer reads the end of the stream after
    /// everything written, while this end goes on reading: `Ok(true)` once done, `Ok(false)`
    /// if the socket would block first (call again at its writable event). The default
    /// shuts both directions down.
    fn finish_writing(&mut self) -> io::Result<bool> {
        self.shutdown().map(|()| true)
    }
    /// Bytes written that the peer's system has acknowledged, where the system tells (TCP
    /// on Linux, through `TCP_INFO`); `None` elsewhere. Still known after the connection
    /// failed.
    fn bytes_acknowledged(&self) -> Option<u64> {
        None
    }
    /// Reads at most `max` bytes, appending them to `buf`; returns how many, as `read`.
    /// The default reads into zeroed room; a stream that can read into `buf`'s spare
    /// capacity as it is (TCP on Unix) saves zeroing large payloads before they arrive.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let have = buf.len();
        buf.resize(have + max, 0);
        let read = self.read(&mut buf[have..]);
        buf.truncate(have + *read.as_ref().unwrap_or(&0));
        read
    }
}

/// A way of making connections.
pub trait Transport: Send + Sync + fmt::Debug {
    /// True if this transport can connect to or listen on `address`.
    fn accepts(&self, address: &str) -> bool;
    /// Connects to `endpoint`, blocking until the connection is made.
    fn connect(&self, endpoint: &str) -> Result<Connection, ConnectError>;
    /// Starts connecting to `endpoint` without blocking (but for resolving a host name:
    /// give an address to avoid that); an event loop finishes it ([`Connecting`]).
    fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError>;
    /// Listens on `bind`.
    fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError>;
}

/// A connection being made. An event loop registers it for reading and writing (it is a
/// mio `Source`) and calls [`advance`](Connecting::advance) whenever it is ready, until
/// that returns the connection or the error.
pub trait Connecting: mio::event::Source + Send + fmt::Debug {
    /// Takes the attempt as far as it can go without blocking: `None` while it must wait
    /// for the next readiness event, then, once, the outcome.
    fn advance(&mut self) -> Option<Result<Connection, ConnectError>>;
}

/// A source of incoming connections. It can be polled (it is a mio `Source`, readable
/// when a connection waits) and accept without blocking, so an event loop can drive it.
pub trait Listener: mio::event::Source + Send + fmt::Debug {
    /// Waits for the next connection.
    fn accept(&mut self) -> Result<Connection, AcceptError>;
    /// The next connection if one is waiting, without blocking. An error that concerns
    /// only the would-be connection (it was reset before it was accepted) is skipped.
    fn try_accept(&mut self) -> Result<Option<Connection>, AcceptError>;
    /// The endpoint peers connect to, with the port actually bound.
    fn endpoint(&self) -> String;
    /// Something that frees the listener's address at once when called, from any thread,
    /// for a listener whose owner (an event loop) drops it later: a close then frees the
    /// name before it returns, so the next listen on it succeeds. `None` (the default)
    /// where only dropping the listener frees the address (a TCP port, a socket file).
    fn releaser(&self) -> Option<Releaser> {
        None
    }
}

/// Frees a listener's address (see [`Listener::releaser`]); calling it twice does nothing.
pub type Releaser = Box<dyn Fn() + Send + Sync>;
