//! Unix domain sockets: the same frames as TCP over a socket file, for peers on one host.
//!
//! # Contract
//!
//! - Endpoints are `unix:///absolute/path`; a relative path, an empty one or one too long
//!   for the system's socket addresses is `InvalidEndpoint`.
//! - `listen` on a path where a socket file is left that nobody serves (its process died
//!   without removing it) replaces it; a path that is served, or that is not a socket, is
//!   `AddressInUse`: nothing but a stale socket is ever deleted. A listener removes its
//!   socket file when it is dropped, if the file is still the one it made.
//! - Connecting never blocks: a full backlog on the other side is an `IoError` (Unix
//!   sockets refuse with `EAGAIN` where TCP would retry).
//! - An accepted connection's remote endpoint, and a dialling connection's local one, are
//!   `unix://` (the dialling end is unnamed).
//! - Where the system has no Unix sockets (Windows here), every call is `Unsupported`.

use super::error::{ConnectError, ListenError};
use super::{Connecting, Listener, Transport};
use crate::codec::DEFAULT_MAX_FRAME_SIZE;

const SCHEME: &str = "unix://";

/// The Unix-socket transport.
///
/// # Examples
///
/// ```
/// # #[cfg(unix)] {
/// use wiremesh_core::{Transport, UnixTransport};
///
/// let path = std::env::temp_dir().join(format!("wiremesh-doc-{}.sock", std::process::id()));
/// let transport = UnixTransport::default();
/// let mut listener = transport.listen(&format!("unix://{}", path.display())).unwrap();
/// let mut client = transport.connect(&listener.endpoint()).unwrap();
/// let mut server = listener.accept().unwrap();
/// client.send(b"hello").unwrap();
/// assert_eq!(server.recv().unwrap(), b"hello");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UnixTransport {
    max_frame_size: u32,
}

impl Default for UnixTransport {
    fn default() -> Self {
        UnixTransport {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl UnixTransport {
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

/// The path of `unix:///absolute/path`, if `address` is one.
fn path_of(address: &str) -> Option<&str> {
    let path = address.strip_prefix(SCHEME)?;
    (path.len() > 1 && path.starts_with('/') && !path.contains('\0')).then_some(path)
}

#[cfg(unix)]
pub use imp::{UnixConnecting, UnixListener};

#[cfg(unix)]
mod imp {
    use std::io::{self, IoSlice, Read, Write};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use mio::event::Source;
    use mio::{Interest, Registry, Token};
    use socket2::{SockAddr, SockRef};

    use super::super::error::AcceptError;
    use super::super::{Connection, Stream};
    use super::*;

    impl Transport for UnixTransport {
        fn accepts(&self, address: &str) -> bool {
            path_of(address).is_some()
        }

        fn connect(&self, endpoint: &str) -> Result<Connection, ConnectError> {
            let path =
                path_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
            let stream = std::os::unix::net::UnixStream::connect(path)
                .map_err(|err| connect_error(endpoint, err))?;
            stream.set_nonblocking(true).map_err(ConnectError::Io)?;
            self.connection(mio::net::UnixStream::from_std(stream))
                .map_err(ConnectError::Io)
        }

        fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
            let path =
                path_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
            let stream =
                mio::net::UnixStream::connect(path).map_err(|err| connect_error(endpoint, err))?;
            Ok(Box::new(UnixConnecting {
                stream: Some(stream),
                transport: self.clone(),
            }))
        }

        fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
            let path = path_of(bind).ok_or_else(|| ListenError::InvalidEndpoint(bind.into()))?;
            let listener = match bind_listener(path) {
                Err(err) if err.kind() == io::ErrorKind::AddrInUse && stale(path) => {
                    std::fs::remove_file(path).map_err(ListenError::Io)?;
                    bind_listener(path)
                }
                bound => bound,
            }
            .map_err(|err| match err.kind() {
                io::ErrorKind::InvalidInput => ListenError::InvalidEndpoint(bind.into()),
                _ => ListenError::from_io(err),
            })?;
            // Which file is ours: a listener removes its socket file only if it is still
            // this one.
            let identity = std::fs::symlink_metadata(path)
                .map(|meta| (meta.dev(), meta.ino()))
                .map_err(ListenError::Io)?;
            Ok(Box::new(UnixListener {
                listener,
                path: PathBuf::from(path),
                identity,
                transport: self.clone(),
            }))
        }
    }

    impl UnixTransport {
        fn connection(&self, stream: mio::net::UnixStream) -> io::Result<Connection> {
            let local = endpoint(stream.local_addr()?.as_pathname());
            let remote = endpoint(stream.peer_addr()?.as_pathname());
            let stream = UnixStream::with_endpoints(stream, local, remote);
            Connection::new(Box::new(stream), self.max_frame_size)
        }
    }

    /// A path too long for a socket address is a malformed endpoint, not a failure.
    fn connect_error(endpoint: &str, err: io::Error) -> ConnectError {
        match err.kind() {
            io::ErrorKind::InvalidInput => ConnectError::InvalidEndpoint(endpoint.into()),
            _ => ConnectError::Io(err),
        }
    }

    /// The socket buffers asked for each connection.
    const SOCKET_BUFFER: usize = 1 << 20;

    /// How many connections may wait for an accept (as for TCP; the system caps it).
    const BACKLOG: i32 = 4096;

    fn bind_listener(path: &str) -> io::Result<mio::net::UnixListener> {
        let address = SockAddr::unix(path)?;
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.bind(&address)?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        let listener = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket));
        Ok(mio::net::UnixListener::from_std(listener))
    }

