//! A whole mesh, fed arbitrary bytes and closes on many connections at once.
//!
//! Each input is a small script: up to 8 raw `std::net::TcpStream` peers over loopback,
//! each connected to a connection added to one mesh, and operations on them (write bytes,
//! write a frame, shut the write side, drop the peer, send an envelope, remove the
//! connection, take what the mesh received, read what the peer got). Then the mesh
//! settles and ends. It asserts:
//!
//! - nothing panics (the reactor's thread included) and nothing hangs: every wait has a
//!   deadline, and a mesh that misses one fails the input;
//! - every envelope the mesh delivers is the next whole frame its peer wrote (once, in
//!   order), and none comes after its connection's disconnect notice;
//! - a notice has a cause, and the cause is what the peer did: the end of its stream
//!   (`Eof`, or `EofMidFrame` with exactly the bytes of the unfinished frame) after every
//!   whole frame it wrote, a header over the maximum (`Protocol`, with that length) after
//!   the frames before it, a reset only where the peer closed with bytes unread; a
//!   connection the script removed has none;
//! - a hostile header ends only that connection: every other open connection still
//!   delivers every whole frame its peer wrote, and can be removed, with nothing pending;
//! - what the mesh sends reaches the peer whole and in order, and what it accepted and did
//!   not write comes back in the notice's `unsent` (a disconnect's or the shutdown's);
//! - a removed connection holds the frames the mesh read and did not deliver: with those
//!   delivered, they are the frames its peer wrote, in order;
//! - an ended connection refuses sends at once; once its end is answered `Finished` its
//!   peer reads every frame accepted before, then the end of the stream, while the
//!   connection still delivers what the peer writes.
//!
//! The input (see README.md beside this folder; `seeds.mjs` writes the seeds):
//!
//! ```text
//! byte 0   bits 0-2: peers - 1 (1 to 8); bit 3: receive as an event loop does
//!          (`Notified::take`), else with the blocking receives and `Mesh::disconnects`;
//!          bit 4: end with `Mesh::shutdown` with the open connections still in the mesh,
//!          else remove them first
//! byte 1   bit k: peer k's connection takes frames of at most 64 bytes (else 16 MiB)
//! byte 2   capacities: incoming 1 + (b & 15) frames, outgoing 1 + (b >> 4) frames
//! then operations, one byte each: op = b & 7, k = (b >> 3) % peers
//!   0 L bytes   peer k writes the L bytes that follow
//!   1 L [bytes] peer k writes one frame: L < 0x80: of the L bytes that follow, else of
//!               (L & 0x7f) * 512 bytes of a pattern
//!   2           peer k shuts down its write side
//!   3           peer k reads what it can, then is dropped
//!   4 L [bytes] the mesh sends connection k an envelope: the payload as for op 1
//!   5           the mesh removes connection k; b & 0x80: ends it instead (`end`: the
//!               peer must read every frame accepted before, then the end of the stream)
//!   6           take what the mesh received; k odd: wait up to 1 ms for something;
//!               k & 2 (blocking receives): with recv_batch
//!   7           peer k reads what has arrived
//! ```

#![no_main]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wiremesh_core::codec::{FrameError, HEADER_LEN};
use wiremesh_core::{
    Connection, Disconnect, DisconnectReason, Disconnects, Ended, Ending, Envelope, Listener, Mesh,
    Notified, Received, RecvError, RecvTimeoutError, RemoveError, SendError, TcpTransport,
    Transport, TryRecvError,
};

/// The maximum frame size of the connections that take small frames.
const SMALL_MAX: u32 = 64;
/// The default maximum frame size (`TcpTransport::default()`).
const DEFAULT_MAX: u32 = 16 * 1024 * 1024;
/// How long anything may take before the mesh is taken to hang. Far more than a healthy
/// mesh ever needs here (well under a millisecond).
const PATIENCE: Duration = Duration::from_secs(10);

