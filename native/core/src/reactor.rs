//! The reactor: one background thread that owns every connection of a mesh and does all of
//! their I/O.
//!
//! # Rules
//!
//! - **One owner.** A connection that joins the mesh is handed to the reactor by value (a
//!   command), with its framing state; from then on only this thread reads or writes its
//!   socket, until it hands the connection back by value ([`Mesh::remove`]) or closes it.
//!   Senders queue ([`OutgoingQueue`]); receivers only take from the incoming stream.
//! - **A sleeping reactor lends its state** ([`crate::desk`]). Just before it sleeps with
//!   nothing to do, the reactor leaves its whole state (every connection, by value) on its
//!   desk; a sender that would have to wake it to write can take the state instead, write
//!   what it sends with this module's own code ([`State::send_frames`]), and give it back.
//!   While it is away the reactor's poll keeps the readiness events it meets, and the
//!   reactor handles them once it has its state back.
//! - **No lock.** The reactor talks to the handles through crossbeam channels (commands in;
//!   the incoming stream out), lock-free queues (each connection's outgoing queue, the
//!   ready list) and atomics. It never waits on a sender or a receiver.
//! - **Drain until `WouldBlock`.** Sockets are registered edge-triggered for reading and
//!   writing once, when added. A readable connection stays on the read list until a read
//!   says `WouldBlock`; a writable one with frames on the write list until its queue is
//!   empty or a write says `WouldBlock`. Nothing ever sleeps or blocks inside the loop: a
//!   partial frame stays in its connection's decoder.
//! - **Fair to every connection, in frames and bytes.** The read list is served round
//!   robin. While others wait on the list, a visit delivers at most [`QUANTUM`] frames of
//!   the connection's pending frames,
//!   and reads the socket (one read of at most 64 KiB) only once its pending frames are
//!   all delivered; then the connection goes to the back of the list. So a peer flooding
//!   tiny frames gets a quantum per round like everyone else, and what it sends beyond
//!   that waits in its own socket (TCP pushes back on it alone). A turn reads at most
//!   [`TURN_BYTES`] in all before the writes and commands get their turn again.
//! - **Pause reading when incoming is full.** No frame is pushed beyond the incoming
//!   stream's room; a connection's frames that do not fit stay pending in the connection,
//!   and while there is no room the reactor reads nothing and sleeps until a receiver's
//!   take makes room and wakes it. Nothing is dropped and nothing spins.
//! - **Coalesce writes.** Up to 256 queued frames leave in one vectored write, payloads
//!   uncopied. A stream that holds bytes of its own once its frames are written (TLS
//!   records) is flushed before its connection leaves the write list, and waits for its
//!   writable event if the socket is full. Frames are taken from a queue only while its connection's backlog is small,
//!   so a peer that does not read fills its bounded queue and senders get `Full`: memory
//!   stays bounded. A turn writes at most [`WRITE_BUDGET`] bytes to one connection.
//! - **Ordered notices.** A connection the reactor removes by itself (end of stream, reset,
//!   protocol error) becomes a [`Disconnect`] notice with its reason and every frame it had
//!   not sent, pushed into the incoming stream after every frame read from it. A connection
//!   removed by [`Mesh::remove`] leaves with its unwritten frames, its frames read but not
//!   delivered, and its half-read frame.
//! - **Notify an event loop rarely.** A consumer that cannot block (the Node binding) gives
//!   a [`Notify`] hook. The reactor calls it at most once a turn for arrivals, and only if
//!   the consumer armed it; it also calls it for room for a sender that waits, a removal's
//!   answer, and its own end. The hook never calls back into the mesh.
//!
//! [`Mesh::remove`]: crate::Mesh::remove
//! [`Disconnect`]: crate::Disconnect

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token};
use rustc_hash::FxHashMap;

use crate::codec::Framing;
use crate::counters::{Counters, Phase, Slot};
use crate::desk::Desk;
use crate::doorbell::Doorbell;
use crate::envelope::Envelope;
use crate::error::RemoveError;
use crate::incoming::{Delivery, Disconnect, Inlet};
use crate::outgoing::{OutgoingQueue, PushError};
use crate::transport::connection::{Chunk, Step, FRAMES_PER_WRITE, READ_CHUNK};
use crate::transport::{Connection, DisconnectReason};

const WAKER: Token = Token(usize::MAX);
/// Frames one connection delivers in one visit of the read list.
pub const QUANTUM: usize = 256;
/// Bytes read in one turn, over every connection, before writes and commands come again.
pub const TURN_BYTES: usize = 1024 * 1024;
/// Bytes written to one connection before the others get a turn.
pub const WRITE_BUDGET: usize = 1024 * 1024;
/// A connection's backlog is refilled from its queue only below these.
const BACKLOG_FRAMES: usize = FRAMES_PER_WRITE;
const BACKLOG_BYTES: usize = 256 * 1024;
const EVENTS: usize = 1024;

