//! The reactor: one background thread that reads and writes every connection of a mesh.
//!
//! # Rules
//!
//! - **No waiting.** The reactor talks to the rest of the mesh through crossbeam channels
//!   (commands in, disconnect notices out), lock-free queues (each connection's
//!   [`OutgoingQueue`], the ready list), atomics, and the incoming queue, whose one lock is
//!   held only to move items in or out. It never waits on a sender or a receiver.
//! - **Drain until `WouldBlock`, fairly.** Sockets are registered edge-triggered for reading
//!   and writing once, when added. A connection that reports readiness is put on the read
//!   (or write) list and serviced until `WouldBlock`; one that still has work after its
//!   budget for this turn ([`READ_BUDGET`], [`WRITE_BUDGET`]) goes back on the list, and the
//!   next poll does not sleep. So one fast peer cannot starve the others, and nothing ever
//!   sleeps or blocks inside the loop: a partial frame stays in its connection's decoder.
//! - **Find work without scanning.** A sender that makes a connection's queue non-empty puts
//!   its id on the ready list once and wakes the reactor only if it may be asleep (the
//!   `wake_pending` flag is cleared just before the reactor polls with no timeout, and set
//!   again when it wakes), so a busy reactor costs senders no system call.
//! - **Coalesce writes.** Up to [`FRAMES_PER_WRITE`] queued frames leave in one vectored
//!   write, payloads uncopied. Frames are taken from a queue only while its connection's
//!   backlog is small, so a peer that does not read fills its bounded queue and senders get
//!   `Full`: memory stays bounded.
//! - **An idle connection may be written by its sender.** When a connection's queue is
//!   unscheduled and empty (and the reactor asleep, or the batch large), a sender may take
//!   the queue's flag and write to the socket itself ([`OutgoingQueue::write_direct`]); the
//!   reactor writes only connections it has scheduled, so the socket never has two
//!   writers. What the socket does not take comes back with the flag, ahead of the queue.
//!   A closing connection stays open until such a write is over (the queue is not settled
//!   meanwhile).
//! - **A connection's reads may be lent.** A consumer in an event loop may borrow the reads
//!   of the connection it converses with ([`crate::reading`]): the reactor takes read
//!   interest off it and does not read it until it is given back (or the reactor takes it
//!   back, to close it). Every read, the reactor's and a borrower's, holds the connection's
//!   lease lock (uncontended unless a lend or give-back is under way), so frames keep their
//!   order whoever reads them.
//! - **Small frames leave in runs.** The whole small frames of one read go to the incoming
//!   queue as one [`Delivery`]: one allocation and one copy for all of them, not one per
//!   frame. A payload of [`RUN_PAYLOAD_LIMIT`] bytes or more leaves in a buffer of its own,
//!   uncopied (large ones were read straight into it).
//! - **Pause reading when incoming is full.** The frames of a read that do not fit the
//!   incoming queue are held (at most one read's worth), and no connection is read until
//!   the consumer has made room; the kernel buffers then fill and TCP pushes back on the
//!   peers. A consumer that takes an envelope while reading is paused wakes the reactor, once.
//!   Nothing is dropped and nothing spins.
//! - **Every connection ends with an answer.** A connection the reactor removes by itself
//!   (end of stream, reset, protocol error) becomes a [`Disconnect`] notice with its reason
//!   and every frame it had not sent. Notices are sent after the envelopes read before them.
//!   A connection removed by [`Mesh::remove`](crate::Mesh::remove) leaves with its unwritten
//!   frames and its half-read frame.
//! - **Notify an event loop rarely.** A consumer that cannot block (the Node binding) arms
//!   the notify hook when it finds the incoming queue empty; the reactor calls it at most
//!   once a turn, and only if armed. Disconnects, room for a sender that waits, and the
//!   reactor stopping call it too. The hook never calls back into the mesh.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::SegQueue;
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use crate::codec::FrameDecoder;
use crate::envelope::Envelope;
use crate::error::{DisconnectReason, RemoveError};
use crate::incoming::{Delivery, IncomingQueue};
use crate::mesh::Disconnect;
use crate::outgoing::{OutgoingQueue, RawSocket};
use crate::reading::{read_once, ReadLease, Step, READ_CHUNK};
use crate::transport::connection::FRAMES_PER_WRITE;
use crate::transport::Connection;

const WAKER: Token = Token(usize::MAX);
/// Bytes read from one connection before the others get a turn.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Bytes written to one connection before the others get a turn.
const WRITE_BUDGET: usize = 1024 * 1024;
/// A connection's backlog is refilled from its queue only below these.
const BACKLOG_FRAMES: usize = FRAMES_PER_WRITE;
const BACKLOG_BYTES: usize = 256 * 1024;
const EVENTS: usize = 1024;

