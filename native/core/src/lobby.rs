//! The lobby: one event loop for the connections outside any mesh.
//!
//! # Contract
//!
//! - One thread and one `mio::Poll` serve any number of connections being made
//!   ([`Lobby::connect`]), listeners accepting ([`Lobby::accept`]), and connections doing
//!   their own [`send`](Lobby::send) or [`recv`](Lobby::recv) (a handshake before they join a
//!   mesh). No operation takes a thread of its own, and none blocks the loop: each goes as
//!   far as it can without blocking and waits for its socket's next readiness event.
//! - Ownership moves by value. An operation on a connection takes the connection and its
//!   completion hands it back (a frame half read stays in its decoder; a frame half
//!   written is finished first). A listener lives in the lobby from
//!   [`listen`](Lobby::listen) until [`close_listener`](Lobby::close_listener).
//! - Every operation ends exactly once, by calling its completion on the lobby's thread
//!   (or on the caller's, if the lobby has stopped): with its outcome; with `Timeout` when
//!   its deadline passes; with `Aborted` when it is [`cancel`](Lobby::cancel)led or the
//!   lobby shuts down; accepts also with `Closed` when their listener closes.
//! - Accepts on one listener are served first come, first served. A listener accepts only
//!   while an accept waits, so connections nobody asked for wait in the kernel's backlog.
//! - A connection that must open before it is used (a TLS handshake, Splinter's
//!   negotiation) is opened by the accept that took it, without blocking, before the
//!   accept ends: with the connection once it is open, or with `Tls` if its handshake
//!   fails and `Io` if its negotiation does (the connection is closed; the listener goes
//!   on), or `Io` if it takes longer than [`OPENING_TIMEOUT`]. Meanwhile the next accept
//!   takes the next connection.
//! - A completion must be quick and must not call back into the lobby.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::ArrayQueue;
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use crate::transport::error::OpenError;
use crate::transport::{
    AcceptError, ConnectError, Connecting, Connection, ConnectionError, Listener,
};

/// Names one operation of a lobby, for [`Lobby::cancel`].
pub type OperationId = u64;
/// Names a listener of a lobby.
pub type ListenerId = u64;

/// What an operation calls when it ends, with its id and its outcome.
pub type Done<T> = Box<dyn FnOnce(OperationId, T) + Send>;
/// The outcome of a connection's own operation: the connection, handed back, and the result.
pub type Handed<T> = (Connection, Result<T, ConnectionError>);

const WAKER: Token = Token(usize::MAX);
/// Tokens of listeners have this bit; operations' do not.
const LISTENER: usize = 1 << (usize::BITS - 2);
const EVENTS: usize = 256;
/// The longest an accepted connection may take to finish its opening negotiation: a peer
/// that sends nothing cannot hold an accept for ever.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

enum Operation {
    Connect {
        connecting: Box<dyn Connecting>,
        done: Done<Result<Connection, ConnectError>>,
    },
    Accept {
        listener: ListenerId,
        /// The connection it accepted while it negotiates (registered under the accept's
        /// token, out of its listener's line), and when to give up on it.
        opening: Option<(Connection, Instant)>,
        done: Done<Result<Connection, AcceptError>>,
    },
    Send {
        connection: Connection,
        payload: Vec<u8>,
        done: Done<Handed<()>>,
    },
    Recv {
        connection: Connection,
        done: Done<Handed<Vec<u8>>>,
    },
}

