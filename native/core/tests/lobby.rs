//! The lobby: one event loop thread for connections outside a mesh (connect, accept, a
//! connection's own send and recv), with deadlines, cancellation and shutdown, over real
//! loopback sockets.

mod util;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use util::{frame, read_frame, write_all};
use wiremesh_core::{
    AcceptError, ConnectError, Connection, ConnectionError, Lobby, Mesh, OperationId, TcpTransport,
    Transport,
};

/// The longest any operation of these tests may take to end: a bug fails, never hangs.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(100);

type Done<T> = Box<dyn FnOnce(OperationId, T) + Send>;
type Handed<T> = (Connection, Result<T, ConnectionError>);

/// A completion that sends the outcome to the returned channel.
fn done<T: Send + 'static>() -> (Done<T>, mpsc::Receiver<(OperationId, T)>) {
    let (tx, rx) = mpsc::channel();
    let done: Done<T> = Box::new(move |id, outcome| {
        let _ = tx.send((id, outcome));
    });
    (done, rx)
}

/// The outcome of one operation, which must end within [`WAIT`].
fn ended<T>(rx: &mpsc::Receiver<(OperationId, T)>) -> (OperationId, T) {
    rx.recv_timeout(WAIT)
        .expect("the operation ended within the test's patience")
}

/// Asserts that an operation is still under way.
fn still_waiting<T: std::fmt::Debug>(rx: &mpsc::Receiver<(OperationId, T)>, what: &str) {
    match rx.recv_timeout(QUIET) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("{what} should still wait, but: {other:?}"),
    }
}

fn in_ms(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

fn connect(
    lobby: &Lobby,
    transport: &TcpTransport,
    endpoint: &str,
    deadline: Option<Instant>,
) -> Result<Connection, ConnectError> {
    let connecting = transport.start_connect(endpoint)?;
    let (done, rx) = done();
    lobby.connect(connecting, deadline, done);
    ended(&rx).1
}

fn send(
    lobby: &Lobby,
    connection: Connection,
    payload: &[u8],
    deadline: Option<Instant>,
) -> Handed<()> {
    let (done, rx) = done();
    lobby.send(connection, payload.to_vec(), deadline, done);
    ended(&rx).1
}

fn recv(lobby: &Lobby, connection: Connection, deadline: Option<Instant>) -> Handed<Vec<u8>> {
    let (done, rx) = done();
    lobby.recv(connection, deadline, done);
    ended(&rx).1
}

/// A listener in `lobby` and its endpoint.
fn listen(lobby: &Lobby, transport: &TcpTransport) -> (u64, String) {
    let listener = transport.listen("127.0.0.1:0").expect("listen on loopback");
    let endpoint = listener.endpoint();
    (lobby.listen(listener), endpoint)
}

/// A pair connected through the lobby: (client, server).
fn lobby_pair(lobby: &Lobby, transport: &TcpTransport) -> (Connection, Connection) {
    let (listener, endpoint) = listen(lobby, transport);
    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    let client = connect(lobby, transport, &endpoint, None).expect("connect");
    let server = ended(&accepted).1.expect("accept");
    lobby.close_listener(listener);
    (client, server)
}

/// A plain socket connected to a connection accepted through the lobby: (socket, server).
fn raw_pair(lobby: &Lobby, transport: &TcpTransport) -> (TcpStream, Connection) {
    let (listener, endpoint) = listen(lobby, transport);
    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    let raw = TcpStream::connect(address(&endpoint)).expect("raw connect");
    raw.set_nodelay(true).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let server = ended(&accepted).1.expect("accept");
    lobby.close_listener(listener);
    (raw, server)
}

fn address(endpoint: &str) -> SocketAddr {
    endpoint.strip_prefix("tcp://").unwrap().parse().unwrap()
}

/// Gives a plain socket a small receive buffer (and no autotuning), so that a large frame
/// cannot be written until it reads.
fn small_receive_buffer(raw: &TcpStream) {
    socket2::SockRef::from(raw)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
}

/// Reads until the peer closes; true if it closed (rather than timing out or failing).
fn sees_close(raw: &mut TcpStream) -> bool {
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = [0u8; 1024];
    loop {
        match raw.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn connect_and_accept_through_the_lobby_then_frames_both_ways() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (client, server) = lobby_pair(&lobby, &transport);
    assert_eq!(server.remote_endpoint(), client.local_endpoint());
    assert_eq!(client.remote_endpoint(), server.local_endpoint());

    let (client, sent) = send(&lobby, client, b"HELLO v1", None);
    sent.unwrap();
    let (server, got) = recv(&lobby, server, None);
    assert_eq!(got.unwrap(), b"HELLO v1");
    let (server, sent) = send(&lobby, server, b"OK", None);
    sent.unwrap();
    let (client, got) = recv(&lobby, client, None);
    assert_eq!(got.unwrap(), b"OK");
    // An empty frame is a frame too.
    let (_client, sent) = send(&lobby, client, b"", None);
    sent.unwrap();
    let (_server, got) = recv(&lobby, server, None);
    assert_eq!(got.unwrap(), b"");
}

#[test]
fn a_lobby_recv_stops_at_its_frame_and_a_mesh_gets_the_next() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    // Two frames in one write: the recv must take the first and not a byte more.
    let mut wire = frame(b"handshake");
    wire.extend(frame(b"first through the mesh"));
    write_all(&mut raw, &wire);
    // Let both frames arrive before the recv reads, so one read could take them all.
    thread::sleep(Duration::from_millis(20));
    let (server, got) = recv(&lobby, server, None);
    assert_eq!(got.unwrap(), b"handshake");
    assert_eq!(
        server.unreceived(),
        0,
        "the second frame is still in the socket"
    );

    let mesh = Mesh::new(4, 4).unwrap();
    let id = mesh.add(server).unwrap();
    let envelope = util::recv(&mesh);
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (id, &b"first through the mesh"[..])
    );
    // And the mesh can send on it: the lobby left it in a state the reactor can drive.
    mesh.send(wiremesh_core::Envelope::new(id, b"welcome".to_vec()))
        .unwrap();
    assert_eq!(read_frame(&mut raw), b"welcome");
}

