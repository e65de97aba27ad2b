//! A connection outside a mesh (handshakes), on its way in and back out, and the wire
//! format as a plain socket sees it.

mod util;

use std::thread;
use std::time::Duration;

use util::*;
use wiremesh_core::{ConnectionError, Envelope, Mesh, TcpTransport};

#[test]
fn a_handshake_before_the_mesh_then_frames_through_it() {
    let transport = TcpTransport::default();
    let (mut client, mut server) = connection_pair(&transport);
    client.send(b"HELLO v1").unwrap();
    assert_eq!(server.recv().unwrap(), b"HELLO v1");
    server.send(b"OK").unwrap();
    // The server's next frame is already on its way when the client joins the mesh.
    server.send(b"first through the mesh").unwrap();
    assert_eq!(client.recv().unwrap(), b"OK");

    let mesh = Mesh::new(4, 4).unwrap();
    let client_id = mesh.add(client).unwrap();
    let envelope = recv(&mesh);
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (client_id, &b"first through the mesh"[..])
    );
    drop(server);
}

#[test]
fn recv_never_reads_past_the_frame_so_the_mesh_gets_the_rest() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let mut listener = listen(&transport);
    let endpoint = listener.endpoint();
    let mut raw = std::net::TcpStream::connect(endpoint.strip_prefix("tcp://").unwrap()).unwrap();
    let mut server = listener.accept().unwrap();
    // Three frames in one write: the handshake reads only the first.
    let mut wire = frame(b"handshake");
    wire.extend(frame(b"two"));
    wire.extend(frame(b"three"));
    write_all(&mut raw, &wire);
    assert_eq!(server.recv().unwrap(), b"handshake");
    let id = mesh.add(server).unwrap();
    assert_eq!(recv(&mesh).payload(), b"two");
    let last = recv(&mesh);
    assert_eq!((last.id(), last.payload()), (id, &b"three"[..]));
}

#[test]
fn remove_hands_back_a_half_read_frame_and_recv_finishes_it() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let whole = frame(b"split across the mesh and the handshake");
    write_all(&mut raw, &whole[..10]);
    // Let the reactor read the first part.
    thread::sleep(Duration::from_millis(50));
    let mut connection = mesh.remove(id).unwrap();
    write_all(&mut raw, &whole[10..]);
    assert_eq!(
        connection.recv().unwrap(),
        b"split across the mesh and the handshake"
    );
}

#[test]
fn remove_hands_back_unwritten_frames_and_the_next_send_flushes_them_in_order() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let payload_len = 64 * 1024;
    let accepted = fill_queue(&mesh, id, payload_len);
    let mut connection = mesh.remove(id).unwrap();
    assert!(
        connection.unwritten() > 0,
        "frames queued in the mesh leave with the connection"
    );

    let reader = thread::spawn(move || {
        let mut numbers = Vec::new();
        loop {
            let payload = read_frame(&mut raw);
            if payload == b"done" {
                return numbers;
            }
            assert_eq!(payload.len(), payload_len);
            numbers.push(number(&payload));
        }
    });
    connection.send(b"done").unwrap();
    assert_eq!(connection.unwritten(), 0);
    assert_eq!(
        reader.join().unwrap(),
        (0..accepted).collect::<Vec<_>>(),
        "every frame, once, in order"
    );
}

#[test]
fn a_removed_connection_can_join_another_mesh() {
    let transport = TcpTransport::default();
    let first = Mesh::new(4, 4).unwrap();
    let (client, server) = mesh_pair(&first, &transport);
    let client = first.remove(client).unwrap();
    let second = Mesh::new(4, 4).unwrap();
    let client = second.add(client).unwrap();
    first
        .send(Envelope::new(server, b"across meshes".to_vec()))
        .unwrap();
    let envelope = recv(&second);
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (client, &b"across meshes"[..])
    );
}

#[test]
fn frames_written_one_byte_at_a_time_by_a_plain_socket_arrive_whole() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let payloads: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        (0..=255u8).collect(),
        b"end".to_vec(),
    ];
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    for byte in &wire {
        write_all(&mut raw, std::slice::from_ref(byte));
        thread::sleep(Duration::from_micros(200));
    }
    for payload in payloads {
        let envelope = recv(&mesh);
        assert_eq!(envelope.id(), id);
        assert_eq!(envelope.payload(), &payload[..]);
    }
}

#[test]
fn the_mesh_speaks_the_splinter_framing_to_a_plain_socket() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    mesh.send(Envelope::new(id, b"abc".to_vec())).unwrap();
    mesh.send(Envelope::new(id, Vec::new())).unwrap();
    let mut bytes = [0u8; 11];
    std::io::Read::read_exact(&mut raw, &mut bytes).unwrap();
    assert_eq!(bytes, [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0]);
}

#[test]
fn blocking_recv_reports_timeouts_closes_and_protocol_errors() {
    let transport = TcpTransport::default().with_max_frame_size(8);
    let (mut client, mut server) = connection_pair(&transport);
    assert!(matches!(
        server.recv_timeout(Duration::from_millis(20)),
        Err(ConnectionError::TimedOut)
    ));
    assert!(matches!(
        client.send(&[0; 9]),
        Err(ConnectionError::TooLarge(9))
    ));
    client.send(&[1; 8]).unwrap();
    assert_eq!(server.recv().unwrap(), vec![1; 8]);
    client.disconnect().unwrap();
    match server.recv() {
        Err(err @ ConnectionError::Closed { buffered: 0 }) => {
            assert_eq!(err.to_string(), "the peer closed the connection")
        }
        other => panic!("expected Closed, got {other:?}"),
    }

    let mut listener = listen(&transport);
    let mut raw =
        std::net::TcpStream::connect(listener.endpoint().strip_prefix("tcp://").unwrap()).unwrap();
    let mut server = listener.accept().unwrap();
    write_all(&mut raw, &[0, 0, 0, 9]);
    assert!(matches!(server.recv(), Err(ConnectionError::Protocol(_))));
}
