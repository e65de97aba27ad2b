//! The mesh: many connections, one reactor thread, sends by id and one stream of envelopes
//! from all of them.
//!
//! # Contract
//!
//! - [`Mesh::add`] hands the connection to the reactor by value and assigns the id at
//!   once, without waiting for the reactor. Ids start at 1 and are never reused by a mesh,
//!   so a stale id can never reach another peer.
//! - [`Mesh::send`] never blocks and never touches a socket: it queues the payload on the
//!   connection's bounded queue and returns. A full queue is [`SendError::Full`], carrying
//!   the envelope. An id the mesh never gave out is `NotFound`; one whose connection has
//!   left is `Disconnected`, however long ago it left.
//! - [`Mesh::send_batch`] and [`Mesh::send_from`] send from the caller's buffer, for callers
//!   that batch their own sends: when the batch is for one connection and the reactor
//!   sleeps, the caller takes the reactor's state from its desk and writes, instead of
//!   waking it (the desk, `desk.rs`); otherwise they copy and queue. Never blocking either.
//! - Receiving takes envelopes from one bounded incoming stream shared by every handle
//!   ([`Mesh::clone`], [`Incoming`]); envelopes are distributed among the receivers.
//! - A connection the reactor removes by itself (end of stream, reset, protocol error) is
//!   announced once by a [`Disconnect`] notice in the same stream, after every envelope it
//!   sent. The blocking receives hand envelopes out and pass notices to
//!   [`Mesh::disconnects`] as they reach them; an event-loop consumer ([`Notified`]) takes
//!   both, in order.
//! - [`Mesh::remove`] hands the connection back with its framing state: frames queued but
//!   not yet written go out on its next [`Connection::send`]; frames read but not yet
//!   received, and a frame half read, are what its next [`Connection::recv`]s return.
//! - [`Mesh::shutdown`] (or dropping the last handle) stops and joins the reactor. Frames
//!   the sockets can take without blocking are written first; the rest are handed back to
//!   the caller of `shutdown` (dropped if the last handle was dropped).
//!   Envelopes already received can still be taken; after them receivers get `Shutdown`.
//!   It never waits for a receiver.
//! - A consumer that waits in an event loop instead of a blocking call (the Node binding)
//!   gives [`Mesh::with_notify`] a [`Notify`] hook and drives the mesh through
//!   [`Mesh::notified`]: it arms the hook when it finds nothing to take, asks for room for a
//!   sender that waits, and starts removals whose answers it takes later; the reactor calls
//!   the hook for each of these (see [`crate::reactor`]'s rules).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::ArrayQueue;
use rustc_hash::FxBuildHasher;

use crate::codec::{self, EncodedFrames};
use crate::counters::{CounterValues, Counters, Phase, Slot};
use crate::desk::Desk;
use crate::doorbell::Doorbell;
use crate::envelope::Envelope;
use crate::error::{
    AddError, BatchError, RecvError, RecvTimeoutError, RemoveError, SendEncodedError, SendError,
    TryRecvError,
};
use crate::incoming::{self, Disconnect, Outlet, Received, Taken, Wait, Waited};
use crate::outgoing::{OutgoingQueue, PushError};
use crate::reactor::{self, Command, Direct, Ended, Notify, State, Wire};
use crate::transport::{Connection, DisconnectReason};

type Queues = papaya::HashMap<usize, Arc<OutgoingQueue>, FxBuildHasher>;
type Slots = papaya::HashMap<usize, Arc<Slot>, FxBuildHasher>;

/// A connection reactor: sends to and receives from many connections in a background
/// thread.
///
/// Cloning is cheap and gives another handle on the same reactor and queues. The reactor
/// stops when [`shutdown`](Self::shutdown) is called or the last handle (including
/// [`Incoming`] and [`Outgoing`] handles) is dropped.
///
/// # Examples
///
/// ```
/// use wiremesh_core::{Envelope, Mesh, TcpTransport, Transport};
///
/// let transport = TcpTransport::default();
/// let mesh = Mesh::new(1, 1).unwrap();
/// let mut listener = transport.listen("127.0.0.1:0").unwrap();
///
/// let client = mesh.add(transport.connect(&listener.endpoint()).unwrap()).unwrap();
/// let server = mesh.add(listener.accept().unwrap()).unwrap();
///
/// mesh.send(Envelope::new(client, b"hello".to_vec())).unwrap();
/// let envelope = mesh.recv().unwrap();
/// assert_eq!((envelope.id(), envelope.payload()), (server, &b"hello"[..]));
///
/// let _client = mesh.remove(client).unwrap();
/// let _server = mesh.remove(server).unwrap();
/// ```
#[derive(Clone)]
pub struct Mesh {
    incoming: Incoming,
}

