//! Transports, listeners and connections outside a mesh, for the package's JavaScript.
//!
//! # Contract
//!
//! - No thread per operation. `connect`, `accept` and a connection's own `send`/`recv` run
//!   in this environment's [`Lobby`] (one event loop thread, started at first use): each
//!   returns an operation id at once, and its outcome is collected by `takeCompletions`
//!   once the lobby's mark has woken JavaScript (`lobbyKey`). `cancelOperation` ends one
//!   at once with `Aborted`. `listen` binds at once (it does not block) and gives the
//!   listener to the lobby.
//! - Failures are `{ kind, message }` ([`Failure`]); the package builds the typed errors.
//! - A connection is owned by one place at a time: idle in its JavaScript object, in the
//!   lobby during one of its own operations, or in a mesh. `disconnect()` closes it at once
//!   if it is idle; during an operation it cancels the operation, and the connection is
//!   closed as soon as the lobby hands it back.
//! - Everything here runs on the environment's JavaScript thread but the completions,
//!   which the lobby's thread queues.

use std::cell::RefCell;
use std::rc::Rc;
use std::result::Result as StdResult;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rustc_hash::FxHashMap;
use wiremesh_core::codec::Framing;
use wiremesh_core::{
    AcceptError, ConnectError, Connection, ConnectionError, InprocTransport, KeepAlive,
    ListenError, Lobby, OperationId, TcpTransport, TlsOptions, TlsTransport, Transport,
    UnixTransport, USER_TIMEOUT_SUPPORTED,
};

use crate::env::{self, EnvWaker, Mark};

/// Why an operation failed: the package turns it into the typed error of the operation.
#[napi(object)]
pub struct Failure {
    /// `InvalidEndpoint`, `AddressInUse`, `IoError`, `Closed`, `Disconnected`, `Protocol`,
    /// `Timeout`, `Aborted`, `TooLarge`, `Spent`, `Busy` or `Tls`.
    pub kind: String,
    pub message: String,
}

fn failure(kind: &str, message: impl ToString) -> Failure {
    Failure {
        kind: kind.into(),
        message: message.to_string(),
    }
}

fn deadline(timeout_ms: f64) -> Option<Instant> {
    (timeout_ms >= 0.0).then(|| Instant::now() + Duration::from_secs_f64(timeout_ms / 1000.0))
}

/// How an operation of the lobby ended, on its way from the lobby's thread.
enum Outcome {
    Connected(StdResult<Connection, ConnectError>),
    Accepted(StdResult<Connection, AcceptError>),
    Sent(Connection, StdResult<(), ConnectionError>),
    Received(Connection, StdResult<Vec<u8>, ConnectionError>),
}

/// This environment's lobby, and the operations it runs for JavaScript.
struct LobbyState {
    /// Started at first use.
    lobby: RefCell<Option<Lobby>>,
    mark: Arc<Mark>,
    waker: Arc<EnvWaker>,
    completions: Arc<SegQueue<(OperationId, Outcome)>>,
    /// The slots of connections whose operation runs, by operation.
    slots: RefCell<FxHashMap<OperationId, Rc<RefCell<Slot>>>>,
}

thread_local! {
    static LOBBY: RefCell<Option<Rc<LobbyState>>> = const { RefCell::new(None) };
}

/// This environment's lobby state, made at first use.
fn lobby_state() -> Result<Rc<LobbyState>> {
    if let Some(state) = LOBBY.with(|lobby| lobby.borrow().clone()) {
        return Ok(state);
    }
    let env = env::current()?;
    let state = Rc::new(LobbyState {
        lobby: RefCell::new(None),
        mark: env.waker.mark(),
        waker: env.waker.clone(),
        completions: Arc::new(SegQueue::new()),
        slots: RefCell::new(FxHashMap::default()),
    });
    env::on_teardown(
        &env,
        Box::new(|| {
            if let Some(state) = LOBBY.with(|lobby| lobby.borrow_mut().take()) {
                if let Some(lobby) = state.lobby.take() {
                    lobby.shutdown();
                }
            }
        }),
    );
    LOBBY.with(|lobby| *lobby.borrow_mut() = Some(state.clone()));
    Ok(state)
}

