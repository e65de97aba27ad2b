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
    framing: Framing,
    /// The TLS transport's: a session between each socket and its framing.
    tls: Option<Arc<TlsSetup>>,
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            no_delay: true,
            framing: Framing::Raw,
            tls: None,
        }
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
        stream.set_nodelay(self.no_delay)?;
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
}