    /// True if `path` is a socket file that nobody serves: a connection to it is refused.
    /// A served socket accepts (or its backlog is full: `EAGAIN`); any other file, or an
    /// error, is left alone.
    fn stale(path: &str) -> bool {
        let is_socket = std::fs::symlink_metadata(path)
            .map(|meta| meta.file_type().is_socket())
            .unwrap_or(false);
        is_socket
            && matches!(
                mio::net::UnixStream::connect(path),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused
            )
    }

    /// A Unix-socket connection being made without blocking (see [`Connecting`]).
    #[derive(Debug)]
    pub struct UnixConnecting {
        /// `None` once the outcome has been given.
        stream: Option<mio::net::UnixStream>,
        transport: UnixTransport,
    }

    impl Connecting for UnixConnecting {
        fn advance(&mut self) -> Option<Result<Connection, ConnectError>> {
            let stream = self.stream.as_ref()?;
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
            Some(self.transport.connection(stream).map_err(ConnectError::Io))
        }
    }

    impl Source for UnixConnecting {
        fn register(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            match &mut self.stream {
                Some(stream) => stream.register(registry, token, interests),
                None => Ok(()),
            }
        }

        fn reregister(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            match &mut self.stream {
                Some(stream) => stream.reregister(registry, token, interests),
                None => Ok(()),
            }
        }

        fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
            match &mut self.stream {
                Some(stream) => stream.deregister(registry),
                None => Ok(()),
            }
        }
    }

    /// A listening Unix socket. It stays in non-blocking mode; [`Listener::accept`] waits
    /// by switching to blocking mode for the call.
    #[derive(Debug)]
    pub struct UnixListener {
        listener: mio::net::UnixListener,
        path: PathBuf,
        /// The device and inode of the socket file it made.
        identity: (u64, u64),
        transport: UnixTransport,
    }

    impl UnixListener {
        fn accept_once(&mut self) -> io::Result<Option<Connection>> {
            let (stream, _) = self.listener.accept()?;
            // A connection reset while it waited in the backlog concerns it alone: skipped.
            Ok(self.transport.connection(stream).ok())
        }
    }

    fn transient(err: &io::Error) -> bool {
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
        )
    }

    impl Listener for UnixListener {
        fn accept(&mut self) -> Result<Connection, AcceptError> {
            SockRef::from(&self.listener)
                .set_nonblocking(false)
                .map_err(AcceptError::Io)?;
            let result = loop {
                match self.accept_once() {
                    Ok(Some(connection)) => break Ok(connection),
                    Ok(None) => {}
                    Err(err) if transient(&err) => {}
                    Err(err) => break Err(err),
                }
            };
            let restored = SockRef::from(&self.listener).set_nonblocking(true);
            let connection = result.map_err(AcceptError::Io)?;
            restored.map_err(AcceptError::Io)?;
            Ok(connection)
        }

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
            endpoint(Some(&self.path))
        }
    }

    impl Drop for UnixListener {
        fn drop(&mut self) {
            let ours = std::fs::symlink_metadata(&self.path)
                .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
            if ours {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    delegate_source!(UnixListener, listener);

    /// A Unix stream that mio can poll (of a listener's connection, or of a socket pair).
    #[derive(Debug)]
    struct UnixStream {
        stream: mio::net::UnixStream,
        local: String,
        remote: String,
    }

    impl UnixStream {
        /// A stream named by the transport that made it. Asks for deeper socket buffers than the default
        /// (208 KiB on Linux), as TCP's autotuned ones are: fewer wake-ups per megabyte
        /// (benchmark/README.md); the system's maximum caps them.
        fn with_endpoints(stream: mio::net::UnixStream, local: String, remote: String) -> Self {
            let _ = SockRef::from(&stream).set_send_buffer_size(SOCKET_BUFFER);
            let _ = SockRef::from(&stream).set_recv_buffer_size(SOCKET_BUFFER);
            UnixStream {
                stream,
                local,
                remote,
            }
        }
    }

    /// `unix:///path`, or `unix://` for an unnamed socket.
    fn endpoint(path: Option<&Path>) -> String {
        match path {
            Some(path) => format!("{SCHEME}{}", path.display()),
            None => SCHEME.to_string(),
        }
    }

    impl Stream for UnixStream {
        fn local_endpoint(&self) -> String {
            self.local.clone()
        }

        fn remote_endpoint(&self) -> String {
            self.remote.clone()
        }

        fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
            SockRef::from(&self.stream).set_nonblocking(nonblocking)
        }

        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            SockRef::from(&self.stream).set_read_timeout(timeout)
        }

        fn shutdown(&self) -> io::Result<()> {
            self.stream.shutdown(std::net::Shutdown::Both)
        }

        fn finish_writing(&mut self) -> io::Result<bool> {
            self.stream
                .shutdown(std::net::Shutdown::Write)
                .map(|()| true)
        }

        fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
            buf.reserve(max);
            let spare = &mut buf.spare_capacity_mut()[..max];
            // mio's reads on Unix are plain `recv`s on the socket: the same read.
            let n = SockRef::from(&self.stream).recv(spare)?;
            // SAFETY: `recv` initialised the first `n` bytes of `spare` (socket2 returns
            // how many bytes the kernel wrote), which start at `buf.len()`.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        }
    }

    impl Read for UnixStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.stream.read(buf)
        }
    }

    impl Write for UnixStream {
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

    delegate_source!(UnixStream, stream);
}

