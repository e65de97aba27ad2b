//! Transports, listeners and connections before they join a mesh, for `index.js`.
//!
//! # Contract
//!
//! - Nothing parks a libuv threadpool thread. `connect`, `listen` and a connection's own
//!   `send`/`recv` run on a short-lived thread of their own (they may block in DNS, the TCP
//!   handshake or a slow peer); each listener has one thread that polls it with mio and
//!   accepts only while an `accept` waits, and that a `close` wakes at once.
//! - Every promise resolves: with the result, or with a [`Failure`] (`{ kind, message }`)
//!   from which `index.js` builds the typed error. A `close`d listener resolves its waiting
//!   accepts with kind `Closed`.
//! - A connection is owned by one place at a time: idle in its JavaScript object, busy in
//!   one of its own operations, or spent once a mesh has it.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use napi::bindgen_prelude::*;
use napi::JsDeferred;
use napi_derive::napi;
use wiremesh_core::{
    AcceptError, ConnectError, Connection, ConnectionError, ListenError, Listener, TcpTransport,
    Transport,
};

use crate::env;
use crate::mesh::AddStatus;

/// Why an operation failed: `index.js` turns it into the typed error of the operation.
#[napi(object)]
pub struct Failure {
    /// `InvalidEndpoint`, `IoError`, `Closed`, `Disconnected`, `Protocol`, `Timeout`,
    /// `TooLarge`, `Spent` or `Busy`.
    pub kind: String,
    pub message: String,
}

fn failure(kind: &str, message: impl ToString) -> Failure {
    Failure {
        kind: kind.into(),
        message: message.to_string(),
    }
}

type Resolver<T> = Box<dyn FnOnce(Env) -> Result<T> + Send>;
type Deferred<T> = JsDeferred<T, Resolver<T>>;

/// Runs `work` on a thread of its own and resolves the returned promise with its result.
fn on_thread<'env, T, F>(env: &'env Env, name: &str, work: F) -> Result<Object<'env>>
where
    T: ToNapiValue + 'static,
    F: FnOnce() -> T + Send + 'static,
    T: Send,
{
    let (deferred, promise) = env.create_deferred::<T, Resolver<T>>()?;
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let value = work();
            deferred.resolve(Box::new(move |_| Ok(value)));
        })
        .map_err(|err| {
            Error::new(
                Status::GenericFailure,
                format!("wiremesh: cannot start a thread: {err}"),
            )
        })?;
    Ok(promise)
}

/// The TCP transport.
#[napi]
pub struct NativeTransport {
    transport: TcpTransport,
}

#[napi]
impl NativeTransport {
    /// A transport whose connections accept frames of up to `max_frame_size` bytes.
    #[napi(constructor)]
    pub fn new(max_frame_size: u32, no_delay: bool) -> Self {
        NativeTransport {
            transport: TcpTransport::default()
                .with_max_frame_size(max_frame_size)
                .with_no_delay(no_delay),
        }
    }

    /// True for `host:port` and `tcp://host:port`.
    #[napi]
    pub fn accepts(&self, address: String) -> bool {
        self.transport.accepts(&address)
    }

    /// Resolves with a connection, or a failure (`InvalidEndpoint`, `IoError`).
    #[napi(ts_return_type = "Promise<NativeConnection | Failure>")]
    pub fn connect<'env>(&self, env: &'env Env, endpoint: String) -> Result<Object<'env>> {
        let transport = self.transport.clone();
        on_thread(env, "wiremesh-connect", move || {
            match transport.connect(&endpoint) {
                Ok(connection) => Either::A(NativeConnection::from_connection(connection)),
                Err(ConnectError::InvalidEndpoint(_)) => Either::B(failure(
                    "InvalidEndpoint",
                    format!("not a valid endpoint: {endpoint:?}"),
                )),
                Err(ConnectError::Io(err)) => Either::B(failure(
                    "IoError",
                    format!("could not connect to {endpoint}: {err}"),
                )),
            }
        })
    }

    /// Resolves with a listener, or a failure (`InvalidEndpoint`, `IoError`).
    #[napi(ts_return_type = "Promise<NativeListener | Failure>")]
    pub fn listen<'env>(&self, env: &'env Env, bind: String) -> Result<Object<'env>> {
        let state = env::current()?;
        let transport = self.transport.clone();
        let (deferred, promise) =
            env.create_deferred::<Either<NativeListener, Failure>, Resolver<_>>()?;
        thread::Builder::new()
            .name("wiremesh-listen".into())
            .spawn(move || {
                let outcome = match transport.listen(&bind) {
                    Ok(listener) => match ListenerShared::start(listener) {
                        Ok(listener) => Ok(listener),
                        Err(err) => Err(failure(
                            "IoError",
                            format!("could not listen on {bind}: {err}"),
                        )),
                    },
                    Err(ListenError::InvalidEndpoint(_)) => Err(failure(
                        "InvalidEndpoint",
                        format!("not a valid bind address: {bind:?}"),
                    )),
                    Err(ListenError::Io(err)) => Err(failure(
                        "IoError",
                        format!("could not listen on {bind}: {err}"),
                    )),
                };
                deferred.resolve(Box::new(move |_| match outcome {
                    Ok(listener) => {
                        // Tracked on the JavaScript thread, where the environment's state lives.
                        if let Ok(state) = env::current() {
                            env::track_listener(&state, Arc::downgrade(&listener.shared));
                        }
                        Ok(Either::A(listener))
                    }
                    Err(failure) => Ok(Either::B(failure)),
                }));
            })
            .map_err(|err| {
                Error::new(
                    Status::GenericFailure,
                    format!("wiremesh: cannot start a thread: {err}"),
                )
            })?;
        drop(state);
        Ok(promise)
    }
}

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

