//! Direct writes (`Mesh::write`, `Mesh::write_encoded`): frames a sender writes straight to
//! the socket keep their order with the frames the reactor writes, the socket never has two
//! writers at once, and a connection that goes while a sender writes to it loses nothing
//! without an answer: every frame arrives, is refused at the call, or comes back in the
//! disconnect notice.

mod util;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;

use util::*;
use wiremesh_core::codec::{encode_frame, FramesRef};
use wiremesh_core::{Envelope, Mesh, SendEncodedError, SendError, TcpTransport};

/// True if the send was refused for a full queue; panics on any other error.
fn is_full(result: Result<(), SendError>) -> bool {
    match result {
        Ok(()) => false,
        Err(SendError::Full(_)) => true,
        Err(err) => panic!("{err}"),
    }
}

/// Long enough for an idle reactor to finish writing and go to sleep.
fn settle() {
    thread::sleep(std::time::Duration::from_millis(20));
}

/// Frames `first..first + count`, numbered, `len` bytes each, encoded in one buffer.
fn numbered_wire(first: u64, count: u64, len: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for n in first..first + count {
        encode_frame(&numbered(n, len), &mut wire).unwrap();
    }
    wire
}

#[test]
fn direct_and_queued_frames_arrive_in_the_order_they_were_accepted() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1 << 16, 1 << 16).unwrap();
    let (a, b) = mesh_pair(&mesh, &transport);
    // Every way of sending, mixed; the 4 MiB payloads cannot leave in one write, so their
    // rest goes through the reactor while later frames wait behind it.
    let mut n = 0u64;
    for round in 0..40 {
        if round % 8 < 4 {
            // Let the reactor finish and sleep, so the writes below go direct.
            settle();
        }
        match round % 4 {
            0 => mesh.send(Envelope::new(a, numbered(n, 100))).unwrap(),
            1 => mesh.write(a, &numbered(n, 100)).unwrap(),
            2 => {
                let wire = numbered_wire(n, 50, 64);
                mesh.write_encoded(a, FramesRef::new(&wire).unwrap())
                    .unwrap();
                n += 49;
            }
            _ => mesh.write(a, &numbered(n, 4 << 20)).unwrap(),
        }
        n += 1;
    }
    for expected in 0..n {
        let envelope = recv(&mesh);
        assert_eq!(envelope.id(), b);
        assert_eq!(number(envelope.payload()), expected);
        assert_eq!(
            envelope.payload(),
            &numbered(expected, envelope.payload().len())[..]
        );
    }
}

#[test]
fn a_written_payload_arrives_and_is_refused_where_a_send_would_be() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 4).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    // Let the reactor take the connection and go to sleep.
    mesh.send(Envelope::new(id, b"first".to_vec())).unwrap();
    assert_eq!(read_frame(&mut raw), b"first");
    settle();
    mesh.write(id, b"second").unwrap();
    assert_eq!(read_frame(&mut raw), b"second");
    let wire = numbered_wire(0, 3, 8);
    mesh.write_encoded(id, FramesRef::new(&wire).unwrap())
        .unwrap();
    for n in 0..3 {
        assert_eq!(number(&read_frame(&mut raw)), n);
    }
    // Errors carry a copy of what was refused.
    let too_many = numbered_wire(0, 5, 8);
    let refused = mesh
        .write_encoded(id, FramesRef::new(&too_many).unwrap())
        .unwrap_err();
    assert!(matches!(&refused, SendEncodedError::Full(frames) if frames.as_bytes() == too_many));
    assert!(matches!(
        mesh.write(999, b"x"),
        Err(SendError::NotFound(envelope)) if envelope.payload() == b"x"
    ));
    let huge = vec![0u8; (16 << 20) + 1];
    assert!(matches!(mesh.write(id, &huge), Err(SendError::TooLarge(_))));
    let empty = FramesRef::new(&[]).unwrap();
    mesh.write_encoded(id, empty).unwrap();
}

#[test]
fn many_threads_writing_directly_never_interleave_their_bytes() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1 << 16, 1 << 12).unwrap();
    let (a, b) = mesh_pair(&mesh, &transport);
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 3000;
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let mesh = mesh.clone();
            thread::spawn(move || {
                let mut i = 0;
                while i < PER_THREAD {
                    let n = t << 32 | i;
                    let full = match i % 3 {
                        0 => is_full(mesh.write(a, &numbered(n, 40 + (i as usize % 7) * 1000))),
                        1 => is_full(mesh.send(Envelope::new(a, numbered(n, 40)))),
                        _ => {
                            let wire = numbered_wire(n, 1, 300);
                            match mesh.write_encoded(a, FramesRef::new(&wire).unwrap()) {
                                Ok(()) => false,
                                Err(SendEncodedError::Full(_)) => true,
                                Err(err) => panic!("{err}"),
                            }
                        }
                    };
                    match full {
                        false => i += 1,
                        true => thread::yield_now(),
                    }
                    if i % 64 == 0 {
                        // Now and then the reactor catches up and sleeps: direct writes
                        // then race each other and the reactor's queued frames.
                        thread::sleep(std::time::Duration::from_micros(200 * t));
                    }
                }
            })
        })
        .collect();
    let mut next: HashMap<u64, u64> = HashMap::new();
    for _ in 0..THREADS * PER_THREAD {
        let envelope = recv(&mesh);
        assert_eq!(envelope.id(), b);
        let n = number(envelope.payload());
        let (t, i) = (n >> 32, n & 0xffff_ffff);
        assert_eq!(
            envelope.payload(),
            &numbered(n, envelope.payload().len())[..]
        );
        let expected = next.entry(t).or_default();
        assert_eq!(i, *expected, "thread {t}'s frames in order");
        *expected += 1;
    }
    for sender in senders {
        sender.join().unwrap();
    }
}

