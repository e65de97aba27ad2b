//! The errors of reading frames, below both framings: the codec ([`crate::codec`]) and
//! Splinter's versioned headers ([`crate::splinter`]) refuse bytes with them, and
//! `codec` re-exports them, so neither of the two imports the other's errors.

use std::fmt;

/// A frame the codec refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A header announced a payload longer than the maximum frame size.
    TooLarge {
        /// The length the header announced.
        len: u64,
        /// The largest payload accepted.
        max: u32,
    },
    /// (Splinter framing) A header's checksum does not match its other six bytes.
    Checksum {
        /// The checksum of the header's first six bytes.
        expected: u8,
        /// The checksum byte that arrived.
        found: u8,
    },
    /// (Splinter framing) A header names a frame version other than 1.
    Version {
        /// The version it names.
        version: u16,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the maximum frame size of {max} bytes"
                )
            }
            FrameError::Checksum { expected, found } => write!(
                f,
                "frame header checksum {found:#04x} does not match its bytes (expected {expected:#04x})"
            ),
            FrameError::Version { version } => {
                write!(f, "frame header of version {version}, not the negotiated version 1")
            }
        }
    }
}

impl std::error::Error for FrameError {}
