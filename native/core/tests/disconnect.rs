//! Connections that end on their own: end of stream between and within frames, a hostile
//! length header, a reset with frames still queued. Each is announced once, the others
//! carry on, and what was not sent comes back.

mod util;

use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use util::*;
use wiremesh_core::codec::FrameError;
use wiremesh_core::{DisconnectReason, Envelope, Mesh, RemoveError, SendError, TcpTransport};

/// The other connection of the mesh still works both ways.
fn still_delivers(mesh: &Mesh, client: usize, server: usize) {
    mesh.send(Envelope::new(client, b"still here".to_vec()))
        .unwrap();
    let envelope = recv(mesh);
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (server, &b"still here"[..])
    );
}

#[test]
fn a_peer_that_closes_between_frames_is_announced_once() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    write_all(&mut raw, &frame(b"last words"));
    drop(raw);

    // The frame before the end arrives first, then the notice.
    let envelope = recv(&mesh);
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (id, &b"last words"[..])
    );
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(notice.reason, DisconnectReason::Eof),
        "{:?}",
        notice.reason
    );
    assert_eq!(notice.reason.to_string(), "the peer closed the connection");
    assert!(notice.unsent.is_empty());
    assert!(
        mesh.disconnects()
            .recv_timeout(Duration::from_millis(100))
            .is_none(),
        "announced once"
    );
    still_delivers(&mesh, client, server);
}

#[test]
fn a_peer_that_vanishes_mid_frame_is_announced_with_what_arrived() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let whole = frame(b"0123456789");
    write_all(&mut raw, &whole[..7]); // header and 3 payload bytes
    thread::sleep(Duration::from_millis(20));
    raw.shutdown(Shutdown::Both).unwrap();

    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(notice.reason, DisconnectReason::EofMidFrame { buffered: 7 }),
        "{:?}",
        notice.reason
    );
    assert!(mesh.try_recv().is_err(), "no partial frame is delivered");
    still_delivers(&mesh, client, server);
}

#[test]
fn a_hostile_length_header_closes_only_that_connection() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    write_all(&mut raw, &frame(b"fine"));
    write_all(&mut raw, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);

    let envelope = recv(&mesh);
    assert_eq!((envelope.id(), envelope.payload()), (id, &b"fine"[..]));
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    match &notice.reason {
        DisconnectReason::Protocol(FrameError::TooLarge { len, max }) => {
            assert_eq!((*len, *max), (0xffff_ffff, 16 * 1024 * 1024));
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // The mesh closed the socket: the peer sees the end of the stream (or a reset).
    let mut sink = [0u8; 16];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match std::io::Read::read(&mut raw, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline),
        }
    }
    still_delivers(&mesh, client, server);
}

#[test]
fn after_an_automatic_removal_sends_are_disconnected_before_and_after_the_notice() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (raw, id) = raw_peer(&mesh, &transport);
    drop(raw);
    wait_closed(&mesh, id);
    match mesh.send(Envelope::new(id, b"too late".to_vec())) {
        Err(SendError::Disconnected(envelope)) => assert_eq!(envelope.payload(), b"too late"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    // Taking the notice retires the id, and sends to it are still Disconnected: the mesh
    // gave it out once. An id it never gave out is NotFound.
    assert!(matches!(
        mesh.send(Envelope::new(id, vec![])),
        Err(SendError::Disconnected(_))
    ));
    assert!(matches!(
        mesh.send(Envelope::new(id + 1000, vec![])),
        Err(SendError::NotFound(_))
    ));
    assert!(matches!(
        mesh.send(Envelope::new(0, vec![])),
        Err(SendError::NotFound(_))
    ));
    assert_eq!(mesh.remove(id).unwrap_err(), RemoveError::NotFound(id));
}

#[test]
fn remove_of_a_disconnected_connection_is_not_found_even_before_the_notice_is_taken() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (raw, id) = raw_peer(&mesh, &transport);
    drop(raw);
    wait_closed(&mesh, id);
    assert_eq!(mesh.remove(id).unwrap_err(), RemoveError::NotFound(id));
    // The notice is still there, once.
    assert_eq!(disconnect(&mesh).id, id);
}

#[test]
fn frames_queued_for_a_peer_that_resets_come_back_in_the_notice() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    // The peer sends one byte we never complete, reads nothing, and the mesh fills it.
    let payload_len = 64 * 1024;
    let accepted = fill_queue(&mesh, id, payload_len);
    // Closing with unread data makes the kernel send a reset.
    write_all(&mut raw, &[0]);
    drop(raw);

    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(!notice.unsent.is_empty(), "a full queue's frames come back");
    let numbers: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
    let first = numbers[0];
    assert_eq!(
        numbers,
        (first..accepted).collect::<Vec<_>>(),
        "the unsent frames are the newest, in order"
    );
    assert!(notice
        .unsent
        .iter()
        .all(|e| e.id() == id && e.payload().len() == payload_len));
}

#[test]
fn a_notice_comes_after_every_envelope_its_connection_sent() {
    // The peer writes its frames and closes at once: the notice must not be seen before
    // the last of them has been received, in every one of several rounds.
    const FRAMES: u64 = 3_000;
    let transport = TcpTransport::default();
    for _ in 0..10 {
        let mesh = Mesh::new(64, 8).unwrap();
        let (mut raw, id) = raw_peer(&mesh, &transport);
        let mut wire = Vec::new();
        for i in 0..FRAMES {
            wire.extend(frame(&numbered(i, 16)));
        }
        write_all(&mut raw, &wire);
        drop(raw);
        let disconnects = mesh.disconnects();
        let mut next = 0;
        let deadline = Instant::now() + PATIENCE;
        while next < FRAMES {
            assert!(Instant::now() < deadline, "stuck at {next}");
            assert!(
                disconnects.try_recv().is_none(),
                "the notice came with {next} of {FRAMES} envelopes received"
            );
            if let Ok(envelope) = mesh.try_recv() {
                assert_eq!((envelope.id(), number(envelope.payload())), (id, next));
                next += 1;
            }
        }
        let notice = disconnect(&mesh);
        assert_eq!(notice.id, id);
        assert!(matches!(notice.reason, DisconnectReason::Eof));
        mesh.shutdown();
    }
}