/// A callback that wakes an event-loop consumer (for example the Node binding). It is
/// called from the reactor thread: it must be quick and must not call back into the mesh.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Requests from the mesh's handles.
pub(crate) enum Command {
    Add {
        id: usize,
        connection: Box<Connection>,
        queue: Arc<OutgoingQueue>,
        slot: Arc<Slot>,
    },
    /// A dialled id, without a connection yet: its queue takes sends meanwhile.
    Reserve {
        id: usize,
        queue: Arc<OutgoingQueue>,
        slot: Arc<Slot>,
    },
    /// The (next) connection of a dialled id. With `redial`, the id waits for another
    /// when this one ends, instead of leaving.
    Attach {
        id: usize,
        connection: Box<Connection>,
        redial: bool,
    },
    /// A dialled id waiting for a connection gives up: it leaves with `reason`, handing
    /// back what it had queued. (A connected one stops redialling.)
    Abandon {
        id: usize,
        reason: DisconnectReason,
    },
    /// Write what is queued, then close the write side (see [`Ended`]).
    End {
        id: usize,
        reply: Sender<Ended>,
    },
    Remove {
        id: usize,
        reply: Sender<Result<Connection, RemoveError>>,
    },
    Shutdown,
}

/// How an [`end`](crate::Mesh::end) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything queued was written and the write side closed: the peer reads the end of
    /// the stream after it. The connection stays until the peer closes its side, and its
    /// frames are received until then.
    Finished,
    /// The connection left first (an error, or a dialled id that had no connection): its
    /// disconnect notice says why and hands back what was not written.
    Disconnected,
    /// No connection had the id (it was being removed, or had left).
    NotFound,
}

/// What a mesh's handles keep of its reactor.
pub(crate) struct ReactorHandle {
    pub(crate) doorbell: Arc<Doorbell>,
    pub(crate) desk: Arc<Desk<State>>,
    pub(crate) commands: Sender<Command>,
    /// Its end hands back what it did not write (see [`State::close_all`]).
    pub(crate) thread: std::thread::JoinHandle<Vec<Disconnect>>,
}

