//! What a connection (and a mesh, over all of its connections) has carried: frames and bytes
//! in and out, and what waits on either side.
//!
//! # Contract
//!
//! - One writer at a time: only the owner of a connection (the reactor, or a sender that
//!   holds its state from the desk, or the program before and after the connection is in a
//!   mesh) changes its counters, so a change is a relaxed load and store, never a
//!   read-modify-write on the reactor's path. Readers (`Mesh::stats`) load them relaxed from
//!   any thread: each value is exact as of some recent moment; values read together are not
//!   a snapshot of one moment.
//! - Totals only grow. A mesh's totals are bumped by the same calls that bump a
//!   connection's, so they never go back when a connection leaves.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Counters of one connection, or of a whole mesh.
#[derive(Debug, Default)]
pub struct Counters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    /// Frames taken from the outgoing queue and not yet fully written (the write backlog).
    backlog_frames: AtomicU64,
    backlog_bytes: AtomicU64,
    /// Frames read and not yet delivered to the incoming stream (held while it is full).
    unreceived: AtomicU64,
    /// The socket has bytes the reactor has not read yet (1) or not (0).
    readable: AtomicU64,
}

/// The counters' values at one reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterValues {
    /// Frames received from the peer (decoded, whether or not taken by a receiver yet).
    pub frames_in: u64,
    /// Bytes read from the stream (headers included; for TLS, the plaintext).
    pub bytes_in: u64,
    /// Frames fully written to the stream.
    pub frames_out: u64,
    /// Bytes written to the stream (headers included; for TLS, the plaintext).
    pub bytes_out: u64,
    /// Frames taken from the outgoing queue, not yet fully written.
    pub backlog_frames: u64,
    /// Bytes of those frames not yet written.
    pub backlog_bytes: u64,
    /// Frames read, waiting for room in the incoming stream.
    pub unreceived: u64,
    /// The socket has bytes not read yet (reading waits for its turn, or for room).
    pub readable: bool,
}

fn bump(counter: &AtomicU64, by: u64) {
    // One writer at a time (see the module doc): no read-modify-write needed.
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

impl Counters {
    /// Fresh counters, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Counters::default())
    }

    pub(crate) fn read(&self, bytes: usize) {
        bump(&self.bytes_in, bytes as u64);
    }

    pub(crate) fn received(&self, frames: usize) {
        bump(&self.frames_in, frames as u64);
    }

    pub(crate) fn wrote(&self, bytes: usize) {
        bump(&self.bytes_out, bytes as u64);
    }

    pub(crate) fn sent(&self, frames: usize) {
        bump(&self.frames_out, frames as u64);
    }

    /// Sets the gauges of what waits: the backlog, and the frames read and not delivered.
    pub(crate) fn waiting(&self, backlog_frames: usize, backlog_bytes: usize, unreceived: usize) {
        self.backlog_frames.store(backlog_frames as u64, Relaxed);
        self.backlog_bytes.store(backlog_bytes as u64, Relaxed);
        self.unreceived.store(unreceived as u64, Relaxed);
    }

    /// Sets whether the socket has bytes not read yet.
    pub(crate) fn set_readable(&self, readable: bool) {
        self.readable.store(readable as u64, Relaxed);
    }

    /// Adds what `other` carried (not what waits in it): a connection that joins a dialled
    /// id brings the counts of its handshake.
    pub(crate) fn absorb(&self, other: &Counters) {
        let other = other.values();
        bump(&self.frames_in, other.frames_in);
        bump(&self.bytes_in, other.bytes_in);
        bump(&self.frames_out, other.frames_out);
        bump(&self.bytes_out, other.bytes_out);
    }

    /// The values now (each relaxed; see the module doc).
    pub fn values(&self) -> CounterValues {
        CounterValues {
            frames_in: self.frames_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            backlog_frames: self.backlog_frames.load(Relaxed),
            backlog_bytes: self.backlog_bytes.load(Relaxed),
            unreceived: self.unreceived.load(Relaxed),
            readable: self.readable.load(Relaxed) != 0,
        }
    }
}

/// An id's connection: being connected (a dialled id between connections), connected, or
/// ending (its writing is finished or finishing; it still reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// A dialled id waiting for its (next) connection.
    Connecting = 0,
    /// Carrying traffic.
    Connected = 1,
    /// `end` was called: what was queued is being written, then the write side closes.
    Ending = 2,
    /// It left: its notice is on its way (the id is no longer in the mesh's stats).
    Closed = 3,
}

/// What a mesh knows of one of its ids, for its stats: shared by the mesh's handles
/// (readers) and the reactor (the one writer).
#[derive(Debug)]
pub struct Slot {
    counters: Arc<Counters>,
    phase: std::sync::atomic::AtomicU8,
    /// Milliseconds since the Unix epoch when its current connection joined; 0 while it
    /// has none.
    since: AtomicU64,
    dialled: bool,
}

impl Slot {
    /// The slot of an id whose connection is `counters`', or of a dialled id (fresh
    /// counters, which its connections adopt).
    pub(crate) fn new(counters: Arc<Counters>, dialled: bool) -> Arc<Self> {
        Arc::new(Slot {
            counters,
            phase: std::sync::atomic::AtomicU8::new(Phase::Connecting as u8),
            since: AtomicU64::new(0),
            dialled,
        })
    }

    /// Its counters (a dialled id's span its connections).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Where its connection is.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::Connecting,
            1 => Phase::Connected,
            2 => Phase::Ending,
            _ => Phase::Closed,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
        if phase == Phase::Connecting {
            self.since.store(0, Relaxed);
        }
    }

    /// Marks it connected now.
    pub(crate) fn connected(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.since.store(now, Relaxed);
        self.phase.store(Phase::Connected as u8, Relaxed);
    }

    /// When its current connection joined (milliseconds since the Unix epoch), if it has one.
    pub fn connected_since(&self) -> Option<u64> {
        match self.since.load(Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// True for an id made by [`Mesh::reserve`](crate::Mesh::reserve).
    pub fn is_dialled(&self) -> bool {
        self.dialled
    }
}
