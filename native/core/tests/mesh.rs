//! The mesh API over real loopback sockets: Splinter's own mesh scenarios, then the
//! receive methods, handles, clones and shutdown.

mod util;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use util::*;
use wiremesh_core::{
    AddError, DisconnectReason, Envelope, Mesh, RecvError, RecvTimeoutError, RemoveError,
    SendError, TcpTransport, TryRecvError,
};

#[test]
fn one_connection_sends_and_receives() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1, 1).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);

    mesh.send(Envelope::new(client, b"hello".to_vec())).unwrap();
    let envelope = recv(&mesh);
    assert_eq!(envelope.id(), server);
    assert_eq!(envelope.payload(), b"hello");

    mesh.send(Envelope::new(server, b"world".to_vec())).unwrap();
    let envelope = recv(&mesh);
    assert_eq!((envelope.id(), envelope.payload()), (client, &b"world"[..]));

    // Keep the client: dropping it would close its socket, and the reactor would then
    // remove the server by itself (and `remove(server)` would be NotFound).
    let _client = mesh.remove(client).unwrap();
    let _server = mesh.remove(server).unwrap();
}

#[test]
fn sixteen_connections_added_from_two_threads_are_all_removed() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 16).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let adders: Vec<_> = (0..2)
        .map(|_| {
            let (mesh, transport, barrier) = (mesh.clone(), transport.clone(), barrier.clone());
            thread::spawn(move || {
                let pairs: Vec<_> = (0..4).map(|_| connection_pair(&transport)).collect();
                barrier.wait();
                let mut ids = Vec::new();
                for (client, server) in pairs {
                    ids.push(mesh.add(client).unwrap());
                    ids.push(mesh.add(server).unwrap());
                }
                ids
            })
        })
        .collect();
    let ids: Vec<usize> = adders.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        16,
        "ids are unique"
    );
    let mut removed = Vec::new();
    for id in ids {
        let connection = mesh.remove(id).unwrap();
        assert!(connection.remote_endpoint().starts_with("tcp://127.0.0.1:"));
        assert_eq!(mesh.remove(id).unwrap_err(), RemoveError::NotFound(id));
        removed.push(connection);
    }
}

#[test]
fn sixteen_connections_say_hello_and_hear_world() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(32, 32).unwrap();
    let pairs: Vec<_> = (0..16).map(|_| mesh_pair(&mesh, &transport)).collect();
    for &(client, _) in &pairs {
        mesh.send(Envelope::new(client, b"hello".to_vec())).unwrap();
    }
    let mut servers: HashSet<usize> = pairs.iter().map(|&(_, server)| server).collect();
    for _ in 0..16 {
        let envelope = recv(&mesh);
        assert_eq!(envelope.payload(), b"hello");
        assert!(
            servers.remove(&envelope.id()),
            "each server hears hello once"
        );
        mesh.send(Envelope::new(envelope.id(), b"world".to_vec()))
            .unwrap();
    }
    let mut clients: HashSet<usize> = pairs.iter().map(|&(client, _)| client).collect();
    for _ in 0..16 {
        let envelope = recv(&mesh);
        assert_eq!(envelope.payload(), b"world");
        assert!(clients.remove(&envelope.id()));
    }
    let mut removed = Vec::new();
    for (client, server) in pairs {
        removed.push(mesh.remove(client).unwrap());
        removed.push(mesh.remove(server).unwrap());
    }
}

