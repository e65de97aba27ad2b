//! Lent reads (`Mesh::lend_reads`): a thread that borrows a connection's reads gets every
//! frame the reactor would have, in order with the frames the reactor reads before and
//! after; the reactor stays away from a lent connection and picks up whatever arrived when
//! it is given back; a connection that ends while lent ends with its usual notice; and
//! neither `remove` nor `shutdown` waits for the borrower.
#![cfg(unix)]

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::*;
use wiremesh_core::codec::encode_frame;
use wiremesh_core::{DisconnectReason, Lent, LentReads, Mesh, TcpTransport, TryRecvError};

/// Lends connection `id`'s reads, once the reactor has taken the connection in.
fn lend(mesh: &Mesh, id: usize) -> LentReads {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(lent) = mesh.lend_reads(id) {
            return lent;
        }
        assert!(Instant::now() < deadline, "connection {id} was never lent");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A mesh with one connection to a plain socket, its reads lent: (mesh, socket, id, reads).
fn lent_peer() -> (Mesh, std::net::TcpStream, usize, LentReads) {
    let mesh = Mesh::new(64, 16).unwrap();
    let (raw, id) = raw_peer(&mesh, &TcpTransport::default());
    let lent = lend(&mesh, id);
    (mesh, raw, id, lent)
}

/// Reads a lent connection until `enough` says so; panics if that takes too long or the
/// reads are taken back. Returns the frames the reads delivered.
fn read_until(lent: &mut LentReads, mut enough: impl FnMut() -> bool) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut delivered = 0;
    while !enough() {
        assert!(Instant::now() < deadline, "the lent reads never got there");
        match lent.read() {
            Lent::Yes(0) => thread::sleep(Duration::from_micros(200)),
            Lent::Yes(n) => delivered += n,
            Lent::No => panic!("taken back while reading"),
        }
    }
    delivered
}

/// Reads a lent connection until its reads end; returns the frames delivered before.
fn read_until_ended(lent: &mut LentReads) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut delivered = 0;
    loop {
        assert!(Instant::now() < deadline, "the lent reads never ended");
        match lent.read() {
            Lent::Yes(0) => thread::sleep(Duration::from_micros(200)),
            Lent::Yes(n) => delivered += n,
            Lent::No => return delivered,
        }
    }
}

fn nothing_waits(mesh: &Mesh) -> bool {
    matches!(mesh.try_recv(), Err(TryRecvError::Empty))
}

#[test]
fn the_reactor_stays_away_while_lent_and_reads_what_came_once_given_back() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    // The reactor reads first.
    write_all(&mut raw, &frame(b"one"));
    assert_eq!(recv(&mesh).payload(), b"one");

    let mut lent = lend(&mesh, id);
    assert_eq!(lent.id(), id);
    write_all(&mut raw, &frame(b"two"));
    thread::sleep(Duration::from_millis(50));
    assert!(nothing_waits(&mesh), "the reactor read a lent connection");
    assert_eq!(read_until(&mut lent, || mesh.incoming().len() == 1), 1);
    assert_eq!(recv(&mesh).payload(), b"two");

    // Given back with a frame unread: the reactor reads it without a new arrival.
    write_all(&mut raw, &frame(b"three"));
    thread::sleep(Duration::from_millis(50));
    assert!(nothing_waits(&mesh));
    drop(lent);
    let three = recv(&mesh);
    assert_eq!((three.id(), three.payload()), (id, &b"three"[..]));
    write_all(&mut raw, &frame(b"four"));
    assert_eq!(recv(&mesh).payload(), b"four");
}

#[test]
fn lent_and_reactor_reads_keep_a_stream_in_order() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1 << 20, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    const FRAMES: u64 = 20_000;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        thread::spawn(move || {
            let mut wire = Vec::new();
            for n in 0..FRAMES {
                // Mostly small frames, and now and then one large enough to be read
                // straight into its own buffer.
                let len = if n % 500 == 499 {
                    100_000
                } else {
                    8 + (n % 300) as usize
                };
                encode_frame(&numbered(n, len), &mut wire).unwrap();
            }
            // Cut anywhere, headers and payloads included, with pauses between.
            let mut at = 0;
            let mut cut = 1;
            while at < wire.len() {
                let end = (at + cut).min(wire.len());
                raw.write_all(&wire[at..end]).unwrap();
                at = end;
                cut = cut * 7 % 9973 + 1;
                if cut % 5 == 0 {
                    thread::sleep(Duration::from_micros(100));
                }
            }
            done.store(true, SeqCst);
            raw
        })
    };
    let mut next = 0u64;
    let take = |mesh: &Mesh, next: &mut u64| {
        while let Ok(envelope) = mesh.try_recv() {
            assert_eq!(envelope.id(), id);
            assert_eq!(
                number(envelope.payload()),
                *next,
                "out of order or repeated"
            );
            assert_eq!(
                envelope.payload(),
                &numbered(*next, envelope.payload().len())[..]
            );
            *next += 1;
        }
    };
    let deadline = Instant::now() + PATIENCE;
    let mut round = 0;
    while next < FRAMES {
        assert!(Instant::now() < deadline, "stuck at frame {next}");
        round += 1;
        if round % 2 == 0 {
            // Lent for a while...
            if let Some(mut lent) = mesh.lend_reads(id) {
                for _ in 0..20 {
                    if lent.read() == Lent::No {
                        panic!("taken back while open");
                    }
                    take(&mesh, &mut next);
                }
            }
        } else {
            // ...then the reactor's for a while.
            for _ in 0..20 {
                take(&mesh, &mut next);
                thread::sleep(Duration::from_micros(50));
            }
        }
    }
    take(&mesh, &mut next);
    assert_eq!(next, FRAMES);
    assert!(done.load(SeqCst));
    drop(writer.join().unwrap());
}

