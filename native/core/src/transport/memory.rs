//! In-memory streams: the byte stream an in-process connection runs over. No socket and no
//! system call carries a byte; the kernel is asked only to wake an end that waits.
//!
//! # Contract
//!
//! - [`pair`] makes two [`MemoryStream`]s: what one writes, the other reads, in order. Each
//!   direction is a bounded ring of [`RING`] bytes with one writer and one reader (the two
//!   ends, each owned by one thread at a time), so a full ring is backpressure exactly as a
//!   full socket buffer is: writes take what fits, then `WouldBlock`.
//! - Readiness is edge-triggered, as mio's is: an end that met `WouldBlock` (reading an
//!   empty ring, writing a full one) is owed an event, and gets one when its peer makes a
//!   byte readable or room writable, finishes, or goes. An end that never waits costs its
//!   peer no system call: a busy pair moves bytes with atomics and copies only.
//! - An event means "try both directions": the mio source of an end is two bells (see
//!   below) that share the end's token and are polled for reading, whichever direction
//!   they stand for; [`Stream::events_wake_both`] says so, and its owner (the reactor)
//!   tries reading and writing at each event. A spurious event costs one empty attempt.
//! - The end of the stream: [`Stream::finish_writing`] ends this end's writing (the peer
//!   reads what is left, then the end of the stream); `shutdown` also refuses what the
//!   peer writes from then on (`BrokenPipe`). Dropping an end does both; if it drops bytes
//!   it had not read, its peer's read says `ConnectionReset` after what is left (as a Unix
//!   socket's does), else the end of the stream.
//! - [`Stream::bytes_acknowledged`] is exact: the bytes the peer has taken out of the ring.
//! - Registering an end reports nothing by itself (a socket reports that it is writable):
//!   its owner tries first, and waits for events once it met `WouldBlock`.
//!
//! # Implementation notes
//!
//! Each end has two bells, one it waits on to read and one to write: an `eventfd` on
//! Linux and Android, a pipe on other Unix systems. Waiting on one ring (`arm`) stores a
//! flag, then looks at the ring once more; the peer, after moving bytes, looks at the flag
//! and rings if it is set (swapping it off, so one wait costs one ring). Each side writes
//! one variable and then reads the other's, behind `SeqCst` fences, so at least one of them
//! sees the other (`loom_checks` below checks it). An arm drains its bell only if the flag
//! it set last time was taken by a ringer: a bell holds at most one byte that no one drains
//! (from a ringer that took the flag just before it was set again), which costs one
//! spurious event. Two bells, not one, because a drain may swallow a ring that was meant
//! for the other direction while its event was not yet collected (kqueue drops such an
//! event).

// Without Unix-style bells (Windows) nothing makes a pair: the protocol is still built, and
// checked by loom where it runs.
#![cfg_attr(not(unix), allow(dead_code))]

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::sync::{fence, AtomicBool, AtomicUsize};

#[cfg(not(loom))]
use std::sync::Arc;

#[cfg(loom)]
use loom::sync::Arc;

/// Bytes a direction holds before writes block (the two rings of a pair are allocated
/// zeroed, so the system maps their pages only as bytes first reach them).
pub const RING: usize = 512 * 1024;

/// What wakes an end: rung by the peer, drained by the end before it waits.
pub(crate) trait Bell: Send + Sync + fmt::Debug {
    fn ring(&self);
    fn drain(&self);
}

/// A bounded byte ring with one writer and one reader.
struct Ring {
    cells: Box<[Cell]>,
    /// Bytes taken, ever (wrapping); written by the reader.
    head: AtomicUsize,
    /// Bytes put, ever (wrapping); written by the writer.
    tail: AtomicUsize,
}

#[cfg(not(loom))]
type Cell = std::cell::UnsafeCell<u8>;
#[cfg(loom)]
type Cell = loom::cell::UnsafeCell<u8>;

// SAFETY: the bytes from `head` to `tail` belong to the reader, the others to the writer;
// each touches only its own, and hands them over with a `Release` store of its index that
// the other loads with `Acquire` before it touches them. One writer and one reader: each
// is an end, reached through `&mut` only.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cells.len())
            .field("len", &self.len())
            .finish()
    }
}

