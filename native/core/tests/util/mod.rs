//! What the loopback tests share: a mesh with connected pairs, and raw peers that speak
//! the framing by hand over a plain `std::net::TcpStream`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use wiremesh_core::{
    Connection, Disconnect, Envelope, Listener, Mesh, SendError, TcpTransport, Transport,
};

/// Long enough for a loaded machine, short enough that a bug fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A listener on an ephemeral loopback port.
pub fn listen(transport: &TcpTransport) -> Box<dyn Listener> {
    transport.listen("127.0.0.1:0").expect("listen on loopback")
}

/// A connected pair of connections.
pub fn connection_pair(transport: &TcpTransport) -> (Connection, Connection) {
    let mut listener = listen(transport);
    let client = transport.connect(&listener.endpoint()).expect("connect");
    let server = listener.accept().expect("accept");
    (client, server)
}

/// Adds both ends of a new pair to `mesh`; returns (client id, server id).
pub fn mesh_pair(mesh: &Mesh, transport: &TcpTransport) -> (usize, usize) {
    let (client, server) = connection_pair(transport);
    (mesh.add(client).unwrap(), mesh.add(server).unwrap())
}

/// A plain TCP socket connected to a connection that joined `mesh`; returns the socket
/// and the connection's id.
pub fn raw_peer(mesh: &Mesh, transport: &TcpTransport) -> (TcpStream, usize) {
    let mut listener = listen(transport);
    let endpoint = listener.endpoint();
    let raw = TcpStream::connect(endpoint.strip_prefix("tcp://").unwrap()).expect("raw connect");
    raw.set_nodelay(true).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    let id = mesh.add(listener.accept().expect("accept")).unwrap();
    (raw, id)
}

/// One frame on the wire.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Reads one frame from a raw socket.
pub fn read_frame(raw: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    raw.read_exact(&mut header).expect("frame header");
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    raw.read_exact(&mut payload).expect("frame payload");
    payload
}

/// Writes bytes to a raw socket.
pub fn write_all(raw: &mut TcpStream, bytes: &[u8]) {
    raw.write_all(bytes).expect("raw write");
}

/// The next envelope, or a failed test.
pub fn recv(mesh: &Mesh) -> Envelope {
    mesh.recv_timeout(PATIENCE).expect("an envelope in time")
}

/// The next disconnect notice, or a failed test.
pub fn disconnect(mesh: &Mesh) -> Disconnect {
    mesh.disconnects()
        .recv_timeout(PATIENCE)
        .expect("a disconnect notice in time")
}

/// A payload that carries a sequence number.
pub fn numbered(n: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![(n % 251) as u8; len.max(8)];
    payload[..8].copy_from_slice(&n.to_be_bytes());
    payload
}

/// The sequence number of a [`numbered`] payload.
pub fn number(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().unwrap())
}

/// Sends numbered payloads of `len` bytes to `id` (giving the reactor time to move them
/// into the socket) until its queue is full; returns how many were queued.
pub fn fill_queue(mesh: &Mesh, id: usize, len: usize) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let mut queued = 0u64;
    loop {
        assert!(Instant::now() < deadline, "the queue never filled");
        match mesh.send(Envelope::new(id, numbered(queued, len))) {
            Ok(()) => queued += 1,
            Err(SendError::Full(_)) => return queued,
            Err(other) => panic!("expected Full, got {other:?}"),
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the reactor has removed connection `id` by itself.
pub fn wait_closed(mesh: &Mesh, id: usize) {
    let deadline = Instant::now() + PATIENCE;
    while !mesh.outgoing(id).expect("a known id").is_closed() {
        assert!(Instant::now() < deadline, "connection {id} never closed");
        thread::sleep(Duration::from_millis(1));
    }
}
