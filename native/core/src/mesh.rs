//! The mesh: many connections, one reactor thread, sends by id and one stream of envelopes
//! from all of them.
//!
//! # Contract
//!
//! - [`Mesh::add`] assigns the id at once, without waiting for the reactor. Ids start at 1
//!   and are never reused by a mesh, so a stale id can never reach another peer.
//! - [`Mesh::send`] never blocks: it copies nothing, queues the payload on the connection's
//!   bounded queue and returns. A full queue is [`SendError::Full`], carrying the envelope.
//! - [`Mesh::write`] and [`Mesh::write_encoded`] send from the caller's buffer, for callers
//!   that batch their own sends: when nothing is queued ahead for the connection and the
//!   reactor is asleep (or the batch is 16 KiB or more), the frames go straight to the
//!   socket from the calling thread (on Unix, for streams that allow it:
//!   [`Stream::raw_socket`]). That system call takes the place of the one that would wake
//!   the reactor (or of copying a large batch for it), and saves two thread hand-overs.
//!   Otherwise they are copied and queued. Either way the frames of one connection leave
//!   in the order they were accepted.
//! - Receiving takes envelopes from one bounded incoming queue shared by every handle
//!   ([`Mesh::clone`], [`Incoming`]); envelopes are distributed among the receivers.
//! - A connection the reactor removes by itself (end of stream, reset, protocol error) is
//!   announced once by a [`Disconnect`] notice, which carries the reason and every frame
//!   that was queued for it but not sent. Until that notice has been taken from
//!   [`Mesh::disconnects`], sends to the id fail with [`SendError::Disconnected`]; after it,
//!   with [`SendError::NotFound`]. [`Mesh::remove`] of such an id is
//!   [`RemoveError::NotFound`] (the connection is gone; the notice says why).
//! - [`Mesh::remove`] hands the connection back with its framing state: frames queued but
//!   not yet written go out on its next [`Connection::send`]; a frame half read is finished
//!   by its next [`Connection::recv`].
//! - [`Mesh::shutdown`] (or dropping the last handle) stops and joins the reactor. Frames
//!   the sockets can take without blocking are written first; the rest are dropped.
//!   Envelopes already received can still be taken; after them receivers get `Shutdown`.
//!   It never waits for a receiver.
//! - A consumer that waits in an event loop instead of a blocking call (the Node binding)
//!   gives [`Mesh::with_notify`] a [`Notify`] hook. After finding the queue empty it
//!   [`arm`](Incoming::arm)s it; the reactor calls the hook once, at the end of a turn in
//!   which envelopes arrived. The hook is also called, armed or not, when a disconnect
//!   notice is sent, when a queue a sender waits on ([`Mesh::want_room`]) gets room or
//!   closes, and when the reactor stops.

use std::fmt;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustc_hash::FxBuildHasher;

use crate::codec::{frame_header, EncodedFrames, FrameDecoder, FramesRef};
use crate::envelope::Envelope;
use crate::error::{
    AddError, DisconnectReason, RecvError, RecvTimeoutError, RemoveError, SendEncodedError,
    SendError, TryRecvError,
};
use crate::incoming::{Delivery, IncomingQueue, Waited};
use crate::outgoing::{Chunk, OutgoingQueue, PushError};
use crate::reactor::{self, Channels, Command, Notify, Shared};
use crate::reading::{LentReads, ReadLease};
use crate::transport::Connection;
#[cfg(doc)]
use crate::transport::Stream;

type Queues = papaya::HashMap<usize, Arc<OutgoingQueue>, FxBuildHasher>;
/// The read state of the connections whose reads can be lent (a raw socket), by id.
type Leases = papaya::HashMap<usize, Arc<ReadLease>, FxBuildHasher>;

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
    handle: Arc<Handle>,
    incoming: Incoming,
}

/// The parts every handle shares; the reactor is stopped when the last one goes.
struct Handle {
    shared: Arc<Shared>,
    queues: Queues,
    leases: Leases,
    commands: Sender<Command>,
    disconnects: Receiver<Disconnect>,
    next_id: AtomicUsize,
    outgoing_capacity: usize,
    /// Taken once, by whichever `shutdown` joins the thread; never touched by the reactor.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("connections", &self.handle.queues.len())
            .field("shutdown", &self.handle.shared.shutdown.load(SeqCst))
            .finish()
    }
}