impl Ring {
    /// `capacity` is a power of two.
    fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        #[cfg(not(loom))]
        let cells = {
            let zeroed = vec![0u8; capacity].into_boxed_slice();
            // SAFETY: `UnsafeCell<u8>` has the layout of `u8` (it is `repr(transparent)`).
            unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [Cell]) }
        };
        #[cfg(loom)]
        let cells = (0..capacity).map(|_| Cell::new(0)).collect();
        Ring {
            cells,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    fn len(&self) -> usize {
        self.tail
            .load(Acquire)
            .wrapping_sub(self.head.load(Acquire))
    }

    /// Writer only: copies as much of `slices` as fits, in order; how many bytes.
    fn put<S: Deref<Target = [u8]>>(&self, slices: &[S]) -> usize {
        let tail = self.tail.load(Relaxed);
        let head = self.head.load(Acquire);
        let mut room = self.cells.len() - tail.wrapping_sub(head);
        let mut at = tail;
        for slice in slices {
            let n = slice.len().min(room);
            self.copy_in(at, &slice[..n]);
            at = at.wrapping_add(n);
            room -= n;
            if room == 0 {
                break;
            }
        }
        self.tail.store(at, Release);
        at.wrapping_sub(tail)
    }

    /// Reader only: moves up to `out.len()` bytes into `out`; how many (all initialised).
    fn take(&self, out: &mut [MaybeUninit<u8>]) -> usize {
        let head = self.head.load(Relaxed);
        let tail = self.tail.load(Acquire);
        let n = tail.wrapping_sub(head).min(out.len());
        self.copy_out(head, &mut out[..n]);
        self.head.store(head.wrapping_add(n), Release);
        n
    }

    /// The two runs of `n` bytes from index `at`: up to the end of the cells, then from 0.
    fn runs(&self, at: usize, n: usize) -> (usize, usize) {
        let start = at & (self.cells.len() - 1);
        (start, n.min(self.cells.len() - start))
    }

    #[cfg(not(loom))]
    fn copy_in(&self, at: usize, bytes: &[u8]) {
        let (start, first) = self.runs(at, bytes.len());
        let base = Cell::raw_get(self.cells.as_ptr());
        // SAFETY: the writer's own bytes (see `Sync`), inside the cells: `first` bytes from
        // `start`, then the rest (less than the capacity) from 0.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(start), first);
            std::ptr::copy_nonoverlapping(bytes[first..].as_ptr(), base, bytes.len() - first);
        }
    }

    #[cfg(not(loom))]
    fn copy_out(&self, at: usize, out: &mut [MaybeUninit<u8>]) {
        let (start, first) = self.runs(at, out.len());
        let base = Cell::raw_get(self.cells.as_ptr()) as *const u8;
        let rest = out.len() - first;
        let out = out.as_mut_ptr() as *mut u8;
        // SAFETY: the reader's own bytes (see `Sync`), as in `copy_in`; `out` has room.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(start), out, first);
            std::ptr::copy_nonoverlapping(base, out.add(first), rest);
        }
    }

    #[cfg(loom)]
    fn copy_in(&self, at: usize, bytes: &[u8]) {
        let mask = self.cells.len() - 1;
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: the writer's own byte (see `Sync`); loom checks that it is.
            self.cells[at.wrapping_add(i) & mask].with_mut(|cell| unsafe { *cell = *byte });
        }
    }

    #[cfg(loom)]
    fn copy_out(&self, at: usize, out: &mut [MaybeUninit<u8>]) {
        let mask = self.cells.len() - 1;
        for (i, slot) in out.iter_mut().enumerate() {
            // SAFETY: the reader's own byte (see `Sync`); loom checks that it is.
            let byte = self.cells[at.wrapping_add(i) & mask].with(|cell| unsafe { *cell });
            slot.write(byte);
        }
    }
}

/// One direction of a pair.
#[derive(Debug)]
struct Flow {
    ring: Ring,
    /// Its writer will write no more: its reader reads what is left, then the end.
    finished: AtomicBool,
    /// Its writer went with bytes it had not read: the end is a reset.
    reset: AtomicBool,
    /// Its reader is gone (or shut it down): writes are refused.
    refused: AtomicBool,
}

impl Flow {
    fn new(capacity: usize) -> Self {
        Flow {
            ring: Ring::new(capacity),
            finished: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        }
    }
}

