//! The frame decoder, fed arbitrary bytes in arbitrary chunks, read as a connection reads
//! them: `decode_run`, then `decode`, in turn, and `fill_payload` for a large payload in
//! progress, in either framing (raw 4-byte headers, or Splinter's 7-byte `splinter-v1`
//! headers with a version and a checksum). Every frame a reference decode of the whole
//! input finds comes out once, in order, whatever the split; an oversize header (or, in
//! `splinter-v1`, a wrong version or checksum) is an error at the same point; memory for
//! an incomplete frame stays within twice what arrived plus 4 KiB; nothing panics.
//!
//! The input (see README.md beside this folder; `seeds.mjs` writes the seeds):
//!
//! ```text
//! byte 0   flags
//!          bits 0-1  max_frame_size: 0 the default (16 MiB), 1 byte 1 (0..=255),
//!                    2 (byte 1 + 1) * 256, 3 u32::MAX
//!          bit 2     call decode_run before each decode
//!          bit 3     decode_run's payload_below is byte 2 (else RUN_PAYLOAD_LIMIT)
//!          bit 4     read a large payload in progress with fill_payload
//!          bit 5     ... once byte 3 (at least 1) bytes remain, in windows of at most
//!                    8 * byte 3 (else DIRECT_READ and READ_CHUNK, as a connection does)
//!          bit 6     choose per call, from a generator seeded by the input, whether to
//!                    use decode_run and fill_payload, and let some fills fail
//!          bit 7     probe: an empty decode and a decode_run mid-frame change nothing
//! byte 1-3 parameters, as above
//! byte 4   bits 0-6: n, the number of chunk sizes that follow; bit 7: `splinter-v1`
//! n bytes  chunk sizes: b below 0x80 is b bytes, else (b & 0x7f) * 64 bytes
//! the rest the bytes on the wire, cut into chunks of those sizes; what is left after the
//!          last is one more chunk
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use wiremesh_core::codec::{FrameDecoder, FrameError, Framing, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN};
use wiremesh_core::transport::{DIRECT_READ, RUN_PAYLOAD_LIMIT};

/// The slack the decoder's memory bound allows: its first allocation.
const SLACK: usize = 4096;
/// A connection's read size (the window it gives `fill_payload`).
const READ_CHUNK: usize = 64 * 1024;

struct Config {
    max: u32,
    framing: Framing,
    /// The header's length in that framing.
    header: usize,
    runs: bool,
    payload_below: usize,
    fill: bool,
    fill_threshold: usize,
    fill_window: usize,
    random: bool,
    probe: bool,
}

/// A small deterministic generator, so that an input always runs the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

/// What a decode of the whole input finds, computed here by hand: the payloads of the
/// whole frames (their ranges in the wire), and the header that is too large, if any.
struct Reference {
    frames: Vec<std::ops::Range<usize>>,
    error: Option<(usize, FrameError)>,
}

impl Reference {
    fn of(wire: &[u8], max: u32, framing: Framing) -> Self {
        let header = framing.header_len();
        let mut frames = Vec::new();
        let mut at = 0;
        while wire.len() - at >= header {
            let len = match framing {
                Framing::Raw => u32::from_be_bytes(wire[at..at + HEADER_LEN].try_into().unwrap()),
                Framing::SplinterV1 => {
                    // Splinter's layout, by hand: version, length, checksum (the LRC of the
                    // six bytes before it).
                    let version = u16::from_be_bytes([wire[at], wire[at + 1]]);
                    let sum = wire[at..at + 6]
                        .iter()
                        .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
                    let expected = (sum ^ 0xff).wrapping_add(1);
                    let error = if version != 1 {
                        Some(FrameError::Version { version })
                    } else if wire[at + 6] != expected {
                        Some(FrameError::Checksum {
                            expected,
                            found: wire[at + 6],
                        })
                    } else {
                        None
                    };
                    if let Some(error) = error {
                        return Reference {
                            frames,
                            error: Some((at, error)),
                        };
                    }
                    u32::from_be_bytes(wire[at + 2..at + 6].try_into().unwrap())
                }
            };
            if len > max {
                let error = FrameError::TooLarge {
                    len: u64::from(len),
                    max,
                };
                return Reference {
                    frames,
                    error: Some((at, error)),
                };
            }
            let len = len as usize;
            if wire.len() - at - header < len {
                break;
            }
            frames.push(at + header..at + header + len);
            at += header + len;
        }
        Reference {
            frames,
            error: None,
        }
    }

    /// Where the frame in progress at byte `pos` of the wire starts.
    fn frame_start(&self, pos: usize) -> usize {
        match self.frames_by(pos) {
            0 => 0,
            n => self.frames[n - 1].end,
        }
    }