impl Mesh {
    /// A mesh whose incoming queue holds `incoming_capacity` envelopes and whose
    /// connections each queue up to `outgoing_capacity` outgoing frames. Both must be at
    /// least 1 (`InvalidInput` otherwise). Starts the reactor thread.
    pub fn new(incoming_capacity: usize, outgoing_capacity: usize) -> io::Result<Self> {
        Self::build(incoming_capacity, outgoing_capacity, None)
    }

    /// Like [`new`](Self::new), with a hook that wakes a consumer waiting in an event loop
    /// (see [`Notify`], and [`Incoming::arm`]). The hook runs on the reactor thread.
    pub fn with_notify(
        incoming_capacity: usize,
        outgoing_capacity: usize,
        notify: Notify,
    ) -> io::Result<Self> {
        Self::build(incoming_capacity, outgoing_capacity, Some(notify))
    }

    fn build(
        incoming_capacity: usize,
        outgoing_capacity: usize,
        notify: Option<Notify>,
    ) -> io::Result<Self> {
        if incoming_capacity == 0 || outgoing_capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mesh capacities must be at least 1",
            ));
        }
        let (poll, shared) = reactor::new_shared(notify)?;
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let incoming = Arc::new(IncomingQueue::new(incoming_capacity));
        let (disconnects_tx, disconnects_rx) = crossbeam_channel::unbounded();
        let thread = reactor::spawn(
            poll,
            shared.clone(),
            Channels {
                commands: commands_rx,
                incoming: incoming.clone(),
                disconnects: disconnects_tx,
            },
        )?;
        let handle = Arc::new(Handle {
            shared,
            queues: Queues::default(),
            leases: Leases::default(),
            commands: commands_tx,
            disconnects: disconnects_rx,
            next_id: AtomicUsize::new(1),
            outgoing_capacity,
            thread: Mutex::new(Some(thread)),
        });
        Ok(Mesh {
            incoming: Incoming {
                queue: incoming,
                handle: handle.clone(),
            },
            handle,
        })
    }

    /// Hands a connection to the reactor and returns its id at once.
    ///
    /// Fails only if the mesh has shut down, handing the connection back. A connection the
    /// operating system refuses to poll is announced by a [`Disconnect`] notice.
    pub fn add(&self, connection: Connection) -> Result<usize, AddError> {
        let handle = &self.handle;
        if handle.shared.stopped.load(SeqCst) {
            return Err(AddError::Shutdown(Box::new(connection)));
        }
        let id = handle.next_id.fetch_add(1, SeqCst);
        #[cfg(unix)]
        let socket = connection.stream.raw_socket();
        #[cfg(not(unix))]
        let socket = None;
        let queue = Arc::new(OutgoingQueue::new(
            handle.outgoing_capacity,
            connection.max_frame_size(),
            socket,
        ));
        let max = connection.max_frame_size();
        let lease = Arc::new(ReadLease::new(FrameDecoder::new(max), socket));
        handle.queues.pin().insert(id, queue.clone());
        if socket.is_some() {
            handle.leases.pin().insert(id, lease.clone());
        }
        if let Err(crossbeam_channel::SendError(command)) = handle.commands.send(Command::Add {
            id,
            connection,
            queue: queue.clone(),
            lease,
        }) {
            handle.queues.pin().remove(&id);
            handle.leases.pin().remove(&id);
            let Command::Add { connection, .. } = command else {
                unreachable!("sent an Add")
            };
            return Err(AddError::Shutdown(Box::new(connection)));
        }
        // A failed wake means the reactor is gone; the check below covers that.
        let _ = handle.shared.wake();
        if handle.shared.stopped.load(SeqCst) {
            // The reactor may have stopped before it saw the command: make sure sends
            // to this id are refused rather than queued for nobody.
            queue.close();
        }
        Ok(id)
    }

    /// Lends connection `id`'s reads to the calling thread, which polls the socket in its
    /// own event loop and reads it when it is readable ([`LentReads::read`]): a frame then
    /// wakes the receiver's thread directly rather than the reactor, which would then wake
    /// it. `None` if the connection cannot be lent now: unknown, closing, lent already, not
    /// a raw socket (TLS, or not Unix), or frames that did not fit the incoming queue wait in
    /// the reactor. Dropping the [`LentReads`] gives the reads back.
    pub fn lend_reads(&self, id: usize) -> Option<LentReads> {
        let handle = &self.handle;
        let lease = handle.leases.pin().get(&id)?.clone();
        LentReads::lend(
            id,
            lease,
            handle.shared.clone(),
            self.incoming.queue.clone(),
            handle.commands.clone(),
        )
    }

    /// Takes a connection out of the mesh and hands it back, with the frames it had not yet
    /// written and any half-read frame. Waits for the reactor (briefly: it never blocks).
    pub fn remove(&self, id: usize) -> Result<Connection, RemoveError> {
        let handle = &self.handle;
        if handle.queues.pin().remove(&id).is_none() {
            return Err(RemoveError::NotFound(id));
        }
        handle.leases.pin().remove(&id);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if handle
            .commands
            .send(Command::Remove {
                id,
                reply: reply_tx,
            })
            .is_err()
        {
            return Err(RemoveError::NotFound(id));
        }
        let _ = handle.shared.wake();
        reply_rx.recv().unwrap_or(Err(RemoveError::NotFound(id)))
    }

    /// Queues an envelope for its connection without blocking.
    pub fn send(&self, envelope: Envelope) -> Result<(), SendError> {
        let queues = self.handle.queues.pin();
        match queues.get(&envelope.id()) {
            Some(queue) => send_to(&self.handle.shared, queue, envelope),
            None => Err(SendError::NotFound(envelope)),
        }
    }

    /// Queues a run of encoded frames for connection `id` without blocking, all or none:
    /// the run takes a place in the outgoing queue per frame, and goes out as it is, with
    /// no copy and no allocation per frame. This is the batch form of [`send`](Self::send)
    /// for callers that encode many frames into one buffer.
    pub fn send_encoded(&self, id: usize, frames: EncodedFrames) -> Result<(), SendEncodedError> {
        let queues = self.handle.queues.pin();
        let Some(queue) = queues.get(&id) else {
            return Err(SendEncodedError::NotFound(frames));
        };
        if frames.largest_payload() > queue.max_frame_size() as usize {
            return Err(SendEncodedError::TooLarge(frames));
        }
        match queue.push_encoded(frames) {
            Ok(false) => Ok(()),
            Ok(true) => {
                self.handle.shared.ready.push(id);
                self.handle.shared.wake().map_err(SendEncodedError::Io)
            }
            Err(PushError::Full(frames)) => Err(SendEncodedError::Full(frames)),
            Err(PushError::Closed(frames)) => Err(SendEncodedError::Disconnected(frames)),
        }
    }

    /// Sends a payload to connection `id` from the caller's buffer: straight to the socket
    /// when nothing is queued ahead for the connection and the reactor is asleep or the
    /// frame is 16 KiB or more (see the module doc), else copied and queued. Errors as
    /// [`send`](Self::send); the envelope they carry is a copy.
    ///
    /// Meant for callers that batch their own sends (one call per batch): called for
    /// every small payload in a loop while the reactor sleeps, each call would be a system
    /// call, where [`send`](Self::send) lets the reactor write many frames in one.
    pub fn write(&self, id: usize, payload: &[u8]) -> Result<(), SendError> {
        let queues = self.handle.queues.pin();
        let copy = || Envelope::new(id, payload.to_vec());
        let Some(queue) = queues.get(&id) else {
            return Err(SendError::NotFound(copy()));
        };
        let Some(header) = frame_header(payload.len())
            .ok()
            .filter(|_| payload.len() <= queue.max_frame_size() as usize)
        else {
            return Err(SendError::TooLarge(copy()));
        };
        let wire = [IoSlice::new(&header), IoSlice::new(payload)];
        let owned = |written| (Chunk::Payload(payload.to_vec()), written);
        let outcome = write_or_queue(&self.handle.shared, id, queue, &wire, 1, owned);
        let payload = |chunk| match chunk {
            Chunk::Payload(payload) => Envelope::new(id, payload),
            Chunk::Encoded(_) => unreachable!("a payload was queued"),
        };
        match outcome {
            Ok(woken) => woken.map_err(SendError::Io),
            Err(PushError::Full(chunk)) => Err(SendError::Full(payload(chunk))),
            Err(PushError::Closed(chunk)) => Err(SendError::Disconnected(payload(chunk))),
        }
    }

    /// Sends a run of encoded frames to connection `id` from the caller's buffer, all or
    /// none: as [`write`](Self::write) is to [`send`](Self::send), this is to
    /// [`send_encoded`](Self::send_encoded). The run an error carries is a copy.
    pub fn write_encoded(&self, id: usize, frames: FramesRef<'_>) -> Result<(), SendEncodedError> {
        let queues = self.handle.queues.pin();
        let copy = || frames.rest_after(0).0;
        let Some(queue) = queues.get(&id) else {
            return Err(SendEncodedError::NotFound(copy()));
        };
        if frames.largest_payload() > queue.max_frame_size() as usize {
            return Err(SendEncodedError::TooLarge(copy()));
        }
        if frames.is_empty() {
            return match queue.is_closed() {
                true => Err(SendEncodedError::Disconnected(copy())),
                false => Ok(()),
            };
        }
        let wire = [IoSlice::new(frames.as_bytes())];
        let owned = |written| {
            let (rest, written) = frames.rest_after(written);
            (Chunk::Encoded(rest), written)
        };
        let run = |chunk| match chunk {
            Chunk::Encoded(frames) => frames,
            Chunk::Payload(_) => unreachable!("a run was queued"),
        };
        match write_or_queue(&self.handle.shared, id, queue, &wire, frames.len(), owned) {
            Ok(woken) => woken.map_err(SendEncodedError::Io),
            Err(PushError::Full(chunk)) => Err(SendEncodedError::Full(run(chunk))),
            Err(PushError::Closed(chunk)) => Err(SendEncodedError::Disconnected(run(chunk))),
        }
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
        let queue = self.handle.queues.pin().get(&id)?.clone();
        Some(Outgoing {
            id,
            queue,
            handle: self.handle.clone(),
        })
    }

    /// A handle that receives from the mesh (sharing its incoming queue).
    pub fn incoming(&self) -> Incoming {
        self.incoming.clone()
    }

    /// The disconnect notices of connections the reactor removed by itself.
    pub fn disconnects(&self) -> Disconnects {
        Disconnects {
            handle: self.handle.clone(),
        }
    }

    /// Asks the notify hook to be called once connection `id`'s outgoing queue has come down
    /// to half its capacity (so the sender resumes with room for a batch), or the
    /// connection leaves. Returns `Ok(false)` without asking if it has room (or has left)
    /// already: try sending now. `NotFound` if no connection has the id.
    pub fn want_room(&self, id: usize) -> Result<bool, RemoveError> {
        match self.handle.queues.pin().get(&id) {
            Some(queue) => Ok(queue.want_room()),
            None => Err(RemoveError::NotFound(id)),
        }
    }

    /// A handle that does not keep the mesh running, but can still shut it down.
    pub fn downgrade(&self) -> WeakMesh {
        WeakMesh {
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// Stops the reactor and waits for its thread to end. Idempotent.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// True once the mesh has been shut down (or its reactor has stopped).
    pub fn is_shutdown(&self) -> bool {
        self.handle.shared.shutdown.load(SeqCst) || self.handle.shared.stopped.load(SeqCst)
    }
}

impl Handle {
    fn shutdown(&self) {
        if !self.shared.shutdown.swap(true, SeqCst) {
            let _ = self.commands.send(Command::Shutdown);
            let _ = self.shared.wake();
        }
        // A poisoned lock only means another shutdown panicked; the handle is still there.
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn send_to(shared: &Shared, queue: &OutgoingQueue, envelope: Envelope) -> Result<(), SendError> {
    if envelope.payload().len() > queue.max_frame_size() as usize {
        return Err(SendError::TooLarge(envelope));
    }
    let (id, payload) = envelope.into_parts();
    match queue.push(payload) {
        Ok(false) => Ok(()),
        Ok(true) => {
            shared.ready.push(id);
            shared.wake().map_err(SendError::Io)
        }
        Err(PushError::Full(payload)) => Err(SendError::Full(Envelope::new(id, payload))),
        Err(PushError::Closed(payload)) => Err(SendError::Disconnected(Envelope::new(id, payload))),
    }
}

/// A batch this large is written directly whenever its queue is idle, even while the
/// reactor is awake: the system call costs the sender about what copying the batch for
/// the reactor would, and the hand-over is saved (`benchmark/ab.mjs`, 64 KiB payloads over
/// 100 connections: 1.10x the messages at 0.91x the sender's CPU; 1 KiB and 64 B streams
/// no worse).
const DIRECT_ALWAYS: usize = 16 * 1024;

/// Writes `wire` straight to the socket if the queue is idle and either the reactor is
/// asleep or the batch is large ([`DIRECT_ALWAYS`]), else queues `owned(0)`; then schedules
/// the reactor if that is needed. `Ok` holds the result of waking it.
fn write_or_queue(
    shared: &Shared,
    id: usize,
    queue: &OutgoingQueue,
    wire: &[IoSlice<'_>],
    frames: usize,
    owned: impl Fn(usize) -> (Chunk, usize),
) -> Result<io::Result<()>, PushError<Chunk>> {
    let large = wire.iter().map(|slice| slice.len()).sum::<usize>() >= DIRECT_ALWAYS;
    let (result, schedule) = match large || shared.is_asleep() {
        true => queue.write_direct(wire, frames, &owned),
        false => None,
    }
    .unwrap_or_else(|| match queue.push_chunk(owned(0).0) {
        Ok(schedule) => (Ok(()), schedule),
        Err(err) => (Err(err), false),
    });
    let woken = match schedule {
        true => {
            shared.ready.push(id);
            shared.wake()
        }
        false => Ok(()),
    };
    result.map(|()| woken)
}

/// A handle that sends to one connection of a mesh, skipping the lookup by id.
#[derive(Clone)]
pub struct Outgoing {
    id: usize,
    queue: Arc<OutgoingQueue>,
    handle: Arc<Handle>,
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
            &self.handle.shared,
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

/// A handle that receives envelopes from a mesh. Clones share the queue.
#[derive(Clone)]
pub struct Incoming {
    queue: Arc<IncomingQueue>,
    handle: Arc<Handle>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("waiting", &self.queue.len())
            .finish()
    }
}

impl Incoming {
    /// Waits for the next envelope from any connection.
    pub fn recv(&self) -> Result<Envelope, RecvError> {
        let mut out = Vec::with_capacity(1);
        match self.queue.take(1, None, &mut out) {
            Ok(_) => Ok(self.one(out)),
            Err(_) if self.shut_down() => Err(RecvError::Shutdown),
            Err(_) => Err(RecvError::Disconnected),
        }
    }

    /// Waits up to `timeout` for the next envelope.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, RecvTimeoutError> {
        let mut out = Vec::with_capacity(1);
        let deadline = Instant::now().checked_add(timeout);
        match self.queue.take(1, deadline, &mut out) {
            Ok(_) => Ok(self.one(out)),
            Err(Waited::Timeout) => Err(RecvTimeoutError::Timeout),
            Err(Waited::Closed) if self.shut_down() => Err(RecvTimeoutError::Shutdown),
            Err(Waited::Closed) => Err(RecvTimeoutError::Disconnected),
        }
    }

    /// Takes the next envelope if one is waiting.
    pub fn try_recv(&self) -> Result<Envelope, TryRecvError> {
        let mut out = Vec::with_capacity(1);
        match self.queue.try_take(1, &mut out) {
            Ok(0) => Err(TryRecvError::Empty),
            Ok(_) => Ok(self.one(out)),
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
        let mut deliveries = Vec::new();
        match self.queue.take(max, None, &mut deliveries) {
            Ok(taken) => {
                self.took();
                let mut batch = Vec::with_capacity(taken);
                for delivery in deliveries {
                    delivery.into_envelopes(&mut batch);
                }
                Ok(batch)
            }
            Err(_) if self.shut_down() => Err(RecvError::Shutdown),
            Err(_) => Err(RecvError::Disconnected),
        }
    }

    /// Takes up to `max` envelopes (at least one) if any are waiting, without waiting, as
    /// the reactor delivered them: small payloads in runs that share one buffer per read,
    /// large ones on their own. This is [`try_recv`](Self::try_recv) for a consumer that
    /// moves many envelopes at once (the Node binding): no allocation or copy per frame.
    /// Returns the number of envelopes taken (0 if none waits).
    pub fn try_recv_deliveries(
        &self,
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, TryRecvError> {
        match self.queue.try_take(max, out) {
            Ok(0) => Ok(0),
            Ok(taken) => {
                self.took();
                Ok(taken)
            }
            Err(_) if self.shut_down() => Err(TryRecvError::Shutdown),
            Err(_) => Err(TryRecvError::Disconnected),
        }
    }

    /// Envelopes waiting in the incoming queue.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if no envelope is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Asks for the notify hook (see [`Mesh::with_notify`]) to be called when envelopes
    /// arrive. Returns false, without asking, if envelopes are waiting already or the mesh
    /// has stopped: take them (or the error) now.
    pub fn arm(&self) -> bool {
        let shared = &self.handle.shared;
        shared.recv_armed.store(true, SeqCst);
        std::sync::atomic::fence(SeqCst);
        if !self.queue.is_empty() || shared.stopped.load(SeqCst) {
            shared.recv_armed.store(false, SeqCst);
            return false;
        }
        true
    }

    /// True while a consumer is armed: it waits, and has not been notified since.
    pub fn is_armed(&self) -> bool {
        self.handle.shared.recv_armed.load(SeqCst)
    }

    /// The one envelope a single receive took.
    fn one(&self, mut taken: Vec<Delivery>) -> Envelope {
        self.took();
        let mut envelopes = Vec::with_capacity(1);
        taken
            .pop()
            .expect("one taken")
            .into_envelopes(&mut envelopes);
        envelopes.pop().expect("one frame")
    }

    fn took(&self) {
        self.handle.shared.made_room();
    }

    fn shut_down(&self) -> bool {
        self.handle.shared.shutdown.load(SeqCst)
    }
}

/// A handle on a mesh that does not keep it running; see [`Mesh::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakMesh {
    handle: std::sync::Weak<Handle>,
}

impl WeakMesh {
    /// Shuts the mesh down if it still runs.
    pub fn shutdown(&self) {
        if let Some(handle) = self.handle.upgrade() {
            handle.shutdown();
        }
    }

    /// True while some handle keeps the mesh.
    pub fn is_alive(&self) -> bool {
        self.handle.strong_count() > 0
    }
}

/// A connection the reactor removed by itself, with the reason and what it had not sent.
#[derive(Debug)]
pub struct Disconnect {
    /// The connection's id.
    pub id: usize,
    /// Why it was removed.
    pub reason: DisconnectReason,
    /// Envelopes queued for it that were not fully written, oldest first.
    pub unsent: Vec<Envelope>,
}

/// A handle on a mesh's disconnect notices. Each notice is taken once, by one handle.
///
/// Taking a notice retires its id: sends to it then fail with `NotFound` instead of
/// `Disconnected`. Take them, or the ids of disconnected connections are remembered.
#[derive(Clone)]
pub struct Disconnects {
    handle: Arc<Handle>,
}

impl fmt::Debug for Disconnects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnects")
            .field("waiting", &self.handle.disconnects.len())
            .finish()
    }
}

impl Disconnects {
    /// Takes the next notice if one is waiting.
    pub fn try_recv(&self) -> Option<Disconnect> {
        self.handle
            .disconnects
            .try_recv()
            .ok()
            .map(|notice| self.took(notice))
    }

    /// Waits up to `timeout` for the next notice.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Disconnect> {
        self.handle
            .disconnects
            .recv_timeout(timeout)
            .ok()
            .map(|notice| self.took(notice))
    }

    fn took(&self, notice: Disconnect) -> Disconnect {
        let queues = self.handle.queues.pin();
        // Only the tombstone: a remove() may have retired the id already.
        if let Ok(Some(_)) = queues.remove_if(&notice.id, |_, queue| queue.is_closed()) {
            self.handle.leases.pin().remove(&notice.id);
        }
        notice
    }
}
