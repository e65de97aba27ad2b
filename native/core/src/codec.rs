//! The frame codec: bytes to frames and back, with no I/O.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload. This is the
//! framing of Splinter's raw TCP transport, so any program that speaks it can talk to a
//! mesh.
//!
//! ```text
//! +--------+--------+--------+--------+----------------- … -+
//! |        length (u32, big-endian)   | payload (length bytes) |
//! +--------+--------+--------+--------+----------------- … -+
//! ```
//!
//! # Contract
//!
//! - [`FrameDecoder::decode`] accepts its input split at any byte: it takes what it needs
//!   from the front of the input slice, keeps an incomplete frame inside itself, and gives
//!   back each complete frame exactly once, in order.
//! - A header announcing more than the decoder's `max_frame_size` is a [`FrameError`]; the
//!   decoder must not be used after it (the stream has lost its framing).
//! - Memory for an incomplete frame grows with the bytes that have actually arrived (at
//!   most about twice as many, and never more than the announced length), never from the
//!   header's claim alone: a hostile `0xFFFFFFFF` header followed by ten bytes costs a few
//!   kilobytes, not 4 GiB.
//! - [`encode_frame`] appends a frame to an output buffer, so many frames can leave in one
//!   write.
//! - [`EncodedFrames`] is a run of whole frames already encoded, sharing one buffer with
//!   other runs: checked once when made (every header matches the bytes that follow it),
//!   then queued and written as they are, with no allocation or copy per frame.
//! - A decoder made [`with_framing`](FrameDecoder::with_framing)
//!   [`Framing::SplinterV1`] reads Splinter's 7-byte headers ([`crate::splinter`]) instead,
//!   and refuses a header with a bad version or checksum ([`FrameError::Version`],
//!   [`FrameError::Checksum`]). What it gives back is the same as a raw decoder's:
//!   payloads, and runs whose headers are this module's 4-byte ones. So runs and frames
//!   inside wiremesh are always in this module's form; only the bytes on the wire differ.
//!
//! # Examples
//!
//! ```
//! use wiremesh_core::codec::{encode_frame, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
//!
//! let mut wire = Vec::new();
//! encode_frame(b"hello", &mut wire).unwrap();
//! encode_frame(b"", &mut wire).unwrap();
//! assert_eq!(wire, b"\0\0\0\x05hello\0\0\0\0");
//!
//! let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
//! let (first, second) = wire.split_at(3); // any split point works
//! let mut input = first;
//! assert_eq!(decoder.decode(&mut input).unwrap(), None);
//! let mut input = second;
//! assert_eq!(decoder.decode(&mut input).unwrap().as_deref(), Some(&b"hello"[..]));
//! assert_eq!(decoder.decode(&mut input).unwrap().as_deref(), Some(&b""[..]));
//! assert!(input.is_empty());
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 4;

/// The default largest payload a decoder accepts: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;

/// The first allocation for an incomplete frame, unless fewer bytes are announced.
/// Later growth doubles the buffer, capped by the announced length.
const FIRST_CHUNK: usize = 4096;

/// How a connection's frames look on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// A 4-byte big-endian length, then the payload (Splinter's raw transport, and
    /// Splinter's TCP transport up to 0.3.12).
    #[default]
    Raw,
    /// Splinter's version 1 frames (0.3.13 on): a 7-byte header (version, length,
    /// checksum), after a version negotiation when the connection opens
    /// ([`crate::splinter`]).
    SplinterV1,
}

impl Framing {
    /// The length of a frame header.
    pub fn header_len(self) -> usize {
        match self {
            Framing::Raw => HEADER_LEN,
            Framing::SplinterV1 => crate::splinter::HEADER_LEN,
        }
    }
}

/// The longest header of any framing.
const MAX_HEADER_LEN: usize = crate::splinter::HEADER_LEN;

pub use crate::frame_error::FrameError;

/// The header for a payload of `len` bytes, or [`FrameError::TooLarge`] if `len` does not
/// fit the 32-bit length field.
pub fn frame_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::TooLarge {
            len: len as u64,
            max: u32::MAX,
        })
}