#[test]
fn a_recv_past_its_deadline_times_out_and_keeps_the_partial_frame() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    let whole = frame(b"a frame that arrives in two parts");
    write_all(&mut raw, &whole[..9]);
    thread::sleep(Duration::from_millis(20));

    let started = Instant::now();
    let (server, got) = recv(&lobby, server, in_ms(100));
    let took = started.elapsed();
    assert!(matches!(got, Err(ConnectionError::TimedOut)), "{got:?}");
    assert!(
        took >= Duration::from_millis(95) && took < Duration::from_secs(2),
        "timed out after {took:?}"
    );

    write_all(&mut raw, &whole[9..]);
    let (server, got) = recv(&lobby, server, in_ms(2000));
    assert_eq!(got.unwrap(), b"a frame that arrives in two parts");
    // The connection is whole: the next frame arrives as well.
    write_all(&mut raw, &frame(b"next"));
    let (_server, got) = recv(&lobby, server, None);
    assert_eq!(got.unwrap(), b"next");
}

#[test]
fn a_deadline_that_has_passed_still_takes_a_frame_that_is_there() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    let (server, got) = recv(&lobby, server, Some(Instant::now()));
    assert!(matches!(got, Err(ConnectionError::TimedOut)), "{got:?}");
    write_all(&mut raw, &frame(b"here"));
    thread::sleep(Duration::from_millis(20));
    let (_server, got) = recv(&lobby, server, Some(Instant::now()));
    assert_eq!(got.unwrap(), b"here");
}

#[test]
fn a_send_past_its_deadline_times_out_and_the_next_send_finishes_its_frame() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    small_receive_buffer(&raw);
    // More than the socket buffers hold, while the peer reads nothing.
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let (server, sent) = send(&lobby, server, &big, in_ms(100));
    assert!(matches!(sent, Err(ConnectionError::TimedOut)), "{sent:?}");
    assert_eq!(
        server.unwritten(),
        1,
        "the half-written frame stays with the connection"
    );

    let reader = thread::spawn(move || {
        let first = read_frame(&mut raw);
        let second = read_frame(&mut raw);
        (first, second)
    });
    let (_server, sent) = send(&lobby, server, b"after", None);
    sent.unwrap();
    let (first, second) = reader.join().unwrap();
    assert!(first == big, "the timed-out frame arrives whole");
    assert_eq!(second, b"after");
}