/// Starts a reactor that pushes into `inlet`, calls `notify` (if any), counts into
/// `totals`, and ends connections from which nothing arrives for `idle_timeout`.
pub(crate) fn start(
    inlet: Inlet,
    notify: Option<Notify>,
    totals: Arc<Counters>,
    idle_timeout: Option<Duration>,
) -> io::Result<ReactorHandle> {
    let poll = Poll::new()?;
    let doorbell = Arc::new(Doorbell::new(poll.registry(), WAKER)?);
    let desk = Arc::new(Desk::new());
    let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
    let state = Box::new(State {
        registry: poll.registry().try_clone()?,
        commands: commands_rx,
        inlet,
        notify,
        conns: FxHashMap::default(),
        read_list: VecDeque::new(),
        write_list: VecDeque::new(),
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        running: true,
        pushed: false,
        parked: FxHashMap::default(),
        totals,
        idle: idle_timeout.map(|timeout| Idle {
            tick: (timeout / SILENT_TICKS).max(Duration::from_millis(1)),
            next: Instant::now() + timeout / SILENT_TICKS,
        }),
    });
    let mut reactor = Reactor {
        poll,
        doorbell: doorbell.clone(),
        desk: desk.clone(),
        state: Some(state),
        missed: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("wiremesh-reactor".into())
        .spawn(move || reactor.run())?;
    Ok(ReactorHandle {
        doorbell,
        desk,
        commands: commands_tx,
        thread,
    })
}

/// What a sender that holds the state writes from its own buffer.
#[derive(Clone, Copy)]
pub(crate) enum Wire<'a> {
    /// Whole encoded frames (`count` of them), checked.
    Frames { bytes: &'a [u8], count: usize },
    /// One payload, its header made here.
    Payload(&'a [u8]),
}

impl Wire<'_> {
    fn frames(&self) -> usize {
        match self {
            Wire::Frames { count, .. } => *count,
            Wire::Payload(_) => 1,
        }
    }

    fn len(&self) -> usize {
        match self {
            Wire::Frames { bytes, .. } => bytes.len(),
            Wire::Payload(payload) => crate::codec::HEADER_LEN + payload.len(),
        }
    }

    fn write_to(&self, connection: &mut Connection) -> io::Result<usize> {
        match self {
            Wire::Frames { bytes, .. } => connection.write_bytes(bytes),
            Wire::Payload(payload) => {
                let header = crate::codec::frame_header(payload.len()).expect("checked");
                connection.write_slices(&[io::IoSlice::new(&header), io::IoSlice::new(payload)])
            }
        }
    }

    /// What is left once `written` bytes have gone, owned, and how much of its first
    /// frame went.
    fn rest_after(&self, written: usize) -> (Chunk, usize) {
        match self {
            Wire::Frames { bytes, .. } => {
                let (rest, skip) = crate::codec::rest_after(bytes, written);
                (Chunk::Encoded(rest), skip)
            }
            Wire::Payload(payload) => (Chunk::Payload(payload.to_vec()), written),
        }
    }
}

/// What [`State::send_direct`] did.
pub(crate) enum Direct {
    /// Written (or left in the backlog to be written): nothing more to do.
    Sent,
    /// Not idle: queue the frames.
    Queue,
}

/// How a closing connection ends, once its queue has settled.
enum Finish {
    Disconnect(DisconnectReason),
    Remove(Sender<Result<Connection, RemoveError>>),
}

struct Conn {
    connection: Connection,
    queue: Arc<OutgoingQueue>,
    slot: Arc<Slot>,
    /// A dialled id that waits for its next connection when this one ends.
    redial: bool,
    /// `end` was called: answered once the write side is closed.
    ending: Option<Sender<Ended>>,
    /// The write side is closed (after an `end`).
    finished: bool,
    /// Something was read since the last idle tick.
    heard: bool,
    /// Idle ticks in a row without anything read.
    silent: u32,
    /// An edge said readable and no read has said `WouldBlock` since.
    readable: bool,
    read_listed: bool,
    write_listed: bool,
    /// The last write met `WouldBlock`: wait for a writable event.
    write_blocked: bool,
    /// Set once the connection is leaving; it is no longer polled.
    closing: Option<Finish>,
}

impl Conn {
    /// True while the read list has something for it to do.
    fn wants_reading(&self) -> bool {
        self.connection.pending_frames() > 0 || (self.readable && self.closing.is_none())
    }
}

/// The reactor thread: its poll, and its state while it has it.
struct Reactor {
    poll: Poll,
    doorbell: Arc<Doorbell>,
    desk: Arc<Desk<State>>,
    /// `None` while the state is on the desk.
    state: Option<Box<State>>,
    /// Readiness met while a sender had the state: (token, readable, writable).
    missed: Vec<(Token, bool, bool)>,
}

/// Everything the owner of a mesh's connections holds: the reactor thread, or a sender
/// that took it from the desk while the reactor slept.
pub(crate) struct State {
    registry: Registry,
    commands: Receiver<Command>,
    inlet: Inlet,
    notify: Option<Notify>,
    conns: FxHashMap<usize, Conn>,
    /// Connections with frames to deliver or bytes to read, served round robin.
    read_list: VecDeque<usize>,
    write_list: VecDeque<usize>,
    scratch: Box<[u8]>,
    running: bool,
    /// Frames or notices went into the incoming stream this turn.
    pushed: bool,
    /// Dialled ids between connections.
    parked: FxHashMap<usize, Parked>,
    /// The mesh's totals.
    totals: Arc<Counters>,
    idle: Option<Idle>,
}

/// A dialled id between connections: its queue goes on taking sends, and what its last
/// connection had not written goes first on the next.
struct Parked {
    queue: Arc<OutgoingQueue>,
    slot: Arc<Slot>,
    unsent: Vec<Vec<u8>>,
}

/// Ticks of the idle timeout: a connection is ended after [`SILENT_TICKS`] ticks in a row
/// without reading anything, so between the timeout and a quarter more after its last read.
struct Idle {
    tick: Duration,
    next: Instant,
}

const SILENT_TICKS: u32 = 4;

impl Parked {
    /// What waits for the id, oldest first: its last connection's unwritten frames, then
    /// its queue's. The queue is closed: pushes in flight at the close land in a moment,
    /// and this takes what is there (as a shutdown does); later ones were refused.
    fn into_unsent(self, id: usize) -> Vec<Envelope> {
        let mut backlog = crate::transport::connection::WriteBacklog::new(Framing::Raw);
        while self.queue.pop_into(&mut backlog) {}
        let mut unsent = self.unsent;
        unsent.extend(backlog.into_unsent());
        envelopes(id, unsent)
    }
}

/// Payloads of connection `id` as envelopes.
fn envelopes(id: usize, payloads: Vec<Vec<u8>>) -> Vec<Envelope> {
    payloads
        .into_iter()
        .map(|payload| Envelope::new(id, payload))
        .collect()
}

impl Reactor {
    /// Runs until shut down; returns what the connections had not written then.
    fn run(&mut self) -> Vec<Disconnect> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let mut state = self.state.take().expect("the reactor has its state");
            if !state.running {
                self.state = Some(state);
                break;
            }
            let timeout = match state.has_work() {
                true => Some(Duration::ZERO),
                false => state.prepare_to_sleep(&self.doorbell),
            };
            let timeout = match (timeout, &state.idle) {
                (None, Some(idle)) => Some(idle.next.saturating_duration_since(Instant::now())),
                (timeout, _) => timeout,
            };
            // Sleeping with nothing to do: the state waits on the desk for a sender.
            let lent = timeout != Some(Duration::ZERO);
            match lent {
                true => self.desk.lend(state),
                false => self.state = Some(state),
            }
            let polled = self.poll.poll(&mut events, timeout);
            self.doorbell.woke();
            if let Err(err) = polled {
                if err.kind() != io::ErrorKind::Interrupted {
                    // The poll itself is broken: nothing more can be done for any
                    // connection. Stop; receivers see the stream end.
                    self.state = self
                        .state
                        .take()
                        .or_else(|| self.wait_for_state(&mut events));
                    return Vec::new();
                }
            }
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.missed.push((event.token(), readable, writable));
            }
            if lent {
                match self.desk.reclaim() {
                    Some(state) => self.state = Some(state),
                    None => {
                        let state = self.wait_for_state(&mut events);
                        self.state = state;
                    }
                }
            }
            let Some(state) = self.state.as_mut() else {
                return Vec::new();
            };
            for (token, readable, writable) in self.missed.drain(..) {
                if token != WAKER {
                    state.ready(token.0, readable, writable);
                }
            }
            state.turn(&self.doorbell);
            state.idle_tick();
        }
        match self.state.as_mut() {
            Some(state) => state.close_all(),
            None => Vec::new(),
        }
    }

    /// A sender has the state: sleeps until it gives it back (it rings), keeping the
    /// readiness met meanwhile. `None` only if the poll breaks.
    fn wait_for_state(&mut self, events: &mut Events) -> Option<Box<State>> {
        loop {
            self.doorbell.may_sleep();
            if let Some(state) = self.desk.reclaim() {
                self.doorbell.woke();
                return Some(state);
            }
            let polled = self.poll.poll(events, None);
            self.doorbell.woke();
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.missed.push((event.token(), readable, writable));
            }
            if let Some(state) = self.desk.reclaim() {
                return Some(state);
            }
            if let Err(err) = polled {
                if err.kind() != io::ErrorKind::Interrupted {
                    return None;
                }
            }
        }
    }
}