/// What one end waits for, and its bells.
#[derive(Debug)]
struct Waits<B> {
    reading: AtomicBool,
    writing: AtomicBool,
    read_bell: B,
    write_bell: B,
}

impl<B> Waits<B> {
    fn new(read_bell: B, write_bell: B) -> Self {
        Waits {
            reading: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            read_bell,
            write_bell,
        }
    }
}

/// Before waiting: set the flag (draining the bell if a ringer took the last one), then
/// the caller looks once more.
fn arm<B: Bell>(flag: &AtomicBool, bell: &B) {
    if !flag.load(Relaxed) {
        bell.drain();
    }
    flag.store(true, SeqCst);
    fence(SeqCst);
}

/// After making progress the waiter may wait for: ring if it waits.
fn wake<B: Bell>(flag: &AtomicBool, bell: &B) {
    fence(SeqCst);
    if flag.load(Relaxed) && flag.swap(false, SeqCst) {
        bell.ring();
    }
}

/// Both directions of a pair and both ends' waits: `flows[i]` is what end `i` reads.
#[derive(Debug)]
struct Shared<B> {
    flows: [Flow; 2],
    waits: [Waits<B>; 2],
}

/// One end of a pair, over bells of type `B`: the protocol, without blocking.
#[derive(Debug)]
pub(crate) struct End<B: Bell> {
    shared: Arc<Shared<B>>,
    side: usize,
    /// Bytes it has written, ever.
    written: u64,
}

/// Two ends joined, whose directions hold `capacity` bytes each (a power of two), and whose
/// bells `bells()` makes (four: each end's read bell, then its write bell).
pub(crate) fn ends<B: Bell>(
    capacity: usize,
    mut bells: impl FnMut() -> io::Result<B>,
) -> io::Result<(End<B>, End<B>)> {
    let waits = [
        Waits::new(bells()?, bells()?),
        Waits::new(bells()?, bells()?),
    ];
    let shared = Arc::new(Shared {
        flows: [Flow::new(capacity), Flow::new(capacity)],
        waits,
    });
    let end = |side| End {
        shared: shared.clone(),
        side,
        written: 0,
    };
    Ok((end(0), end(1)))
}

impl<B: Bell> End<B> {
    fn incoming(&self) -> &Flow {
        &self.shared.flows[self.side]
    }

    fn outgoing(&self) -> &Flow {
        &self.shared.flows[1 - self.side]
    }

    fn mine(&self) -> &Waits<B> {
        &self.shared.waits[self.side]
    }

    fn theirs(&self) -> &Waits<B> {
        &self.shared.waits[1 - self.side]
    }

    /// Reads into `out`: `Ok(0)` at the end of the stream, `WouldBlock` (then an event is
    /// owed) when nothing is there.
    pub(crate) fn read(&mut self, out: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut armed = false;
        loop {
            let n = self.incoming().ring.take(out);
            if n > 0 {
                let theirs = self.theirs();
                wake(&theirs.writing, &theirs.write_bell);
                return Ok(n);
            }
            // The writer finishes after its last put: seeing it finished, one more look
            // at the ring tells whether anything is left.
            if self.incoming().finished.load(Acquire) {
                if self.incoming().ring.len() > 0 {
                    continue;
                }
                return match self.incoming().reset.load(Acquire) {
                    true => Err(io::ErrorKind::ConnectionReset.into()),
                    false => Ok(0),
                };
            }
            if armed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mine = self.mine();
            arm(&mine.reading, &mine.read_bell);
            armed = true;
        }
    }

    /// Writes what fits of `slices`, in order: `WouldBlock` (then an event is owed) when
    /// nothing fits, `BrokenPipe` once the peer refuses (or this end finished writing).
    pub(crate) fn write<S: Deref<Target = [u8]>>(&mut self, slices: &[S]) -> io::Result<usize> {
        if slices.iter().all(|slice| slice.is_empty()) {
            return Ok(0);
        }
        let mut armed = false;
        loop {
            let outgoing = self.outgoing();
            if outgoing.refused.load(Acquire) || outgoing.finished.load(Relaxed) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = outgoing.ring.put(slices);
            if n > 0 {
                self.written += n as u64;
                let theirs = self.theirs();
                wake(&theirs.reading, &theirs.read_bell);
                return Ok(n);
            }
            if armed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mine = self.mine();
            arm(&mine.writing, &mine.write_bell);
            armed = true;
        }
    }