impl Operation {
    /// Ends operation `id` with the error its kind has for `why`.
    fn end(self, id: OperationId, why: Ending) {
        match self {
            Operation::Connect { done, .. } => done(
                id,
                Err(match why {
                    Ending::Timeout => ConnectError::Timeout,
                    Ending::Aborted | Ending::Closed => ConnectError::Aborted,
                }),
            ),
            Operation::Accept { done, .. } => done(
                id,
                Err(match why {
                    Ending::Timeout => AcceptError::Timeout,
                    Ending::Aborted => AcceptError::Aborted,
                    Ending::Closed => AcceptError::Closed,
                }),
            ),
            Operation::Send {
                connection, done, ..
            } => done(id, (connection, Err(why.for_connection()))),
            Operation::Recv { connection, done } => {
                done(id, (connection, Err(why.for_connection())))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Timeout,
    Aborted,
    Closed,
}

impl Ending {
    fn for_connection(self) -> ConnectionError {
        match self {
            Ending::Timeout => ConnectionError::TimedOut,
            Ending::Aborted | Ending::Closed => ConnectionError::Aborted,
        }
    }
}

enum Command {
    Start(Start),
    Cancel(OperationId),
    Listen {
        id: ListenerId,
        listener: Box<dyn Listener>,
    },
    CloseListener(ListenerId),
    Shutdown,
}

/// An operation on its way to the loop. It ends itself with `Aborted` if it is dropped
/// before the loop takes it: its command could not be sent, or the loop stopped with it
/// still in the channel (dropping the channel's receiver drops what it holds).
struct Start {
    id: OperationId,
    operation: Option<Box<Operation>>,
    deadline: Option<Instant>,
}

impl Start {
    /// The operation, for the loop to run; the guard is disarmed.
    fn take(mut self) -> (OperationId, Operation, Option<Instant>) {
        let operation = self.operation.take().expect("taken once");
        (self.id, *operation, self.deadline)
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        if let Some(operation) = self.operation.take() {
            operation.end(self.id, Ending::Aborted);
        }
    }
}

/// An event loop for connections outside any mesh; see the module documentation.
///
/// Cloning gives another handle on the same loop. The loop stops when
/// [`shutdown`](Self::shutdown) is called or the last handle is dropped; operations still
/// under way end with `Aborted`.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use wiremesh_core::{Lobby, TcpTransport, Transport};
///
/// let lobby = Lobby::new().unwrap();
/// let transport = TcpTransport::default();
/// let listener = transport.listen("127.0.0.1:0").unwrap();
/// let endpoint = listener.endpoint();
/// let listener = lobby.listen(listener);
///
/// let (accepted_tx, accepted) = mpsc::channel();
/// lobby.accept(listener, None, Box::new(move |_, r| accepted_tx.send(r).unwrap()));
/// let (connected_tx, connected) = mpsc::channel();
/// let connecting = transport.start_connect(&endpoint).unwrap();
/// lobby.connect(connecting, None, Box::new(move |_, r| connected_tx.send(r).unwrap()));
///
/// let client = connected.recv().unwrap().unwrap();
/// let server = accepted.recv().unwrap().unwrap();
/// let (sent_tx, sent) = mpsc::channel();
/// lobby.send(client, b"hello".to_vec(), None, Box::new(move |_, r| sent_tx.send(r).unwrap()));
/// let (got_tx, got) = mpsc::channel();
/// lobby.recv(server, None, Box::new(move |_, r| got_tx.send(r).unwrap()));
/// assert!(sent.recv().unwrap().1.is_ok());
/// assert_eq!(got.recv().unwrap().1.unwrap(), b"hello");
/// ```
#[derive(Clone)]
pub struct Lobby {
    shared: Arc<Shared>,
}

struct Shared {
    commands: Sender<Command>,
    /// Set by [`Lobby::shutdown`]: the loop stops without taking the commands queued
    /// before (they end with `Aborted`), however many there are.
    stopping: Arc<AtomicBool>,
    waker: Waker,
    next_id: AtomicU64,
    thread: ArrayQueue<JoinHandle<()>>,
}

impl fmt::Debug for Lobby {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lobby").finish_non_exhaustive()
    }
}

impl Lobby {
    /// Starts a lobby's thread.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut event_loop = EventLoop {
            poll,
            commands: commands_rx,
            stopping: stopping.clone(),
            operations: FxHashMap::default(),
            listeners: FxHashMap::default(),
            deadlines: BinaryHeap::new(),
            running: true,
        };
        let thread = std::thread::Builder::new()
            .name("wiremesh-lobby".into())
            .spawn(move || event_loop.run())?;
        let shared = Shared {
            commands: commands_tx,
            stopping,
            waker,
            // Ids count from 1 (0 never names an operation); listeners share the counter.
            next_id: AtomicU64::new(1),
            thread: ArrayQueue::new(1),
        };
        let _ = shared.thread.push(thread);
        Ok(Lobby {
            shared: Arc::new(shared),
        })
    }