#[test]
fn cancel_ends_a_pending_recv_with_aborted_and_hands_the_connection_back() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    let whole = frame(b"split by a cancel");
    write_all(&mut raw, &whole[..6]);

    let (recv_done, received) = done();
    let id = lobby.recv(server, None, recv_done);
    still_waiting(&received, "a recv with half a frame");
    let cancelled = Instant::now();
    lobby.cancel(id);
    let (ended_id, (server, got)) = ended(&received);
    assert!(cancelled.elapsed() < Duration::from_secs(1));
    assert_eq!(ended_id, id);
    assert!(matches!(got, Err(ConnectionError::Aborted)), "{got:?}");

    // The connection, with its half frame, is usable.
    write_all(&mut raw, &whole[6..]);
    let (_server, got) = recv(&lobby, server, None);
    assert_eq!(got.unwrap(), b"split by a cancel");
}

#[test]
fn cancel_of_an_operation_that_ended_does_nothing() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    write_all(&mut raw, &frame(b"one"));
    let (recv_done, received) = done();
    let first = lobby.recv(server, None, recv_done);
    let (_, (server, got)) = ended(&received);
    assert_eq!(got.unwrap(), b"one");
    lobby.cancel(first);
    lobby.cancel(first);

    // A new operation is not touched by cancels of old (or unknown) ids.
    let (recv_done, received) = done();
    let second = lobby.recv(server, None, recv_done);
    assert_ne!(first, second);
    lobby.cancel(first);
    lobby.cancel(0);
    lobby.cancel(u64::MAX);
    still_waiting(&received, "a recv after cancels of other ids");
    write_all(&mut raw, &frame(b"two"));
    let (id, (_server, got)) = ended(&received);
    assert_eq!(id, second);
    assert_eq!(got.unwrap(), b"two");
}

#[test]
fn cancel_ends_a_pending_accept_and_a_pending_send() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, endpoint) = listen(&lobby, &transport);
    let (accept_done, accepted) = done();
    let accept = lobby.accept(listener, None, accept_done);
    still_waiting(&accepted, "an accept");
    lobby.cancel(accept);
    let (id, got) = ended(&accepted);
    assert_eq!(id, accept);
    assert!(matches!(got, Err(AcceptError::Aborted)), "{got:?}");
    // The listener still serves the next accept.
    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    let raw = TcpStream::connect(address(&endpoint)).unwrap();
    small_receive_buffer(&raw);
    let server = ended(&accepted).1.unwrap();

    // A send that waits for a peer that reads nothing.
    let (send_done, sent) = done();
    let send = lobby.send(server, vec![7; 8 << 20], None, send_done);
    still_waiting(&sent, "a send to a peer that does not read");
    lobby.cancel(send);
    let (_, (server, result)) = ended(&sent);
    assert!(
        matches!(result, Err(ConnectionError::Aborted)),
        "{result:?}"
    );
    assert_eq!(server.unwritten(), 1);
}

#[test]
fn connect_to_a_port_nobody_listens_on_is_an_io_error() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    match connect(
        &lobby,
        &transport,
        &format!("127.0.0.1:{port}"),
        in_ms(3000),
    ) {
        Err(ConnectError::Io(err)) => assert_eq!(err.kind(), ErrorKind::ConnectionRefused),
        other => panic!("expected Io(refused), got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not at the deadline"
    );
}

/// A loopback listener whose accept queue is full, so that the kernel drops new SYNs; `None`
/// if this system does not drop them (then a connect to it cannot be made to wait).
fn full_listener() -> Option<(socket2::Socket, Vec<socket2::Socket>)> {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        match client.connect_timeout(&address, Duration::from_millis(150)) {
            Ok(()) => clients.push(client),
            Err(err)
                if err.kind() == ErrorKind::TimedOut || err.kind() == ErrorKind::WouldBlock =>
            {
                return Some((listener, clients));
            }
            Err(err) => panic!("filling the backlog: {err}"),
        }
    }
    None
}

#[test]
fn connect_past_its_deadline_times_out() {
    let Some((listener, _clients)) = full_listener() else {
        eprintln!("skipped: this system does not drop SYNs to a full loopback listener");
        return;
    };
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let started = Instant::now();
    let got = connect(&lobby, &transport, &address.to_string(), in_ms(150));
    let took = started.elapsed();
    assert!(matches!(got, Err(ConnectError::Timeout)), "{got:?}");
    assert!(
        took >= Duration::from_millis(145) && took < Duration::from_secs(2),
        "timed out after {took:?}"
    );

    // Cancelling such an attempt ends it with Aborted.
    let (connect_done, connected) = done();
    let id = lobby.connect(
        transport.start_connect(&address.to_string()).unwrap(),
        None,
        connect_done,
    );
    still_waiting(&connected, "a connect to a full listener");
    lobby.cancel(id);
    let got = ended(&connected).1;
    assert!(matches!(got, Err(ConnectError::Aborted)), "{got:?}");
}

