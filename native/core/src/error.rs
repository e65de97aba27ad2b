//! Every error of the core, in one place: the mesh's own here, the transports' re-exported
//! from [`crate::transport::error`] (they sit below, where connections are made).
//!
//! Errors of operations that take a message or a connection hand it back
//! ([`SendError::Full`] carries the [`Envelope`], [`AddError::Shutdown`] the
//! [`Connection`]), so nothing is lost without the caller getting it back.
//!
//! # Not found, or disconnected
//!
//! A mesh never reuses an id. An id it never gave out is `NotFound`; a send to an id it
//! gave out, whose connection has since left (removed, disconnected, or shut down), is
//! `Disconnected`, whenever it is made. [`Mesh::remove`](crate::Mesh::remove) of a
//! connection that is no longer there is `NotFound`.

use std::{fmt, io};

use crate::codec::{EncodedFrames, MalformedFrames};
use crate::envelope::Envelope;
use crate::transport::Connection;

pub use crate::transport::error::{
    AcceptError, ConnectError, ConnectionError, DisconnectReason, ListenError,
};

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
    /// No connection has this id (now): it was never added, was removed already, was
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
    /// The mesh never gave out the envelope's id.
    NotFound(Envelope),
    /// The connection's outgoing queue is full: try again once the peer has read.
    Full(Envelope),
    /// The connection has left the mesh: removed, disconnected, or shut down.
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
    /// The mesh never gave out this id.
    NotFound(EncodedFrames),
    /// The connection's outgoing queue has fewer free places than the run has frames.
    Full(EncodedFrames),
    /// The connection has left the mesh: removed, disconnected, or shut down.
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

/// Why a run of [`Mesh::send_batch`](crate::Mesh::send_batch) was not sent. Its frames
/// are still the caller's: they were in the caller's buffer.
#[derive(Debug)]
pub enum BatchError {
    /// The mesh never gave out this id.
    NotFound,
    /// The connection's outgoing queue has fewer free places than the run has frames.
    Full,
    /// The connection has left the mesh: removed, disconnected, or shut down.
    Disconnected,
    /// A payload is longer than the connection's maximum frame size.
    TooLarge,
    /// The bytes are not whole frames.
    Malformed(MalformedFrames),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::NotFound => f.write_str("no connection ever had this id"),
            BatchError::Full => f.write_str("the outgoing queue has no room for the run"),
            BatchError::Disconnected => f.write_str("the connection has left the mesh"),
            BatchError::TooLarge => {
                f.write_str("a payload exceeds the connection's maximum frame size")
            }
            BatchError::Malformed(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for BatchError {}

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
