//! The mesh, as `index.js` drives it.
//!
//! # Contract
//!
//! - Nothing here blocks the JavaScript thread beyond a reactor round trip (`remove`), and
//!   nothing throws for an expected outcome: `send` returns a [`SendStatus`] code, `add` an
//!   id or an [`AddStatus`] code, `remove` a connection or `null`, so `index.js` builds the
//!   typed errors (with the envelope the caller still holds).
//! - Receiving never waits here: `recvBatch` takes what is waiting, and `armRecv` asks the
//!   environment's waker to run once envelopes arrive.
//! - Payloads are handed over with one copy or none ([`hand_over`]): a run of small frames
//!   from one read becomes the payloads' buffer as it is; payloads of [`SHARED_LIMIT`]
//!   bytes and more are their own buffers; only what is left (small frames that arrived
//!   alone, parts of runs) is copied into one buffer per batch. JavaScript makes a view
//!   per payload from the layout written into `meta`.

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use wiremesh_core::codec::{EncodedFrames, FramesRef};
use wiremesh_core::{Delivery, DisconnectReason, Envelope, Mesh, SendEncodedError, SendError};

use crate::env;
use crate::lend::Lender;
use crate::transport::NativeConnection;

/// Payloads shorter than this share one buffer per batch; longer ones are handed over
/// without a copy. Chosen with `benchmark/payload-handover.mjs`, which sets other limits
/// through `setSharedLimit` to compare.
const SHARED_LIMIT: u32 = 8 * 1024;

static SHARED_LIMIT_NOW: AtomicU32 = AtomicU32::new(SHARED_LIMIT);

/// Sets the payload size from which batches hand payloads over uncopied, for every mesh
/// (for `benchmark/payload-handover.mjs`; the default is the measured best).
#[napi]
pub fn set_shared_limit(limit: u32) {
    SHARED_LIMIT_NOW.store(limit, Relaxed);
}

/// What `send` returns.
#[napi]
pub enum SendStatus {
    /// Queued.
    Ok = 0,
    /// No connection has the id.
    NotFound = 1,
    /// The connection's outgoing queue is full.
    Full = 2,
    /// The connection was disconnected, removed, or the mesh shut down.
    Disconnected = 3,
    /// The payload is longer than the connection's maximum frame size.
    TooLarge = 4,
    /// Queued, but the reactor could not be woken.
    IoError = 5,
}

/// The negative values `add` returns instead of an id.
#[napi]
pub enum AddStatus {
    /// The connection joined a mesh already, or was disconnected.
    Spent = -1,
    /// The mesh has shut down.
    Shutdown = -2,
    /// The connection is in the middle of its own `send` or `recv`.
    Busy = -3,
}

/// Envelopes handed over together, laid out as [`mesh_recv_batch`] lays them out: `meta[0]`
/// is their number, then `[id, buffer, start, end]` for each.
#[napi(object)]
pub struct Batch {
    pub buffers: Vec<Uint8Array>,
    pub meta: Float64Array,
}

/// A connection the reactor removed by itself.
#[napi(object)]
pub struct DisconnectNotice {
    pub id: f64,
    /// `Eof`, `EofMidFrame`, `Protocol` or `IoError`.
    pub kind: String,
    pub message: String,
    /// The envelopes it had not sent, if any.
    pub unsent: Option<Batch>,
}

/// The hot-path handle: the same mesh behind a napi `External`, which free functions take
/// without the class receiver check of a method call (about 110 ns a call; see
/// `benchmark/boundary-cost.mjs`).
pub struct HotMesh {
    mesh: Mesh,
    lender: Rc<Lender>,
}

/// A mesh handle for `index.js`.
#[napi]
pub struct NativeMesh {
    mesh: Mesh,
    lender: Rc<Lender>,
}

#[napi]
impl NativeMesh {
    /// Starts a mesh whose reactor wakes this environment. Capacities are checked by
    /// `index.js`; 0 is refused here too.
    #[napi(constructor)]
    pub fn new(incoming_capacity: u32, outgoing_capacity: u32) -> Result<Self> {
        let state = env::current()?;
        let waker = state.waker.clone();
        let mesh = Mesh::with_notify(
            incoming_capacity as usize,
            outgoing_capacity as usize,
            Arc::new(move || waker.wake()),
        )
        .map_err(|err| Error::new(Status::InvalidArg, err.to_string()))?;
        env::track_mesh(&state, mesh.downgrade());
        let lender = Lender::new(mesh.clone(), state.waker.clone(), state.uv_loop);
        env::track_lender(&state, &lender);
        Ok(NativeMesh { mesh, lender })
    }

