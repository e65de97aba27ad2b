//! A connection: a [`Stream`] with its framing state.
//!
//! # Contract
//!
//! - A connection's framing state has one home, here: the decoder of the frame it is
//!   reading, the frames it has read but that nobody has received yet, and the frames it
//!   has not finished writing. Whoever owns the connection (its program before it joins a
//!   mesh, the mesh's reactor while it is in one, the handshake loop during one of its own
//!   operations) owns that state with it; it moves by value, never shared.
//! - [`Connection::read_once`] is the one read path: one read from the stream and the
//!   frames it completes, appended to the connection's pending frames. Small frames of one
//!   read leave together, as one run in one buffer; a payload of [`RUN_PAYLOAD_LIMIT`]
//!   bytes or more is a buffer of its own, and one of [`DIRECT_READ`] bytes or more is read
//!   straight into that buffer.
//! - Its own `send` and `recv` (blocking, for a handshake before the mesh) and the
//!   non-blocking steps the handshake loop drives never read past the end of a frame, so
//!   the bytes that follow stay in the socket for whoever reads next.
//! - Its [`Framing`] is set by its transport and never changes. Inside wiremesh frames
//!   are always in the codec's own form (payloads, and runs with 4-byte headers); a
//!   connection with another framing translates at its edge: its decoder reads its
//!   headers, and its write backlog makes its headers as the frames go out (a run is
//!   written frame by frame, each payload still uncopied).
//! - A connection whose framing opens with a negotiation ([`Framing::SplinterV1`]) is
//!   made with the negotiation pending: whoever owns it drives it with
//!   [`open_some`](Connection::open_some) (or [`open`](Connection::open), blocking) until
//!   it is open, before anything else. Transports hand out only open connections, but
//!   for [`Listener::try_accept`](super::Listener::try_accept), whose caller (the lobby)
//!   drives the negotiation without blocking.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConnectionError, DisconnectReason, OpenError};
use super::Stream;
use crate::codec::{
    frame_header, Decoded, EncodedFrames, FrameDecoder, FrameError, Framing, HEADER_LEN,
};
use crate::counters::Counters;
use crate::splinter::{Negotiation, Side};

/// Payloads gathered into one vectored write: two slices each (header, payload). An
/// encoded run of frames is one slice.
pub(crate) const FRAMES_PER_WRITE: usize = 256;
/// Size of one read into a reader's buffer.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// A payload with at least this many bytes still to come is read straight into its own
/// buffer rather than through the reader's (one copy fewer).
pub const DIRECT_READ: usize = 16 * 1024;
/// Frames with shorter payloads leave a read together, in one buffer ([`Decoded::Run`]).
pub const RUN_PAYLOAD_LIMIT: usize = 8 * 1024;

/// What one read did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Read this many bytes (at least one); the frames they completed are pending.
    Read(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The stream has ended.
    End(DisconnectReason),
}

/// A framed connection, made by a [`Transport`](super::Transport) or a
/// [`Listener`](super::Listener).
///
/// Before it joins a mesh (and after [`Mesh::remove`](crate::Mesh::remove) hands it back)
/// it can exchange frames itself with the blocking [`send`](Self::send) and
/// [`recv`](Self::recv), for example for a handshake. Its framing state travels with it:
/// frames queued in a mesh but not yet written leave with it and go out on its next
/// `send`; frames the mesh had read but nobody received, and a frame it had half read, are
/// what its next `recv`s return.
#[derive(Debug)]
pub struct Connection {
    stream: Box<dyn Stream>,
    decoder: FrameDecoder,
    /// Frames read, not yet received, oldest first.
    pending: VecDeque<Decoded>,
    pending_frames: usize,
    /// The last frame read was large: read the next header alone, so that the payload
    /// after it is read straight into its own buffer.
    large_frames: bool,
    pub(crate) backlog: WriteBacklog,
    /// The version negotiation still to finish before the first frame, if any.
    negotiation: Option<Box<Negotiation>>,
    local_endpoint: String,
    remote_endpoint: String,
    /// What it carried; a connection that joins a dialled id takes the id's counters.
    counters: Arc<Counters>,
    /// Its mesh's totals, while it is in one.
    totals: Option<Arc<Counters>>,
    /// Where its frames ended on the wire, for telling how many the peer had not
    /// acknowledged when it ends.
    trail: AckTrail,
    /// Its stream's [`Stream::events_wake_both`], asked once.
    wake_both: bool,
}

