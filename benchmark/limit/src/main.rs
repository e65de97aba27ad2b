//! The limit of the comparison benchmark (`node benchmark/run.mjs`): the same frames
//! (4-byte big-endian length + payload) over loopback, with no JavaScript and no queues.
//! std only; the few system calls std does not expose (poll, clock_gettime, getrusage)
//! are declared here, from the C library std links anyway. Linux only.
//!
//!   limit send|recv (--listen | --port P) --scenario stream|pingpong
//!         --conns N --size BYTES --count MESSAGES [--timeout SECONDS]
//!
//! It speaks the harness's protocol, as the Node peers in `benchmark/peers/` do: JSON
//! lines on stdout (`listening`, `ready`, then `done` and/or `result`), commands on stdin
//! (`go` starts a sender, `exit` ends either side).
//!
//! - sender, stream: message n goes to connection n % N, appended to that connection's
//!   buffer and written without blocking once 64 KiB are pending; a connection with 1 MiB
//!   pending makes the sender wait under poll(2), writing to every connection that takes
//!   bytes meanwhile. Every payload is written in full (header fields, zero filler, last
//!   byte).
//! - receiver, stream: non-blocking sockets under poll(2); each connection reads into its
//!   own 256 KiB buffer and frames are parsed in place; every payload is checked (sender's
//!   connection index and sequence number in order, last byte).
//! - pingpong: one connection, blocking reads and writes; the receiver echoes each frame.
//!
//! Payload layout (shared with the Node peers): bytes 0..4 the sender's connection index,
//! 4..8 the sequence number on that connection (both big-endian u32), last byte = seq & 0xff.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::process::exit;
use std::time::Duration;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    fn getrusage(who: i32, usage: *mut [i64; 18]) -> i32;
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;
const RUSAGE_SELF: i32 = 0;
const POLLIN: i16 = 1;
const POLLOUT: i16 = 4;

/// CLOCK_MONOTONIC in nanoseconds: the clock of Node's `process.hrtime.bigint()`, so times
/// taken in different processes compare.
fn now_ns() -> u64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (user µs, system µs, peak RSS KiB) of this process, every thread.
fn usage() -> (i64, i64, i64) {
    let mut ru = [0i64; 18];
    unsafe { getrusage(RUSAGE_SELF, &mut ru) };
    (ru[0] * 1_000_000 + ru[1], ru[2] * 1_000_000 + ru[3], ru[4])
}

fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(message: &str) -> ! {
    eprintln!("limit: {message}");
    exit(2)
}

/// Blocks until stdin says `word`; the end of stdin ends the process.
fn wait_for(word: &str) {
    let stdin = io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => exit(0),
            Ok(_) if line.trim() == word => return,
            Ok(_) => {}
        }
    }
}

struct Args {
    role: String,
    scenario: String,
    listen: bool,
    port: u16,
    conns: usize,
    size: usize,
    count: u64,
    timeout: u64,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Args {
        role: argv.first().cloned().unwrap_or_default(),
        scenario: "stream".into(),
        listen: false,
        port: 0,
        conns: 1,
        size: 64,
        count: 0,
        timeout: 120,
    };
    let mut i = 1;
    while i < argv.len() {
        let value = |i: usize| {
            argv.get(i + 1)
                .cloned()
                .unwrap_or_else(|| fail(&format!("{} needs a value", argv[i])))
        };
        let number = |i: usize| {
            value(i)
                .parse::<u64>()
                .unwrap_or_else(|_| fail(&format!("{} needs a number", argv[i])))
        };
        match argv[i].as_str() {
            "--listen" => {
                args.listen = true;
                i += 1;
                continue;
            }
            "--port" => args.port = number(i) as u16,
            "--scenario" => args.scenario = value(i),
            "--conns" => args.conns = number(i) as usize,
            "--size" => args.size = number(i) as usize,
            "--count" => args.count = number(i),
            "--timeout" => args.timeout = number(i),
            other => fail(&format!("unknown argument {other}")),
        }
        i += 2;
    }
    if args.role != "send" && args.role != "recv" {
        fail("usage: limit send|recv (--listen | --port P) --scenario stream|pingpong --conns N --size B --count M");
    }
    if args.size < 9 {
        fail("--size must be at least 9 (connection index, sequence number, last byte)");
    }
    if args.conns == 0 || args.count == 0 {
        fail("--conns and --count must be at least 1");
    }
    if !args.listen && args.port == 0 {
        fail("give --listen or --port");
    }
    args
}