/// The parts every handle shares; the reactor is stopped when the last one goes.
struct Shared {
    doorbell: Arc<Doorbell>,
    desk: Arc<Desk<State>>,
    commands: Sender<Command>,
    queues: Queues,
    /// What the stats tell of each id in `queues` (inserted before and removed after its
    /// queue).
    slots: Slots,
    totals: Arc<Counters>,
    next_id: AtomicUsize,
    incoming_capacity: usize,
    outgoing_capacity: usize,
    shutdown: AtomicBool,
    /// Notices the blocking receives passed by.
    notices: (Sender<Disconnect>, Receiver<Disconnect>),
    /// Taken once, by whichever `shutdown` joins the thread.
    thread: ArrayQueue<JoinHandle<Vec<Disconnect>>>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("connections", &self.shared().queues.len())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

impl Mesh {
    /// A mesh whose incoming stream holds `incoming_capacity` envelopes and whose
    /// connections each queue up to `outgoing_capacity` outgoing frames. Both must be at
    /// least 1 (`InvalidInput` otherwise). Starts the reactor thread.
    pub fn new(incoming_capacity: usize, outgoing_capacity: usize) -> io::Result<Self> {
        Self::with_options(incoming_capacity, outgoing_capacity, MeshOptions::default())
    }

    /// Like [`new`](Self::new), with a hook that wakes a consumer waiting in an event loop
    /// (see [`Notify`] and [`Notified`]). The hook runs on the reactor thread.
    pub fn with_notify(
        incoming_capacity: usize,
        outgoing_capacity: usize,
        notify: Notify,
    ) -> io::Result<Self> {
        let options = MeshOptions {
            notify: Some(notify),
            ..MeshOptions::default()
        };
        Self::with_options(incoming_capacity, outgoing_capacity, options)
    }

