//! A connection: a [`Stream`] with its framing state.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::Duration;

use super::Stream;
use crate::codec::{frame_header, FrameDecoder, HEADER_LEN};
use crate::error::ConnectionError;
use crate::outgoing::Chunk;

/// Payloads gathered into one vectored write: two slices each (header, payload). An
/// encoded run of frames is one slice.
pub(crate) const FRAMES_PER_WRITE: usize = 256;

/// A framed connection, made by a [`Transport`](super::Transport) or a
/// [`Listener`](super::Listener).
///
/// Before it joins a mesh (and after [`Mesh::remove`](crate::Mesh::remove) hands it back)
/// it can exchange frames itself with the blocking [`send`](Self::send) and
/// [`recv`](Self::recv), for example for a handshake. Its framing state travels with it:
/// frames queued in a mesh but not yet written leave with it and go out on its next
/// `send`; a frame the mesh had half read is finished by its next `recv`.
#[derive(Debug)]
pub struct Connection {
    pub(crate) stream: Box<dyn Stream>,
    pub(crate) decoder: FrameDecoder,
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

    /// Writes one frame, after any unwritten ones, blocking until all are written.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ConnectionError> {
        if payload.len() > self.max_frame_size() as usize {
            return Err(ConnectionError::TooLarge(payload.len()));
        }
        self.backlog.push(payload.to_vec());
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

    fn recv_with_timeout(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, ConnectionError> {
        let mut buf = Vec::new();
        let result = self.blocking(|connection| {
            connection.stream.set_read_timeout(timeout)?;
            loop {
                if let Some(frame) = connection.decoder.decode(&mut &[][..]).map_err(protocol)? {
                    return Ok(frame);
                }
                buf.resize(connection.decoder.wanted().min(64 * 1024), 0);
                let n = match connection.stream.read(&mut buf) {
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                };
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
                }
                let mut input = &buf[..n];
                if let Some(frame) = connection.decoder.decode(&mut input).map_err(protocol)? {
                    debug_assert!(input.is_empty(), "reads stop at the end of a frame");
                    return Ok(frame);
                }
            }
        });
        let _ = self.stream.set_read_timeout(None);
        result.map_err(|err| match err.kind() {
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
        })
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
}

fn protocol(err: crate::codec::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
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

    /// Puts what a direct write left unwritten, `written` bytes of it gone, in front of
    /// the chunks taken so far (none of which has been written yet).
    pub(crate) fn push_front_resumed(&mut self, chunk: Chunk, written: usize) {
        debug_assert!(self.chunks.is_empty() || self.written == 0);
        debug_assert!(written < chunk.wire_len());
        self.bytes += chunk.wire_len() - written;
        self.frames += chunk.frames();
        self.written = written;
        self.chunks.push_front(chunk);
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