    /// Ends this end's writing: the peer reads what is left, then the end of the stream.
    pub(crate) fn finish_writing(&self) {
        if !self.outgoing().finished.swap(true, SeqCst) {
            self.theirs().read_bell.ring();
        }
    }

    /// Refuses what the peer writes from now on.
    pub(crate) fn refuse(&self) {
        if !self.incoming().refused.swap(true, SeqCst) {
            self.theirs().write_bell.ring();
        }
    }

    /// Bytes the peer has taken of those this end wrote.
    pub(crate) fn acknowledged(&self) -> u64 {
        self.written - self.outgoing().ring.len() as u64
    }

    /// This end's bells: the one it waits on to read, and the one to write.
    pub(crate) fn bells(&self) -> (&B, &B) {
        (&self.mine().read_bell, &self.mine().write_bell)
    }
}

impl<B: Bell> Drop for End<B> {
    fn drop(&mut self) {
        if self.incoming().ring.len() > 0 {
            self.outgoing().reset.store(true, SeqCst);
        }
        self.finish_writing();
        self.refuse();
    }
}

#[cfg(unix)]
pub(crate) use imp::{pair, FdBell, MemoryStream};

#[cfg(unix)]
mod imp {
    use std::cell::Cell;
    use std::io::{self, IoSlice, Read, Write};
    use std::mem::MaybeUninit;
    use std::ops::Deref;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    use mio::event::Source;
    use mio::unix::SourceFd;
    use mio::{Interest, Registry, Token};

    use super::{ends, Bell, End, RING};
    use crate::transport::Stream;

    /// A bell the kernel can poll: an `eventfd` (Linux, Android) or a pipe. Non-blocking,
    /// closed on exec.
    #[derive(Debug)]
    pub(crate) struct FdBell {
        /// Polled and drained.
        read: OwnedFd,
        /// Rung: the same file as `read` for an `eventfd`.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        write: OwnedFd,
    }

    fn check(result: libc::c_int) -> io::Result<libc::c_int> {
        match result {
            -1 => Err(io::Error::last_os_error()),
            ok => Ok(ok),
        }
    }

    impl FdBell {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        pub(crate) fn new() -> io::Result<Self> {
            // SAFETY: a plain system call; the descriptor it returns is ours alone.
            let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
            // SAFETY: a descriptor just opened, owned by nothing else.
            Ok(FdBell {
                read: unsafe { OwnedFd::from_raw_fd(fd) },
            })
        }

        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        pub(crate) fn new() -> io::Result<Self> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors `pipe` writes.
            check(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
            // SAFETY: descriptors just opened, owned by nothing else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            for fd in [&read, &write] {
                let fd = fd.as_raw_fd();
                // SAFETY: `fcntl` on a descriptor we own.
                unsafe {
                    check(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
                    let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
                    check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
                }
            }
            Ok(FdBell { read, write })
        }

        fn ring_fd(&self) -> RawFd {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            return self.read.as_raw_fd();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            return self.write.as_raw_fd();
        }

        pub(crate) fn fd(&self) -> RawFd {
            self.read.as_raw_fd()
        }

