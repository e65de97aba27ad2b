//! TLS over TCP (`tcps://host:port`): rustls with the ring provider, TLS 1.3 and 1.2, and
//! mutual authentication when the listening side asks for it.
//!
//! # Contract
//!
//! - A [`TlsTransport`] is the TCP transport with a TLS session between the socket and the
//!   framing: the same options (`noDelay`, `maxFrameSize`, [`Framing`]), its frames inside
//!   TLS. With [`Framing::SplinterV1`] the version negotiation follows the handshake, inside
//!   TLS, as in Splinter's TLS transport.
//! - The handshake is the connection's opening ([`Stream::open_some`]): it never blocks a
//!   thread. The lobby drives it for dialled connections ([`Connecting`]) and for accepted
//!   ones (the accept holds the connection while it opens). A peer that fails to
//!   authenticate (no certificate when one is required, an unknown CA, an expired
//!   certificate, the wrong name) fails that one connect or accept with kind `Tls`; the
//!   listener goes on.
//! - [`TlsStream::read`] hands out plaintext rustls holds before it reads the socket
//!   again, reads TLS records only when rustls has none, and says `WouldBlock` only when
//!   both are empty, so a reactor that reads until `WouldBlock` (edge-triggered) never
//!   leaves plaintext behind. What reading makes rustls send (alerts, key updates) goes
//!   out at once as far as the socket takes it.
//! - Ciphertext rustls holds is bounded: [`TlsStream::write`] takes no plaintext while
//!   ciphertext of an earlier write waits on a socket that would block (it says
//!   `WouldBlock`), and [`Stream::has_pending_output`] / [`Stream::flush_output`] let the
//!   owner finish writing it on the next writable event though no frame is left to write.
//! - A peer's `close_notify` and a TCP end without it both end the stream (`read` returns
//!   0; the framing layer tells `Eof` from `EofMidFrame`). [`Stream::close`] sends
//!   `close_notify`, best effort, before it shuts the socket.
//! - After the handshake the stream keeps the peer's end-entity certificate (DER), which
//!   the listening side has only if it asked for one ([`Stream::peer_certificate`]).

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::error::{ListenError, TlsFailure};
use super::tcp::{KeepAlive, TcpStream, TcpTransport};
use super::{ConnectError, Connecting, Listener, Stream, Transport};
use crate::codec::Framing;
use crate::splinter::Side;
use crate::Connection;

/// The scheme of TLS endpoints.
pub(crate) const SCHEME: &str = "tcps://";

/// The most ciphertext a session holds for the socket (rustls's default is 64 KiB): a
/// write of several large frames becomes one run of records and one system call.
const SENDABLE_LIMIT: usize = 256 * 1024;
/// Bytes read from the socket at once. rustls reads 4 KiB a call; reading the socket in
/// larger pieces and handing them to rustls from memory saves most of the system calls of
/// a fast stream. Allocated at the first read, kept with the connection.
const INBOUND_CHUNK: usize = 32 * 1024;

/// What a [`TlsTransport`] is made from: PEM text (as Node's `tls` takes it), each option
/// possibly holding several PEM blocks.
#[derive(Debug, Default, Clone)]
pub struct TlsOptions {
    /// The private key (PKCS#8, PKCS#1 or SEC1 PEM): needed to listen, and to dial with a
    /// client certificate.
    pub key: Option<Vec<u8>>,
    /// This side's certificate chain, end-entity first (PEM).
    pub cert: Option<Vec<u8>>,
    /// The certificates that sign the peers this side trusts (PEM). Without it a dialling
    /// side trusts the Mozilla roots (as Node's `tls` does by default).
    pub ca: Option<Vec<u8>>,
    /// Listening side: require a client certificate signed by `ca` (mutual authentication).
    pub request_cert: bool,
    /// Dialling side: the name the server's certificate must carry; default the host of the
    /// endpoint.
    pub servername: Option<String>,
}