    /// Like [`new`](Self::new), with [`MeshOptions`].
    pub fn with_options(
        incoming_capacity: usize,
        outgoing_capacity: usize,
        options: MeshOptions,
    ) -> io::Result<Self> {
        let MeshOptions {
            notify,
            idle_timeout,
        } = options;
        if idle_timeout == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the idle timeout must be longer than zero",
            ));
        }
        if incoming_capacity == 0 || outgoing_capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mesh capacities must be at least 1",
            ));
        }
        let (inlet, outlet) = incoming::stream(incoming_capacity);
        let totals = Counters::new();
        let reactor = reactor::start(inlet, notify, totals.clone(), idle_timeout)?;
        let thread = ArrayQueue::new(1);
        let _ = thread.push(reactor.thread);
        let shared = Arc::new(Shared {
            doorbell: reactor.doorbell,
            desk: reactor.desk,
            commands: reactor.commands,
            queues: Queues::default(),
            slots: Slots::default(),
            totals,
            next_id: AtomicUsize::new(1),
            incoming_capacity,
            outgoing_capacity,
            shutdown: AtomicBool::new(false),
            notices: crossbeam_channel::unbounded(),
            thread,
        });
        Ok(Mesh {
            incoming: Incoming { outlet, shared },
        })
    }

    fn shared(&self) -> &Shared {
        &self.incoming.shared
    }

    /// Hands a connection to the reactor and returns its id at once.
    ///
    /// Fails only if the mesh has shut down, handing the connection back. A connection the
    /// operating system refuses to poll is announced by a [`Disconnect`] notice.
    pub fn add(&self, connection: Connection) -> Result<usize, AddError> {
        let shared = self.shared();
        if self.is_shutdown() {
            return Err(AddError::Shutdown(Box::new(connection)));
        }
        let id = shared.next_id.fetch_add(1, SeqCst);
        let queue = Arc::new(OutgoingQueue::new(
            shared.outgoing_capacity,
            connection.max_frame_size(),
        ));
        let slot = Slot::new(connection.counters().clone(), false);
        shared.slots.pin().insert(id, slot.clone());
        shared.queues.pin().insert(id, queue.clone());
        let command = Command::Add {
            id,
            connection: Box::new(connection),
            queue: queue.clone(),
            slot,
        };
        if let Err(crossbeam_channel::SendError(command)) = shared.commands.send(command) {
            shared.queues.pin().remove(&id);
            shared.slots.pin().remove(&id);
            let Command::Add { connection, .. } = command else {
                unreachable!("sent an Add")
            };
            return Err(AddError::Shutdown(connection));
        }
        // A failed ring means the reactor is gone; the check below covers that.
        let _ = shared.doorbell.ring();
        if shared.doorbell.is_stopped() {
            // The reactor may have stopped before it saw the command: sends to this id
            // are refused rather than queued for nobody.
            queue.close();
        }
        Ok(id)
    }

    /// Makes an id for a connection to come (a dialled peer): sends to it are queued (up to
    /// the outgoing capacity) until [`attach`](Self::attach) gives it a connection, and
    /// go out first on it. `None` once the mesh has shut down.
    pub fn reserve(&self, max_frame_size: u32) -> Option<usize> {
        let shared = self.shared();
        if self.is_shutdown() {
            return None;
        }
        let id = shared.next_id.fetch_add(1, SeqCst);
        let queue = Arc::new(OutgoingQueue::new(shared.outgoing_capacity, max_frame_size));
        let slot = Slot::new(Counters::new(), true);
        shared.slots.pin().insert(id, slot.clone());
        shared.queues.pin().insert(id, queue.clone());
        let command = Command::Reserve {
            id,
            queue: queue.clone(),
            slot,
        };
        if shared.commands.send(command).is_err() || shared.doorbell.is_stopped() {
            queue.close();
        }
        let _ = shared.doorbell.ring();
        Some(id)
    }

    /// Gives a reserved id its (next) connection; what waits for the id goes out on it
    /// first. With `redial`, the id waits for another connection when this one ends (its
    /// notice has [`Disconnect::parked`]); without, it leaves as any connection does. A
    /// connection for an id that no longer waits (it was abandoned, ended or removed) is
    /// closed. Fails only if the mesh has shut down, handing the connection back.
    pub fn attach(&self, id: usize, connection: Connection, redial: bool) -> Result<(), AddError> {
        let shared = self.shared();
        if self.is_shutdown() {
            return Err(AddError::Shutdown(Box::new(connection)));
        }
        let command = Command::Attach {
            id,
            connection: Box::new(connection),
            redial,
        };
        if let Err(crossbeam_channel::SendError(command)) = shared.commands.send(command) {
            let Command::Attach { connection, .. } = command else {
                unreachable!("sent an Attach")
            };
            return Err(AddError::Shutdown(connection));
        }
        let _ = shared.doorbell.ring();
        Ok(())
    }

    /// A reserved id that waits for a connection gives up: it leaves with `reason`, and
    /// its notice hands back what was queued for it. (One that has a connection only
    /// stops redialling.)
    pub fn abandon(&self, id: usize, reason: DisconnectReason) {
        let shared = self.shared();
        if shared
            .commands
            .send(Command::Abandon { id, reason })
            .is_ok()
        {
            let _ = shared.doorbell.ring();
        }
    }

    /// Ends a connection gracefully: sends to it are refused from now on (`Disconnected`),
    /// everything queued before is written, then the write side is closed (FIN; for TLS,
    /// `close_notify` first), and the peer reads the end of the stream after the last
    /// frame. The connection stays in the mesh, its frames received, until the peer
    /// closes its side (its notice then, as usual). Waits for the answer; an event loop
    /// uses [`Notified::begin_end`].
    pub fn end(&self, id: usize) -> Result<Ended, RemoveError> {
        Ok(self.begin_end(id)?.wait())
    }

    fn begin_end(&self, id: usize) -> Result<Ending, RemoveError> {
        let shared = self.shared();
        match shared.queues.pin().get(&id) {
            // Sends after this call are refused at once (the reactor closes it too, and
            // writes what was queued before).
            Some(queue) => queue.close(),
            None => return Err(RemoveError::NotFound(id)),
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let command = Command::End {
            id,
            reply: reply_tx,
        };
        if shared.commands.send(command).is_err() {
            return Err(RemoveError::NotFound(id));
        }
        let _ = shared.doorbell.ring();
        Ok(Ending {
            id,
            reply: reply_rx,
        })
    }

    /// The ids in the mesh, ascending: connected, waiting for a connection (dialled), and
    /// ending. (Not those that left, though their notice has not been taken yet.)
    pub fn ids(&self) -> Vec<usize> {
        let slots = self.shared().slots.pin();
        let mut ids: Vec<usize> = (slots.iter())
            .filter(|(_, slot)| slot.phase() != Phase::Closed)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many ids [`ids`](Self::ids) would list.
    pub fn len(&self) -> usize {
        let slots = self.shared().slots.pin();
        let count = slots.values().filter(|slot| slot.phase() != Phase::Closed);
        count.count()
    }

    /// True if the mesh has no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What connection `id` has carried and what waits for it; `None` for an id not in
    /// the mesh.
    pub fn stats(&self, id: usize) -> Option<ConnectionStats> {
        let shared = self.shared();
        let slot = shared.slots.pin().get(&id)?.clone();
        if slot.phase() == Phase::Closed {
            return None;
        }
        let (queued_frames, queued_bytes) = match shared.queues.pin().get(&id) {
            Some(queue) => (queue.len(), queue.bytes()),
            None => (0, 0),
        };
        let counters = slot.counters().values();
        let full = self.incoming.len() >= shared.incoming_capacity;
        Some(ConnectionStats {
            phase: slot.phase(),
            dialled: slot.is_dialled(),
            connected_since: slot.connected_since(),
            paused: counters.unreceived > 0 || (counters.readable && full),
            counters,
            queued_frames: queued_frames as u64,
            queued_bytes: queued_bytes as u64,
        })
    }

    /// Totals over the mesh's life, and what waits now.
    pub fn totals(&self) -> MeshStats {
        let shared = self.shared();
        let mut stats = MeshStats {
            counters: shared.totals.values(),
            incoming: self.incoming.len() as u64,
            ..MeshStats::default()
        };
        let slots = shared.slots.pin();
        let queues = shared.queues.pin();
        for (id, slot) in slots.iter() {
            match slot.phase() {
                Phase::Connecting => stats.connecting += 1,
                Phase::Connected => stats.connected += 1,
                Phase::Ending => stats.ending += 1,
                Phase::Closed => continue,
            }
            stats.connections += 1;
            let waiting = slot.counters().values();
            stats.counters.backlog_frames += waiting.backlog_frames;
            stats.counters.backlog_bytes += waiting.backlog_bytes;
            stats.counters.unreceived += waiting.unreceived;
            if let Some(queue) = queues.get(id) {
                stats.queued_frames += queue.len() as u64;
                stats.queued_bytes += queue.bytes() as u64;
            }
        }
        stats
    }

    /// Takes a connection out of the mesh and hands it back, with its framing state (see
    /// the module doc). Waits for the reactor's answer (briefly: it never blocks); an
    /// event loop uses [`Notified::begin_remove`] instead.
    pub fn remove(&self, id: usize) -> Result<Connection, RemoveError> {
        self.begin_remove(id)?.wait()
    }

    fn begin_remove(&self, id: usize) -> Result<Removal, RemoveError> {
        let shared = self.shared();
        if shared.queues.pin().remove(&id).is_none() {
            return Err(RemoveError::NotFound(id));
        }
        shared.slots.pin().remove(&id);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let command = Command::Remove {
            id,
            reply: reply_tx,
        };
        if shared.commands.send(command).is_err() {
            return Err(RemoveError::NotFound(id));
        }
        let _ = shared.doorbell.ring();
        Ok(Removal {
            id,
            reply: reply_rx,
        })
    }

    /// Queues an envelope for its connection without blocking.
    pub fn send(&self, envelope: Envelope) -> Result<(), SendError> {
        let shared = self.shared();
        let queues = shared.queues.pin();
        match queues.get(&envelope.id()) {
            Some(queue) => send_to(&shared.doorbell, queue, envelope),
            None if self.issued(envelope.id()) => Err(SendError::Disconnected(envelope)),
            None => Err(SendError::NotFound(envelope)),
        }
    }

    /// Queues a run of encoded frames for connection `id` without blocking, all or none:
    /// the run takes a place in the outgoing queue per frame, and goes out as it is, with
    /// no copy and no allocation per frame. This is the batch form of [`send`](Self::send)
    /// for callers that encode many frames into one buffer.
    pub fn send_encoded(&self, id: usize, frames: EncodedFrames) -> Result<(), SendEncodedError> {
        let shared = self.shared();
        let queues = shared.queues.pin();
        let Some(queue) = queues.get(&id) else {
            return Err(match self.issued(id) {
                true => SendEncodedError::Disconnected(frames),
                false => SendEncodedError::NotFound(frames),
            });
        };
        if frames.largest_payload() > queue.max_frame_size() as usize {
            return Err(SendEncodedError::TooLarge(frames));
        }
        match queue.push_encoded(frames) {
            Ok(false) => Ok(()),
            Ok(true) => shared.doorbell.schedule(id).map_err(SendEncodedError::Io),
            Err(PushError::Full(frames)) => Err(SendEncodedError::Full(frames)),
            Err(PushError::Closed(frames)) => Err(SendEncodedError::Disconnected(frames)),
        }
    }

    /// Sends runs of whole encoded frames (4-byte big-endian length, then the payload,
    /// each) from the caller's buffer: run `i` is `bytes[runs[i].1]` for connection
    /// `runs[i].0`, queued all or none. This is the form for callers that encode many
    /// frames into one buffer (the Node binding's outbox). Returns the runs it refused,
    /// by index, with why; nothing of theirs was sent.
    ///
    /// When the batch is for one connection and the reactor sleeps, the sender takes its
    /// state from its desk instead of waking it (the desk, `desk.rs`): an idle connection's
    /// frames are written at once from `bytes`, a busy one's are queued and written by the
    /// sender as the reactor would. Otherwise the frames are copied (once for the whole
    /// batch) and queued for the reactor. Either way a connection's frames leave in the
    /// order they were accepted.
    pub fn send_batch(
        &self,
        bytes: &[u8],
        runs: &[(usize, std::ops::Range<usize>)],
    ) -> Vec<(usize, BatchError)> {
        let shared = self.shared();
        let queues = shared.queues.pin();
        let mut refused = Vec::new();
        // Only a batch for one connection is written by the sender: one for many would
        // make it a system call per connection, each write small, where the reactor writes
        // them all at its pace, each with what has gathered by then.
        let mut state = match runs.len() {
            1 => shared.desk.borrow(),
            _ => None,
        };
        let mut ring = false;
        let mut copied: Option<Arc<[u8]>> = None;
        for (index, (id, range)) in runs.iter().cloned().enumerate() {
            let wire = &bytes[range.clone()];
            let (count, largest) = match codec::scan(wire) {
                Ok(counted) => counted,
                Err(err) => {
                    refused.push((index, BatchError::Malformed(err)));
                    continue;
                }
            };
            let Some(queue) = queues.get(&id) else {
                let why = match self.issued(id) {
                    true => BatchError::Disconnected,
                    false => BatchError::NotFound,
                };
                refused.push((index, why));
                continue;
            };
            if largest > queue.max_frame_size() as usize {
                refused.push((index, BatchError::TooLarge));
                continue;
            }
            if count == 0 {
                if queue.is_closed() {
                    refused.push((index, BatchError::Disconnected));
                }
                continue;
            }
            if let Some(state) = state.as_mut() {
                let wire = Wire::Frames { bytes: wire, count };
                match state.send_direct(id, queue, wire) {
                    Ok(Direct::Sent) => continue,
                    Ok(Direct::Queue) => {}
                    Err(err) => {
                        refused.push((index, push_refusal(err)));
                        continue;
                    }
                }
            }
            let buf = copied.get_or_insert_with(|| Arc::from(bytes));
            let frames = EncodedFrames::checked(buf.clone(), range, count, largest);
            match queue.push_encoded(frames) {
                Ok(schedule) => {
                    let flushed = state.as_mut().is_some_and(|state| state.flush_owned(id));
                    if schedule && !flushed {
                        shared.doorbell.list(id);
                        ring = true;
                    }
                }
                Err(err) => refused.push((index, push_refusal(err))),
            }
        }
        if let Some(state) = state {
            ring |= shared.desk.give_back(state);
        }
        if ring {
            // A failed ring means the reactor is gone: its end closed the queues, and what
            // it had accepted it answers for at its end.
            let _ = shared.doorbell.ring();
        }
        refused
    }

    /// Sends one payload from the caller's buffer: written at once if the reactor sleeps
    /// and the connection is idle (as in [`send_batch`](Self::send_batch)), else copied and
    /// queued as by [`send`](Self::send). Errors as `send`'s, the envelope a copy.
    pub fn send_from(&self, id: usize, payload: &[u8]) -> Result<(), SendError> {
        let shared = self.shared();
        let queues = shared.queues.pin();
        let copy = || Envelope::new(id, payload.to_vec());
        let Some(queue) = queues.get(&id) else {
            return Err(match self.issued(id) {
                true => SendError::Disconnected(copy()),
                false => SendError::NotFound(copy()),
            });
        };
        if payload.len() > queue.max_frame_size() as usize {
            return Err(SendError::TooLarge(copy()));
        }
        if let Some(mut state) = shared.desk.borrow() {
            let sent = state.send_direct(id, queue, Wire::Payload(payload));
            let ring = shared.desk.give_back(state);
            if ring {
                let _ = shared.doorbell.ring();
            }
            match sent {
                Ok(Direct::Sent) => return Ok(()),
                Ok(Direct::Queue) => {}
                Err(PushError::Full(())) => return Err(SendError::Full(copy())),
                Err(PushError::Closed(())) => return Err(SendError::Disconnected(copy())),
            }
        }
        send_to(&shared.doorbell, queue, copy())
    }

    /// True if this mesh gave out `id` (whether or not its connection is still there).
    pub fn issued(&self, id: usize) -> bool {
        id != 0 && id < self.shared().next_id.load(SeqCst)
    }

    /// Waits for the next envelope from any connection.
    pub fn recv(&self) -> Result<Envelope, RecvError> {
        self.incoming.recv()
    }

    /// Waits up to `timeout` for the next envelope.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, RecvTimeoutError> {
        self.incoming.recv_timeout(timeout)
    }

    /// Takes the next envelope if one is waiting.
    pub fn try_recv(&self) -> Result<Envelope, TryRecvError> {
        self.incoming.try_recv()
    }

    /// Waits for at least one envelope, then takes up to `max` of those waiting.
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    pub fn recv_batch(&self, max: usize) -> Result<Vec<Envelope>, RecvError> {
        self.incoming.recv_batch(max)
    }

    /// A handle that sends to one connection, or `None` if no connection has this id.
    pub fn outgoing(&self, id: usize) -> Option<Outgoing> {
        let queue = self.shared().queues.pin().get(&id)?.clone();
        Some(Outgoing {
            id,
            queue,
            shared: self.incoming.shared.clone(),
        })
    }

    /// A handle that receives from the mesh (sharing its incoming stream).
    pub fn incoming(&self) -> Incoming {
        self.incoming.clone()
    }

    /// The disconnect notices of connections the reactor removed by itself.
    pub fn disconnects(&self) -> Disconnects {
        Disconnects {
            incoming: self.incoming.clone(),
        }
    }

    /// The calls of a consumer that waits in an event loop (see [`Notified`]).
    pub fn notified(&self) -> Notified {
        Notified { mesh: self.clone() }
    }

    /// A handle that does not keep the mesh running, but can still shut it down.
    pub fn downgrade(&self) -> WeakMesh {
        WeakMesh {
            shared: Arc::downgrade(&self.incoming.shared),
        }
    }

    /// Stops the reactor and waits for its thread to end; idempotent. Frames the sockets
    /// take without blocking are written first. Returns, to the call that joined the
    /// thread (later calls get nothing), a notice per connection with frames it accepted
    /// and did not write (reason [`DisconnectReason::Shutdown`], the frames in `unsent`),
    /// and the notices of connections that were ending then: nothing accepted is lost
    /// without being handed back. (A sender on another thread still queuing at the very
    /// moment the reactor stops may land a frame after its last look.)
    ///
    /// [`DisconnectReason::Shutdown`]: crate::DisconnectReason::Shutdown
    pub fn shutdown(&self) -> Vec<Disconnect> {
        self.shared().shutdown()
    }

    /// True once the mesh has been shut down (or its reactor has stopped).
    pub fn is_shutdown(&self) -> bool {
        let shared = self.shared();
        shared.shutdown.load(SeqCst) || shared.doorbell.is_stopped()
    }
}

