//! Handing what a mesh received to JavaScript: payloads with one copy or none, and the
//! disconnect notices among them, in the order of the stream.
//!
//! # Contract
//!
//! - [`hand_over`] lays the items out in `meta`, four numbers each: an envelope is
//!   `[id, buffer, start, end]` (its payload is bytes `start..end` of the returned array's
//!   element `buffer`); a notice is `[id, -1, element, 0]` (the returned array's element
//!   `element` is its [`DisconnectNotice`]). JavaScript makes a view per payload.
//! - Payloads are handed over with one copy or none: a run of small frames from one read
//!   becomes the payloads' buffer as it is; payloads of [`SHARED_LIMIT`] bytes and more are
//!   their own buffers; only what is left (small frames that arrived alone, parts of runs)
//!   is copied into one buffer per batch. Buffers shorter than [`COPY_BELOW`] are copied
//!   into JavaScript memory (cheaper than an external buffer's finalizer).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use wiremesh_core::codec::Decoded;
use wiremesh_core::{Delivery, Disconnect, DisconnectReason, Received};

/// Payloads shorter than this share one buffer per batch; longer ones are handed over
/// without a copy. Chosen with `benchmark/payload-handover.mjs`, which sets other limits
/// through `setSharedLimit` to compare.
const SHARED_LIMIT: u32 = 8 * 1024;

static SHARED_LIMIT_NOW: AtomicU32 = AtomicU32::new(SHARED_LIMIT);

/// Runs and shared buffers shorter than this are copied into JavaScript memory.
const COPY_BELOW: usize = 1024;

/// Sets the payload size from which batches hand payloads over uncopied, for every mesh
/// (for `benchmark/payload-handover.mjs`; the default is the measured best).
#[napi]
pub fn set_shared_limit(limit: u32) {
    // Relaxed: a setting read at the next batch; nothing else is ordered by it.
    SHARED_LIMIT_NOW.store(limit, Relaxed);
}

/// A connection the reactor removed by itself.
#[napi(object, object_from_js = false)]
pub struct DisconnectNotice {
    /// The connection's id.
    pub id: f64,
    /// `Eof`, `EofMidFrame`, `Protocol`, `IoError`, `Shutdown` or `Timeout`.
    pub kind: String,
    pub message: String,
    /// The payloads it had not sent, oldest first.
    pub unsent: Vec<Buffer>,
    /// A dialled id that waits for its next connection (what it had not written stays
    /// queued for it).
    pub parked: bool,
    /// Frames written that the peer's system had not acknowledged (at most), where known.
    pub unacknowledged: Option<f64>,
}

impl From<Disconnect> for DisconnectNotice {
    fn from(notice: Disconnect) -> Self {
        let kind = match &notice.reason {
            DisconnectReason::Eof => "Eof",
            DisconnectReason::EofMidFrame { .. } => "EofMidFrame",
            DisconnectReason::Protocol(_) => "Protocol",
            DisconnectReason::Io(_) => "IoError",
            DisconnectReason::Timeout => "Timeout",
            DisconnectReason::Shutdown => "Shutdown",
        };
        DisconnectNotice {
            id: notice.id as f64,
            kind: kind.into(),
            message: notice.reason.to_string(),
            unsent: notice
                .unsent
                .into_iter()
                .map(|envelope| envelope.into_parts().1.into())
                .collect(),
            parked: notice.parked,
            unacknowledged: notice.unacknowledged.map(|frames| frames as f64),
        }
    }
}

/// An element of a hand-over: a buffer on its way to JavaScript (uncopied, or, below
/// [`COPY_BELOW`] bytes, copied into memory JavaScript owns), or a notice.
pub enum Handed {
    Uncopied(Uint8Array),
    Copied(Vec<u8>),
    Notice(DisconnectNotice),
}

impl Handed {
    /// `bytes` as a buffer for JavaScript, copied if short.
    fn of(bytes: Vec<u8>) -> Self {
        match bytes.len() < COPY_BELOW {
            true => Handed::Copied(bytes),
            false => Handed::Uncopied(Uint8Array::new(bytes)),
        }
    }
}

