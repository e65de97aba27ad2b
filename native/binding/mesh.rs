//! The mesh, as the package's JavaScript drives it.
//!
//! # Contract
//!
//! - Nothing here blocks the JavaScript thread, and nothing throws for an expected
//!   outcome: `send` returns a [`SendStatus`], `add` an id or an [`AddStatus`],
//!   `beginRemove` a removal whose answer comes later, so the package builds the typed
//!   errors (with the envelope the caller still holds).
//! - Each mesh has a mark in its environment's waker: its reactor wakes JavaScript for
//!   this mesh only (`key`), when envelopes or notices arrive for an armed receiver, when
//!   a queue a sender waits on has room, when a removal's answer is there, and when the
//!   reactor stops.
//! - Receiving never waits here: `meshTakeOrArm` takes what is waiting (envelopes and
//!   notices, in order; see `handover.rs`) or arms the mesh's wake.
//! - The per-message calls are free functions on an `External` handle ([`HotMesh`]): they
//!   skip the receiver check of a method call (see `benchmark/boundary-cost.mjs`).

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use wiremesh_core::counters::{CounterValues, Phase};
use wiremesh_core::{
    BatchError, DisconnectReason, Ended, Ending, Mesh, MeshOptions, Notified, Removal, SendError,
};

use crate::env;
use crate::handover::{hand_over, meta_room, DisconnectNotice, Handed};
use crate::transport::{Failure, NativeConnection, Refusal};

/// What `send` returns.
#[napi]
pub enum SendStatus {
    /// Queued.
    Ok = 0,
    /// The mesh never gave out the id.
    NotFound = 1,
    /// The connection's outgoing queue is full.
    Full = 2,
    /// The connection has left: removed, disconnected, or the mesh shut down.
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
    /// The mesh has shut down (the connection stays with its object).
    Shutdown = -2,
    /// The connection is in the middle of its own `send` or `recv`.
    Busy = -3,
}

/// What `meshTakeOrArm` says, in `meta[0]`, when it hands nothing over.
#[napi]
pub enum TakeStatus {
    /// Nothing waits; the mesh's wake is armed.
    Armed = 0,
    /// Nothing waits and nothing more will come: the mesh has stopped.
    Stopped = -1,
}

/// The hot-path handle: the same mesh behind a napi `External`.
pub struct HotMesh {
    mesh: Mesh,
    notified: Notified,
}

/// A mesh handle for the package.
#[napi]
pub struct NativeMesh {
    mesh: Mesh,
    notified: Notified,
    key: u32,
}