/// Why a [`TlsTransport`] could not be made from its options.
#[derive(Debug)]
pub struct TlsOptionsError {
    /// The option at fault (`key`, `cert`, `ca`, `requestCert`, `servername`).
    pub option: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for TlsOptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "options.{}: {}", self.option, self.message)
    }
}

impl std::error::Error for TlsOptionsError {}

fn bad(option: &'static str, message: impl ToString) -> TlsOptionsError {
    TlsOptionsError {
        option,
        message: message.to_string(),
    }
}

/// The rustls configurations of a transport, shared by its connections.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    client: Arc<ClientConfig>,
    /// `None` without a key and a certificate: such a transport only dials.
    server: Option<Arc<ServerConfig>>,
    servername: Option<ServerName<'static>>,
}

impl TlsSetup {
    fn new(options: &TlsOptions) -> Result<Self, TlsOptionsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let certs = match &options.cert {
            Some(pem) => Some(certificates(pem, "cert")?),
            None => None,
        };
        let key = match &options.key {
            Some(pem) => Some(
                PrivateKeyDer::from_pem_slice(pem)
                    .map_err(|err| bad("key", format!("no private key in PEM ({err})")))?,
            ),
            None => None,
        };
        let identity = match (certs, key) {
            (Some(certs), Some(key)) => Some((certs, key)),
            (None, None) => None,
            (Some(_), None) => return Err(bad("key", "a cert needs its key")),
            (None, Some(_)) => return Err(bad("cert", "a key needs its cert")),
        };
        let ca = match &options.ca {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(pem, "ca")? {
                    roots
                        .add(cert)
                        .map_err(|err| bad("ca", format!("not a usable CA certificate: {err}")))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        if options.request_cert && ca.is_none() {
            return Err(bad(
                "requestCert",
                "requires `ca`: the CAs a client certificate must be signed by",
            ));
        }
        let servername = match &options.servername {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|err| bad("servername", format!("{name:?}: {err}")))?,
            ),
            None => None,
        };

        let roots = ca.clone().unwrap_or_else(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        });
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|err| bad("key", err))?
            .with_root_certificates(roots);
        let client = match &identity {
            Some((certs, key)) => client
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|err| bad("key", format!("does not fit the cert: {err}")))?,
            None => client.with_no_client_auth(),
        };

        let server = match identity {
            Some((certs, key)) => {
                let builder = ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .map_err(|err| bad("key", err))?;
                let builder = match (&ca, options.request_cert) {
                    (Some(roots), true) => {
                        let verifier =
                            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                                .build()
                                .map_err(|err| bad("ca", err))?;
                        builder.with_client_cert_verifier(verifier)
                    }
                    _ => builder.with_no_client_auth(),
                };
                let config = builder
                    .with_single_cert(certs, key)
                    .map_err(|err| bad("key", format!("does not fit the cert: {err}")))?;
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(TlsSetup {
            client: Arc::new(client),
            server,
            servername,
        })
    }

    /// The session of a new connection: a client for `server_name`, or a server.
    fn session(
        &self,
        side: Side,
        server_name: Option<ServerName<'static>>,
    ) -> io::Result<rustls::Connection> {
        let session = match side {
            Side::Dialler => {
                let name = (self.servername.clone())
                    .or(server_name)
                    .ok_or_else(|| io::Error::other("no server name to verify"))?;
                rustls::Connection::from(
                    ClientConnection::new(self.client.clone(), name).map_err(io::Error::other)?,
                )
            }
            Side::Listener => {
                let config = self.server.clone().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no key and cert to listen")
                })?;
                rustls::Connection::from(ServerConnection::new(config).map_err(io::Error::other)?)
            }
        };
        let mut session = session;
        session.set_buffer_limit(Some(SENDABLE_LIMIT));
        Ok(session)
    }

    /// A stream over `tcp` whose handshake is still to do.
    pub(crate) fn stream(
        &self,
        tcp: TcpStream,
        side: Side,
        server_name: Option<ServerName<'static>>,
    ) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp,
            session: self.session(side, server_name)?,
            inbound: Inbound::default(),
            plaintext: 0,
            open: false,
            eof: false,
            peer_certificate: None,
            close_notify_sent: false,
        })
    }

    pub(crate) fn can_listen(&self) -> bool {
        self.server.is_some()
    }
}

