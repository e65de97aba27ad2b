//! Splinter's versioned framing (Splinter 0.3.13 on): its frame header and the version
//! negotiation that opens a connection, as bytes and state, with no I/O.
//!
//! When a connection opens, the dialling side sends the range of frame versions it
//! speaks and the listening side answers with the one it picked, or 0 if none is in
//! common (and then closes the connection). Every frame after that has a 7-byte header:
//!
//! ```text
//! dialler → listener:  [min version u16][max version u16]
//! listener → dialler:  [version u16]                       (0: none in common)
//!
//! +-------+-------+-------+-------+-------+-------+--------+------------ … -+
//! | version = 1   |     length (u32, big-endian)  |checksum| payload         |
//! +-------+-------+-------+-------+-------+-------+--------+------------ … -+
//! ```
//!
//! All numbers are big-endian. The checksum is the ISO 1155 longitudinal redundancy check
//! of the six bytes before it: their sum modulo 256, negated (two's complement). These
//! are the bytes of the `splinter` crate's `libsplinter/src/transport/socket/frame.rs`
//! (`FrameHeader`, `FrameNegotiation`), whose test vectors the tests below repeat.
//!
//! # Contract
//!
//! - [`header`] and [`parse_header`] are exact inverses for every length; `parse_header`
//!   refuses a header whose version is not 1 or whose checksum does not match, with a
//!   [`FrameError`] (the stream has lost its framing).
//! - A [`Negotiation`] is driven by whoever owns the socket: write [`to_write`] (calling
//!   [`wrote`]), read at most [`wanted`] bytes and hand them to [`received`], until
//!   [`outcome`] gives the version or the error. It never asks for a byte past the end of
//!   the handshake, so frames that follow it stay in the socket for the connection's
//!   reader.
//!
//! [`to_write`]: Negotiation::to_write
//! [`wrote`]: Negotiation::wrote
//! [`wanted`]: Negotiation::wanted
//! [`received`]: Negotiation::received
//! [`outcome`]: Negotiation::outcome

use std::fmt;

use crate::frame_error::FrameError;

/// Length of a version 1 frame header: version (2), length (4), checksum (1).
pub const HEADER_LEN: usize = 7;
/// The one frame version there is, and the only one wiremesh speaks.
pub const VERSION_1: u16 = 1;
/// What a listener answers when the dialler offers no version it speaks.
pub const NO_VERSION: u16 = 0;

/// The ISO 1155 longitudinal redundancy check of `bytes`: their sum modulo 256, negated.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
        .wrapping_neg()
}

/// The version 1 header of a payload of `len` bytes.
pub fn header(len: u32) -> [u8; HEADER_LEN] {
    let [v0, v1] = VERSION_1.to_be_bytes();
    let [l0, l1, l2, l3] = len.to_be_bytes();
    let mut header = [v0, v1, l0, l1, l2, l3, 0];
    header[6] = checksum(&header[..6]);
    header
}

/// The payload length a version 1 header announces, after checking its version and
/// checksum (not the length: the decoder checks that against its maximum).
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<u32, FrameError> {
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != VERSION_1 {
        return Err(FrameError::Version { version });
    }
    let expected = checksum(&header[..6]);
    if header[6] != expected {
        return Err(FrameError::Checksum {
            expected,
            found: header[6],
        });
    }
    Ok(u32::from_be_bytes([
        header[2], header[3], header[4], header[5],
    ]))
}

/// Which end of a connection negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that connected: it offers a range of versions and reads the answer.
    Dialler,
    /// The side that accepted: it reads the offer and answers.
    Listener,
}

/// Why a negotiation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// (Dialler) The listener answered 0: it speaks none of the versions offered.
    Refused,
    /// (Dialler) The listener answered a version that was not offered.
    Unoffered {
        /// The version it answered.
        version: u16,
    },
    /// (Listener) The dialler offered a range without version 1; it was answered 0.
    NoCommonVersion {
        /// The lowest version offered.
        min: u16,
        /// The highest version offered.
        max: u16,
    },
    /// The peer closed the connection before the negotiation ended.
    Closed,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::Refused => f.write_str(
                "the peer speaks no splinter frame version in common (it answered 0 to versions 1..=1)",
            ),
            NegotiationError::Unoffered { version } => write!(
                f,
                "the peer chose splinter frame version {version}, which was not offered (1..=1)"
            ),
            NegotiationError::NoCommonVersion { min, max } => write!(
                f,
                "the peer offered splinter frame versions {min}..={max}, without version 1: refused"
            ),
            NegotiationError::Closed => {
                f.write_str("the peer closed the connection during the frame version negotiation")
            }
        }
    }
}