#[test]
fn a_peer_that_ends_while_lent_gets_its_notice_after_its_frames() {
    let (mesh, mut raw, id, mut lent) = lent_peer();
    let mut wire = Vec::new();
    for n in 0..3 {
        wire.extend(frame(&numbered(n, 20)));
    }
    wire.extend(&frame(b"cut short")[..6]);
    write_all(&mut raw, &wire);
    raw.shutdown(Shutdown::Write).unwrap();
    read_until_ended(&mut lent);
    assert!(!lent.is_lent());
    for n in 0..3 {
        assert_eq!(number(recv(&mesh).payload()), n);
    }
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(notice.reason, DisconnectReason::EofMidFrame { buffered: 6 }),
        "{:?}",
        notice.reason
    );
    assert!(
        mesh.lend_reads(id).is_none(),
        "a closed connection cannot be lent"
    );
}

#[test]
fn a_malformed_frame_met_by_a_lent_read_is_a_protocol_disconnect() {
    let (mesh, mut raw, id, mut lent) = lent_peer();
    let mut wire = frame(b"fine");
    wire.extend(u32::MAX.to_be_bytes());
    write_all(&mut raw, &wire);
    // The frame and the bad header may come in one read: the frame is delivered either way.
    read_until_ended(&mut lent);
    assert_eq!(recv(&mesh).payload(), b"fine");
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(notice.reason, DisconnectReason::Protocol(_)),
        "{:?}",
        notice.reason
    );
}

#[test]
fn remove_takes_a_lent_connection_back_with_its_half_read_frame() {
    let (mesh, mut raw, id, mut lent) = lent_peer();
    let whole = frame(&numbered(7, 5000));
    write_all(&mut raw, &whole[..1000]);
    // The lent read takes the first part into the decoder.
    let fd = lent.socket();
    let waiting = || {
        let mut probe = [0u8; 1];
        // SAFETY: the lent socket is open while it is lent.
        unsafe { recv_peek(fd, &mut probe) }
    };
    let deadline = Instant::now() + PATIENCE;
    while waiting() == 0 {
        assert!(Instant::now() < deadline, "the first part never arrived");
        thread::sleep(Duration::from_millis(1));
    }
    while waiting() > 0 {
        assert!(Instant::now() < deadline, "the first part was never read");
        assert_eq!(lent.read(), Lent::Yes(0));
    }
    let duplicate = lent
        .duplicate_socket()
        .expect("a lent socket can be duplicated");
    // Not a deadlock: the reactor takes the reads back by itself.
    let mut connection = mesh.remove(id).unwrap();
    assert!(!lent.is_lent());
    assert_eq!(lent.read(), Lent::No);
    assert!(
        lent.duplicate_socket().is_err(),
        "no duplicate once taken back"
    );
    drop(duplicate);
    write_all(&mut raw, &whole[1000..]);
    assert_eq!(connection.recv().unwrap(), numbered(7, 5000));
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)`: bytes waiting in the socket (0 if none).
unsafe fn recv_peek(fd: std::os::fd::RawFd, buf: &mut [u8]) -> usize {
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    socket.set_nonblocking(true).unwrap();
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(
            buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
            buf.len(),
        )
    };
    socket.peek(uninit).unwrap_or(0)
}

#[test]
fn lending_is_refused_where_it_cannot_be_honoured() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    assert!(mesh.lend_reads(id + 100).is_none(), "an unknown id");
    let lent = lend(&mesh, id);
    assert!(mesh.lend_reads(id).is_none(), "lent already");
    drop(lent);
    let lent = lend(&mesh, id);
    drop(lent);
    raw.shutdown(Shutdown::Both).unwrap();
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(mesh.lend_reads(id).is_none(), "a disconnected connection");
    write_all_ignoring_errors(&mut raw);
}

fn write_all_ignoring_errors(raw: &mut std::net::TcpStream) {
    let _ = raw.write_all(b"late");
}

#[test]
fn frames_held_for_a_full_incoming_queue_go_before_a_lent_read() {
    let transport = TcpTransport::default();
    // Room for 4 frames: the rest of a read is held by the reactor.
    let mesh = Mesh::new(4, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let mut wire = Vec::new();
    for n in 0..10 {
        wire.extend(frame(&numbered(n, 16)));
    }
    write_all(&mut raw, &wire);
    let deadline = Instant::now() + PATIENCE;
    while mesh.incoming().len() < 4 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    assert!(
        mesh.lend_reads(id).is_none(),
        "frames held by the reactor go first"
    );
    for n in 0..10 {
        assert_eq!(number(recv(&mesh).payload()), n);
    }
    let mut lent = lend(&mesh, id);
    write_all(&mut raw, &frame(&numbered(10, 16)));
    read_until(&mut lent, || mesh.incoming().len() == 1);
    assert_eq!(number(recv(&mesh).payload()), 10);
}

#[test]
fn shutdown_does_not_wait_for_a_borrower() {
    let (mesh, _raw, _, mut lent) = lent_peer();
    mesh.shutdown();
    assert_eq!(lent.read(), Lent::No);
    drop(lent);
}
