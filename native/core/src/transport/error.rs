//! The errors of making connections and of one connection's own traffic.
//!
//! They sit at the transport layer, below the queues and the mesh, so that nothing here
//! names what is above; [`crate::error`] re-exports them beside the mesh's own errors.

use std::{fmt, io};

use crate::codec::FrameError;
use crate::splinter::NegotiationError;

/// Why a transport could not listen.
#[derive(Debug)]
pub enum ListenError {
    /// The bind address is not one this transport accepts.
    InvalidEndpoint(String),
    /// Something else listens on the address already.
    AddressInUse(io::Error),
    /// The operating system refused (permission, no such address, …).
    Io(io::Error),
    /// This platform lacks the transport (Unix sockets on Windows).
    Unsupported(String),
}

impl ListenError {
    /// `AddressInUse` for that error of the system, `Io` for any other.
    pub fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::AddrInUse => ListenError::AddressInUse(err),
            _ => ListenError::Io(err),
        }
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InvalidEndpoint(bind) => write!(f, "not a valid bind address: {bind:?}"),
            ListenError::AddressInUse(err) => write!(f, "the address is in use: {err}"),
            ListenError::Io(err) => write!(f, "could not listen: {err}"),
            ListenError::Unsupported(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Io(err) | ListenError::AddressInUse(err) => Some(err),
            ListenError::InvalidEndpoint(_) | ListenError::Unsupported(_) => None,
        }
    }
}

/// Why a transport could not connect.
#[derive(Debug)]
pub enum ConnectError {
    /// The endpoint is not one this transport accepts.
    InvalidEndpoint(String),
    /// The connection failed (refused, unreachable, name not resolved).
    Io(io::Error),
    /// The deadline passed before the connection was made.
    Timeout,
    /// The attempt was cancelled.
    Aborted,
    /// This platform lacks the transport (Unix sockets on Windows).
    Unsupported(String),
    /// The TLS handshake failed, or the server was not authenticated (unknown CA, expired
    /// certificate, another name).
    Tls(String),
}

impl From<OpenError> for ConnectError {
    /// A connection that could not open fails its connect: `Tls` for its handshake, `Io`
    /// for the rest.
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Tls(message) => ConnectError::Tls(message),
            other => ConnectError::Io(other.into_io()),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidEndpoint(endpoint) => {
                write!(f, "not a valid endpoint: {endpoint:?}")
            }
            ConnectError::Io(err) => write!(f, "could not connect: {err}"),
            ConnectError::Timeout => f.write_str("timed out connecting"),
            ConnectError::Aborted => f.write_str("the connection attempt was aborted"),
            ConnectError::Unsupported(what) => f.write_str(what),
            ConnectError::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a listener could not accept.
#[derive(Debug)]
pub enum AcceptError {
    /// The operating system refused (for example, too many open files).
    Io(io::Error),
    /// The deadline passed before a connection arrived.
    Timeout,
    /// The accept was cancelled.
    Aborted,
    /// The listener was closed.
    Closed,
    /// The TLS handshake of the connection accepted failed, or its client was not
    /// authenticated; the connection was closed and the listener goes on.
    Tls(String),
}

impl From<OpenError> for AcceptError {
    /// A connection accepted that could not open fails its accept.
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Tls(message) => AcceptError::Tls(message),
            other => AcceptError::Io(other.into_io()),
        }
    }
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Io(err) => write!(f, "could not accept: {err}"),
            AcceptError::Timeout => f.write_str("timed out waiting for a connection"),
            AcceptError::Aborted => f.write_str("the accept was aborted"),
            AcceptError::Closed => f.write_str("the listener was closed"),
            AcceptError::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for AcceptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcceptError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a [`Connection`](super::Connection)'s own `send` or `recv` (before it joins a mesh)
/// failed.
#[derive(Debug)]
pub enum ConnectionError {
    /// The peer closed the connection (`buffered` bytes of an unfinished frame arrived).
    Closed {
        /// Bytes of a frame that had begun to arrive; 0 if the peer closed between frames.
        buffered: usize,
    },
    /// The peer broke the framing; the connection is unusable.
    Protocol(FrameError),
    /// The deadline passed before the operation finished (what had arrived is kept).
    TimedOut,
    /// The operation was cancelled; the connection is handed back with what had arrived of
    /// a frame (whoever cancelled decides whether to close it).
    Aborted,
    /// The payload is longer than the connection's maximum frame size.
    TooLarge(usize),
    /// Any other failure of the socket.
    Io(io::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Closed { buffered: 0 } => f.write_str("the peer closed the connection"),
            ConnectionError::Closed { buffered } => write!(
                f,
                "the peer closed the connection in the middle of a frame ({buffered} bytes of it arrived)"
            ),
            ConnectionError::Protocol(err) => write!(f, "protocol error: {err}"),
            ConnectionError::TimedOut => f.write_str("timed out"),
            ConnectionError::Aborted => f.write_str("the operation was aborted"),
            ConnectionError::TooLarge(len) => write!(
                f,
                "a payload of {len} bytes exceeds the connection's maximum frame size"
            ),
            ConnectionError::Io(err) => write!(f, "connection error: {err}"),
        }
    }
}

