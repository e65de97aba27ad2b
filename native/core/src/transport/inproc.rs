//! In-process connections (`inproc://name`): pairs of connections inside one process, across
//! its threads (and so across Node's worker threads), reachable from nothing outside it.
//!
//! # Contract
//!
//! - One registry per process: a listener on `inproc://jobs` made on any thread is reached
//!   by a connect to `inproc://jobs` from any other. A name is served by one listener at a
//!   time (`AddressInUse`); closing (dropping) the listener frees it, and the connections
//!   it had not accepted see the end of their stream.
//! - A connect never blocks and never waits for an accept, as with TCP: the new connection
//!   waits in its listener's backlog (4096 connections; a connect to a full backlog is an
//!   `IoError`). A name nobody serves is an `IoError` of kind `ConnectionRefused`.
//! - A connection pair is a pair of in-memory streams ([`super::memory`]): its bytes move
//!   through two bounded rings in the process's memory, with no socket and no system call
//!   (the kernel is asked only to wake an end that waits, through an `eventfd`). It behaves
//!   as the other transports' connections do: the rings bound what is in flight, so
//!   backpressure, pausing and the end of the stream (a thread or worker that drops its
//!   end) are the same as over TCP, and what the peer has not taken is known exactly.
//! - The registry is a lock-free map (papaya); a listener is woken by a bell of its own
//!   when a connection joins its backlog (a crossbeam channel).
//! - Where the system has no Unix-style polling of an `eventfd` or a pipe (Windows here),
//!   every call is `Unsupported`.

use super::error::{ConnectError, ListenError};
use super::{Connecting, Listener, Transport};
use crate::codec::DEFAULT_MAX_FRAME_SIZE;

const SCHEME: &str = "inproc://";

/// The in-process transport.
///
/// # Examples
///
/// ```
/// # #[cfg(unix)] {
/// use wiremesh_core::{InprocTransport, Transport};
///
/// let transport = InprocTransport::default();
/// let mut listener = transport.listen("inproc://doc-example").unwrap();
/// let mut client = transport.connect("inproc://doc-example").unwrap();
/// let mut server = listener.accept().unwrap();
/// client.send(b"hello").unwrap();
/// assert_eq!(server.recv().unwrap(), b"hello");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InprocTransport {
    max_frame_size: u32,
}