    /// Another handle on the same reactor and queues.
    #[napi]
    pub fn handle(&self) -> NativeMesh {
        NativeMesh {
            mesh: self.mesh.clone(),
            lender: self.lender.clone(),
        }
    }

    /// Adds a connection: its id, or an [`AddStatus`].
    #[napi]
    pub fn add(&self, connection: &NativeConnection) -> f64 {
        let connection = match connection.take_for_mesh() {
            Ok(connection) => connection,
            Err(status) => return status as i32 as f64,
        };
        match self.mesh.add(connection) {
            Ok(id) => id as f64,
            Err(_) => AddStatus::Shutdown as i32 as f64,
        }
    }

    /// The hot-path handle of this mesh, for [`mesh_send`] and [`mesh_recv_batch`].
    #[napi(ts_return_type = "ExternalObject<'HotMesh'>")]
    pub fn hot(&self) -> External<HotMesh> {
        External::new(HotMesh {
            mesh: self.mesh.clone(),
            lender: self.lender.clone(),
        })
    }

    /// Takes a connection out, or `null` if no connection has the id.
    #[napi]
    pub fn remove(&self, id: f64) -> Option<NativeConnection> {
        self.mesh
            .remove(id as usize)
            .ok()
            .map(NativeConnection::from_connection)
    }

    /// True if a connection has the id (including one disconnected whose notice has not
    /// been taken yet).
    #[napi]
    pub fn contains(&self, id: f64) -> bool {
        self.mesh.outgoing(id as usize).is_some()
    }

    /// Queues a copy of `payload` for connection `id`. `index.js` calls [`mesh_send`]
    /// instead (half the cost a call); this method is the baseline of
    /// `benchmark/boundary-cost.mjs`.
    #[napi]
    pub fn send(&self, id: f64, payload: BufferSlice) -> SendStatus {
        send_status(self.mesh.send(Envelope::new(id as usize, payload.to_vec())))
    }

    /// Asks for a wake once envelopes arrive. False if some wait already, or the mesh has
    /// stopped: take them (or the error) now.
    #[napi]
    pub fn arm_recv(&self) -> bool {
        let armed = self.mesh.incoming().arm();
        if armed {
            self.lender.waiting();
        }
        armed
    }

    /// Asks for a wake once connection `id` has room: 1 if asked, 0 if it has room (or has
    /// left) now, -1 if no connection has the id.
    #[napi]
    pub fn want_room(&self, id: f64) -> i32 {
        match self.mesh.want_room(id as usize) {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(_) => -1,
        }
    }

    /// The disconnect notices waiting.
    #[napi]
    pub fn take_disconnects(&self) -> Vec<DisconnectNotice> {
        let disconnects = self.mesh.disconnects();
        let mut notices = Vec::new();
        while let Some(notice) = disconnects.try_recv() {
            let (kind, message) = match &notice.reason {
                DisconnectReason::Eof => ("Eof", notice.reason.to_string()),
                DisconnectReason::EofMidFrame { .. } => ("EofMidFrame", notice.reason.to_string()),
                DisconnectReason::Protocol(_) => ("Protocol", notice.reason.to_string()),
                DisconnectReason::Io(_) => ("IoError", notice.reason.to_string()),
            };
            let unsent = (!notice.unsent.is_empty()).then(|| {
                let mut meta = vec![0.0; 1 + 4 * notice.unsent.len()];
                meta[0] = notice.unsent.len() as f64;
                let deliveries = notice.unsent.into_iter().map(Delivery::Envelope).collect();
                let buffers = hand_over(deliveries, &mut meta[1..])
                    .into_iter()
                    .map(Handed::into_uint8array)
                    .collect();
                Batch {
                    buffers,
                    meta: Float64Array::new(meta),
                }
            });
            notices.push(DisconnectNotice {
                id: notice.id as f64,
                kind: kind.into(),
                message,
                unsent,
            });
        }
        notices
    }

    /// Stops the reactor and joins its thread.
    #[napi]
    pub fn shutdown(&self) {
        self.lender.stop();
        self.mesh.shutdown();
    }

    /// True once shut down (or stopped).
    #[napi]
    pub fn is_shutdown(&self) -> bool {
        self.mesh.is_shutdown()
    }
}