impl LobbyState {
    fn lobby(&self) -> Result<Lobby> {
        let mut lobby = self.lobby.borrow_mut();
        if let Some(lobby) = &*lobby {
            return Ok(lobby.clone());
        }
        let started = Lobby::new().map_err(|err| {
            Error::new(
                Status::GenericFailure,
                format!("wiremesh: cannot start the lobby's thread: {err}"),
            )
        })?;
        *lobby = Some(started.clone());
        Ok(started)
    }

    /// What an operation calls when it ends: queues its outcome and wakes JavaScript.
    fn done<T: Send + 'static>(
        &self,
        outcome: fn(T) -> Outcome,
    ) -> Box<dyn FnOnce(OperationId, T) + Send> {
        let completions = self.completions.clone();
        let waker = self.waker.clone();
        let mark = self.mark.clone();
        Box::new(move |id, value| {
            completions.push((id, outcome(value)));
            waker.wake(&mark);
        })
    }
}

/// The key of the lobby's mark: `takeWoken` gives it when operations have ended.
#[napi]
pub fn lobby_key() -> Result<u32> {
    Ok(lobby_state()?.mark.key)
}

/// Ends a lobby operation at once with `Aborted` (nothing if it has ended already).
#[napi]
pub fn cancel_operation(id: f64) -> Result<()> {
    let state = lobby_state()?;
    if let Some(lobby) = &*state.lobby.borrow() {
        lobby.cancel(id as OperationId);
    }
    Ok(())
}

/// An ended operation, as `takeCompletions` reports it.
#[napi(object, object_from_js = false)]
pub struct Completion {
    pub id: f64,
    /// A connection made or accepted.
    pub connection: Option<NativeConnection>,
    /// A frame received.
    pub payload: Option<Buffer>,
    pub failure: Option<Failure>,
}

/// The operations that have ended since the last call.
#[napi]
pub fn take_completions() -> Result<Vec<Completion>> {
    let state = lobby_state()?;
    let mut out = Vec::new();
    while let Some((id, outcome)) = state.completions.pop() {
        let mut completion = Completion {
            id: id as f64,
            connection: None,
            payload: None,
            failure: None,
        };
        match outcome {
            Outcome::Connected(Ok(connection)) | Outcome::Accepted(Ok(connection)) => {
                completion.connection = Some(NativeConnection::from_connection(connection))
            }
            Outcome::Connected(Err(err)) => completion.failure = Some(connect_failure(err)),
            Outcome::Accepted(Err(err)) => completion.failure = Some(accept_failure(err)),
            Outcome::Sent(connection, result) => {
                state.give_back(id, connection);
                completion.failure = result.err().map(connection_failure);
            }
            Outcome::Received(connection, result) => {
                state.give_back(id, connection);
                match result {
                    Ok(payload) => completion.payload = Some(payload.into()),
                    Err(err) => completion.failure = Some(connection_failure(err)),
                }
            }
        }
        out.push(completion);
    }
    Ok(out)
}

impl LobbyState {
    /// Puts a connection back in the slot its operation took it from, or closes it if it
    /// was disconnected meanwhile.
    fn give_back(&self, id: OperationId, connection: Connection) {
        let Some(slot) = self.slots.borrow_mut().remove(&id) else {
            return;
        };
        let mut slot = slot.borrow_mut();
        match &*slot {
            Slot::Busy(busy) if *busy == id => *slot = Slot::Idle(Box::new(connection)),
            _ => {
                // Disconnected during the operation: closed now.
                let _ = connection.disconnect();
            }
        }
    }
}