impl Default for InprocTransport {
    fn default() -> Self {
        InprocTransport {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl InprocTransport {
    /// A transport whose connections accept frames of up to `max_frame_size` bytes
    /// (default 16 MiB; any value up to 4 GiB - 1).
    pub fn with_max_frame_size(mut self, max_frame_size: u32) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }

    /// The largest frame its connections accept.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }
}

/// The name of `inproc://name`, if `address` is one: 1 to 255 bytes, no NUL.
fn name_of(address: &str) -> Option<&str> {
    let name = address.strip_prefix(SCHEME)?;
    (!name.is_empty() && name.len() <= 255 && !name.contains('\0')).then_some(name)
}

#[cfg(unix)]
pub use imp::{InprocConnecting, InprocListener};

#[cfg(unix)]
mod imp {
    use std::io;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use crossbeam_channel::{Receiver, Sender, TrySendError};
    use mio::event::Source;
    use mio::unix::SourceFd;
    use mio::{Interest, Registry, Token};

    use super::super::error::AcceptError;
    use super::super::memory::{pair, Bell, FdBell, MemoryStream};
    use super::super::Connection;
    use super::*;

    /// Connections a listener holds before connects are refused.
    const BACKLOG: usize = 4096;

    /// What a connect finds under a name.
    #[derive(Debug)]
    struct Entry {
        /// Which listener made it (a listener removes only its own entry).
        id: u64,
        /// Set by the listener's drop: a connection that joins the backlog after it may
        /// have missed the drain, so its connect is refused instead.
        closed: AtomicBool,
        backlog: Sender<MemoryStream>,
        /// Rung after each connection joins the backlog: wakes the listener's poll.
        bell: Arc<FdBell>,
    }

    fn registry() -> &'static papaya::HashMap<String, Arc<Entry>> {
        static REGISTRY: OnceLock<papaya::HashMap<String, Arc<Entry>>> = OnceLock::new();
        REGISTRY.get_or_init(papaya::HashMap::new)
    }

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    impl Transport for InprocTransport {
        fn accepts(&self, address: &str) -> bool {
            name_of(address).is_some()
        }

        fn connect(&self, endpoint: &str) -> Result<Connection, ConnectError> {
            let name =
                name_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
            let stream = dial(name).map_err(ConnectError::Io)?;
            self.connection(stream).map_err(ConnectError::Io)
        }

        fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
            let name =
                name_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
            let stream = dial(name).map_err(ConnectError::Io)?;
            let connection = self.connection(stream).map_err(ConnectError::Io)?;
            Ok(Box::new(InprocConnecting {
                connection: Some(connection),
            }))
        }

        fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
            let name = name_of(bind).ok_or_else(|| ListenError::InvalidEndpoint(bind.into()))?;
            let bell = Arc::new(FdBell::new().map_err(ListenError::Io)?);
            let (backlog, waiting) = crossbeam_channel::bounded(BACKLOG);
            let id = NEXT_ID.fetch_add(1, Relaxed);
            let entry = Arc::new(Entry {
                id,
                closed: AtomicBool::new(false),
                backlog,
                bell: bell.clone(),
            });
            let map = registry().pin();
            if map.try_insert(name.to_string(), entry).is_err() {
                return Err(ListenError::AddressInUse(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{SCHEME}{name} is served already"),
                )));
            }
            Ok(Box::new(InprocListener {
                id,
                name: name.to_string(),
                waiting,
                bell,
                transport: self.clone(),
            }))
        }
    }

    /// Puts one end of a new pair in the backlog of the listener of `name`; the other end.
    fn dial(name: &str) -> io::Result<MemoryStream> {
        let map = registry().pin();
        let entry = map.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nobody listens on {SCHEME}{name}"),
            )
        })?;
        let (ours, theirs) = pair(&format!("{SCHEME}{name}"))?;
        match entry.backlog.try_send(theirs) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("the backlog of {SCHEME}{name} is full"),
                ))
            }
            // The listener was dropped after the lookup.
            Err(TrySendError::Disconnected(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nobody listens on {SCHEME}{name}"),
                ))
            }
        }
        // The listener's drop sets `closed` before it drains the backlog: either it drains
        // this connection, or this sees `closed` (both sequentially consistent).
        if entry.closed.load(SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nobody listens on {SCHEME}{name}"),
            ));
        }
        entry.bell.ring();
        Ok(ours)
    }

    impl InprocTransport {
        fn connection(&self, stream: MemoryStream) -> io::Result<Connection> {
            Connection::new(Box::new(stream), self.max_frame_size)
        }
    }

    /// An in-process connection: made at once, so the first readiness event (or none)
    /// finishes it.
    #[derive(Debug)]
    pub struct InprocConnecting {
        connection: Option<Connection>,
    }

    impl Connecting for InprocConnecting {
        fn advance(&mut self) -> Option<Result<Connection, ConnectError>> {
            self.connection.take().map(Ok)
        }
    }

    impl Source for InprocConnecting {
        fn register(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            match &mut self.connection {
                Some(connection) => connection.source().register(registry, token, interests),
                None => Ok(()),
            }
        }

        fn reregister(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            match &mut self.connection {
                Some(connection) => connection.source().reregister(registry, token, interests),
                None => Ok(()),
            }
        }

        fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
            match &mut self.connection {
                Some(connection) => connection.source().deregister(registry),
                None => Ok(()),
            }
        }
    }

    /// A name served in this process. Dropping it frees the name; the connections in its
    /// backlog are closed.
    #[derive(Debug)]
    pub struct InprocListener {
        id: u64,
        name: String,
        waiting: Receiver<MemoryStream>,
        /// Readable when a connect rang it.
        bell: Arc<FdBell>,
        transport: InprocTransport,
    }

    impl InprocListener {
        /// Drains the bell, then takes a waiting connection. In that order: a connect that
        /// rings after the drain makes a new readiness event.
        fn take(&mut self) -> io::Result<Option<Connection>> {
            self.bell.drain();
            match self.waiting.try_recv() {
                Ok(stream) => self.transport.connection(stream).map(Some),
                Err(_) => Ok(None),
            }
        }
    }

    impl Listener for InprocListener {
        fn accept(&mut self) -> Result<Connection, AcceptError> {
            loop {
                if let Some(connection) = self.take().map_err(AcceptError::Io)? {
                    return Ok(connection);
                }
                match self.waiting.recv_timeout(Duration::from_millis(100)) {
                    Ok(stream) => {
                        return self.transport.connection(stream).map_err(AcceptError::Io)
                    }
                    Err(_) => continue,
                }
            }
        }

        fn try_accept(&mut self) -> Result<Option<Connection>, AcceptError> {
            self.take().map_err(AcceptError::Io)
        }

        fn endpoint(&self) -> String {
            format!("{SCHEME}{}", self.name)
        }

        fn releaser(&self) -> Option<crate::transport::Releaser> {
            let (name, id) = (self.name.clone(), self.id);
            Some(Box::new(move || release(&name, id)))
        }
    }

    /// Frees `name` if listener `id` holds it: connects find nobody from now on, and one
    /// that joined the backlog just before is refused (the drop closes what is left there).
    fn release(name: &str, id: u64) {
        let map = registry().pin();
        if let Ok(Some((_, entry))) = map.remove_if(name, |_, entry| entry.id == id) {
            entry.closed.store(true, SeqCst);
        }
    }

    impl Drop for InprocListener {
        fn drop(&mut self) {
            release(&self.name, self.id);
            // The connections nobody accepted end now (their ends see the end of the
            // stream), not when the map reclaims the entry's memory.
            while self.waiting.try_recv().is_ok() {}
        }
    }

    impl Source for InprocListener {
        fn register(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            SourceFd(&self.bell.fd()).register(registry, token, interests)
        }

        fn reregister(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            SourceFd(&self.bell.fd()).reregister(registry, token, interests)
        }

        fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
            SourceFd(&self.bell.fd()).deregister(registry)
        }
    }
}