/// Two listeners, made once per process: one for each maximum frame size.
struct Listeners {
    default: (Box<dyn Listener>, String),
    small: (Box<dyn Listener>, String),
}

static LISTENERS: OnceLock<Mutex<Listeners>> = OnceLock::new();

fn listeners() -> &'static Mutex<Listeners> {
    LISTENERS.get_or_init(|| {
        // Rust's runtime (and Node) ignore SIGPIPE; libFuzzer's `main` does not. A write to
        // a socket the peer reset would otherwise kill the fuzzer instead of returning
        // EPIPE as it does in every host of the mesh.
        // SAFETY: setting a signal's disposition to SIG_IGN, before any other thread runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let listen = |transport: TcpTransport| {
            let listener = transport.listen("127.0.0.1:0").expect("listen on loopback");
            let address = listener
                .endpoint()
                .strip_prefix("tcp://")
                .expect("a tcp endpoint")
                .to_string();
            (listener, address)
        };
        Mutex::new(Listeners {
            default: listen(TcpTransport::default()),
            small: listen(TcpTransport::default().with_max_frame_size(SMALL_MAX)),
        })
    })
}

/// The bytes the input still holds.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A payload: `L` bytes of the input for `L` below 0x80, else `(L & 0x7f) * 512`
    /// bytes of a pattern.
    fn payload(&mut self) -> Vec<u8> {
        let len = self.byte().unwrap_or(0);
        match len < 0x80 {
            true => self.bytes(usize::from(len)).to_vec(),
            false => {
                let n = usize::from(len & 0x7f) * 512;
                (0..n).map(|i| (i * 7 + n) as u8).collect()
            }
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// One raw peer and everything the script knows of its connection.
struct Peer {
    k: usize,
    id: usize,
    max: u32,
    /// `None` once dropped.
    stream: Option<TcpStream>,
    write_shut: bool,
    /// A write failed (the mesh had closed the connection).
    write_failed: bool,
    /// Every byte the socket took, in order.
    written: Vec<u8>,
    /// The reference decode of `written`: its whole frames, the bytes they span, and the
    /// length of a header over the maximum, where one stops it.
    frames: Vec<Vec<u8>>,
    parsed: usize,
    too_large: Option<u32>,
    /// The payloads the mesh accepted for the connection, in order.
    sent: Vec<Vec<u8>>,
    /// What the peer read and has not yet cut into frames, and how many it cut.
    inbox: Vec<u8>,
    read_frames: usize,
    /// The peer read the end of its stream (or a reset).
    read_ended: bool,
    /// The envelopes the mesh delivered from the connection.
    received: Vec<Vec<u8>>,
    notice: Option<Disconnect>,
    /// Handed back by the script's remove, with the frames it held.
    removed: Option<Connection>,
    pending: Vec<Vec<u8>>,
    /// The script's remove found no connection: the reactor had removed it.
    remove_refused: bool,
    /// The script ended the connection; its answer while it has not come.
    end_called: bool,
    ending: Option<Ending>,
    ended: Option<Ended>,
}

impl Peer {
    fn dropped(&self) -> bool {
        self.stream.is_none()
    }

    /// The peer ended its stream: the mesh must see it end.
    fn closed(&self) -> bool {
        self.write_shut || self.dropped()
    }

    /// The peer may have been reset instead of closed: it was dropped with bytes unread,
    /// or with frames on their way to it.
    fn reset_possible(&self) -> bool {
        self.dropped() && (self.sent.len() > self.read_frames || !self.inbox.is_empty())
    }

    /// A reason the mesh may end the connection by itself.
    fn may_end(&self) -> bool {
        self.closed() || self.too_large.is_some()
    }

    fn advance_reference(&mut self) {
        while self.too_large.is_none() && self.written.len() - self.parsed >= HEADER_LEN {
            let at = self.parsed;
            let len = u32::from_be_bytes(self.written[at..at + HEADER_LEN].try_into().unwrap());
            if len > self.max {
                self.too_large = Some(len);
                break;
            }
            let end = at + HEADER_LEN + len as usize;
            if end > self.written.len() {
                break;
            }
            self.frames
                .push(self.written[at + HEADER_LEN..end].to_vec());
            self.parsed = end;
        }
    }

    /// Bytes of the unfinished frame the peer wrote last.
    fn leftover(&self) -> usize {
        self.written.len() - self.parsed
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.closed() || self.write_failed {
            return;
        }
        let stream = self.stream.as_mut().expect("not dropped");
        let mut at = 0;
        while at < bytes.len() {
            match stream.write(&bytes[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    assert!(
                        self.too_large.is_some() || self.notice.is_some(),
                        "peer {}: a write failed ({err}), yet the mesh had no reason to close",
                        self.k
                    );
                    self.write_failed = true;
                    break;
                }
            }
        }
        self.written.extend_from_slice(&bytes[..at]);
        self.advance_reference();
    }

    /// Reads what has arrived; with a deadline, until the stream ends. Every whole frame
    /// must be the next one the mesh accepted.
    fn read(&mut self, until_end: Option<Instant>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while !self.read_ended {
            match stream.read(&mut buf) {
                Ok(0) => self.read_ended = true,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => match until_end {
                    None => break,
                    Some(deadline) => {
                        assert!(
                            Instant::now() < deadline,
                            "peer {}: the mesh never closed connection {}",
                            self.k,
                            self.id
                        );
                        std::thread::sleep(Duration::from_micros(50));
                    }
                },
                // A reset: what had arrived was read first.
                Err(_) => self.read_ended = true,
            }
        }
        let mut at = 0;
        while self.inbox.len() - at >= HEADER_LEN {
            let len = u32::from_be_bytes(self.inbox[at..at + HEADER_LEN].try_into().unwrap());
            let end = at + HEADER_LEN + len as usize;
            if end > self.inbox.len() {
                break;
            }
            let expected = self.sent.get(self.read_frames).unwrap_or_else(|| {
                panic!(
                    "peer {} read frame {} of {} bytes; the mesh accepted {}",
                    self.k,
                    self.read_frames,
                    len,
                    self.sent.len()
                )
            });
            assert!(
                &self.inbox[at + HEADER_LEN..end] == expected.as_slice(),
                "peer {} read frame {} other than the one sent",
                self.k,
                self.read_frames
            );
            self.read_frames += 1;
            at = end;
        }
        self.inbox.drain(..at);
    }
}

/// How the script receives.
enum Consumer {
    Blocking(Disconnects),
    Notified(Notified),
}

struct Script {
    mesh: Mesh,
    consumer: Consumer,
    peers: Vec<Peer>,
}

impl Script {
    fn peer(&mut self, id: usize) -> &mut Peer {
        self.peers
            .iter_mut()
            .find(|peer| peer.id == id)
            .unwrap_or_else(|| panic!("an envelope or notice for id {id}, which is no peer's"))
    }

    fn on_frame(&mut self, envelope: Envelope) {
        let (id, payload) = envelope.into_parts();
        let peer = self.peer(id);
        assert!(
            peer.notice.is_none(),
            "peer {}: an envelope after the disconnect notice",
            peer.k
        );
        let index = peer.received.len();
        let expected = peer.frames.get(index).unwrap_or_else(|| {
            panic!(
                "peer {}: envelope {index} ({} bytes), but it wrote {} whole frames",
                peer.k,
                payload.len(),
                peer.frames.len()
            )
        });
        assert!(
            &payload == expected,
            "peer {}: envelope {index} is not the frame it wrote",
            peer.k
        );
        peer.received.push(payload);
    }

    fn on_notice(&mut self, notice: Disconnect, at_shutdown: bool) {
        let peer = self.peer(notice.id);
        let k = peer.k;
        assert!(peer.notice.is_none(), "peer {k}: a second notice");
        assert!(
            peer.removed.is_none(),
            "peer {k}: a notice for a connection the script removed"
        );
        let all = peer.received.len() == peer.frames.len();
        match &notice.reason {
            DisconnectReason::Eof | DisconnectReason::EofMidFrame { .. } => {
                assert!(
                    peer.closed(),
                    "peer {k}: {:?}, yet it is open",
                    notice.reason
                );
                assert!(
                    peer.too_large.is_none(),
                    "peer {k}: {:?} past a header over the maximum",
                    notice.reason
                );
                let buffered = match notice.reason {
                    DisconnectReason::EofMidFrame { buffered } => buffered,
                    _ => 0,
                };
                assert!(
                    buffered == peer.leftover()
                        && (buffered > 0)
                            == matches!(notice.reason, DisconnectReason::EofMidFrame { .. }),
                    "peer {k}: {:?}, but {} bytes of a frame were left",
                    notice.reason,
                    peer.leftover()
                );
                assert!(
                    all,
                    "peer {k}: the notice came after {} of its {} frames",
                    peer.received.len(),
                    peer.frames.len()
                );
            }
            DisconnectReason::Protocol(err) => {
                let caused = peer.too_large.map(|len| FrameError::TooLarge {
                    len: u64::from(len),
                    max: peer.max,
                });
                assert_eq!(
                    Some(err),
                    caused.as_ref(),
                    "peer {k}: a protocol error it did not cause"
                );
                assert!(
                    all,
                    "peer {k}: the notice came after {} of its {} frames",
                    peer.received.len(),
                    peer.frames.len()
                );
            }
            DisconnectReason::Io(err) => {
                assert!(
                    peer.reset_possible(),
                    "peer {k}: {err}, yet the peer closed with nothing unread"
                );
            }
            DisconnectReason::Timeout => {
                panic!("peer {k}: a Timeout notice, though no connection here has a timeout");
            }
            DisconnectReason::Shutdown => {
                assert!(
                    at_shutdown,
                    "peer {k}: a Shutdown notice before the shutdown"
                );
            }
        }
        if at_shutdown && !matches!(notice.reason, DisconnectReason::Shutdown) {
            panic!(
                "peer {k}: the shutdown handed back a notice of a connection ending: {:?}",
                notice.reason
            );
        }
        // What it accepted and did not write is the end of what it accepted.
        let unsent = &notice.unsent;
        assert!(
            unsent.len() <= peer.sent.len(),
            "peer {k}: more unsent than sent"
        );
        let tail = &peer.sent[peer.sent.len() - unsent.len()..];
        for (envelope, payload) in unsent.iter().zip(tail) {
            assert_eq!(envelope.id(), peer.id);
            assert!(
                envelope.payload() == payload.as_slice(),
                "peer {k}: unsent frames out of order"
            );
        }
        peer.notice = Some(notice);
    }

    /// Takes what the mesh has received; with `wait`, waits up to 1 ms for something
    /// (blocking receives: for an envelope, with `recv_timeout`); with `batch` (blocking
    /// receives), takes with `recv_batch`. Returns how many envelopes and notices.
    fn take(&mut self, wait: bool, batch: bool) -> usize {
        let mut taken = 0;
        match &self.consumer {
            Consumer::Blocking(disconnects) => {
                let disconnects = disconnects.clone();
                let mut envelopes = Vec::new();
                // Only once frames wait (`is_empty` counts notices too) does recv_batch
                // return at once.
                let frames_waiting = self.mesh.incoming().len();
                if batch && frames_waiting != 0 {
                    match self.mesh.recv_batch(4) {
                        Ok(batch) => envelopes.extend(batch),
                        Err(err) => panic!("recv_batch: {err:?}"),
                    }
                } else if wait {
                    match self.mesh.recv_timeout(Duration::from_millis(1)) {
                        Ok(envelope) => envelopes.push(envelope),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(err) => panic!("recv_timeout: {err:?}"),
                    }
                }
                loop {
                    match self.mesh.try_recv() {
                        Ok(envelope) => envelopes.push(envelope),
                        Err(TryRecvError::Empty) => break,
                        Err(err) => panic!("try_recv: {err:?}"),
                    }
                }
                taken += envelopes.len();
                for envelope in envelopes {
                    self.on_frame(envelope);
                }
                while let Some(notice) = disconnects.try_recv() {
                    self.on_notice(notice, false);
                    taken += 1;
                }
            }
            Consumer::Notified(notified) => {
                let notified = notified.clone();
                let deadline = Instant::now() + Duration::from_millis(1);
                let mut items = Vec::new();
                loop {
                    items.clear();
                    let now = match notified.take(16, &mut items) {
                        Ok(now) => now,
                        Err(err) => panic!("Notified::take: {err:?}"),
                    };
                    for item in items.drain(..) {
                        match item {
                            Received::Frames(delivery) => {
                                let mut envelopes = Vec::new();
                                delivery.into_envelopes(&mut envelopes);
                                for envelope in envelopes {
                                    self.on_frame(envelope);
                                }
                            }
                            Received::Disconnect(notice) => self.on_notice(notice, false),
                        }
                    }
                    taken += now;
                    if now == 0 {
                        if !wait || taken > 0 || Instant::now() >= deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
        taken
    }

    fn send(&mut self, k: usize, payload: Vec<u8>) {
        let peer = &self.peers[k];
        let (id, max, len) = (peer.id, peer.max, payload.len());
        let sent = self.mesh.send(Envelope::new(id, payload.clone()));
        let peer = &mut self.peers[k];
        let gone = peer.removed.is_some() || peer.notice.is_some() || peer.end_called;
        match sent {
            Ok(()) => {
                assert!(
                    !gone,
                    "peer {k}: a send to a connection that left was accepted"
                );
                assert!(len <= max as usize, "peer {k}: a payload over the maximum");
                peer.sent.push(payload);
            }
            Err(SendError::Full(envelope)) => assert!(envelope.payload() == payload),
            Err(SendError::TooLarge(envelope)) => {
                assert!(len > max as usize, "peer {k}: TooLarge for {len} bytes");
                assert!(envelope.payload() == payload);
            }
            Err(SendError::Disconnected(envelope)) => {
                assert!(
                    gone || peer.may_end() || peer.remove_refused,
                    "peer {k}: Disconnected, yet the connection had no reason to leave"
                );
                assert!(envelope.payload() == payload);
            }
            Err(err) => panic!("peer {k}: send: {err:?}"),
        }
    }

    fn remove(&mut self, k: usize) {
        let id = self.peers[k].id;
        let removed = self.mesh.remove(id);
        let peer = &mut self.peers[k];
        match removed {
            Ok(mut connection) => {
                assert!(
                    peer.removed.is_none() && peer.notice.is_none() && !peer.remove_refused,
                    "peer {k}: removed twice, or after its notice"
                );
                // Frames read and not delivered stay with the connection.
                for _ in 0..connection.unreceived() {
                    match connection.recv_timeout(Duration::from_millis(1)) {
                        Ok(payload) => peer.pending.push(payload),
                        Err(err) => panic!("peer {k}: a pending frame: {err}"),
                    }
                }
                peer.removed = Some(connection);
            }
            Err(RemoveError::NotFound(found)) => {
                assert_eq!(found, id);
                if peer.removed.is_none() && !peer.remove_refused && peer.notice.is_none() {
                    // The reactor removed it by itself: it must have had a reason, and its
                    // notice is on its way.
                    assert!(
                        peer.may_end(),
                        "peer {k}: remove found nothing, yet the connection had no reason to leave"
                    );
                    peer.remove_refused = true;
                }
            }
        }
    }

    /// Ends connection `k` (without waiting for the answer: its peer may not be reading).
    fn end(&mut self, k: usize) {
        let id = self.peers[k].id;
        let notified = self.mesh.notified();
        let peer = &mut self.peers[k];
        if peer.end_called {
            return;
        }
        match notified.begin_end(id) {
            Ok(ending) => {
                assert!(peer.removed.is_none(), "peer {k}: ended after its removal");
                peer.end_called = true;
                peer.ending = Some(ending);
            }
            Err(RemoveError::NotFound(found)) => {
                assert_eq!(found, id);
                assert!(
                    peer.removed.is_some() || peer.notice.is_some() || peer.remove_refused,
                    "peer {k}: end found nothing, yet the connection was there"
                );
            }
        }
    }

    /// Takes the answers of the ends that have come.
    fn poll_endings(&mut self) {
        for peer in &mut self.peers {
            let Some(ended) = peer.ending.as_ref().and_then(Ending::try_take) else {
                continue;
            };
            peer.ending = None;
            peer.ended = Some(ended);
            match ended {
                Ended::Finished => {}
                // It left first, and its notice says why.
                Ended::Disconnected => assert!(
                    peer.may_end() || peer.dropped() || peer.notice.is_some(),
                    "peer {}: the end found the connection gone, with no reason to leave",
                    peer.k
                ),
                // Or the script removed it before the end was done.
                Ended::NotFound => assert!(
                    peer.may_end()
                        || peer.remove_refused
                        || peer.notice.is_some()
                        || peer.removed.is_some(),
                    "peer {}: the end found no connection, with no reason to leave",
                    peer.k
                ),
            }
        }
    }

    /// The mesh has delivered what each connection still in it owes.
    fn settled(&self) -> Option<usize> {
        self.peers
            .iter()
            .find(|peer| {
                if peer.ending.is_some() {
                    return true; // its answer is due
                }
                if peer.removed.is_some() || peer.notice.is_some() {
                    return false;
                }
                if peer.may_end() || peer.remove_refused {
                    return true; // its notice is due
                }
                peer.received.len() < peer.frames.len()
            })
            .map(|peer| peer.k)
    }

    fn state(&self) -> String {
        self.peers
            .iter()
            .map(|peer| {
                format!(
                    "peer {} (id {}): wrote {} frames + {} bytes{}, received {}, closed {}, \
                     dropped {}, removed {}, notice {:?}, sent {}, read {}\n",
                    peer.k,
                    peer.id,
                    peer.frames.len(),
                    peer.leftover(),
                    match peer.too_large {
                        Some(len) => format!(" then a header of {len}"),
                        None => String::new(),
                    },
                    peer.received.len(),
                    peer.closed(),
                    peer.dropped(),
                    peer.removed.is_some(),
                    peer.notice.as_ref().map(|notice| &notice.reason),
                    peer.sent.len(),
                    peer.read_frames,
                )
            })
            .collect()
    }

    /// Every frame accepted for a connection that left reached its peer or came back in
    /// the notice. Checked where the mesh closed the socket gracefully: it had read every
    /// byte the peer wrote (a close with bytes unread is a reset, which drops what the
    /// socket had not yet passed on), and the peer can still read.
    fn check_delivered_or_returned(&mut self, k: usize, deadline: Instant) {
        let peer = &mut self.peers[k];
        let graceful = match peer.notice.as_ref().map(|notice| &notice.reason) {
            Some(DisconnectReason::Eof | DisconnectReason::EofMidFrame { .. }) => true,
            Some(DisconnectReason::Shutdown) | None => {
                peer.leftover() == 0 && peer.too_large.is_none()
            }
            Some(_) => false,
        };
        if peer.dropped() || !graceful {
            peer.read(None);
            return;
        }
        peer.read(Some(deadline));
        let unsent = peer.notice.as_ref().map_or(0, |notice| notice.unsent.len());
        assert_eq!(
            peer.read_frames + unsent,
            peer.sent.len(),
            "peer {}: of {} frames accepted, {} arrived and {} came back",
            peer.k,
            peer.sent.len(),
            peer.read_frames,
            unsent
        );
    }
}

fn run(data: &[u8]) {
    let listeners = listeners();
    let mut input = Cursor(data);
    let shape = input.byte().unwrap_or(0);
    let small = input.byte().unwrap_or(0);
    let capacities = input.byte().unwrap_or(0);
    let count = usize::from(shape & 7) + 1;
    let event_loop = shape & 0x08 != 0;
    let end_by_shutdown = shape & 0x10 != 0;
    let incoming = usize::from(capacities & 15) + 1;
    let outgoing = usize::from(capacities >> 4) + 1;

    let mesh = match event_loop {
        true => Mesh::with_notify(incoming, outgoing, Arc::new(|| {})),
        false => Mesh::new(incoming, outgoing),
    }
    .expect("a mesh");
    let consumer = match event_loop {
        true => Consumer::Notified(mesh.notified()),
        false => Consumer::Blocking(mesh.disconnects()),
    };

    let mut peers = Vec::with_capacity(count);
    {
        let mut listeners = listeners.lock().unwrap_or_else(|e| e.into_inner());
        for k in 0..count {
            let is_small = small & (1 << k) != 0;
            let (listener, address) = match is_small {
                true => &mut listeners.small,
                false => &mut listeners.default,
            };
            let stream = TcpStream::connect(address.as_str()).expect("connect over loopback");
            let connection = listener.accept().expect("accept");
            let local = stream.local_addr().expect("a local address");
            assert_eq!(connection.remote_endpoint(), format!("tcp://{local}"));
            stream.set_nonblocking(true).unwrap();
            stream.set_nodelay(true).unwrap();
            quiet_close(&stream);
            let id = mesh.add(connection).expect("the mesh runs");
            assert!(peers.iter().all(|peer: &Peer| peer.id != id) && id > 0);
            peers.push(Peer {
                k,
                id,
                max: if is_small { SMALL_MAX } else { DEFAULT_MAX },
                stream: Some(stream),
                write_shut: false,
                write_failed: false,
                written: Vec::new(),
                frames: Vec::new(),
                parsed: 0,
                too_large: None,
                sent: Vec::new(),
                inbox: Vec::new(),
                read_frames: 0,
                read_ended: false,
                received: Vec::new(),
                notice: None,
                removed: None,
                pending: Vec::new(),
                remove_refused: false,
                end_called: false,
                ending: None,
                ended: None,
            });
        }
    }
    let mut script = Script {
        mesh,
        consumer,
        peers,
    };

    while let Some(op) = input.byte() {
        let k = usize::from(op >> 3) % count;
        match op & 7 {
            0 => {
                let len = input.byte().unwrap_or(0);
                let bytes = input.bytes(usize::from(len));
                script.peers[k].write(bytes);
            }
            1 => {
                let payload = input.payload();
                script.peers[k].write(&frame(&payload));
            }
            2 => {
                let peer = &mut script.peers[k];
                if let Some(stream) = &peer.stream {
                    let _ = stream.shutdown(Shutdown::Write);
                    peer.write_shut = true;
                }
            }
            3 => {
                let peer = &mut script.peers[k];
                peer.read(None);
                peer.stream = None;
            }
            4 => {
                let payload = input.payload();
                script.send(k, payload);
            }
            5 if op & 0x80 != 0 => script.end(k),
            5 => script.remove(k),
            6 => {
                script.take(op & 0x08 != 0, op & 0x10 != 0);
            }
            _ => script.peers[k].read(None),
        }
    }

    // Settle: every connection still in the mesh delivers what its peer wrote, and every
    // one that has a reason to end sends its notice.
    let deadline = Instant::now() + PATIENCE;
    while let Some(k) = script.settled() {
        assert!(
            Instant::now() < deadline,
            "the mesh hangs: peer {k} is owed frames, a notice or the answer of an end\n{}",
            script.state()
        );
        script.poll_endings();
        // An end writes everything before it answers: its peer must read.
        for peer in script.peers.iter_mut().filter(|peer| peer.ending.is_some()) {
            peer.read(None);
        }
        if script.take(false, false) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    // An end that finished wrote every frame accepted before it, then the end of the
    // stream: a peer still there reads them all, then the end.
    for peer in &mut script.peers {
        let graceful = matches!(
            peer.notice.as_ref().map(|notice| &notice.reason),
            None | Some(DisconnectReason::Eof | DisconnectReason::EofMidFrame { .. })
        );
        if peer.ended == Some(Ended::Finished) && !peer.dropped() && graceful {
            peer.read(Some(deadline));
            assert_eq!(
                peer.read_frames,
                peer.sent.len(),
                "peer {}: its end finished, yet it read {} of the {} frames accepted",
                peer.k,
                peer.read_frames,
                peer.sent.len()
            );
        }
    }
    for k in 0..count {
        match script.peers[k].notice.is_some() {
            true => script.check_delivered_or_returned(k, deadline),
            // Left unread before a shutdown, so that the shutdown may find full sockets.
            false if end_by_shutdown => {}
            false => script.peers[k].read(None),
        }
    }

    let open: Vec<usize> = (0..count)
        .filter(|&k| script.peers[k].removed.is_none() && script.peers[k].notice.is_none())
        .collect();
    if !end_by_shutdown {
        for &k in &open {
            let id = script.peers[k].id;
            match script.mesh.remove(id) {
                Ok(connection) => {
                    assert_eq!(
                        connection.unreceived(),
                        0,
                        "peer {k}: frames held back after all were delivered"
                    );
                    script.peers[k].removed = Some(connection);
                }
                Err(err) => panic!("peer {k}: an open connection could not be removed: {err}"),
            }
        }
    }
    // Nothing more is owed: whatever comes now must still be in order.
    script.take(false, false);
    let notices = script.mesh.shutdown();
    if !end_by_shutdown {
        assert!(
            notices.is_empty(),
            "the shutdown of an empty mesh handed back {notices:?}"
        );
    }
    for notice in notices {
        let k = script.peer(notice.id).k;
        assert!(
            open.contains(&k),
            "peer {k}: a shutdown notice for a connection gone"
        );
        script.on_notice(notice, true);
    }
    if end_by_shutdown {
        let deadline = Instant::now() + PATIENCE;
        for &k in &open {
            script.check_delivered_or_returned(k, deadline);
        }
    }
    // After the shutdown, the stream ends.
    match &script.consumer {
        Consumer::Blocking(_) => {
            assert!(matches!(
                script.mesh.try_recv(),
                Err(TryRecvError::Shutdown)
            ));
            assert!(matches!(script.mesh.recv(), Err(RecvError::Shutdown)));
        }
        Consumer::Notified(notified) => {
            let mut items = Vec::new();
            assert!(matches!(
                notified.take(16, &mut items),
                Err(TryRecvError::Shutdown)
            ));
        }
    }

    // A removed connection held what the mesh had read: with what was delivered, the
    // frames its peer wrote, in order.
    for peer in &script.peers {
        if peer.removed.is_some() {
            let got = peer.received.len() + peer.pending.len();
            assert!(
                got <= peer.frames.len()
                    && peer
                        .pending
                        .iter()
                        .zip(&peer.frames[peer.received.len()..])
                        .all(|(a, b)| a == b),
                "peer {}: the frames held by the removed connection are not the next written",
                peer.k
            );
        }
    }

    // Close without leaving TIME_WAIT sockets behind: reset the peers first.
    for peer in &mut script.peers {
        if let Some(stream) = peer.stream.take() {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        peer.removed = None;
    }
}

/// A dropped peer ends at once once its FIN is acknowledged, instead of lingering in
/// FIN_WAIT_2 and TIME_WAIT (thousands a second would crowd the machine's ports).
fn quiet_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_reuse_address(true);
    let never: libc::c_int = -1;
    // SAFETY: a valid socket and an option value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_LINGER2,
            (&never as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fuzz_target!(|data: &[u8]| run(data));