fn connect_failure(err: ConnectError) -> Failure {
    match err {
        ConnectError::InvalidEndpoint(_) => failure("InvalidEndpoint", err),
        ConnectError::Io(_) => failure("IoError", err),
        ConnectError::Timeout => failure("Timeout", err),
        ConnectError::Aborted => failure("Aborted", err),
        ConnectError::Unsupported(_) => failure("Unsupported", err),
        ConnectError::Tls(_) => failure("Tls", err),
    }
}

fn accept_failure(err: AcceptError) -> Failure {
    match err {
        AcceptError::Io(_) => failure("IoError", err),
        AcceptError::Timeout => failure("Timeout", err),
        AcceptError::Aborted => failure("Aborted", err),
        AcceptError::Closed => failure("Closed", err),
        AcceptError::Tls(_) => failure("Tls", err),
    }
}

fn connection_failure(err: ConnectionError) -> Failure {
    match err {
        ConnectionError::Closed { .. } => failure("Disconnected", err),
        ConnectionError::Protocol(_) => failure("Protocol", err),
        ConnectionError::TimedOut => failure("Timeout", err),
        ConnectionError::Aborted => failure("Aborted", err),
        ConnectionError::TooLarge(_) => failure("TooLarge", err),
        ConnectionError::Io(_) => failure("IoError", err),
    }
}

/// A transport of the core: TCP by default, TLS (`tls`), Unix sockets (`unix`) or
/// in-process (`inproc`).
#[napi]
pub struct NativeTransport {
    transport: Box<dyn Transport>,
    /// The same transport, for connects that name the server (TLS only).
    tls: Option<TlsTransport>,
}

/// The options of the TLS transport, as the package checked them (PEM as bytes).
#[napi(object)]
pub struct NativeTlsOptions {
    pub key: Option<Buffer>,
    pub cert: Option<Buffer>,
    pub ca: Option<Buffer>,
    pub request_cert: bool,
    pub servername: Option<String>,
    pub max_frame_size: u32,
    pub no_delay: bool,
    pub framing: String,
    pub keep_alive: Option<NativeKeepAlive>,
    /// Milliseconds.
    pub user_timeout: Option<f64>,
}

/// TCP keepalive as the package checked it: times in milliseconds (positive, finite), the
/// count an integer from 1; a field absent keeps the system's default.
#[napi(object)]
pub struct NativeKeepAlive {
    pub idle: Option<f64>,
    pub interval: Option<f64>,
    pub count: Option<u32>,
}

/// A positive number of milliseconds as a duration, rounded up to a whole millisecond.
fn millis(ms: f64) -> Duration {
    Duration::from_millis(ms.ceil() as u64)
}

impl From<NativeKeepAlive> for KeepAlive {
    fn from(keep_alive: NativeKeepAlive) -> Self {
        KeepAlive {
            idle: keep_alive.idle.map(millis),
            interval: keep_alive.interval.map(millis),
            count: keep_alive.count,
        }
    }
}

/// The user timeout, refused where the system cannot apply it (`InvalidArg`, the message
/// beginning with the option's name, as the package expects).
fn user_timeout_of(user_timeout: Option<f64>) -> Result<Option<Duration>> {
    match user_timeout {
        Some(_) if !USER_TIMEOUT_SUPPORTED => Err(Error::new(
            Status::InvalidArg,
            "options.userTimeout: not supported on this platform (TCP_USER_TIMEOUT: Linux and Android only)",
        )),
        user_timeout => Ok(user_timeout.map(millis)),
    }
}

fn framing_of(framing: &str) -> Result<Framing> {
    match framing {
        "raw" => Ok(Framing::Raw),
        "splinter-v1" => Ok(Framing::SplinterV1),
        other => Err(Error::new(
            Status::InvalidArg,
            format!("unknown framing {other:?}"),
        )),
    }
}