#[napi]
impl NativeMesh {
    /// Starts a mesh whose reactor wakes this environment for it, and ends connections
    /// silent for `idleTimeout` milliseconds (if given). Capacities and the timeout are
    /// checked by the package; 0 is refused here too.
    #[napi(constructor)]
    pub fn new(
        incoming_capacity: u32,
        outgoing_capacity: u32,
        idle_timeout: Option<f64>,
    ) -> Result<Self> {
        let state = env::current()?;
        let waker = state.waker.clone();
        let mark = waker.mark();
        let key = mark.key;
        let options = MeshOptions {
            notify: Some(Arc::new(move || waker.wake(&mark))),
            idle_timeout: idle_timeout.map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0)),
        };
        let mesh = Mesh::with_options(
            incoming_capacity as usize,
            outgoing_capacity as usize,
            options,
        )
        .map_err(|err| Error::new(Status::GenericFailure, err.to_string()))?;
        let weak = mesh.downgrade();
        env::on_teardown(&state, Box::new(move || weak.shutdown()));
        Ok(NativeMesh {
            notified: mesh.notified(),
            mesh,
            key,
        })
    }

    /// The key `takeWoken` gives when this mesh has something for JavaScript.
    #[napi(getter)]
    pub fn key(&self) -> u32 {
        self.key
    }

    /// Adds a connection: its id, or an [`AddStatus`].
    #[napi]
    pub fn add(&self, connection: &NativeConnection) -> f64 {
        let taken = match connection.take_for_mesh() {
            Ok(taken) => taken,
            Err(Refusal::Spent) => return AddStatus::Spent as i32 as f64,
            Err(Refusal::Busy) => return AddStatus::Busy as i32 as f64,
        };
        match self.mesh.add(taken) {
            Ok(id) => id as f64,
            Err(wiremesh_core::AddError::Shutdown(refused)) => {
                connection.give_back(*refused);
                AddStatus::Shutdown as i32 as f64
            }
        }
    }

    /// Makes an id for a dialled peer: queued sends wait for its connection. -2
    /// ([`AddStatus::Shutdown`]) once shut down.
    #[napi]
    pub fn reserve(&self, max_frame_size: u32) -> f64 {
        match self.mesh.reserve(max_frame_size) {
            Some(id) => id as f64,
            None => AddStatus::Shutdown as i32 as f64,
        }
    }

    /// Gives reserved id `id` its (next) connection: 0, or an [`AddStatus`]. With
    /// `redial`, the id waits for another connection when this one ends.
    #[napi]
    pub fn attach(&self, id: f64, connection: &NativeConnection, redial: bool) -> i32 {
        let taken = match connection.take_for_mesh() {
            Ok(taken) => taken,
            Err(Refusal::Spent) => return AddStatus::Spent as i32,
            Err(Refusal::Busy) => return AddStatus::Busy as i32,
        };
        match self.mesh.attach(id as usize, taken, redial) {
            Ok(()) => 0,
            Err(wiremesh_core::AddError::Shutdown(refused)) => {
                connection.give_back(*refused);
                AddStatus::Shutdown as i32
            }
        }
    }

    /// A reserved id that waits for a connection gives up: its notice (kind `IoError`,
    /// with `message`) hands back what was queued for it.
    #[napi]
    pub fn abandon(&self, id: f64, message: String) {
        let why = std::io::Error::new(std::io::ErrorKind::NotConnected, message);
        self.mesh.abandon(id as usize, DisconnectReason::Io(why));
    }

    /// Starts ending a connection gracefully: `null` if no connection has the id.
    #[napi]
    pub fn begin_end(&self, id: f64) -> Option<NativeEnding> {
        let ending = self.notified.begin_end(id as usize).ok()?;
        Some(NativeEnding { ending })
    }

    /// The ids in the mesh, ascending.
    #[napi]
    pub fn ids(&self) -> Vec<f64> {
        self.mesh.ids().into_iter().map(|id| id as f64).collect()
    }

    /// How many ids the mesh has.
    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.mesh.len() as u32
    }

    /// Connection `id`'s stats as numbers, in the order `STATS_FIELDS` of the package
    /// names them, or `null` for an id not in the mesh: phase (0 connecting, 1 connected,
    /// 2 ending), dialled (0/1), connected since (ms since the epoch, 0 if not
    /// connected), then the counters (see [`counters`]), then queued frames and bytes,
    /// then paused (0/1).
    #[napi]
    pub fn stats(&self, id: f64) -> Option<Vec<f64>> {
        let stats = self.mesh.stats(id as usize)?;
        let mut out = vec![
            phase_number(stats.phase),
            stats.dialled as u8 as f64,
            stats.connected_since.unwrap_or(0) as f64,
        ];
        counters(&stats.counters, &mut out);
        out.extend([
            stats.queued_frames as f64,
            stats.queued_bytes as f64,
            stats.paused as u8 as f64,
        ]);
        Some(out)
    }

    /// The mesh's totals as numbers: the counters (see [`counters`]), then incoming,
    /// connections, connecting, connected, ending, queued frames, queued bytes.
    #[napi]
    pub fn totals(&self) -> Vec<f64> {
        let totals = self.mesh.totals();
        let mut out = Vec::with_capacity(14);
        counters(&totals.counters, &mut out);
        out.extend(
            [
                totals.incoming,
                totals.connections,
                totals.connecting,
                totals.connected,
                totals.ending,
                totals.queued_frames,
                totals.queued_bytes,
            ]
            .map(|value| value as f64),
        );
        out
    }

    /// The hot-path handle of this mesh.
    #[napi(ts_return_type = "ExternalObject<'HotMesh'>")]
    pub fn hot(&self) -> External<HotMesh> {
        External::new(HotMesh {
            mesh: self.mesh.clone(),
            notified: self.notified.clone(),
        })
    }

    /// Starts taking a connection out: `null` if no connection has the id now.
    #[napi]
    pub fn begin_remove(&self, id: f64) -> Option<NativeRemoval> {
        let removal = self.notified.begin_remove(id as usize).ok()?;
        Some(NativeRemoval { removal })
    }

    /// True if a connection has the id (including one that left and whose notice has not
    /// been taken yet).
    #[napi]
    pub fn contains(&self, id: f64) -> bool {
        self.mesh.outgoing(id as usize).is_some()
    }

    /// Asks for a wake once connection `id` has room: 1 if asked, 0 if it has room (or has
    /// left) now, -1 if no connection has the id.
    #[napi]
    pub fn want_room(&self, id: f64) -> i32 {
        match self.notified.want_room(id as usize) {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(_) => -1,
        }
    }

    /// Stops the reactor and joins its thread. Returns the notices of what the connections
    /// had not written (kind `Shutdown`) and of connections that were ending; only the
    /// first call gets them.
    #[napi]
    pub fn shutdown(&self) -> Vec<DisconnectNotice> {
        self.mesh
            .shutdown()
            .into_iter()
            .map(DisconnectNotice::from)
            .collect()
    }

    /// True once shut down (or stopped).
    #[napi]
    pub fn is_shutdown(&self) -> bool {
        self.mesh.is_shutdown()
    }
}

