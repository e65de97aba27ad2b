//! Sends that take the sleeping reactor's state from its desk and write themselves
//! (`Mesh::send_batch`, `Mesh::send_from`): whatever the socket takes or leaves, and whoever
//! else sends meanwhile, every frame arrives once, in the order it was accepted, or comes
//! back.

mod util;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::*;
use wiremesh_core::{BatchError, Mesh, SendError, TcpTransport};

/// Whole frames of numbered payloads `first..first + count`, `len` bytes each.
fn numbered_wire(first: u64, count: u64, len: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for n in first..first + count {
        wire.extend(frame(&numbered(n, len)));
    }
    wire
}

/// Lets the reactor finish its turn and go to sleep, leaving its state on the desk.
fn settle() {
    thread::sleep(Duration::from_millis(20));
}

/// Reads `count` frames from the raw peer and returns their numbers.
fn read_numbers(raw: &mut std::net::TcpStream, count: u64) -> Vec<u64> {
    (0..count).map(|_| number(&read_frame(raw))).collect()
}

#[test]
fn a_batch_larger_than_the_socket_takes_arrives_whole_and_in_order_with_what_follows() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 64).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    settle();
    // 4 MiB in one batch: the socket takes part, the rest waits in the backlog and is
    // written by whoever owns the state next; later sends (queued or direct) go after it.
    let big = numbered_wire(0, 16, 256 * 1024);
    assert!(mesh.send_batch(&big, &[(id, 0..big.len())]).is_empty());
    let small = numbered_wire(16, 10, 16);
    assert!(mesh.send_batch(&small, &[(id, 0..small.len())]).is_empty());
    mesh.send_from(id, &numbered(26, 100_000)).unwrap();
    let reader = thread::spawn(move || (read_numbers(&mut raw, 27), raw));
    let (numbers, mut raw) = reader.join().unwrap();
    assert_eq!(numbers, (0..27).collect::<Vec<_>>());
    // Idle again: the next one goes straight out.
    settle();
    let one = numbered_wire(27, 1, 16);
    assert!(mesh.send_batch(&one, &[(id, 0..one.len())]).is_empty());
    assert_eq!(read_numbers(&mut raw, 1), [27]);
    mesh.shutdown();
}

#[test]
fn a_batch_is_refused_as_a_send_would_be() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 4).unwrap();
    let (_raw, id) = raw_peer(&mesh, &transport);
    settle();
    let five = numbered_wire(0, 5, 16);
    let refused = mesh.send_batch(&five, &[(id, 0..five.len())]);
    assert!(
        matches!(refused[..], [(0, BatchError::Full)]),
        "five frames for four places, all or none: {refused:?}"
    );
    let too_large = frame(&vec![0; 17 * 1024 * 1024]);
    let refused = mesh.send_batch(&too_large, &[(id, 0..too_large.len())]);
    assert!(matches!(refused[..], [(0, BatchError::TooLarge)]));
    let cut = numbered_wire(0, 2, 16);
    let refused = mesh.send_batch(&cut, &[(id, 0..cut.len() - 1)]);
    assert!(matches!(refused[..], [(0, BatchError::Malformed(_))]));
    let refused = mesh.send_batch(&five, &[(424_242, 0..five.len())]);
    assert!(matches!(refused[..], [(0, BatchError::NotFound)]));
    assert!(matches!(
        mesh.send_from(424_242, b"x"),
        Err(SendError::NotFound(_))
    ));
    drop(mesh.remove(id).unwrap());
    let refused = mesh.send_batch(&five, &[(id, 0..five.len())]);
    assert!(matches!(refused[..], [(0, BatchError::Disconnected)]));
    assert!(matches!(
        mesh.send_from(id, b"x"),
        Err(SendError::Disconnected(_))
    ));
}

