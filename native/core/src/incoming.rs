//! The incoming queue: frames the reactor has read, on their way to the receivers.
//!
//! # Contract
//!
//! - Items are [`Delivery`]s: a run of small frames from one read of one connection (one
//!   allocation for all of them), or one envelope (a large payload, uncopied, or a frame
//!   that arrived in pieces). Receivers take frames; a run may be taken in parts.
//! - The capacity counts frames, not items. [`IncomingQueue::push`] takes what fits and
//!   hands back the rest of a run (or the whole item): the reactor holds that and stops
//!   reading until there is room. So the queue never holds more than its capacity, but for
//!   what one lent read adds past it ([`IncomingQueue::push_over`], at most that read's
//!   budget); until it is taken below its capacity again, every push is refused.
//! - One short lock guards the items. It is held only to move items in or out, never
//!   across a wait or I/O, so the reactor never waits on a receiver for longer than that.
//!   The number of frames waiting is also kept in an atomic, so asking whether anything
//!   waits takes no lock.
//! - Receivers that block wait on a condition variable; each push wakes one of them, and
//!   a receiver that leaves frames behind wakes the next. Closing (the reactor stopping)
//!   wakes them all: they take what is left, then learn that nothing more will come.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::codec::EncodedFrames;
use crate::envelope::Envelope;

/// What the reactor delivers in one piece: one envelope, or the whole small frames of one
/// read in one buffer ([`Incoming::try_recv_deliveries`](crate::Incoming::try_recv_deliveries)).
#[derive(Debug, Clone)]
pub enum Delivery {
    /// One frame, its payload in a buffer of its own.
    Envelope(Envelope),
    /// Consecutive frames from one connection, in order, sharing one buffer.
    Frames {
        /// The connection they came from.
        id: usize,
        /// The frames, headers included.
        frames: EncodedFrames,
    },
}

impl Delivery {
    /// The number of frames (envelopes) it holds.
    pub fn len(&self) -> usize {
        match self {
            Delivery::Envelope(_) => 1,
            Delivery::Frames { frames, .. } => frames.len(),
        }
    }

    /// True if it holds no frame (only an empty run can).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connection it came from.
    pub fn id(&self) -> usize {
        match self {
            Delivery::Envelope(envelope) => envelope.id(),
            Delivery::Frames { id, .. } => *id,
        }
    }

    /// One envelope per frame, in order (a run's payloads are copied out of its buffer).
    pub fn into_envelopes(self, out: &mut Vec<Envelope>) {
        match self {
            Delivery::Envelope(envelope) => out.push(envelope),
            Delivery::Frames { id, frames } => {
                out.extend(frames.payloads().map(|p| Envelope::new(id, p.to_vec())))
            }
        }
    }

    /// Splits off the first `n` frames (`n` below [`len`](Self::len)), keeping the rest.
    fn split_to(&mut self, n: usize) -> Delivery {
        match self {
            Delivery::Frames { id, frames } => Delivery::Frames {
                id: *id,
                frames: frames.split_to(n),
            },
            Delivery::Envelope(_) => unreachable!("an envelope is one frame"),
        }
    }
}

/// Why a receiver that waited got nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The queue is closed and empty: nothing more will come.
    Closed,
    /// The deadline passed.
    Timeout,
}

pub(crate) struct IncomingQueue {
    state: Mutex<State>,
    arrived: Condvar,
    /// Frames waiting; changed only under the lock, read without it.
    len: AtomicUsize,
    capacity: usize,
}

struct State {
    items: VecDeque<Delivery>,
    closed: bool,
    /// Receivers blocked in `wait`.
    waiting: usize,
}

