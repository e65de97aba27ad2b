//! Operations over real loopback sockets: a graceful end, the idle timeout, dialled ids
//! that keep their queue across connections, and the stats.

mod util;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use util::*;
use wiremesh_core::counters::Phase;
use wiremesh_core::{
    DisconnectReason, Ended, Envelope, Mesh, MeshOptions, SendError, TcpTransport, Transport,
};

#[test]
fn end_writes_everything_queued_then_the_peer_reads_the_end_of_the_stream() {
    // The case of the issue: 100 frames of 100 kB queued, then a close. Every frame must
    // reach the peer, then the end of the stream (not a cut in the middle of a frame).
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 128).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    for n in 0..100 {
        mesh.send(Envelope::new(id, numbered(n, 100_000))).unwrap();
    }
    let reader = thread::spawn(move || {
        let mut frames = Vec::new();
        for _ in 0..100 {
            frames.push(number(&read_frame(&mut raw)));
        }
        let mut rest = Vec::new();
        let end = raw.read_to_end(&mut rest).map(|_| rest.len());
        (frames, end, raw)
    });
    assert_eq!(mesh.end(id).unwrap(), Ended::Finished);
    // Sends after the end are refused and handed back.
    match mesh.send(Envelope::new(id, b"late".to_vec())) {
        Err(SendError::Disconnected(envelope)) => assert_eq!(envelope.payload(), b"late"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let (frames, end, raw) = reader.join().unwrap();
    assert_eq!(frames, (0..100).collect::<Vec<u64>>());
    assert_eq!(
        end.unwrap(),
        0,
        "the end of the stream after the last frame"
    );
    // The connection still reads until the peer closes its side.
    assert_eq!(mesh.stats(id).unwrap().phase, Phase::Ending);
    drop(raw);
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(notice.reason, DisconnectReason::Eof),
        "{:?}",
        notice.reason
    );
    assert!(notice.unsent.is_empty());
}

#[test]
fn an_ended_connection_still_receives_what_the_peer_sends_before_it_closes() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    mesh.send(Envelope::new(id, b"question".to_vec())).unwrap();
    assert_eq!(mesh.end(id).unwrap(), Ended::Finished);
    assert_eq!(read_frame(&mut raw), b"question");
    write_all(&mut raw, &frame(b"answer"));
    let envelope = recv(&mesh);
    assert_eq!((envelope.id(), envelope.payload()), (id, &b"answer"[..]));
    drop(raw);
    assert!(matches!(disconnect(&mesh).reason, DisconnectReason::Eof));
}

#[test]
fn ending_an_unknown_id_is_not_found() {
    let mesh = Mesh::new(1, 1).unwrap();
    assert!(mesh.end(7).is_err());
}

#[test]
fn a_silent_connection_times_out_and_a_talkative_one_does_not() {
    let transport = TcpTransport::default();
    let options = MeshOptions {
        idle_timeout: Some(Duration::from_millis(400)),
        ..MeshOptions::default()
    };
    let mesh = Mesh::with_options(64, 16, options).unwrap();
    let (_silent, silent) = raw_peer(&mesh, &transport);
    let (mut talkative, talking) = raw_peer(&mesh, &transport);
    let started = Instant::now();
    let talker = thread::spawn(move || {
        for _ in 0..20 {
            write_all(&mut talkative, &frame(b"still here"));
            thread::sleep(Duration::from_millis(100));
        }
        talkative
    });
    // Receive the talkative peer's frames (the notice comes after those before it).
    let mut received = 0;
    let notice = loop {
        assert!(started.elapsed() < PATIENCE, "no notice in time");
        if let Ok(envelope) = mesh.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(envelope.id(), talking);
            received += 1;
        }
        if let Some(notice) = mesh.disconnects().try_recv() {
            break notice;
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(notice.id, silent);
    assert!(
        matches!(notice.reason, DisconnectReason::Timeout),
        "{:?}",
        notice.reason
    );
    // Not before the timeout (the bound's upper side is a timing claim left to the
    // several-host tests).
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    let _talkative = talker.join().unwrap();
    assert!(!mesh.outgoing(talking).unwrap().is_closed());
    assert!(received > 0);
}

#[test]
fn a_reserved_id_queues_until_its_connection_comes_then_keeps_its_queue_across_connections() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 64).unwrap();
    let mut listener = listen(&transport);
    let id = mesh.reserve(16 * 1024 * 1024).unwrap();
    assert_eq!(mesh.stats(id).unwrap().phase, Phase::Connecting);
    for n in 0..3 {
        mesh.send(Envelope::new(id, numbered(n, 16))).unwrap();
    }
    assert_eq!(mesh.stats(id).unwrap().queued_frames, 3);

    // First connection: what was queued goes out first.
    let client = transport.connect(&listener.endpoint()).unwrap();
    mesh.attach(id, client, true).unwrap();
    let mut server = listener.accept().unwrap();
    for n in 0..3 {
        assert_eq!(number(&server.recv_timeout(PATIENCE).unwrap()), n);
    }
    server.send(b"hello").unwrap();
    let envelope = recv(&mesh);
    assert_eq!((envelope.id(), envelope.payload()), (id, &b"hello"[..]));

    // The peer goes: the id waits for its next connection, and takes sends meanwhile.
    server.disconnect().unwrap();
    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(notice.parked);
    assert!(notice.unsent.is_empty());
    assert_eq!(mesh.stats(id).unwrap().phase, Phase::Connecting);
    mesh.send(Envelope::new(id, numbered(3, 16))).unwrap();

    // Second connection, same id.
    let client = transport.connect(&listener.endpoint()).unwrap();
    mesh.attach(id, client, true).unwrap();
    let mut server = listener.accept().unwrap();
    assert_eq!(number(&server.recv_timeout(PATIENCE).unwrap()), 3);
    let stats = mesh.stats(id).unwrap();
    assert_eq!(stats.phase, Phase::Connected);
    assert!(stats.dialled);
    assert!(stats.connected_since.is_some());
    assert_eq!(stats.counters.frames_out, 4, "counted across connections");
    assert_eq!(stats.counters.frames_in, 1);

    // Giving up hands back what waits.
    server.disconnect().unwrap();
    assert!(disconnect(&mesh).parked);
    mesh.send(Envelope::new(id, numbered(4, 16))).unwrap();
    let why = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "gave up");
    mesh.abandon(id, DisconnectReason::Io(why));
    let notice = disconnect(&mesh);
    assert!(!notice.parked);
    let unsent: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
    assert_eq!(unsent, vec![4]);
    match mesh.send(Envelope::new(id, b"x".to_vec())) {
        Err(SendError::Disconnected(_)) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[test]
fn shutdown_hands_back_what_waits_for_a_dialled_id() {
    let mesh = Mesh::new(4, 4).unwrap();
    let id = mesh.reserve(1024).unwrap();
    mesh.send(Envelope::new(id, b"waiting".to_vec())).unwrap();
    let left = mesh.shutdown();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, id);
    assert_eq!(left[0].unsent[0].payload(), b"waiting");
}

