//! The notify hook that wakes a consumer waiting in an event loop instead of a blocking
//! call: called once per arming when envelopes arrive, and for disconnects, room for a
//! waiting sender, and the reactor stopping.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use util::*;
use wiremesh_core::{Envelope, Mesh, SendError, TcpTransport};

/// A mesh whose hook reports each call on a channel.
fn notified_mesh(incoming: usize, outgoing: usize) -> (Mesh, Receiver<()>) {
    let (tx, rx) = unbounded();
    let mesh = Mesh::with_notify(
        incoming,
        outgoing,
        Arc::new(move || {
            let _ = tx.send(());
        }),
    )
    .unwrap();
    (mesh, rx)
}

fn quiet(rx: &Receiver<()>) -> bool {
    rx.recv_timeout(Duration::from_millis(100)).is_err()
}

#[test]
fn an_armed_consumer_is_notified_once_when_envelopes_arrive() {
    let transport = TcpTransport::default();
    let (mesh, notified) = notified_mesh(64, 64);
    let (client, server) = mesh_pair(&mesh, &transport);
    let incoming = mesh.incoming();

    // Not armed: envelopes arrive without a call.
    mesh.send(Envelope::new(client, b"one".to_vec())).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while incoming.is_empty() {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    assert!(quiet(&notified), "no call without arming");
    assert!(
        !mesh.notified().arm(),
        "arming with envelopes waiting says: take them now"
    );
    assert_eq!(incoming.try_recv().unwrap().id(), server);

    // Armed on an empty queue: one call for a burst.
    assert!(mesh.notified().arm());
    for i in 0..50u64 {
        mesh.send(Envelope::new(client, numbered(i, 8))).unwrap();
    }
    notified
        .recv_timeout(PATIENCE)
        .expect("a call once envelopes arrived");
    let mut got = 0;
    while got < 50 {
        if incoming.try_recv().is_ok() {
            got += 1;
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        quiet(&notified),
        "one call per arming, not one per envelope"
    );
}

#[test]
fn a_disconnect_notifies_whether_armed_or_not() {
    let transport = TcpTransport::default();
    let (mesh, notified) = notified_mesh(8, 8);
    let (raw, id) = raw_peer(&mesh, &transport);
    drop(raw);
    notified
        .recv_timeout(PATIENCE)
        .expect("a call for the disconnect");
    assert_eq!(
        mesh.disconnects()
            .try_recv()
            .expect("the notice is there")
            .id,
        id
    );
}

#[test]
fn a_sender_waiting_for_room_is_notified_when_the_peer_reads() {
    let transport = TcpTransport::default();
    let (mesh, notified) = notified_mesh(8, 4);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let notified_mesh = mesh.notified();
    assert!(
        !notified_mesh.want_room(id).unwrap(),
        "an empty queue has room"
    );
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 0u64;
    loop {
        assert!(Instant::now() < deadline, "the queue never filled");
        match mesh.send(Envelope::new(id, numbered(sent, 64 * 1024))) {
            Ok(()) => sent += 1,
            Err(SendError::Full(_)) => break,
            Err(other) => panic!("{other}"),
        }
        thread::sleep(Duration::from_millis(1));
    }
    if !notified_mesh.want_room(id).unwrap() {
        // The reactor made room between the Full and the call: that is the answer too.
        return;
    }
    assert!(quiet(&notified), "no room while the peer does not read");
    let reader = thread::spawn(move || {
        for _ in 0..sent {
            read_frame(&mut raw);
        }
        raw
    });
    notified
        .recv_timeout(PATIENCE)
        .expect("a call once there is room");
    mesh.send(Envelope::new(id, numbered(sent, 8))).unwrap();
    drop(reader.join().unwrap());
    assert!(
        notified_mesh.want_room(424_242).is_err(),
        "unknown ids are NotFound"
    );
}

#[test]
fn the_reactor_stopping_notifies_and_disarms_arming() {
    let (mesh, notified) = notified_mesh(1, 1);
    let consumer = mesh.notified();
    assert!(consumer.arm());
    mesh.shutdown();
    notified
        .recv_timeout(PATIENCE)
        .expect("a call when the reactor stops");
    assert!(!consumer.arm(), "a stopped mesh is not worth waiting for");
}

#[test]
fn an_event_loop_consumer_with_room_for_one_receives_everything_from_a_fast_peer() {
    // The consumer never blocks in the mesh: it arms, waits for the hook, drains. The
    // reactor pauses and resumes reading many times on the way.
    const TOTAL: u64 = 20_000;
    let transport = TcpTransport::default();
    let (mesh, notified) = notified_mesh(1, 4);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let writer = thread::spawn(move || {
        let mut wire = Vec::new();
        for i in 0..TOTAL {
            wire.extend(frame(&numbered(i, 16)));
        }
        write_all(&mut raw, &wire);
        raw
    });
    let incoming = mesh.incoming();
    let consumer = mesh.notified();
    let mut next = 0;
    while next < TOTAL {
        match incoming.try_recv() {
            Ok(envelope) => {
                assert_eq!((envelope.id(), number(envelope.payload())), (id, next));
                next += 1;
            }
            Err(_) => {
                if consumer.arm() {
                    notified
                        .recv_timeout(PATIENCE)
                        .expect("a call once envelopes arrive");
                }
            }
        }
    }
    drop(writer.join().unwrap());
}