/// Appends one frame holding `payload` to `out`.
///
/// Fails, leaving `out` untouched, if the payload is longer than `u32::MAX` bytes.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = frame_header(payload.len())?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// An incremental frame decoder: feed it bytes in any split, take whole frames out.
///
/// See the [module documentation](self) for the contract.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: u32,
    framing: Framing,
    header: [u8; MAX_HEADER_LEN],
    header_filled: usize,
    /// The payload of the current frame once its header is complete, with its length.
    body: Option<(Vec<u8>, usize)>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> Self {
        Self::with_framing(max_frame_size, Framing::Raw)
    }

    /// A decoder of frames in `framing` that refuses payloads longer than
    /// `max_frame_size` bytes.
    pub fn with_framing(max_frame_size: u32, framing: Framing) -> Self {
        FrameDecoder {
            max_frame_size,
            framing,
            header: [0; MAX_HEADER_LEN],
            header_filled: 0,
            body: None,
        }
    }

    /// The framing it reads.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The largest payload this decoder accepts.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Takes bytes from the front of `input` and returns the next complete frame's payload,
    /// or `None` once `input` is used up without completing one (its bytes are kept).
    ///
    /// Call it again while it returns frames: one call returns at most one frame, and
    /// leaves the bytes of later frames in `input`.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if self.body.is_none() {
            let header_len = self.framing.header_len();
            // Fast path: a whole frame at the front of the input, nothing buffered.
            if self.header_filled == 0 && input.len() >= header_len {
                let len = self.parse_header(&input[..header_len])?;
                if input.len() - header_len >= len {
                    let payload = input[header_len..header_len + len].to_vec();
                    *input = &input[header_len + len..];
                    return Ok(Some(payload));
                }
            }
            let take = (header_len - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *input = &input[take..];
            if self.header_filled < header_len {
                return Ok(None);
            }
            let len = self.parse_header(&self.header[..header_len])?;
            let first = len.min(FIRST_CHUNK.max(input.len()));
            self.body = Some((Vec::with_capacity(first), len));
        }
        let (payload, len) = self.body.as_mut().expect("body is set above");
        let take = (*len - payload.len()).min(input.len());
        if payload.capacity() - payload.len() < take {
            // Grow geometrically with what arrives, never past the announced length.
            let want = (payload.len() + take).max(payload.capacity() * 2).min(*len);
            payload.reserve_exact(want - payload.len());
        }
        payload.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if payload.len() < *len {
            return Ok(None);
        }
        let (payload, _) = self.body.take().expect("body is set above");
        self.header_filled = 0;
        Ok(Some(payload))
    }

    /// Takes the whole frames at the front of `input` whose payloads are shorter than
    /// `payload_below` bytes, as one run in a buffer of their own (one allocation and one
    /// copy for all of them), or `None` if there is no such frame first.
    ///
    /// It takes nothing while a frame is in progress, and stops before a frame that is
    /// incomplete, large or malformed: [`decode`](Self::decode) takes (or refuses) that
    /// one. So a reader that calls `decode_run`, then `decode`, in turn until both return
    /// `None` gets every frame once, in order, with the same errors as from `decode` alone.
    pub fn decode_run(&self, input: &mut &[u8], payload_below: usize) -> Option<EncodedFrames> {
        if self.header_filled > 0 || self.body.is_some() {
            return None;
        }
        if self.framing == Framing::SplinterV1 {
            return self.decode_splinter_run(input, payload_below);
        }
        let (mut at, mut count, mut largest) = (0, 0, 0);
        while let Some(header) = input.get(at..at + HEADER_LEN) {
            let len = u32::from_be_bytes(header.try_into().expect("four bytes"));
            let len = len as usize;
            if len > self.max_frame_size as usize
                || len >= payload_below
                || input.len() - at - HEADER_LEN < len
            {
                break;
            }
            at += HEADER_LEN + len;
            count += 1;
            largest = largest.max(len);
        }
        if count == 0 {
            return None;
        }
        let run = EncodedFrames {
            buf: Arc::from(&input[..at]),
            start: 0,
            end: at,
            count,
            largest,
        };
        *input = &input[at..];
        Some(run)
    }

    /// [`decode_run`](Self::decode_run) for Splinter's frames: the run is copied out with
    /// 4-byte headers (one allocation for the run, as for raw frames), so that what leaves
    /// the decoder looks the same whatever the framing.
    fn decode_splinter_run(
        &self,
        input: &mut &[u8],
        payload_below: usize,
    ) -> Option<EncodedFrames> {
        use crate::splinter::HEADER_LEN as V1_LEN;
        let (mut at, mut count, mut largest) = (0, 0, 0);
        while let Some(header) = input.get(at..at + V1_LEN) {
            let Ok(len) = self.parse_header(header) else {
                break;
            };
            if len >= payload_below || input.len() - at - V1_LEN < len {
                break;
            }
            at += V1_LEN + len;
            count += 1;
            largest = largest.max(len);
        }
        if count == 0 {
            return None;
        }
        let mut run = Vec::with_capacity(at - count * (V1_LEN - HEADER_LEN));
        let mut frames = &input[..at];
        while !frames.is_empty() {
            let len = u32::from_be_bytes(frames[2..6].try_into().expect("four bytes"));
            let end = V1_LEN + len as usize;
            run.extend_from_slice(&len.to_be_bytes());
            run.extend_from_slice(&frames[V1_LEN..end]);
            frames = &frames[end..];
        }
        let end = run.len();
        *input = &input[at..];
        Some(EncodedFrames::checked(
            Arc::from(run),
            0..end,
            count,
            largest,
        ))
    }

    /// Bytes of the payload in progress still to come; 0 while no payload is in progress
    /// (between frames, or within a header).
    pub fn payload_remaining(&self) -> usize {
        self.body
            .as_ref()
            .map_or(0, |(payload, len)| len - payload.len())
    }

    /// Lets `fill` put up to `max` bytes of the payload in progress straight into its
    /// buffer (a reader of a large frame saves a copy through a read buffer). `fill` gets
    /// the payload's buffer, with room reserved for a window of at most `max`, at most
    /// [`payload_remaining`] bytes, and at most what has arrived so far (but at least
    /// 4 KiB), and the window's length; it appends at most that many
    /// bytes (a reader that can read into spare capacity need not zero it first:
    /// [`Stream::read_append`](crate::transport::Stream::read_append)) and returns how
    /// many. Returns that count, and the payload if it is now complete. The buffer grows by
    /// the same rule as [`decode`](Self::decode)'s: at most about twice what has arrived,
    /// plus the one window. A `fill` that fails keeps what had arrived before it.
    ///
    /// # Panics
    ///
    /// If no payload is in progress ([`payload_remaining`] is 0), or `fill` appends more
    /// than the window's length or returns a count other than what it appended.
    ///
    /// [`payload_remaining`]: Self::payload_remaining
    pub fn fill_payload<E>(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut Vec<u8>, usize) -> Result<usize, E>,
    ) -> Result<(usize, Option<Vec<u8>>), E> {
        let (payload, len) = self.body.as_mut().expect("a payload in progress");
        let have = payload.len();
        // The window grows with what has arrived, so a hostile header followed by a trickle
        // costs memory in proportion to the trickle, not to `max`.
        let take = (*len - have).min(max).min(have.max(FIRST_CHUNK));
        assert!(take > 0, "a payload in progress");
        if payload.capacity() - have < take {
            // Room for the window, and at least double what has arrived (fewer moves).
            let want = (have + take).max(2 * have).min(*len);
            payload.reserve_exact(want - have);
        }
        let filled = fill(payload, take);
        let appended = payload.len() - have;
        assert!(appended <= take, "filled more than the window");
        let n = match filled {
            Ok(n) => n,
            Err(err) => {
                payload.truncate(have);
                return Err(err);
            }
        };
        assert_eq!(n, appended, "the count filled is what was appended");
        if payload.len() < *len {
            return Ok((n, None));
        }
        let (payload, _) = self.body.take().expect("body is set above");
        self.header_filled = 0;
        Ok((n, Some(payload)))
    }

    /// How many more bytes complete the header or frame in progress: a reader that wants
    /// never to read past the current frame reads at most this many.
    pub fn wanted(&self) -> usize {
        match &self.body {
            Some((payload, len)) => len - payload.len(),
            None => self.framing.header_len() - self.header_filled,
        }
    }

    /// True while part of a frame (header or payload) has arrived but not all of it.
    pub fn is_mid_frame(&self) -> bool {
        self.header_filled > 0
    }

    /// Bytes of the frame in progress held by the decoder, header included.
    pub fn buffered(&self) -> usize {
        self.header_filled + self.body.as_ref().map_or(0, |(payload, _)| payload.len())
    }

    /// Bytes allocated for the frame in progress: bounded by about twice
    /// [`buffered`](Self::buffered), never by the header's claim.
    pub fn allocated(&self) -> usize {
        self.body
            .as_ref()
            .map_or(0, |(payload, _)| payload.capacity())
    }

    /// The payload length of a whole header in this decoder's framing, checked.
    fn parse_header(&self, header: &[u8]) -> Result<usize, FrameError> {
        let len = match self.framing {
            Framing::Raw => u32::from_be_bytes(header.try_into().expect("a raw header")),
            Framing::SplinterV1 => {
                crate::splinter::parse_header(header.try_into().expect("a v1 header"))?
            }
        };
        self.check_len(len)
    }

    fn check_len(&self, len: u32) -> Result<usize, FrameError> {
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.max_frame_size,
            });
        }
        Ok(len as usize)
    }
}