impl TypeName for Handed {
    fn type_name() -> &'static str {
        "Uint8Array | DisconnectNotice"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Handed {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        match val {
            // SAFETY: forwarded as napi-rs would convert them.
            Handed::Uncopied(array) => unsafe { Uint8Array::to_napi_value(env, array) },
            Handed::Notice(notice) => unsafe { DisconnectNotice::to_napi_value(env, notice) },
            Handed::Copied(bytes) => {
                let (mut data, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
                // SAFETY: Node copies `bytes.len()` bytes from a live slice.
                let status = unsafe {
                    napi::sys::napi_create_buffer_copy(
                        env,
                        bytes.len(),
                        bytes.as_ptr().cast(),
                        &mut data,
                        &mut value,
                    )
                };
                match status {
                    napi::sys::Status::napi_ok => Ok(value),
                    status => Err(Error::new(Status::from(status), "could not copy a buffer")),
                }
            }
        }
    }
}

/// How many entries `meta` has room for after its count (at least one, or an error).
pub(crate) fn meta_room(meta: &[f64]) -> Result<usize> {
    match meta.len().saturating_sub(1) / 4 {
        0 => Err(Error::new(Status::InvalidArg, "no room in meta")),
        room => Ok(room),
    }
}

/// Lays `items` out in `meta` (after its count, `meta[0]`: the number of entries) and
/// hands their buffers and notices over; see the module contract.
pub(crate) fn hand_over(items: Vec<Received>, meta: &mut [f64]) -> Vec<Handed> {
    let shared_limit = SHARED_LIMIT_NOW.load(Relaxed) as usize;
    let entries = &mut meta[1..];
    let mut handed = Vec::new();
    let mut shared: Vec<u8> = Vec::new();
    // Entries whose payload is in `shared`, which goes last, once its index is known.
    let mut in_shared = Vec::new();
    let mut entry = 0;
    let mut offsets = Vec::new();
    for item in items {
        let Delivery { id, frames } = match item {
            Received::Frames(delivery) => delivery,
            Received::Disconnect(notice) => {
                let id = notice.id;
                write_entry(entries, entry, id, -1.0, handed.len(), 0);
                handed.push(Handed::Notice(notice.into()));
                entry += 1;
                continue;
            }
        };
        match frames {
            Decoded::Run(frames) => {
                let base = frames.as_bytes().as_ptr() as usize;
                offsets.clear();
                offsets.extend(frames.payloads().map(|p| {
                    let start = p.as_ptr() as usize - base;
                    (start, start + p.len())
                }));
                let (mut buf, range) = frames.into_parts();
                // A short run is copied (see `Handed`); a long one JavaScript may have, if
                // nothing else holds its buffer.
                let unique = match range.len() < COPY_BELOW {
                    true => None,
                    false => Arc::get_mut(&mut buf),
                };
                let (index, at) = match unique {
                    Some(bytes) => {
                        let ptr = bytes[range.clone()].as_mut_ptr();
                        // SAFETY: `ptr` points at `range.len()` bytes of `buf`, which nothing
                        // else can reach; the finalizer owns `buf` until JavaScript lets go.
                        handed.push(Handed::Uncopied(unsafe {
                            Uint8Array::with_external_data(ptr, range.len(), move |_, _| drop(buf))
                        }));
                        (handed.len() - 1, 0)
                    }
                    None => {
                        let at = shared.len();
                        shared.extend_from_slice(&buf[range]);
                        in_shared.extend(entry..entry + offsets.len());
                        (usize::MAX, at)
                    }
                };
                for &(start, end) in &offsets {
                    write_entry(entries, entry, id, index as f64, at + start, at + end);
                    entry += 1;
                }
            }
            Decoded::Frame(payload) => {
                let len = payload.len();
                if len < shared_limit {
                    let at = shared.len();
                    shared.extend_from_slice(&payload);
                    in_shared.push(entry);
                    write_entry(entries, entry, id, -2.0, at, at + len);
                } else {
                    write_entry(entries, entry, id, handed.len() as f64, 0, len);
                    handed.push(Handed::Uncopied(Uint8Array::new(payload)));
                }
                entry += 1;
            }
        }
    }
    if !in_shared.is_empty() {
        let index = handed.len() as f64;
        for entry in in_shared {
            entries[4 * entry + 1] = index;
        }
        handed.push(Handed::of(shared));
    }
    meta[0] = entry as f64;
    handed
}

fn write_entry(entries: &mut [f64], entry: usize, id: usize, of: f64, start: usize, end: usize) {
    entries[4 * entry..4 * entry + 4].copy_from_slice(&[id as f64, of, start as f64, end as f64]);
}