/// What the mesh handles and the reactor share.
pub(crate) struct Shared {
    /// Ids of connections whose queue a sender made non-empty.
    pub(crate) ready: SegQueue<usize>,
    waker: Waker,
    /// True while the reactor is awake or a wake is on its way.
    wake_pending: AtomicBool,
    /// True while the reactor holds envelopes that did not fit the incoming queue.
    read_paused: AtomicBool,
    /// Set by `shutdown`.
    pub(crate) shutdown: AtomicBool,
    /// Set when the reactor thread ends, for whatever reason.
    pub(crate) stopped: AtomicBool,
    /// Called, from the reactor thread, to wake a consumer that waits in an event loop
    /// rather than in a blocking call. See [`Shared::notify_if_armed`].
    notify: Option<Notify>,
    /// Set by a consumer that found the incoming queue empty and wants to be notified.
    pub(crate) recv_armed: AtomicBool,
    /// The reactor's poll, for a borrower of a connection's reads to take read interest off
    /// and put it back (see [`crate::reading`]; Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    registry: mio::Registry,
    /// True while the reactor holds frames that did not fit the incoming queue: no
    /// connection is lent meanwhile (its frames held here must go first).
    stalled_held: AtomicBool,
}

/// A callback that wakes an event-loop consumer (for example the Node binding). It is
/// called from the reactor thread: it must be quick and must not call back into the mesh.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

impl Shared {
    /// Wakes the reactor unless it is awake already or about to be.
    pub(crate) fn wake(&self) -> io::Result<()> {
        fence(SeqCst);
        if self.wake_pending.swap(true, SeqCst) {
            return Ok(());
        }
        self.waker.wake()
    }

    /// True while the reactor sleeps (or is about to) and a send would have to wake it.
    pub(crate) fn is_asleep(&self) -> bool {
        !self.wake_pending.load(SeqCst)
    }

    /// Called after an envelope is taken from the incoming queue.
    pub(crate) fn made_room(&self) {
        fence(SeqCst);
        if self.read_paused.load(SeqCst) && self.read_paused.swap(false, SeqCst) {
            // Failing to wake means the reactor is gone; receivers will see that.
            let _ = self.wake();
        }
    }

    /// Calls the notify hook if a consumer armed it (once per arming).
    pub(crate) fn notify_if_armed(&self) {
        if let Some(notify) = &self.notify {
            if self.recv_armed.load(SeqCst) && self.recv_armed.swap(false, SeqCst) {
                notify();
            }
        }
    }

    /// Calls the notify hook, if there is one: for events every consumer must see
    /// (disconnects, room for a waiting sender, the reactor stopping).
    pub(crate) fn notify(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }

    /// True while the reactor holds frames that did not fit the incoming queue.
    pub(crate) fn holds_stalled(&self) -> bool {
        self.stalled_held.load(SeqCst)
    }

    /// Polls connection `id`'s socket for reading and writing, or (`readable` false) for
    /// writing only. Called under the connection's lease lock, while it is not closing.
    #[cfg(unix)]
    pub(crate) fn set_read_interest(
        &self,
        socket: RawSocket,
        id: usize,
        readable: bool,
    ) -> io::Result<()> {
        let interest = match readable {
            true => Interest::READABLE | Interest::WRITABLE,
            false => Interest::WRITABLE,
        };
        self.registry
            .reregister(&mut mio::unix::SourceFd(&socket), Token(id), interest)
    }

    #[cfg(not(unix))]
    pub(crate) fn set_read_interest(&self, socket: RawSocket, _: usize, _: bool) -> io::Result<()> {
        match socket {}
    }
}

/// Requests from the mesh handles.
pub(crate) enum Command {
    Add {
        id: usize,
        connection: Connection,
        queue: Arc<OutgoingQueue>,
        lease: Arc<ReadLease>,
    },
    Remove {
        id: usize,
        reply: Sender<Result<Connection, RemoveError>>,
    },
    /// A lent read ended the connection (the reason is in its lease).
    ReadFailed {
        id: usize,
    },
    /// Read the connection (its reads were given back but its poll refused read interest).
    Read {
        id: usize,
    },
    Shutdown,
}

/// How a closing connection ends, once its queue has settled.
enum Finish {
    Disconnect(DisconnectReason),
    Remove(Sender<Result<Connection, RemoveError>>),
}