/// A peer that stops reading and then resets, while senders write directly and queue:
/// each frame is read by the peer, refused at the call, or handed back by the notice.
#[test]
fn a_connection_that_goes_mid_write_answers_for_every_frame() {
    for _ in 0..5 {
        let transport = TcpTransport::default();
        let mesh = Mesh::new(64, 256).unwrap();
        let (mut raw, id) = raw_peer(&mesh, &transport);
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..3u64)
            .map(|t| {
                let (mesh, stop) = (mesh.clone(), stop.clone());
                thread::spawn(move || {
                    let (mut accepted, mut refused) = (Vec::new(), 0u64);
                    let mut i = 0u64;
                    while !stop.load(SeqCst) {
                        let n = t << 32 | i;
                        i += 1;
                        let result = match i % 2 {
                            0 => mesh.write(id, &numbered(n, 20_000)),
                            _ => mesh.send(Envelope::new(id, numbered(n, 100))),
                        };
                        match result {
                            Ok(()) => accepted.push(n),
                            Err(SendError::Full(_)) => thread::yield_now(),
                            Err(SendError::Disconnected(e)) | Err(SendError::NotFound(e)) => {
                                assert_eq!(number(e.payload()), n);
                                refused += 1;
                                if refused > 100 {
                                    break;
                                }
                            }
                            Err(err) => panic!("{err}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        // Read some, then reset the connection with bytes unread.
        let mut read = Vec::new();
        let mut got = Vec::new();
        while got.len() < 2 << 20 {
            let mut buf = [0u8; 65536];
            let n = raw.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        while at + 4 <= got.len() {
            let len = u32::from_be_bytes(got[at..at + 4].try_into().unwrap()) as usize;
            if at + 4 + len > got.len() {
                break;
            }
            read.push(number(&got[at + 4..at + 4 + len]));
            at += 4 + len;
        }
        socket2::SockRef::from(&raw)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(raw);
        let notice = disconnect(&mesh);
        stop.store(true, SeqCst);
        let accepted: Vec<u64> = senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        assert_eq!(notice.id, id);
        let unsent: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
        // Nothing arrives twice, and every accepted frame was read or handed back, except
        // frames the kernel took but the peer never read (lost with the reset, as for any
        // TCP socket): those all come after the frames read, one thread's in order.
        let mut answered: std::collections::HashSet<u64> = read.iter().copied().collect();
        assert_eq!(answered.len(), read.len(), "a frame read twice");
        for n in &unsent {
            assert!(answered.insert(*n), "frame {n} both read and handed back");
        }
        for t in 0..3u64 {
            let mine: Vec<u64> = accepted.iter().copied().filter(|n| n >> 32 == t).collect();
            let first_unanswered = mine.iter().position(|n| !answered.contains(n));
            if let Some(first) = first_unanswered {
                // Lost in the kernel: a contiguous stretch, then only handed-back frames.
                let after: Vec<_> = mine[first..]
                    .iter()
                    .skip_while(|n| !answered.contains(n))
                    .collect();
                assert!(
                    after.iter().all(|n| unsent.contains(n)),
                    "thread {t}: a frame after the lost stretch was neither read nor handed back"
                );
            }
        }
    }
}

#[test]
fn shutdown_while_threads_write_directly_is_safe() {
    for _ in 0..20 {
        let transport = TcpTransport::default();
        let mesh = Mesh::new(64, 64).unwrap();
        let (a, _b) = mesh_pair(&mesh, &transport);
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let mesh = mesh.clone();
                thread::spawn(move || {
                    let payload = vec![7u8; 30_000];
                    loop {
                        match mesh.write(a, &payload) {
                            Ok(()) | Err(SendError::Full(_)) => {}
                            Err(SendError::Disconnected(_)) | Err(SendError::NotFound(_)) => return,
                            Err(SendError::Io(_)) => return,
                            Err(err) => panic!("{err}"),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(std::time::Duration::from_millis(5));
        mesh.shutdown();
        for sender in senders {
            sender.join().unwrap();
        }
    }
}
