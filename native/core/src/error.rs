//! Every error of the core, in one place.
//!
//! Errors of operations that take a message or a connection hand it back
//! ([`SendError::Full`] carries the [`Envelope`], [`AddError::Shutdown`] the
//! [`Connection`]), so nothing is lost without the caller getting it back.

use std::{fmt, io};

use crate::codec::{EncodedFrames, FrameError};
use crate::envelope::Envelope;
use crate::transport::Connection;

/// Why [`Mesh::add`](crate::Mesh::add) refused a connection.
#[derive(Debug)]
pub enum AddError {
    /// The mesh has shut down; the connection is handed back.
    Shutdown(Box<Connection>),
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddError::Shutdown(_) => f.write_str("the mesh has shut down"),
        }
    }
}

impl std::error::Error for AddError {}

/// Why [`Mesh::remove`](crate::Mesh::remove) could not hand a connection back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveError {
    /// No connection has this id: it was never added, was removed already, was
    /// disconnected by the reactor (see [`Disconnect`](crate::Disconnect)), or the mesh
    /// has shut down.
    NotFound(usize),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::NotFound(id) => write!(f, "no connection with id {id}"),
        }
    }
}

impl std::error::Error for RemoveError {}

/// Why [`Mesh::send`](crate::Mesh::send) did not queue an envelope. Every variant but
/// `Io` hands the envelope back.
#[derive(Debug)]
pub enum SendError {
    /// No connection has the envelope's id.
    NotFound(Envelope),
    /// The connection's outgoing queue is full: try again once the peer has read.
    Full(Envelope),
    /// The connection was disconnected (or the mesh shut down).
    Disconnected(Envelope),
    /// The payload is longer than the connection's maximum frame size.
    TooLarge(Envelope),
    /// The envelope was queued but the reactor could not be woken to send it.
    Io(io::Error),
}