/// The N connections: accepted (after printing the port) or connected.
fn establish(args: &Args) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(args.conns);
    if args.listen {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&format!("listen: {e}")));
        let port = listener.local_addr().unwrap().port();
        emit(&format!("{{\"event\":\"listening\",\"port\":{port}}}"));
        while streams.len() < args.conns {
            let (stream, _) = listener
                .accept()
                .unwrap_or_else(|e| fail(&format!("accept: {e}")));
            streams.push(stream);
        }
    } else {
        while streams.len() < args.conns {
            streams.push(
                TcpStream::connect(("127.0.0.1", args.port))
                    .unwrap_or_else(|e| fail(&format!("connect: {e}"))),
            );
        }
    }
    for stream in &streams {
        stream.set_nodelay(true).unwrap();
    }
    streams
}

/// Checks payloads in order per sending connection.
struct Checker {
    expected: Vec<u32>,
    received: u64,
    errors: u64,
    checksum: u64,
}

impl Checker {
    fn new(conns: usize) -> Self {
        Checker {
            expected: vec![0; conns],
            received: 0,
            errors: 0,
            checksum: 0,
        }
    }

    #[inline]
    fn check(&mut self, payload: &[u8]) {
        self.received += 1;
        if payload.len() < 9 {
            self.errors += 1;
            return;
        }
        let conn = u32::from_be_bytes(payload[0..4].try_into().unwrap()) as usize;
        let seq = u32::from_be_bytes(payload[4..8].try_into().unwrap());
        let last = payload[payload.len() - 1];
        self.checksum += last as u64;
        match self.expected.get_mut(conn) {
            Some(expected) if *expected == seq && last == seq as u8 => {
                *expected = seq.wrapping_add(1)
            }
            Some(expected) => {
                self.errors += 1;
                *expected = seq.wrapping_add(1);
            }
            None => self.errors += 1,
        }
    }
}

fn write_payload(out: &mut Vec<u8>, size: usize, conn: u32, seq: u32) {
    out.clear();
    append_frame(out, size, conn, seq);
}

/// Appends one frame: header, connection index, sequence number, zero filler, last byte.
fn append_frame(out: &mut Vec<u8>, size: usize, conn: u32, seq: u32) {
    let start = out.len();
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&conn.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(start + 4 + size - 1, 0);
    out.push(seq as u8);
}

/// One connection of the stream sender: frames appended to `buf`, written from `sent` on.
struct Out {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: usize,
}

impl Out {
    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Writes what the socket takes without blocking.
    fn flush(&mut self) {
        while self.sent < self.buf.len() {
            match self.stream.write(&self.buf[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => fail(&format!("write: {e}")),
            }
        }
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent > self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// Waits under poll(2) until connection `conn` has less than `limit` bytes pending (any
/// `usize::MAX`: every connection is empty), flushing every connection that is writable.
fn wait_until(outs: &mut [Out], conn: Option<usize>, limit: usize) {
    let mut fds = Vec::new();
    let mut which = Vec::new();
    loop {
        let done = match conn {
            Some(conn) => outs[conn].pending() < limit,
            None => outs.iter().all(|out| out.pending() == 0),
        };
        if done {
            return;
        }
        fds.clear();
        which.clear();
        for (i, out) in outs.iter().enumerate() {
            if out.pending() > 0 {
                fds.push(PollFd {
                    fd: out.stream.as_raw_fd(),
                    events: POLLOUT,
                    revents: 0,
                });
                which.push(i);
            }
        }
        let ready = unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, 10_000) };
        if ready < 0 && io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            fail(&format!("poll: {}", io::Error::last_os_error()));
        }
        if ready == 0 {
            fail("no connection could be written for 10 s");
        }
        for (fd, &i) in fds.iter().zip(which.iter()) {
            if fd.revents != 0 {
                outs[i].flush();
            }
        }
    }
}