impl Connection {
    /// Wraps a stream whose frames may be up to `max_frame_size` bytes long. The stream is
    /// put in non-blocking mode.
    pub fn new(stream: Box<dyn Stream>, max_frame_size: u32) -> io::Result<Self> {
        Self::framed(stream, max_frame_size, Framing::Raw, Side::Dialler)
    }

    /// Wraps a stream whose frames are in `framing`, for the `side` that made it (which
    /// matters to a framing that opens with a negotiation: the connection is made with it
    /// pending). The stream is put in non-blocking mode.
    pub fn framed(
        stream: Box<dyn Stream>,
        max_frame_size: u32,
        framing: Framing,
        side: Side,
    ) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        let negotiation = match framing {
            Framing::Raw => None,
            Framing::SplinterV1 => Some(Box::new(Negotiation::new(side))),
        };
        let wake_both = stream.events_wake_both();
        Ok(Connection {
            local_endpoint: stream.local_endpoint(),
            remote_endpoint: stream.remote_endpoint(),
            stream,
            decoder: FrameDecoder::with_framing(max_frame_size, framing),
            pending: VecDeque::new(),
            pending_frames: 0,
            large_frames: false,
            backlog: WriteBacklog::new(framing),
            negotiation,
            counters: Counters::new(),
            totals: None,
            trail: AckTrail::default(),
            wake_both,
        })
    }

    /// What it has carried so far.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Counts from now on into `counters` (a dialled id's), adding what it had counted.
    pub(crate) fn adopt_counters(&mut self, counters: Arc<Counters>) {
        counters.absorb(&self.counters);
        self.counters = counters;
    }

    /// Counts into a mesh's `totals` too (`None` when it leaves the mesh).
    pub(crate) fn count_into(&mut self, totals: Option<Arc<Counters>>) {
        self.totals = totals;
    }

    fn count_out(&mut self, bytes: usize, frames: usize) {
        self.counters.wrote(bytes);
        self.counters.sent(frames);
        if let Some(totals) = &self.totals {
            totals.wrote(bytes);
            totals.sent(frames);
        }
        self.trail.wrote(bytes, frames);
    }

    /// Publishes whether its socket has bytes not read yet.
    pub(crate) fn publish_readable(&self, readable: bool) {
        self.counters.set_readable(readable);
    }

    /// Publishes what waits in it (the write backlog, the frames read and not delivered).
    pub(crate) fn publish_waiting(&self) {
        self.counters.waiting(
            self.backlog.len(),
            self.backlog.bytes(),
            self.pending_frames,
        );
    }

    /// Of the frames it wrote, how many the peer's system had not acknowledged (at most:
    /// counted by whole writes); `None` where the stream cannot tell (see
    /// [`Stream::bytes_acknowledged`]).
    pub fn unacknowledged(&self) -> Option<u64> {
        let acknowledged = self.stream.bytes_acknowledged()?;
        Some(self.trail.unacknowledged(acknowledged))
    }

    /// How its frames look on the wire.
    pub fn framing(&self) -> Framing {
        self.decoder.framing()
    }

    /// True once its opening is done: its stream's own (a TLS handshake), then its
    /// framing's negotiation, for those that have one.
    pub fn is_open(&self) -> bool {
        self.negotiation.is_none() && self.stream.is_open()
    }

    /// The peer's certificate (DER) that the connection's TLS handshake verified, if any.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.stream.peer_certificate()
    }

    /// True if its stream's readiness events may stand for either direction
    /// ([`Stream::events_wake_both`]).
    pub(crate) fn events_wake_both(&self) -> bool {
        self.wake_both
    }

    /// True while its stream holds bytes of its own to write (TLS records) though the
    /// backlog may be empty.
    pub(crate) fn has_pending_output(&self) -> bool {
        self.stream.has_pending_output()
    }

    /// Writes its stream's own pending bytes: `Ok(false)` if the socket would block first.
    pub(crate) fn flush_output(&mut self) -> io::Result<bool> {
        self.stream.flush_output()
    }

    /// Takes the opening negotiation as far as it goes without blocking: `Ok(true)` once
    /// the connection is open (at once if it was), `Ok(false)` while it must wait for the
    /// socket. Reads never go past the negotiation's last byte, so frames the peer sends
    /// right after it stay in the socket for the connection's reader. After an error the
    /// connection is unusable: drop it (the socket closes).
    pub fn open_some(&mut self) -> Result<bool, OpenError> {
        if !self.stream.is_open() {
            match self.stream.open_some() {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(err) => return Err(OpenError::from_stream(err)),
            }
        }
        let Some(negotiation) = self.negotiation.as_mut() else {
            return Ok(true);
        };
        loop {
            // What the stream holds of the offer or answer must reach the peer.
            if !self.stream.flush_output().map_err(OpenError::Io)? {
                return Ok(false);
            }
            if !negotiation.to_write().is_empty() {
                match self.stream.write(negotiation.to_write()) {
                    Ok(0) => return Err(OpenError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => negotiation.wrote(n),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(OpenError::Io(err)),
                }
                continue;
            }
            match negotiation.outcome() {
                Some(Ok(_)) => {
                    self.negotiation = None;
                    return Ok(true);
                }
                Some(Err(err)) => return Err(OpenError::Negotiation(err)),
                None => {}
            }
            let mut buf = [0u8; 4];
            let want = negotiation.wanted().min(buf.len());
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => negotiation.closed(),
                Ok(n) => negotiation.received(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(OpenError::Io(err)),
            }
        }
    }

    /// Finishes the opening negotiation, blocking, waiting at most `timeout` for each read.
    pub fn open(&mut self, timeout: Option<Duration>) -> Result<(), OpenError> {
        if self.is_open() {
            return Ok(());
        }
        let result = self
            .blocking(|connection| {
                connection.stream.set_read_timeout(timeout)?;
                Ok(connection.open_some())
            })
            .map_err(OpenError::Io);
        let _ = self.stream.set_read_timeout(None);
        match result?? {
            true => Ok(()),
            // Only a read that timed out leaves a blocking negotiation unfinished.
            false => Err(OpenError::Io(io::ErrorKind::TimedOut.into())),
        }
    }

    /// This end's endpoint.
    pub fn local_endpoint(&self) -> &str {
        &self.local_endpoint
    }

    /// The peer's endpoint.
    pub fn remote_endpoint(&self) -> &str {
        &self.remote_endpoint
    }

    /// The largest payload this connection accepts, in either direction.
    pub fn max_frame_size(&self) -> u32 {
        self.decoder.max_frame_size()
    }

    /// Frames waiting to be written (queued in a mesh before it was removed).
    pub fn unwritten(&self) -> usize {
        self.backlog.len()
    }

    /// Frames read and not yet received (read by a mesh before it was removed).
    pub fn unreceived(&self) -> usize {
        self.pending_frames
    }

    /// The stream, for an event loop to register with its poll.
    pub(crate) fn source(&mut self) -> &mut dyn Stream {
        &mut *self.stream
    }

    /// Writes one frame, after any unwritten ones, blocking until all are written.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ConnectionError> {
        self.queue(payload)?;
        self.blocking(|connection| {
            while !connection.backlog.is_empty() {
                connection.backlog.write_to(&mut connection.stream)?;
            }
            while !connection.stream.flush_output()? {}
            connection.stream.flush()
        })
        .map_err(ConnectionError::Io)
    }

    /// Reads one frame, blocking until it has arrived whole.
    ///
    /// Never reads past the end of the frame, so the bytes that follow stay in the socket
    /// for whoever reads next (a mesh, after [`Mesh::add`](crate::Mesh::add)).
    pub fn recv(&mut self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_with_timeout(None)
    }

    /// Like [`recv`](Self::recv), but gives up with [`ConnectionError::TimedOut`] if no read
    /// makes progress for `timeout`. Bytes of a partly arrived frame are kept for the next
    /// call.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        self.recv_with_timeout(Some(timeout.max(Duration::from_millis(1))))
    }

    /// Shuts the connection down; the peer sees the end of the stream. Unwritten frames are
    /// dropped.
    pub fn disconnect(mut self) -> io::Result<()> {
        match self.stream.close() {
            Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
            _ => Ok(()),
        }
    }

    /// Adds a frame to the write backlog (the first half of a non-blocking send; see
    /// [`write_some`](Self::write_some)).
    pub(crate) fn queue(&mut self, payload: &[u8]) -> Result<(), ConnectionError> {
        if payload.len() > self.max_frame_size() as usize {
            return Err(ConnectionError::TooLarge(payload.len()));
        }
        self.backlog.push(payload.to_vec());
        Ok(())
    }

    /// One write of `bytes` (whole frames the caller encoded), for a connection whose
    /// backlog is empty and whose framing is raw: returns the bytes written.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<usize> {
        debug_assert!(
            self.backlog.is_empty(),
            "nothing may go before what is waiting"
        );
        debug_assert_eq!(self.framing(), Framing::Raw);
        self.stream.write(bytes)
    }

    /// Counts a write made with [`write_bytes`](Self::write_bytes) or
    /// [`write_slices`](Self::write_slices): `bytes` written, `frames` of them whole.
    pub(crate) fn wrote_directly(&mut self, bytes: usize, frames: usize) {
        self.count_out(bytes, frames);
    }

    /// One vectored write of `slices` (whole frames), for a connection whose backlog is
    /// empty and whose framing is raw: returns the bytes written.
    pub(crate) fn write_slices(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        debug_assert!(
            self.backlog.is_empty(),
            "nothing may go before what is waiting"
        );
        debug_assert_eq!(self.framing(), Framing::Raw);
        self.stream.write_vectored(slices)
    }

    /// One vectored write of the backlog's first frames; returns the bytes written.
    pub(crate) fn write_backlog(&mut self) -> io::Result<usize> {
        let before = self.backlog.len();
        let n = self.backlog.write_to(&mut self.stream)?;
        let frames = before - self.backlog.len();
        self.count_out(n, frames);
        Ok(n)
    }

    /// Writes the backlog without blocking: `Ok(true)` once it is all written, `Ok(false)`
    /// if the socket would block first.
    pub(crate) fn write_some(&mut self) -> io::Result<bool> {
        while !self.backlog.is_empty() {
            match self.write_backlog() {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.stream.flush_output()
    }

    /// The next frame without blocking: a pending one, or one read now (never reading past
    /// its end); `Ok(None)` if it has not arrived whole yet (its bytes are kept).
    pub(crate) fn try_recv(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        let mut buf = Vec::new();
        match self.read_frame(&mut buf) {
            Ok(frame) => Ok(Some(frame)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(err) => Err(self.recv_error(err)),
        }
    }

    /// Reads one frame, never past its end; `WouldBlock` (or a timeout) if the stream runs
    /// dry first.
    fn read_frame(&mut self, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
        if let Some(frame) = self.pop_pending() {
            return Ok(frame);
        }
        loop {
            if let Some(frame) = self.decoder.decode(&mut &[][..]).map_err(protocol)? {
                return Ok(frame);
            }
            buf.resize(self.decoder.wanted().min(READ_CHUNK), 0);
            let n = match self.stream.read(buf) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            let mut input = &buf[..n];
            if let Some(frame) = self.decoder.decode(&mut input).map_err(protocol)? {
                debug_assert!(input.is_empty(), "reads stop at the end of a frame");
                return Ok(frame);
            }
        }
    }

    fn recv_with_timeout(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, ConnectionError> {
        let mut buf = Vec::new();
        let result = self.blocking(|connection| {
            connection.stream.set_read_timeout(timeout)?;
            connection.read_frame(&mut buf)
        });
        let _ = self.stream.set_read_timeout(None);
        result.map_err(|err| self.recv_error(err))
    }

    fn recv_error(&self, err: io::Error) -> ConnectionError {
        match err.kind() {
            io::ErrorKind::UnexpectedEof => ConnectionError::Closed {
                buffered: self.decoder.buffered(),
            },
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnectionError::TimedOut,
            io::ErrorKind::InvalidData => match err.into_inner().map(|inner| inner.downcast()) {
                Some(Ok(frame_error)) => ConnectionError::Protocol(*frame_error),
                Some(Err(other)) => {
                    ConnectionError::Io(io::Error::new(io::ErrorKind::InvalidData, other))
                }
                None => ConnectionError::Io(io::ErrorKind::InvalidData.into()),
            },
            _ => ConnectionError::Io(err),
        }
    }

    /// Runs `f` with the stream in blocking mode, and puts it back in non-blocking mode.
    fn blocking<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        self.stream.set_nonblocking(false)?;
        let result = f(self);
        let restored = self.stream.set_nonblocking(true);
        let value = result?;
        restored?;
        Ok(value)
    }

    /// The oldest pending frame, if any.
    fn pop_pending(&mut self) -> Option<Vec<u8>> {
        let front = self.pending.front_mut()?;
        let one = match front.len() {
            1 => self.pending.pop_front().expect("a front"),
            _ => front.split_to(1),
        };
        self.pending_frames -= 1;
        let mut out = Vec::with_capacity(1);
        one.into_payloads(&mut out);
        out.pop()
    }

    /// Frames read and not yet taken by [`take_pending`](Self::take_pending).
    pub(crate) fn pending_frames(&self) -> usize {
        self.pending_frames
    }

    /// Takes up to `max` pending frames (at least one, if any are pending), oldest first,
    /// splitting a run if need be.
    pub(crate) fn take_pending(&mut self, max: usize) -> Option<Decoded> {
        let front = self.pending.front_mut()?;
        let taken = match front.len() <= max.max(1) {
            true => self.pending.pop_front().expect("a front"),
            false => front.split_to(max.max(1)),
        };
        self.pending_frames -= taken.len();
        Some(taken)
    }

    fn push_pending(&mut self, decoded: Decoded) {
        self.pending_frames += decoded.len();
        self.counters.received(decoded.len());
        if let Some(totals) = &self.totals {
            totals.received(decoded.len());
        }
        self.pending.push_back(decoded);
    }

    /// Reads once from the stream (at most [`READ_CHUNK`] bytes) and appends every frame the
    /// bytes complete to the pending frames, in order. Retries an interrupted read.
    pub(crate) fn read_once(&mut self, scratch: &mut [u8]) -> Step {
        let step = self.read_step(scratch);
        if let Step::Read(n) = step {
            self.counters.read(n);
            if let Some(totals) = &self.totals {
                totals.read(n);
            }
        }
        step
    }

    fn read_step(&mut self, scratch: &mut [u8]) -> Step {
        loop {
            let decoder = &mut self.decoder;
            if decoder.payload_remaining() >= DIRECT_READ {
                // A large payload in progress: read it straight into its own buffer.
                let stream = &mut self.stream;
                match decoder.fill_payload(READ_CHUNK, |payload, window| {
                    stream.read_append(payload, window)
                }) {
                    Ok((0, _)) => {
                        return Step::End(DisconnectReason::EofMidFrame {
                            buffered: self.decoder.buffered(),
                        })
                    }
                    Ok((n, frame)) => {
                        if let Some(payload) = frame {
                            self.large_frames = true;
                            self.push_pending(Decoded::Frame(payload));
                        }
                        return Step::Read(n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::WouldBlock,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Step::End(DisconnectReason::from_io(err)),
                }
            }
            let limit = match self.large_frames {
                true => decoder.wanted(),
                false => READ_CHUNK,
            }
            .min(scratch.len());
            let n = match self.stream.read(&mut scratch[..limit]) {
                Ok(0) => {
                    return Step::End(match self.decoder.buffered() {
                        0 => DisconnectReason::Eof,
                        buffered => DisconnectReason::EofMidFrame { buffered },
                    })
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::WouldBlock,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Step::End(DisconnectReason::from_io(err)),
            };
            let mut input = &scratch[..n];
            loop {
                if let Some(frames) = self.decoder.decode_run(&mut input, RUN_PAYLOAD_LIMIT) {
                    self.large_frames = false;
                    self.push_pending(Decoded::Run(frames));
                }
                match self.decoder.decode(&mut input) {
                    Ok(Some(payload)) => {
                        self.large_frames = payload.len() >= DIRECT_READ;
                        self.push_pending(Decoded::Frame(payload));
                    }
                    Ok(None) => return Step::Read(n),
                    Err(err) => return Step::End(DisconnectReason::Protocol(err)),
                }
            }
        }
    }
}

fn protocol(err: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}
/// What an outgoing queue and a connection's write backlog hold.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// One payload; its header is made on the way out.
    Payload(Vec<u8>),
    /// Frames already encoded, written as they are.
    Encoded(EncodedFrames),
}

impl Chunk {
    /// The frames it holds.
    pub(crate) fn frames(&self) -> usize {
        match self {
            Chunk::Payload(_) => 1,
            Chunk::Encoded(frames) => frames.len(),
        }
    }

    /// Its bytes on the wire in `framing`, headers included.
    pub(crate) fn wire_len(&self, framing: Framing) -> usize {
        match (self, framing) {
            (Chunk::Payload(payload), _) => framing.header_len() + payload.len(),
            (Chunk::Encoded(frames), Framing::Raw) => frames.as_bytes().len(),
            (Chunk::Encoded(frames), _) => {
                frames.as_bytes().len() + frames.len() * (framing.header_len() - HEADER_LEN)
            }
        }
    }
}

/// Frames taken for writing but not yet fully written, oldest first.
///
/// Payloads keep their own buffers and encoded runs stay in their shared buffer: a write
/// gathers headers, payloads and runs into one vectored write, so nothing is copied again
/// on its way to the socket. Runs hold raw frames; a backlog of another framing writes a
/// run frame by frame, its own header before each payload.
#[derive(Debug, Default)]
pub(crate) struct WriteBacklog {
    framing: Framing,
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk (headers included) already written.
    written: usize,
    /// Bytes of all chunks (headers included) not yet written.
    bytes: usize,
    /// Frames of all chunks, the front one's included.
    frames: usize,
}

/// The frames of one framed write: a header made for each payload.
struct Gathered<'a> {
    header_len: usize,
    headers: [[u8; crate::splinter::HEADER_LEN]; FRAMES_PER_WRITE],
    payloads: [&'a [u8]; FRAMES_PER_WRITE],
    count: usize,
    /// Bytes of the front chunk already written: whole frames of them are passed over,
    /// and what is left is what went of the first frame gathered.
    skip: usize,
}

impl<'a> Gathered<'a> {
    /// Gathers one payload; false once the write is full.
    fn take(&mut self, payload: &'a [u8]) -> bool {
        let wire = self.header_len + payload.len();
        if self.count == 0 && self.skip >= wire {
            self.skip -= wire;
            return true;
        }
        if self.count == FRAMES_PER_WRITE {
            return false;
        }
        self.headers[self.count] = crate::splinter::header(payload.len() as u32);
        self.payloads[self.count] = payload;
        self.count += 1;
        true
    }
}

/// Slices gathered into one vectored write: within every platform's `IOV_MAX` (1024 on
/// Linux and macOS).
const SLICES_PER_WRITE: usize = 2 * FRAMES_PER_WRITE;

impl WriteBacklog {
    /// An empty backlog that writes frames in `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        WriteBacklog {
            framing,
            ..WriteBacklog::default()
        }
    }

    /// Adds a payload; it must fit the 32-bit length field.
    pub(crate) fn push(&mut self, payload: Vec<u8>) {
        debug_assert!(u32::try_from(payload.len()).is_ok());
        self.push_chunk(Chunk::Payload(payload));
    }

    /// Adds an item taken from an outgoing queue.
    pub(crate) fn push_chunk(&mut self, chunk: Chunk) {
        self.bytes += chunk.wire_len(self.framing);
        self.frames += chunk.frames();
        self.chunks.push_back(chunk);
    }

    /// Puts frames of which `written` bytes went out already into the empty backlog.
    pub(crate) fn push_resumed(&mut self, chunk: Chunk, written: usize) {
        debug_assert!(self.chunks.is_empty());
        debug_assert!(written < chunk.wire_len(self.framing));
        self.bytes += chunk.wire_len(self.framing) - written;
        self.frames += chunk.frames();
        self.written = written;
        self.chunks.push_back(chunk);
    }

    /// Frames not fully written.
    pub(crate) fn len(&self) -> usize {
        self.frames
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes not yet written, headers included.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// One vectored write of up to [`FRAMES_PER_WRITE`] payloads (or more frames, when
    /// they are encoded runs). Returns the bytes written.
    pub(crate) fn write_to<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<usize> {
        if self.framing != Framing::Raw {
            return self.write_framed_to(out);
        }
        let mut headers = [[0u8; HEADER_LEN]; FRAMES_PER_WRITE];
        let mut count = 0;
        for (header, chunk) in headers.iter_mut().zip(&self.chunks) {
            if let Chunk::Payload(payload) = chunk {
                *header = frame_header(payload.len()).expect("checked when queued");
            }
            count += 1;
        }
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let mut used = 0;
        let mut skip = self.written;
        for (header, chunk) in headers.iter().zip(self.chunks.iter().take(count)) {
            let parts: [&[u8]; 2] = match chunk {
                Chunk::Payload(payload) => [&header[..], &payload[..]],
                Chunk::Encoded(frames) => [frames.as_bytes(), &[]],
            };
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[used] = IoSlice::new(&part[skip..]);
                skip = 0;
                used += 1;
            }
        }
        let n = out.write_vectored(&slices[..used])?;
        self.advance(n);
        Ok(n)
    }

    /// [`write_to`](Self::write_to) for a framing other than raw: up to
    /// [`FRAMES_PER_WRITE`] frames, each its header (made here) and its payload.
    fn write_framed_to<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<usize> {
        debug_assert_eq!(self.framing, Framing::SplinterV1);
        let mut gathered = Gathered {
            header_len: self.framing.header_len(),
            headers: [[0; crate::splinter::HEADER_LEN]; FRAMES_PER_WRITE],
            payloads: [&[]; FRAMES_PER_WRITE],
            count: 0,
            skip: self.written,
        };
        for chunk in &self.chunks {
            let more = match chunk {
                Chunk::Payload(payload) => gathered.take(payload),
                Chunk::Encoded(frames) => frames.payloads().all(|payload| gathered.take(payload)),
            };
            if !more {
                break;
            }
        }
        let Gathered {
            headers,
            payloads,
            count,
            mut skip,
            ..
        } = gathered;
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let mut used = 0;
        for (header, payload) in headers.iter().zip(&payloads).take(count) {
            for part in [&header[..], payload] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[used] = IoSlice::new(&part[skip..]);
                skip = 0;
                used += 1;
            }
        }
        let n = out.write_vectored(&slices[..used])?;
        self.advance(n);
        Ok(n)
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.chunks[0].wire_len(self.framing) - self.written;
            if n < front {
                self.written += n;
                return;
            }
            n -= front;
            self.written = 0;
            let done = self.chunks.pop_front().expect("bytes were left");
            self.frames -= done.frames();
        }
    }

    /// The payloads not fully written, oldest first.
    pub(crate) fn into_unsent(self) -> Vec<Vec<u8>> {
        let mut unsent = Vec::with_capacity(self.frames);
        let mut written = self.written;
        let header_len = self.framing.header_len();
        for chunk in self.chunks {
            match chunk {
                Chunk::Payload(payload) => unsent.push(payload),
                Chunk::Encoded(frames) => {
                    // The frames that end, on the wire, after the bytes written.
                    let mut end = 0;
                    for payload in frames.payloads() {
                        end += header_len + payload.len();
                        if end > written {
                            unsent.push(payload.to_vec());
                        }
                    }
                }
            }
            written = 0;
        }
        unsent
    }
}

