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
//!   once more, so a frame is never left behind with nobody scheduled to take it. A queue
//!   starts scheduled: the reactor flushes a connection when it adds it.
//! - Only the reactor pops, and only the reactor writes the socket: senders never touch it.
//!
//! # Implementation notes
//!
//! Each protocol lives in one atomic word, changed only by read-modify-writes, so each has
//! a single modification order and no fence is needed between two variables:
//!
//! - `state` packs the number of reserved places (pushed or being pushed, not yet popped)
//!   above a `WANT` bit (a sender waits for room) and a `CLOSED` bit: the capacity check,
//!   the reservation, the closed check and the wish for room are each one compare-and-swap,
//!   and a pop learns from its own subtraction whether someone waits.
//! - `schedule` holds `SCHEDULED` (someone is to write the queue) and `LANDED` (a frame
//!   landed while it was scheduled): a sender that lands a frame either takes the schedule
//!   or marks `LANDED`; the reactor gives the schedule up only by a compare-and-swap that
//!   fails if `LANDED` was marked, and then looks again.
//!
//! No locks: the reactor never waits on a sender. The loom checks (`loom_checks` below)
//! explore every interleaving of a push against `unschedule`, of a push against a close,
//! and of `want_room` against a pop. Orderings are `SeqCst` throughout: they cost nothing
//! measurable here and spare a reader the argument for anything weaker.

use std::sync::atomic::Ordering::SeqCst;

use crate::codec::EncodedFrames;
use crate::sync::{AtomicUsize, SegQueue};
use crate::transport::connection::{Chunk, WriteBacklog};

const CLOSED: usize = 1;
/// A sender waits for room (see [`OutgoingQueue::want_room`]).
const WANT: usize = 2;
/// One reserved place.
const ONE: usize = 4;

/// Someone (a sender that landed a frame, or the reactor) is to write the queue.
const SCHEDULED: usize = 1;
/// A frame landed while the queue was scheduled: whoever has it must look again.
const LANDED: usize = 2;

/// Why an item was not queued; the item is handed back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<U> PushError<U> {
    /// The same refusal, handing `item` back instead.
    pub(crate) fn holding<T>(self, item: T) -> PushError<T> {
        match self {
            PushError::Full(_) => PushError::Full(item),
            PushError::Closed(_) => PushError::Closed(item),
        }
    }
}

#[derive(Debug)]
pub(crate) struct OutgoingQueue {
    frames: SegQueue<Chunk>,
    state: AtomicUsize,
    schedule: AtomicUsize,
    capacity: usize,
    max_frame_size: u32,
    /// Bytes queued (headers included), for the stats only: relaxed, not part of any
    /// protocol above.
    bytes: std::sync::atomic::AtomicUsize,
}