#[test]
fn threads_sending_batches_and_single_sends_never_interleave_and_keep_their_order() {
    // Four threads send to one connection, each its own numbers, in batches, single
    // payloads and queued sends, pausing so that the reactor sleeps between: some of their
    // sends take the desk, some find it taken and queue. The peer must see each thread's
    // frames whole and in order.
    const PER_THREAD: u64 = 2_000;
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 100_000).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let reader = thread::spawn(move || {
        let mut next = [0u64; 4];
        for _ in 0..4 * PER_THREAD {
            let n = number(&read_frame(&mut raw));
            let (thread, seq) = ((n >> 32) as usize, n & 0xffff_ffff);
            assert_eq!(seq, next[thread], "thread {thread} out of order");
            next[thread] += 1;
        }
        raw
    });
    let senders: Vec<_> = (0..4u64)
        .map(|t| {
            let mesh = mesh.clone();
            thread::spawn(move || {
                let mut seq = 0;
                while seq < PER_THREAD {
                    let n = (t << 32) | seq;
                    match seq % 3 {
                        0 => {
                            let count = 5.min(PER_THREAD - seq);
                            let mut wire = Vec::new();
                            for k in 0..count {
                                wire.extend(frame(&numbered(n + k, 24)));
                            }
                            assert!(mesh.send_batch(&wire, &[(id, 0..wire.len())]).is_empty());
                            seq += count;
                        }
                        1 => {
                            mesh.send_from(id, &numbered(n, 3_000)).unwrap();
                            seq += 1;
                        }
                        _ => {
                            mesh.send(wiremesh_core::Envelope::new(id, numbered(n, 40)))
                                .unwrap();
                            seq += 1;
                        }
                    }
                    if seq % 97 == 0 {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    drop(reader.join().unwrap());
    mesh.shutdown();
}

#[test]
fn a_peer_that_resets_during_direct_writes_answers_for_every_frame() {
    // The peer reads a while, then resets while the mesh writes large batches directly:
    // every frame is read by the peer, or handed back in the notice, or lost in the
    // kernel after the last frame the peer read (as with any TCP socket); none twice.
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 1_000).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let reading = thread::spawn(move || {
        let numbers = read_numbers(&mut raw, 40);
        // Unread bytes left when it closes: the kernel sends a reset.
        let mut some = [0u8; 1];
        let _ = raw.read(&mut some);
        drop(raw);
        numbers
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut accepted = 0u64;
    while accepted < 10_000 && !stop.load(Relaxed) {
        let wire = numbered_wire(accepted, 4, 64 * 1024);
        let refused = mesh.send_batch(&wire, &[(id, 0..wire.len())]);
        match refused.first() {
            None => accepted += 4,
            Some((_, BatchError::Full)) => thread::sleep(Duration::from_millis(1)),
            Some((_, BatchError::Disconnected)) => break,
            Some(other) => panic!("{other:?}"),
        }
    }
    let read = reading.join().unwrap();
    assert_eq!(read, (0..40).collect::<Vec<_>>());
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    let unsent: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
    if let Some(&first) = unsent.first() {
        assert!(first >= 40, "nothing the peer read comes back");
        assert_eq!(
            unsent,
            (first..accepted).collect::<Vec<_>>(),
            "the newest frames, in order, once"
        );
    }
    mesh.shutdown();
}

#[test]
fn shutdown_while_threads_write_through_the_desk_is_safe() {
    let transport = TcpTransport::default();
    for _ in 0..20 {
        let mesh = Mesh::new(8, 64).unwrap();
        let (raw, id) = raw_peer(&mesh, &transport);
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let mesh = mesh.clone();
                thread::spawn(move || {
                    let wire = numbered_wire(0, 2, 32 * 1024);
                    for _ in 0..200 {
                        let refused = mesh.send_batch(&wire, &[(id, 0..wire.len())]);
                        if matches!(refused.first(), Some((_, BatchError::Disconnected))) {
                            return;
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(2));
        mesh.shutdown();
        for sender in senders {
            sender.join().unwrap();
        }
        drop(raw);
    }
}