fn phase_number(phase: Phase) -> f64 {
    match phase {
        Phase::Connecting => 0.0,
        Phase::Connected => 1.0,
        Phase::Ending => 2.0,
        Phase::Closed => 3.0,
    }
}

/// Appends frames in, bytes in, frames out, bytes out, backlog frames, backlog bytes and
/// unreceived frames.
fn counters(values: &CounterValues, out: &mut Vec<f64>) {
    out.extend(
        [
            values.frames_in,
            values.bytes_in,
            values.frames_out,
            values.bytes_out,
            values.backlog_frames,
            values.backlog_bytes,
            values.unreceived,
        ]
        .map(|value| value as f64),
    );
}

/// A connection being ended gracefully.
#[napi]
pub struct NativeEnding {
    ending: Ending,
}

#[napi]
impl NativeEnding {
    /// `Finished` (written, write side closed), `Disconnected` (it left first: its notice
    /// says why), `NotFound`, or `null` while the answer has not come.
    #[napi]
    pub fn take(&self) -> Option<String> {
        let ended = self.ending.try_take()?;
        Some(
            match ended {
                Ended::Finished => "Finished",
                Ended::Disconnected => "Disconnected",
                Ended::NotFound => "NotFound",
            }
            .into(),
        )
    }
}

/// A connection on its way out of a mesh.
#[napi]
pub struct NativeRemoval {
    removal: Removal,
}

#[napi]
impl NativeRemoval {
    /// The connection once the reactor has answered, a failure (`NotFound`: it left
    /// meanwhile), or `null` while the answer has not come.
    #[napi]
    pub fn take(&self) -> Option<Either<NativeConnection, Failure>> {
        match self.removal.try_take()? {
            Ok(connection) => Some(Either::A(NativeConnection::from_connection(connection))),
            Err(err) => Some(Either::B(Failure {
                kind: "NotFound".into(),
                message: err.to_string(),
            })),
        }
    }
}

/// Sends one (large) payload to connection `id`: written from the JavaScript buffer when
/// the reactor sleeps and the connection is idle, else copied and queued
/// (`Mesh::send_from`).
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>, id: number, payload: Buffer")]
pub fn mesh_send(hot: &External<HotMesh>, id: f64, payload: BufferSlice) -> SendStatus {
    send_status(hot.mesh.send_from(id as usize, &payload))
}

/// Sends many frames to many connections: `bytes[..len]` holds whole frames (header and
/// payload each), cut into runs by `runs`, `count` pairs of (connection id, end offset of
/// its run); run `i` starts where run `i - 1` ends. Each run is sent all or none
/// (`Mesh::send_batch`: one connection's, written from `bytes` when the reactor sleeps;
/// else copied once and queued). Returns `null` if every run was accepted, else (run index, [`SendStatus`])
/// pairs for those that were not. Throws if the runs are out of the bytes' bounds (having
/// sent nothing) or a run is not whole frames (the runs before it were sent): either is a
/// bug in the package, whose outbox writes whole frames.
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
    let mut cut = Vec::with_capacity(count);
    let mut start = 0;
    for pair in runs[..2 * count].chunks_exact(2) {
        let end = pair[1] as usize;
        if end < start || end > len {
            return Err(Error::new(
                Status::InvalidArg,
                "a run out of the batch's bounds",
            ));
        }
        cut.push((pair[0] as usize, start..end));
        start = end;
    }
    if start != len {
        return Err(Error::new(Status::InvalidArg, "bytes after the last run"));
    }
    let refused = hot.mesh.send_batch(&bytes[..len], &cut);
    if refused.is_empty() {
        return Ok(None);
    }
    let mut pairs = Vec::with_capacity(2 * refused.len());
    for (index, why) in refused {
        let status = match why {
            BatchError::NotFound => SendStatus::NotFound,
            BatchError::Full => SendStatus::Full,
            BatchError::Disconnected => SendStatus::Disconnected,
            BatchError::TooLarge => SendStatus::TooLarge,
            BatchError::Malformed(err) => {
                return Err(Error::new(Status::InvalidArg, err.to_string()));
            }
        };
        pairs.extend([index as f64, status as i32 as f64]);
    }
    Ok(Some(pairs))
}

