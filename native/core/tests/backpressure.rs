//! Bounded queues in both directions: a full outgoing queue hands the envelope back and
//! holds up no other connection; a full incoming queue pauses reading without loss.

mod util;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use util::*;
use wiremesh_core::codec::Decoded;
use wiremesh_core::{Delivery, Envelope, Mesh, Received, SendError, TcpTransport};

#[test]
fn a_peer_that_never_reads_fills_its_queue_while_another_keeps_delivering() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 8).unwrap();
    let (_stuck_peer, stuck) = raw_peer(&mesh, &transport);
    let (client, server) = mesh_pair(&mesh, &transport);

    // Fill the socket buffers and then the queue of the connection whose peer never reads.
    let payload = vec![7u8; 64 * 1024];
    let deadline = Instant::now() + PATIENCE;
    let full = loop {
        match mesh.send(Envelope::new(stuck, payload.clone())) {
            Ok(()) => assert!(Instant::now() < deadline, "the queue never filled"),
            Err(SendError::Full(envelope)) => break envelope,
            Err(other) => panic!("expected Full, got {other:?}"),
        }
        // Give the reactor time to move frames into the socket as far as it goes.
        thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(full.id(), stuck);
    assert_eq!(
        full.payload(),
        &payload[..],
        "Full hands the envelope back whole"
    );

    // The other connection is not held up.
    for i in 0..100u64 {
        mesh.send(Envelope::new(client, numbered(i, 32))).unwrap();
        let envelope = recv(&mesh);
        assert_eq!((envelope.id(), number(envelope.payload())), (server, i));
    }
    assert!(matches!(
        mesh.send(Envelope::new(stuck, vec![1])),
        Err(SendError::Full(_))
    ));
}

#[test]
fn a_slow_consumer_with_room_for_four_receives_a_hundred_thousand_once_in_order() {
    const TOTAL: u64 = 100_000;
    let transport = TcpTransport::default();
    let mesh = Mesh::new(4, 4).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let writer = thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..TOTAL {
            batch.extend(frame(&numbered(i, 16)));
            if batch.len() > 32 * 1024 {
                write_all(&mut raw, &batch);
                batch.clear();
            }
        }
        write_all(&mut raw, &batch);
        raw
    });
    for expected in 0..TOTAL {
        let envelope = recv(&mesh);
        assert_eq!(envelope.id(), id);
        assert_eq!(number(envelope.payload()), expected);
        if expected % 10_000 == 0 {
            // Slower than the peer now and then: the queue fills and reading pauses.
            thread::sleep(Duration::from_millis(20));
        }
    }
    let raw = writer.join().unwrap();
    assert!(mesh.try_recv().is_err(), "nothing more than was sent");
    drop(raw);
}

#[test]
fn reading_pauses_while_incoming_is_full_and_the_peer_is_pushed_back() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1, 1).unwrap();
    let (raw, _) = raw_peer(&mesh, &transport);
    raw.set_nonblocking(true).unwrap();
    let mut raw = raw;
    // One continuous stream of numbered frames, written as far as the socket takes it.
    let mut wire = Vec::new();
    for i in 0..65_536u64 {
        wire.extend(frame(&numbered(i, 1024)));
    }
    // Nobody receives: writing must eventually block, because the reactor stopped reading.
    let mut written = 0usize;
    let deadline = Instant::now() + PATIENCE;
    let mut blocked_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the peer was never pushed back ({written} bytes written)"
        );
        assert!(written < wire.len(), "64 MiB went in without push-back");
        match std::io::Write::write(&mut raw, &wire[written..]) {
            Ok(n) => {
                written += n;
                blocked_since = None;
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("{err}"),
        }
    }
    // Everything written is still delivered once the consumer drains.
    let frames = written / (4 + 1024);
    let mut n = 0u64;
    while (n as usize) < frames {
        assert_eq!(number(recv(&mesh).payload()), n);
        n += 1;
    }
    let mut sink = [0u8; 1];
    let nothing = raw.read(&mut sink).unwrap_err();
    assert_eq!(
        nothing.kind(),
        std::io::ErrorKind::WouldBlock,
        "the mesh sent nothing back"
    );
}