    /// Finishes making a connection (see [`Transport::start_connect`]).
    ///
    /// [`Transport::start_connect`]: crate::Transport::start_connect
    pub fn connect(
        &self,
        connecting: Box<dyn Connecting>,
        deadline: Option<Instant>,
        done: Done<Result<Connection, ConnectError>>,
    ) -> OperationId {
        self.start(Operation::Connect { connecting, done }, deadline)
    }

    /// Takes a listener into the lobby, which polls it while accepts wait.
    pub fn listen(&self, listener: Box<dyn Listener>) -> ListenerId {
        let id = self.next_id();
        self.command(Command::Listen { id, listener });
        id
    }

    /// Waits for the next connection on `listener` (an unknown or closed one: `Closed`).
    pub fn accept(
        &self,
        listener: ListenerId,
        deadline: Option<Instant>,
        done: Done<Result<Connection, AcceptError>>,
    ) -> OperationId {
        let operation = Operation::Accept {
            listener,
            opening: None,
            done,
        };
        self.start(operation, deadline)
    }

    /// Closes a listener: its waiting accepts end with `Closed`. Idempotent.
    pub fn close_listener(&self, listener: ListenerId) {
        self.command(Command::CloseListener(listener));
    }

    /// Writes one frame on `connection` (after any frames it has not finished writing),
    /// and hands the connection back.
    pub fn send(
        &self,
        connection: Connection,
        payload: Vec<u8>,
        deadline: Option<Instant>,
        done: Done<Handed<()>>,
    ) -> OperationId {
        let operation = Operation::Send {
            connection,
            payload,
            done,
        };
        self.start(operation, deadline)
    }

    /// Reads one frame from `connection` (never past its end) and hands the connection
    /// back.
    pub fn recv(
        &self,
        connection: Connection,
        deadline: Option<Instant>,
        done: Done<Handed<Vec<u8>>>,
    ) -> OperationId {
        self.start(Operation::Recv { connection, done }, deadline)
    }

    /// Ends an operation at once with `Aborted` (a connection it holds is handed back). An
    /// operation that has ended already is left alone.
    pub fn cancel(&self, operation: OperationId) {
        self.command(Command::Cancel(operation));
    }

    /// Stops the loop and waits for its thread; operations under way end with `Aborted`,
    /// as do those still on their way to the loop and any started from now on. It does
    /// not wait for the loop to take the commands queued before it.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    fn next_id(&self) -> u64 {
        // Relaxed: the counter only hands out distinct numbers; nothing is ordered by it.
        self.shared.next_id.fetch_add(1, Relaxed)
    }

    fn start(&self, operation: Operation, deadline: Option<Instant>) -> OperationId {
        let id = self.next_id();
        self.command(Command::Start(Start {
            id,
            operation: Some(Box::new(operation)),
            deadline,
        }));
        id
    }

    fn command(&self, command: Command) {
        // A command the loop will never take (it has stopped) is dropped here, or with the
        // channel when the loop ends: an operation's `Start` then ends it with `Aborted`.
        if self.shared.commands.send(command).is_ok() {
            // A failed wake means the loop is gone; its end answered or will answer.
            let _ = self.shared.waker.wake();
        }
    }
}

