//! The per-connection outgoing queue, shared by the senders and the reactor.
//!
//! # Contract
//!
//! - Bounded: a push beyond `capacity` frames fails with [`PushError::Full`] and hands the
//!   payload back. An item is one payload or a run of encoded frames ([`Chunk`]); a run
//!   takes as many places as it has frames, all or none. Memory is taken as frames arrive (a lock-free segment queue), not up front, so
//!   ten thousand idle connections cost nothing per queue slot.
//! - Closable without loss: once [`close`](OutgoingQueue::close)d, a push fails with
//!   [`PushError::Closed`] and hands the payload back. A push that reserved its place just
//!   before the close still lands, and the reactor waits for it
//!   ([`is_settled`](OutgoingQueue::is_settled)) before it takes the queue's last frames,
//!   so every payload is either sent, handed back to its sender, or handed back in a
//!   disconnect notice.
//! - Scheduled at most once: a sender that makes the queue non-empty while it is not
//!   scheduled schedules it (puts its id on the reactor's ready list); the reactor
//!   unschedules it only when it has emptied it, and then looks once more. Both sides place
//!   a `SeqCst` fence between their queue operation and the flag, so a frame is never left
//!   behind with nobody scheduled to take it.
//!
//! # Implementation notes
//!
//! `state` packs the number of reserved places (pushed or being pushed, not yet popped)
//! above a `CLOSED` bit, so the capacity check, the reservation and the closed check are a
//! single compare-and-swap. No locks: the reactor must never wait on a sender.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};

use crossbeam_queue::SegQueue;

use crate::codec::{EncodedFrames, HEADER_LEN};

const CLOSED: usize = 1;
const ONE: usize = 2;

/// Why an item was not queued; the item is handed back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
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
}

impl OutgoingQueue {
    pub(crate) fn new(capacity: usize, max_frame_size: u32) -> Self {
        OutgoingQueue {
            frames: SegQueue::new(),
            state: AtomicUsize::new(0),
            scheduled: AtomicBool::new(false),
            room_wanted: AtomicBool::new(false),
            capacity,
            max_frame_size,
        }
    }

    pub(crate) fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Queues a payload. `Ok(true)` means the caller made the queue scheduled and must put
    /// its id on the ready list.
    pub(crate) fn push(&self, payload: Vec<u8>) -> Result<bool, PushError<Vec<u8>>> {
        if let Err(err) = self.reserve(1) {
            return Err(match err {
                PushError::Full(()) => PushError::Full(payload),
                PushError::Closed(()) => PushError::Closed(payload),
            });
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
            return Err(match err {
                PushError::Full(()) => PushError::Full(frames),
                PushError::Closed(()) => PushError::Closed(frames),
            });
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

    fn land(&self, chunk: Chunk) -> bool {
        self.frames.push(chunk);
        fence(SeqCst);
        !self.scheduled.swap(true, SeqCst)
    }

    /// Takes the oldest item (reactor only).
    pub(crate) fn pop(&self) -> Option<Chunk> {
        let chunk = self.frames.pop()?;
        self.state.fetch_sub(chunk.frames() * ONE, SeqCst);
        Some(chunk)
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

    /// True once per `want_room` that found the queue full (reactor only, after a pop or
    /// a close).
    pub(crate) fn take_room_wanted(&self) -> bool {
        self.room_wanted.load(SeqCst) && self.room_wanted.swap(false, SeqCst)
    }

    /// Frames queued or being queued.
    pub(crate) fn len(&self) -> usize {
        self.state.load(SeqCst) / ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;
    use std::sync::Arc;

    fn pop(queue: &OutgoingQueue) -> Option<Vec<u8>> {
        match queue.pop()? {
            Chunk::Payload(payload) => Some(payload),
            Chunk::Encoded(frames) => Some(frames.as_bytes().to_vec()),
        }
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
        let queue = OutgoingQueue::new(3, 100);
        assert_eq!(queue.room(), Some(3));
        assert!(queue.push_encoded(encoded(&[b"a", b"b"])).unwrap());
        assert_eq!(queue.room(), Some(1));
        assert!(matches!(
            queue.push_encoded(encoded(&[b"c", b"d"])),
            Err(PushError::Full(frames)) if frames.len() == 2
        ));
        assert!(!queue.push(vec![9]).unwrap());
        assert_eq!(queue.room(), Some(0));
        assert_eq!(pop(&queue), Some(b"\0\0\0\x01a\0\0\0\x01b".to_vec()));
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
        assert_eq!(pop(&queue), Some(vec![9]));
        assert!(queue.is_settled());
    }

    #[test]
    fn full_and_closed_hand_the_payload_back() {
        let queue = OutgoingQueue::new(2, 100);
        assert!(queue.push(vec![1]).unwrap(), "the first push schedules");
        assert!(!queue.push(vec![2]).unwrap(), "later pushes do not");
        assert!(matches!(queue.push(vec![3]), Err(PushError::Full(p)) if p == [3]));
        assert_eq!(pop(&queue), Some(vec![1]));
        queue.close();
        assert!(matches!(queue.push(vec![4]), Err(PushError::Closed(p)) if p == [4]));
        assert!(!queue.is_settled());
        assert_eq!(pop(&queue), Some(vec![2]));
        assert!(queue.is_settled());
    }

    #[test]
    fn unschedule_sees_a_racing_push() {
        let queue = OutgoingQueue::new(10, 100);
        assert!(queue.push(vec![1]).unwrap());
        assert_eq!(pop(&queue), Some(vec![1]));
        // A push while scheduled does not schedule again…
        assert!(!queue.push(vec![2]).unwrap());
        // …so unscheduling must notice it and keep going.
        assert!(queue.unschedule());
        assert_eq!(pop(&queue), Some(vec![2]));
        assert!(!queue.unschedule());
        assert!(queue.push(vec![3]).unwrap());
    }

    #[test]
    fn concurrent_pushes_and_a_close_lose_nothing() {
        for _ in 0..50 {
            let queue = Arc::new(OutgoingQueue::new(usize::MAX / 4, 100));
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
                taken.extend(pop(&queue));
            }
            queue.close();
            while !queue.is_settled() {
                taken.extend(pop(&queue));
            }
            let refused: usize = pushers.into_iter().map(|p| p.join().unwrap().len()).sum();
            assert_eq!(taken.len() + refused, 4000);
            assert_eq!(pop(&queue), None);
        }
    }
}