#[test]
fn small_frames_arrive_in_runs_and_the_incoming_queue_never_holds_more_than_its_capacity() {
    const TOTAL: u64 = 5_000;
    let transport = TcpTransport::default();
    let mesh = Mesh::new(100, 4).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let mut wire = Vec::new();
    for i in 0..TOTAL {
        wire.extend(frame(&numbered(i, 16)));
    }
    // A large frame in the middle leaves on its own, in its place.
    let large = 2_500;
    let mut wire_with_large = Vec::new();
    let split = (4 + 16) * large as usize;
    wire_with_large.extend(&wire[..split]);
    wire_with_large.extend(frame(&numbered(u64::MAX, 64 * 1024)));
    wire_with_large.extend(&wire[split..]);
    let writer = thread::spawn(move || {
        std::io::Write::write_all(&mut raw, &wire_with_large).unwrap();
        raw
    });
    let incoming = mesh.incoming();
    let deadline = Instant::now() + PATIENCE;
    while incoming.len() < 100 {
        assert!(Instant::now() < deadline, "the queue never filled");
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        incoming.len(),
        100,
        "a run is split at the capacity, not queued whole"
    );

    // Deliveries taken: runs, their parts, and single envelopes.
    let (mut next, mut runs, mut saw_large) = (0u64, 0, false);
    let notified = mesh.notified();
    let mut items = Vec::new();
    while next < TOTAL {
        items.clear();
        match notified.take(37, &mut items) {
            Ok(0) => thread::sleep(Duration::from_millis(1)),
            Ok(taken) => {
                assert!(taken <= 37);
                let deliveries: Vec<Delivery> = items
                    .drain(..)
                    .map(|item| match item {
                        Received::Frames(delivery) => delivery,
                        Received::Disconnect(notice) => panic!("{notice:?}"),
                    })
                    .collect();
                assert_eq!(deliveries.iter().map(Delivery::len).sum::<usize>(), taken);
                for delivery in deliveries {
                    assert_eq!(delivery.id, id);
                    runs += 1;
                    if let Decoded::Run(frames) = &delivery.frames {
                        assert!(frames.largest_payload() < 64 * 1024);
                    }
                    let mut envelopes = Vec::new();
                    delivery.into_envelopes(&mut envelopes);
                    for envelope in envelopes {
                        if next == large && !saw_large {
                            assert_eq!(envelope.payload().len(), 64 * 1024);
                            assert_eq!(number(envelope.payload()), u64::MAX);
                            saw_large = true;
                            continue;
                        }
                        assert_eq!(number(envelope.payload()), next);
                        next += 1;
                    }
                }
            }
            Err(err) => panic!("{err:?}"),
        }
        assert!(Instant::now() < deadline + PATIENCE, "stuck at {next}");
    }
    assert!(saw_large);
    assert!(
        runs < TOTAL as usize / 10,
        "{runs} deliveries for {TOTAL} frames: small frames should travel together"
    );
    drop(writer.join().unwrap());
}

#[test]
fn a_flood_of_empty_frames_does_not_starve_an_honest_connection() {
    // One peer writes empty frames as fast as it can (a read of 64 KiB is 16 384 of them,
    // far more than the incoming queue holds); another sends 2 000 numbered frames. The
    // honest frames must all arrive while the flood goes on, interleaved: once the honest
    // connection has frames pending, at most two quanta of flood envelopes pass between two
    // of its own (one quantum, measured; without the quantum, 13 000 to 17 000).
    const CAPACITY: usize = 1024;
    const HONEST: u64 = 2_000;
    let transport = TcpTransport::default();
    let mesh = Mesh::new(CAPACITY, 4).unwrap();
    let (mut flood, flood_id) = raw_peer(&mesh, &transport);
    let (mut honest, honest_id) = raw_peer(&mesh, &transport);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        thread::spawn(move || {
            let empties = vec![0u8; 64 * 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if std::io::Write::write_all(&mut flood, &empties).is_err() {
                    break;
                }
            }
            flood
        })
    };
    // Let the flood fill the incoming queue and the socket buffers first.
    let deadline = Instant::now() + PATIENCE;
    while mesh.incoming().len() < CAPACITY {
        assert!(
            Instant::now() < deadline,
            "the flood never filled the queue"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let mut wire = Vec::new();
    for i in 0..HONEST {
        wire.extend(frame(&numbered(i, 16)));
    }
    write_all(&mut honest, &wire);

    let (mut next, mut flood_run, mut longest, mut flooded) = (0u64, 0usize, 0usize, 0usize);
    while next < HONEST {
        assert!(
            Instant::now() < deadline + PATIENCE,
            "starved: {next} of {HONEST} honest frames after {flooded} flood frames"
        );
        for envelope in mesh.recv_batch(256).unwrap() {
            if envelope.id() == flood_id {
                flooded += 1;
                flood_run += 1;
                continue;
            }
            assert_eq!(envelope.id(), honest_id);
            assert_eq!(number(envelope.payload()), next, "in order");
            if next > 0 {
                longest = longest.max(flood_run);
            }
            flood_run = 0;
            next += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        longest <= 2 * wiremesh_core::QUANTUM,
        "{longest} flood envelopes passed between two honest ones"
    );
    assert!(
        flooded > CAPACITY,
        "the flood went on meanwhile ({flooded})"
    );
    mesh.shutdown();
    drop(flooding.join().unwrap());
}
