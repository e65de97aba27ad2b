//! Splinter's versioned framing over loopback: the version negotiation on both sides (in
//! the lobby and blocking), frames both ways alone and through a mesh, and the ways a peer
//! breaks it, against peers that speak Splinter's bytes by hand over a plain socket.

mod util;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use util::*;
use wiremesh_core::codec::{FrameError, Framing};
use wiremesh_core::splinter::{header, NegotiationError};
use wiremesh_core::{
    AcceptError, ConnectError, Connection, DisconnectReason, Envelope, Lobby, Mesh, TcpTransport,
    Transport,
};

fn splinter() -> TcpTransport {
    TcpTransport::default().with_framing(Framing::SplinterV1)
}

/// One version 1 frame on the wire.
fn v1_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = header(payload.len() as u32).to_vec();
    out.extend_from_slice(payload);
    out
}

/// Reads one version 1 frame from a raw socket, checking its header's version and checksum.
fn read_v1_frame(raw: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 7];
    raw.read_exact(&mut head).expect("frame header");
    let len = u32::from_be_bytes(head[2..6].try_into().unwrap());
    assert_eq!(head, header(len), "a version 1 header with its checksum");
    let mut payload = vec![0u8; len as usize];
    raw.read_exact(&mut payload).expect("frame payload");
    payload
}

fn read_exactly<const N: usize>(raw: &mut TcpStream) -> [u8; N] {
    let mut bytes = [0u8; N];
    raw.read_exact(&mut bytes).expect("bytes from the peer");
    bytes
}

fn raw_connect(endpoint: &str) -> TcpStream {
    let raw = TcpStream::connect(endpoint.strip_prefix("tcp://").unwrap()).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    raw
}

/// Accepts through `lobby`: the outcome, in time.
fn lobby_accept(lobby: &Lobby, listener: u64) -> Result<Connection, AcceptError> {
    let (tx, rx) = mpsc::channel();
    lobby.accept(listener, None, Box::new(move |_, r| tx.send(r).unwrap()));
    rx.recv_timeout(PATIENCE).expect("the accept ends")
}

/// Connects through `lobby`: the outcome, in time.
fn lobby_connect(lobby: &Lobby, endpoint: &str) -> Result<Connection, ConnectError> {
    let (tx, rx) = mpsc::channel();
    let connecting = splinter().start_connect(endpoint).unwrap();
    lobby.connect(connecting, None, Box::new(move |_, r| tx.send(r).unwrap()));
    rx.recv_timeout(PATIENCE).expect("the connect ends")
}

/// A connected pair of splinter connections: the blocking connect waits for the answer,
/// so it runs beside the accept.
fn splinter_pair() -> (Connection, Connection) {
    let transport = splinter();
    let mut listener = transport.listen("127.0.0.1:0").unwrap();
    let endpoint = listener.endpoint();
    let client = std::thread::spawn(move || splinter().connect(&endpoint).expect("connect"));
    let server = listener.accept().expect("accept");
    (client.join().unwrap(), server)
}

fn negotiation_error(err: &io::Error) -> &NegotiationError {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref())
        .expect("a negotiation error inside")
}

#[test]
fn two_splinter_connections_negotiate_and_exchange_frames() {
    let (mut client, mut server) = splinter_pair();
    assert_eq!(client.framing(), Framing::SplinterV1);
    client.send(b"hello").unwrap();
    client.send(b"").unwrap();
    assert_eq!(server.recv().unwrap(), b"hello");
    assert_eq!(server.recv().unwrap(), b"");
    server.send(&[7; 100_000]).unwrap();
    assert_eq!(client.recv().unwrap(), vec![7; 100_000]);
}

#[test]
fn a_listener_answers_a_splinter_dialler_and_keeps_the_frames_after_the_offer() {
    let lobby = Lobby::new().unwrap();
    let listener = splinter().listen("127.0.0.1:0").unwrap();
    let endpoint = listener.endpoint();
    let listener = lobby.listen(listener);
    let mut raw = raw_connect(&endpoint);
    // The offer and two frames in one write: the frames must not be lost to the handshake.
    let mut bytes = vec![0, 1, 0, 1];
    bytes.extend(v1_frame(b"first"));
    bytes.extend(v1_frame(b"second"));
    raw.write_all(&bytes).unwrap();
    let mut server = lobby_accept(&lobby, listener).expect("accepted");
    assert_eq!(read_exactly::<2>(&mut raw), [0, 1], "the answer: version 1");
    assert_eq!(server.recv().unwrap(), b"first");
    assert_eq!(server.recv().unwrap(), b"second");
    server.send(b"back").unwrap();
    assert_eq!(read_v1_frame(&mut raw), b"back");
}