/// Without Unix sockets every call is `Unsupported`; endpoints are still checked first.
#[cfg(not(unix))]
impl Transport for InprocTransport {
    fn accepts(&self, address: &str) -> bool {
        name_of(address).is_some()
    }

    fn connect(&self, endpoint: &str) -> Result<super::Connection, ConnectError> {
        name_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        Err(ConnectError::Unsupported(UNSUPPORTED.into()))
    }

    fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
        name_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        Err(ConnectError::Unsupported(UNSUPPORTED.into()))
    }

    fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
        name_of(bind).ok_or_else(|| ListenError::InvalidEndpoint(bind.into()))?;
        Err(ListenError::Unsupported(UNSUPPORTED.into()))
    }
}

#[cfg(not(unix))]
const UNSUPPORTED: &str = "in-process connections are not supported on this platform";

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let transport = InprocTransport::default();
        assert!(transport.accepts("inproc://jobs"));
        assert!(transport.accepts("inproc://a/b c"));
        for bad in ["inproc://", "jobs", "tcp://a:1", "inproc:/x", ""] {
            assert!(!transport.accepts(bad), "{bad:?}");
            assert!(matches!(
                transport.listen(bad),
                Err(ListenError::InvalidEndpoint(_))
            ));
        }
        let long = format!("inproc://{}", "x".repeat(256));
        assert!(!transport.accepts(&long));
    }

    #[test]
    fn a_name_is_served_once_and_freed_by_the_listener_s_drop() {
        let transport = InprocTransport::default();
        let listener = transport.listen("inproc://served-once").unwrap();
        assert!(matches!(
            transport.listen("inproc://served-once"),
            Err(ListenError::AddressInUse(_))
        ));
        drop(listener);
        assert!(matches!(
            transport.connect("inproc://served-once"),
            Err(ConnectError::Io(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused
        ));
        let _again = transport.listen("inproc://served-once").unwrap();
    }

    #[test]
    fn frames_go_both_ways_across_threads() {
        let transport = InprocTransport::default();
        let mut listener = transport.listen("inproc://threads").unwrap();
        let dialler = std::thread::spawn(move || {
            let mut client = InprocTransport::default()
                .connect("inproc://threads")
                .unwrap();
            client.send(b"ping").unwrap();
            client.recv().unwrap()
        });
        let mut server = listener.accept().unwrap();
        assert_eq!(server.local_endpoint(), "inproc://threads");
        assert_eq!(server.recv().unwrap(), b"ping");
        server.send(b"pong").unwrap();
        assert_eq!(dialler.join().unwrap(), b"pong");
    }

    #[test]
    fn connections_left_in_the_backlog_end_with_their_listener() {
        let transport = InprocTransport::default();
        let listener = transport.listen("inproc://dropped-backlog").unwrap();
        let mut client = transport.connect("inproc://dropped-backlog").unwrap();
        drop(listener);
        assert!(client.recv().is_err(), "the end of the stream");
    }
}