/// Every certificate of a PEM text; at least one.
fn certificates(
    pem: &[u8],
    option: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsOptionsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(option, format!("unparsable PEM ({err})")))?;
    if certs.is_empty() {
        return Err(bad(option, "no CERTIFICATE in PEM"));
    }
    Ok(certs)
}

/// The server name of a `tcps://host:port` endpoint's host.
pub(crate) fn server_name_of(host_and_port: &str) -> Option<ServerName<'static>> {
    let (host, _) = host_and_port.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string()).ok()
}

/// The TLS transport: the TCP transport's frames inside TLS (`tcps://host:port`).
///
/// # Examples
///
/// ```no_run
/// use wiremesh_core::{TlsOptions, TlsTransport, Transport};
///
/// let server = TlsTransport::new(&TlsOptions {
///     key: Some(std::fs::read("server-key.pem").unwrap()),
///     cert: Some(std::fs::read("server-cert.pem").unwrap()),
///     ..TlsOptions::default()
/// })
/// .unwrap();
/// let mut listener = server.listen("tcps://127.0.0.1:0").unwrap();
/// # let _ = listener.endpoint();
/// ```
#[derive(Debug, Clone)]
pub struct TlsTransport {
    tcp: TcpTransport,
}

impl TlsTransport {
    /// A transport made from `options` (checked here: unparsable PEM, a key that does not
    /// fit its certificate, `requestCert` without `ca` are refused).
    pub fn new(options: &TlsOptions) -> Result<Self, TlsOptionsError> {
        let setup = Arc::new(TlsSetup::new(options)?);
        Ok(TlsTransport {
            tcp: TcpTransport::default().with_tls(setup),
        })
    }

    /// See [`TcpTransport::with_max_frame_size`].
    pub fn with_max_frame_size(mut self, max_frame_size: u32) -> Self {
        self.tcp = self.tcp.with_max_frame_size(max_frame_size);
        self
    }

    /// See [`TcpTransport::with_no_delay`].
    pub fn with_no_delay(mut self, no_delay: bool) -> Self {
        self.tcp = self.tcp.with_no_delay(no_delay);
        self
    }

    /// See [`TcpTransport::with_keep_alive`]: on the TCP socket under the session.
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.tcp = self.tcp.with_keep_alive(keep_alive);
        self
    }

    /// See [`TcpTransport::with_user_timeout`]: on the TCP socket under the session.
    pub fn with_user_timeout(mut self, user_timeout: Option<Duration>) -> Self {
        self.tcp = self.tcp.with_user_timeout(user_timeout);
        self
    }

    /// See [`TcpTransport::with_framing`]: the frames (and the negotiation) inside TLS.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.tcp = self.tcp.with_framing(framing);
        self
    }

    /// [`Transport::start_connect`] to an address (`tcps://ip:port`) whose certificate
    /// must name `server_name` (the `servername` option, if set, wins).
    pub fn start_connect_named(
        &self,
        endpoint: &str,
        server_name: &str,
    ) -> Result<Box<dyn Connecting>, ConnectError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|err| {
            ConnectError::Tls(format!("not a valid server name {server_name:?}: {err}"))
        })?;
        self.tcp.start_connect_as(endpoint, Some(name))
    }
}

impl Transport for TlsTransport {
    fn accepts(&self, address: &str) -> bool {
        self.tcp.accepts(address)
    }

    fn connect(&self, endpoint: &str) -> Result<Connection, ConnectError> {
        self.tcp.connect(endpoint)
    }