impl Shared {
    fn shutdown(&self) -> Vec<Disconnect> {
        if !self.shutdown.swap(true, SeqCst) {
            let _ = self.commands.send(Command::Shutdown);
            let _ = self.doorbell.ring();
        }
        match self.thread.pop() {
            Some(thread) if thread.thread().id() != std::thread::current().id() => {
                thread.join().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Forgets a connection the reactor has removed (its notice was taken).
    fn retire(&self, id: usize) {
        // Only if it is closed: a remove() may have retired the id already, and a dialled
        // id that waits for its next connection stays.
        if let Ok(Some(_)) = self
            .queues
            .pin()
            .remove_if(&id, |_, queue| queue.is_closed())
        {
            self.slots.pin().remove(&id);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: nobody is left to hand anything back to.
        let _ = self.shutdown();
    }
}

fn push_refusal<T>(err: PushError<T>) -> BatchError {
    match err {
        PushError::Full(_) => BatchError::Full,
        PushError::Closed(_) => BatchError::Disconnected,
    }
}

fn send_to(
    doorbell: &Doorbell,
    queue: &OutgoingQueue,
    envelope: Envelope,
) -> Result<(), SendError> {
    if envelope.payload().len() > queue.max_frame_size() as usize {
        return Err(SendError::TooLarge(envelope));
    }
    let (id, payload) = envelope.into_parts();
    match queue.push(payload) {
        Ok(false) => Ok(()),
        Ok(true) => doorbell.schedule(id).map_err(SendError::Io),
        Err(PushError::Full(payload)) => Err(SendError::Full(Envelope::new(id, payload))),
        Err(PushError::Closed(payload)) => Err(SendError::Disconnected(Envelope::new(id, payload))),
    }
}

/// Options of [`Mesh::with_options`].
#[derive(Default)]
pub struct MeshOptions {
    /// Wakes a consumer that waits in an event loop (see [`Mesh::with_notify`]).
    pub notify: Option<Notify>,
    /// Ends a connection from which nothing arrives for this long (a disconnect of reason
    /// [`DisconnectReason::Timeout`]), between the timeout and a quarter more after the
    /// last read. Checked on the reactor's own clock: no frame is sent for it.
    pub idle_timeout: Option<Duration>,
}

impl fmt::Debug for MeshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshOptions")
            .field("notify", &self.notify.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// What one connection of a mesh has carried ([`Mesh::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Where its connection is.
    pub phase: Phase,
    /// A dialled id ([`Mesh::reserve`]): its counters span its connections.
    pub dialled: bool,
    /// When its current connection joined, in milliseconds since the Unix epoch.
    pub connected_since: Option<u64>,
    /// Frames and bytes in and out, and what waits in the connection.
    pub counters: CounterValues,
    /// Reading from it is paused: frames it sent wait for room in the incoming stream
    /// (read and held, or still in its socket while the stream is full).
    pub paused: bool,
    /// Frames in its outgoing queue (not yet taken for writing).
    pub queued_frames: u64,
    /// Bytes of those frames, headers included.
    pub queued_bytes: u64,
}

/// What a whole mesh has carried ([`Mesh::totals`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeshStats {
    /// Totals over the mesh's life (frames and bytes), and what waits in its connections
    /// now (the backlog and unreceived gauges, summed).
    pub counters: CounterValues,
    /// Envelopes in the incoming stream, not yet received.
    pub incoming: u64,
    /// Ids in the mesh.
    pub connections: u64,
    /// Of those, waiting for a connection (dialled).
    pub connecting: u64,
    /// Of those, carrying traffic.
    pub connected: u64,
    /// Of those, ending.
    pub ending: u64,
    /// Frames in outgoing queues.
    pub queued_frames: u64,
    /// Bytes of those frames.
    pub queued_bytes: u64,
}

/// A connection being ended without waiting ([`Notified::begin_end`]): its answer comes
/// from the reactor, which calls the notify hook when it is there.
#[derive(Debug)]
pub struct Ending {
    id: usize,
    reply: Receiver<Ended>,
}

impl Ending {
    /// The id being ended.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The answer, if it has come. A reactor that stopped without answering counts as
    /// [`Ended::NotFound`].
    pub fn try_take(&self) -> Option<Ended> {
        match self.reply.try_recv() {
            Ok(ended) => Some(ended),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Ended::NotFound),
        }
    }

    /// Waits for the answer.
    pub fn wait(self) -> Ended {
        self.reply.recv().unwrap_or(Ended::NotFound)
    }
}

/// A connection being removed without waiting ([`Notified::begin_remove`]): its answer
/// comes from the reactor, which calls the notify hook when it is there.
#[derive(Debug)]
pub struct Removal {
    id: usize,
    reply: Receiver<Result<Connection, RemoveError>>,
}

impl Removal {
    /// The connection's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The answer, if it has come.
    pub fn try_take(&self) -> Option<Result<Connection, RemoveError>> {
        match self.reply.try_recv() {
            Ok(answer) => Some(answer),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            // The reactor ended without answering: the connection closed with it.
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                Some(Err(RemoveError::NotFound(self.id)))
            }
        }
    }

    /// Waits for the answer.
    pub fn wait(self) -> Result<Connection, RemoveError> {
        self.reply
            .recv()
            .unwrap_or(Err(RemoveError::NotFound(self.id)))
    }
}

/// A handle that sends to one connection of a mesh, skipping the lookup by id.
#[derive(Clone)]
pub struct Outgoing {
    id: usize,
    queue: Arc<OutgoingQueue>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Outgoing {
    /// The connection's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Queues a payload without blocking; errors as [`Mesh::send`].
    pub fn send(&self, payload: Vec<u8>) -> Result<(), SendError> {
        send_to(
            &self.shared.doorbell,
            &self.queue,
            Envelope::new(self.id, payload),
        )
    }

    /// True once the connection has left the mesh (disconnected, removed or shut down).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// How many frames the outgoing queue can take now, or `None` once the connection has
    /// left the mesh. Only sends lower it; the reactor raises it as it writes.
    pub fn room(&self) -> Option<usize> {
        self.queue.room()
    }

    /// The largest payload the connection accepts.
    pub fn max_frame_size(&self) -> u32 {
        self.queue.max_frame_size()
    }
}

/// A handle that receives envelopes from a mesh. Clones share the stream.
#[derive(Clone)]
pub struct Incoming {
    outlet: Outlet,
    shared: Arc<Shared>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("waiting", &self.outlet.frames())
            .finish()
    }
}

impl Incoming {
    /// Waits for the next envelope from any connection.
    pub fn recv(&self) -> Result<Envelope, RecvError> {
        match self.envelopes(1, Wait::Until(None)) {
            Ok(mut envelopes) => Ok(envelopes.pop().expect("one envelope")),
            Err(_) if self.shut_down() => Err(RecvError::Shutdown),
            Err(_) => Err(RecvError::Disconnected),
        }
    }

