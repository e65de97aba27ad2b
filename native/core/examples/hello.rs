//! The seed example of the mesh, in Rust, then a short one-way throughput run.
//!
//! ```text
//! cargo run --release -p wiremesh-core --example hello
//! ```

use std::io::Write;
use std::thread;
use std::time::Instant;

use wiremesh_core::{Envelope, Mesh, SendError, TcpTransport, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = TcpTransport::default();
    let mesh = Mesh::new(1, 1)?;
    let mut listener = transport.listen("127.0.0.1:0")?;

    let client = mesh.add(transport.connect(&listener.endpoint())?)?;
    let server = mesh.add(listener.accept()?)?;

    mesh.send(Envelope::new(client, b"hello".to_vec()))?;
    let envelope = mesh.recv()?;
    println!(
        "connection {} received {:?} from connection {client} over {}",
        envelope.id(),
        String::from_utf8_lossy(envelope.payload()),
        listener.endpoint()
    );
    assert_eq!(envelope.id(), server);

    // Keep both connections: dropping one would close its socket and the reactor would
    // remove the other by itself.
    let _client = mesh.remove(client)?;
    let _server = mesh.remove(server)?;

    throughput(&transport)
}

/// 500 000 frames of 64 bytes one way, with a progress bar.
fn throughput(transport: &TcpTransport) -> Result<(), Box<dyn std::error::Error>> {
    const MESSAGES: usize = 500_000;
    const PAYLOAD: usize = 64;
    let sender = Mesh::new(1024, 1024)?;
    let receiver = Mesh::new(4096, 16)?;
    let mut listener = transport.listen("127.0.0.1:0")?;
    let outgoing = sender
        .outgoing(sender.add(transport.connect(&listener.endpoint())?)?)
        .expect("just added");
    receiver.add(listener.accept()?)?;

    let start = Instant::now();
    let producer = thread::spawn(move || {
        for i in 0..MESSAGES {
            let mut payload = vec![i as u8; PAYLOAD];
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
    });
    let mut received = 0;
    let mut shown = usize::MAX;
    while received < MESSAGES {
        received += receiver.recv_batch(1024)?.len();
        let filled = received * 40 / MESSAGES;
        if filled != shown {
            shown = filled;
            print!(
                "\r[{}{}] {received:>7}/{MESSAGES}",
                "#".repeat(filled),
                ".".repeat(40 - filled)
            );
            std::io::stdout().flush()?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    producer.join().expect("producer");
    println!(
        "\n{MESSAGES} messages of {PAYLOAD} B in {seconds:.2} s: {:.0} msg/s, {:.1} MB/s",
        MESSAGES as f64 / seconds,
        (MESSAGES * PAYLOAD) as f64 / seconds / 1e6
    );
    Ok(())
}