    fn start_connect(&self, endpoint: &str) -> Result<Box<dyn Connecting>, ConnectError> {
        self.tcp.start_connect(endpoint)
    }

    fn listen(&self, bind: &str) -> Result<Box<dyn Listener>, ListenError> {
        self.tcp.listen(bind)
    }
}

/// A TLS session over a TCP stream, non-blocking (see the module's contract).
pub(crate) struct TlsStream {
    tcp: TcpStream,
    session: rustls::Connection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    inbound: Inbound,
    /// Plaintext bytes rustls holds, not yet read.
    plaintext: usize,
    /// The handshake is done.
    open: bool,
    /// The socket has ended (a read returned 0).
    eof: bool,
    peer_certificate: Option<Vec<u8>>,
    /// `finish_writing` has queued the `close_notify`.
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("open", &self.open)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// A TLS failure as the `io::Error` a stream returns: `InvalidData`, the failure inside.
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(err.to_string()))
}

/// Ciphertext read from the socket ahead of rustls: `data[start..end]`.
#[derive(Default)]
struct Inbound {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// What rustls reads from: the bytes read ahead, else one read of the socket (whose
/// `WouldBlock` and end come through as they are).
struct InboundReader<'a> {
    inbound: &'a mut Inbound,
    tcp: &'a mut TcpStream,
}

impl Read for InboundReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let inbound = &mut *self.inbound;
        if inbound.start == inbound.end {
            if inbound.data.is_empty() {
                inbound.data = vec![0; INBOUND_CHUNK];
            }
            let n = self.tcp.read(&mut inbound.data)?;
            inbound.start = 0;
            inbound.end = n;
        }
        let n = out.len().min(inbound.end - inbound.start);
        out[..n].copy_from_slice(&inbound.data[inbound.start..inbound.start + n]);
        inbound.start += n;
        Ok(n)
    }
}

impl TlsStream {
    /// Reads TLS records once (from the bytes read ahead, else from the socket) and
    /// processes them; `Ok(0)` at the socket's end. What processing makes rustls send
    /// goes out as far as the socket takes it.
    fn read_records(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut reader = InboundReader {
            inbound: &mut self.inbound,
            tcp: &mut self.tcp,
        };
        let n = match self.session.read_tls(&mut reader) {
            Ok(0) => {
                self.eof = true;
                0
            }
            Ok(n) => n,
            Err(err) => return Err(err),
        };
        match self.session.process_new_packets() {
            Ok(state) => self.plaintext = state.plaintext_bytes_to_read(),
            Err(err) => {
                // The alert that tells the peer why, best effort.
                let _ = self.flush_output();
                return Err(tls_error(err));
            }
        }
        // Best effort: an error of the socket shows on the next read or write, and the
        // plaintext just read must not be lost to it.
        let _ = self.flush_output();
        Ok(n)
    }
}

