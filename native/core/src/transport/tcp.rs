//! TCP: Splinter's raw transport, or its TCP transport's versioned frames
//! ([`Framing::SplinterV1`]); with a TLS session between the socket and the framing, the
//! TLS transport's connections too ([`super::tls`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::{self, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use socket2::SockRef;

use super::error::OpenError;
use super::error::{AcceptError, ConnectError, ListenError};
use super::tls::TlsSetup;
use super::{Connecting, Connection, Listener, Stream, Transport};
use crate::codec::{Framing, DEFAULT_MAX_FRAME_SIZE};
use crate::splinter::Side;

/// How long a blocking connect or accept waits for each read of a negotiation.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEME: &str = "tcp://";

/// The TCP transport: frames over TCP, byte-compatible with Splinter's `RawTransport`, or
/// with Splinter's `TcpTransport` (0.3.13 on) when made
/// [`with_framing`](Self::with_framing)`(Framing::SplinterV1)`.
///
/// # Examples
///
/// ```
/// use wiremesh_core::{TcpTransport, Transport};
///
/// let transport = TcpTransport::default();
/// let mut listener = transport.listen("127.0.0.1:0").unwrap();
/// let mut client = transport.connect(&listener.endpoint()).unwrap();
/// let mut server = listener.accept().unwrap();
/// client.send(b"hello").unwrap();
/// assert_eq!(server.recv().unwrap(), b"hello");
/// ```
#[derive(Debug, Clone)]
pub struct TcpTransport {
    max_frame_size: u32,
    no_delay: bool,
    keep_alive: Option<KeepAlive>,
    user_timeout: Option<Duration>,
    framing: Framing,
    /// The TLS transport's: a session between each socket and its framing.
    tls: Option<Arc<TlsSetup>>,
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            no_delay: true,
            keep_alive: None,
            user_timeout: None,
            framing: Framing::Raw,
            tls: None,
        }
    }
}

/// TCP keepalive: how the system probes a connection on which nothing has arrived for a
/// while, and when it gives up on it (see [`TcpTransport::with_keep_alive`]). A field left
/// `None` keeps the system's default (Linux: `net.ipv4.tcp_keepalive_time` 7200 s,
/// `tcp_keepalive_intvl` 75 s, `tcp_keepalive_probes` 9).
///
/// # Notes
///
/// The system takes `idle` and `interval` in whole seconds: they are rounded up (a
/// nonzero duration under a second is one second). A dead peer is declared about
/// `idle + count × interval` after the last packet that arrived, and only while the
/// connection has nothing of its own waiting for an acknowledgement: data in flight is
/// the retransmissions' business (bounded by [`TcpTransport::with_user_timeout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepAlive {
    /// How long the connection may be idle (nothing arriving) before the first probe
    /// (`TCP_KEEPIDLE`; `TCP_KEEPALIVE` on macOS).
    pub idle: Option<Duration>,
    /// The time between probes that go unanswered (`TCP_KEEPINTVL`).
    pub interval: Option<Duration>,
    /// How many unanswered probes make the peer dead (`TCP_KEEPCNT`).
    pub count: Option<u32>,
}

/// Whether this platform bounds unacknowledged data ([`TcpTransport::with_user_timeout`],
/// `TCP_USER_TIMEOUT`): Linux, Android and Fuchsia.
pub const USER_TIMEOUT_SUPPORTED: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "fuchsia"
));

/// `duration` in whole seconds, rounded up: how the system takes keepalive times.
fn whole_seconds(duration: Duration) -> Duration {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    Duration::from_secs(seconds)
}

impl KeepAlive {
    /// socket2's parameters: keepalive on, with the times given (rounded up to seconds).
    fn parameters(&self) -> socket2::TcpKeepalive {
        let mut parameters = socket2::TcpKeepalive::new();
        if let Some(idle) = self.idle {
            parameters = parameters.with_time(whole_seconds(idle));
        }
        #[cfg(any(
            target_os = "android",
            target_os = "dragonfly",
            target_os = "freebsd",
            target_os = "fuchsia",
            target_os = "illumos",
            target_os = "ios",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd",
            target_os = "windows",
        ))]
        {
            if let Some(interval) = self.interval {
                parameters = parameters.with_interval(whole_seconds(interval));
            }
            if let Some(count) = self.count {
                parameters = parameters.with_retries(count);
            }
        }
        parameters
    }
}