/// Where the last writes of a connection ended on the wire: (bytes, whole frames) written
/// since it opened, one entry per write, the oldest forgotten beyond [`TRAIL_LEN`].
#[derive(Debug, Default)]
struct AckTrail {
    bytes: u64,
    frames: u64,
    writes: VecDeque<(u64, u64)>,
    /// The newest entry forgotten.
    floor: (u64, u64),
}

/// Writes remembered: enough to cover what a socket's send buffer holds unacknowledged,
/// unless the writes are tiny (then the count is an over-estimate, never an under-).
const TRAIL_LEN: usize = 256;

impl AckTrail {
    fn wrote(&mut self, bytes: usize, frames: usize) {
        if bytes == 0 {
            return;
        }
        self.bytes += bytes as u64;
        self.frames += frames as u64;
        if self.writes.len() == TRAIL_LEN {
            self.floor = self.writes.pop_front().expect("full");
        }
        self.writes.push_back((self.bytes, self.frames));
    }

    /// Whole frames written after the last write that ended within `acknowledged` bytes.
    fn unacknowledged(&self, acknowledged: u64) -> u64 {
        let mut frames = match acknowledged >= self.floor.0 {
            true => self.floor.1,
            false => 0,
        };
        for &(end, done) in &self.writes {
            if end > acknowledged {
                break;
            }
            frames = done;
        }
        self.frames - frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes a call.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        for limit in 1..12 {
            let mut backlog = WriteBacklog::default();
            backlog.push(b"abc".to_vec());
            backlog.push(Vec::new());
            backlog.push(b"defgh".to_vec());
            let mut out = Trickle {
                out: Vec::new(),
                limit,
            };
            while !backlog.is_empty() {
                backlog.write_to(&mut out).unwrap();
            }
            assert_eq!(backlog.bytes(), 0);
            assert_eq!(
                out.out, b"\0\0\0\x03abc\0\0\0\0\0\0\0\x05defgh",
                "limit {limit}"
            );
        }
    }