impl TlsStream {
    /// Reads records until rustls holds plaintext: `Ok(true)`; `Ok(false)` at the end of
    /// the stream (a close_notify, or the socket's end); `WouldBlock` when the socket has
    /// nothing more.
    fn fill_plaintext(&mut self) -> io::Result<bool> {
        loop {
            if self.plaintext > 0 {
                return Ok(true);
            }
            if self.read_records()? == 0 && self.eof {
                return Ok(self.plaintext > 0);
            }
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => {
                    self.plaintext = self.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                // No plaintext now: read records below.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end all the same.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) => return Err(err),
            }
            if self.read_records()? == 0 && self.eof {
                // The session saw the end: the reader says which (loop once more).
                match self.session.reader().read(buf) {
                    Ok(n) => {
                        self.plaintext = self.plaintext.saturating_sub(n);
                        return Ok(n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(err) => return Err(err),
                }
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Bounded: no more plaintext while ciphertext waits on a full socket.
        if !self.flush_output()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write_vectored(bufs)?;
        // Out now as far as the socket takes it; the rest on the next writable event.
        self.flush_output()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_output()? {
            true => self.tcp.flush(),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Stream for TlsStream {
    fn local_endpoint(&self) -> String {
        tls_endpoint(self.tcp.local_endpoint())
    }

    fn remote_endpoint(&self) -> String {
        tls_endpoint(self.tcp.remote_endpoint())
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.tcp.set_nonblocking(nonblocking)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }

    fn shutdown(&self) -> io::Result<()> {
        self.tcp.shutdown()
    }

    fn close(&mut self) -> io::Result<()> {
        if self.open {
            self.session.send_close_notify();
            let _ = self.flush_output();
        }
        self.tcp.shutdown()
    }

    fn is_open(&self) -> bool {
        self.open
    }

    fn open_some(&mut self) -> io::Result<bool> {
        loop {
            if !self.flush_output()? {
                return Ok(false);
            }
            if !self.session.is_handshaking() {
                self.open = true;
                self.peer_certificate = (self.session.peer_certificates())
                    .and_then(|chain| chain.first())
                    .map(|cert| cert.to_vec());
                return Ok(true);
            }
            match self.read_records() {
                Ok(0) if self.eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        TlsFailure(
                            "the peer closed the connection during the TLS handshake".into(),
                        ),
                    ))
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn has_pending_output(&self) -> bool {
        self.session.wants_write()
    }

    fn flush_output(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// `close_notify` (TLS's own end of the stream), then FIN once it is written.
    fn finish_writing(&mut self) -> io::Result<bool> {
        if !self.close_notify_sent {
            self.session.send_close_notify();
            self.close_notify_sent = true;
        }
        if !self.flush_output()? {
            return Ok(false);
        }
        self.tcp.shutdown_write().map(|()| true)
    }

    /// Appends the plaintext rustls holds (at most `max` bytes) to `buf`, copied from
    /// rustls's buffer into `buf`'s spare capacity: a large payload read record by record
    /// is not zeroed ahead of what arrives.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if !self.fill_plaintext()? {
            // The end (a close_notify, or the socket's end without one).
            return Ok(0);
        }
        let mut reader = self.session.reader();
        let mut n = 0;
        while n < max {
            let chunk = match reader.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => chunk,
                // No more plaintext now (the first round always has some: `fill_plaintext`);
                // an end shows on the next read.
                _ => break,
            };
            let take = chunk.len().min(max - n);
            buf.extend_from_slice(&chunk[..take]);
            reader.consume(take);
            n += take;
        }
        debug_assert!(n > 0, "fill_plaintext found plaintext");
        self.plaintext = self.plaintext.saturating_sub(n);
        Ok(n)
    }
}

delegate_source!(TlsStream, tcp);

/// `tcps://ip:port` for the TCP stream's `tcp://ip:port`.
fn tls_endpoint(tcp: String) -> String {
    match tcp.strip_prefix("tcp://") {
        Some(rest) => format!("{SCHEME}{rest}"),
        None => tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    struct Pki {
        ca: String,
        server_key: String,
        server_cert: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        Pki {
            ca: ca.pem(),
            server_key: server_key.serialize_pem(),
            server_cert: server.pem(),
        }
    }

    /// A connected pair: (client, server), both open, non-blocking.
    fn pair(pki: &Pki) -> (Connection, Connection) {
        let server = TlsTransport::new(&TlsOptions {
            key: Some(pki.server_key.clone().into()),
            cert: Some(pki.server_cert.clone().into()),
            ..TlsOptions::default()
        })
        .unwrap();
        let client = TlsTransport::new(&TlsOptions {
            ca: Some(pki.ca.clone().into()),
            ..TlsOptions::default()
        })
        .unwrap();
        let mut listener = server.listen("tcps://127.0.0.1:0").unwrap();
        let endpoint = listener.endpoint();
        let accepting = std::thread::spawn(move || listener.accept().unwrap());
        let client = client.connect(&endpoint).unwrap();
        (client, accepting.join().unwrap())
    }

    /// The TLS transport sets the TCP options on the socket under each session, dialled
    /// and accepted.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_tcp_options_reach_the_sockets_under_the_sessions() {
        use super::super::tcp::socket_options;
        let pki = pki();
        let keep_alive = Some(KeepAlive {
            idle: Some(Duration::from_secs(3)),
            interval: Some(Duration::from_millis(200)),
            count: Some(4),
        });
        let user_timeout = Some(Duration::from_millis(1234));
        let server = TlsTransport::new(&TlsOptions {
            key: Some(pki.server_key.clone().into()),
            cert: Some(pki.server_cert.clone().into()),
            ..TlsOptions::default()
        })
        .unwrap()
        .with_keep_alive(keep_alive)
        .with_user_timeout(user_timeout);
        let client = TlsTransport::new(&TlsOptions {
            ca: Some(pki.ca.clone().into()),
            ..TlsOptions::default()
        })
        .unwrap()
        .with_keep_alive(keep_alive)
        .with_user_timeout(user_timeout);
        let mut listener = server.listen("tcps://127.0.0.1:0").unwrap();
        let endpoint = listener.endpoint();
        let accepting = std::thread::spawn(move || listener.accept().unwrap());
        let client = client.connect(&endpoint).unwrap();
        let server = accepting.join().unwrap();
        for (side, connection) in [("dialled", &client), ("accepted", &server)] {
            let got = socket_options::of(connection);
            assert!(got.keep_alive, "{side}");
            assert_eq!(
                (got.idle, got.interval, got.count, got.user_timeout),
                (
                    Duration::from_secs(3),
                    Duration::from_secs(1),
                    4,
                    user_timeout
                ),
                "{side}: the interval rounded up to a second"
            );
        }
    }

    /// Reads until `want` bytes arrived, retrying `WouldBlock` (the peer's writes are in
    /// flight).
    fn read_exactly(stream: &mut dyn Stream, want: usize, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0; chunk];
        while got.len() < want {
            match stream.read(&mut buf) {
                Ok(0) => panic!("ended after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("{err}"),
            }
        }
        got
    }

    #[test]
    fn reads_hand_out_buffered_plaintext_before_reading_the_socket_and_block_only_when_both_are_empty(
    ) {
        let pki = pki();
        let (mut client, mut server) = pair(&pki);
        let message: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        client.source().write_all(&message).unwrap();
        while !client.source().flush_output().unwrap() {}
        // One-byte reads: each of them after the first comes from rustls's buffer, none
        // says WouldBlock while plaintext is left.
        let got = read_exactly(server.source(), message.len(), 1);
        assert_eq!(got, message);
        let err = server.source().read(&mut [0; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    /// `read_append` takes plaintext straight from rustls's buffer: every byte once, in
    /// order, never more than the window, whatever the windows.
    #[test]
    fn read_append_appends_the_plaintext_in_order_within_each_window() {
        let pki = pki();
        let (mut client, mut server) = pair(&pki);
        let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = message.clone();
        let writer = std::thread::spawn(move || {
            let mut at = 0;
            while at < sent.len() {
                match client.source().write(&sent[at..]) {
                    Ok(n) => at += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(err) => panic!("{err}"),
                }
            }
            while !client.source().flush_output().unwrap() {
                std::thread::yield_now();
            }
            client
        });
        let mut got = Vec::new();
        for round in 0.. {
            if got.len() == message.len() {
                break;
            }
            let window = [1, 700, 16 * 1024, 64 * 1024][round % 4].min(message.len() - got.len());
            let before = got.len();
            match server.source().read_append(&mut got, window) {
                Ok(0) => panic!("ended after {before} bytes"),
                Ok(n) => {
                    assert!(n <= window, "{n} bytes for a window of {window}");
                    assert_eq!(got.len(), before + n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("{err}"),
            }
        }
        assert!(got == message, "the plaintext, in order");
        writer.join().unwrap();
    }

    #[test]
    fn a_full_socket_bounds_ciphertext_and_a_flush_finishes_it() {
        let pki = pki();
        let (mut client, mut server) = pair(&pki);
        let chunk = vec![7u8; 64 * 1024];
        let mut accepted = 0;
        // Until the socket is full: then no plaintext is taken while ciphertext waits.
        loop {
            match client.source().write(&chunk) {
                Ok(n) => accepted += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("{err}"),
            }
            assert!(accepted < 512 * 1024 * 1024, "the socket never filled");
        }
        let stream = client.source();
        assert!(stream.has_pending_output(), "records wait for the socket");
        assert_eq!(
            stream.write(&chunk).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "no plaintext while ciphertext waits"
        );
        let reader = std::thread::spawn(move || {
            let got = read_exactly(server.source(), accepted, 64 * 1024);
            assert!(got.iter().all(|&b| b == 7));
            server
        });
        while !client.source().flush_output().unwrap() {
            std::thread::yield_now();
        }
        assert!(!client.source().has_pending_output());
        reader.join().unwrap();
    }

    #[test]
    fn close_notify_and_a_bare_tcp_end_both_end_the_stream() {
        let pki = pki();
        let (mut client, mut server) = pair(&pki);
        server.source().write_all(b"x").unwrap();
        assert_eq!(read_exactly(client.source(), 1, 1), b"x");
        client.disconnect().unwrap();
        let mut buf = [0; 8];
        let end = loop {
            match server.source().read(&mut buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other,
            }
        };
        assert_eq!(end.unwrap(), 0, "close_notify");

        let (mut client, mut server) = pair(&pki);
        // The client reads what the server sent after the handshake (TLS 1.3 session
        // tickets): a socket closed with bytes unread would reset the connection instead.
        server.source().write_all(b"x").unwrap();
        assert_eq!(read_exactly(client.source(), 1, 1), b"x");
        // The socket closes without close_notify.
        drop(client);
        let end = loop {
            match server.source().read(&mut buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other,
            }
        };
        assert_eq!(end.unwrap(), 0, "a TCP end without close_notify");
    }

    #[test]
    fn an_unknown_server_fails_the_handshake_with_a_tls_error() {
        let pki = pki();
        let other = self::pki();
        let server = TlsTransport::new(&TlsOptions {
            key: Some(pki.server_key.into()),
            cert: Some(pki.server_cert.into()),
            ..TlsOptions::default()
        })
        .unwrap();
        let client = TlsTransport::new(&TlsOptions {
            ca: Some(other.ca.into()),
            ..TlsOptions::default()
        })
        .unwrap();
        let mut listener = server.listen("tcps://127.0.0.1:0").unwrap();
        let endpoint = listener.endpoint();
        let accepting = std::thread::spawn(move || listener.accept());
        assert!(matches!(
            client.connect(&endpoint),
            Err(ConnectError::Tls(_))
        ));
        assert!(matches!(
            accepting.join().unwrap(),
            Err(crate::AcceptError::Tls(_))
        ));
    }

    #[test]
    fn options_are_checked() {
        let pki = pki();
        let err = TlsTransport::new(&TlsOptions {
            key: Some(b"nothing".to_vec()),
            cert: Some(pki.server_cert.clone().into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert_eq!(err.option, "key");
        let err = TlsTransport::new(&TlsOptions {
            request_cert: true,
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert_eq!(err.option, "requestCert");
        let other = self::pki();
        let err = TlsTransport::new(&TlsOptions {
            key: Some(other.server_key.into()),
            cert: Some(pki.server_cert.into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert_eq!(err.option, "key", "{err}");
    }
}