#[test]
fn shutdown_after_traffic_ends_receivers_and_refuses_work() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    for i in 0..3u64 {
        mesh.send(Envelope::new(client, numbered(i, 8))).unwrap();
    }
    // Wait until all three are in the incoming queue.
    let first = recv(&mesh);
    assert_eq!(number(first.payload()), 0);
    while mesh.incoming().len() < 2 {
        thread::sleep(Duration::from_millis(1));
    }

    let waiter = {
        let mesh = mesh.clone();
        thread::spawn(move || {
            // Takes the two waiting envelopes, then blocks until shutdown.
            let a = mesh.recv().unwrap();
            let b = mesh.recv().unwrap();
            (number(a.payload()), number(b.payload()), mesh.recv())
        })
    };
    let (a, b, _) = {
        thread::sleep(Duration::from_millis(50));
        mesh.shutdown();
        waiter.join().unwrap()
    };
    assert_eq!(
        (a, b),
        (1, 2),
        "envelopes received before shutdown can still be taken"
    );
    assert_eq!(mesh.recv(), Err(RecvError::Shutdown));
    assert_eq!(mesh.try_recv(), Err(TryRecvError::Shutdown));
    assert_eq!(
        mesh.recv_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Shutdown)
    );
    assert!(mesh.is_shutdown());
    match mesh.send(Envelope::new(server, b"late".to_vec())) {
        Err(SendError::Disconnected(envelope)) => assert_eq!(envelope.payload(), b"late"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let (late, _) = connection_pair(&transport);
    match mesh.add(late) {
        Err(AddError::Shutdown(connection)) => {
            assert!(connection.local_endpoint().starts_with("tcp://"))
        }
        other => panic!("expected AddError::Shutdown, got {other:?}"),
    }
    assert_eq!(
        mesh.remove(client).unwrap_err(),
        RemoveError::NotFound(client)
    );
    mesh.shutdown(); // idempotent
}

#[test]
fn a_pending_receiver_gets_shutdown() {
    let mesh = Mesh::new(1, 1).unwrap();
    let waiter = {
        let incoming = mesh.incoming();
        thread::spawn(move || incoming.recv())
    };
    thread::sleep(Duration::from_millis(50));
    mesh.shutdown();
    assert_eq!(waiter.join().unwrap(), Err(RecvError::Shutdown));
}

#[test]
fn shutdown_never_waits_for_a_receiver() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1, 64).unwrap();
    let (mut raw, _) = raw_peer(&mesh, &transport);
    let mut wire = Vec::new();
    for i in 0..10_000u64 {
        wire.extend(frame(&numbered(i, 16)));
    }
    // Nobody receives: the incoming queue fills and the reactor pauses reading.
    write_all(&mut raw, &wire);
    thread::sleep(Duration::from_millis(50));
    let mesh2 = mesh.clone();
    let shutdown = thread::spawn(move || mesh2.shutdown());
    shutdown.join().unwrap();
    assert!(mesh.is_shutdown());
}

#[test]
fn dropping_the_last_handle_flushes_closes_and_stops_the_reactor() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(4, 4).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let outgoing = mesh.outgoing(id).unwrap();
    drop(mesh);
    // The Outgoing handle keeps the mesh alive…
    outgoing.send(b"still here".to_vec()).unwrap();
    drop(outgoing);
    // …and dropping it shut the reactor down: what was queued went out, then the socket
    // was closed.
    assert_eq!(read_frame(&mut raw), b"still here");
    let mut sink = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut raw, &mut sink).unwrap(), 0);
}