impl TcpTransport {
    /// A transport whose connections accept frames of up to `max_frame_size` bytes
    /// (default 16 MiB; any value up to 4 GiB - 1).
    pub fn with_max_frame_size(mut self, max_frame_size: u32) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }

    /// Whether connections set `TCP_NODELAY` (default `true`: the mesh batches writes
    /// itself, so Nagle's algorithm only adds latency).
    pub fn with_no_delay(mut self, no_delay: bool) -> Self {
        self.no_delay = no_delay;
        self
    }

    /// Whether connections set `SO_KEEPALIVE`, and with which times (default `None`: no
    /// keepalive). With it, a peer that vanished without a word (its host down, the path
    /// cut) while the connection was idle is declared dead by the system: the connection
    /// ends with [`DisconnectReason::Timeout`](super::DisconnectReason::Timeout). See
    /// [`KeepAlive`] for the rounding of its times. Platforms without `TCP_KEEPINTVL` or
    /// `TCP_KEEPCNT` (OpenBSD, Haiku) keep their defaults for those.
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// The longest data written may stay unacknowledged before the system declares the
    /// peer dead (`TCP_USER_TIMEOUT`, in milliseconds; default `None`: the system's
    /// retransmission limit, about 15 minutes on Linux). The connection then ends with
    /// [`DisconnectReason::Timeout`](super::DisconnectReason::Timeout). On Linux it also
    /// replaces keepalive's count: a connection whose probes go unanswered for this long is
    /// dead.
    ///
    /// # Notes
    ///
    /// Only where [`USER_TIMEOUT_SUPPORTED`] (Linux, Android, Fuchsia); elsewhere the value
    /// is kept but not applied (the JavaScript binding refuses it instead).
    pub fn with_user_timeout(mut self, user_timeout: Option<Duration>) -> Self {
        self.user_timeout = user_timeout;
        self
    }

    /// Applies the socket options (`TCP_NODELAY`, keepalive, user timeout) to a socket
    /// dialled or accepted.
    fn configure(&self, stream: &mio::net::TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.no_delay)?;
        let socket = SockRef::from(stream);
        if let Some(keep_alive) = &self.keep_alive {
            socket.set_tcp_keepalive(&keep_alive.parameters())?;
        }
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        if let Some(user_timeout) = self.user_timeout {
            socket.set_tcp_user_timeout(Some(user_timeout))?;
        }
        Ok(())
    }

    /// A transport whose connections frame as `framing` (default [`Framing::Raw`]). With
    /// [`Framing::SplinterV1`] a connection opens with Splinter's version negotiation:
    /// [`connect`](Transport::connect) offers version 1 and fails if the listener refuses
    /// it; a listener answers each connection's offer before handing it out, and refuses
    /// (answers 0, then closes) one that does not offer version 1.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The TLS transport's TCP: `tcps://` endpoints, each connection in a TLS session.
    pub(crate) fn with_tls(mut self, tls: Arc<TlsSetup>) -> Self {
        self.tls = Some(tls);
        self
    }

    fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => super::tls::SCHEME,
            None => SCHEME,
        }
    }

    /// The `host:port` of an address this transport takes.
    fn host_and_port<'a>(&self, address: &'a str) -> Option<&'a str> {
        match self.tls {
            // Only with its scheme: a bare `host:port` is TCP's.
            Some(_) => host_and_port(address.strip_prefix(super::tls::SCHEME)?),
            None => host_and_port(address),
        }
    }

    /// The largest frame its connections accept.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Its connections' keepalive, if they have one.
    pub fn keep_alive(&self) -> Option<KeepAlive> {
        self.keep_alive
    }

    /// Its connections' user timeout, if they have one.
    pub fn user_timeout(&self) -> Option<Duration> {
        self.user_timeout
    }

    /// How its connections frame.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    fn connection(
        &self,
        stream: net::TcpStream,
        side: Side,
        server_name: Option<ServerName<'static>>,
    ) -> io::Result<Connection> {
        stream.set_nonblocking(true)?;
        self.mio_connection(mio::net::TcpStream::from_std(stream), side, server_name)
    }

    /// A connection over `stream`, its opening (a TLS handshake; a negotiation, if its
    /// framing has one) not begun. A dialler's TLS session verifies `server_name`.
    fn mio_connection(
        &self,
        stream: mio::net::TcpStream,
        side: Side,
        server_name: Option<ServerName<'static>>,
    ) -> io::Result<Connection> {
        self.configure(&stream)?;
        let tcp = TcpStream::new(stream)?;
        let stream: Box<dyn Stream> = match &self.tls {
            Some(tls) => Box::new(tls.stream(tcp, side, server_name)?),
            None => Box::new(tcp),
        };
        Connection::framed(stream, self.max_frame_size, self.framing, side)
    }

    /// The name a dialler's TLS session verifies for `address` (`host:port`).
    fn server_name(&self, address: &str) -> Option<ServerName<'static>> {
        self.tls.as_ref()?;
        super::tls::server_name_of(address)
    }

    /// [`Transport::start_connect`], a TLS session verifying `server_name`.
    pub(crate) fn start_connect_as(
        &self,
        endpoint: &str,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Box<dyn Connecting>, ConnectError> {
        let address = self
            .host_and_port(endpoint)
            .ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        let server_name = server_name.or_else(|| self.server_name(address));
        let address = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(ConnectError::Io)?
            .next()
            .ok_or_else(|| {
                ConnectError::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{endpoint:?} resolves to no address"),
                ))
            })?;
        let stream = mio::net::TcpStream::connect(address).map_err(ConnectError::Io)?;
        Ok(Box::new(TcpConnecting {
            stream: Some(stream),
            opening: None,
            transport: self.clone(),
            server_name,
        }))
    }
}