impl SendError {
    /// The envelope that was not queued, if this error carries one.
    pub fn into_envelope(self) -> Option<Envelope> {
        match self {
            SendError::NotFound(envelope)
            | SendError::Full(envelope)
            | SendError::Disconnected(envelope)
            | SendError::TooLarge(envelope) => Some(envelope),
            SendError::Io(_) => None,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotFound(envelope) => write!(f, "no connection with id {}", envelope.id()),
            SendError::Full(envelope) => {
                write!(
                    f,
                    "the outgoing queue of connection {} is full",
                    envelope.id()
                )
            }
            SendError::Disconnected(envelope) => {
                write!(f, "connection {} is disconnected", envelope.id())
            }
            SendError::TooLarge(envelope) => write!(
                f,
                "a payload of {} bytes exceeds the maximum frame size of connection {}",
                envelope.payload().len(),
                envelope.id()
            ),
            SendError::Io(err) => write!(f, "the reactor could not be woken: {err}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Mesh::send_encoded`](crate::Mesh::send_encoded) did not queue a run of frames.
/// Every variant but `Io` hands the run back.
#[derive(Debug)]
pub enum SendEncodedError {
    /// No connection has this id.
    NotFound(EncodedFrames),
    /// The connection's outgoing queue has fewer free places than the run has frames.
    Full(EncodedFrames),
    /// The connection was disconnected (or the mesh shut down).
    Disconnected(EncodedFrames),
    /// A payload is longer than the connection's maximum frame size.
    TooLarge(EncodedFrames),
    /// The run was queued but the reactor could not be woken to send it.
    Io(io::Error),
}

impl SendEncodedError {
    /// The run that was not queued, if this error carries one.
    pub fn into_frames(self) -> Option<EncodedFrames> {
        match self {
            SendEncodedError::NotFound(frames)
            | SendEncodedError::Full(frames)
            | SendEncodedError::Disconnected(frames)
            | SendEncodedError::TooLarge(frames) => Some(frames),
            SendEncodedError::Io(_) => None,
        }
    }
}

impl fmt::Display for SendEncodedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendEncodedError::NotFound(_) => write!(f, "no connection with this id"),
            SendEncodedError::Full(frames) => write!(
                f,
                "the outgoing queue has no room for {} frames",
                frames.len()
            ),
            SendEncodedError::Disconnected(_) => write!(f, "the connection is disconnected"),
            SendEncodedError::TooLarge(frames) => write!(
                f,
                "a payload of {} bytes exceeds the connection's maximum frame size",
                frames.largest_payload()
            ),
            SendEncodedError::Io(err) => write!(f, "the reactor could not be woken: {err}"),
        }
    }
}

impl std::error::Error for SendEncodedError {}

/// Why a blocking receive returned no envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The reactor stopped without being asked to (it panicked).
    Disconnected,
    /// The mesh was shut down and every envelope it had received has been taken.
    Shutdown,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Disconnected => f.write_str("the mesh reactor stopped unexpectedly"),
            RecvError::Shutdown => f.write_str("the mesh has shut down"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Why [`Mesh::recv_timeout`](crate::Mesh::recv_timeout) returned no envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    Timeout,
    /// The reactor stopped without being asked to (it panicked).
    Disconnected,
    /// The mesh was shut down and every envelope it had received has been taken.
    Shutdown,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting for an envelope"),
            RecvTimeoutError::Disconnected => f.write_str("the mesh reactor stopped unexpectedly"),
            RecvTimeoutError::Shutdown => f.write_str("the mesh has shut down"),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

/// Why [`Mesh::try_recv`](crate::Mesh::try_recv) returned no envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is waiting.
    Empty,
    /// The reactor stopped without being asked to (it panicked).
    Disconnected,
    /// The mesh was shut down and every envelope it had received has been taken.
    Shutdown,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("no envelope is waiting"),
            TryRecvError::Disconnected => f.write_str("the mesh reactor stopped unexpectedly"),
            TryRecvError::Shutdown => f.write_str("the mesh has shut down"),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// Why a transport could not listen.
#[derive(Debug)]
pub enum ListenError {
    /// The bind address is not one this transport accepts.
    InvalidEndpoint(String),
    /// The operating system refused (address in use, permission, no such address).
    Io(io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InvalidEndpoint(bind) => write!(f, "not a valid bind address: {bind:?}"),
            ListenError::Io(err) => write!(f, "could not listen: {err}"),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Io(err) => Some(err),
            ListenError::InvalidEndpoint(_) => None,
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
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidEndpoint(endpoint) => {
                write!(f, "not a valid endpoint: {endpoint:?}")
            }
            ConnectError::Io(err) => write!(f, "could not connect: {err}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(err) => Some(err),
            ConnectError::InvalidEndpoint(_) => None,
        }
    }
}

/// Why a listener could not accept.
#[derive(Debug)]
pub enum AcceptError {
    /// The operating system refused (for example, too many open files).
    Io(io::Error),
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Io(err) => write!(f, "could not accept: {err}"),
        }
    }
}

impl std::error::Error for AcceptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcceptError::Io(err) => Some(err),
        }
    }
}

/// Why a [`Connection`]'s own blocking `send` or `recv` (before it joins a mesh) failed.
#[derive(Debug)]
pub enum ConnectionError {
    /// The peer closed the connection (`buffered` bytes of an unfinished frame arrived).
    Closed {
        /// Bytes of a frame that had begun to arrive; 0 if the peer closed between frames.
        buffered: usize,
    },
    /// The peer broke the framing; the connection is unusable.
    Protocol(FrameError),
    /// The read timeout passed before a whole frame arrived (its bytes are kept).
    TimedOut,
    /// The payload is longer than the frame length field can carry.
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
            ConnectionError::TimedOut => f.write_str("timed out waiting for a frame"),
            ConnectionError::TooLarge(len) => write!(f, "a payload of {len} bytes does not fit in a frame"),
            ConnectionError::Io(err) => write!(f, "connection error: {err}"),
        }
    }
}

impl std::error::Error for ConnectionError {}

/// Why the reactor removed a connection by itself; see [`Disconnect`](crate::Disconnect).
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
        }
    }
}