impl State {
    /// Puts a connection that reported readiness on the read or write list.
    fn ready(&mut self, id: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let both = conn.connection.events_wake_both();
        let (readable, writable) = (readable || both, writable || both);
        if readable {
            if !conn.readable {
                conn.connection.publish_readable(true);
            }
            conn.readable = true;
            if !conn.read_listed {
                conn.read_listed = true;
                self.read_list.push_back(id);
            }
        }
        if writable && conn.write_blocked {
            conn.write_blocked = false;
            if !conn.write_listed {
                conn.write_listed = true;
                self.write_list.push_back(id);
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.write_list.is_empty() || (!self.read_list.is_empty() && self.inlet.room() > 0)
    }

    /// Allows wakes, then looks once more for work that arrived meanwhile. Returns the
    /// poll timeout.
    fn prepare_to_sleep(&mut self, doorbell: &Doorbell) -> Option<Duration> {
        doorbell.may_sleep();
        if !self.read_list.is_empty() && !self.inlet.wait_for_room() {
            return Some(Duration::ZERO);
        }
        if doorbell.has_ready() || !self.commands.is_empty() {
            return Some(Duration::ZERO);
        }
        None
    }

    fn turn(&mut self, doorbell: &Doorbell) {
        // Take the ready ids before the commands: a send to a new connection follows its
        // `Add` command, so every id taken here has its connection added below.
        let mut ready = Vec::new();
        while let Some(id) = doorbell.pop_ready() {
            ready.push(id);
        }
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
        }
        for id in ready {
            match self.conns.get_mut(&id) {
                Some(conn) if conn.closing.is_some() => self.progress_closing(id),
                Some(conn) if !conn.write_listed => {
                    conn.write_listed = true;
                    self.write_list.push_back(id);
                }
                _ => {}
            }
        }
        for _ in 0..self.write_list.len() {
            let id = self.write_list.pop_front().expect("counted");
            self.flush(id);
        }
        self.read_and_deliver();
        // Once a turn, not once a frame: an armed consumer takes in batches.
        if std::mem::take(&mut self.pushed) && self.inlet.take_armed() {
            self.notify();
        }
    }

    fn notify(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add {
                id,
                connection,
                queue,
                slot,
            } => self.insert(id, *connection, queue, slot, false),
            Command::Reserve { id, queue, slot } => {
                let unsent = Vec::new();
                self.parked.insert(
                    id,
                    Parked {
                        queue,
                        slot,
                        unsent,
                    },
                );
            }
            Command::Attach {
                id,
                mut connection,
                redial,
            } => {
                // Not parked: abandoned meanwhile; the connection closes as it drops.
                if let Some(parked) = self.parked.remove(&id) {
                    connection.adopt_counters(parked.slot.counters().clone());
                    for payload in parked.unsent {
                        connection.backlog.push(payload);
                    }
                    self.insert(id, *connection, parked.queue, parked.slot, redial);
                }
            }
            Command::Abandon { id, reason } => match self.conns.get_mut(&id) {
                Some(conn) => conn.redial = false,
                None => self.unpark(id, reason),
            },
            Command::End { id, reply } => self.end(id, reply),
            Command::Remove { id, reply } => match self.conns.get(&id) {
                Some(conn) if conn.closing.is_none() => self.begin_close(id, Finish::Remove(reply)),
                _ => {
                    if self.parked.contains_key(&id) {
                        let why = io::Error::new(
                            io::ErrorKind::NotConnected,
                            "removed while waiting for a connection",
                        );
                        self.unpark(id, DisconnectReason::Io(why));
                    }
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                    self.notify();
                }
            },
            Command::Shutdown => self.running = false,
        }
    }

