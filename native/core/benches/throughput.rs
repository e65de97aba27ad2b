//! One-way throughput of the core over loopback: one connection, a sender thread queuing
//! frames on one mesh, the receiving mesh's consumer taking them with `recv_batch`.
//!
//! Each scenario is also run, in the same process and right after, by the *limit*: a
//! blocking `std::net::TcpStream` writer and reader doing the same framing with no mesh,
//! so the result is read as a ratio to what this machine's loopback allows.
//!
//! ```text
//! cargo bench -p wiremesh-core --bench throughput            # 5 runs a scenario
//! cargo bench -p wiremesh-core --bench throughput -- --quick # 1 short run
//! ```
//!
//! Prints the median of the runs for each scenario, and the runs themselves.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use wiremesh_core::{Mesh, SendError, TcpTransport, Transport};

struct Scenario {
    name: &'static str,
    payload: usize,
    messages: usize,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let runs = if quick { 1 } else { 5 };
    let scale = if quick { 10 } else { 1 };
    let scenarios = [
        Scenario {
            name: "64 B frames",
            payload: 64,
            messages: 2_000_000 / scale,
        },
        Scenario {
            name: "64 KiB frames",
            payload: 64 * 1024,
            messages: 40_000 / scale,
        },
    ];
    println!("wiremesh-core one-way throughput over loopback ({runs} runs a scenario, medians)");
    println!(
        "{:<14} {:>14} {:>10} {:>14} {:>10} {:>10}",
        "scenario", "mesh msg/s", "mesh MB/s", "limit msg/s", "limit MB/s", "mesh/limit"
    );
    for scenario in &scenarios {
        let mut mesh_runs = Vec::new();
        let mut limit_runs = Vec::new();
        for _ in 0..runs {
            mesh_runs.push(mesh_run(scenario));
            limit_runs.push(limit_run(scenario));
        }
        let mesh = median(&mut mesh_runs.clone());
        let limit = median(&mut limit_runs.clone());
        let mb = |secs: f64| (scenario.messages * scenario.payload) as f64 / secs / 1e6;
        let rate = |secs: f64| scenario.messages as f64 / secs;
        println!(
            "{:<14} {:>14.0} {:>10.1} {:>14.0} {:>10.1} {:>10.2}",
            scenario.name,
            rate(mesh),
            mb(mesh),
            rate(limit),
            mb(limit),
            limit / mesh
        );
        let show = |runs: &[f64]| {
            runs.iter()
                .map(|s| format!("{:.0}", rate(*s)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  runs, msg/s: mesh [{}], limit [{}]",
            show(&mesh_runs),
            show(&limit_runs)
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Seconds for `messages` frames through two meshes (sender and receiver).
fn mesh_run(scenario: &Scenario) -> f64 {
    let transport = TcpTransport::default();
    let sender = Mesh::new(1024, 1024).unwrap();
    let receiver = Mesh::new(4096, 16).unwrap();
    let mut listener = transport.listen("127.0.0.1:0").unwrap();
    let client = sender
        .add(transport.connect(&listener.endpoint()).unwrap())
        .unwrap();
    let _server = receiver.add(listener.accept().unwrap()).unwrap();

    let (messages, payload_len) = (scenario.messages, scenario.payload);
    let start = Instant::now();
    let producer = {
        let sender = sender.clone();
        thread::spawn(move || {
            let outgoing = sender.outgoing(client).unwrap();
            for i in 0..messages {
                let mut payload = vec![0u8; payload_len];
                payload[0] = i as u8;
                loop {
                    match outgoing.send(payload) {
                        Ok(()) => break,
                        Err(SendError::Full(mut envelope)) => {
                            payload = envelope.take_payload();
                            thread::yield_now();
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            }
        })
    };
    let mut received = 0;
    let mut checksum = 0u64;
    while received < messages {
        let batch = receiver.recv_batch(1024).expect("receive");
        received += batch.len();
        // Read every payload, as a real consumer would.
        checksum += batch
            .iter()
            .map(|e| u64::from(e.payload()[0]) + e.payload().len() as u64)
            .sum::<u64>();
    }
    let elapsed = start.elapsed().as_secs_f64();
    producer.join().unwrap();
    assert!(checksum > 0);
    elapsed
}

/// Seconds for the same frames between two plain blocking sockets, no mesh.
fn limit_run(scenario: &Scenario) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (messages, payload_len) = (scenario.messages, scenario.payload);
    let start = Instant::now();
    let writer = thread::spawn(move || {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut out = BufWriter::with_capacity(256 * 1024, stream);
        for i in 0..messages {
            let mut payload = vec![0u8; payload_len];
            payload[0] = i as u8;
            out.write_all(&(payload_len as u32).to_be_bytes()).unwrap();
            out.write_all(&payload).unwrap();
        }
        out.flush().unwrap();
    });
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut input = BufReader::with_capacity(256 * 1024, stream);
    let mut checksum = 0u64;
    for _ in 0..messages {
        let mut header = [0u8; 4];
        input.read_exact(&mut header).unwrap();
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        input.read_exact(&mut payload).unwrap();
        checksum += u64::from(payload[0]) + payload.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    writer.join().unwrap();
    assert!(checksum > 0);
    elapsed
}