#[napi]
impl NativeTransport {
    /// The TCP transport, whose connections accept frames of up to `max_frame_size` bytes,
    /// framed as `framing`: `raw` or `splinter-v1` (Splinter's versioned frames, negotiated
    /// when a connection opens); with TCP keepalive and a user timeout (milliseconds) if
    /// given. A user timeout where the platform has none throws `InvalidArg`
    /// (`options.userTimeout: …`).
    #[napi(constructor)]
    pub fn new(
        max_frame_size: u32,
        no_delay: bool,
        framing: String,
        keep_alive: Option<NativeKeepAlive>,
        user_timeout: Option<f64>,
    ) -> Result<Self> {
        let framing = framing_of(&framing)?;
        Ok(NativeTransport {
            transport: Box::new(
                TcpTransport::default()
                    .with_max_frame_size(max_frame_size)
                    .with_no_delay(no_delay)
                    .with_keep_alive(keep_alive.map(KeepAlive::from))
                    .with_user_timeout(user_timeout_of(user_timeout)?)
                    .with_framing(framing),
            ),
            tls: None,
        })
    }

    /// The TLS transport (`tcps://host:port`). Options it cannot use (unparsable PEM, a key
    /// that does not fit its certificate) throw `InvalidArg` with a message that begins
    /// with the option's name (`options.key: …`).
    #[napi(factory)]
    pub fn tls(options: NativeTlsOptions) -> Result<Self> {
        let framing = framing_of(&options.framing)?;
        let user_timeout = user_timeout_of(options.user_timeout)?;
        let tls_options = TlsOptions {
            key: options.key.map(|pem| pem.to_vec()),
            cert: options.cert.map(|pem| pem.to_vec()),
            ca: options.ca.map(|pem| pem.to_vec()),
            request_cert: options.request_cert,
            servername: options.servername,
        };
        let transport = TlsTransport::new(&tls_options)
            .map_err(|err| Error::new(Status::InvalidArg, err.to_string()))?
            .with_max_frame_size(options.max_frame_size)
            .with_no_delay(options.no_delay)
            .with_keep_alive(options.keep_alive.map(KeepAlive::from))
            .with_user_timeout(user_timeout)
            .with_framing(framing);
        Ok(NativeTransport {
            transport: Box::new(transport.clone()),
            tls: Some(transport),
        })
    }

    /// The Unix-socket transport (`unix:///absolute/path`).
    #[napi(factory)]
    pub fn unix(max_frame_size: u32) -> Self {
        NativeTransport {
            transport: Box::new(UnixTransport::default().with_max_frame_size(max_frame_size)),
            tls: None,
        }
    }

    /// The in-process transport (`inproc://name`), one registry per process.
    #[napi(factory)]
    pub fn inproc(max_frame_size: u32) -> Self {
        NativeTransport {
            transport: Box::new(InprocTransport::default().with_max_frame_size(max_frame_size)),
            tls: None,
        }
    }

    /// True for the endpoints of its scheme.
    #[napi]
    pub fn accepts(&self, address: String) -> bool {
        self.transport.accepts(&address)
    }

    /// Starts connecting to `endpoint` (an address: the package resolves host names
    /// first); `timeout_ms` below 0 waits for ever. The operation's id, or a failure
    /// (`InvalidEndpoint`, `IoError`) found at once. A TLS connection verifies
    /// `server_name` (the host the package resolved) unless the transport has its own.
    #[napi]
    pub fn connect(
        &self,
        endpoint: String,
        timeout_ms: f64,
        server_name: Option<String>,
    ) -> Result<Either<f64, Failure>> {
        let state = lobby_state()?;
        let started = match (&self.tls, server_name) {
            (Some(tls), Some(name)) => tls.start_connect_named(&endpoint, &name),
            _ => self.transport.start_connect(&endpoint),
        };
        let connecting = match started {
            Ok(connecting) => connecting,
            Err(err) => return Ok(Either::B(connect_failure(err))),
        };
        let lobby = state.lobby()?;
        let id = lobby.connect(
            connecting,
            deadline(timeout_ms),
            state.done(Outcome::Connected),
        );
        Ok(Either::A(id as f64))
    }