struct Conn {
    connection: Connection,
    queue: Arc<OutgoingQueue>,
    /// The read state (the connection's decoder is in it while it is in the mesh).
    lease: Arc<ReadLease>,
    read_listed: bool,
    write_listed: bool,
    /// The last write met `WouldBlock`: wait for a writable event.
    write_blocked: bool,
    /// Set once the connection is leaving; it is no longer polled.
    closing: Option<Finish>,
}

impl Conn {
    /// Puts the decoder back into the connection, which is leaving the mesh.
    fn take_back_decoder(&mut self) {
        let max = self.connection.max_frame_size();
        let mut state = self.lease.lock();
        self.connection.decoder =
            std::mem::replace(&mut state.side.decoder, FrameDecoder::new(max));
    }

    /// No borrower touches the socket from now on.
    fn mark_closing(&self) {
        let mut state = self.lease.lock();
        state.closing = true;
        state.lent = false;
    }
}

/// The channels a reactor is started with.
pub(crate) struct Channels {
    pub(crate) commands: Receiver<Command>,
    pub(crate) incoming: Arc<IncomingQueue>,
    pub(crate) disconnects: Sender<Disconnect>,
}

/// Creates the poll and the shared state; [`spawn`] starts the thread.
pub(crate) fn new_shared(notify: Option<Notify>) -> io::Result<(Poll, Arc<Shared>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let registry = poll.registry().try_clone()?;
    let shared = Arc::new(Shared {
        ready: SegQueue::new(),
        waker,
        wake_pending: AtomicBool::new(true),
        read_paused: AtomicBool::new(false),
        shutdown: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        notify,
        recv_armed: AtomicBool::new(false),
        registry,
        stalled_held: AtomicBool::new(false),
    });
    Ok((poll, shared))
}

/// Starts the reactor thread.
pub(crate) fn spawn(
    poll: Poll,
    shared: Arc<Shared>,
    channels: Channels,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wiremesh-reactor".into())
        .spawn(move || {
            let mut reactor = Reactor {
                poll,
                shared,
                commands: channels.commands,
                incoming: channels.incoming,
                disconnects: channels.disconnects,
                conns: FxHashMap::default(),
                read_list: VecDeque::new(),
                write_list: VecDeque::new(),
                ready: Vec::new(),
                stalled: VecDeque::new(),
                held_notices: Vec::new(),
                scratch: vec![0; READ_CHUNK].into_boxed_slice(),
                running: true,
            };
            reactor.run();
        })
}

struct Reactor {
    poll: Poll,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    incoming: Arc<IncomingQueue>,
    disconnects: Sender<Disconnect>,
    conns: FxHashMap<usize, Conn>,
    read_list: VecDeque<usize>,
    write_list: VecDeque<usize>,
    /// Ids taken from the shared ready list this turn.
    ready: Vec<usize>,
    /// Frames read that did not fit the incoming queue, oldest first.
    stalled: VecDeque<Delivery>,
    /// Notices that wait for the stalled envelopes to go first.
    held_notices: Vec<Disconnect>,
    scratch: Box<[u8]>,
    running: bool,
}