enum ListenerRequest {
    Accept(Deferred<Either<NativeConnection, Failure>>),
    Close,
}

/// What a listener's JavaScript object and its thread share.
pub(crate) struct ListenerShared {
    requests: Sender<ListenerRequest>,
    waker: Waker,
    closed: AtomicBool,
}

impl ListenerShared {
    fn start(listener: Box<dyn Listener>) -> io::Result<NativeListener> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let (requests, receiver) = crossbeam_channel::unbounded();
        let endpoint = listener.endpoint();
        let shared = Arc::new(ListenerShared {
            requests,
            waker,
            closed: AtomicBool::new(false),
        });
        thread::Builder::new()
            .name("wiremesh-listener".into())
            .spawn(move || accept_loop(poll, listener, receiver))?;
        Ok(NativeListener { shared, endpoint })
    }

    /// Closes the listener: waiting accepts resolve with `Closed`. Idempotent.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, SeqCst) {
            let _ = self.requests.send(ListenerRequest::Close);
            let _ = self.waker.wake();
        }
    }
}

/// The listener's thread: accepts only while accepts wait, so unclaimed connections stay
/// in the kernel's backlog.
fn accept_loop(
    mut poll: Poll,
    mut listener: Box<dyn Listener>,
    requests: Receiver<ListenerRequest>,
) {
    let mut waiting: VecDeque<Deferred<Either<NativeConnection, Failure>>> = VecDeque::new();
    let mut events = Events::with_capacity(8);
    let registered = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE);
    loop {
        loop {
            match requests.try_recv() {
                Ok(ListenerRequest::Accept(deferred)) => waiting.push_back(deferred),
                // Closed, or every handle is gone: end, answering whoever waits.
                Ok(ListenerRequest::Close) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    for deferred in waiting.drain(..) {
                        deferred.resolve(Box::new(|_| {
                            Ok(Either::B(failure("Closed", "the listener was closed")))
                        }));
                    }
                    return;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
            }
        }
        if let Err(err) = &registered {
            let message = format!("could not poll the listener: {err}");
            for deferred in waiting.drain(..) {
                let message = message.clone();
                deferred.resolve(Box::new(move |_| {
                    Ok(Either::B(failure("IoError", message)))
                }));
            }
        }
        while !waiting.is_empty() {
            match listener.try_accept() {
                Ok(Some(connection)) => {
                    let deferred = waiting.pop_front().expect("not empty");
                    deferred.resolve(Box::new(move |_| {
                        Ok(Either::A(NativeConnection::from_connection(connection)))
                    }));
                }
                Ok(None) => break,
                Err(AcceptError::Io(err)) => {
                    let deferred = waiting.pop_front().expect("not empty");
                    let message = format!("could not accept: {err}");
                    deferred.resolve(Box::new(move |_| {
                        Ok(Either::B(failure("IoError", message)))
                    }));
                }
            }
        }
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }
}

/// A listening socket.
#[napi]
pub struct NativeListener {
    shared: Arc<ListenerShared>,
    endpoint: String,
}

#[napi]
impl NativeListener {
    /// `tcp://ip:port`, with the port actually bound.
    #[napi(getter)]
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Resolves with the next connection, or a failure (`Closed`, `IoError`).
    #[napi(ts_return_type = "Promise<NativeConnection | Failure>")]
    pub fn accept<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (deferred, promise) =
            env.create_deferred::<Either<NativeConnection, Failure>, Resolver<_>>()?;
        let refused = if self.shared.closed.load(SeqCst) {
            Some(deferred)
        } else {
            match self.shared.requests.send(ListenerRequest::Accept(deferred)) {
                Ok(()) => None,
                Err(crossbeam_channel::SendError(ListenerRequest::Accept(deferred))) => {
                    Some(deferred)
                }
                Err(_) => unreachable!("sent an Accept"),
            }
        };
        match refused {
            // Every promise is settled: an unsettled one would keep the process alive.
            Some(deferred) => deferred.resolve(Box::new(|_| {
                Ok(Either::B(failure("Closed", "the listener was closed")))
            })),
            None => {
                let _ = self.shared.waker.wake();
            }
        }
        Ok(promise)
    }

    /// Stops listening; waiting accepts resolve with `Closed`.
    #[napi]
    pub fn close(&self) {
        self.shared.close();
    }
}