/// `NativeMesh.send` through the hot-path handle, for one (large) payload: written straight
/// from the JavaScript buffer when nothing is queued ahead (`Mesh::write`: these payloads
/// are 16 KiB or more, large enough to go direct even while the reactor is awake), else
/// copied and queued.
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>, id: number, payload: Buffer")]
pub fn mesh_send(hot: &External<HotMesh>, id: f64, payload: BufferSlice) -> SendStatus {
    hot.lender.sent(id as usize);
    send_status(hot.mesh.write(id as usize, &payload))
}

/// Queues many frames for many connections with one copy: `bytes[..len]` holds whole
/// frames (header and payload each), cut into runs by `runs`, `count` pairs of (connection
/// id, end offset of its run); run `i` starts where run `i - 1` ends. Each run is queued
/// all or none (`Mesh::send_encoded`). Returns `null` if every run was queued, else
/// (run index, [`SendStatus`]) pairs for those that were not; their frames were not
/// queued. Throws only if the bytes are not the frames `index.js` encodes (a bug there),
/// before queuing anything.
#[napi(
    ts_args_type = "hot: ExternalObject<'HotMesh'>, bytes: Buffer, len: number, runs: Float64Array, count: number"
)]
pub fn mesh_send_encoded(
    hot: &External<HotMesh>,
    bytes: BufferSlice,
    len: u32,
    runs: Float64ArraySlice,
    count: u32,
) -> Result<Option<Vec<f64>>> {
    let (len, count) = (len as usize, count as usize);
    if len > bytes.len() || 2 * count > runs.len() {
        return Err(Error::new(
            Status::InvalidArg,
            "a batch out of its buffers' bounds",
        ));
    }
    if count == 1 && runs[1] as usize == len {
        // One connection: written from the outbox itself when nothing is queued ahead and
        // the reactor is asleep (the system call that would have woken it) or the batch is
        // 16 KiB or more (the call costs about the copy it saves); else copied and queued.
        let frames = FramesRef::new(&bytes[..len])
            .map_err(|err| Error::new(Status::InvalidArg, err.to_string()))?;
        hot.lender.sent(runs[0] as usize);
        let status = match hot.mesh.write_encoded(runs[0] as usize, frames) {
            Ok(()) => return Ok(None),
            Err(err) => encoded_status(err),
        };
        return Ok(Some(vec![0.0, status as i32 as f64]));
    }
    let buf: Arc<[u8]> = Arc::from(&bytes[..len]);
    let mut encoded = Vec::with_capacity(count);
    let mut start = 0;
    for pair in runs[..2 * count].chunks_exact(2) {
        let end = pair[1] as usize;
        if end < start || end > len {
            return Err(Error::new(
                Status::InvalidArg,
                "a run out of the batch's bounds",
            ));
        }
        let frames = EncodedFrames::new(buf.clone(), start..end)
            .map_err(|err| Error::new(Status::InvalidArg, err.to_string()))?;
        encoded.push((pair[0] as usize, frames));
        start = end;
    }
    if start != len {
        return Err(Error::new(Status::InvalidArg, "bytes after the last run"));
    }
    let mut refused = Vec::new();
    for (index, (id, frames)) in encoded.into_iter().enumerate() {
        let status = match hot.mesh.send_encoded(id, frames) {
            Ok(()) => continue,
            Err(err) => encoded_status(err),
        };
        refused.extend([index as f64, status as i32 as f64]);
    }
    Ok((!refused.is_empty()).then_some(refused))
}

fn encoded_status(err: SendEncodedError) -> SendStatus {
    match err {
        SendEncodedError::NotFound(_) => SendStatus::NotFound,
        SendEncodedError::Full(_) => SendStatus::Full,
        SendEncodedError::Disconnected(_) => SendStatus::Disconnected,
        SendEncodedError::TooLarge(_) => SendStatus::TooLarge,
        // Queued; the reactor could not be woken (it has stopped).
        SendEncodedError::Io(_) => SendStatus::IoError,
    }
}

/// How many frames connection `id` can take now (0 or more), or minus a [`SendStatus`]:
/// -1 (`NotFound`) or -3 (`Disconnected`). Only this environment's sends lower it, so what
/// `index.js` counts down from it is a floor of the room.
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>, id: number")]
pub fn mesh_room(hot: &External<HotMesh>, id: f64) -> f64 {
    match hot.mesh.outgoing(id as usize) {
        None => -(SendStatus::NotFound as i32 as f64),
        Some(outgoing) => match outgoing.room() {
            Some(room) => room as f64,
            None => -(SendStatus::Disconnected as i32 as f64),
        },
    }
}