    /// A connection joins under `id`.
    fn insert(
        &mut self,
        id: usize,
        mut connection: Connection,
        queue: Arc<OutgoingQueue>,
        slot: Arc<Slot>,
        redial: bool,
    ) {
        connection.count_into(Some(self.totals.clone()));
        connection.publish_readable(true);
        slot.connected();
        let mut conn = Conn {
            connection,
            queue,
            slot,
            redial,
            ending: None,
            finished: false,
            heard: true,
            silent: 0,
            // Read and write at once: the stream may hold bytes already, and the
            // connection may bring frames read or unwritten in an earlier mesh.
            readable: true,
            read_listed: true,
            write_listed: true,
            write_blocked: false,
            closing: None,
        };
        let registered = self.registry.register(
            conn.connection.source(),
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        );
        self.conns.insert(id, conn);
        self.read_list.push_back(id);
        self.write_list.push_back(id);
        if let Err(err) = registered {
            self.begin_close(id, Finish::Disconnect(DisconnectReason::Io(err)));
        }
    }

    /// A dialled id without a connection leaves: its notice hands back what it had queued.
    fn unpark(&mut self, id: usize, reason: DisconnectReason) {
        let Some(parked) = self.parked.remove(&id) else {
            return;
        };
        parked.queue.close();
        if parked.queue.take_room_wanted() {
            self.notify();
        }
        parked.slot.set_phase(Phase::Closed);
        let unsent = parked.into_unsent(id);
        self.inlet.push_notice(Disconnect::left(id, reason, unsent));
        self.pushed = true;
        self.notify();
    }

