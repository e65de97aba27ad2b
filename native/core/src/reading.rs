//! Reading a connection: one read from its socket, and the frames it completes on their
//! way to the incoming queue. The reactor reads this way, and so does a thread a
//! connection's reads are lent to.
//!
//! # Contract
//!
//! - A connection's read state (its decoder) is in its [`ReadLease`], under a lock. Whoever
//!   reads the socket holds the lock for the read and for the delivery of the frames it
//!   completed, so frames enter the incoming queue in the order they arrived, whichever
//!   thread read them.
//! - **Lending.** A receiver that waits in an event loop on another thread (the Node
//!   binding) may borrow a connection's reads ([`Mesh::lend_reads`](crate::Mesh::lend_reads)):
//!   it polls the socket in its own loop and reads it itself ([`LentReads::read`]), so a
//!   frame that arrives wakes one thread instead of two (the reactor, which then wakes the
//!   receiver). Only a stream with a raw socket (TCP on Unix) can be lent, and only while
//!   its connection is open and the reactor holds no frames that did not fit the incoming
//!   queue (they go first).
//! - Lending takes read interest off the reactor's poll, and the reactor does not read a
//!   lent connection. Giving it back puts read interest back; epoll then reports a socket
//!   that is readable at that moment, so the reactor reads whatever arrived meanwhile.
//! - The reactor takes a connection back, without waiting for the borrower, when it begins
//!   to close it; the borrower learns on its next read ([`Lent::No`]). A lent read that
//!   meets the end of the stream, an error or a malformed frame gives the connection back
//!   with the reason, and the reactor closes it with that reason, after the frames read
//!   before it. The borrower never touches the socket once its connection is closing, so
//!   the reactor may close it as usual.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, MutexGuard};
use std::{fmt, io};

use crate::codec::FrameDecoder;
use crate::error::DisconnectReason;
use crate::incoming::{Delivery, IncomingQueue};
use crate::outgoing::RawSocket;
use crate::reactor::{Command, Shared};
use crate::transport::Stream;
use crate::Envelope;

/// Size of one read into a reader's buffer.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// A payload with at least this many bytes still to come is read straight into its own
/// buffer rather than through the reader's (one copy fewer).
pub(crate) const DIRECT_READ: usize = 16 * 1024;
/// Frames with shorter payloads leave a read together, in one buffer ([`Delivery::Frames`]).
pub(crate) const RUN_PAYLOAD_LIMIT: usize = 8 * 1024;
/// Bytes a lent read takes before it lets its event loop go on.
const LENT_BUDGET: usize = 4 * READ_CHUNK;

/// What one read did.
pub(crate) enum Step {
    /// Read `n` bytes (at least one) and delivered the frames they completed; `short`: fewer
    /// than were asked for, so the socket had no more then.
    Read { n: usize, short: bool },
    /// Nothing to read now.
    WouldBlock,
    /// The connection has ended.
    End(DisconnectReason),
}

/// A connection's reading state.
#[derive(Debug)]
pub(crate) struct ReadSide {
    pub(crate) decoder: FrameDecoder,
    /// Its last frame was large: read the next header alone, so that the payload after it
    /// is read straight into its own buffer rather than copied out of the shared one.
    large_frames: bool,
}

/// Where a read's bytes come from: the connection's stream, or its raw socket.
pub(crate) trait Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// As [`Stream::read_append`].
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

impl Source for Box<dyn Stream> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }

    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        Stream::read_append(&mut **self, buf, max)
    }
}