    /// Binds `bind` and gives the listener to the lobby, or a failure (`InvalidEndpoint`,
    /// `AddressInUse`, `IoError`).
    #[napi]
    pub fn listen(&self, bind: String) -> Result<Either<NativeListener, Failure>> {
        let state = lobby_state()?;
        let listener = match self.transport.listen(&bind) {
            Ok(listener) => listener,
            Err(err) => {
                let kind = match err {
                    ListenError::InvalidEndpoint(_) => "InvalidEndpoint",
                    ListenError::AddressInUse(_) => "AddressInUse",
                    ListenError::Io(_) => "IoError",
                    ListenError::Unsupported(_) => "Unsupported",
                };
                return Ok(Either::B(failure(kind, format!("{err} ({bind})"))));
            }
        };
        let endpoint = listener.endpoint();
        let releaser = listener.releaser();
        let lobby = state.lobby()?;
        let id = lobby.listen(listener);
        Ok(Either::A(NativeListener {
            releaser,
            id,
            endpoint,
            lobby,
        }))
    }
}

/// A listening socket, polled by the lobby while accepts wait.
#[napi]
pub struct NativeListener {
    /// Frees the address at `close` (an in-process name), before the lobby drops it.
    releaser: Option<wiremesh_core::transport::Releaser>,
    id: u64,
    endpoint: String,
    lobby: Lobby,
}

#[napi]
impl NativeListener {
    /// `tcp://ip:port`, with the port actually bound.
    #[napi(getter)]
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Starts waiting for the next connection; `timeout_ms` below 0 waits for ever. The
    /// operation's id.
    #[napi]
    pub fn accept(&self, timeout_ms: f64) -> Result<f64> {
        let state = lobby_state()?;
        let id = (self.lobby).accept(self.id, deadline(timeout_ms), state.done(Outcome::Accepted));
        Ok(id as f64)
    }

    /// Stops listening; waiting accepts end with `Closed`. An in-process name is free
    /// when this returns.
    #[napi]
    pub fn close(&self) {
        if let Some(release) = &self.releaser {
            release();
        }
        self.lobby.close_listener(self.id);
    }
}

impl Drop for NativeListener {
    fn drop(&mut self) {
        self.lobby.close_listener(self.id);
    }
}

/// Where a connection outside a mesh is.
pub(crate) enum Slot {
    /// In its JavaScript object.
    Idle(Box<Connection>),
    /// In the lobby, for this operation.
    Busy(OperationId),
    /// In a mesh, or closed.
    Spent,
}

/// Why a connection cannot join a mesh.
pub(crate) enum Refusal {
    /// It joined a mesh already, or was disconnected.
    Spent,
    /// It is in the middle of its own send or recv.
    Busy,
}

/// A connection outside a mesh.
#[napi]
pub struct NativeConnection {
    slot: Rc<RefCell<Slot>>,
    local_endpoint: String,
    remote_endpoint: String,
    peer_certificate: Option<Vec<u8>>,
}

impl NativeConnection {
    pub(crate) fn from_connection(connection: Connection) -> Self {
        NativeConnection {
            peer_certificate: connection.peer_certificate().map(<[u8]>::to_vec),
            local_endpoint: connection.local_endpoint().into(),
            remote_endpoint: connection.remote_endpoint().into(),
            slot: Rc::new(RefCell::new(Slot::Idle(Box::new(connection)))),
        }
    }

    /// Hands the connection to a mesh; the object is spent from then on.
    pub(crate) fn take_for_mesh(&self) -> StdResult<Connection, Refusal> {
        let mut slot = self.slot.borrow_mut();
        match std::mem::replace(&mut *slot, Slot::Spent) {
            Slot::Idle(connection) => Ok(*connection),
            busy @ Slot::Busy(_) => {
                *slot = busy;
                Err(Refusal::Busy)
            }
            Slot::Spent => Err(Refusal::Spent),
        }
    }