/// The largest payload connection `id` accepts, or -1 if no connection has the id.
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>, id: number")]
pub fn mesh_max_frame_size(hot: &External<HotMesh>, id: f64) -> f64 {
    match hot.mesh.outgoing(id as usize) {
        None => -1.0,
        Some(outgoing) => outgoing.max_frame_size() as f64,
    }
}

/// Takes up to `max` waiting envelopes (and no more than `meta` has room for), or returns
/// `null` if none is waiting. `meta[0]` gets the number taken; then each envelope has four
/// numbers, `[id, buffer, start, end]`: its payload is bytes `start..end` of
/// `buffers[buffer]`, the array returned.
#[napi(
    ts_args_type = "hot: ExternalObject<'HotMesh'>, max: number, meta: Float64Array",
    ts_return_type = "Array<Uint8Array> | null"
)]
pub fn mesh_recv_batch(
    hot: &External<HotMesh>,
    max: u32,
    mut meta: Float64ArraySlice,
) -> Result<Option<Vec<Handed>>> {
    // SAFETY: the JavaScript thread is in this call; nothing else touches `meta` meanwhile.
    let meta = unsafe { meta.as_mut() };
    let room = meta_room(meta)?;
    let mut deliveries = Vec::new();
    let taken = match hot
        .mesh
        .incoming()
        .try_recv_deliveries((max.max(1) as usize).min(room), &mut deliveries)
    {
        Ok(taken) if taken > 0 => taken,
        _ => return Ok(None),
    };
    Ok(Some(handed_batch(hot, deliveries, taken, meta)))
}

/// How many envelopes `meta` has room for (at least one, or an error).
fn meta_room(meta: &[f64]) -> Result<usize> {
    match meta.len().saturating_sub(1) / 4 {
        0 => Err(Error::new(Status::InvalidArg, "no room in meta")),
        room => Ok(room),
    }
}

/// Lays out `taken` envelopes in `meta` and hands their buffers over.
fn handed_batch(
    hot: &HotMesh,
    deliveries: Vec<Delivery>,
    taken: usize,
    meta: &mut [f64],
) -> Vec<Handed> {
    meta[0] = taken as f64;
    let first = deliveries[0].id();
    let single = deliveries.iter().all(|delivery| delivery.id() == first);
    hot.lender.received(single.then_some(first));
    hand_over(deliveries, &mut meta[1..])
}

/// A buffer on its way to JavaScript: handed over uncopied, or, below [`COPY_BELOW`]
/// bytes, copied into memory JavaScript owns (cheaper than an external buffer, whose
/// finalizer, handle and accounting cost more than copying a few hundred bytes).
pub enum Handed {
    Uncopied(Uint8Array),
    Copied(Vec<u8>),
}

/// Runs and shared buffers shorter than this are copied into JavaScript memory.
const COPY_BELOW: usize = 1024;

impl Handed {
    /// `bytes` as a buffer for JavaScript, copied if short.
    fn of(bytes: Vec<u8>) -> Self {
        match bytes.len() < COPY_BELOW {
            true => Handed::Copied(bytes),
            false => Handed::Uncopied(Uint8Array::new(bytes)),
        }
    }

    fn into_uint8array(self) -> Uint8Array {
        match self {
            Handed::Uncopied(array) => array,
            Handed::Copied(bytes) => Uint8Array::new(bytes),
        }
    }
}