    /// Waits up to `timeout` for the next envelope.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        match self.envelopes(1, Wait::Until(deadline)) {
            Ok(mut envelopes) => Ok(envelopes.pop().expect("one envelope")),
            Err(Waited::Timeout) => Err(RecvTimeoutError::Timeout),
            Err(Waited::Closed) if self.shut_down() => Err(RecvTimeoutError::Shutdown),
            Err(Waited::Closed) => Err(RecvTimeoutError::Disconnected),
        }
    }

    /// Takes the next envelope if one is waiting.
    pub fn try_recv(&self) -> Result<Envelope, TryRecvError> {
        match self.envelopes(1, Wait::No) {
            Ok(mut envelopes) => envelopes.pop().ok_or(TryRecvError::Empty),
            Err(_) if self.shut_down() => Err(TryRecvError::Shutdown),
            Err(_) => Err(TryRecvError::Disconnected),
        }
    }

    /// Waits for at least one envelope, then takes up to `max` of those waiting.
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    pub fn recv_batch(&self, max: usize) -> Result<Vec<Envelope>, RecvError> {
        assert!(max > 0, "recv_batch needs room for at least one envelope");
        match self.envelopes(max, Wait::Until(None)) {
            Ok(envelopes) => Ok(envelopes),
            Err(_) if self.shut_down() => Err(RecvError::Shutdown),
            Err(_) => Err(RecvError::Disconnected),
        }
    }

    /// Envelopes waiting in the incoming stream.
    pub fn len(&self) -> usize {
        self.outlet.frames()
    }

    /// True if no envelope (and no notice) is waiting.
    pub fn is_empty(&self) -> bool {
        self.outlet.is_empty()
    }

    /// Up to `max` envelopes (at least one, unless `wait` is `No`), passing the notices met
    /// on the way to [`Mesh::disconnects`] (each counts against `max`).
    fn envelopes(&self, max: usize, wait: Wait) -> Result<Vec<Envelope>, Waited> {
        let mut envelopes = Vec::new();
        let mut items = Vec::new();
        loop {
            let taken = self.take(max, wait, &mut items)?;
            for item in items.drain(..) {
                match item {
                    Received::Frames(delivery) => delivery.into_envelopes(&mut envelopes),
                    Received::Disconnect(notice) => {
                        let _ = self.shared.notices.0.send(notice);
                    }
                }
            }
            // Only notices came: wait on for an envelope (a try gives up now).
            if taken.frames > 0 || matches!(wait, Wait::No) {
                return Ok(envelopes);
            }
        }
    }

    /// Takes from the stream, waking the reactor if the take made room it waits for, and
    /// retiring the ids whose notices it took.
    fn take(&self, max: usize, wait: Wait, out: &mut Vec<Received>) -> Result<Taken, Waited> {
        let first = out.len();
        let taken = self.outlet.take(max, wait, out)?;
        if taken.made_room {
            // A failed ring means the reactor is gone; receivers will see the end.
            let _ = self.shared.doorbell.ring();
        }
        if taken.notices > 0 {
            for item in &out[first..] {
                if let Received::Disconnect(notice) = item {
                    self.shared.retire(notice.id);
                }
            }
        }
        Ok(taken)
    }

    fn shut_down(&self) -> bool {
        self.shared.shutdown.load(SeqCst)
    }
}