    /// How many frames end at or before byte `pos`.
    fn frames_by(&self, pos: usize) -> usize {
        self.frames.partition_point(|range| range.end <= pos)
    }
}

/// The decoder's promises about the frame in progress, whatever was fed so far.
fn check_state(decoder: &FrameDecoder) {
    let header = decoder.framing().header_len();
    let buffered = decoder.buffered();
    let allocated = decoder.allocated();
    assert!(
        allocated <= 2 * buffered + SLACK,
        "{allocated} bytes allocated for {buffered} buffered"
    );
    assert_eq!(decoder.is_mid_frame(), buffered > 0);
    if buffered < header {
        assert_eq!(allocated, 0, "memory before the header is whole");
        assert_eq!(decoder.wanted(), header - buffered);
        assert_eq!(decoder.payload_remaining(), 0);
    } else {
        let announced = buffered - header + decoder.wanted();
        assert!(
            allocated <= announced,
            "{allocated} bytes allocated for a payload of {announced}"
        );
        assert!(announced <= decoder.max_frame_size() as usize);
        assert_eq!(decoder.payload_remaining(), decoder.wanted());
        assert!(decoder.wanted() > 0, "a whole frame is never held back");
    }
}

/// Frames as they come out of the chunked decode, checked against the reference.
struct Out<'a> {
    wire: &'a [u8],
    reference: &'a Reference,
    next: usize,
}

impl Out<'_> {
    fn frame(&mut self, payload: &[u8]) {
        let Some(range) = self.reference.frames.get(self.next) else {
            panic!(
                "frame {} ({} bytes) is more than the {} of the reference",
                self.next,
                payload.len(),
                self.reference.frames.len()
            );
        };
        assert!(
            payload == &self.wire[range.clone()],
            "frame {} differs from the reference",
            self.next
        );
        self.next += 1;
    }

    /// A frame of its own buffer: never allocated past its length.
    fn owned(&mut self, payload: Vec<u8>) {
        assert_eq!(
            payload.capacity(),
            payload.len(),
            "a payload's buffer is exact"
        );
        self.frame(&payload);
    }
}

fn config(head: [u8; 5]) -> Config {
    let [flags, a, b, c, n] = head;
    let framing = match n & 0x80 != 0 {
        true => Framing::SplinterV1,
        false => Framing::Raw,
    };
    let max = match flags & 3 {
        0 => DEFAULT_MAX_FRAME_SIZE,
        1 => u32::from(a),
        2 => (u32::from(a) + 1) * 256,
        _ => u32::MAX,
    };
    let small = flags & 0x20 != 0;
    Config {
        max,
        framing,
        header: framing.header_len(),
        runs: flags & 0x04 != 0,
        payload_below: match flags & 0x08 != 0 {
            true => usize::from(b),
            false => RUN_PAYLOAD_LIMIT,
        },
        fill: flags & 0x10 != 0,
        fill_threshold: match small {
            true => usize::from(c).max(1),
            false => DIRECT_READ,
        },
        fill_window: match small {
            true => usize::from(c).max(1) * 8,
            false => READ_CHUNK,
        },
        random: flags & 0x40 != 0,
        probe: flags & 0x80 != 0,
    }
}