impl std::error::Error for NegotiationError {}

/// One side of the frame version negotiation; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Negotiation {
    side: Side,
    /// What this side sends, and how much of it has gone.
    out: [u8; 4],
    out_len: usize,
    written: usize,
    /// What this side reads (2 bytes for the dialler, 4 for the listener).
    input: [u8; 4],
    input_len: usize,
    read: usize,
    /// Known once the peer's bytes have arrived; given out once `out` has all gone.
    result: Option<Result<u16, NegotiationError>>,
}

impl Negotiation {
    /// The negotiation of `side`, offering (or accepting) version 1 only.
    pub fn new(side: Side) -> Self {
        let [a, b] = VERSION_1.to_be_bytes();
        let (out, out_len, input_len) = match side {
            Side::Dialler => ([a, b, a, b], 4, 2),
            Side::Listener => ([0; 4], 0, 4),
        };
        Negotiation {
            side,
            out,
            out_len,
            written: 0,
            input: [0; 4],
            input_len,
            read: 0,
            result: None,
        }
    }

    /// The side this negotiates for.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Bytes to write now (none until the listener has read the offer).
    pub fn to_write(&self) -> &[u8] {
        &self.out[self.written..self.out_len]
    }

    /// `n` bytes of [`to_write`](Self::to_write) went out.
    pub fn wrote(&mut self, n: usize) {
        assert!(
            n <= self.out_len - self.written,
            "wrote more than was to write"
        );
        self.written += n;
    }

    /// Bytes to read now, at most: never past the end of the handshake.
    pub fn wanted(&self) -> usize {
        match self.to_write().is_empty() || self.side == Side::Listener {
            true => self.input_len - self.read,
            // The dialler reads the answer only once its offer has gone.
            false => 0,
        }
    }