impl TypeName for Handed {
    fn type_name() -> &'static str {
        "Uint8Array"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Handed {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        match val {
            // SAFETY: forwarded as napi-rs would convert it.
            Handed::Uncopied(array) => unsafe { Uint8Array::to_napi_value(env, array) },
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

/// [`mesh_recv_batch`], and if nothing waits, asks for a wake in the same call: returns
/// `null` with `meta[0]` 0 once armed (the waker runs when envelopes arrive; a connection
/// may be lent, see `lend.rs`), or -1 if nothing waits and nothing will (the mesh stopped).
#[napi(
    ts_args_type = "hot: ExternalObject<'HotMesh'>, max: number, meta: Float64Array",
    ts_return_type = "Array<Uint8Array> | null"
)]
pub fn mesh_take_or_arm(
    hot: &External<HotMesh>,
    max: u32,
    mut meta: Float64ArraySlice,
) -> Result<Option<Vec<Handed>>> {
    // SAFETY: the JavaScript thread is in this call; nothing else touches `meta` meanwhile.
    let meta = unsafe { meta.as_mut() };
    let room = meta_room(meta)?;
    let incoming = hot.mesh.incoming();
    let mut deliveries = Vec::new();
    loop {
        match incoming.try_recv_deliveries((max.max(1) as usize).min(room), &mut deliveries) {
            Ok(taken) if taken > 0 => return Ok(Some(handed_batch(hot, deliveries, taken, meta))),
            Ok(_) if incoming.arm() => {
                hot.lender.waiting();
                meta[0] = 0.0;
                return Ok(None);
            }
            // Envelopes arrived since the take: take them.
            Ok(_) if !hot.mesh.is_shutdown() => continue,
            _ => {
                meta[0] = -1.0;
                return Ok(None);
            }
        }
    }
}

/// Hands what the reactor delivered to JavaScript, copying as little as possible: a run of
/// small frames that nothing else shares is handed over whole, uncopied (its buffer is
/// freed when JavaScript lets go of the last payload); payloads of [`SHARED_LIMIT`] bytes
/// and more too, as their own buffers. Small payloads that came alone, and parts of runs
/// split by `max`, are copied into one buffer shared by the batch.
fn hand_over(deliveries: Vec<Delivery>, meta: &mut [f64]) -> Vec<Handed> {
    let shared_limit = SHARED_LIMIT_NOW.load(Relaxed) as usize;
    let mut buffers = Vec::new();
    let mut shared: Vec<u8> = Vec::new();
    // Frames whose payload is in `shared`, which goes last, once its index is known.
    let mut in_shared = Vec::new();
    let mut frame = 0;
    let mut offsets = Vec::new();
    for delivery in deliveries {
        match delivery {
            Delivery::Frames { id, frames } => {
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
                        // Nothing else holds the buffer: JavaScript may have it.
                        let ptr = bytes[range.clone()].as_mut_ptr();
                        // SAFETY: `ptr` points at `range.len()` bytes of `buf`, which nothing
                        // else can reach; the finalizer owns `buf` until JavaScript lets go.
                        buffers.push(Handed::Uncopied(unsafe {
                            Uint8Array::with_external_data(ptr, range.len(), move |_, _| drop(buf))
                        }));
                        (buffers.len() - 1, 0)
                    }
                    None => {
                        let at = shared.len();
                        shared.extend_from_slice(&buf[range]);
                        in_shared.extend(frame..frame + offsets.len());
                        (usize::MAX, at)
                    }
                };
                for &(start, end) in &offsets {
                    write_meta(meta, frame, id, index, at + start, at + end);
                    frame += 1;
                }
            }
            Delivery::Envelope(envelope) => {
                let (id, payload) = envelope.into_parts();
                let len = payload.len();
                if len < shared_limit {
                    let at = shared.len();
                    shared.extend_from_slice(&payload);
                    in_shared.push(frame);
                    write_meta(meta, frame, id, usize::MAX, at, at + len);
                } else {
                    write_meta(meta, frame, id, buffers.len(), 0, len);
                    buffers.push(Handed::Uncopied(Uint8Array::new(payload)));
                }
                frame += 1;
            }
        }
    }
    if !in_shared.is_empty() {
        let index = buffers.len() as f64;
        for frame in in_shared {
            meta[4 * frame + 1] = index;
        }
        buffers.push(Handed::of(shared));
    }
    buffers
}

fn write_meta(meta: &mut [f64], frame: usize, id: usize, buffer: usize, start: usize, end: usize) {
    meta[4 * frame..4 * frame + 4].copy_from_slice(&[
        id as f64,
        buffer as f64,
        start as f64,
        end as f64,
    ]);
}

fn send_status(result: std::result::Result<(), SendError>) -> SendStatus {
    match result {
        Ok(()) => SendStatus::Ok,
        Err(SendError::NotFound(_)) => SendStatus::NotFound,
        Err(SendError::Full(_)) => SendStatus::Full,
        Err(SendError::Disconnected(_)) => SendStatus::Disconnected,
        Err(SendError::TooLarge(_)) => SendStatus::TooLarge,
        Err(SendError::Io(_)) => SendStatus::IoError,
    }
}
