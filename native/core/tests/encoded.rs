//! Runs of encoded frames (`Mesh::send_encoded`): many connections' frames share one
//! buffer, each run is queued all or none, and a run that cannot go out comes back frame by
//! frame in the disconnect notice.

mod util;

use std::sync::Arc;

use util::*;
use wiremesh_core::codec::{encode_frame, EncodedFrames};
use wiremesh_core::{Mesh, SendEncodedError, TcpTransport};

/// One buffer holding `runs`, each a list of payloads; the runs in the same order.
fn batch(runs: &[&[&[u8]]]) -> Vec<EncodedFrames> {
    let mut wire = Vec::new();
    let mut ranges = Vec::new();
    for run in runs {
        let start = wire.len();
        for payload in *run {
            encode_frame(payload, &mut wire).unwrap();
        }
        ranges.push(start..wire.len());
    }
    let buf: Arc<[u8]> = Arc::from(wire);
    ranges
        .into_iter()
        .map(|range| EncodedFrames::new(buf.clone(), range).unwrap())
        .collect()
}

#[test]
fn runs_from_one_buffer_reach_their_connections_in_order() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 64).unwrap();
    let (a, a_peer) = mesh_pair(&mesh, &transport);
    let (b, b_peer) = mesh_pair(&mesh, &transport);
    let runs = batch(&[&[b"a1", b"a2"], &[b"b1"], &[b"a3", b"", b"a5"]]);
    let mut runs = runs.into_iter();
    mesh.send_encoded(a, runs.next().unwrap()).unwrap();
    mesh.send_encoded(b, runs.next().unwrap()).unwrap();
    mesh.send_encoded(a, runs.next().unwrap()).unwrap();
    let mut at_a = Vec::new();
    let mut at_b = Vec::new();
    for _ in 0..6 {
        let envelope = recv(&mesh);
        match envelope.id() {
            id if id == a_peer => at_a.push(envelope.payload().to_vec()),
            id if id == b_peer => at_b.push(envelope.payload().to_vec()),
            other => panic!("an envelope from {other}"),
        }
    }
    assert_eq!(at_a, [&b"a1"[..], b"a2", b"a3", b"", b"a5"]);
    assert_eq!(at_b, [b"b1"]);
}

#[test]
fn a_run_is_queued_all_or_none() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(64, 3).unwrap();
    let (raw, id) = raw_peer(&mesh, &transport);
    // The peer does not read: fill the socket buffers, then the queue.
    fill_queue(&mesh, id, 64 * 1024);
    let outgoing = mesh.outgoing(id).unwrap();
    assert_eq!(outgoing.room(), Some(0));
    let run = batch(&[&[b"x", b"y"]]).pop().unwrap();
    match mesh.send_encoded(id, run) {
        Err(SendEncodedError::Full(run)) => assert_eq!(run.len(), 2),
        other => panic!("expected Full, got {other:?}"),
    }
    drop(raw);
}

#[test]
fn a_run_with_a_payload_over_the_limit_is_refused_whole() {
    let transport = TcpTransport::default().with_max_frame_size(4);
    let mesh = Mesh::new(8, 8).unwrap();
    let (_raw, id) = raw_peer(&mesh, &transport);
    let run = batch(&[&[b"ok", b"too long"]]).pop().unwrap();
    match mesh.send_encoded(id, run) {
        Err(SendEncodedError::TooLarge(run)) => assert_eq!(run.largest_payload(), 8),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(mesh.outgoing(id).unwrap().room(), Some(8));
}

#[test]
fn runs_for_unknown_or_closed_connections_come_back() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 8).unwrap();
    let (raw, id) = raw_peer(&mesh, &transport);
    let mut runs = batch(&[&[b"lost?"], &[b"no"]]).into_iter();
    assert!(matches!(
        mesh.send_encoded(id + 100, runs.next().unwrap()),
        Err(SendEncodedError::NotFound(_))
    ));
    drop(raw);
    wait_closed(&mesh, id);
    assert_eq!(mesh.outgoing(id).unwrap().room(), None);
    match mesh.send_encoded(id, runs.next().unwrap()) {
        Err(SendEncodedError::Disconnected(run)) => {
            assert_eq!(run.payloads().collect::<Vec<_>>(), [b"no"])
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(disconnect(&mesh).id, id);
}

#[test]
fn frames_of_runs_that_were_not_written_come_back_one_by_one() {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(8, 16).unwrap();
    let (mut raw, id) = raw_peer(&mesh, &transport);
    // Runs of four numbered 64 KiB frames for a peer that reads nothing, until one is Full.
    let payload_len = 64 * 1024;
    let mut queued = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never filled"
        );
        let payloads: Vec<Vec<u8>> = (queued..queued + 4)
            .map(|n| numbered(n, payload_len))
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        match mesh.send_encoded(id, batch(&[&refs]).pop().unwrap()) {
            Ok(()) => queued += 4,
            Err(SendEncodedError::Full(_)) => break,
            Err(other) => panic!("expected Full, got {other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Closing with unread data makes the kernel send a reset.
    write_all(&mut raw, &[0]);
    drop(raw);

    let notice = disconnect(&mesh);
    let numbers: Vec<u64> = notice.unsent.iter().map(|e| number(e.payload())).collect();
    assert!(!numbers.is_empty(), "a full queue's frames come back");
    assert_eq!(
        numbers,
        (numbers[0]..queued).collect::<Vec<_>>(),
        "the unsent frames are the newest, one envelope each, in order"
    );
    assert!(notice
        .unsent
        .iter()
        .all(|e| e.id() == id && e.payload().len() == payload_len));
}