#[test]
fn a_listener_refuses_a_dialler_without_version_1_and_goes_on() {
    let lobby = Lobby::new().unwrap();
    let listener = splinter().listen("127.0.0.1:0").unwrap();
    let endpoint = listener.endpoint();
    let listener = lobby.listen(listener);
    let mut raw = raw_connect(&endpoint);
    raw.write_all(&[0, 3, 0, 5]).unwrap();
    let err = lobby_accept(&lobby, listener).expect_err("refused");
    let AcceptError::Io(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        negotiation_error(&err),
        &NegotiationError::NoCommonVersion { min: 3, max: 5 }
    );
    // Answered 0, then closed.
    assert_eq!(read_exactly::<2>(&mut raw), [0, 0]);
    assert_eq!(raw.read(&mut [0; 1]).unwrap(), 0);
    // The next dialler is served.
    let mut raw = raw_connect(&endpoint);
    raw.write_all(&[0, 1, 0, 1]).unwrap();
    let mut server = lobby_accept(&lobby, listener).expect("accepted");
    assert_eq!(read_exactly::<2>(&mut raw), [0, 1]);
    raw.write_all(&v1_frame(b"ok")).unwrap();
    assert_eq!(server.recv().unwrap(), b"ok");
}

#[test]
fn a_dialler_answered_0_fails_to_connect() {
    let lobby = Lobby::new().unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", peer.local_addr().unwrap());
    let answer = std::thread::spawn(move || {
        let (mut raw, _) = peer.accept().unwrap();
        raw.set_read_timeout(Some(PATIENCE)).unwrap();
        let offer = read_exactly::<4>(&mut raw);
        raw.write_all(&[0, 0]).unwrap();
        offer
    });
    let err = lobby_connect(&lobby, &endpoint).expect_err("refused");
    assert_eq!(answer.join().unwrap(), [0, 1, 0, 1], "offers 1..=1");
    let ConnectError::Io(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(negotiation_error(&err), &NegotiationError::Refused);
    assert!(err
        .to_string()
        .contains("no splinter frame version in common"));
    // The blocking connect says the same.
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", peer.local_addr().unwrap());
    let answer = std::thread::spawn(move || {
        let (mut raw, _) = peer.accept().unwrap();
        read_exactly::<4>(&mut raw);
        raw.write_all(&[0, 7]).unwrap();
    });
    let Err(ConnectError::Io(err)) = splinter().connect(&endpoint) else {
        panic!("refused")
    };
    answer.join().unwrap();
    assert_eq!(
        negotiation_error(&err),
        &NegotiationError::Unoffered { version: 7 }
    );
}

#[test]
fn a_dialler_speaks_to_a_splinter_listener_through_a_mesh() {
    let lobby = Lobby::new().unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", peer.local_addr().unwrap());
    let (raw_tx, raw_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut raw, _) = peer.accept().unwrap();
        raw.set_read_timeout(Some(PATIENCE)).unwrap();
        assert_eq!(read_exactly::<4>(&mut raw), [0, 1, 0, 1]);
        // The answer and a frame at once.
        let mut bytes = vec![0, 1];
        bytes.extend(v1_frame(b"welcome"));
        raw.write_all(&bytes).unwrap();
        raw_tx.send(raw).unwrap();
    });
    let client = lobby_connect(&lobby, &endpoint).expect("connected");
    let mut raw = raw_rx.recv().unwrap();
    let mesh = Mesh::new(256, 256).unwrap();
    let id = mesh.add(client).unwrap();
    let envelope = recv(&mesh);
    assert_eq!((envelope.id(), envelope.payload()), (id, &b"welcome"[..]));
    // Many small frames each way, so that runs are written and read.
    for i in 0..200u32 {
        mesh.send(Envelope::new(id, i.to_be_bytes().to_vec()))
            .unwrap();
    }
    let mut wire = Vec::new();
    for i in 0..200u32 {
        wire.extend(v1_frame(&i.to_be_bytes()));
    }
    raw.write_all(&wire).unwrap();
    for i in 0..200u32 {
        assert_eq!(read_v1_frame(&mut raw), i.to_be_bytes());
    }
    for i in 0..200u32 {
        let envelope = recv(&mesh);
        assert_eq!(envelope.payload(), &i.to_be_bytes()[..]);
    }
    // A bad checksum ends this connection alone, as a protocol error.
    raw.write_all(&[0, 1, 0, 0, 0, 2, 0, b'h', b'i']).unwrap();
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(
            notice.reason,
            DisconnectReason::Protocol(FrameError::Checksum {
                expected: 0xfd,
                found: 0
            })
        ),
        "{:?}",
        notice.reason
    );
}

#[test]
fn a_splinter_connection_leaves_a_mesh_with_its_framing() {
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, mut server) = splinter_pair();
    let id = mesh.add(client).unwrap();
    mesh.send(Envelope::new(id, b"from the mesh".to_vec()))
        .unwrap();
    assert_eq!(server.recv().unwrap(), b"from the mesh");
    let mut client = mesh.remove(id).unwrap();
    assert_eq!(client.framing(), Framing::SplinterV1);
    server.send(b"after").unwrap();
    assert_eq!(client.recv().unwrap(), b"after");
}

#[test]
fn a_raw_dialler_and_a_splinter_listener_do_not_mix_silently() {
    let transport = splinter();
    let mut listener = transport.listen("127.0.0.1:0").unwrap();
    let mut raw = raw_connect(&listener.endpoint());
    // A raw frame: its length reads as the offer 0..=5, which includes version 1, so the
    // listener answers; the payload then reads as a header of version 0x6865 ("he").
    raw.write_all(&frame(b"hello, world")).unwrap();
    let mut server = listener.accept().expect("the offer looked fine");
    assert!(matches!(
        server.recv(),
        Err(wiremesh_core::ConnectionError::Protocol(
            FrameError::Version { .. }
        ))
    ));
}