/// Reads once from `source` (at most [`READ_CHUNK`] bytes) and delivers every frame the
/// bytes complete, in order. Retries an interrupted read.
pub(crate) fn read_once(
    id: usize,
    side: &mut ReadSide,
    source: &mut impl Source,
    scratch: &mut [u8],
    deliver: &mut impl FnMut(Delivery),
) -> Step {
    loop {
        let decoder = &mut side.decoder;
        if decoder.payload_remaining() >= DIRECT_READ {
            // A large payload in progress: read it straight into its own buffer.
            let asked = decoder.payload_remaining().min(READ_CHUNK);
            match decoder.fill_payload(READ_CHUNK, |payload, window| {
                source.read_append(payload, window)
            }) {
                Ok((0, _)) => {
                    return Step::End(DisconnectReason::EofMidFrame {
                        buffered: decoder.buffered(),
                    })
                }
                Ok((n, frame)) => {
                    let short = n < asked;
                    if let Some(payload) = frame {
                        side.large_frames = true;
                        deliver(Delivery::Envelope(Envelope::new(id, payload)));
                    }
                    return Step::Read { n, short };
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::WouldBlock,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Step::End(DisconnectReason::Io(err)),
            }
        }
        let limit = match side.large_frames {
            true => decoder.wanted(),
            false => READ_CHUNK,
        }
        .min(scratch.len());
        let n = match source.read(&mut scratch[..limit]) {
            Ok(0) => {
                return Step::End(match decoder.buffered() {
                    0 => DisconnectReason::Eof,
                    buffered => DisconnectReason::EofMidFrame { buffered },
                })
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::WouldBlock,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Step::End(DisconnectReason::Io(err)),
        };
        let mut input = &scratch[..n];
        loop {
            if let Some(frames) = decoder.decode_run(&mut input, RUN_PAYLOAD_LIMIT) {
                side.large_frames = false;
                deliver(Delivery::Frames { id, frames });
            }
            match decoder.decode(&mut input) {
                Ok(Some(payload)) => {
                    side.large_frames = payload.len() >= DIRECT_READ;
                    deliver(Delivery::Envelope(Envelope::new(id, payload)));
                }
                Ok(None) => {
                    return Step::Read {
                        n,
                        short: n < limit,
                    }
                }
                Err(err) => return Step::End(DisconnectReason::Protocol(err)),
            }
        }
    }
}

/// A connection's read state, shared by the reactor and a borrower of its reads.
#[derive(Debug)]
pub(crate) struct ReadLease {
    /// The socket a borrower reads, if the stream has one.
    socket: Option<RawSocket>,
    state: Mutex<LeaseState>,
}

/// What the lock of a [`ReadLease`] guards.
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub(crate) side: ReadSide,
    /// A borrower reads the connection; the reactor does not.
    pub(crate) lent: bool,
    /// The reactor has registered the socket with its poll (lending changes that).
    pub(crate) registered: bool,
    /// The reactor is closing the connection: no borrower touches its socket any more.
    pub(crate) closing: bool,
    /// Why a lent read ended the connection; the reactor closes it with this reason.
    pub(crate) failed: Option<DisconnectReason>,
}

impl ReadLease {
    pub(crate) fn new(decoder: FrameDecoder, socket: Option<RawSocket>) -> Self {
        ReadLease {
            socket,
            state: Mutex::new(LeaseState {
                side: ReadSide {
                    decoder,
                    large_frames: false,
                },
                lent: false,
                registered: false,
                closing: false,
                failed: None,
            }),
        }
    }

    /// The state. A poisoned lock only means a panic elsewhere; the state is still whole
    /// (every change to it is a single assignment).
    pub(crate) fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What a borrower's read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lent {
    /// Still lent: this many frames were delivered (maybe none); poll on.
    Yes(usize),
    /// No longer lent (given back, taken back by the reactor, or ended): stop polling.
    No,
}

/// The reads of one connection, lent to the thread that holds this (see the module
/// contract). Dropping it gives them back.
pub struct LentReads {
    id: usize,
    lease: Arc<ReadLease>,
    shared: Arc<Shared>,
    incoming: Arc<IncomingQueue>,
    commands: crossbeam_channel::Sender<Command>,
    scratch: Box<[u8]>,
}

impl LentReads {
    /// Lends `lease`'s reads, if it can be lent now.
    pub(crate) fn lend(
        id: usize,
        lease: Arc<ReadLease>,
        shared: Arc<Shared>,
        incoming: Arc<IncomingQueue>,
        commands: crossbeam_channel::Sender<Command>,
    ) -> Option<Self> {
        let socket = lease.socket?;
        {
            let mut state = lease.lock();
            let lendable = state.registered && !state.lent && !state.closing;
            if !lendable || state.failed.is_some() || shared.holds_stalled() {
                return None;
            }
            // Only the lock keeps the reactor from closing the socket under this call.
            shared.set_read_interest(socket, id, false).ok()?;
            state.lent = true;
        }
        Some(LentReads {
            id,
            lease,
            shared,
            incoming,
            commands,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }

    /// The connection's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The socket to poll for reading. The borrower must not read it, write it or close it,
    /// and the reactor may close it once it takes the reads back: a poller that may outlive
    /// the lending polls [`duplicate_socket`](Self::duplicate_socket) instead.
    #[cfg(unix)]
    pub fn socket(&self) -> std::os::fd::RawFd {
        self.lease.socket.expect("only a socket is lent")
    }

    /// A duplicate of the socket, for a poller that may outlive the connection: the
    /// duplicate is the caller's to close. Made under the lease's lock, while the reads are
    /// lent (so the socket is open); an error if they are not lent any more.
    #[cfg(unix)]
    pub fn duplicate_socket(&self) -> io::Result<std::os::fd::OwnedFd> {
        let state = self.lease.lock();
        if !state.lent {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no longer lent",
            ));
        }
        // SAFETY: lent, so not closing: the reactor has not closed the socket, and cannot
        // while the lock is held.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.socket()) };
        socket.try_clone_to_owned()
    }

    /// Reads what has arrived, up to a budget, and queues the frames it completes for the
    /// receivers (past the incoming queue's capacity if need be: at most the budget's
    /// worth). Call it when the socket is readable and the consumer is armed
    /// ([`Incoming::is_armed`](crate::Incoming::is_armed)); a read that delivers disarms it,
    /// as the reactor's notification would.
    // Off Unix no reads are lent (there is no socket to lend): the body cannot be reached.
    #[cfg_attr(not(unix), allow(unreachable_code, unused))]
    pub fn read(&mut self) -> Lent {
        let mut state = self.lease.lock();
        if !state.lent {
            return Lent::No;
        }
        let mut frames = 0;
        let mut total = 0;
        let incoming = &self.incoming;
        let mut deliver = |delivery: Delivery| {
            frames += delivery.len();
            incoming.push_over(delivery);
        };
        let mut source = SocketSource(self.lease.socket.expect("only a socket is lent"));
        let side = &mut state.side;
        let reason = loop {
            match read_once(self.id, side, &mut source, &mut self.scratch, &mut deliver) {
                // A short read emptied the socket: the next would only say WouldBlock, and
                // the poll reports what comes after.
                Step::Read { short: true, .. } => break None,
                Step::Read { n, .. } => {
                    total += n;
                    if total >= LENT_BUDGET {
                        break None;
                    }
                }
                Step::WouldBlock => break None,
                Step::End(reason) => break Some(reason),
            }
        };
        let Some(reason) = reason else {
            if frames > 0 {
                // The waiting consumer is served, as if the reactor had notified it: it
                // arms again once it has taken what is queued, and a borrower reads only
                // while it is armed, so a peer that floods a lent connection fills the
                // incoming queue by at most a budget past its capacity.
                self.shared.recv_armed.store(false, SeqCst);
            }
            return Lent::Yes(frames);
        };
        // Ended: the reactor closes it, after the frames delivered above.
        state.lent = false;
        state.failed = Some(reason);
        drop(state);
        let _ = self.commands.send(Command::ReadFailed { id: self.id });
        let _ = self.shared.wake();
        Lent::No
    }

    /// True while the reads are still lent (not taken back by the reactor, not ended).
    pub fn is_lent(&self) -> bool {
        self.lease.lock().lent
    }
}

impl fmt::Debug for LentReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LentReads").field("id", &self.id).finish()
    }
}