impl IncomingQueue {
    /// A queue that holds up to `capacity` frames (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an incoming queue holds at least one frame");
        IncomingQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                waiting: 0,
            }),
            arrived: Condvar::new(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Frames waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(SeqCst)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues as much of `delivery` as fits; gives back what does not (the rest of a run,
    /// or all of it).
    pub(crate) fn push(&self, mut delivery: Delivery) -> Result<(), Delivery> {
        let mut state = self.lock();
        // A lent read may have filled it past its capacity.
        let room = self.capacity.saturating_sub(self.len.load(SeqCst));
        if room == 0 || delivery.is_empty() {
            return if delivery.is_empty() {
                Ok(())
            } else {
                Err(delivery)
            };
        }
        let (fits, rest) = if delivery.len() <= room {
            (delivery, None)
        } else {
            (delivery.split_to(room), Some(delivery))
        };
        self.len.fetch_add(fits.len(), SeqCst);
        state.items.push_back(fits);
        if state.waiting > 0 {
            self.arrived.notify_one();
        }
        match rest {
            None => Ok(()),
            Some(rest) => Err(rest),
        }
    }

    /// Queues all of `delivery`, whatever room is left: for a lent read, which has no
    /// place to hold frames (it reads at most its budget's worth past the capacity).
    pub(crate) fn push_over(&self, delivery: Delivery) {
        if delivery.is_empty() {
            return;
        }
        let mut state = self.lock();
        self.len.fetch_add(delivery.len(), SeqCst);
        state.items.push_back(delivery);
        if state.waiting > 0 {
            self.arrived.notify_one();
        }
    }

    /// No more pushes will come: wakes every waiting receiver.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    /// Takes up to `max` frames (at least one) without waiting; `Ok` with nothing if none
    /// waits, `Err(Closed)` if none waits and none will come.
    pub(crate) fn try_take(&self, max: usize, out: &mut Vec<Delivery>) -> Result<usize, Waited> {
        if self.is_empty() {
            // Recheck under the lock only to tell "empty" from "closed".
            let state = self.lock();
            return match state.closed && state.items.is_empty() {
                true => Err(Waited::Closed),
                false => Ok(self.take_locked(state, max, out)),
            };
        }
        let state = self.lock();
        Ok(self.take_locked(state, max, out))
    }

    /// Waits until a frame is there (or `deadline`), then takes up to `max` frames.
    pub(crate) fn take(
        &self,
        max: usize,
        deadline: Option<Instant>,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Waited> {
        let mut state = self.lock();
        while state.items.is_empty() {
            if state.closed {
                return Err(Waited::Closed);
            }
            state.waiting += 1;
            let woken = match deadline {
                None => self.arrived.wait(state).map_err(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.waiting -= 1;
                        return Err(Waited::Timeout);
                    }
                    self.arrived
                        .wait_timeout(state, left)
                        .map(|(state, _)| state)
                        .map_err(|e| e.into_inner().0)
                }
            };
            state = woken.unwrap_or_else(|state| state);
            state.waiting -= 1;
        }
        Ok(self.take_locked(state, max, out))
    }

    fn take_locked(
        &self,
        mut state: MutexGuard<'_, State>,
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> usize {
        let max = max.max(1);
        let mut taken = 0;
        while taken < max {
            let Some(front) = state.items.front_mut() else {
                break;
            };
            let want = max - taken;
            if front.len() <= want {
                let delivery = state.items.pop_front().expect("front exists");
                taken += delivery.len();
                out.push(delivery);
            } else {
                out.push(front.split_to(want));
                taken += want;
            }
        }
        self.len.fetch_sub(taken, SeqCst);
        if !state.items.is_empty() && state.waiting > 0 {
            self.arrived.notify_one();
        }
        taken
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the items are intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;
    use std::sync::Arc;
    use std::time::Duration;

    fn run(id: usize, payloads: &[&[u8]]) -> Delivery {
        let mut wire = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        Delivery::Frames {
            id,
            frames: EncodedFrames::new(Arc::from(wire), 0..len).unwrap(),
        }
    }

    fn envelopes(deliveries: Vec<Delivery>) -> Vec<Envelope> {
        let mut out = Vec::new();
        for delivery in deliveries {
            delivery.into_envelopes(&mut out);
        }
        out
    }

    #[test]
    fn capacity_counts_frames_and_the_rest_of_a_run_comes_back() {
        let queue = IncomingQueue::new(3);
        let rest = queue
            .push(run(1, &[b"a", b"b", b"c", b"d", b"e"]))
            .unwrap_err();
        assert_eq!((queue.len(), rest.len()), (3, 2));
        let refused = queue.push(Delivery::Envelope(Envelope::new(2, b"x".to_vec())));
        assert_eq!(refused.unwrap_err().len(), 1);
        let mut out = Vec::new();
        assert_eq!(queue.try_take(2, &mut out), Ok(2));
        assert_eq!(queue.push(rest).map_err(|d| d.len()), Ok(()));
        assert_eq!(queue.try_take(10, &mut out), Ok(3));
        let payloads: Vec<_> = envelopes(out).into_iter().map(|e| e.into_parts()).collect();
        let expected: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|p| (1, p.as_bytes().to_vec()))
            .collect();
        assert_eq!(payloads, expected);
        assert!(queue.is_empty());
    }

    #[test]
    fn past_its_capacity_by_a_lent_read_it_refuses_until_taken_below_it() {
        let queue = IncomingQueue::new(2);
        queue.push_over(run(1, &[b"a", b"b", b"c", b"d"]));
        assert_eq!(queue.len(), 4);
        let refused = queue.push(Delivery::Envelope(Envelope::new(2, b"x".to_vec())));
        let refused = refused.expect_err("no room past the capacity");
        let mut out = Vec::new();
        assert_eq!(queue.try_take(2, &mut out), Ok(2));
        let refused = queue.push(refused).expect_err("still at its capacity");
        assert_eq!(queue.try_take(1, &mut out), Ok(1));
        queue.push(refused).expect("room again");
        assert_eq!(queue.try_take(10, &mut out), Ok(2));
        let ids: Vec<_> = envelopes(out).iter().map(|e| e.id()).collect();
        assert_eq!(ids, [1, 1, 1, 1, 2]);
    }

    #[test]
    fn a_closed_queue_gives_what_it_holds_then_closed() {
        let queue = IncomingQueue::new(8);
        queue.push(run(1, &[b"a", b"b"])).unwrap();
        queue.close();
        let mut out = Vec::new();
        assert_eq!(queue.take(1, None, &mut out), Ok(1));
        assert_eq!(queue.try_take(5, &mut out), Ok(1));
        assert_eq!(queue.try_take(5, &mut out), Err(Waited::Closed));
        assert_eq!(queue.take(5, None, &mut out), Err(Waited::Closed));
        assert_eq!(envelopes(out).len(), 2);
    }

    #[test]
    fn blocked_receivers_each_get_frames_and_leftovers_wake_the_next() {
        let queue = Arc::new(IncomingQueue::new(100));
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    queue.take(1, None, &mut out).unwrap();
                    envelopes(out)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        // One push of four frames must reach all four blocked receivers.
        queue.push(run(7, &[b"1", b"2", b"3", b"4"])).unwrap();
        let mut got: Vec<_> = receivers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .map(|e| e.payload().to_vec())
            .collect();
        got.sort();
        assert_eq!(got, [b"1", b"2", b"3", b"4"]);
    }

    #[test]
    fn a_wait_with_a_deadline_times_out() {
        let queue = IncomingQueue::new(1);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            queue.take(1, Some(deadline), &mut out),
            Err(Waited::Timeout)
        );
        assert!(Instant::now() >= deadline);
    }
}