impl std::error::Error for ConnectionError {}

/// Why a connection's stream ended: the reason a mesh gives when it removes a connection by
/// itself (see [`Disconnect`](crate::Disconnect)).
#[derive(Debug)]
pub enum DisconnectReason {
    /// The peer closed the connection between frames.
    Eof,
    /// The peer closed the connection in the middle of a frame.
    EofMidFrame {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// The peer broke the framing (for example, a header over the maximum frame size).
    Protocol(FrameError),
    /// The socket failed (reset by the peer, broken pipe, …).
    Io(io::Error),
    /// Nothing came from the peer within the time allowed: the system declared it dead (a
    /// read or write failed with `ETIMEDOUT`, after keepalive probes went unanswered or
    /// written data stayed unacknowledged for the user timeout), or the mesh's own idle
    /// timeout passed.
    Timeout,
    /// The mesh was shut down with frames for the connection not yet written: they are the
    /// notice's `unsent`.
    Shutdown,
}

impl DisconnectReason {
    /// The reason for a read or write that failed with `err`: [`Timeout`](Self::Timeout)
    /// if the system timed the connection out (`TimedOut`: keepalive or user timeout),
    /// [`Io`](Self::Io) for any other failure.
    pub fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::TimedOut => DisconnectReason::Timeout,
            _ => DisconnectReason::Io(err),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Eof => f.write_str("the peer closed the connection"),
            DisconnectReason::EofMidFrame { buffered } => write!(
                f,
                "the peer closed the connection in the middle of a frame ({buffered} bytes of it arrived)"
            ),
            DisconnectReason::Protocol(err) => write!(f, "protocol error: {err}"),
            DisconnectReason::Io(err) => write!(f, "connection error: {err}"),
            DisconnectReason::Timeout => f.write_str(
                "no data arrived from the peer within the time allowed (keepalive, user timeout or idle timeout)",
            ),
            DisconnectReason::Shutdown => {
                f.write_str("the mesh was shut down before these frames were written")
            }
        }
    }
}

/// A TLS failure, carried inside the `io::Error` a TLS stream returns (kind
/// `InvalidData`, or `UnexpectedEof` for a peer that left during the handshake).
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// Why a connection could not open: its TLS handshake failed, its negotiation did, or its
/// socket did.
#[derive(Debug)]
pub enum OpenError {
    /// The peer and this side agree on no frame version (or the peer left).
    Negotiation(NegotiationError),
    /// The TLS handshake failed, or the peer was not authenticated.
    Tls(String),
    /// The socket failed.
    Io(io::Error),
}

impl OpenError {
    /// A stream's error while it opens: `Tls` if it carries a [`TlsFailure`].
    pub fn from_stream(err: io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<TlsFailure>()) {
            let message = err.into_inner().map(|inner| inner.to_string());
            return OpenError::Tls(message.unwrap_or_default());
        }
        OpenError::Io(err)
    }

    /// As an `io::Error`: a failed negotiation is `InvalidData` (a closed peer
    /// `UnexpectedEof`), with the negotiation's error inside.
    pub fn into_io(self) -> io::Error {
        match self {
            OpenError::Io(err) => err,
            OpenError::Tls(message) => {
                io::Error::new(io::ErrorKind::InvalidData, TlsFailure(message))
            }
            OpenError::Negotiation(err @ NegotiationError::Closed) => {
                io::Error::new(io::ErrorKind::UnexpectedEof, err)
            }
            OpenError::Negotiation(err) => io::Error::new(io::ErrorKind::InvalidData, err),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Negotiation(err) => err.fmt(f),
            OpenError::Tls(why) => write!(f, "TLS: {why}"),
            OpenError::Io(err) => write!(f, "could not open the connection: {err}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Negotiation(err) => Some(err),
            OpenError::Tls(_) => None,
            OpenError::Io(err) => Some(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_read_or_write_is_a_timeout_and_other_failures_stay_io() {
        let timed_out = io::Error::from_raw_os_error(timed_out_code());
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            DisconnectReason::from_io(timed_out),
            DisconnectReason::Timeout
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            DisconnectReason::from_io(reset),
            DisconnectReason::Io(err) if err.kind() == io::ErrorKind::ConnectionReset
        ));
    }

    /// `ETIMEDOUT` (`WSAETIMEDOUT` on Windows): what a socket's read or write returns once
    /// the system gave up on the peer.
    fn timed_out_code() -> i32 {
        if cfg!(windows) {
            10060
        } else if cfg!(any(target_os = "linux", target_os = "android")) {
            110
        } else {
            60
        }
    }
}