        /// Waits until the bell rings or `deadline` passes (`false` then).
        fn wait(&self, deadline: Option<Instant>) -> io::Result<bool> {
            loop {
                let timeout = match deadline {
                    None => -1,
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(false);
                        }
                        // Rounded up, so that a wait never ends before its deadline.
                        left.as_millis().saturating_add(1).min(i32::MAX as u128) as libc::c_int
                    }
                };
                let mut poll = libc::pollfd {
                    fd: self.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one `pollfd` that lives across the call.
                match unsafe { libc::poll(&mut poll, 1, timeout) } {
                    -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    -1 => return Err(io::Error::last_os_error()),
                    0 => {}
                    _ => return Ok(true),
                }
            }
        }
    }

    impl Bell for FdBell {
        fn ring(&self) {
            // An eventfd takes a count of 8 bytes; a pipe, any byte. A full pipe (or an
            // eventfd at its maximum, never in practice) has rung already.
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live array to a descriptor we own.
            unsafe { libc::write(self.ring_fd(), one.as_ptr().cast(), one.len()) };
        }

        fn drain(&self) {
            let mut sink = [0u8; 64];
            // SAFETY: reads into a live array, non-blocking: one read resets an eventfd; a
            // pipe is read until `EAGAIN`.
            let mut read =
                || unsafe { libc::read(self.fd(), sink.as_mut_ptr().cast(), sink.len()) };
            #[cfg(any(target_os = "linux", target_os = "android"))]
            read();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            while read() > 0 {}
        }
    }

    /// One end of an in-memory stream (see the module's contract).
    pub(crate) struct MemoryStream {
        end: End<FdBell>,
        endpoint: String,
        nonblocking: Cell<bool>,
        read_timeout: Cell<Option<Duration>>,
    }

    impl std::fmt::Debug for MemoryStream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MemoryStream")
                .field("endpoint", &self.endpoint)
                .field("written", &self.end.written)
                .finish()
        }
    }

    /// Two joined streams, both named `endpoint`, non-blocking.
    pub(crate) fn pair(endpoint: &str) -> io::Result<(MemoryStream, MemoryStream)> {
        let (a, b) = ends(RING, FdBell::new)?;
        let stream = |end| MemoryStream {
            end,
            endpoint: endpoint.to_string(),
            nonblocking: Cell::new(true),
            read_timeout: Cell::new(None),
        };
        Ok((stream(a), stream(b)))
    }

    impl MemoryStream {
        /// Reads into `out`, blocking (up to the read timeout) if the stream is blocking.
        fn read_into(&mut self, out: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
            let deadline = self
                .read_timeout
                .get()
                .map(|timeout| Instant::now() + timeout);
            loop {
                match self.end.read(out) {
                    Err(err)
                        if err.kind() == io::ErrorKind::WouldBlock && !self.nonblocking.get() =>
                    {
                        if !self.end.bells().0.wait(deadline)? {
                            return Err(err);
                        }
                    }
                    result => return result,
                }
            }
        }

        fn write_all_of<S: Deref<Target = [u8]>>(&mut self, slices: &[S]) -> io::Result<usize> {
            loop {
                match self.end.write(slices) {
                    Err(err)
                        if err.kind() == io::ErrorKind::WouldBlock && !self.nonblocking.get() =>
                    {
                        self.end.bells().1.wait(None)?;
                    }
                    result => return result,
                }
            }
        }
    }

    impl Read for MemoryStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and only initialised bytes
            // are written into it.
            let out = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
            self.read_into(out)
        }
    }

    impl Write for MemoryStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_all_of(&[buf])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.write_all_of(bufs)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for MemoryStream {
        fn local_endpoint(&self) -> String {
            self.endpoint.clone()
        }

        fn remote_endpoint(&self) -> String {
            self.endpoint.clone()
        }

        fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
            self.nonblocking.set(nonblocking);
            Ok(())
        }

        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.read_timeout.set(timeout);
            Ok(())
        }

        fn shutdown(&self) -> io::Result<()> {
            self.end.finish_writing();
            self.end.refuse();
            Ok(())
        }

        fn finish_writing(&mut self) -> io::Result<bool> {
            self.end.finish_writing();
            Ok(true)
        }

        fn bytes_acknowledged(&self) -> Option<u64> {
            Some(self.end.acknowledged())
        }

        fn events_wake_both(&self) -> bool {
            true
        }

        fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
            buf.reserve(max);
            let n = self.read_into(&mut buf.spare_capacity_mut()[..max])?;
            // SAFETY: the read initialised the first `n` bytes of the spare capacity, which
            // start at `buf.len()`.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        }
    }

    impl MemoryStream {
        /// Registers or reregisters both bells under `token`, for reading (what they
        /// signal, whichever direction they stand for).
        fn enrol(&self, registry: &Registry, token: Token, again: bool) -> io::Result<()> {
            let (read, write) = self.end.bells();
            for fd in [read.fd(), write.fd()] {
                match again {
                    false => SourceFd(&fd).register(registry, token, Interest::READABLE)?,
                    true => SourceFd(&fd).reregister(registry, token, Interest::READABLE)?,
                }
            }
            Ok(())
        }
    }

    impl Source for MemoryStream {
        fn register(&mut self, registry: &Registry, token: Token, _: Interest) -> io::Result<()> {
            self.enrol(registry, token, false)
        }

        fn reregister(&mut self, registry: &Registry, token: Token, _: Interest) -> io::Result<()> {
            self.enrol(registry, token, true)
        }

        fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
            let (read, write) = self.end.bells();
            let first = SourceFd(&read.fd()).deregister(registry);
            SourceFd(&write.fd()).deregister(registry).and(first)
        }
    }

    #[cfg(all(test, not(loom)))]
    mod tests {
        use super::*;

        #[test]
        fn bytes_cross_in_order_and_the_end_follows_them() {
            let (mut a, mut b) = pair("inproc://t").unwrap();
            let data: Vec<u8> = (0..RING * 3).map(|i| (i % 251) as u8).collect();
            let writer = std::thread::spawn(move || {
                a.set_nonblocking(false).unwrap();
                a.write_all(&data).unwrap();
                a.finish_writing().unwrap();
                (a, data)
            });
            b.set_nonblocking(false).unwrap();
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            let (a, data) = writer.join().unwrap();
            assert_eq!(got.len(), data.len());
            assert!(got == data);
            assert_eq!(a.bytes_acknowledged(), Some(data.len() as u64));
        }

        #[test]
        fn a_full_ring_blocks_writes_and_a_read_makes_room() {
            let (mut a, mut b) = pair("inproc://t").unwrap();
            let big = vec![7u8; RING + 10];
            assert_eq!(a.write(&big).unwrap(), RING);
            assert_eq!(a.write(&big).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            assert_eq!(a.bytes_acknowledged(), Some(0));
            let mut buf = vec![0u8; 100];
            assert_eq!(b.read(&mut buf).unwrap(), 100);
            assert_eq!(a.write(&big).unwrap(), 100);
            assert_eq!(a.bytes_acknowledged(), Some(100));
        }

        #[test]
        fn a_blocking_read_times_out() {
            let (_a, mut b) = pair("inproc://t").unwrap();
            b.set_nonblocking(false).unwrap();
            b.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            let started = Instant::now();
            let err = b.read(&mut [0u8; 4]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            assert!(started.elapsed() >= Duration::from_millis(30));
        }

        #[test]
        fn dropping_an_end_ends_the_peer_s_stream_or_resets_it() {
            let (mut a, mut b) = pair("inproc://t").unwrap();
            a.write_all(b"left").unwrap();
            drop(a);
            let mut got = [0u8; 8];
            assert_eq!(b.read(&mut got).unwrap(), 4);
            assert_eq!(b.read(&mut got).unwrap(), 0);
            assert_eq!(b.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);

            let (mut a, mut b) = pair("inproc://t").unwrap();
            b.write_all(b"unread").unwrap();
            a.write_all(b"last").unwrap();
            drop(a);
            assert_eq!(b.read(&mut got).unwrap(), 4);
            assert_eq!(
                b.read(&mut got).unwrap_err().kind(),
                io::ErrorKind::ConnectionReset
            );
        }

        proptest::proptest! {
            /// Any interleaving of writes (vectored, of any sizes) and reads (of any sizes)
            /// through a small ring: the bytes arrive in order, the ring never holds more
            /// than its capacity, and what is acknowledged is what was read.
            #[test]
            fn any_writes_and_reads_keep_the_bytes_in_order(
                steps in proptest::collection::vec(
                    (proptest::bool::ANY, proptest::collection::vec(0usize..40, 1..4)),
                    1..60,
                ),
            ) {
                let (mut writer, mut reader) = ends(32, FdBell::new).unwrap();
                let (mut sent, mut read) = (Vec::new(), Vec::new());
                let mut next = 0u8;
                for (write, sizes) in steps {
                    if write {
                        let chunks: Vec<Vec<u8>> = sizes
                            .iter()
                            .map(|&n| (0..n).map(|_| { next = next.wrapping_add(1); next }).collect())
                            .collect();
                        let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
                        let all: Vec<u8> = chunks.concat();
                        match writer.write(&slices) {
                            Ok(n) => {
                                sent.extend_from_slice(&all[..n]);
                                // What did not fit is written again later, in order.
                                next = next.wrapping_sub((all.len() - n) as u8);
                            }
                            Err(err) => {
                                proptest::prop_assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                                proptest::prop_assert_eq!(sent.len() - read.len(), 32);
                                next = next.wrapping_sub(all.len() as u8);
                            }
                        }
                    } else {
                        let mut buf = vec![MaybeUninit::new(0u8); sizes[0]];
                        match reader.read(&mut buf) {
                            Ok(n) => read.extend(buf[..n].iter().map(|b| unsafe { b.assume_init() })),
                            Err(err) => {
                                proptest::prop_assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                                proptest::prop_assert_eq!(sent.len(), read.len());
                            }
                        }
                    }
                    proptest::prop_assert!(sent.len() - read.len() <= 32);
                    proptest::prop_assert_eq!(&sent[..read.len()], &read[..]);
                    proptest::prop_assert_eq!(writer.acknowledged(), read.len() as u64);
                }
            }
        }

        #[test]
        fn a_waiting_end_gets_an_event() {
            use mio::{Events, Poll};
            let (mut a, mut b) = pair("inproc://t").unwrap();
            let mut poll = Poll::new().unwrap();
            poll.registry()
                .register(&mut b, Token(1), Interest::READABLE | Interest::WRITABLE)
                .unwrap();
            let mut events = Events::with_capacity(8);
            // Registration reports nothing by itself: read until WouldBlock, then wait.
            assert_eq!(
                b.read(&mut [0u8; 4]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            assert!(events.is_empty());
            a.write_all(b"ping").unwrap();
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(events.iter().any(|event| event.token() == Token(1)));
            assert_eq!(b.read(&mut [0u8; 4]).unwrap(), 4);
            // A busy writer does not ring a reader that does not wait.
            a.write_all(b"more").unwrap();
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            assert!(events.is_empty());
        }
    }
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use loom::sync::atomic::AtomicUsize as Count;

    /// A bell that counts rings: an event is a ring that its end has not seen yet.
    #[derive(Debug, Default)]
    struct Rings(Count);

    impl Bell for Rings {
        fn ring(&self) {
            self.0.fetch_add(1, SeqCst);
        }
        fn drain(&self) {}
    }

    /// Waits for an event of `end`'s, as an edge-triggered poll does: a ring after the
    /// last one it saw.
    fn wait(end: &End<Rings>, seen: &mut usize) {
        loop {
            let (read, write) = end.bells();
            let now = read.0.load(SeqCst) + write.0.load(SeqCst);
            if now != *seen {
                *seen = now;
                return;
            }
            loom::thread::yield_now();
        }
    }

    #[test]
    fn no_wait_is_missed_and_every_byte_arrives_in_order_then_the_end() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let (mut writer, mut reader) = ends(2, || Ok(Rings::default())).unwrap();
            let sending = loom::thread::spawn(move || {
                let data = [1u8, 2, 3];
                let mut sent = 0;
                let mut seen = 0;
                while sent < data.len() {
                    match writer.write(&[&data[sent..]]) {
                        Ok(n) => sent += n,
                        Err(err) => {
                            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                            wait(&writer, &mut seen);
                        }
                    }
                }
                writer.finish_writing();
                writer
            });
            let mut got = Vec::new();
            let mut seen = 0;
            loop {
                let mut buf = [MaybeUninit::new(0u8); 2];
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend(buf[..n].iter().map(|b| unsafe { b.assume_init() })),
                    Err(err) => {
                        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                        wait(&reader, &mut seen);
                    }
                }
            }
            let writer = sending.join().unwrap();
            assert_eq!(got, [1, 2, 3]);
            assert_eq!(writer.acknowledged(), 3);
        });
    }

    #[test]
    fn a_writer_waiting_on_a_reader_that_goes_is_woken_and_refused() {
        loom::model(|| {
            let (mut writer, reader) = ends(2, || Ok(Rings::default())).unwrap();
            let going = loom::thread::spawn(move || drop(reader));
            let mut seen = 0;
            loop {
                match writer.write(&[&[1u8, 2, 3][..]]) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => break,
                    Err(err) => {
                        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                        wait(&writer, &mut seen);
                    }
                }
            }
            going.join().unwrap();
        });
    }
}