#[test]
fn accepts_on_one_listener_are_served_in_order() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, endpoint) = listen(&lobby, &transport);
    let (tx, accepted) = mpsc::channel();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let tx = tx.clone();
        ids.push(lobby.accept(
            listener,
            None,
            Box::new(move |id, result| {
                let _ = tx.send((id, result));
            }),
        ));
    }
    still_waiting(&accepted, "accepts with no client");
    for &id in &ids {
        let client = TcpStream::connect(address(&endpoint)).unwrap();
        let (ended_id, result) = ended(&accepted);
        assert_eq!(
            ended_id, id,
            "the oldest waiting accept takes the next client"
        );
        let server = result.unwrap();
        assert_eq!(
            server.remote_endpoint(),
            format!("tcp://{}", client.local_addr().unwrap())
        );
    }
}

#[test]
fn an_accept_that_times_out_leaves_its_turn_to_the_next() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, endpoint) = listen(&lobby, &transport);
    let (first_done, first) = done();
    lobby.accept(listener, in_ms(50), first_done);
    let (second_done, second) = done();
    let second_id = lobby.accept(listener, None, second_done);
    let got = ended(&first).1;
    assert!(matches!(got, Err(AcceptError::Timeout)), "{got:?}");
    let _client = TcpStream::connect(address(&endpoint)).unwrap();
    let (id, got) = ended(&second);
    assert_eq!(id, second_id);
    got.unwrap();
}

#[test]
fn close_listener_ends_waiting_accepts_with_closed_and_unknown_listeners_are_closed() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, endpoint) = listen(&lobby, &transport);
    let (tx, accepted) = mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        lobby.accept(
            listener,
            None,
            Box::new(move |id, result| {
                let _ = tx.send((id, result));
            }),
        );
    }
    still_waiting(&accepted, "accepts with no client");
    lobby.close_listener(listener);
    for _ in 0..3 {
        let got = ended(&accepted).1;
        assert!(matches!(got, Err(AcceptError::Closed)), "{got:?}");
    }
    // Closing again is harmless; an accept after the close ends at once with Closed.
    lobby.close_listener(listener);
    let (accept_done, after) = done();
    lobby.accept(listener, None, accept_done);
    assert!(matches!(ended(&after).1, Err(AcceptError::Closed)));
    // The socket is closed: nobody can connect any more.
    let refused = TcpStream::connect(address(&endpoint));
    assert!(
        refused.is_err(),
        "the closed listener still takes connections"
    );

    for unknown in [0, 987_654_321, u64::MAX] {
        let (accept_done, got) = done();
        lobby.accept(unknown, None, accept_done);
        assert!(matches!(ended(&got).1, Err(AcceptError::Closed)));
    }
}

#[test]
fn a_client_that_resets_before_it_is_accepted_does_not_fail_the_accept() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, endpoint) = listen(&lobby, &transport);
    // Connections wait in the backlog while no accept waits: one resets there, one stays.
    let reset = TcpStream::connect(address(&endpoint)).unwrap();
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    let good = TcpStream::connect(address(&endpoint)).unwrap();
    thread::sleep(Duration::from_millis(20));

    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    match ended(&accepted).1 {
        Ok(server) => assert_eq!(
            server.remote_endpoint(),
            format!("tcp://{}", good.local_addr().unwrap()),
            "the reset connection is skipped"
        ),
        Err(err) => panic!("a reset would-be connection failed the accept: {err:?}"),
    }
}

#[test]
fn a_send_over_the_max_frame_size_ends_at_once_with_too_large() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default().with_max_frame_size(1024);
    let (mut raw, server) = raw_pair(&lobby, &transport);
    let started = Instant::now();
    let (server, sent) = send(&lobby, server, &[1; 1025], None);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(sent, Err(ConnectionError::TooLarge(1025))),
        "{sent:?}"
    );
    assert_eq!(server.unwritten(), 0, "nothing of it was queued");
    // Nothing went out, and a frame of the maximum size does.
    let (_server, sent) = send(&lobby, server, &[2; 1024], None);
    sent.unwrap();
    assert_eq!(read_frame(&mut raw), vec![2; 1024]);
}