/// A run of whole frames, header and payload each, as they go on the wire: a slice of a
/// buffer that other runs may share.
///
/// This is how a batch of sends crosses into a mesh with one allocation: the caller
/// encodes many frames for many connections into one buffer, and each connection's run is
/// queued as one item (see [`Mesh::send_encoded`](crate::Mesh::send_encoded)).
///
/// ```
/// use std::sync::Arc;
/// use wiremesh_core::codec::{encode_frame, EncodedFrames};
///
/// let mut wire = Vec::new();
/// encode_frame(b"hello", &mut wire).unwrap();
/// encode_frame(b"world", &mut wire).unwrap();
/// let len = wire.len();
/// let frames = EncodedFrames::new(Arc::from(wire), 0..len).unwrap();
/// assert_eq!(frames.len(), 2);
/// assert_eq!(frames.payloads().collect::<Vec<_>>(), [&b"hello"[..], &b"world"[..]]);
/// ```
#[derive(Clone)]
pub struct EncodedFrames {
    buf: Arc<[u8]>,
    start: usize,
    end: usize,
    count: usize,
    largest: usize,
}

impl fmt::Debug for EncodedFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedFrames")
            .field("frames", &self.count)
            .field("bytes", &(self.end - self.start))
            .finish()
    }
}

/// Bytes that are not a sequence of whole frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedFrames {
    /// Where, in the slice checked, the first frame that does not fit starts.
    pub offset: usize,
}