impl OutgoingQueue {
    /// A queue that starts scheduled (the reactor owns its connection's writes until its
    /// first flush).
    pub(crate) fn new(capacity: usize, max_frame_size: u32) -> Self {
        OutgoingQueue {
            frames: SegQueue::new(),
            state: AtomicUsize::new(0),
            schedule: AtomicUsize::new(SCHEDULED),
            capacity,
            max_frame_size,
            bytes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Bytes queued, headers included (a statistic: exact as of some recent moment).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
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

    /// Takes `count` places, all or none, for frames written without being queued (the
    /// owner of the connection writes them at once): they are released right after
    /// ([`release`](Self::release)), so `Full` and `Closed` mean what they mean for a push.
    pub(crate) fn reserve(&self, count: usize) -> Result<(), PushError<()>> {
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

    /// Gives back places taken by [`reserve`](Self::reserve).
    pub(crate) fn release(&self, count: usize) {
        self.state.fetch_sub(count * ONE, SeqCst);
    }

    /// True if nothing is queued or being queued and nobody has scheduled the queue: frames
    /// written now go out after everything accepted before them.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(SeqCst) / ONE == 0 && self.schedule.load(SeqCst) & SCHEDULED == 0
    }

    /// Queues a chunk whose places are reserved; true if this call took the schedule.
    fn land(&self, chunk: Chunk) -> bool {
        let bytes = chunk.wire_len(crate::codec::Framing::Raw);
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.frames.push(chunk);
        let mut schedule = self.schedule.load(SeqCst);
        loop {
            let (new, took) = match schedule & SCHEDULED {
                0 => (SCHEDULED, true),
                _ if schedule & LANDED != 0 => return false,
                _ => (schedule | LANDED, false),
            };
            match self
                .schedule
                .compare_exchange_weak(schedule, new, SeqCst, SeqCst)
            {
                Ok(_) => return took,
                Err(actual) => schedule = actual,
            }
        }
    }

    /// Moves the oldest item into `backlog` (reactor only). False if there was nothing.
    pub(crate) fn pop_into(&self, backlog: &mut WriteBacklog) -> bool {
        match self.frames.pop() {
            Some(chunk) => {
                let bytes = chunk.wire_len(crate::codec::Framing::Raw);
                self.bytes
                    .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                self.release(chunk.frames());
                backlog.push_chunk(chunk);
                true
            }
            None => false,
        }
    }

    /// Called by the reactor when it has emptied the queue. Returns true if frames arrived
    /// meanwhile and the reactor must keep it scheduled and go on.
    pub(crate) fn unschedule(&self) -> bool {
        match self.schedule.compare_exchange(SCHEDULED, 0, SeqCst, SeqCst) {
            Ok(_) => false,
            // A frame landed since the last look (LANDED is only ever set beside
            // SCHEDULED): keep the schedule and look again.
            Err(actual) if actual & LANDED != 0 => {
                self.schedule.fetch_and(!LANDED, SeqCst);
                true
            }
            // Not scheduled at all: the owner wrote a backlog a direct write left, with
            // nothing queued. Nothing to give up.
            Err(_) => false,
        }
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
        self.state.load(SeqCst) & !WANT == CLOSED
    }

    /// Asks to be notified when the queue has room (or closes). Returns false, without
    /// asking, if it has room or is closed already: try again now.
    pub(crate) fn want_room(&self) -> bool {
        let mut state = self.state.load(SeqCst);
        loop {
            if state & CLOSED != 0 || state / ONE < self.capacity {
                return false;
            }
            if state & WANT != 0 {
                return true;
            }
            match self
                .state
                .compare_exchange_weak(state, state | WANT, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// After a pop: true once per `want_room` that found the queue full, when the queue
    /// has come down to half its capacity (reactor only). A sender that waits for room
    /// resumes with room for a batch, not for one frame at a time: woken at the first free
    /// place, a sender that outruns its peer would go on in batches of a few frames, each
    /// with its own wake and write.
    pub(crate) fn take_room_wanted_at_low_water(&self) -> bool {
        let state = self.state.load(SeqCst);
        state & WANT != 0 && state / ONE <= self.capacity / 2 && self.take_room_wanted()
    }

    /// True once per `want_room` that found the queue full (reactor only, after a close).
    pub(crate) fn take_room_wanted(&self) -> bool {
        self.state.fetch_and(!WANT, SeqCst) & WANT != 0
    }

    /// Frames queued or being queued.
    pub(crate) fn len(&self) -> usize {
        self.state.load(SeqCst) / ONE
    }
}

#[cfg(all(test, not(loom)))]
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
        let queue = OutgoingQueue::new(capacity, 100);
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
    fn unscheduling_a_queue_nobody_scheduled_gives_nothing_up() {
        // After a direct write, the owner writes what the socket did not take and then
        // unschedules a queue that was never scheduled: it must not loop.
        let queue = idle(4);
        assert!(queue.is_idle());
        assert!(
            !queue.unschedule(),
            "nothing landed, nothing to look at again"
        );
        assert!(!queue.unschedule());
        assert!(queue.push(vec![1]).unwrap(), "the next push schedules it");
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
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use loom::sync::Arc;

    fn drain(queue: &OutgoingQueue) -> usize {
        let mut backlog = WriteBacklog::default();
        while queue.pop_into(&mut backlog) {}
        backlog.len()
    }

    #[test]
    fn a_push_while_the_reactor_unschedules_is_never_left_behind() {
        loom::model(|| {
            // Scheduled, as the reactor has it while it writes.
            let queue = Arc::new(OutgoingQueue::new(8, 100));
            let sender = {
                let queue = queue.clone();
                loom::thread::spawn(move || queue.push(vec![1]).unwrap())
            };
            // The reactor has emptied the queue and gives up the schedule.
            let reactor_goes_on = queue.unschedule();
            let sender_scheduled = sender.join().unwrap();
            let left = drain(&queue);
            if left > 0 || reactor_goes_on {
                assert!(
                    reactor_goes_on || sender_scheduled,
                    "a queued frame has someone to write it ({left} left, reactor {reactor_goes_on}, sender {sender_scheduled})"
                );
            }
            assert!(!(reactor_goes_on && sender_scheduled), "scheduled once");
        });
    }

    #[test]
    fn a_push_racing_a_close_is_written_or_handed_back() {
        loom::model(|| {
            let queue = Arc::new(OutgoingQueue::new(8, 100));
            let sender = {
                let queue = queue.clone();
                loom::thread::spawn(move || queue.push(vec![1]).is_err())
            };
            queue.close();
            // The reactor takes what is there; a push in flight lands (and is taken once
            // it has), or is refused.
            let mut taken = drain(&queue);
            let settled_early = queue.is_settled();
            let refused = sender.join().unwrap();
            taken += drain(&queue);
            assert!(queue.is_settled());
            assert_eq!(
                taken + usize::from(refused),
                1,
                "once, one way or the other"
            );
            if settled_early {
                assert!(refused || taken == 1, "settled means nothing more comes");
            }
        });
    }

    #[test]
    fn a_sender_waiting_for_room_hears_of_it() {
        loom::model(|| {
            let queue = Arc::new(OutgoingQueue::new(1, 100));
            queue.push(vec![1]).unwrap();
            let sender = {
                let queue = queue.clone();
                loom::thread::spawn(move || queue.want_room())
            };
            // The reactor writes the frame.
            let mut backlog = WriteBacklog::default();
            assert!(queue.pop_into(&mut backlog));
            let notified = queue.take_room_wanted_at_low_water();
            let waits = sender.join().unwrap();
            if waits {
                assert!(notified, "a sender that waits is woken");
            }
        });
    }
}