#[test]
fn a_large_send_to_a_slow_reader_completes_once_the_peer_reads_everything() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    // So that the send must wait for the reader.
    small_receive_buffer(&raw);
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let (send_done, sent) = done();
    lobby.send(server, big.clone(), None, send_done);
    still_waiting(&sent, "an 8 MiB send to a peer that has not read");

    let read = Arc::new(AtomicUsize::new(0));
    let reader = {
        let read = read.clone();
        thread::spawn(move || {
            let mut header = [0u8; 4];
            raw.read_exact(&mut header).unwrap();
            let len = u32::from_be_bytes(header) as usize;
            let mut payload = vec![0u8; len];
            let mut at = 0;
            while at < len {
                let n = raw
                    .read(&mut payload[at..(at + 256 * 1024).min(len)])
                    .unwrap();
                assert!(n > 0, "the stream ended early");
                at += n;
                read.store(at, SeqCst);
                thread::sleep(Duration::from_millis(2));
            }
            (payload, raw)
        })
    };
    let (_, (server, result)) = ended(&sent);
    result.unwrap();
    assert_eq!(server.unwritten(), 0);
    let (payload, _raw) = reader.join().unwrap();
    assert!(payload == big, "the payload arrives intact");
    assert!(read.load(SeqCst) == big.len());
}

#[test]
fn shutdown_ends_pending_operations_with_aborted_and_hands_connections_back() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (mut raw, server) = raw_pair(&lobby, &transport);
    let (listener, _endpoint) = listen(&lobby, &transport);
    let (recv_done, received) = done();
    lobby.recv(server, in_ms(60_000), recv_done);
    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    still_waiting(&received, "a recv");

    lobby.shutdown();
    // Shutdown returns once the loop has stopped: everything has ended by then.
    let (_, (server, got)) = received.try_recv().expect("the recv ended by shutdown");
    assert!(matches!(got, Err(ConnectionError::Aborted)), "{got:?}");
    let got = accepted.try_recv().expect("the accept ended by shutdown").1;
    assert!(matches!(got, Err(AcceptError::Aborted)), "{got:?}");

    // The connection handed back still works on its own (blocking) calls.
    let mut server = server;
    server.send(b"still here").unwrap();
    assert_eq!(read_frame(&mut raw), b"still here");

    // Operations started after the shutdown end at once with Aborted, handing back.
    let (recv_done, received) = done();
    lobby.recv(server, None, recv_done);
    let (_, (server, got)) = received.try_recv().expect("ended at once");
    assert!(matches!(got, Err(ConnectionError::Aborted)), "{got:?}");
    let (accept_done, accepted) = done();
    lobby.accept(listener, None, accept_done);
    assert!(matches!(
        accepted.try_recv().unwrap().1,
        Err(AcceptError::Aborted)
    ));
    lobby.shutdown();
    drop(server);
    assert!(sees_close(&mut raw));
}

#[test]
fn dropping_the_last_handle_stops_the_lobby_and_ends_what_waits() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (_raw, server) = raw_pair(&lobby, &transport);
    let (recv_done, received) = done();
    let clone = lobby.clone();
    lobby.recv(server, None, recv_done);
    drop(lobby);
    still_waiting(&received, "a recv while a clone lives");
    drop(clone);
    let (_, (_server, got)) = received
        .try_recv()
        .expect("ended when the last handle went");
    assert!(matches!(got, Err(ConnectionError::Aborted)), "{got:?}");
}

#[test]
fn operations_sent_while_the_lobby_stops_still_end_with_aborted() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, _endpoint) = listen(&lobby, &transport);
    // An accept whose completion, when the stopping loop ends it, holds the loop until
    // another thread has started more operations (which reach the channel, not the loop).
    let (stopping_tx, stopping) = mpsc::channel();
    let (go_on_tx, go_on) = mpsc::channel::<()>();
    let (first_done, first) = done();
    lobby.accept(
        listener,
        None,
        Box::new(move |id, result| {
            first_done(id, result);
            let _ = stopping_tx.send(());
            let _ = go_on.recv_timeout(WAIT);
        }),
    );
    still_waiting(&first, "an accept");
    let late = {
        let lobby = lobby.clone();
        thread::spawn(move || {
            stopping
                .recv_timeout(WAIT)
                .expect("the stopping loop ends the accept");
            let (tx, rx) = mpsc::channel();
            for _ in 0..100 {
                let tx = tx.clone();
                lobby.accept(
                    listener,
                    None,
                    Box::new(move |_, result| {
                        let _ = tx.send(result);
                    }),
                );
            }
            go_on_tx.send(()).unwrap();
            rx
        })
    };
    lobby.shutdown();
    assert!(matches!(ended(&first).1, Err(AcceptError::Aborted)));
    let late = late.join().unwrap();
    for n in 0..100 {
        match late.recv_timeout(WAIT) {
            Ok(Err(AcceptError::Aborted)) => {}
            other => panic!("operation {n} started while the lobby stopped: {other:?}"),
        }
    }
}