impl Reactor {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS);
        while self.running {
            let timeout = if self.has_work() {
                Some(Duration::ZERO)
            } else {
                self.prepare_to_sleep()
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    // The poll itself is broken: nothing more can be done for any
                    // connection. Stop; receivers see `Disconnected`.
                    return;
                }
            }
            self.shared.wake_pending.store(true, SeqCst);
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
                if (event.is_readable() || event.is_read_closed() || event.is_error())
                    && !conn.read_listed
                {
                    conn.read_listed = true;
                    self.read_list.push_back(id);
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
        !self.write_list.is_empty() || (self.stalled.is_empty() && !self.read_list.is_empty())
    }

    /// Allows wakes, then looks once more for work that arrived meanwhile. Returns the
    /// poll timeout.
    fn prepare_to_sleep(&mut self) -> Option<Duration> {
        self.shared.wake_pending.store(false, SeqCst);
        fence(SeqCst);
        if !self.stalled.is_empty() {
            self.shared.read_paused.store(true, SeqCst);
            fence(SeqCst);
            self.flush_stalled();
            if self.stalled.is_empty() {
                return Some(Duration::ZERO);
            }
        }
        if !self.shared.ready.is_empty() || !self.commands.is_empty() {
            return Some(Duration::ZERO);
        }
        None
    }

    fn turn(&mut self) {
        // Take the ready ids before the commands: a send to a new connection follows its
        // `Add` command, so every id taken here has its connection added below.
        while let Some(id) = self.shared.ready.pop() {
            self.ready.push(id);
        }
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
        }
        let mut ready = std::mem::take(&mut self.ready);
        for id in ready.drain(..) {
            match self.conns.get_mut(&id) {
                Some(conn) if conn.closing.is_some() => self.progress_closing(id),
                Some(conn) if !conn.write_listed => {
                    conn.write_listed = true;
                    self.write_list.push_back(id);
                }
                _ => {}
            }
        }
        self.ready = ready;

        for _ in 0..self.write_list.len() {
            let id = self.write_list.pop_front().expect("counted");
            self.flush(id);
        }
        self.flush_stalled();
        let mut turns = self.read_list.len();
        while turns > 0 && self.stalled.is_empty() {
            turns -= 1;
            let id = self.read_list.pop_front().expect("counted");
            self.read(id);
        }
        // Once a turn, not once an envelope: an armed consumer drains in batches.
        if !self.incoming.is_empty() {
            self.shared.notify_if_armed();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add {
                id,
                mut connection,
                queue,
                lease,
            } => {
                let max = connection.max_frame_size();
                let decoder = std::mem::replace(&mut connection.decoder, FrameDecoder::new(max));
                let mut conn = Conn {
                    connection,
                    queue,
                    lease,
                    read_listed: true,
                    write_listed: true,
                    write_blocked: false,
                    closing: None,
                };
                let registered = self.poll.registry().register(
                    &mut conn.connection.stream,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                );
                {
                    // Lendable from now on (not before: lending changes the registration).
                    let mut state = conn.lease.lock();
                    state.side.decoder = decoder;
                    state.registered = registered.is_ok();
                }
                self.conns.insert(id, conn);
                match registered {
                    // Read and write at once: the stream may hold bytes already, and the
                    // connection may bring unwritten frames from an earlier mesh.
                    Ok(()) => {
                        self.read_list.push_back(id);
                        self.write_list.push_back(id);
                    }
                    Err(err) => self.begin_close(id, Finish::Disconnect(DisconnectReason::Io(err))),
                }
            }
            Command::Remove { id, reply } => match self.conns.get(&id) {
                Some(conn) if conn.closing.is_none() => self.begin_close(id, Finish::Remove(reply)),
                _ => {
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                }
            },
            Command::ReadFailed { id } => {
                if let Some(conn) = self.conns.get(&id) {
                    let reason = conn.lease.lock().failed.take();
                    if let (None, Some(reason)) = (&conn.closing, reason) {
                        self.begin_close(id, Finish::Disconnect(reason));
                    }
                }
            }
            Command::Read { id } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if !conn.read_listed {
                        conn.read_listed = true;
                        self.read_list.push_back(id);
                    }
                }
            }
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
                self.shared.notify();
            }
            if backlog.is_empty() {
                if conn.queue.unschedule() {
                    continue;
                }
                return;
            }
            match backlog.write_to(&mut conn.connection.stream) {
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

    /// Reads a connection until it would block, has had its budget, or the incoming queue
    /// is full, and delivers the frames it completes. Not while its reads are lent.
    fn read(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.read_listed = false;
        if conn.closing.is_some() {
            return;
        }
        let mut state = conn.lease.lock();
        if state.lent || state.failed.is_some() {
            return;
        }
        let mut total = 0;
        let reason = loop {
            let stream = &mut conn.connection.stream;
            let (incoming, stalled) = (&self.incoming, &mut self.stalled);
            let mut deliver = |delivery| deliver(incoming, stalled, delivery);
            match read_once(id, &mut state.side, stream, &mut self.scratch, &mut deliver) {
                Step::Read { n, .. } => total += n,
                Step::WouldBlock => return,
                Step::End(reason) => break reason,
            }
            if !self.stalled.is_empty() {
                // No lending until these are in (under the lock: a borrower sees it).
                self.shared.stalled_held.store(true, SeqCst);
                // Still readable, most likely: first in line once there is room.
                conn.read_listed = true;
                self.read_list.push_front(id);
                return;
            }
            if total >= READ_BUDGET {
                conn.read_listed = true;
                self.read_list.push_back(id);
                return;
            }
        };
        drop(state);
        self.begin_close(id, Finish::Disconnect(reason));
    }

    /// Moves stalled envelopes into the incoming queue while it has room; once they are all
    /// in, releases the notices that waited for them.
    fn flush_stalled(&mut self) {
        if self.stalled.is_empty() && self.held_notices.is_empty() {
            return;
        }
        if self.deliver_stalled() {
            // Also called just before sleeping: an armed consumer must hear of these.
            self.shared.notify_if_armed();
        }
    }

    /// Returns true if any frame went in.
    fn deliver_stalled(&mut self) -> bool {
        let mut moved = false;
        while let Some(delivery) = self.stalled.pop_front() {
            let frames = delivery.len();
            if let Err(rest) = self.incoming.push(delivery) {
                moved |= rest.len() < frames;
                self.stalled.push_front(rest);
                return moved;
            }
            moved = true;
        }
        self.shared.stalled_held.store(false, SeqCst);
        if !self.held_notices.is_empty() {
            for notice in self.held_notices.drain(..) {
                let _ = self.disconnects.send(notice);
            }
            self.shared.notify();
        }
        moved
    }

    /// Stops polling a connection and closes its queue; it ends once the queue settles.
    fn begin_close(&mut self, id: usize, finish: Finish) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Taken back from a borrower, if lent; the lock orders this against its reads.
        conn.mark_closing();
        let _ = self.poll.registry().deregister(&mut conn.connection.stream);
        conn.queue.close();
        if conn.queue.take_room_wanted() {
            // A sender waiting for room must now learn that the connection is gone.
            self.shared.notify();
        }
        // Once closed, no direct write starts; one under way owns the socket until it ends
        // (and then schedules the id, so the closing goes on).
        if matches!(finish, Finish::Remove(_)) && !conn.queue.is_writing_directly() {
            // Whatever goes out now need not travel with the connection.
            let _ = drain_nonblocking(conn);
        }
        conn.closing = Some(finish);
        self.progress_closing(id);
    }

    /// Takes a closing connection's last frames; ends it if no push is still in flight
    /// (otherwise that push schedules the id again and we come back here).
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
        let mut conn = self.conns.remove(&id).expect("present above");
        match conn.closing.take().expect("closing") {
            Finish::Remove(reply) => {
                conn.take_back_decoder();
                let _ = reply.send(Ok(conn.connection));
            }
            Finish::Disconnect(reason) => {
                let unsent = conn
                    .connection
                    .backlog
                    .into_unsent()
                    .into_iter()
                    .map(|p| Envelope::new(id, p))
                    .collect();
                let notice = Disconnect { id, reason, unsent };
                if self.stalled.is_empty() {
                    let _ = self.disconnects.send(notice);
                    self.shared.notify();
                } else {
                    self.held_notices.push(notice);
                }
            }
        }
    }

    /// At shutdown: writes what each connection can take without blocking, then closes it.
    fn close_all(&mut self) {
        for (_, mut conn) in self.conns.drain() {
            conn.mark_closing();
            conn.queue.close();
            wait_for_direct_write(&conn.queue);
            if conn.closing.is_none() {
                let _ = drain_nonblocking(&mut conn);
            }
            if let Some(Finish::Remove(reply)) = conn.closing.take() {
                conn.take_back_decoder();
                let _ = reply.send(Ok(conn.connection));
            }
        }
    }
}