    /// Starts an `end`: refuses further sends, and closes the write side once what was
    /// queued is written ([`flush`](Self::flush) finishes it).
    fn end(&mut self, id: usize, reply: Sender<Ended>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            let ended = match self.parked.contains_key(&id) {
                true => {
                    let why = io::Error::new(
                        io::ErrorKind::NotConnected,
                        "ended while waiting for a connection",
                    );
                    self.unpark(id, DisconnectReason::Io(why));
                    Ended::Disconnected
                }
                false => Ended::NotFound,
            };
            let _ = reply.send(ended);
            return self.notify();
        };
        if conn.closing.is_some() || conn.ending.is_some() || conn.finished {
            let ended = match conn.closing {
                Some(Finish::Remove(_)) => Ended::NotFound,
                Some(Finish::Disconnect(_)) => Ended::Disconnected,
                // A second end: the first one's answer says how it went.
                None => Ended::Finished,
            };
            let _ = reply.send(ended);
            return self.notify();
        }
        conn.redial = false;
        conn.ending = Some(reply);
        conn.slot.set_phase(Phase::Ending);
        conn.queue.close();
        let wanted = conn.queue.take_room_wanted();
        if !conn.write_listed && !conn.write_blocked {
            conn.write_listed = true;
            self.write_list.push_back(id);
        }
        if wanted {
            // Senders waiting for room learn that the connection takes no more.
            self.notify();
        }
    }

    /// Every idle tick: ends the connections from which nothing was read for
    /// [`SILENT_TICKS`] ticks in a row.
    fn idle_tick(&mut self) {
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now < idle.next {
            return;
        }
        idle.next = now + idle.tick;
        let mut silent = Vec::new();
        for (&id, conn) in self.conns.iter_mut() {
            if conn.closing.is_some() {
                continue;
            }
            match std::mem::take(&mut conn.heard) {
                true => conn.silent = 0,
                false => {
                    conn.silent += 1;
                    if conn.silent >= SILENT_TICKS {
                        silent.push(id);
                    }
                }
            }
        }
        for id in silent {
            self.begin_close(id, Finish::Disconnect(DisconnectReason::Timeout));
        }
    }

    /// Writes a connection's queued frames until it would block, runs out of frames, or has
    /// had its budget for this turn.
    fn flush(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.write_listed = false;
        if conn.closing.is_some() || conn.write_blocked || conn.finished {
            return;
        }
        let mut written = 0;
        loop {
            let backlog = &mut conn.connection.backlog;
            let mut popped = false;
            while backlog.len() < BACKLOG_FRAMES
                && backlog.bytes() < BACKLOG_BYTES
                && conn.queue.pop_into(backlog)
            {
                popped = true;
            }
            if popped && conn.queue.take_room_wanted_at_low_water() {
                if let Some(notify) = &self.notify {
                    notify();
                }
            }
            if backlog.is_empty() {
                if conn.queue.unschedule() {
                    continue;
                }
                // Bytes the stream holds of its own (TLS records of frames it took) must
                // go out though no frame is left: on the next writable event if the
                // socket is full now.
                let flushed = match conn.connection.flush_output() {
                    Ok(true) => true,
                    Ok(false) => {
                        conn.write_blocked = true;
                        false
                    }
                    Err(err) => {
                        return self
                            .begin_close(id, Finish::Disconnect(DisconnectReason::from_io(err)))
                    }
                };
                conn.connection.publish_waiting();
                // An end finishes once everything accepted is written: a push that
                // reserved its place before the close lands later and schedules the queue
                // again.
                if flushed && conn.ending.is_some() && conn.queue.is_settled() {
                    let finished = match conn.connection.source().finish_writing() {
                        // The connection had ended already (the peer closed, and its side
                        // is gone): nothing more can be written, and everything was. How it
                        // ended is for the read side to tell.
                        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(true),
                        finished => finished,
                    };
                    match finished {
                        Ok(true) => {
                            conn.finished = true;
                            let reply = conn.ending.take().expect("ending");
                            let _ = reply.send(Ended::Finished);
                            self.notify();
                        }
                        Ok(false) => conn.write_blocked = true,
                        Err(err) => {
                            self.begin_close(id, Finish::Disconnect(DisconnectReason::from_io(err)))
                        }
                    }
                }
                return;
            }
            match conn.connection.write_backlog() {
                Ok(0) => {
                    let err = io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes");
                    return self.begin_close(id, Finish::Disconnect(DisconnectReason::Io(err)));
                }
                Ok(n) => {
                    written += n;
                    if written >= WRITE_BUDGET {
                        conn.write_listed = true;
                        self.write_list.push_back(id);
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    conn.write_blocked = true;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return self.begin_close(id, Finish::Disconnect(DisconnectReason::from_io(err)))
                }
            }
        }
    }

    /// A sender that holds the state (from the desk) sends `frames` whole frames in
    /// `wire`, from its own buffer, to connection `id`: written at once if the connection
    /// is idle (nothing queued or waiting to be written, its socket not full), whatever the
    /// socket does not take copied into the backlog and written as the reactor would.
    /// [`Direct::Queue`] if the connection is not idle (or not added yet, or not raw-framed):
    /// queue the frames,
    /// then [`flush_owned`](Self::flush_owned). Refused as a push would be (`Full`,
    /// `Closed`).
    pub(crate) fn send_direct(
        &mut self,
        id: usize,
        queue: &OutgoingQueue,
        wire: Wire<'_>,
    ) -> Result<Direct, PushError<()>> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(Direct::Queue);
        };
        // Only raw frames are written as the sender encoded them; a connection of another
        // framing makes its own headers in its backlog.
        let idle = conn.closing.is_none()
            && conn.ending.is_none()
            && !conn.finished
            && conn.connection.framing() == Framing::Raw
            && !conn.write_blocked
            && conn.connection.backlog.is_empty()
            && queue.is_idle();
        if !idle {
            return Ok(Direct::Queue);
        }
        let frames = wire.frames();
        queue.reserve(frames)?;
        let written = loop {
            match wire.write_to(&mut conn.connection) {
                Ok(n) => break Ok(n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break Ok(0),
                Err(err) => break Err(err),
            }
        };
        // Written, or in the backlog: no longer the queue's.
        queue.release(frames);
        match written {
            Ok(n) if n == wire.len() => {
                conn.connection.wrote_directly(n, frames);
                if conn.connection.has_pending_output() {
                    // The stream took it all but holds records the socket did not.
                    self.flush(id);
                }
            }
            Ok(n) => {
                let (rest, skip) = wire.rest_after(n);
                conn.connection.wrote_directly(n, frames - rest.frames());
                conn.connection.backlog.push_resumed(rest, skip);
                // On until the socket is full, so that its writable edge comes.
                self.flush(id);
            }
            Err(err) => {
                // Unwritten: handed back in the notice, with the rest.
                let (all, _) = wire.rest_after(0);
                conn.connection.backlog.push_chunk(all);
                self.begin_close(id, Finish::Disconnect(DisconnectReason::from_io(err)));
            }
        }
        Ok(Direct::Sent)
    }

    /// A sender that holds the state writes connection `id`'s queue as the reactor would.
    /// False if the connection is not added yet: the reactor must be scheduled for it.
    pub(crate) fn flush_owned(&mut self, id: usize) -> bool {
        match self.conns.get(&id) {
            Some(conn) if conn.closing.is_some() => {
                self.progress_closing(id);
                true
            }
            Some(_) => {
                self.flush(id);
                true
            }
            None => false,
        }
    }

    /// Serves the read list round robin: each visit delivers up to a quantum of the
    /// connection's pending frames and, once they are all delivered, reads it once. Stops
    /// when the incoming stream is full, the list is empty, or the turn has read its bytes.
    fn read_and_deliver(&mut self) {
        let mut read = 0;
        while read < TURN_BYTES {
            if self.inlet.room() == 0 {
                return;
            }
            let Some(id) = self.read_list.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.read_listed = false;
            // The quantum keeps the others' turn; alone, a connection takes what fits.
            let mut quantum = match self.read_list.is_empty() {
                true => usize::MAX,
                false => QUANTUM,
            };
            quantum -= deliver(&self.inlet, &mut self.pushed, id, conn, quantum);
            let mut ended = None;
            if conn.connection.pending_frames() == 0 && conn.readable && conn.closing.is_none() {
                match conn.connection.read_once(&mut self.scratch) {
                    Step::Read(n) => {
                        read += n;
                        conn.heard = true;
                        deliver(&self.inlet, &mut self.pushed, id, conn, quantum);
                    }
                    Step::WouldBlock => {
                        conn.readable = false;
                        conn.connection.publish_readable(false);
                    }
                    Step::End(reason) => {
                        conn.readable = false;
                        conn.connection.publish_readable(false);
                        ended = Some(reason);
                    }
                }
            }
            conn.connection.publish_waiting();
            if conn.wants_reading() {
                conn.read_listed = true;
                self.read_list.push_back(id);
            }
            if conn.connection.has_pending_output() && !conn.write_listed && !conn.write_blocked {
                // What reading made the stream send (a TLS alert, a key update) and the
                // socket did not take: written on the next turn, or at the writable event.
                conn.write_listed = true;
                self.write_list.push_back(id);
            }
            match ended {
                Some(reason) => self.begin_close(id, Finish::Disconnect(reason)),
                None if conn.closing.is_some() && conn.connection.pending_frames() == 0 => {
                    self.progress_closing(id)
                }
                None => {}
            }
        }
    }

    /// Stops polling a connection and closes its queue; it ends once the queue settles
    /// (and, for a disconnect, once its pending frames are delivered).
    fn begin_close(&mut self, id: usize, finish: Finish) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let _ = self.registry.deregister(conn.connection.source());
        if let Some(reply) = conn.ending.take() {
            let _ = reply.send(match finish {
                Finish::Remove(_) => Ended::NotFound,
                Finish::Disconnect(_) => Ended::Disconnected,
            });
        }
        let redial = conn.redial && matches!(finish, Finish::Disconnect(_));
        conn.redial = redial;
        if redial {
            // The queue stays open for the next connection.
            conn.closing = Some(finish);
            return self.progress_closing(id);
        }
        conn.queue.close();
        if conn.queue.take_room_wanted() {
            // A sender waiting for room must now learn that the connection is gone.
            if let Some(notify) = &self.notify {
                notify();
            }
        }
        if matches!(finish, Finish::Remove(_)) {
            // Whatever goes out now need not travel with the connection.
            let _ = drain_nonblocking(conn);
        }
        conn.closing = Some(finish);
        self.progress_closing(id);
    }

    /// Takes a closing connection's last frames; ends it if no push is still in flight
    /// (otherwise that push schedules the id again and we come back here) and, for a
    /// disconnect, once every frame read from it has been delivered.
    fn progress_closing(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.redial {
            return self.park(id);
        }
        loop {
            while conn.queue.pop_into(&mut conn.connection.backlog) {}
            if conn.queue.is_settled() {
                break;
            }
            if !conn.queue.unschedule() {
                return;
            }
        }
        let delivered = conn.connection.pending_frames() == 0;
        if matches!(conn.closing, Some(Finish::Disconnect(_))) && !delivered {
            // The read list delivers the rest and comes back here.
            return;
        }
        let conn = self.conns.remove(&id).expect("present above");
        let Conn {
            mut connection,
            closing,
            slot,
            ..
        } = conn;
        connection.count_into(None);
        slot.set_phase(Phase::Closed);
        match closing.expect("closing") {
            Finish::Remove(reply) => {
                let _ = reply.send(Ok(connection));
                self.notify();
            }
            Finish::Disconnect(reason) => {
                let unacknowledged = connection.unacknowledged();
                let unsent = envelopes(id, connection.backlog.into_unsent());
                self.inlet.push_notice(Disconnect {
                    unacknowledged,
                    ..Disconnect::left(id, reason, unsent)
                });
                self.pushed = true;
                // Every consumer must hear of it, armed or not (senders waiting for room
                // on it, listeners of disconnects).
                self.notify();
            }
        }
    }

    /// A dialled id's connection ended: once every frame read from it is delivered, the id
    /// waits for its next connection, keeping what was not written, and its notice says
    /// so.
    fn park(&mut self, id: usize) {
        let conn = self.conns.get(&id).expect("present");
        if conn.connection.pending_frames() != 0 {
            // The read list delivers the rest and comes back here.
            return;
        }
        let Conn {
            mut connection,
            queue,
            slot,
            closing,
            ..
        } = self.conns.remove(&id).expect("present");
        connection.count_into(None);
        slot.set_phase(Phase::Connecting);
        let unacknowledged = connection.unacknowledged();
        let unsent = std::mem::take(&mut connection.backlog).into_unsent();
        self.parked.insert(
            id,
            Parked {
                queue,
                slot,
                unsent,
            },
        );
        let Some(Finish::Disconnect(reason)) = closing else {
            unreachable!("only a disconnect parks")
        };
        self.inlet.push_notice(Disconnect {
            id,
            reason,
            unsent: Vec::new(),
            parked: true,
            unacknowledged,
        });
        self.pushed = true;
        self.notify();
    }

    /// At shutdown: writes what each connection can take without blocking, then closes it;
    /// a removal under way gets its connection. Returns, as notices, every frame accepted
    /// and not written (reason `Shutdown`), and the notices of connections that were
    /// ending (their frames read but not delivered are dropped with the stream's end).
    fn close_all(&mut self) -> Vec<Disconnect> {
        let mut left = Vec::new();
        for (id, mut conn) in self.conns.drain() {
            conn.queue.close();
            let reason = match conn.closing.take() {
                None => {
                    let _ = drain_nonblocking(&mut conn);
                    DisconnectReason::Shutdown
                }
                Some(Finish::Remove(reply)) => {
                    let _ = reply.send(Ok(conn.connection));
                    continue;
                }
                Some(Finish::Disconnect(reason)) => reason,
            };
            // What senders queued and the socket did not take. (A sender on another
            // thread still queuing at this very moment may land a frame after this look.)
            while conn.queue.pop_into(&mut conn.connection.backlog) {}
            let unsent = envelopes(id, conn.connection.backlog.into_unsent());
            if let Some(reply) = conn.ending.take() {
                // Everything written: as good as finished (the socket closes now). Else
                // the notice below hands back the rest.
                let _ = reply.send(match unsent.is_empty() {
                    true => Ended::Finished,
                    false => Ended::Disconnected,
                });
            }
            if !unsent.is_empty() || !matches!(reason, DisconnectReason::Shutdown) {
                left.push(Disconnect::left(id, reason, unsent));
            }
        }
        for (id, parked) in self.parked.drain() {
            parked.queue.close();
            let unsent = parked.into_unsent(id);
            left.push(Disconnect::left(id, DisconnectReason::Shutdown, unsent));
        }
        left.sort_by_key(|notice| notice.id);
        left
    }
}