impl fmt::Display for MalformedFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the frame at byte {} runs past the end of the bytes given",
            self.offset
        )
    }
}

impl std::error::Error for MalformedFrames {}

/// Counts the whole frames of `bytes`: their number and the length of the longest payload.
pub(crate) fn scan(bytes: &[u8]) -> Result<(usize, usize), MalformedFrames> {
    let (mut at, mut count, mut largest) = (0, 0, 0);
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_LEN) else {
            return Err(MalformedFrames { offset: at });
        };
        let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if bytes.len() - at - HEADER_LEN < len {
            return Err(MalformedFrames { offset: at });
        }
        at += HEADER_LEN + len;
        count += 1;
        largest = largest.max(len);
    }
    Ok((count, largest))
}

/// The frames of `bytes` (whole frames, already checked) that end after byte `written`,
/// copied into a run of their own, and how many bytes of the first of them were written:
/// what is left to send once `written` bytes have gone.
pub(crate) fn rest_after(bytes: &[u8], written: usize) -> (EncodedFrames, usize) {
    let mut start = 0;
    while start < bytes.len() {
        let header = &bytes[start..start + HEADER_LEN];
        let end = start
            + HEADER_LEN
            + u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if end > written {
            break;
        }
        start = end;
    }
    let rest = &bytes[start..];
    let frames = EncodedFrames::new(Arc::from(rest), 0..rest.len()).expect("whole frames");
    (frames, written - start)
}

/// What a read of a connection yields: a run of small frames sharing one buffer, or one
/// frame in a buffer of its own.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// Consecutive whole frames, in order, sharing one buffer.
    Run(EncodedFrames),
    /// One payload.
    Frame(Vec<u8>),
}

impl Decoded {
    /// The number of frames it holds.
    pub fn len(&self) -> usize {
        match self {
            Decoded::Run(frames) => frames.len(),
            Decoded::Frame(_) => 1,
        }
    }

    /// True if it holds no frame (only an empty run can).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its payload bytes (headers excluded).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Decoded::Run(frames) => frames.as_bytes().len() - HEADER_LEN * frames.len(),
            Decoded::Frame(payload) => payload.len(),
        }
    }

    /// Splits off the first `n` frames (`n` at most [`len`](Self::len)), keeping the rest.
    ///
    /// # Panics
    ///
    /// If `n` is larger than `len`, or if this is one frame and `n` is not 1.
    pub fn split_to(&mut self, n: usize) -> Decoded {
        match self {
            Decoded::Run(frames) => Decoded::Run(frames.split_to(n)),
            Decoded::Frame(_) => {
                assert_eq!(n, 1, "one frame splits only whole");
                std::mem::replace(self, Decoded::Run(EncodedFrames::empty()))
            }
        }
    }

    /// Each payload, in order (a run's are copied out of its buffer).
    pub fn into_payloads(self, out: &mut impl Extend<Vec<u8>>) {
        match self {
            Decoded::Run(frames) => out.extend(frames.payloads().map(<[u8]>::to_vec)),
            Decoded::Frame(payload) => out.extend(Some(payload)),
        }
    }
}

impl EncodedFrames {
    /// The frames in `buf[range]`, checked to be whole: every header is followed by as many
    /// bytes as it announces, and the last frame ends exactly at the end of the range.
    ///
    /// # Panics
    ///
    /// If `range` is out of `buf`'s bounds.
    pub fn new(buf: Arc<[u8]>, range: Range<usize>) -> Result<Self, MalformedFrames> {
        let (count, largest) = scan(&buf[range.clone()])?;
        Ok(EncodedFrames {
            start: range.start,
            end: range.end,
            buf,
            count,
            largest,
        })
    }