/// How many frames connection `id` can take now (0 or more), or minus a [`SendStatus`]:
/// -1 (`NotFound`) or -3 (`Disconnected`). Only this environment's sends lower it, so what
/// the package counts down from it is a floor of the room.
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>, id: number")]
pub fn mesh_room(hot: &External<HotMesh>, id: f64) -> f64 {
    match hot.mesh.outgoing(id as usize) {
        None => {
            -(match hot.mesh.issued(id as usize) {
                true => SendStatus::Disconnected,
                false => SendStatus::NotFound,
            } as i32 as f64)
        }
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

/// Takes up to `max` waiting envelopes and notices (no more than `meta` has room for), laid
/// out as `handover.rs` says, without arming: `null` if nothing waits, with `meta[0]`
/// [`TakeStatus::Stopped`] if nothing more will come (else 0). For a receive that has
/// envelopes already and only looks for more.
#[napi(
    ts_args_type = "hot: ExternalObject<'HotMesh'>, max: number, meta: Float64Array",
    ts_return_type = "Array<Uint8Array | DisconnectNotice> | null"
)]
pub fn mesh_take(
    hot: &External<HotMesh>,
    max: u32,
    mut meta: Float64ArraySlice,
) -> Result<Option<Vec<Handed>>> {
    // SAFETY: the JavaScript thread is in this call; nothing else touches `meta` meanwhile.
    let meta = unsafe { meta.as_mut() };
    let max = (max.max(1) as usize).min(meta_room(meta)?);
    let mut items = Vec::new();
    match hot.notified.take(max, &mut items) {
        Ok(0) => {
            meta[0] = 0.0;
            Ok(None)
        }
        Ok(_) => Ok(Some(hand_over(items, meta))),
        Err(_) => {
            meta[0] = TakeStatus::Stopped as i32 as f64;
            Ok(None)
        }
    }
}

/// Takes up to `max` waiting envelopes and notices (no more than `meta` has room for),
/// laid out as `handover.rs` says; if nothing waits, arms the mesh's wake in the same call
/// and returns `null` with `meta[0]` a [`TakeStatus`].
#[napi(
    ts_args_type = "hot: ExternalObject<'HotMesh'>, max: number, meta: Float64Array",
    ts_return_type = "Array<Uint8Array | DisconnectNotice> | null"
)]
pub fn mesh_take_or_arm(
    hot: &External<HotMesh>,
    max: u32,
    mut meta: Float64ArraySlice,
) -> Result<Option<Vec<Handed>>> {
    // SAFETY: the JavaScript thread is in this call; nothing else touches `meta` meanwhile.
    let meta = unsafe { meta.as_mut() };
    let max = (max.max(1) as usize).min(meta_room(meta)?);
    let mut items = Vec::new();
    loop {
        match hot.notified.take(max, &mut items) {
            Ok(0) if hot.notified.arm() => {
                meta[0] = TakeStatus::Armed as i32 as f64;
                return Ok(None);
            }
            // Something arrived since the take: take it.
            Ok(0) if !hot.mesh.is_shutdown() => continue,
            Ok(0) | Err(_) => {
                meta[0] = TakeStatus::Stopped as i32 as f64;
                return Ok(None);
            }
            Ok(_) => return Ok(Some(hand_over(items, meta))),
        }
    }
}

/// The disconnect notices at the front of the stream, before any envelope: for when every
/// envelope taken has been handed out and no receive waits.
#[napi(ts_args_type = "hot: ExternalObject<'HotMesh'>")]
pub fn mesh_take_notices(hot: &External<HotMesh>) -> Vec<DisconnectNotice> {
    let mut notices = Vec::new();
    hot.notified.take_notices(&mut notices);
    notices.into_iter().map(DisconnectNotice::from).collect()
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