#[test]
fn capacities_must_be_at_least_one() {
    assert_eq!(
        Mesh::new(0, 1).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        Mesh::new(1, 0).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn unknown_ids_are_not_found_and_hand_the_envelope_back() {
    let mesh = Mesh::new(1, 1).unwrap();
    match mesh.send(Envelope::new(42, b"lost?".to_vec())) {
        Err(SendError::NotFound(envelope)) => {
            assert_eq!((envelope.id(), envelope.payload()), (42, &b"lost?"[..]))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(mesh.remove(42).unwrap_err(), RemoveError::NotFound(42));
    assert!(mesh.outgoing(42).is_none());
    assert_eq!(
        RemoveError::NotFound(42).to_string(),
        "no connection with id 42"
    );
}

#[test]
fn receive_methods_wait_take_and_batch() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 16).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    assert_eq!(mesh.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        mesh.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );

    for i in 0..5u64 {
        mesh.send(Envelope::new(client, numbered(i, 8))).unwrap();
    }
    let first = mesh.recv_batch(2).unwrap();
    assert!((1..=2).contains(&first.len()));
    let mut got: Vec<u64> = first.iter().map(|e| number(e.payload())).collect();
    while got.len() < 5 {
        let batch = mesh.recv_batch(100).unwrap();
        assert!(!batch.is_empty() && batch.iter().all(|e| e.id() == server));
        got.extend(batch.iter().map(|e| number(e.payload())));
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(mesh.try_recv(), Err(TryRecvError::Empty));
}

#[test]
#[should_panic(expected = "at least one envelope")]
fn a_batch_of_zero_is_a_programming_error() {
    let mesh = Mesh::new(1, 1).unwrap();
    let _ = mesh.recv_batch(0);
}

#[test]
fn outgoing_and_incoming_handles_work_like_the_mesh() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(4, 4).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let outgoing = mesh.outgoing(client).unwrap();
    let incoming = mesh.incoming();
    assert_eq!(outgoing.id(), client);
    outgoing.send(b"via outgoing".to_vec()).unwrap();
    let envelope = incoming.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        (envelope.id(), envelope.payload()),
        (server, &b"via outgoing"[..])
    );
    mesh.remove(client).unwrap();
    assert!(outgoing.is_closed());
    match outgoing.send(b"after remove".to_vec()) {
        Err(SendError::Disconnected(envelope)) => assert_eq!(envelope.payload(), b"after remove"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[test]
fn clones_share_the_incoming_queue() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 1024).unwrap();
    let (client, _) = mesh_pair(&mesh, &transport);
    const TOTAL: u64 = 2000;
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let mesh = mesh.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(envelope) = mesh.recv_timeout(Duration::from_millis(500)) {
                    got.push(number(envelope.payload()));
                }
                got
            })
        })
        .collect();
    let mut sent = 0;
    while sent < TOTAL {
        match mesh.send(Envelope::new(client, numbered(sent, 8))) {
            Ok(()) => sent += 1,
            Err(SendError::Full(_)) => thread::yield_now(),
            Err(other) => panic!("{other}"),
        }
    }
    let mut all: Vec<u64> = receivers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..TOTAL).collect::<Vec<_>>(),
        "every envelope reaches exactly one receiver"
    );
}

#[test]
fn frames_of_zero_one_and_a_mebibyte_arrive_whole() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(4, 4).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    for payload in [Vec::new(), vec![0xa5], big.clone()] {
        mesh.send(Envelope::new(client, payload.clone())).unwrap();
        let envelope = recv(&mesh);
        assert_eq!(envelope.id(), server);
        assert!(
            envelope.payload() == payload,
            "a payload of {} bytes",
            payload.len()
        );
    }
}

#[test]
fn a_payload_over_the_maximum_frame_size_is_refused_at_send() {
    let transport = TcpTransport::default().with_max_frame_size(1024);
    let mesh = Mesh::new(4, 4).unwrap();
    let (client, _) = mesh_pair(&mesh, &transport);
    mesh.send(Envelope::new(client, vec![0; 1024])).unwrap();
    match mesh.send(Envelope::new(client, vec![0; 1025])) {
        Err(err @ SendError::TooLarge(_)) => {
            assert_eq!(
                err.to_string(),
                format!(
                    "a payload of 1025 bytes exceeds the maximum frame size of connection {client}"
                )
            );
            assert_eq!(err.into_envelope().unwrap().payload().len(), 1025);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn shutdown_hands_back_every_frame_it_did_not_write() {
    // A peer that does not read: the socket takes what its buffers hold, the queue holds
    // the rest. Shutdown writes what it can and hands the rest back, in order; the peer,
    // reading afterwards, sees the first part: together, every frame once.
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 64).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let accepted = fill_queue(&mesh, id, 64 * 1024);
    let notices = mesh.shutdown();
    assert_eq!(notices.len(), 1, "one connection had frames left");
    let notice = &notices[0];
    assert_eq!(notice.id, id);
    assert!(matches!(notice.reason, DisconnectReason::Shutdown));
    let unsent: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
    let first = *unsent.first().expect("a full queue leaves frames");
    assert_eq!(
        unsent,
        (first..accepted).collect::<Vec<_>>(),
        "the newest, in order"
    );
    // The mesh closed the socket: the peer reads what was written, then the end (a frame
    // cut by the close was not written whole: it is among those handed back).
    let mut read = 0;
    let mut header = [0u8; 4];
    while std::io::Read::read_exact(&mut raw, &mut header).is_ok() {
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        if std::io::Read::read_exact(&mut raw, &mut payload).is_err() {
            break;
        }
        assert_eq!(number(&payload), read);
        read += 1;
    }
    assert_eq!(
        read, first,
        "what the peer read and what came back are all of it"
    );
    assert!(mesh.shutdown().is_empty(), "handed back once");
}