    /// Puts back a connection a mesh refused (it had shut down).
    pub(crate) fn give_back(&self, connection: Connection) {
        *self.slot.borrow_mut() = Slot::Idle(Box::new(connection));
    }

    /// Takes the connection for one of its own operations, started by `begin`.
    fn operate(
        &self,
        begin: impl FnOnce(Connection) -> Result<OperationId>,
    ) -> Result<Either<f64, Failure>> {
        let state = lobby_state()?;
        let connection =
            {
                let mut slot = self.slot.borrow_mut();
                match std::mem::replace(&mut *slot, Slot::Spent) {
                    Slot::Idle(connection) => *connection,
                    busy @ Slot::Busy(_) => {
                        *slot = busy;
                        return Ok(Either::B(failure(
                            "Busy",
                            "the connection is in the middle of another send or recv",
                        )));
                    }
                    Slot::Spent => return Ok(Either::B(failure(
                        "Spent",
                        "the connection joined a mesh or was disconnected; it cannot be used again",
                    ))),
                }
            };
        let id = begin(connection)?;
        // The lobby may have ended it already (the completion waits in the queue): the
        // slot is busy until the completion is taken, on this thread.
        *self.slot.borrow_mut() = Slot::Busy(id);
        state.slots.borrow_mut().insert(id, self.slot.clone());
        Ok(Either::A(id as f64))
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

    /// The peer's certificate (DER) its TLS handshake verified, or null.
    #[napi(getter)]
    pub fn peer_certificate(&self) -> Option<Buffer> {
        self.peer_certificate.clone().map(Buffer::from)
    }

    /// True once a mesh has it (or it was disconnected).
    #[napi(getter)]
    pub fn spent(&self) -> bool {
        matches!(*self.slot.borrow(), Slot::Spent)
    }

    /// Starts writing one frame; `timeout_ms` below 0 waits for ever. The operation's id,
    /// or a failure found at once (`Busy`, `Spent`, `TooLarge`).
    #[napi]
    pub fn send(&self, payload: BufferSlice, timeout_ms: f64) -> Result<Either<f64, Failure>> {
        let payload = payload.to_vec();
        if let Slot::Idle(connection) = &*self.slot.borrow() {
            if payload.len() > connection.max_frame_size() as usize {
                return Ok(Either::B(connection_failure(ConnectionError::TooLarge(
                    payload.len(),
                ))));
            }
        }
        let state = lobby_state()?;
        let lobby = state.lobby()?;
        self.operate(|connection| {
            let done = state.done(|(connection, result)| Outcome::Sent(connection, result));
            Ok(lobby.send(connection, payload, deadline(timeout_ms), done))
        })
    }

    /// Starts reading one frame; `timeout_ms` below 0 waits for ever. The operation's id,
    /// or a failure found at once (`Busy`, `Spent`).
    #[napi]
    pub fn recv(&self, timeout_ms: f64) -> Result<Either<f64, Failure>> {
        let state = lobby_state()?;
        let lobby = state.lobby()?;
        self.operate(|connection| {
            let done = state.done(|(connection, result)| Outcome::Received(connection, result));
            Ok(lobby.recv(connection, deadline(timeout_ms), done))
        })
    }

    /// Shuts the connection down; it is spent afterwards. During one of its operations,
    /// the operation is cancelled and the connection closed when the lobby hands it back.
    /// False if it was spent already.
    #[napi]
    pub fn disconnect(&self) -> Result<bool> {
        let previous = std::mem::replace(&mut *self.slot.borrow_mut(), Slot::Spent);
        match previous {
            Slot::Idle(connection) => {
                let _ = connection.disconnect();
                Ok(true)
            }
            Slot::Busy(id) => {
                cancel_operation(id as f64)?;
                Ok(true)
            }
            Slot::Spent => Ok(false),
        }
    }
}