/// A connect's failure to open its connection: a refused negotiation fails the connect,
/// as does a failed TLS handshake (kind `Tls`).
fn connect_open_error(err: OpenError) -> ConnectError {
    ConnectError::from(err)
}

impl Transport for TcpTransport {
    fn accepts(&self, address: &str) -> bool {
        self.host_and_port(address).is_some()
    }

    fn connect(&self, endpoint: &str) -> Result<Connection, ConnectError> {
        let address = self
            .host_and_port(endpoint)
            .ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        let stream = net::TcpStream::connect(address).map_err(ConnectError::Io)?;
        let mut connection = self
            .connection(stream, Side::Dialler, self.server_name(address))
            .map_err(ConnectError::Io)?;
        connection
            .open(Some(OPEN_TIMEOUT))
            .map_err(connect_open_error)?;
        Ok(connection)
    }

    fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
        self.start_connect_as(endpoint, None)
    }

    fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
        let address = self
            .host_and_port(bind)
            .ok_or_else(|| ListenError::InvalidEndpoint(bind.into()))?;
        if self.tls.as_ref().is_some_and(|tls| !tls.can_listen()) {
            return Err(ListenError::Unsupported(
                "a TlsTransport without key and cert can only connect".into(),
            ));
        }
        let listener = bind_listener(address).map_err(ListenError::from_io)?;
        listener.set_nonblocking(true).map_err(ListenError::Io)?;
        let listener = mio::net::TcpListener::from_std(listener);
        let local = listener.local_addr().map_err(ListenError::Io)?;
        let endpoint = format!("{}{local}", self.scheme());
        Ok(Box::new(TcpListener {
            listener,
            endpoint,
            transport: self.clone(),
        }))
    }
}

/// How many connections may wait for an accept, as `listen(2)`'s backlog. The system caps
/// it (Linux at `net.core.somaxconn`, 4096 by default). The standard library's 128 drops
/// the handshakes of a larger burst of clients, which then retry after a second or more.
const BACKLOG: i32 = 4096;