/// A mesh seen from an event loop: the calls of a consumer that never blocks and is woken
/// by the mesh's notify hook ([`Mesh::with_notify`]) instead.
#[derive(Clone, Debug)]
pub struct Notified {
    mesh: Mesh,
}

impl Notified {
    /// Takes up to `max` frames and notices, in the order of the stream, without waiting.
    /// Returns how many (0 if nothing waits); `Err` once nothing waits and nothing more
    /// will come.
    pub fn take(&self, max: usize, out: &mut Vec<Received>) -> Result<usize, TryRecvError> {
        let incoming = &self.mesh.incoming;
        match incoming.take(max, Wait::No, out) {
            Ok(taken) => Ok(taken.frames + taken.notices),
            Err(_) if incoming.shut_down() => Err(TryRecvError::Shutdown),
            Err(_) => Err(TryRecvError::Disconnected),
        }
    }

    /// Takes the notices at the front of the stream, stopping before the first frame: for a
    /// consumer that has taken every envelope before them and has no receive waiting, so
    /// that notices reach it even while nobody receives. Returns how many.
    pub fn take_notices(&self, out: &mut Vec<Disconnect>) -> usize {
        let mut items = Vec::new();
        let _ = self.mesh.incoming.take_notices(&mut items);
        let count = items.len();
        out.extend(items.into_iter().filter_map(|item| match item {
            Received::Disconnect(notice) => Some(notice),
            Received::Frames(_) => None,
        }));
        count
    }

