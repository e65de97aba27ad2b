//! The reactor: one background thread that owns every connection of a mesh and does all of
//! their I/O.
//!
//! # Rules
//!
//! - **One owner.** A connection that joins the mesh is handed to the reactor by value (a
//!   command), with its framing state; from then on only this thread reads or writes its
//!   socket, until it hands the connection back by value ([`Mesh::remove`]) or closes it.
//!   Senders only queue ([`OutgoingQueue`]); receivers only take from the incoming stream.
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
//!   uncopied. Frames are taken from a queue only while its connection's backlog is small,
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
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashMap;

use crate::doorbell::Doorbell;
use crate::envelope::Envelope;
use crate::error::RemoveError;
use crate::incoming::{Delivery, Disconnect, Inlet};
use crate::outgoing::OutgoingQueue;
use crate::transport::connection::{Step, FRAMES_PER_WRITE, READ_CHUNK};
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
    },
    Remove {
        id: usize,
        reply: Sender<Result<Connection, RemoveError>>,
    },
    Shutdown,
}

/// What a mesh's handles keep of its reactor.
pub(crate) struct ReactorHandle {
    pub(crate) doorbell: Arc<Doorbell>,
    pub(crate) commands: Sender<Command>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Starts a reactor that pushes into `inlet` and calls `notify` (if any).
pub(crate) fn start(inlet: Inlet, notify: Option<Notify>) -> io::Result<ReactorHandle> {
    let poll = Poll::new()?;
    let doorbell = Arc::new(Doorbell::new(poll.registry(), WAKER)?);
    let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
    let reactor = Reactor {
        poll,
        doorbell: doorbell.clone(),
        commands: commands_rx,
        inlet,
        notify,
        conns: FxHashMap::default(),
        read_list: VecDeque::new(),
        write_list: VecDeque::new(),
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        running: true,
        pushed: false,
    };
    let thread = std::thread::Builder::new()
        .name("wiremesh-reactor".into())
        .spawn(move || {
            let mut reactor = reactor;
            reactor.run();
        })?;
    Ok(ReactorHandle {
        doorbell,
        commands: commands_tx,
        thread,
    })
}

/// How a closing connection ends, once its queue has settled.
enum Finish {
    Disconnect(DisconnectReason),
    Remove(Sender<Result<Connection, RemoveError>>),
}

struct Conn {
    connection: Connection,
    queue: Arc<OutgoingQueue>,
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

struct Reactor {
    poll: Poll,
    doorbell: Arc<Doorbell>,
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
}

impl Reactor {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS);
        while self.running {
            let timeout = match self.has_work() {
                true => Some(Duration::ZERO),
                false => self.prepare_to_sleep(),
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    // The poll itself is broken: nothing more can be done for any
                    // connection. Stop; receivers see the stream end.
                    return;
                }
            }
            self.doorbell.woke();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let id = event.token().0;
                let Some(conn) = self.conns.get_mut(&id) else {
                    continue;
                };
                if conn.closing.is_some() {
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.readable = true;
                    if !conn.read_listed {
                        conn.read_listed = true;
                        self.read_list.push_back(id);
                    }
                }
                if (event.is_writable() || event.is_write_closed() || event.is_error())
                    && conn.write_blocked
                {
                    conn.write_blocked = false;
                    if !conn.write_listed {
                        conn.write_listed = true;
                        self.write_list.push_back(id);
                    }
                }
            }
            self.turn();
        }
        self.close_all();
    }

    fn has_work(&self) -> bool {
        !self.write_list.is_empty() || (!self.read_list.is_empty() && self.inlet.room() > 0)
    }

    /// Allows wakes, then looks once more for work that arrived meanwhile. Returns the
    /// poll timeout.
    fn prepare_to_sleep(&mut self) -> Option<Duration> {
        self.doorbell.may_sleep();
        if !self.read_list.is_empty() && !self.inlet.wait_for_room() {
            return Some(Duration::ZERO);
        }
        if self.doorbell.has_ready() || !self.commands.is_empty() {
            return Some(Duration::ZERO);
        }
        None
    }

    fn turn(&mut self) {
        // Take the ready ids before the commands: a send to a new connection follows its
        // `Add` command, so every id taken here has its connection added below.
        let mut ready = Vec::new();
        while let Some(id) = self.doorbell.pop_ready() {
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
            } => {
                let mut conn = Conn {
                    connection: *connection,
                    queue,
                    // Read and write at once: the stream may hold bytes already, and the
                    // connection may bring frames read or unwritten in an earlier mesh.
                    readable: true,
                    read_listed: true,
                    write_listed: true,
                    write_blocked: false,
                    closing: None,
                };
                let registered = self.poll.registry().register(
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
            Command::Remove { id, reply } => match self.conns.get(&id) {
                Some(conn) if conn.closing.is_none() => self.begin_close(id, Finish::Remove(reply)),
                _ => {
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                    self.notify();
                }
            },
            Command::Shutdown => self.running = false,
        }
    }

    /// Writes a connection's queued frames until it would block, runs out of frames, or has
    /// had its budget for this turn.
    fn flush(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.write_listed = false;
        if conn.closing.is_some() || conn.write_blocked {
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
                    return self.begin_close(id, Finish::Disconnect(DisconnectReason::Io(err)))
                }
            }
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
                        deliver(&self.inlet, &mut self.pushed, id, conn, quantum);
                    }
                    Step::WouldBlock => conn.readable = false,
                    Step::End(reason) => {
                        conn.readable = false;
                        ended = Some(reason);
                    }
                }
            }
            if conn.wants_reading() {
                conn.read_listed = true;
                self.read_list.push_back(id);
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
        let _ = self.poll.registry().deregister(conn.connection.source());
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
            connection,
            closing,
            ..
        } = conn;
        match closing.expect("closing") {
            Finish::Remove(reply) => {
                let _ = reply.send(Ok(connection));
                self.notify();
            }
            Finish::Disconnect(reason) => {
                let unsent = connection
                    .backlog
                    .into_unsent()
                    .into_iter()
                    .map(|payload| Envelope::new(id, payload))
                    .collect();
                self.inlet.push_notice(Disconnect { id, reason, unsent });
                self.pushed = true;
                // Every consumer must hear of it, armed or not (senders waiting for room
                // on it, listeners of disconnects).
                self.notify();
            }
        }
    }

    /// At shutdown: writes what each connection can take without blocking, then closes it;
    /// a removal under way gets its connection.
    fn close_all(&mut self) {
        for (_, mut conn) in self.conns.drain() {
            conn.queue.close();
            match conn.closing.take() {
                None => {
                    let _ = drain_nonblocking(&mut conn);
                }
                Some(Finish::Remove(reply)) => {
                    let _ = reply.send(Ok(conn.connection));
                }
                Some(Finish::Disconnect(_)) => {}
            }
        }
    }
}

impl Drop for Reactor {
    /// Runs however the thread ends, panics included: refuse further sends and adds, and
    /// answer every command still queued.
    fn drop(&mut self) {
        self.doorbell.stop();
        for conn in self.conns.values() {
            conn.queue.close();
        }
        while let Ok(command) = self.commands.try_recv() {
            match command {
                // Joined too late: it closes with the others.
                Command::Add { queue, .. } => queue.close(),
                Command::Remove { id, reply } => {
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                }
                Command::Shutdown => {}
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
            return Ok(());
        }
        match conn.connection.write_backlog() {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