fn run(data: &[u8]) {
    let mut head = [0u8; 5];
    let (known, rest) = data.split_at(data.len().min(head.len()));
    head[..known.len()].copy_from_slice(known);
    let config = config(head);
    let (cuts, wire) = rest.split_at(rest.len().min(usize::from(head[4] & 0x7f)));
    let mut rng =
        Rng(
            u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], 0x5a, 0xa5, 1])
                ^ (wire.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );

    let reference = Reference::of(wire, config.max, config.framing);

    // The decoder alone, given the whole input at once, agrees with the reference.
    {
        let mut decoder = FrameDecoder::with_framing(config.max, config.framing);
        let mut out = Out {
            wire,
            reference: &reference,
            next: 0,
        };
        let mut input = wire;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(payload)) => out.owned(payload),
                Ok(None) => {
                    assert!(reference.error.is_none(), "the whole input hid an error");
                    assert_eq!(out.next, reference.frames.len());
                    break;
                }
                Err(err) => {
                    let (at, expected) = reference.error.clone().expect("an error");
                    assert_eq!(err, expected);
                    assert_eq!(out.next, reference.frames.len());
                    assert!(wire.len() - input.len() <= at + config.header);
                    break;
                }
            }
        }
    }

    // The chunks, as a connection's reads would bring them.
    let mut bounds = Vec::with_capacity(cuts.len() + 1);
    let mut at = 0;
    for &cut in cuts {
        let size = match cut < 0x80 {
            true => usize::from(cut),
            false => usize::from(cut & 0x7f) * 64,
        };
        let end = (at + size).min(wire.len());
        bounds.push(at..end);
        at = end;
    }
    bounds.push(at..wire.len());

    let mut decoder = FrameDecoder::with_framing(config.max, config.framing);
    let mut out = Out {
        wire,
        reference: &reference,
        next: 0,
    };
    for chunk in bounds {
        let mut input = &wire[chunk.clone()];
        // Set once a fill has failed on this input: the next one succeeds, so the loop
        // always moves on.
        let mut failed = false;
        let outcome = loop {
            if config.probe {
                let before = (decoder.buffered(), decoder.wanted());
                assert_eq!(decoder.decode(&mut &[][..]), Ok(None));
                assert_eq!((decoder.buffered(), decoder.wanted()), before);
                if decoder.is_mid_frame() {
                    let mut rest = input;
                    assert!(decoder.decode_run(&mut rest, usize::MAX).is_none());
                    assert_eq!(rest.len(), input.len(), "a run mid-frame took bytes");
                }
            }
            let remaining = decoder.payload_remaining();
            if config.fill
                && !input.is_empty()
                && remaining >= config.fill_threshold
                && (!config.random || !rng.chance(4))
            {
                let fail = config.random && !failed && rng.chance(4);
                let before = decoder.buffered();
                let have = before - config.header;
                let available = input;
                let filled = decoder.fill_payload(config.fill_window, |payload, window| {
                    assert!(window > 0);
                    assert!(window <= config.fill_window, "a window past the maximum");
                    assert!(window <= remaining, "a window past the payload");
                    assert!(window <= have.max(SLACK), "a window past what arrived");
                    assert!(payload.capacity() - payload.len() >= window);
                    let n = window.min(available.len());
                    if fail {
                        // A read that fails after putting some bytes in.
                        payload.extend_from_slice(&available[..n.min(3)]);
                        return Err(());
                    }
                    payload.extend_from_slice(&available[..n]);
                    Ok(n)
                });
                match filled {
                    Ok((n, frame)) => {
                        assert!(n > 0 && n <= input.len());
                        input = &input[n..];
                        if let Some(payload) = frame {
                            out.owned(payload);
                        }
                        failed = false;
                    }
                    Err(()) => {
                        assert!(fail);
                        assert_eq!(decoder.buffered(), before, "a failed fill kept bytes");
                        failed = true;
                    }
                }
                check_state(&decoder);
                continue;
            }
            if config.runs && (!config.random || !rng.chance(3)) {
                let before = input.len();
                match decoder.decode_run(&mut input, config.payload_below) {
                    Some(run) => {
                        assert!(!run.is_empty());
                        let mut count = 0;
                        let mut largest = 0;
                        for payload in run.payloads() {
                            assert!(payload.len() < config.payload_below);
                            assert!(payload.len() <= config.max as usize);
                            out.frame(payload);
                            count += 1;
                            largest = largest.max(payload.len());
                        }
                        assert_eq!((run.len(), run.largest_payload()), (count, largest));
                        // A run leaves with raw 4-byte headers, whatever the framing read.
                        assert_eq!(
                            run.as_bytes().len() + (config.header - HEADER_LEN) * count,
                            before - input.len()
                        );
                    }
                    None => assert_eq!(input.len(), before, "no run, yet bytes were taken"),
                }
                check_state(&decoder);
            }
            match decoder.decode(&mut input) {
                Ok(Some(payload)) => {
                    check_state(&decoder);
                    out.owned(payload);
                }
                Ok(None) => {
                    assert!(
                        input.is_empty(),
                        "decode stopped before the end of its input"
                    );
                    check_state(&decoder);
                    break Ok(());
                }
                Err(err) => break Err(err),
            }
        };
        match outcome {
            Ok(()) => {
                // Everything that ended in what was fed has come out; the rest is held.
                let pos = chunk.end;
                assert_eq!(out.next, reference.frames_by(pos), "frames held back");
                if let Some((at, _)) = &reference.error {
                    assert!(
                        pos < at + config.header,
                        "a header over the maximum was let by"
                    );
                }
                assert_eq!(
                    decoder.buffered(),
                    pos - reference.frame_start(pos),
                    "the bytes held are not those of the frame in progress"
                );
            }
            Err(err) => {
                let (at, expected) = reference
                    .error
                    .clone()
                    .unwrap_or_else(|| panic!("{err:?}, where the reference saw no error"));
                assert_eq!(err, expected);
                assert_eq!(out.next, reference.frames.len(), "frames before the error");
                // The error comes with the chunk that completes the header, not before.
                assert!(
                    chunk.start < at + config.header && at + config.header <= chunk.end,
                    "the header at {at} was refused in the chunk {chunk:?}"
                );
                return;
            }
        }
    }
    assert!(
        reference.error.is_none(),
        "no error, where the reference saw one"
    );
    assert_eq!(out.next, reference.frames.len());
}

fuzz_target!(|data: &[u8]| run(data));