impl Drop for Reactor {
    /// Runs however the thread ends, panics included: refuse further sends and adds, and
    /// answer every command still queued.
    fn drop(&mut self) {
        self.shared.stopped.store(true, SeqCst);
        // Receivers take what is queued, then learn that nothing more will come.
        self.incoming.close();
        for conn in self.conns.values() {
            conn.mark_closing();
            conn.queue.close();
        }
        // The sockets close when the connections drop, after this: not under a direct write.
        for conn in self.conns.values() {
            wait_for_direct_write(&conn.queue);
        }
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add { queue, lease, .. } => {
                    lease.lock().closing = true;
                    queue.close()
                }
                Command::Remove { id, reply } => {
                    let _ = reply.send(Err(RemoveError::NotFound(id)));
                }
                Command::ReadFailed { .. } | Command::Read { .. } | Command::Shutdown => {}
            }
        }
        // Consumers waiting in an event loop must learn that nothing more will come.
        self.shared.notify();
    }
}

fn deliver(incoming: &IncomingQueue, stalled: &mut VecDeque<Delivery>, delivery: Delivery) {
    if !stalled.is_empty() {
        stalled.push_back(delivery);
        return;
    }
    if let Err(rest) = incoming.push(delivery) {
        stalled.push_back(rest);
    }
}

/// Waits for a direct write to a closed queue's socket to return: one non-blocking system
/// call, after which no other starts. Only where the reactor ends, before the sockets close.
fn wait_for_direct_write(queue: &OutgoingQueue) {
    while queue.is_writing_directly() {
        std::thread::yield_now();
    }
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
        match conn
            .connection
            .backlog
            .write_to(&mut conn.connection.stream)
        {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