impl Drop for LentReads {
    /// Gives the reads back to the reactor, unless it has taken them already.
    #[cfg_attr(not(unix), allow(unreachable_code, unused))]
    fn drop(&mut self) {
        let mut state = self.lease.lock();
        if !state.lent {
            return;
        }
        state.lent = false;
        if !state.closing {
            let socket = self.lease.socket.expect("only a socket is lent");
            if self
                .shared
                .set_read_interest(socket, self.id, true)
                .is_err()
            {
                // The poll refused: have the reactor read it anyway (it reads until
                // WouldBlock, so nothing that arrived is left behind).
                let _ = self.commands.send(Command::Read { id: self.id });
                let _ = self.shared.wake();
            }
        }
    }
}

/// Reads a raw socket (on Unix, what the stream's own reads do).
struct SocketSource(RawSocket);

#[cfg(unix)]
impl SocketSource {
    fn recv(&self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        // SAFETY: the socket belongs to a connection whose lease is lent, and the lease's
        // lock is held for the whole read: the reactor closes the socket only after it has
        // marked the lease closing, under that lock.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) };
        socket2::SockRef::from(&fd).recv(buf)
    }
}

#[cfg(unix)]
impl Source for SocketSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: initialised bytes seen as possibly uninitialised; `recv` only writes.
        let uninit = unsafe {
            std::slice::from_raw_parts_mut(
                buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                buf.len(),
            )
        };
        self.recv(uninit)
    }

    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let spare = &mut buf.spare_capacity_mut()[..max];
        let n = self.recv(spare)?;
        // SAFETY: `recv` initialised the first `n` bytes of `spare`, which start at
        // `buf.len()`.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

#[cfg(not(unix))]
impl Source for SocketSource {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match self.0 {}
    }

    fn read_append(&mut self, _: &mut Vec<u8>, _: usize) -> io::Result<usize> {
        match self.0 {}
    }
}
