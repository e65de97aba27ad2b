//! The per-connection outgoing queue, shared by the senders and the reactor.
//!
//! # Contract
//!
//! - Bounded: a push beyond `capacity` frames fails with [`PushError::Full`] and hands the
//!   payload back. An item is one payload or a run of encoded frames ([`Chunk`]); a run
//!   takes as many places as it has frames, all or none. Memory is taken as frames arrive
//!   (a lock-free segment queue), not up front, so ten thousand idle connections cost
//!   nothing per queue slot.
//! - Closable without loss: once [`close`](OutgoingQueue::close)d, a push fails with
//!   [`PushError::Closed`] and hands the payload back. A push that reserved its place just
//!   before the close still lands, and the reactor waits for it
//!   ([`is_settled`](OutgoingQueue::is_settled)) before it takes the queue's last frames,
//!   so every payload is either sent, handed back to its sender, or handed back in a
//!   disconnect notice.
//! - Scheduled at most once: a sender that makes the queue non-empty while it is not
//!   scheduled schedules it (puts its id on the reactor's ready list); the reactor
//!   unschedules it only when it has emptied it and written its backlog, and then looks
//!   once more. Both sides place a `SeqCst` fence between their queue operation and the
//!   flag, so a frame is never left behind with nobody scheduled to take it. A queue starts
//!   scheduled: the reactor flushes a connection when it adds it.
//! - Written directly when idle ([`write_direct`](OutgoingQueue::write_direct)): while the
//!   queue is unscheduled, empty and open, one sender may take the flag itself and write its
//!   frames straight to the socket, from its own thread and its own buffer. So the socket
//!   has one writer at a time, and frames leave in the order they were accepted: a direct
//!   write only starts once everything before it is on the wire. What the socket does not
//!   take is handed to the reactor, ahead of anything queued meanwhile ([`pop_into`]), with
//!   the flag; a write error is left for the reactor to meet again, so it ends the
//!   connection in one place, with a disconnect notice that holds the unwritten frames.
//!   While a direct write is under way the queue is not settled, so the reactor neither
//!   ends the connection (closing its socket) nor hands it back until the write is over.
//!
//! # Implementation notes
//!
//! `state` packs the number of reserved places (pushed or being pushed, not yet popped)
//! above a `DIRECT` bit (a direct write is under way) and a `CLOSED` bit, so the capacity
//! check, the reservation and the closed check are a single compare-and-swap. No locks:
//! the reactor must never wait on a sender (except at shutdown, for a direct write to
//! return: one non-blocking system call).
//!
//! [`pop_into`]: OutgoingQueue::pop_into

use std::io::IoSlice;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};

use crossbeam_queue::SegQueue;

use crate::codec::{EncodedFrames, HEADER_LEN};
use crate::transport::connection::WriteBacklog;

const CLOSED: usize = 1;
const DIRECT: usize = 2;
const ONE: usize = 4;

/// A socket senders may write to directly (see [`Stream::raw_socket`]).
///
/// [`Stream::raw_socket`]: crate::transport::Stream::raw_socket
#[cfg(unix)]
pub(crate) type RawSocket = std::os::fd::RawFd;
/// No direct writes off Unix: every frame goes through the reactor.
#[cfg(not(unix))]
pub(crate) type RawSocket = std::convert::Infallible;

/// Why an item was not queued; the item is handed back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

impl PushError<()> {
    /// The same refusal, handing `item` back.
    fn holding<T>(self, item: T) -> PushError<T> {
        match self {
            PushError::Full(()) => PushError::Full(item),
            PushError::Closed(()) => PushError::Closed(item),
        }
    }
}

/// What an outgoing queue and a connection's write backlog hold.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// One payload; its header is made on the way out.
    Payload(Vec<u8>),
    /// Frames already encoded, written as they are.
    Encoded(EncodedFrames),
}

impl Chunk {
    /// The frames it holds.
    pub(crate) fn frames(&self) -> usize {
        match self {
            Chunk::Payload(_) => 1,
            Chunk::Encoded(frames) => frames.len(),
        }
    }