    #[test]
    fn many_frames_leave_in_one_vectored_write() {
        let mut backlog = WriteBacklog::default();
        for i in 0..300u32 {
            backlog.push(i.to_be_bytes().to_vec());
        }
        let mut out = Vec::new();
        assert_eq!(backlog.write_to(&mut out).unwrap(), FRAMES_PER_WRITE * 8);
        assert_eq!(backlog.len(), 300 - FRAMES_PER_WRITE);
    }

    fn encoded(payloads: &[&[u8]]) -> Chunk {
        let mut wire = Vec::new();
        for payload in payloads {
            crate::codec::encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        Chunk::Encoded(crate::codec::EncodedFrames::new(wire.into(), 0..len).unwrap())
    }

    #[test]
    fn encoded_runs_and_payloads_leave_in_order_whatever_the_split() {
        for limit in 1..30 {
            let mut backlog = WriteBacklog::default();
            backlog.push(b"abc".to_vec());
            backlog.push_chunk(encoded(&[b"de", b"", b"f"]));
            backlog.push(b"gh".to_vec());
            assert_eq!(backlog.len(), 5);
            let mut out = Trickle {
                out: Vec::new(),
                limit,
            };
            while !backlog.is_empty() {
                backlog.write_to(&mut out).unwrap();
            }
            assert_eq!((backlog.bytes(), backlog.len()), (0, 0));
            assert_eq!(
                out.out, b"\0\0\0\x03abc\0\0\0\x02de\0\0\0\0\0\0\0\x01f\0\0\0\x02gh",
                "limit {limit}"
            );
        }
    }

    #[test]
    fn unsent_frames_of_a_run_start_at_the_first_not_fully_written() {
        // Run bytes: "de" ends at 6, "" at 10, "f" at 15; cut after 7 bytes of the run.
        let mut backlog = WriteBacklog::default();
        backlog.push_chunk(encoded(&[b"de", b"", b"f"]));
        backlog.push(b"gh".to_vec());
        let mut out = Trickle {
            out: Vec::new(),
            limit: 7,
        };
        backlog.write_to(&mut out).unwrap();
        assert_eq!(backlog.len(), 4);
        assert_eq!(
            backlog.into_unsent(),
            vec![b"".to_vec(), b"f".to_vec(), b"gh".to_vec()]
        );
    }

    /// `payloads` framed as Splinter's version 1 frames.
    fn v1_wire(payloads: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for payload in payloads {
            wire.extend_from_slice(&crate::splinter::header(payload.len() as u32));
            wire.extend_from_slice(payload);
        }
        wire
    }

    #[test]
    fn a_splinter_backlog_writes_its_own_headers_before_payloads_and_runs() {
        for limit in 1..40 {
            let mut backlog = WriteBacklog::new(Framing::SplinterV1);
            backlog.push(b"abc".to_vec());
            backlog.push_chunk(encoded(&[b"de", b"", b"f"]));
            backlog.push(b"gh".to_vec());
            assert_eq!((backlog.len(), backlog.bytes()), (5, 5 * 7 + 8));
            let mut out = Trickle {
                out: Vec::new(),
                limit,
            };
            while !backlog.is_empty() {
                backlog.write_to(&mut out).unwrap();
            }
            assert_eq!((backlog.bytes(), backlog.len()), (0, 0));
            assert_eq!(
                out.out,
                v1_wire(&[b"abc", b"de", b"", b"f", b"gh"]),
                "limit {limit}"
            );
        }
        // Splinter's `standard_write` vector: a 3-byte payload's header.
        let mut backlog = WriteBacklog::new(Framing::SplinterV1);
        backlog.push(b"xyz".to_vec());
        let mut out = Vec::new();
        backlog.write_to(&mut out).unwrap();
        assert_eq!(out, [0, 1, 0, 0, 0, 3, 0xfc, b'x', b'y', b'z']);
    }

    #[test]
    fn a_long_splinter_run_leaves_in_several_writes() {
        let payloads: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut backlog = WriteBacklog::new(Framing::SplinterV1);
        backlog.push_chunk(encoded(&refs));
        let mut out = Trickle {
            out: Vec::new(),
            limit: 1000,
        };
        while !backlog.is_empty() {
            backlog.write_to(&mut out).unwrap();
        }
        assert_eq!(out.out, v1_wire(&refs));
    }

    #[test]
    fn unsent_frames_of_a_splinter_run_start_at_the_first_not_fully_written() {
        // Wire: "de" ends at 9, "" at 16, "f" at 24; cut after 10 bytes (a `Trickle`
        // writes one slice a call: the header, "de", then one byte).
        let mut backlog = WriteBacklog::new(Framing::SplinterV1);
        backlog.push_chunk(encoded(&[b"de", b"", b"f"]));
        backlog.push(b"gh".to_vec());
        let mut out = Trickle {
            out: Vec::new(),
            limit: 10,
        };
        assert_eq!(backlog.write_to(&mut out).unwrap(), 7);
        assert_eq!(backlog.write_to(&mut out).unwrap(), 2);
        out.limit = 1;
        assert_eq!(backlog.write_to(&mut out).unwrap(), 1);
        assert_eq!(backlog.bytes(), 4 * 7 + 5 - 10);
        assert_eq!(backlog.len(), 4);
        assert_eq!(
            backlog.into_unsent(),
            vec![b"".to_vec(), b"f".to_vec(), b"gh".to_vec()]
        );
    }

    #[test]
    fn unsent_frames_include_a_half_written_one() {
        let mut backlog = WriteBacklog::default();
        backlog.push(b"first".to_vec());
        backlog.push(b"second".to_vec());
        let mut out = Trickle {
            out: Vec::new(),
            limit: 6,
        };
        backlog.write_to(&mut out).unwrap();
        assert_eq!(
            backlog.into_unsent(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
    }
}