impl Drop for NativeListener {
    fn drop(&mut self) {
        self.shared.close();
    }
}

enum Slot {
    Idle(Connection),
    Busy,
    Spent,
}

/// A connection outside a mesh.
#[napi]
pub struct NativeConnection {
    slot: Arc<Mutex<Slot>>,
    local_endpoint: String,
    remote_endpoint: String,
}

impl NativeConnection {
    pub(crate) fn from_connection(connection: Connection) -> Self {
        NativeConnection {
            local_endpoint: connection.local_endpoint().into(),
            remote_endpoint: connection.remote_endpoint().into(),
            slot: Arc::new(Mutex::new(Slot::Idle(connection))),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Hands the connection to a mesh; the object is spent from then on.
    pub(crate) fn take_for_mesh(&self) -> std::result::Result<Connection, AddStatus> {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Spent) {
            Slot::Idle(connection) => Ok(connection),
            Slot::Busy => {
                *slot = Slot::Busy;
                Err(AddStatus::Busy)
            }
            Slot::Spent => Err(AddStatus::Spent),
        }
    }

    /// Takes the connection for one of its own operations.
    fn borrow(&self) -> std::result::Result<Connection, Failure> {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Busy) {
            Slot::Idle(connection) => Ok(connection),
            Slot::Busy => Err(failure(
                "Busy",
                "the connection is in the middle of another send or recv",
            )),
            Slot::Spent => {
                *slot = Slot::Spent;
                Err(failure(
                    "Spent",
                    "the connection was added to a mesh or disconnected; it cannot be used again",
                ))
            }
        }
    }
}

fn connection_failure(err: ConnectionError) -> Failure {
    match err {
        ConnectionError::Closed { .. } => failure("Disconnected", err),
        ConnectionError::Protocol(_) => failure("Protocol", err),
        ConnectionError::TimedOut => failure("Timeout", err),
        ConnectionError::TooLarge(_) => failure("TooLarge", err),
        ConnectionError::Io(_) => failure("IoError", err),
    }
}

#[napi]
impl NativeConnection {
    /// This end's endpoint.
    #[napi(getter)]
    pub fn local_endpoint(&self) -> String {
        self.local_endpoint.clone()
    }

    /// The peer's endpoint.
    #[napi(getter)]
    pub fn remote_endpoint(&self) -> String {
        self.remote_endpoint.clone()
    }

    /// True once a mesh has it (or it was disconnected).
    #[napi(getter)]
    pub fn spent(&self) -> bool {
        matches!(*self.slot(), Slot::Spent)
    }

    /// Writes one frame; resolves with `null` or a failure.
    #[napi(ts_return_type = "Promise<Failure | null>")]
    pub fn send<'env>(&self, env: &'env Env, payload: BufferSlice) -> Result<Object<'env>> {
        let payload = payload.to_vec();
        let connection = self.borrow();
        let slot = self.slot.clone();
        on_thread(env, "wiremesh-send", move || {
            let mut connection = match connection {
                Ok(connection) => connection,
                Err(failure) => return Some(failure),
            };
            let result = connection.send(&payload);
            *slot.lock().unwrap_or_else(|poison| poison.into_inner()) = Slot::Idle(connection);
            result.err().map(connection_failure)
        })
    }

    /// Reads one frame; resolves with its payload or a failure.
    #[napi(ts_return_type = "Promise<Buffer | Failure>")]
    pub fn recv<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let connection = self.borrow();
        let slot = self.slot.clone();
        on_thread(env, "wiremesh-recv", move || {
            let mut connection = match connection {
                Ok(connection) => connection,
                Err(failure) => return Either::B(failure),
            };
            let result = connection.recv();
            *slot.lock().unwrap_or_else(|poison| poison.into_inner()) = Slot::Idle(connection);
            match result {
                Ok(payload) => Either::A(Buffer::from(payload)),
                Err(err) => Either::B(connection_failure(err)),
            }
        })
    }

    /// Shuts the connection down; it is spent afterwards. False if it was spent or busy.
    #[napi]
    pub fn disconnect(&self) -> bool {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Spent) {
            Slot::Idle(connection) => {
                let _ = connection.disconnect();
                true
            }
            other => {
                *slot = other;
                false
            }
        }
    }
}