    /// Asks for the notify hook to be called once something arrives. Returns false,
    /// without asking, if something waits already or the mesh has stopped: take it (or the
    /// error) now.
    pub fn arm(&self) -> bool {
        self.mesh.incoming.outlet.arm()
    }

    /// True while armed: the consumer waits, and has not been notified since.
    pub fn is_armed(&self) -> bool {
        self.mesh.incoming.outlet.is_armed()
    }

    /// Asks for the notify hook to be called once connection `id`'s outgoing queue has come
    /// down to half its capacity (so the sender resumes with room for a batch), or the
    /// connection leaves. Returns `Ok(false)` without asking if it has room (or has left)
    /// already: try sending now. `NotFound` if no connection has the id.
    pub fn want_room(&self, id: usize) -> Result<bool, RemoveError> {
        match self.mesh.shared().queues.pin().get(&id) {
            Some(queue) => Ok(queue.want_room()),
            None => Err(RemoveError::NotFound(id)),
        }
    }

    /// Starts ending connection `id` ([`Mesh::end`]) without waiting: the reactor calls
    /// the notify hook once the [`Ending`]'s answer is there.
    pub fn begin_end(&self, id: usize) -> Result<Ending, RemoveError> {
        self.mesh.begin_end(id)
    }

    /// Starts removing connection `id` without waiting: the reactor calls the notify hook
    /// once the [`Removal`]'s answer is there.
    pub fn begin_remove(&self, id: usize) -> Result<Removal, RemoveError> {
        self.mesh.begin_remove(id)
    }
}

