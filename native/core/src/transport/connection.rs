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

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::Duration;

use super::error::{ConnectionError, DisconnectReason};
use super::Stream;
use crate::codec::{frame_header, Decoded, EncodedFrames, FrameDecoder, FrameError, HEADER_LEN};

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
    local_endpoint: String,
    remote_endpoint: String,
}

impl Connection {
    /// Wraps a stream whose frames may be up to `max_frame_size` bytes long. The stream is
    /// put in non-blocking mode.
    pub fn new(stream: Box<dyn Stream>, max_frame_size: u32) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Connection {
            local_endpoint: stream.local_endpoint(),
            remote_endpoint: stream.remote_endpoint(),
            stream,
            decoder: FrameDecoder::new(max_frame_size),
            pending: VecDeque::new(),
            pending_frames: 0,
            large_frames: false,
            backlog: WriteBacklog::default(),
        })
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
    pub fn disconnect(self) -> io::Result<()> {
        match self.stream.shutdown() {
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
    /// backlog is empty: returns the bytes written.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<usize> {
        debug_assert!(
            self.backlog.is_empty(),
            "nothing may go before what is waiting"
        );
        self.stream.write(bytes)
    }

    /// One vectored write of `slices` (whole frames), for a connection whose backlog is
    /// empty: returns the bytes written.
    pub(crate) fn write_slices(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        debug_assert!(
            self.backlog.is_empty(),
            "nothing may go before what is waiting"
        );
        self.stream.write_vectored(slices)
    }

    /// One vectored write of the backlog's first frames; returns the bytes written.
    pub(crate) fn write_backlog(&mut self) -> io::Result<usize> {
        self.backlog.write_to(&mut self.stream)
    }

    /// Writes the backlog without blocking: `Ok(true)` once it is all written, `Ok(false)`
    /// if the socket would block first.
    pub(crate) fn write_some(&mut self) -> io::Result<bool> {
        while !self.backlog.is_empty() {
            match self.backlog.write_to(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
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
        self.pending.push_back(decoded);
    }

    /// Reads once from the stream (at most [`READ_CHUNK`] bytes) and appends every frame the
    /// bytes complete to the pending frames, in order. Retries an interrupted read.
    pub(crate) fn read_once(&mut self, scratch: &mut [u8]) -> Step {
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
                    Err(err) => return Step::End(DisconnectReason::Io(err)),
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
                Err(err) => return Step::End(DisconnectReason::Io(err)),
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

    /// Its bytes on the wire, headers included.
    pub(crate) fn wire_len(&self) -> usize {
        match self {
            Chunk::Payload(payload) => HEADER_LEN + payload.len(),
            Chunk::Encoded(frames) => frames.as_bytes().len(),
        }
    }
}

/// Frames taken for writing but not yet fully written, oldest first.
///
/// Payloads keep their own buffers and encoded runs stay in their shared buffer: a write
/// gathers headers, payloads and runs into one vectored write, so nothing is copied again
/// on its way to the socket.
#[derive(Debug, Default)]
pub(crate) struct WriteBacklog {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk (headers included) already written.
    written: usize,
    /// Bytes of all chunks (headers included) not yet written.
    bytes: usize,
    /// Frames of all chunks, the front one's included.
    frames: usize,
}

/// Slices gathered into one vectored write: within every platform's `IOV_MAX` (1024 on
/// Linux and macOS).
const SLICES_PER_WRITE: usize = 2 * FRAMES_PER_WRITE;

impl WriteBacklog {
    /// Adds a payload; it must fit the 32-bit length field.
    pub(crate) fn push(&mut self, payload: Vec<u8>) {
        debug_assert!(u32::try_from(payload.len()).is_ok());
        self.push_chunk(Chunk::Payload(payload));
    }

    /// Adds an item taken from an outgoing queue.
    pub(crate) fn push_chunk(&mut self, chunk: Chunk) {
        self.bytes += chunk.wire_len();
        self.frames += chunk.frames();
        self.chunks.push_back(chunk);
    }

    /// Puts frames of which `written` bytes went out already into the empty backlog.
    pub(crate) fn push_resumed(&mut self, chunk: Chunk, written: usize) {
        debug_assert!(self.chunks.is_empty());
        debug_assert!(written < chunk.wire_len());
        self.bytes += chunk.wire_len() - written;
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

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.chunks[0].wire_len() - self.written;
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
        for chunk in self.chunks {
            match chunk {
                Chunk::Payload(payload) => unsent.push(payload),
                Chunk::Encoded(frames) => unsent.extend(
                    frames
                        .payloads_from(written)
                        .map(|(_, payload)| payload.to_vec()),
                ),
            }
            written = 0;
        }
        unsent
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