    /// Takes bytes the peer sent: at most [`wanted`](Self::wanted) of them.
    pub fn received(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.wanted(), "more than was wanted");
        self.input[self.read..self.read + bytes.len()].copy_from_slice(bytes);
        self.read += bytes.len();
        if self.read < self.input_len {
            return;
        }
        let word = |at: usize| u16::from_be_bytes([self.input[at], self.input[at + 1]]);
        self.result = Some(match self.side {
            Side::Dialler => match word(0) {
                VERSION_1 => Ok(VERSION_1),
                NO_VERSION => Err(NegotiationError::Refused),
                version => Err(NegotiationError::Unoffered { version }),
            },
            Side::Listener => {
                let (min, max) = (word(0), word(2));
                // As Splinter's listener: refused if its version is outside [min, max].
                let answer = match min > VERSION_1 || max < VERSION_1 {
                    true => NO_VERSION,
                    false => VERSION_1,
                };
                self.out[..2].copy_from_slice(&answer.to_be_bytes());
                self.out_len = 2;
                match answer {
                    NO_VERSION => Err(NegotiationError::NoCommonVersion { min, max }),
                    version => Ok(version),
                }
            }
        });
    }

    /// The peer closed the stream: the negotiation fails (unless it had ended already).
    pub fn closed(&mut self) {
        if self.result.is_none() {
            self.result = Some(Err(NegotiationError::Closed));
        }
    }

    /// The version agreed on, or why none was, once this side has read what it needs and
    /// written its answer; `None` until then.
    pub fn outcome(&self) -> Option<Result<u16, NegotiationError>> {
        match &self.result {
            Some(Err(NegotiationError::Closed)) => self.result.clone(),
            Some(result) if self.to_write().is_empty() => Some(result.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of Splinter's `frame.rs` tests: `read_version_1_zero_length`,
    // `read_version_and_length`, `standard_write`, `fail_checksum`.
    const ZERO_LENGTH: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff];
    const LENGTH_2: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0xfd];
    const LENGTH_3: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xfc];
    const LENGTH_2_NO_CHECKSUM: [u8; 7] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00];

    #[test]
    fn headers_are_splinters_literal_bytes() {
        assert_eq!(header(0), ZERO_LENGTH);
        assert_eq!(header(2), LENGTH_2);
        assert_eq!(header(3), LENGTH_3);
        assert_eq!(parse_header(&ZERO_LENGTH), Ok(0));
        assert_eq!(parse_header(&LENGTH_2), Ok(2));
        assert_eq!(parse_header(&LENGTH_3), Ok(3));
        // Splinter's `round_trip`, and lengths whose bytes carry past 255.
        for len in [100, 0x0102_0304, 0xffff_ffff, 0x00ff_ff00] {
            assert_eq!(parse_header(&header(len)), Ok(len));
        }
    }

    #[test]
    fn checksum_is_the_negated_sum_modulo_256() {
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[0, 1, 0, 0, 0, 0]), 0xff);
        assert_eq!(checksum(&[0, 1, 0xff, 0xff, 0xff, 0xff]), 0x03);
        for bytes in [[0u8, 1, 2, 3, 4, 5], [0xff; 6], [0x80, 0x80, 0, 0, 0, 0]] {
            let sum: u8 = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
            assert_eq!(sum.wrapping_add(checksum(&bytes)), 0, "{bytes:?}");
        }
    }

    #[test]
    fn a_bad_checksum_or_version_is_refused() {
        assert_eq!(
            parse_header(&LENGTH_2_NO_CHECKSUM),
            Err(FrameError::Checksum {
                expected: 0xfd,
                found: 0
            })
        );
        let mut version_2 = LENGTH_2;
        version_2[1] = 2;
        version_2[6] = checksum(&version_2[..6]);
        assert_eq!(
            parse_header(&version_2),
            Err(FrameError::Version { version: 2 })
        );
        // A raw frame's header read as version 1: length 5 reads as version 0.
        assert_eq!(
            parse_header(&[0, 0, 0, 5, b'h', b'e', b'l']),
            Err(FrameError::Version { version: 0 })
        );
    }

    /// Drives two negotiations against each other, the listener's bytes given to the
    /// dialler and back, one byte at a time.
    fn negotiate(dialler: &mut Negotiation, listener: &mut Negotiation) {
        fn pass(from: &mut Negotiation, to: &mut Negotiation) {
            if let Some(&byte) = from.to_write().first() {
                if to.wanted() > 0 {
                    from.wrote(1);
                    to.received(&[byte]);
                }
            }
        }
        for _ in 0..20 {
            pass(dialler, listener);
            pass(listener, dialler);
        }
    }

    #[test]
    fn both_sides_agree_on_version_1_with_splinters_bytes() {
        let mut dialler = Negotiation::new(Side::Dialler);
        assert_eq!(dialler.to_write(), [0, 1, 0, 1]);
        assert_eq!(
            dialler.wanted(),
            0,
            "the answer is read after the offer goes"
        );
        let mut listener = Negotiation::new(Side::Listener);
        assert_eq!((listener.to_write(), listener.wanted()), (&[][..], 4));
        negotiate(&mut dialler, &mut listener);
        assert_eq!(dialler.outcome(), Some(Ok(1)));
        assert_eq!(listener.outcome(), Some(Ok(1)));
        assert_eq!((dialler.wanted(), listener.wanted()), (0, 0));
    }

    #[test]
    fn a_listener_answers_0_to_a_range_without_version_1() {
        // Splinter's `out_of_range`: the dialler offers 3..=5, the listener answers 0.
        let mut listener = Negotiation::new(Side::Listener);
        listener.received(&[0, 3, 0, 5]);
        assert_eq!(listener.outcome(), None, "the answer must go first");
        assert_eq!(listener.to_write(), [0, 0]);
        listener.wrote(2);
        assert_eq!(
            listener.outcome(),
            Some(Err(NegotiationError::NoCommonVersion { min: 3, max: 5 }))
        );
        let mut listener = Negotiation::new(Side::Listener);
        listener.received(&[0, 0, 0, 0]);
        assert_eq!(listener.to_write(), [0, 0]);
        let mut listener = Negotiation::new(Side::Listener);
        listener.received(&[0, 0, 0, 9]);
        assert_eq!(listener.to_write(), [0, 1]);
    }

    #[test]
    fn a_dialler_answered_0_or_an_unoffered_version_fails() {
        // Splinter's `unsupported_range`: the listener answers 0.
        let mut dialler = Negotiation::new(Side::Dialler);
        dialler.wrote(4);
        dialler.received(&[0]);
        assert_eq!(dialler.outcome(), None);
        dialler.received(&[0]);
        assert_eq!(dialler.outcome(), Some(Err(NegotiationError::Refused)));
        let mut dialler = Negotiation::new(Side::Dialler);
        dialler.wrote(4);
        dialler.received(&[0, 2]);
        assert_eq!(
            dialler.outcome(),
            Some(Err(NegotiationError::Unoffered { version: 2 }))
        );
    }

    #[test]
    fn a_peer_that_closes_early_ends_the_negotiation() {
        let mut listener = Negotiation::new(Side::Listener);
        listener.received(&[0, 1]);
        listener.closed();
        assert_eq!(listener.outcome(), Some(Err(NegotiationError::Closed)));
    }
}