#[test]
fn stats_count_frames_and_bytes_both_ways_and_the_mesh_totals_outlive_connections() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 64).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    for _ in 0..10 {
        mesh.send(Envelope::new(client, vec![7; 100])).unwrap();
    }
    for _ in 0..10 {
        recv(&mesh);
    }
    let sent = mesh.stats(client).unwrap();
    let got = mesh.stats(server).unwrap();
    assert_eq!(sent.counters.frames_out, 10);
    assert_eq!(sent.counters.bytes_out, 10 * 104);
    assert_eq!(got.counters.frames_in, 10);
    assert_eq!(got.counters.bytes_in, 10 * 104);
    assert_eq!(mesh.ids(), vec![client, server]);
    assert_eq!(mesh.len(), 2);
    let totals = mesh.totals();
    assert_eq!(totals.connections, 2);
    assert_eq!(totals.connected, 2);
    assert_eq!(totals.counters.frames_out, 10);
    assert_eq!(totals.counters.frames_in, 10);
    let _client = mesh.remove(client).unwrap();
    let _server = mesh.remove(server).unwrap();
    assert!(mesh.stats(client).is_none());
    assert_eq!(mesh.len(), 0);
    assert_eq!(
        mesh.totals().counters.frames_in,
        10,
        "totals do not go back"
    );
}

#[test]
fn a_disconnect_tells_how_many_written_frames_the_peer_had_not_acknowledged() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    for n in 0..5 {
        mesh.send(Envelope::new(id, numbered(n, 64))).unwrap();
    }
    for _ in 0..5 {
        read_frame(&mut raw);
    }
    // Everything was read by the peer, so acknowledged by its system.
    thread::sleep(Duration::from_millis(50));
    drop(raw);
    let notice = disconnect(&mesh);
    if cfg!(target_os = "linux") {
        assert_eq!(notice.unacknowledged, Some(0));
    }
}

#[test]
fn a_connection_that_left_is_out_of_the_stats_before_its_notice_is_taken() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(16, 16).unwrap();
    let (raw, gone) = raw_peer(&mesh, &transport);
    let (_other, staying) = raw_peer(&mesh, &transport);
    drop(raw);
    let deadline = Instant::now() + PATIENCE;
    while mesh.stats(gone).is_some() {
        assert!(
            Instant::now() < deadline,
            "the connection never left the stats"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(mesh.ids(), vec![staying]);
    assert_eq!(mesh.len(), 1);
    assert_eq!(mesh.totals().connections, 1);
    // Its notice is still to be taken.
    assert_eq!(disconnect(&mesh).id, gone);
}

#[cfg(unix)]
#[test]
fn in_process_a_disconnect_counts_exactly_the_frames_the_peer_had_not_taken() {
    use wiremesh_core::InprocTransport;
    let transport = InprocTransport::default();
    let mut listener = transport
        .listen("inproc://operations-unacknowledged")
        .unwrap();
    let mut peer = transport
        .connect("inproc://operations-unacknowledged")
        .unwrap();
    let mesh = Mesh::new(16, 16).unwrap();
    let id = mesh.add(listener.accept().unwrap()).unwrap();
    // One write per frame (the count is by whole writes): each is sent once the last is
    // written.
    let deadline = Instant::now() + PATIENCE;
    for n in 0..5 {
        mesh.send(Envelope::new(id, numbered(n, 64))).unwrap();
        while mesh.stats(id).unwrap().counters.frames_out <= n {
            assert!(Instant::now() < deadline, "the mesh writes frame {n}");
            thread::sleep(Duration::from_millis(1));
        }
    }
    for n in 0..2 {
        assert_eq!(number(&peer.recv_timeout(PATIENCE).unwrap()), n);
    }
    // Written by the mesh, taken by nobody: three frames are in the peer's ring.
    drop(peer);
    let notice = disconnect(&mesh);
    assert_eq!(notice.unacknowledged, Some(3));
    assert!(notice.unsent.is_empty());
}