#[test]
fn shutdown_stops_the_loop_while_other_threads_keep_starting_operations() {
    const CAP: usize = 100_000;
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    let (listener, _endpoint) = listen(&lobby, &transport);
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let producers_done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let (lobby, started, finished, producers_done, stop) = (
                lobby.clone(),
                started.clone(),
                finished.clone(),
                producers_done.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for _ in 0..CAP {
                    if stop.load(SeqCst) {
                        break;
                    }
                    let finished = finished.clone();
                    started.fetch_add(1, SeqCst);
                    lobby.accept(
                        listener,
                        None,
                        Box::new(move |_, _| {
                            finished.fetch_add(1, SeqCst);
                        }),
                    );
                }
                producers_done.fetch_add(1, SeqCst);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    let asked = Instant::now();
    lobby.shutdown();
    let took = asked.elapsed();
    let still_producing = producers_done.load(SeqCst) < 2;
    stop.store(true, SeqCst);
    for producer in producers {
        producer.join().unwrap();
    }
    assert!(
        still_producing,
        "shutdown waited {took:?}, until the other threads stopped starting operations"
    );
    drop(lobby);
    assert_eq!(
        finished.load(SeqCst),
        started.load(SeqCst),
        "every operation started ended, once"
    );
}

#[test]
fn a_recv_reports_a_peer_that_closes_mid_frame_and_a_hostile_header() {
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default().with_max_frame_size(8);
    let (mut raw, server) = raw_pair(&lobby, &transport);
    write_all(&mut raw, &[0, 0, 0, 9]);
    let (_server, got) = recv(&lobby, server, None);
    assert!(matches!(got, Err(ConnectionError::Protocol(_))), "{got:?}");

    let (mut raw, server) = raw_pair(&lobby, &transport);
    write_all(&mut raw, &[0, 0, 0, 5, 1, 2]);
    drop(raw);
    let (_server, got) = recv(&lobby, server, None);
    assert!(
        matches!(got, Err(ConnectionError::Closed { buffered: 6 })),
        "{got:?}"
    );
}

/// The number of threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

const THREADS_CHILD: &str = "WIREMESH_LOBBY_THREADS_CHILD";

/// Run alone in a process of its own by the next test (other tests' threads would blur
/// the count).
#[test]
#[ignore = "run in a child process by many_concurrent_connects_and_accepts_start_no_thread"]
fn threads_child() {
    if std::env::var_os(THREADS_CHILD).is_none() {
        return;
    }
    const N: usize = 500;
    let lobby = Lobby::new().unwrap();
    let transport = TcpTransport::default();
    // Warm up: the lobby's thread and one connection.
    let _warm = lobby_pair(&lobby, &transport);
    let (listener, endpoint) = listen(&lobby, &transport);
    let before = threads();

    let (tx, rx) = mpsc::channel::<Result<Connection, String>>();
    for _ in 0..N {
        let tx = tx.clone();
        lobby.accept(
            listener,
            in_ms(8_000),
            Box::new(move |_, r| {
                let _ = tx.send(r.map_err(|e| format!("accept: {e}")));
            }),
        );
    }
    let mut most = threads();
    for _ in 0..N {
        let tx = tx.clone();
        let connecting = transport.start_connect(&endpoint).unwrap();
        lobby.connect(
            connecting,
            in_ms(8_000),
            Box::new(move |_, r| {
                let _ = tx.send(r.map_err(|e| format!("connect: {e}")));
            }),
        );
        most = most.max(threads());
    }
    let mut connections = Vec::new();
    for _ in 0..2 * N {
        let connection = rx
            .recv_timeout(Duration::from_secs(9))
            .expect("every operation ends")
            .unwrap();
        most = most.max(threads());
        connections.push(connection);
    }
    assert_eq!(connections.len(), 2 * N);
    println!("THREADS before={before} most={most}");
    assert!(most <= before, "threads grew from {before} to {most}");
}

#[test]
fn many_concurrent_connects_and_accepts_start_no_thread() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "threads_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(THREADS_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("THREADS before="),
        "child failed:\n{stdout}\n{stderr}"
    );
}