    /// The frames in `buf[range]`, already counted by [`scan`].
    pub(crate) fn checked(
        buf: Arc<[u8]>,
        range: Range<usize>,
        count: usize,
        largest: usize,
    ) -> Self {
        EncodedFrames {
            start: range.start,
            end: range.end,
            buf,
            count,
            largest,
        }
    }

    /// A run of no frames.
    pub fn empty() -> Self {
        EncodedFrames {
            buf: Arc::from(&[][..]),
            start: 0,
            end: 0,
            count: 0,
            largest: 0,
        }
    }

    /// The number of frames.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the run holds no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The frames' bytes, headers included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The length of the longest payload.
    pub fn largest_payload(&self) -> usize {
        self.largest
    }

    /// The payloads, in order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.payloads_from(0).map(|(_, payload)| payload)
    }

    /// The buffer and the range of it the run covers.
    pub fn into_parts(self) -> (Arc<[u8]>, Range<usize>) {
        (self.buf, self.start..self.end)
    }

    /// Splits the run after its first `n` frames: returns them, and keeps the rest. Both
    /// share the buffer; nothing is copied.
    ///
    /// # Panics
    ///
    /// If `n` is larger than [`len`](Self::len).
    pub fn split_to(&mut self, n: usize) -> EncodedFrames {
        assert!(n <= self.count, "split past the end of the run");
        let (mut at, mut largest) = (0, 0);
        for (end, payload) in self.payloads_from(0).take(n) {
            at = end;
            largest = largest.max(payload.len());
        }
        let rest_largest = self
            .payloads_from(at)
            .map(|(_, p)| p.len())
            .max()
            .unwrap_or(0);
        let head = EncodedFrames {
            buf: self.buf.clone(),
            start: self.start,
            end: self.start + at,
            count: n,
            largest,
        };
        self.start += at;
        self.count -= n;
        self.largest = rest_largest;
        head
    }

    /// The payloads of the frames that end after byte `written` of the run, each with the
    /// offset where its frame ends: what is left to send once `written` bytes have gone.
    pub(crate) fn payloads_from(&self, written: usize) -> impl Iterator<Item = (usize, &[u8])> {
        let mut bytes = self.as_bytes();
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = bytes.get(..HEADER_LEN)?;
            let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
            let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
            bytes = &bytes[HEADER_LEN + len..];
            at += HEADER_LEN + len;
            Some((at, payload))
        })
        .filter(move |&(end, _)| end > written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_payload_filled_in_place_completes_like_a_decoded_one() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode_frame(&payload, &mut wire).unwrap();
        encode_frame(b"next", &mut wire).unwrap();
        let mut input = &wire[..1000];
        assert_eq!(decoder.decode(&mut input).unwrap(), None);
        let mut at = 1000;
        let mut done = None;
        while done.is_none() {
            assert!(decoder.allocated() <= 2 * decoder.buffered() + 30_000);
            let (n, frame) = decoder
                .fill_payload(30_000, |payload, window| {
                    let n = window.min(7_000);
                    payload.extend_from_slice(&wire[at..at + n]);
                    Ok::<_, ()>(n)
                })
                .unwrap();
            at += n;
            done = frame;
        }
        assert_eq!(done.unwrap(), payload);
        assert_eq!(decoder.payload_remaining(), 0);
        let mut rest = &wire[at..];
        assert_eq!(
            decoder.decode(&mut rest).unwrap().as_deref(),
            Some(&b"next"[..])
        );
    }

    #[test]
    fn a_stalled_large_frame_holds_memory_in_proportion_to_what_arrived() {
        // A 16 MiB header, then 200 bytes, read as a reader of large payloads reads.
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut input = &[1, 0, 0, 0][..];
        assert_eq!(decoder.decode(&mut input).unwrap(), None);
        let (n, frame) = decoder
            .fill_payload(64 * 1024, |payload, window| {
                assert!(
                    window <= FIRST_CHUNK,
                    "a window of {window} for nothing arrived"
                );
                payload.extend_from_slice(&[7; 200]);
                Ok::<_, ()>(200)
            })
            .unwrap();
        assert_eq!((n, frame), (200, None));
        assert!(
            decoder.allocated() <= FIRST_CHUNK,
            "{}",
            decoder.allocated()
        );
        // Later windows double with what arrived, never past it plus 4 KiB.
        for _ in 0..12 {
            decoder
                .fill_payload(64 * 1024, |payload, window| {
                    payload.extend(std::iter::repeat_n(7, window));
                    Ok::<_, ()>(window)
                })
                .unwrap();
            assert!(decoder.allocated() <= 2 * decoder.buffered() + FIRST_CHUNK);
        }
    }

    #[test]
    fn a_failed_fill_keeps_what_had_arrived() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut input = &b"\0\0\0\x05he"[..];
        assert_eq!(decoder.decode(&mut input).unwrap(), None);
        assert_eq!(decoder.payload_remaining(), 3);
        assert_eq!(
            decoder.fill_payload(64, |_, _| Err("would block")),
            Err("would block")
        );
        assert_eq!((decoder.buffered(), decoder.payload_remaining()), (6, 3));
        let mut rest = &b"llo"[..];
        assert_eq!(
            decoder.decode(&mut rest).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
    }

    fn decode_all(decoder: &mut FrameDecoder, mut input: &[u8]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut input).unwrap() {
            frames.push(frame);
        }
        assert!(input.is_empty(), "decode must use up its input");
        frames
    }

    #[test]
    fn encodes_literal_bytes() {
        let mut out = Vec::new();
        encode_frame(b"", &mut out).unwrap();
        encode_frame(b"\x01", &mut out).unwrap();
        encode_frame(b"ab", &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(frame_header(0x0102_0304).unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn decodes_literal_bytes() {
        let wire = [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(
            decode_all(&mut decoder, &wire),
            vec![b"abc".to_vec(), vec![], vec![0xff]]
        );
        assert!(!decoder.is_mid_frame());
    }

    #[test]
    fn decodes_every_split_point_of_three_frames() {
        let mut wire = Vec::new();
        for payload in [&b"hello"[..], b"", &[7u8; 300][..]] {
            encode_frame(payload, &mut wire).unwrap();
        }
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
                let mut frames = decode_all(&mut decoder, &wire[..a]);
                frames.extend(decode_all(&mut decoder, &wire[a..b]));
                frames.extend(decode_all(&mut decoder, &wire[b..]));
                assert_eq!(
                    frames,
                    vec![b"hello".to_vec(), vec![], vec![7u8; 300]],
                    "split at {a}, {b}"
                );
            }
        }
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let mut wire = Vec::new();
        encode_frame(&[1, 2, 3, 4, 5], &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(16);
        for (i, byte) in wire.iter().enumerate() {
            assert_eq!(decoder.wanted(), if i < 4 { 4 - i } else { 9 - i });
            let frame = decoder.decode(&mut &[*byte][..]).unwrap();
            assert_eq!(frame.is_some(), i == wire.len() - 1);
            assert_eq!(decoder.is_mid_frame(), i != wire.len() - 1);
        }
    }

    #[test]
    fn refuses_a_header_over_the_maximum() {
        let mut decoder = FrameDecoder::new(10);
        assert_eq!(
            decoder.decode(&mut &[0, 0, 0, 11][..]),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let err = decoder
            .decode(&mut &[0xff, 0xff, 0xff, 0xff, 1, 2][..])
            .unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: DEFAULT_MAX_FRAME_SIZE
            }
        );
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes exceeds the maximum frame size of 16777216 bytes"
        );
        // A frame of exactly the maximum is fine.
        let mut decoder = FrameDecoder::new(3);
        assert_eq!(
            decode_all(&mut decoder, &[0, 0, 0, 3, 1, 2, 3]),
            vec![vec![1, 2, 3]]
        );
    }

    #[test]
    fn memory_follows_the_bytes_that_arrive_not_the_header() {
        let mut decoder = FrameDecoder::new(u32::MAX);
        let mut input = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][..];
        assert_eq!(decoder.decode(&mut input).unwrap(), None);
        assert_eq!(decoder.buffered(), 14);
        assert!(
            decoder.allocated() <= FIRST_CHUNK,
            "allocated {}",
            decoder.allocated()
        );
        // Feed 1 MiB more in 64 KiB reads: capacity stays within twice what arrived.
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..16 {
            assert_eq!(decoder.decode(&mut &chunk[..]).unwrap(), None);
            assert!(decoder.allocated() <= 2 * decoder.buffered() + FIRST_CHUNK);
        }
    }

    #[test]
    fn a_large_frame_never_allocates_past_its_length() {
        let len = 1_000_000;
        let mut wire = Vec::new();
        encode_frame(&vec![9u8; len], &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut frames = Vec::new();
        for chunk in wire.chunks(65_536) {
            frames.extend(decode_all(&mut decoder, chunk));
            assert!(decoder.allocated() <= len);
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), len);
        assert_eq!(frames[0].capacity(), len);
    }

    /// The frames of `messages` on the wire, and the points to cut it at (sorted, with its
    /// start and end).
    fn encode_and_cut(messages: &[Vec<u8>], cuts: &[prop::sample::Index]) -> (Vec<u8>, Vec<usize>) {
        let mut wire = Vec::new();
        for message in messages {
            encode_frame(message, &mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        (wire, points)
    }

    proptest! {
        #[test]
        fn encode_rechunk_decode_gives_back_the_messages(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..40),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let (wire, points) = encode_and_cut(&messages, &cuts);
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            let mut decoded = Vec::new();
            for pair in points.windows(2) {
                decoded.extend(decode_all(&mut decoder, &wire[pair[0]..pair[1]]));
            }
            prop_assert_eq!(decoded, messages);
            prop_assert!(!decoder.is_mid_frame());
        }

        #[test]
        fn runs_and_single_frames_together_give_back_the_messages_in_order(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..40),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            below in 0usize..700,
            split in any::<prop::sample::Index>(),
        ) {
            let (wire, points) = encode_and_cut(&messages, &cuts);
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            let mut decoded = Vec::new();
            for pair in points.windows(2) {
                let mut input = &wire[pair[0]..pair[1]];
                loop {
                    if let Some(mut run) = decoder.decode_run(&mut input, below) {
                        prop_assert!(run.payloads().all(|p| p.len() < below));
                        prop_assert_eq!(run.largest_payload(), run.payloads().map(<[u8]>::len).max().unwrap());
                        // A split run gives the same frames, in order.
                        let head = run.split_to(split.index(run.len() + 1));
                        decoded.extend(head.payloads().map(<[u8]>::to_vec));
                        decoded.extend(run.payloads().map(<[u8]>::to_vec));
                        continue;
                    }
                    match decoder.decode(&mut input).unwrap() {
                        Some(payload) => decoded.push(payload),
                        None => break,
                    }
                }
            }
            prop_assert_eq!(decoded, messages);
            prop_assert!(!decoder.is_mid_frame());
        }
    }

    #[test]
    fn a_run_stops_before_a_large_an_incomplete_or_a_refused_frame() {
        let mut wire = Vec::new();
        encode_frame(b"ab", &mut wire).unwrap();
        encode_frame(b"cde", &mut wire).unwrap();
        encode_frame(&[7; 10], &mut wire).unwrap();
        encode_frame(b"f", &mut wire).unwrap();
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut input = &wire[..];
        let run = decoder.decode_run(&mut input, 10).unwrap();
        assert_eq!(
            run.payloads().collect::<Vec<_>>(),
            [&b"ab"[..], &b"cde"[..]]
        );
        assert_eq!(input.len(), 4 + 10 + 4 + 1);
        // The large frame first: no run.
        assert!(decoder.decode_run(&mut input, 10).is_none());
        assert_eq!(input.len(), 4 + 10 + 4 + 1);
        // An incomplete frame: no run, nothing taken.
        let mut cut = &wire[..5];
        assert!(decoder.decode_run(&mut cut, 10).is_none());
        assert_eq!(cut.len(), 5);
        // A header over the maximum is left for `decode` to refuse.
        let decoder = FrameDecoder::new(2);
        let mut input = &wire[6..];
        assert!(decoder.decode_run(&mut input, 10).is_none());
        assert_eq!(input.len(), wire.len() - 6);
        // Mid-frame, a run never starts.
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(decoder.decode(&mut &wire[..3]).unwrap(), None);
        let mut rest = &wire[3..];
        assert!(decoder.decode_run(&mut rest, 10).is_none());
    }

    #[test]
    fn what_is_left_starts_at_the_first_frame_not_fully_written() {
        let mut wire = Vec::new();
        for payload in [&b"abcde"[..], b"", b"fg", b"hij"] {
            encode_frame(payload, &mut wire).unwrap();
        }
        for written in 0..wire.len() {
            let (rest, skip) = rest_after(&wire, written);
            let start = wire.len() - rest.as_bytes().len();
            assert_eq!(rest.as_bytes(), &wire[start..]);
            assert_eq!(start + skip, written, "resumes exactly at byte {written}");
            assert!(skip < HEADER_LEN + rest.payloads().next().unwrap().len());
        }
    }

    #[test]
    fn a_run_is_checked_once_and_a_cut_one_is_refused() {
        let mut wire = Vec::new();
        for payload in [&b"abcde"[..], b"", b"fg", b"hij"] {
            encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        let run = EncodedFrames::new(Arc::from(&wire[..]), 0..len).unwrap();
        assert_eq!((run.len(), run.largest_payload()), (4, 5));
        let cut = EncodedFrames::new(Arc::from(&wire[..]), 0..len - 1);
        assert_eq!(cut.unwrap_err(), MalformedFrames { offset: 19 });
        assert!(EncodedFrames::new(Arc::from(&wire[..]), 0..2).is_err());
    }

    #[test]
    fn a_split_run_shares_its_buffer_and_keeps_its_counts() {
        let mut wire = Vec::new();
        for payload in [&b"a"[..], b"bcdef", b"gh", b""] {
            encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        let mut run = EncodedFrames::new(Arc::from(wire), 0..len).unwrap();
        let head = run.split_to(2);
        assert_eq!((head.len(), head.largest_payload()), (2, 5));
        assert_eq!((run.len(), run.largest_payload()), (2, 2));
        assert_eq!(run.payloads().collect::<Vec<_>>(), [&b"gh"[..], &b""[..]]);
        assert!(Arc::ptr_eq(&head.buf, &run.buf));
        let all = run.split_to(2);
        assert_eq!((all.len(), run.len(), run.as_bytes().len()), (2, 0, 0));
    }
}

/// The decoder in `splinter-v1`, against the literal vectors of Splinter's `frame.rs` tests
/// (`read_version_1_zero_length`, `read_version_and_length`, `standard_write`,
/// `fail_checksum`). Here, not in `splinter.rs`: the codec depends on Splinter's header
/// layout, never the other way round.
#[cfg(test)]
mod splinter_tests {
    use super::*;
    use crate::splinter::{header, HEADER_LEN};

    const ZERO_LENGTH: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff];
    const LENGTH_2: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0xfd];
    const LENGTH_3: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xfc];
    const LENGTH_2_NO_CHECKSUM: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00];

    #[test]
    fn the_decoder_reads_splinters_frames_split_anywhere() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&LENGTH_3);
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&ZERO_LENGTH);
        wire.extend_from_slice(&LENGTH_2);
        wire.extend_from_slice(b"de");
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut decoder =
                    FrameDecoder::with_framing(DEFAULT_MAX_FRAME_SIZE, Framing::SplinterV1);
                let mut frames = Vec::new();
                for part in [&wire[..a], &wire[a..b], &wire[b..]] {
                    let mut input = part;
                    while let Some(frame) = decoder.decode(&mut input).unwrap() {
                        frames.push(frame);
                    }
                    assert!(input.is_empty());
                }
                assert_eq!(frames, [&b"abc"[..], b"", b"de"], "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn a_header_fed_byte_by_byte_is_checked_whole() {
        let mut decoder = FrameDecoder::with_framing(DEFAULT_MAX_FRAME_SIZE, Framing::SplinterV1);
        for (i, byte) in LENGTH_2_NO_CHECKSUM.iter().enumerate() {
            assert_eq!(decoder.wanted(), HEADER_LEN - i);
            let decoded = decoder.decode(&mut &[*byte][..]);
            match i {
                6 => assert_eq!(
                    decoded,
                    Err(FrameError::Checksum {
                        expected: 0xfd,
                        found: 0
                    })
                ),
                _ => assert_eq!(decoded, Ok(None)),
            }
        }
        let mut decoder = FrameDecoder::with_framing(DEFAULT_MAX_FRAME_SIZE, Framing::SplinterV1);
        for byte in LENGTH_2.iter().chain(b"hi") {
            let decoded = decoder.decode(&mut &[*byte][..]).unwrap();
            if let Some(frame) = decoded {
                assert_eq!(frame, b"hi");
            }
        }
        assert!(!decoder.is_mid_frame());
    }

    #[test]
    fn a_length_over_the_maximum_is_refused_after_the_checksum() {
        let mut decoder = FrameDecoder::with_framing(2, Framing::SplinterV1);
        assert_eq!(
            decoder.decode(&mut &LENGTH_3[..]),
            Err(FrameError::TooLarge { len: 3, max: 2 })
        );
    }

    #[test]
    fn runs_of_splinter_frames_leave_the_decoder_with_raw_headers() {
        let mut wire = Vec::new();
        for payload in [&b"ab"[..], b"", b"cde"] {
            wire.extend_from_slice(&header(payload.len() as u32));
            wire.extend_from_slice(payload);
        }
        // A bad checksum after them: the run stops before it, `decode` refuses it.
        wire.extend_from_slice(&LENGTH_2_NO_CHECKSUM);
        let decoder = FrameDecoder::with_framing(DEFAULT_MAX_FRAME_SIZE, Framing::SplinterV1);
        let mut input = &wire[..];
        let run = decoder.decode_run(&mut input, 100).unwrap();
        assert_eq!(run.as_bytes(), b"\0\0\0\x02ab\0\0\0\0\0\0\0\x03cde");
        assert_eq!((run.len(), run.largest_payload()), (3, 3));
        assert_eq!(input, LENGTH_2_NO_CHECKSUM);
        assert!(decoder.decode_run(&mut input, 100).is_none());
        let mut decoder = decoder;
        assert!(matches!(
            decoder.decode(&mut input),
            Err(FrameError::Checksum { .. })
        ));
    }
}