/// Binds a listening socket to the first address of `address` that takes it, as
/// `std::net::TcpListener::bind` does, but with a deep backlog ([`BACKLOG`]).
fn bind_listener(address: &str) -> io::Result<net::TcpListener> {
    use std::net::ToSocketAddrs as _;
    let mut last = None;
    for address in address.to_socket_addrs()? {
        let bound = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(address),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            // As the standard library does: on Unix a port in TIME_WAIT can be bound
            // again (on Windows the option would let two listeners share a port).
            #[cfg(not(windows))]
            socket.set_reuse_address(true)?;
            socket.bind(&address.into())?;
            socket.listen(BACKLOG)?;
            Ok::<_, io::Error>(net::TcpListener::from(socket))
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// A TCP connection being made without blocking (see [`Connecting`]): the socket's
/// connect, then the connection's opening negotiation, if its framing has one.
#[derive(Debug)]
pub struct TcpConnecting {
    /// The socket while it connects; `None` once connected (or the outcome given).
    stream: Option<mio::net::TcpStream>,
    /// The connection while it negotiates, on the same socket (still registered).
    opening: Option<Connection>,
    transport: TcpTransport,
    /// The name the TLS session verifies (TLS only).
    server_name: Option<ServerName<'static>>,
}

impl TcpConnecting {
    /// Takes the negotiation as far as it goes; the connection once it is open.
    fn open(&mut self) -> Option<Result<Connection, ConnectError>> {
        let connection = self.opening.as_mut()?;
        match connection.open_some() {
            Ok(false) => None,
            Ok(true) => self.opening.take().map(Ok),
            Err(err) => {
                // Dropped: the socket closes.
                self.opening = None;
                Some(Err(connect_open_error(err)))
            }
        }
    }
}

impl Connecting for TcpConnecting {
    fn advance(&mut self) -> Option<Result<Connection, ConnectError>> {
        if self.opening.is_some() {
            return self.open();
        }
        let stream = self.stream.as_ref()?;
        // As mio documents it: an error taken from the socket is the attempt's failure;
        // a peer address means it is connected; `NotConnected` means not yet.
        if let Ok(Some(err)) | Err(err) = stream.take_error() {
            self.stream = None;
            return Some(Err(ConnectError::Io(err)));
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotConnected => return None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return None,
            Err(err) => {
                self.stream = None;
                return Some(Err(ConnectError::Io(err)));
            }
        }
        let stream = self.stream.take().expect("checked above");
        let server_name = self.server_name.take();
        match self
            .transport
            .mio_connection(stream, Side::Dialler, server_name)
        {
            Ok(connection) => {
                self.opening = Some(connection);
                self.open()
            }
            Err(err) => Some(Err(ConnectError::Io(err))),
        }
    }
}

impl Source for TcpConnecting {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match (&mut self.stream, &mut self.opening) {
            (Some(stream), _) => stream.register(registry, token, interests),
            (None, Some(opening)) => opening.source().register(registry, token, interests),
            (None, None) => Ok(()),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match (&mut self.stream, &mut self.opening) {
            (Some(stream), _) => stream.reregister(registry, token, interests),
            (None, Some(opening)) => opening.source().reregister(registry, token, interests),
            (None, None) => Ok(()),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match (&mut self.stream, &mut self.opening) {
            (Some(stream), _) => stream.deregister(registry),
            (None, Some(opening)) => opening.source().deregister(registry),
            (None, None) => Ok(()),
        }
    }
}

/// A listening TCP socket. It stays in non-blocking mode; [`Listener::accept`] waits by
/// switching to blocking mode for the call.
#[derive(Debug)]
pub struct TcpListener {
    listener: mio::net::TcpListener,
    endpoint: String,
    transport: TcpTransport,
}

impl TcpListener {
    /// Takes the next connection from the backlog: `Ok(None)` if that one cannot be used.
    /// Its negotiation, if its framing has one, is not begun.
    fn accept_once(&mut self) -> io::Result<Option<Connection>> {
        let (stream, _) = self.listener.accept()?;
        // Accepted sockets may inherit the listener's blocking mode: `connection` sets it.
        // A connection the peer reset while it waited in the backlog fails here (it has no
        // peer address any more): that concerns it alone, not the listener, so it is
        // skipped (closed) and the next one is taken.
        Ok(self
            .transport
            .connection(stream.into(), Side::Listener, None)
            .ok())
    }
}

/// Accept errors that concern one would-be connection, not the listener.
fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
    )
}

impl Listener for TcpListener {
    fn accept(&mut self) -> Result<Connection, AcceptError> {
        let socket = SockRef::from(&self.listener);
        socket.set_nonblocking(false).map_err(AcceptError::Io)?;
        let result = loop {
            match self.accept_once() {
                Ok(Some(connection)) => break Ok(connection),
                Ok(None) => {}
                Err(err) if transient(&err) => {}
                Err(err) => break Err(err),
            }
        };
        let restored = SockRef::from(&self.listener).set_nonblocking(true);
        let mut connection = result.map_err(AcceptError::Io)?;
        restored.map_err(AcceptError::Io)?;
        connection
            .open(Some(OPEN_TIMEOUT))
            .map_err(AcceptError::from)?;
        Ok(connection)
    }

    /// The connection may still have to negotiate ([`Connection::open_some`]).
    fn try_accept(&mut self) -> Result<Option<Connection>, AcceptError> {
        loop {
            match self.accept_once() {
                Ok(Some(connection)) => return Ok(Some(connection)),
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if transient(&err) => {}
                Err(err) => return Err(AcceptError::Io(err)),
            }
        }
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}

delegate_source!(TcpListener, listener);

/// A TCP stream that mio can poll.
#[derive(Debug)]
pub(crate) struct TcpStream {
    stream: mio::net::TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
}

impl TcpStream {
    /// Shuts the writing direction down (FIN after what was written).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(net::Shutdown::Write)
    }

    pub(crate) fn new(stream: mio::net::TcpStream) -> io::Result<Self> {
        Ok(TcpStream {
            local: stream.local_addr()?,
            remote: stream.peer_addr()?,
            stream,
        })
    }
}

impl Stream for TcpStream {
    fn local_endpoint(&self) -> String {
        endpoint(self.local)
    }

    fn remote_endpoint(&self) -> String {
        endpoint(self.remote)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        SockRef::from(&self.stream).set_nonblocking(nonblocking)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        SockRef::from(&self.stream).set_read_timeout(timeout)
    }

    fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(net::Shutdown::Both)
    }

    fn finish_writing(&mut self) -> io::Result<bool> {
        self.shutdown_write().map(|()| true)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn bytes_acknowledged(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        // SAFETY: `info` is a plain C struct that getsockopt fills up to `len` bytes (a
        // kernel older than the field leaves it zero: then nothing counts as acknowledged).
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let done = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (done == 0).then_some(info.tcpi_bytes_acked)
    }

    #[cfg(unix)]
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let spare = &mut buf.spare_capacity_mut()[..max];
        // On Unix mio reads are plain `recv`s on the socket, so reading through socket2 is
        // the same read. (Not on Windows, where mio must see each read to re-arm polling.)
        let n = SockRef::from(&self.stream).recv(spare)?;
        // SAFETY: `recv` initialised the first `n` bytes of `spare` (socket2 returns how
        // many bytes the kernel wrote), which start at `buf.len()`.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

delegate_source!(TcpStream, stream);

/// `tcp://ip:port`, with IPv6 addresses in brackets.
fn endpoint(address: SocketAddr) -> String {
    format!("{SCHEME}{address}")
}

/// The `host:port` of a TCP address (`host:port` or `tcp://host:port`), if it is one: a
/// non-empty host without spaces (IPv6 in brackets) and a port from 0 to 65535.
fn host_and_port(address: &str) -> Option<&str> {
    let rest = address.strip_prefix(SCHEME).unwrap_or(address);
    let (host, port) = rest.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && !host.contains([':', '/', ' ', '[', ']', '@'])
    };
    (host_ok && !port.starts_with('+')).then_some(rest)
}

/// Test support: reading back the options the system holds for a connection's socket.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod socket_options {
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    use socket2::SockRef;

    use crate::Connection;

    /// What the system holds for a socket: `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
    /// `TCP_KEEPCNT`, `TCP_USER_TIMEOUT` (`None`: 0, the system's default), `TCP_NODELAY`.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct Options {
        pub keep_alive: bool,
        pub idle: Duration,
        pub interval: Duration,
        pub count: u32,
        pub user_timeout: Option<Duration>,
        pub no_delay: bool,
    }

    fn address(endpoint: &str) -> SocketAddr {
        let (_, address) = endpoint
            .split_once("://")
            .expect("an endpoint with a scheme");
        address.parse().expect("an ip:port")
    }

    /// The options of `connection`'s socket. A connection does not lend its socket out, so
    /// the socket is found among the process's descriptors by its two addresses.
    pub(crate) fn of(connection: &Connection) -> Options {
        let local = address(connection.local_endpoint());
        let remote = address(connection.remote_endpoint());
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            // SAFETY: only queried (getsockname, getsockopt); a descriptor another test
            // closed meanwhile answers EBADF or another socket's addresses, never ours,
            // which `connection` keeps open.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = SockRef::from(&borrowed);
            let is = |got: std::io::Result<socket2::SockAddr>, want| {
                got.ok().and_then(|a| a.as_socket()) == Some(want)
            };
            if is(socket.local_addr(), local) && is(socket.peer_addr(), remote) {
                return Options {
                    keep_alive: socket.keepalive().unwrap(),
                    idle: socket.tcp_keepalive_time().unwrap(),
                    interval: socket.tcp_keepalive_interval().unwrap(),
                    count: socket.tcp_keepalive_retries().unwrap(),
                    user_timeout: socket.tcp_user_timeout().unwrap(),
                    no_delay: socket.tcp_nodelay().unwrap(),
                };
            }
        }
        panic!("no socket from {local} to {remote} in this process");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_append_adds_what_arrived_and_no_more_than_asked() {
        use std::io::Write as _;
        let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::new(mio::net::TcpStream::from_std(accepted)).unwrap();
        let mut buf = b"kept".to_vec();
        let err = stream.read_append(&mut buf, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buf, b"kept", "nothing added when nothing arrived");
        peer.write_all(b"0123456789").unwrap();
        let mut got = 0;
        while got < 10 {
            match stream.read_append(&mut buf, 6) {
                Ok(n) => {
                    assert!(n <= 6);
                    got += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(buf, b"kept0123456789");
        drop(peer);
        loop {
            match stream.read_append(&mut buf, 6) {
                Ok(0) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(buf, b"kept0123456789");
    }

    #[test]
    fn accepts_host_port_with_or_without_scheme() {
        let transport = TcpTransport::default();
        for good in [
            "127.0.0.1:0",
            "tcp://127.0.0.1:8080",
            "localhost:65535",
            "tcp://[::1]:80",
            "[::1]:1",
        ] {
            assert!(transport.accepts(good), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "127.0.0.1:+80",
            ":80",
            "tcp://",
            "tls://127.0.0.1:80",
            "udp://host:1",
            "::1:80",
            "[::1:80",
            "[nothost]:80",
            "a b:80",
        ] {
            assert!(!transport.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_endpoints_are_refused_before_any_io() {
        let transport = TcpTransport::default();
        assert!(
            matches!(transport.connect("nonsense"), Err(ConnectError::InvalidEndpoint(e)) if e == "nonsense")
        );
        assert!(matches!(
            transport.listen("tcp://x"),
            Err(ListenError::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn endpoints_name_the_bound_port() {
        let transport = TcpTransport::default();
        let mut listener = transport.listen("tcp://127.0.0.1:0").unwrap();
        let endpoint = listener.endpoint();
        assert!(
            endpoint.starts_with("tcp://127.0.0.1:") && !endpoint.ends_with(":0"),
            "{endpoint}"
        );
        let client = transport.connect(&endpoint).unwrap();
        let server = listener.accept().unwrap();
        assert_eq!(client.remote_endpoint(), endpoint);
        assert_eq!(server.remote_endpoint(), client.local_endpoint());
    }

    /// A burst of clients connecting at once completes its handshakes in the kernel's
    /// backlog before a single accept: the listener asks for a deep one (Linux caps it at
    /// `net.core.somaxconn`, 4096 by default).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_burst_of_connections_waits_in_a_deep_backlog() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(4096);
        let burst = 1000.min(somaxconn);
        let transport = TcpTransport::default();
        let listener = transport.listen("127.0.0.1:0").unwrap();
        let address: SocketAddr = listener.endpoint()[SCHEME.len()..].parse().unwrap();
        let clients: Vec<_> = (0..burst)
            .map(|_| mio::net::TcpStream::connect(address).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let connected = loop {
            let connected = clients.iter().filter(|c| c.peer_addr().is_ok()).count();
            if connected == burst || std::time::Instant::now() > deadline {
                break connected;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(connected, burst, "handshakes completed with no accept yet");
        drop(listener);
    }

    #[test]
    fn a_refused_connection_is_an_io_error() {
        let transport = TcpTransport::default();
        let port = {
            let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        assert!(matches!(
            transport.connect(&format!("127.0.0.1:{port}")),
            Err(ConnectError::Io(_))
        ));
    }

    #[test]
    fn whole_seconds_round_up() {
        let ms = Duration::from_millis;
        assert_eq!(whole_seconds(ms(1)), Duration::from_secs(1));
        assert_eq!(whole_seconds(ms(1000)), Duration::from_secs(1));
        assert_eq!(whole_seconds(ms(1001)), Duration::from_secs(2));
        assert_eq!(whole_seconds(ms(1500)), Duration::from_secs(2));
        assert_eq!(whole_seconds(ms(7_200_000)), Duration::from_secs(7200));
    }

    /// Dialled and accepted sockets alike carry the keepalive and the user timeout, as the
    /// system reads them back (idle and interval rounded up to whole seconds).
    #[cfg(target_os = "linux")]
    #[test]
    fn dialled_and_accepted_sockets_carry_keepalive_and_user_timeout() {
        use socket_options::Options;
        let transport = TcpTransport::default()
            .with_keep_alive(Some(KeepAlive {
                idle: Some(Duration::from_millis(1500)),
                interval: Some(Duration::from_millis(1000)),
                count: Some(3),
            }))
            .with_user_timeout(Some(Duration::from_millis(2500)));
        let want = Options {
            keep_alive: true,
            idle: Duration::from_secs(2),
            interval: Duration::from_secs(1),
            count: 3,
            user_timeout: Some(Duration::from_millis(2500)),
            no_delay: true,
        };
        let mut listener = transport.listen("127.0.0.1:0").unwrap();
        let client = transport.connect(&listener.endpoint()).unwrap();
        let server = listener.accept().unwrap();
        assert_eq!(socket_options::of(&client), want, "dialled");
        assert_eq!(socket_options::of(&server), want, "accepted");

        // Dialled without blocking, through `start_connect`, as the lobby does.
        let mut connecting = transport.start_connect(&listener.endpoint()).unwrap();
        let server = listener.accept().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let client = loop {
            match connecting.advance() {
                Some(result) => break result.unwrap(),
                None if std::time::Instant::now() < deadline => std::thread::yield_now(),
                None => panic!("not connected within 5 s"),
            }
        };
        assert_eq!(
            socket_options::of(&client),
            want,
            "dialled without blocking"
        );
        assert_eq!(socket_options::of(&server), want, "accepted");
    }

    /// Without the options a socket keeps the system's defaults: no keepalive, no user
    /// timeout; a keepalive with no times keeps the system's times.
    #[cfg(target_os = "linux")]
    #[test]
    fn sockets_without_the_options_keep_the_system_defaults() {
        let plain = TcpTransport::default();
        let mut listener = plain.listen("127.0.0.1:0").unwrap();
        let client = plain.connect(&listener.endpoint()).unwrap();
        let server = listener.accept().unwrap();
        let defaults = socket_options::of(&client);
        assert!(!defaults.keep_alive);
        assert_eq!(defaults.user_timeout, None);
        assert_eq!(socket_options::of(&server), defaults);

        let keep_alive = TcpTransport::default().with_keep_alive(Some(KeepAlive::default()));
        let client = keep_alive.connect(&listener.endpoint()).unwrap();
        let _server = listener.accept().unwrap();
        let got = socket_options::of(&client);
        assert!(got.keep_alive);
        assert_eq!(
            (got.idle, got.interval, got.count),
            (defaults.idle, defaults.interval, defaults.count),
            "the system's times"
        );
    }
}