impl Shared {
    fn shutdown(&self) {
        // Release/Acquire: nothing is published through the flag but the request itself;
        // the loop sees it at its next check at the latest after the wake.
        self.stopping.store(true, Release);
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.pop() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Waiting {
    operation: Operation,
    deadline: Option<Instant>,
}

struct Listening {
    listener: Box<dyn Listener>,
    /// Accepts waiting, oldest first (their operations are in `operations`).
    accepts: VecDeque<OperationId>,
}

struct EventLoop {
    poll: Poll,
    commands: Receiver<Command>,
    stopping: Arc<AtomicBool>,
    operations: FxHashMap<OperationId, Waiting>,
    listeners: FxHashMap<ListenerId, Listening>,
    /// Deadlines of operations, earliest first; entries of ended operations are skipped.
    deadlines: BinaryHeap<Reverse<(Instant, OperationId)>>,
    running: bool,
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS);
        while self.running && !self.stopping.load(Acquire) {
            let timeout = self.expire();
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(token) if token & LISTENER != 0 => {
                        self.serve_accepts((token & !LISTENER) as ListenerId)
                    }
                    Token(token) => self.advance(token as OperationId),
                }
            }
            // Only the commands there now: threads that keep sending more can neither keep
            // the loop from its sockets nor keep a shutdown from stopping it.
            for _ in 0..self.commands.len() {
                if !self.running || self.stopping.load(Acquire) {
                    break;
                }
                match self.commands.try_recv() {
                    Ok(command) => self.command(command),
                    Err(_) => break,
                }
            }
        }
        for (id, waiting) in self.operations.drain() {
            waiting.operation.end(id, Ending::Aborted);
        }
        // Operations still in the channel, and any sent until it is gone, end with
        // `Aborted` as the receiver drops them; sends after that fail, and their senders
        // end them.
        drop(std::mem::replace(
            &mut self.commands,
            crossbeam_channel::never(),
        ));
    }

    /// Ends the operations whose deadline has passed; returns how long until the next one.
    fn expire(&mut self) -> Option<std::time::Duration> {
        let now = Instant::now();
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                return Some(deadline - now);
            }
            self.deadlines.pop();
            let Some(waiting) = self.operations.get(&id) else {
                continue;
            };
            if waiting.deadline == Some(deadline) {
                self.end(id, Ending::Timeout);
            } else if matches!(
                &waiting.operation,
                Operation::Accept { opening: Some((_, give_up)), .. } if *give_up == deadline
            ) {
                let err = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the peer did not finish opening the connection within {} s",
                        OPENING_TIMEOUT.as_secs()
                    ),
                );
                self.conclude(id, Outcome::Accepted(Err(OpenError::Io(err))));
            }
        }
        None
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Start(start) => {
                let (id, operation, deadline) = start.take();
                self.start(id, operation, deadline)
            }
            Command::Cancel(id) => self.end(id, Ending::Aborted),
            Command::Listen { id, mut listener } => {
                let token = Token(id as usize | LISTENER);
                // Not polled: the accepts that come learn why.
                let _ = self
                    .poll
                    .registry()
                    .register(&mut listener, token, Interest::READABLE);
                let accepts = VecDeque::new();
                self.listeners.insert(id, Listening { listener, accepts });
            }
            Command::CloseListener(id) => {
                if let Some(mut listening) = self.listeners.remove(&id) {
                    let _ = self.poll.registry().deregister(&mut listening.listener);
                    for accept in listening.accepts {
                        self.end(accept, Ending::Closed);
                    }
                    // And those whose connection is still negotiating.
                    let opening: Vec<OperationId> = (self.operations.iter())
                        .filter(|(_, waiting)| {
                            matches!(waiting.operation, Operation::Accept { listener, .. } if listener == id)
                        })
                        .map(|(accept, _)| *accept)
                        .collect();
                    for accept in opening {
                        self.end(accept, Ending::Closed);
                    }
                }
            }
            Command::Shutdown => self.running = false,
        }
    }

    fn start(&mut self, id: OperationId, mut operation: Operation, deadline: Option<Instant>) {
        let token = Token(id as usize);
        let interests = Interest::READABLE | Interest::WRITABLE;
        let registered = match &mut operation {
            Operation::Connect { connecting, .. } => {
                self.poll.registry().register(connecting, token, interests)
            }
            Operation::Accept { listener, .. } => match self.listeners.get_mut(listener) {
                Some(listening) => {
                    listening.accepts.push_back(id);
                    Ok(())
                }
                None => return operation.end(id, Ending::Closed),
            },
            Operation::Send {
                connection,
                payload,
                ..
            } => match connection.queue(payload) {
                Ok(()) => (self.poll.registry()).register(connection.source(), token, interests),
                Err(err) => return finish(id, operation, Err(err)),
            },
            Operation::Recv { connection, .. } => {
                (self.poll.registry()).register(connection.source(), token, interests)
            }
        };
        if let Err(err) = registered {
            return fail(id, operation, err);
        }
        let listener = match &operation {
            Operation::Accept { listener, .. } => Some(*listener),
            _ => None,
        };
        self.operations.insert(
            id,
            Waiting {
                operation,
                deadline,
            },
        );
        if let Some(deadline) = deadline {
            self.deadlines.push(Reverse((deadline, id)));
        }
        // It may be able to go some way at once (a frame already there, a connection
        // waiting in the backlog): edge-triggered polls report only what comes later.
        match listener {
            Some(listener) => self.serve_accepts(listener),
            None => self.advance(id),
        }
    }

    /// Takes an operation on its socket as far as it goes; ends it if it is done.
    fn advance(&mut self, id: OperationId) {
        let Some(waiting) = self.operations.get_mut(&id) else {
            return;
        };
        let outcome = match &mut waiting.operation {
            Operation::Connect { connecting, .. } => match connecting.advance() {
                None => return,
                Some(result) => Outcome::Connected(result),
            },
            Operation::Send { connection, .. } => match connection.write_some() {
                Ok(false) => return,
                Ok(true) => Outcome::Sent(Ok(())),
                Err(err) => Outcome::Sent(Err(ConnectionError::Io(err))),
            },
            Operation::Recv { connection, .. } => match connection.try_recv() {
                Ok(None) => return,
                Ok(Some(frame)) => Outcome::Received(Ok(frame)),
                Err(err) => Outcome::Received(Err(err)),
            },
            Operation::Accept {
                opening: Some((connection, _)),
                ..
            } => match connection.open_some() {
                Ok(false) => return,
                Ok(true) => Outcome::Accepted(Ok(())),
                Err(err) => Outcome::Accepted(Err(err)),
            },
            Operation::Accept { opening: None, .. } => return,
        };
        self.conclude(id, outcome);
    }

    /// Ends operation `id` with its outcome.
    fn conclude(&mut self, id: OperationId, outcome: Outcome) {
        let waiting = self.operations.remove(&id).expect("present above");
        let mut operation = waiting.operation;
        self.deregister(&mut operation);
        match (operation, outcome) {
            (Operation::Connect { done, .. }, Outcome::Connected(mut result)) => {
                // The attempt gave its socket to the connection: deregistering the attempt
                // could not reach it.
                if let Ok(connection) = &mut result {
                    let _ = self.poll.registry().deregister(connection.source());
                }
                done(id, result)
            }
            (operation, Outcome::Sent(result)) => finish(id, operation, result),
            (Operation::Recv { connection, done }, Outcome::Received(result)) => {
                done(id, (connection, result))
            }
            (
                Operation::Accept {
                    opening: Some((connection, _)),
                    done,
                    ..
                },
                Outcome::Accepted(result),
            ) => {
                // Refused: the connection is dropped here, which closes it.
                done(id, result.map(|()| connection).map_err(AcceptError::from))
            }
            _ => unreachable!("each operation has its own outcome"),
        }
    }

    /// Accepts for the accepts waiting on `listener`, while connections wait.
    fn serve_accepts(&mut self, listener: ListenerId) {
        loop {
            let Some(listening) = self.listeners.get_mut(&listener) else {
                return;
            };
            let Some(&accept) = listening.accepts.front() else {
                return;
            };
            if !self.operations.contains_key(&accept) {
                // Ended meanwhile (cancelled, timed out).
                listening.accepts.pop_front();
                continue;
            }
            let result = match listening.listener.try_accept() {
                Ok(None) => return,
                Ok(Some(connection)) => Ok(connection),
                Err(err) => Err(err),
            };
            listening.accepts.pop_front();
            match result {
                Ok(connection) if !connection.is_open() => self.open(accept, connection),
                result => {
                    let waiting = self.operations.remove(&accept).expect("checked above");
                    let Operation::Accept { done, .. } = waiting.operation else {
                        unreachable!("a listener's queue holds accepts")
                    };
                    done(accept, result);
                }
            }
        }
    }

    /// Has accept `id` open the connection it took: registered under the accept's token,
    /// its negotiation goes as far as it can now and on at each readiness event.
    fn open(&mut self, id: OperationId, mut connection: Connection) {
        let interests = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        if let Err(err) = registry.register(connection.source(), Token(id as usize), interests) {
            let waiting = self.operations.remove(&id).expect("a waiting accept");
            return fail(id, waiting.operation, err);
        }
        let give_up = Instant::now() + OPENING_TIMEOUT;
        let waiting = self.operations.get_mut(&id).expect("a waiting accept");
        if let Operation::Accept { opening, .. } = &mut waiting.operation {
            *opening = Some((connection, give_up));
        }
        self.deadlines.push(Reverse((give_up, id)));
        self.advance(id);
    }

    /// Ends a waiting operation early, if it is still waiting.
    fn end(&mut self, id: OperationId, why: Ending) {
        if let Some(waiting) = self.operations.remove(&id) {
            let mut operation = waiting.operation;
            if let Operation::Accept { listener, .. } = &operation {
                // Out of its listener's line, wherever it waits in it: cancelled or timed
                // out accepts behind a long wait would pile up there.
                if let Some(listening) = self.listeners.get_mut(listener) {
                    listening.accepts.retain(|accept| *accept != id);
                }
            }
            self.deregister(&mut operation);
            operation.end(id, why);
        }
    }

    fn deregister(&mut self, operation: &mut Operation) {
        let registry = self.poll.registry();
        let _ = match operation {
            Operation::Connect { connecting, .. } => registry.deregister(connecting),
            Operation::Send { connection, .. }
            | Operation::Recv { connection, .. }
            | Operation::Accept {
                opening: Some((connection, _)),
                ..
            } => registry.deregister(connection.source()),
            Operation::Accept { opening: None, .. } => Ok(()),
        };
    }
}

// Made once as an operation ends and consumed at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Connected(Result<Connection, ConnectError>),
    /// An accepted connection opened (or failed to).
    Accepted(Result<(), OpenError>),
    Sent(Result<(), ConnectionError>),
    Received(Result<Vec<u8>, ConnectionError>),
}

/// Ends send `id` with `result`, handing its connection back.
fn finish(id: OperationId, operation: Operation, result: Result<(), ConnectionError>) {
    match operation {
        Operation::Send {
            connection, done, ..
        } => done(id, (connection, result)),
        other => other.end(id, Ending::Aborted),
    }
}

/// Ends operation `id`, whose socket could not be polled.
fn fail(id: OperationId, operation: Operation, err: io::Error) {
    match operation {
        Operation::Connect { done, .. } => done(id, Err(ConnectError::Io(err))),
        Operation::Accept { done, .. } => done(id, Err(AcceptError::Io(err))),
        Operation::Send {
            connection, done, ..
        } => done(id, (connection, Err(ConnectionError::Io(err)))),
        Operation::Recv { connection, done } => {
            done(id, (connection, Err(ConnectionError::Io(err))))
        }
    }
}