    /// Its bytes on the wire, headers included.
    pub(crate) fn wire_len(&self) -> usize {
        match self {
            Chunk::Payload(payload) => HEADER_LEN + payload.len(),
            Chunk::Encoded(frames) => frames.as_bytes().len(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct OutgoingQueue {
    frames: SegQueue<Chunk>,
    state: AtomicUsize,
    scheduled: AtomicBool,
    /// Set by a sender that waits for room; taken by the reactor when it pops.
    room_wanted: AtomicBool,
    capacity: usize,
    max_frame_size: u32,
    /// The socket, if senders may write it directly.
    socket: Option<RawSocket>,
    /// What a direct write left unwritten, with the bytes of it that went: at most one,
    /// taken by the reactor before anything queued.
    rest: SegQueue<(Chunk, usize)>,
}

impl OutgoingQueue {
    /// A queue that starts scheduled (the reactor owns its connection's writes until its
    /// first flush). `socket`: written directly by senders when idle, if given.
    pub(crate) fn new(capacity: usize, max_frame_size: u32, socket: Option<RawSocket>) -> Self {
        OutgoingQueue {
            frames: SegQueue::new(),
            state: AtomicUsize::new(0),
            scheduled: AtomicBool::new(true),
            room_wanted: AtomicBool::new(false),
            capacity,
            max_frame_size,
            socket,
            rest: SegQueue::new(),
        }
    }

    pub(crate) fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Queues a payload. `Ok(true)` means the caller made the queue scheduled and must put
    /// its id on the ready list.
    pub(crate) fn push(&self, payload: Vec<u8>) -> Result<bool, PushError<Vec<u8>>> {
        if let Err(err) = self.reserve(1) {
            return Err(err.holding(payload));
        }
        Ok(self.land(Chunk::Payload(payload)))
    }

    /// Queues a run of encoded frames, taking a place for each, all or none; as
    /// [`push`](Self::push) otherwise. An empty run is accepted and not queued.
    pub(crate) fn push_encoded(
        &self,
        frames: EncodedFrames,
    ) -> Result<bool, PushError<EncodedFrames>> {
        if frames.is_empty() {
            return match self.is_closed() {
                true => Err(PushError::Closed(frames)),
                false => Ok(false),
            };
        }
        if let Err(err) = self.reserve(frames.len()) {
            return Err(err.holding(frames));
        }
        Ok(self.land(Chunk::Encoded(frames)))
    }

    /// Places still free: what a push of that many frames would not find full. `None` once
    /// closed.
    pub(crate) fn room(&self) -> Option<usize> {
        let state = self.state.load(SeqCst);
        match state & CLOSED {
            0 => Some(self.capacity.saturating_sub(state / ONE)),
            _ => None,
        }
    }

    fn reserve(&self, count: usize) -> Result<(), PushError<()>> {
        let mut state = self.state.load(SeqCst);
        loop {
            if state & CLOSED != 0 {
                return Err(PushError::Closed(()));
            }
            if self.capacity - (state / ONE).min(self.capacity) < count {
                return Err(PushError::Full(()));
            }
            match self
                .state
                .compare_exchange_weak(state, state + count * ONE, SeqCst, SeqCst)
            {
                Ok(_) => return Ok(()),
                Err(actual) => state = actual,
            }
        }
    }

    /// Queues an owned item; as [`push`](Self::push).
    pub(crate) fn push_chunk(&self, chunk: Chunk) -> Result<bool, PushError<Chunk>> {
        if let Err(err) = self.reserve(chunk.frames()) {
            return Err(err.holding(chunk));
        }
        Ok(self.land(chunk))
    }

    fn land(&self, chunk: Chunk) -> bool {
        self.frames.push(chunk);
        fence(SeqCst);
        !self.scheduled.swap(true, SeqCst)
    }

    /// Writes `wire` (`frames` whole frames, in slices) straight to the socket if the
    /// queue is idle: unscheduled, empty, open, and able to take `frames`. Returns `None`,
    /// having done nothing, if it is not: queue the frames instead. Otherwise returns what
    /// became of the frames (written, or queued, or refused and handed back) and whether
    /// the caller must put the id on the ready list and wake the reactor.
    ///
    /// `chunk(n)` makes the frames an owned [`Chunk`] with the bytes `n` of it already
    /// written (whole frames written may be left out of it: `n` then counts from its
    /// start). It is called only if the socket takes part of `wire` (or none of it, or
    /// fails; a write error is left for the reactor to meet on its own write), or if the
    /// queue stops being idle at the last moment.
    pub(crate) fn write_direct(
        &self,
        wire: &[IoSlice<'_>],
        frames: usize,
        chunk: impl Fn(usize) -> (Chunk, usize),
    ) -> Option<(Result<(), PushError<Chunk>>, bool)> {
        let socket = self.socket?;
        if frames > self.capacity || self.scheduled.load(SeqCst) {
            return None;
        }
        // Take the flag first: while it is held, nobody else starts to write the socket.
        if self.scheduled.swap(true, SeqCst) {
            return None;
        }
        let reserved = DIRECT + frames * ONE;
        if self
            .state
            .compare_exchange(0, reserved, SeqCst, SeqCst)
            .is_err()
        {
            // Another sender is queuing, or the queue closed. The flag is ours: queue the
            // frames and hand the connection to the reactor, as a sender that scheduled it.
            return Some(match self.reserve(frames) {
                Ok(()) => {
                    self.frames.push(chunk(0).0);
                    (Ok(()), true)
                }
                Err(err) => {
                    let closed = matches!(err, PushError::Closed(()));
                    (Err(err.holding(chunk(0).0)), self.unschedule() || closed)
                }
            });
        }
        let total: usize = wire.iter().map(|slice| slice.len()).sum();
        let written = send(socket, wire).unwrap_or(0);
        if written >= total {
            let before = self.state.fetch_sub(reserved, SeqCst);
            // A closing connection waits for this write to end: wake the reactor for it.
            return Some((Ok(()), self.unschedule() || before & CLOSED != 0));
        }
        // The rest keeps its places until the reactor takes it (the frames fully written
        // give theirs back now), and the flag goes with it.
        let rest = chunk(written);
        let gone = frames - rest.0.frames();
        self.rest.push(rest);
        self.state.fetch_sub(DIRECT + gone * ONE, SeqCst);
        Some((Ok(()), true))
    }

    /// True while a direct write is under way.
    pub(crate) fn is_writing_directly(&self) -> bool {
        self.state.load(SeqCst) & DIRECT != 0
    }

    /// Moves the oldest item into `backlog` (reactor only): what a direct write left first,
    /// then the queue in order. False if there was nothing.
    pub(crate) fn pop_into(&self, backlog: &mut WriteBacklog) -> bool {
        if let Some((chunk, written)) = self.rest.pop() {
            self.state.fetch_sub(chunk.frames() * ONE, SeqCst);
            backlog.push_front_resumed(chunk, written);
            return true;
        }
        match self.frames.pop() {
            Some(chunk) => {
                self.state.fetch_sub(chunk.frames() * ONE, SeqCst);
                backlog.push_chunk(chunk);
                true
            }
            None => false,
        }
    }

    /// Called by the reactor when it has emptied the queue. Returns true if frames arrived
    /// meanwhile and the reactor must keep it scheduled and go on.
    pub(crate) fn unschedule(&self) -> bool {
        self.scheduled.store(false, SeqCst);
        fence(SeqCst);
        !self.frames.is_empty() && !self.scheduled.swap(true, SeqCst)
    }

    /// Refuses all later pushes.
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(SeqCst) & CLOSED != 0
    }

    /// True once closed and every reserved place has been popped: nothing more will come.
    pub(crate) fn is_settled(&self) -> bool {
        self.state.load(SeqCst) == CLOSED
    }

    /// Asks to be notified when the queue has room (or closes). Returns false, without
    /// asking, if it has room or is closed already: try again now.
    pub(crate) fn want_room(&self) -> bool {
        self.room_wanted.store(true, SeqCst);
        fence(SeqCst);
        let state = self.state.load(SeqCst);
        if state & CLOSED != 0 || state / ONE < self.capacity {
            self.room_wanted.store(false, SeqCst);
            return false;
        }
        true
    }

    /// After a pop: true once per `want_room` that found the queue full, when the queue
    /// has come down to half its capacity (reactor only). A sender that waits for room
    /// resumes with room for a batch, not for one frame at a time: woken at the first free
    /// place, a sender that outruns its peer would go on in batches of a few frames, each
    /// with its own wake and write.
    pub(crate) fn take_room_wanted_at_low_water(&self) -> bool {
        self.len() <= self.capacity / 2 && self.take_room_wanted()
    }

    /// True once per `want_room` that found the queue full (reactor only, after a close).
    pub(crate) fn take_room_wanted(&self) -> bool {
        self.room_wanted.load(SeqCst) && self.room_wanted.swap(false, SeqCst)
    }

    /// Frames queued or being queued.
    pub(crate) fn len(&self) -> usize {
        self.state.load(SeqCst) / ONE
    }
}

/// One vectored send on a socket the queue may write directly; `MSG_NOSIGNAL` on Linux, so
/// a reset peer is an error, never a signal.
#[cfg(unix)]
fn send(socket: RawSocket, wire: &[IoSlice<'_>]) -> std::io::Result<usize> {
    // SAFETY: `socket` belongs to the stream of this queue's connection, which the reactor
    // closes only once the queue is settled, and a direct write keeps it unsettled (the
    // `DIRECT` bit) until this call has returned.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
    socket2::SockRef::from(&fd).send_vectored(wire)
}

#[cfg(not(unix))]
fn send(socket: RawSocket, _: &[IoSlice<'_>]) -> std::io::Result<usize> {
    match socket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;
    use std::sync::Arc;

    /// The payloads of the oldest item.
    fn pop(queue: &OutgoingQueue) -> Option<Vec<Vec<u8>>> {
        let mut backlog = WriteBacklog::default();
        queue.pop_into(&mut backlog).then(|| backlog.into_unsent())
    }

    /// A queue as the reactor leaves it after its first flush: unscheduled.
    fn idle(capacity: usize) -> OutgoingQueue {
        let queue = OutgoingQueue::new(capacity, 100, None);
        assert!(!queue.unschedule());
        queue
    }

    fn encoded(payloads: &[&[u8]]) -> EncodedFrames {
        let mut wire = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        EncodedFrames::new(Arc::from(wire), 0..len).unwrap()
    }

    #[test]
    fn a_run_takes_a_place_per_frame_all_or_none() {
        let queue = idle(3);
        assert_eq!(queue.room(), Some(3));
        assert!(queue.push_encoded(encoded(&[b"a", b"b"])).unwrap());
        assert_eq!(queue.room(), Some(1));
        assert!(matches!(
            queue.push_encoded(encoded(&[b"c", b"d"])),
            Err(PushError::Full(frames)) if frames.len() == 2
        ));
        assert!(!queue.push(vec![9]).unwrap());
        assert_eq!(queue.room(), Some(0));
        assert_eq!(pop(&queue), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(
            queue.room(),
            Some(2),
            "popping a run frees a place per frame"
        );
        queue.close();
        assert_eq!(queue.room(), None);
        assert!(matches!(
            queue.push_encoded(encoded(&[b"e"])),
            Err(PushError::Closed(_))
        ));
        assert_eq!(pop(&queue), Some(vec![vec![9]]));
        assert!(queue.is_settled());
    }

    #[test]
    fn full_and_closed_hand_the_payload_back() {
        let queue = idle(2);
        assert!(queue.push(vec![1]).unwrap(), "the first push schedules");
        assert!(!queue.push(vec![2]).unwrap(), "later pushes do not");
        assert!(matches!(queue.push(vec![3]), Err(PushError::Full(p)) if p == [3]));
        assert_eq!(pop(&queue), Some(vec![vec![1]]));
        queue.close();
        assert!(matches!(queue.push(vec![4]), Err(PushError::Closed(p)) if p == [4]));
        assert!(!queue.is_settled());
        assert_eq!(pop(&queue), Some(vec![vec![2]]));
        assert!(queue.is_settled());
    }

    #[test]
    fn a_sender_waiting_for_room_is_woken_at_half() {
        let queue = idle(4);
        for i in 0..4 {
            queue.push(vec![i]).unwrap();
        }
        assert!(queue.want_room(), "full: the sender waits");
        let mut backlog = WriteBacklog::default();
        assert!(queue.pop_into(&mut backlog));
        assert!(!queue.take_room_wanted_at_low_water(), "3 of 4: not yet");
        assert!(queue.pop_into(&mut backlog));
        assert!(
            queue.take_room_wanted_at_low_water(),
            "2 of 4: room for a batch"
        );
        assert!(queue.pop_into(&mut backlog));
        assert!(!queue.take_room_wanted_at_low_water(), "once per want_room");
    }

    #[test]
    fn unschedule_sees_a_racing_push() {
        let queue = idle(10);
        assert!(queue.push(vec![1]).unwrap());
        assert_eq!(pop(&queue), Some(vec![vec![1]]));
        // A push while scheduled does not schedule again…
        assert!(!queue.push(vec![2]).unwrap());
        // …so unscheduling must notice it and keep going.
        assert!(queue.unschedule());
        assert_eq!(pop(&queue), Some(vec![vec![2]]));
        assert!(!queue.unschedule());
        assert!(queue.push(vec![3]).unwrap());
    }

    #[test]
    fn concurrent_pushes_and_a_close_lose_nothing() {
        for _ in 0..50 {
            let queue = Arc::new(idle(usize::MAX / 4));
            let pushers: Vec<_> = (0..2)
                .map(|t| {
                    let queue = queue.clone();
                    std::thread::spawn(move || {
                        let mut refused = Vec::new();
                        for i in 0..2000u32 {
                            if let Err(PushError::Closed(p)) =
                                queue.push((t * 10_000 + i).to_be_bytes().to_vec())
                            {
                                refused.push(p);
                            }
                        }
                        refused
                    })
                })
                .collect();
            let mut taken = Vec::new();
            while taken.len() < 500 {
                taken.extend(pop(&queue).into_iter().flatten());
            }
            queue.close();
            while !queue.is_settled() {
                taken.extend(pop(&queue).into_iter().flatten());
            }
            let refused: usize = pushers.into_iter().map(|p| p.join().unwrap().len()).sum();
            assert_eq!(taken.len() + refused, 4000);
            assert_eq!(pop(&queue), None);
        }
    }

    /// A loopback pair: the writing end (non-blocking, with a small send buffer) and the
    /// reading end.
    #[cfg(unix)]
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        writer.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&writer)
            .set_send_buffer_size(8192)
            .unwrap();
        (writer, reader)
    }

    #[cfg(unix)]
    fn direct_queue(capacity: usize, writer: &std::net::TcpStream) -> OutgoingQueue {
        use std::os::fd::AsRawFd;
        let queue = OutgoingQueue::new(capacity, 1 << 24, Some(writer.as_raw_fd()));
        assert!(
            !queue.unschedule(),
            "idle, as after the reactor's first flush"
        );
        queue
    }

    #[cfg(unix)]
    fn payload_chunk(payload: &[u8]) -> impl Fn(usize) -> (Chunk, usize) + '_ {
        move |written| (Chunk::Payload(payload.to_vec()), written)
    }

    #[cfg(unix)]
    #[test]
    fn an_idle_queue_is_written_directly_and_a_busy_one_is_not() {
        use std::io::Read;
        let (writer, mut reader) = socket_pair();
        let fresh = OutgoingQueue::new(4, 100, None);
        let header = 5u32.to_be_bytes();
        let wire = [IoSlice::new(&header), IoSlice::new(b"hello")];
        assert!(
            fresh
                .write_direct(&wire, 1, payload_chunk(b"hello"))
                .is_none(),
            "no socket"
        );
        let queue = {
            use std::os::fd::AsRawFd;
            OutgoingQueue::new(4, 100, Some(writer.as_raw_fd()))
        };
        assert!(
            queue
                .write_direct(&wire, 1, payload_chunk(b"hello"))
                .is_none(),
            "a queue starts scheduled: the reactor has not flushed it yet"
        );
        assert!(!queue.unschedule());
        let (result, schedule) = queue
            .write_direct(&wire, 1, payload_chunk(b"hello"))
            .unwrap();
        assert!(
            result.is_ok() && !schedule,
            "written, nothing for the reactor"
        );
        let mut got = [0u8; 9];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\0\0\x05hello");
        assert_eq!((queue.len(), queue.is_writing_directly()), (0, false));
        // A queued frame (the reactor owns the socket) or more frames than places: no.
        assert!(queue.push(b"queued".to_vec()).unwrap());
        assert!(queue
            .write_direct(&wire, 1, payload_chunk(b"hello"))
            .is_none());
        // Nor while the reactor is still writing what it took (nothing queued, but it has
        // not unscheduled): its frame may be half written.
        let mut backlog = WriteBacklog::default();
        assert!(queue.pop_into(&mut backlog));
        assert_eq!(queue.len(), 0);
        assert!(queue
            .write_direct(&wire, 1, payload_chunk(b"hello"))
            .is_none());
        let idle = direct_queue(2, &writer);
        assert!(idle
            .write_direct(&wire, 3, payload_chunk(b"hello"))
            .is_none());
        // Closed: refused, the flag handed to the reactor so it can finish closing.
        idle.close();
        let (result, schedule) = idle
            .write_direct(&wire, 1, payload_chunk(b"hello"))
            .unwrap();
        assert!(matches!(result, Err(PushError::Closed(Chunk::Payload(p))) if p == b"hello"));
        assert!(schedule);
        assert!(idle.is_settled());
    }

    #[cfg(unix)]
    #[test]
    fn frames_a_partial_direct_write_sent_whole_give_their_places_back() {
        use crate::codec::FramesRef;
        use std::io::Read;
        let (writer, mut reader) = socket_pair();
        let queue = direct_queue(1000, &writer);
        let mut wire = Vec::new();
        for i in 0..400u32 {
            crate::codec::encode_frame(&vec![i as u8; 16 * 1024], &mut wire).unwrap();
        }
        let frames = FramesRef::new(&wire).unwrap();
        let whole = [IoSlice::new(&wire)];
        let rest = |written| {
            let (rest, written) = frames.rest_after(written);
            (Chunk::Encoded(rest), written)
        };
        let (result, schedule) = queue.write_direct(&whole, 400, rest).unwrap();
        assert!(result.is_ok() && schedule);
        let mut backlog = WriteBacklog::default();
        assert!(queue.pop_into(&mut backlog));
        assert!(backlog.len() < 400, "some frames went whole");
        assert_eq!(queue.len(), 0, "every place is free once the rest is taken");
        assert_eq!(queue.room(), Some(1000));
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let mut writer = writer;
        while !backlog.is_empty() {
            match backlog.write_to(&mut writer) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(err) => panic!("{err}"),
            }
        }
        drop(writer);
        assert!(reading.join().unwrap() == wire, "every byte once, in order");
    }

    #[cfg(unix)]
    #[test]
    fn what_the_socket_does_not_take_goes_to_the_reactor_first() {
        use std::io::Read;
        let (writer, mut reader) = socket_pair();
        let queue = direct_queue(8, &writer);
        let big = (0..4 << 20).map(|i| (i % 253) as u8).collect::<Vec<u8>>();
        let header = (big.len() as u32).to_be_bytes();
        let wire = [IoSlice::new(&header), IoSlice::new(&big)];
        let (result, schedule) = queue.write_direct(&wire, 1, payload_chunk(&big)).unwrap();
        assert!(result.is_ok());
        assert!(schedule, "the rest is the reactor's: it must be scheduled");
        assert!(!queue.is_settled() && !queue.is_writing_directly());
        // Frames queued meanwhile go after the rest.
        assert!(!queue.push(b"after".to_vec()).unwrap(), "scheduled already");
        assert_eq!(queue.len(), 2);
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        // The reactor's part: take, then write until done.
        let mut backlog = WriteBacklog::default();
        let mut writer = writer;
        while queue.pop_into(&mut backlog) {}
        assert_eq!(queue.len(), 0);
        while !backlog.is_empty() {
            match backlog.write_to(&mut writer) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(err) => panic!("{err}"),
            }
        }
        drop(writer);
        let mut expected = header.to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"\0\0\0\x05after");
        let all = reading.join().unwrap();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "every byte once, in order");
    }
}