/// Without Unix sockets every call is `Unsupported`; endpoints are still checked first.
#[cfg(not(unix))]
impl Transport for UnixTransport {
    fn accepts(&self, address: &str) -> bool {
        path_of(address).is_some()
    }

    fn connect(&self, endpoint: &str) -> Result<super::Connection, ConnectError> {
        path_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        Err(ConnectError::Unsupported(UNSUPPORTED.into()))
    }

    fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
        path_of(endpoint).ok_or_else(|| ConnectError::InvalidEndpoint(endpoint.into()))?;
        Err(ConnectError::Unsupported(UNSUPPORTED.into()))
    }

    fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
        path_of(bind).ok_or_else(|| ListenError::InvalidEndpoint(bind.into()))?;
        Err(ListenError::Unsupported(UNSUPPORTED.into()))
    }
}

#[cfg(not(unix))]
const UNSUPPORTED: &str = "Unix domain sockets are not supported on this platform";

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn socket_path(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("wiremesh-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        format!("unix://{}/{name}.sock", dir.display())
    }

    #[test]
    fn accepts_absolute_paths_only() {
        let transport = UnixTransport::default();
        assert!(transport.accepts("unix:///tmp/a.sock"));
        for bad in [
            "unix://",
            "unix:///",
            "unix://relative",
            "/tmp/a.sock",
            "tcp://a:1",
            "",
        ] {
            assert!(!transport.accepts(bad), "{bad:?}");
        }
        let long = format!("unix:///{}", "x".repeat(200));
        assert!(transport.accepts(&long));
        assert!(matches!(
            transport.listen(&long),
            Err(ListenError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            transport.start_connect(&long),
            Err(ConnectError::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn frames_go_both_ways_and_endpoints_name_the_path() {
        let transport = UnixTransport::default();
        let bind = socket_path("both-ways");
        let mut listener = transport.listen(&bind).unwrap();
        assert_eq!(listener.endpoint(), bind);
        let mut client = transport.connect(&bind).unwrap();
        let mut server = listener.accept().unwrap();
        assert_eq!(client.remote_endpoint(), bind);
        assert_eq!(server.local_endpoint(), bind);
        assert_eq!(server.remote_endpoint(), "unix://");
        client.send(b"ping").unwrap();
        assert_eq!(server.recv().unwrap(), b"ping");
        server.send(b"pong").unwrap();
        assert_eq!(client.recv().unwrap(), b"pong");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_served_one_is_in_use() {
        let transport = UnixTransport::default();
        let bind = socket_path("stale");
        let path = path_of(&bind).unwrap().to_string();
        // A socket file nobody serves, as a crashed process leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(std::path::Path::new(&path).exists());
        let listener = transport.listen(&bind).unwrap();
        // Served now: a second listener is refused, and the file stays.
        assert!(matches!(
            transport.listen(&bind),
            Err(ListenError::AddressInUse(_))
        ));
        assert!(transport.connect(&bind).is_ok());
        // Dropping the listener removes its file.
        drop(listener);
        assert!(!std::path::Path::new(&path).exists());
        // A file that is not a socket is never replaced.
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            transport.listen(&bind),
            Err(ListenError::AddressInUse(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn nobody_listening_is_an_io_error() {
        let transport = UnixTransport::default();
        let bind = socket_path("nobody");
        assert!(matches!(transport.connect(&bind), Err(ConnectError::Io(_))));
        assert!(matches!(
            transport.start_connect(&bind),
            Err(ConnectError::Io(_))
        ));
    }
}