/// A handle on a mesh that does not keep it running; see [`Mesh::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakMesh {
    shared: std::sync::Weak<Shared>,
}

impl WeakMesh {
    /// Shuts the mesh down if it still runs (what was not written is dropped).
    pub fn shutdown(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.shutdown();
        }
    }

    /// True while some handle keeps the mesh.
    pub fn is_alive(&self) -> bool {
        self.shared.strong_count() > 0
    }
}

/// A handle on a mesh's disconnect notices, for programs that receive with the blocking
/// calls. Each notice is taken once, by one handle.
///
/// A notice comes in the incoming stream after the envelopes its connection sent: it is
/// here once a receive has taken those envelopes (or at once, if none waited before it).
#[derive(Clone)]
pub struct Disconnects {
    incoming: Incoming,
}

impl fmt::Debug for Disconnects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnects")
            .field("waiting", &self.incoming.shared.notices.1.len())
            .finish()
    }
}

impl Disconnects {
    /// Takes the next notice if one is here.
    pub fn try_recv(&self) -> Option<Disconnect> {
        if let Ok(notice) = self.incoming.shared.notices.1.try_recv() {
            return Some(notice);
        }
        // A notice at the front of the stream, with no envelope before it, is here too.
        let mut items = Vec::new();
        let _ = self.incoming.take_notices(&mut items);
        let mut notices = items.into_iter().filter_map(|item| match item {
            Received::Disconnect(notice) => Some(notice),
            Received::Frames(_) => None,
        });
        let first = notices.next();
        for later in notices {
            let _ = self.incoming.shared.notices.0.send(later);
        }
        first
    }

    /// Waits up to `timeout` for the next notice.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Disconnect> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(notice) = self.try_recv() {
                return Some(notice);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // A receive may pass one on meanwhile; a notice at the front is looked for
            // again after this short wait.
            let wait = left.min(Duration::from_millis(5));
            if let Ok(notice) = self.incoming.shared.notices.1.recv_timeout(wait) {
                return Some(notice);
            }
        }
    }
}

impl Incoming {
    /// Takes the notices at the front of the stream, stopping before any frame.
    fn take_notices(&self, out: &mut Vec<Received>) -> Result<Taken, Waited> {
        let first = out.len();
        let taken = self.outlet.take_notices(out)?;
        for item in &out[first..] {
            if let Received::Disconnect(notice) = item {
                self.shared.retire(notice.id);
            }
        }
        Ok(taken)
    }
}