impl Drop for Reactor {
    /// Runs however the thread ends, panics included: refuse further sends and adds, and
    /// answer every command still queued. (If a sender has the state, it is on the desk
    /// by the time the desk is dropped, and goes with it: its queues were closed here.)
    fn drop(&mut self) {
        self.doorbell.stop();
        // Off the desk if it is there (a broken poll may have stopped the reactor while a
        // sender had it: that sender leaves it on the desk, and its queues were not closed).
        let state = self.state.take().or_else(|| self.desk.reclaim());
        if let Some(mut state) = state {
            state.stop();
        }
    }
}

impl State {
    /// The reactor ends: closes every queue, answers the commands still queued, ends the
    /// incoming stream and tells the consumer.
    fn stop(&mut self) {
        for conn in self.conns.values() {
            conn.queue.close();
        }
        for parked in self.parked.values() {
            parked.queue.close();
        }
        while let Ok(command) = self.commands.try_recv() {
            match command {
                // Joined too late: it closes with the others.
                Command::Add { queue, .. } | Command::Reserve { queue, .. } => queue.close(),
                Command::Remove { id, reply } => {
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                }
                Command::End { reply, .. } => {
                    let _ = reply.send(Ended::NotFound);
                }
                Command::Attach { .. } | Command::Abandon { .. } | Command::Shutdown => {}
            }
        }
        // Receivers take what is queued, then learn that nothing more will come; consumers
        // waiting in an event loop must hear of it.
        self.inlet.close();
        self.notify();
    }
}

/// Pushes up to `max` of a connection's pending frames, as many as the incoming stream has
/// room for. Returns how many.
fn deliver(inlet: &Inlet, pushed: &mut bool, id: usize, conn: &mut Conn, max: usize) -> usize {
    let mut delivered = 0;
    while delivered < max {
        let room = inlet.room().min(max - delivered);
        if room == 0 {
            break;
        }
        let Some(frames) = conn.connection.take_pending(room) else {
            break;
        };
        delivered += frames.len();
        inlet.push(Delivery { id, frames });
        *pushed = true;
    }
    delivered
}

/// Writes queued frames until the socket would block or the queue is empty.
fn drain_nonblocking(conn: &mut Conn) -> io::Result<()> {
    loop {
        while conn.connection.backlog.len() < BACKLOG_FRAMES
            && conn.queue.pop_into(&mut conn.connection.backlog)
        {}
        if conn.connection.backlog.is_empty() {
            // And the stream's own bytes (TLS records), as far as the socket takes them.
            return conn.connection.flush_output().map(drop);
        }
        match conn.connection.write_backlog() {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