/// Message n to connection n % N: appended to that connection's buffer, written (without
/// blocking) once 64 KiB are pending; only a connection with 1 MiB pending makes the
/// sender wait, and then it writes to every connection that takes bytes.
fn send_stream(args: &Args, streams: Vec<TcpStream>) {
    const WRITE_AT: usize = 64 * 1024;
    const WAIT_AT: usize = 1024 * 1024;
    let conns = streams.len();
    let mut outs: Vec<Out> = streams
        .into_iter()
        .map(|stream| {
            stream.set_nonblocking(true).unwrap();
            Out {
                stream,
                buf: Vec::with_capacity(WRITE_AT + 4 + args.size),
                sent: 0,
            }
        })
        .collect();
    let mut seqs = vec![0u32; conns];
    wait_for("go");
    let base = usage();
    let t0 = now_ns();
    for n in 0..args.count {
        let conn = (n % conns as u64) as usize;
        let out = &mut outs[conn];
        append_frame(&mut out.buf, args.size, conn as u32, seqs[conn]);
        seqs[conn] = seqs[conn].wrapping_add(1);
        if out.pending() >= WRITE_AT {
            out.flush();
            if out.pending() >= WAIT_AT {
                wait_until(&mut outs, Some(conn), WAIT_AT);
            }
        }
    }
    for out in &mut outs {
        out.flush();
    }
    wait_until(&mut outs, None, 0);
    let t_end = now_ns();
    emit(&format!(
        "{{\"event\":\"done\",\"t0\":\"{t0}\",\"tEnd\":\"{t_end}\",\"sent\":{}}}",
        args.count
    ));
    finish_sender(base, outs);
}

/// Waits for `exit`, then reports the CPU used since `base` (the `go`).
fn finish_sender<T>(base: (i64, i64, i64), keep: T) {
    wait_for("exit");
    let (user, system, max_rss) = usage();
    emit(&format!(
        "{{\"event\":\"result\",\"cpu\":{{\"user\":{},\"system\":{}}},\"maxRss\":{max_rss}}}",
        user - base.0,
        system - base.1
    ));
    drop(keep);
    exit(0)
}

fn recv_stream(args: &Args, streams: Vec<TcpStream>) {
    struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        open: bool,
    }
    let buf_size = (256 * 1024).max(2 * (args.size + 4));
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .map(|stream| {
            stream.set_nonblocking(true).unwrap();
            Conn {
                stream,
                buf: vec![0; buf_size],
                start: 0,
                end: 0,
                open: true,
            }
        })
        .collect();
    let mut fds: Vec<PollFd> = conns
        .iter()
        .map(|c| PollFd {
            fd: c.stream.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        })
        .collect();
    let mut checker = Checker::new(args.conns);
    let (user0, system0, _) = usage();
    emit("{\"event\":\"ready\"}");
    let mut last_progress = now_ns();
    while checker.received < args.count {
        let ready = unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, 1000) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            fail(&format!("poll: {}", io::Error::last_os_error()));
        }
        if ready == 0 {
            if now_ns() - last_progress > 10_000_000_000 {
                fail(&format!(
                    "nothing arrived for 10 s; {} of {} received",
                    checker.received, args.count
                ));
            }
            continue;
        }
        last_progress = now_ns();
        for (conn, fd) in conns.iter_mut().zip(fds.iter_mut()) {
            if fd.revents == 0 || !conn.open {
                continue;
            }
            fd.revents = 0;
            loop {
                if conn.end == conn.buf.len() {
                    conn.buf.copy_within(conn.start..conn.end, 0);
                    conn.end -= conn.start;
                    conn.start = 0;
                }
                match conn.stream.read(&mut conn.buf[conn.end..]) {
                    Ok(0) => {
                        conn.open = false;
                        fd.fd = -1;
                        break;
                    }
                    Ok(n) => {
                        conn.end += n;
                        while conn.end - conn.start >= 4 {
                            let len = u32::from_be_bytes(
                                conn.buf[conn.start..conn.start + 4].try_into().unwrap(),
                            ) as usize;
                            if len + 4 > conn.buf.len() {
                                fail("frame larger than the read buffer");
                            }
                            if conn.end - conn.start - 4 < len {
                                break;
                            }
                            checker.check(&conn.buf[conn.start + 4..conn.start + 4 + len]);
                            conn.start += 4 + len;
                        }
                        if conn.start == conn.end {
                            conn.start = 0;
                            conn.end = 0;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => fail(&format!("read: {e}")),
                }
            }
        }
        if conns.iter().all(|c| !c.open) && checker.received < args.count {
            fail(&format!(
                "every connection closed; {} of {} received",
                checker.received, args.count
            ));
        }
    }
    let t1 = now_ns();
    let (user1, system1, max_rss) = usage();
    emit(&format!(
        "{{\"event\":\"result\",\"t1\":\"{t1}\",\"received\":{},\"errors\":{},\"checksum\":{},\"cpu\":{{\"user\":{},\"system\":{}}},\"maxRss\":{max_rss}}}",
        checker.received,
        checker.errors,
        checker.checksum,
        user1 - user0,
        system1 - system0
    ));
    wait_for("exit");
    drop(conns);
    exit(0)
}

fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.resize(4, 0);
    stream.read_exact(&mut buf[..4])?;
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    buf.resize(4 + len, 0);
    stream.read_exact(&mut buf[4..])?;
    Ok(len)
}

fn send_pingpong(args: &Args, mut streams: Vec<TcpStream>) {
    let mut stream = streams.remove(0);
    let mut frame = Vec::with_capacity(4 + args.size);
    let mut reply = Vec::with_capacity(4 + args.size);
    let mut rtts = Vec::with_capacity(args.count as usize);
    let mut checker = Checker::new(1);
    wait_for("go");
    let base = usage();
    let (user0, system0, _) = base;
    let t0 = now_ns();
    for n in 0..args.count {
        let start = now_ns();
        write_payload(&mut frame, args.size, 0, n as u32);
        stream
            .write_all(&frame)
            .unwrap_or_else(|e| fail(&format!("write: {e}")));
        let len =
            read_frame(&mut stream, &mut reply).unwrap_or_else(|e| fail(&format!("read: {e}")));
        checker.check(&reply[4..4 + len]);
        rtts.push(now_ns() - start);
    }
    let t_end = now_ns();
    rtts.sort_unstable();
    let p50 = rtts[rtts.len() / 2];
    let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
    let (user1, system1, _) = usage();
    emit(&format!(
        "{{\"event\":\"done\",\"t0\":\"{t0}\",\"tEnd\":\"{t_end}\",\"sent\":{},\"received\":{},\"errors\":{},\"p50\":{p50},\"p99\":{p99},\"cpuLoop\":{{\"user\":{},\"system\":{}}}}}",
        args.count,
        checker.received,
        checker.errors,
        user1 - user0,
        system1 - system0
    ));
    finish_sender(base, stream);
}

fn recv_pingpong(args: &Args, mut streams: Vec<TcpStream>) {
    let mut stream = streams.remove(0);
    let mut frame = Vec::with_capacity(4 + args.size);
    let mut checker = Checker::new(1);
    let (user0, system0, _) = usage();
    emit("{\"event\":\"ready\"}");
    while checker.received < args.count {
        let len =
            read_frame(&mut stream, &mut frame).unwrap_or_else(|e| fail(&format!("read: {e}")));
        checker.check(&frame[4..4 + len]);
        stream
            .write_all(&frame)
            .unwrap_or_else(|e| fail(&format!("write: {e}")));
    }
    let t1 = now_ns();
    let (user1, system1, max_rss) = usage();
    emit(&format!(
        "{{\"event\":\"result\",\"t1\":\"{t1}\",\"received\":{},\"errors\":{},\"checksum\":{},\"cpu\":{{\"user\":{},\"system\":{}}},\"maxRss\":{max_rss}}}",
        checker.received,
        checker.errors,
        checker.checksum,
        user1 - user0,
        system1 - system0
    ));
    wait_for("exit");
    drop(stream);
    exit(0)
}

fn main() {
    let args = parse_args();
    let timeout = args.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout));
        eprintln!("limit: timed out after {timeout} s");
        exit(3)
    });
    let streams = establish(&args);
    match (args.role.as_str(), args.scenario.as_str()) {
        ("send", "stream") => {
            emit("{\"event\":\"ready\"}");
            send_stream(&args, streams)
        }
        ("recv", "stream") => recv_stream(&args, streams),
        ("send", "pingpong") => {
            emit("{\"event\":\"ready\"}");
            send_pingpong(&args, streams)
        }
        ("recv", "pingpong") => recv_pingpong(&args, streams),
        (_, other) => fail(&format!("the limit has no scenario {other}")),
    }
}
