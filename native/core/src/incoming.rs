//! The incoming queue: the frames the reactor read and the notices of the connections it
//! removed, in one ordered stream on its way to the receivers.
//!
//! # Contract
//!
//! - The stream carries [`Received`] items: frames of one connection ([`Delivery`]), or a
//!   [`Disconnect`] notice. The reactor pushes a connection's notice after every frame it
//!   read from it, and the stream keeps its order, so a notice is taken only after the
//!   frames before it.
//! - The capacity counts frames. The reactor is the only producer: it asks for the room
//!   ([`Inlet::room`]) and pushes at most that many frames, so the stream never holds more
//!   than its capacity. Notices take no room (there is at most one per connection).
//! - No lock. Items travel in an unbounded crossbeam channel; the frame count is an atomic
//!   that only the reactor raises and only receivers lower.
//! - Receivers take up to `max` frames at a time. A run of more is split and its rest
//!   stays at the head of the stream, taken first by the next take. The head is a token
//!   (a one-slot crossbeam channel) that a receiver holds while it takes, so receivers take
//!   one after the other and nothing behind a split run overtakes its rest. A blocking
//!   receiver parks inside crossbeam, holding the token while it waits for items; others
//!   park waiting for the token. The reactor never touches the token: it never waits on a
//!   receiver.
//! - Paused reading: a reactor with frames and no room asks to be woken
//!   ([`Inlet::wait_for_room`]); the take that makes room says so
//!   ([`Taken::made_room`]), and its caller wakes the reactor.
//! - Notifying an event loop: a receiver that cannot block arms ([`Outlet::arm`]) when it
//!   finds nothing; the reactor, after pushing, takes the arming ([`Inlet::take_armed`])
//!   and calls the consumer's hook, once per arming.
//! - Closing: when the reactor's [`Inlet`] is dropped, receivers take what is left, then
//!   learn that nothing more will come.
//!
//! # Implementation notes
//!
//! The flags and the count are `SeqCst`: each pair (the reactor's `room_wanted` against a
//! receiver's count, a receiver's `armed` against the reactor's push) is a store followed
//! by a load of the other side's variable, which needs a single total order to never miss
//! a wake. `tests/loom.rs` model-checks both.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::codec::Decoded;
use crate::envelope::Envelope;
use crate::sync::{fence, AtomicBool, AtomicUsize};
use crate::transport::DisconnectReason;

/// Frames of one connection, as the reactor read them: a run of small frames sharing one
/// buffer, or one frame.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The connection they came from.
    pub id: usize,
    /// The frames.
    pub frames: Decoded,
}

impl Delivery {
    /// The number of frames it holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True if it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// One envelope per frame, in order (a run's payloads are copied out of its buffer).
    pub fn into_envelopes(self, out: &mut Vec<Envelope>) {
        let id = self.id;
        let mut payloads = Vec::with_capacity(self.frames.len());
        self.frames.into_payloads(&mut payloads);
        out.extend(
            payloads
                .into_iter()
                .map(|payload| Envelope::new(id, payload)),
        );
    }

    fn split_to(&mut self, n: usize) -> Delivery {
        Delivery {
            id: self.id,
            frames: self.frames.split_to(n),
        }
    }
}

/// A connection the reactor removed by itself, with the reason and what it had not sent.
#[derive(Debug)]
pub struct Disconnect {
    /// The connection's id.
    pub id: usize,
    /// Why it was removed.
    pub reason: DisconnectReason,
    /// Envelopes queued for it that were not fully written, oldest first.
    pub unsent: Vec<Envelope>,
    /// The id is dialled and waits for its next connection ([`Mesh::attach`]): what was
    /// not written stays queued for it (`unsent` is empty), and sends are still accepted.
    ///
    /// [`Mesh::attach`]: crate::Mesh::attach
    pub parked: bool,
    /// Frames written on the connection that the peer's system had not acknowledged when
    /// it ended (at most; see [`Connection::unacknowledged`]): they may be lost. `None`
    /// where the system cannot tell.
    ///
    /// [`Connection::unacknowledged`]: crate::Connection::unacknowledged
    pub unacknowledged: Option<u64>,
}

impl Disconnect {
    /// The notice of connection `id`, which left for `reason`, handing back `unsent`.
    pub(crate) fn left(id: usize, reason: DisconnectReason, unsent: Vec<Envelope>) -> Self {
        Disconnect {
            id,
            reason,
            unsent,
            parked: false,
            unacknowledged: None,
        }
    }
}

/// An item of the incoming stream.
#[derive(Debug)]
pub enum Received {
    /// Frames of one connection.
    Frames(Delivery),
    /// A connection left; every frame it sent came before this.
    Disconnect(Disconnect),
}

/// What a take took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Frames taken.
    pub(crate) frames: usize,
    /// Items taken (runs, frames and notices).
    pub(crate) items: usize,
    /// Notices taken.
    pub(crate) notices: usize,
    /// The reactor waited for room and this take made some: wake it.
    pub(crate) made_room: bool,
}

/// Why a receiver got nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The stream is closed and empty: nothing more will come.
    Closed,
    /// The deadline passed.
    Timeout,
}

/// How long a take may wait for its first item.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: take what is there (nothing, if another receiver is taking).
    No,
    /// Until an item comes, or the deadline (if any).
    Until(Option<Instant>),
}

struct Counters {
    /// Frames in the stream: raised by the reactor before it pushes, lowered by receivers
    /// after they take.
    frames: AtomicUsize,
    capacity: usize,
    /// The reactor holds frames and waits for room.
    room_wanted: AtomicBool,
    /// An event-loop receiver waits to be notified.
    armed: AtomicBool,
    /// The reactor's inlet is gone: nothing more will be pushed.
    closed: AtomicBool,
}

impl Counters {
    fn new(capacity: usize) -> Self {
        Counters {
            frames: AtomicUsize::new(0),
            capacity,
            room_wanted: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Frames that can be pushed now (the reactor's view: receivers only raise it).
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.frames.load(SeqCst))
    }

    /// The reactor: `n` frames are about to be pushed.
    fn pushing(&self, n: usize) {
        self.frames.fetch_add(n, SeqCst);
    }

    /// The reactor, with frames and no room: asks the take that makes room to say so.
    /// False, without asking, if there is room already.
    fn wait_for_room(&self) -> bool {
        self.room_wanted.store(true, SeqCst);
        fence(SeqCst);
        if self.room() > 0 {
            self.room_wanted.store(false, SeqCst);
            return false;
        }
        true
    }

    /// A receiver took `n` frames: true if the reactor waited for room (wake it).
    fn took(&self, n: usize) -> bool {
        self.frames.fetch_sub(n, SeqCst);
        fence(SeqCst);
        self.room_wanted.load(SeqCst) && self.room_wanted.swap(false, SeqCst)
    }

    /// A receiver asks to be notified; `waiting` says whether something waits already (or
    /// the stream has ended): then it does not ask, and says false.
    fn arm(&self, waiting: impl FnOnce() -> bool) -> bool {
        self.armed.store(true, SeqCst);
        fence(SeqCst);
        if waiting() {
            self.armed.store(false, SeqCst);
            return false;
        }
        true
    }

    /// The reactor, after pushing: true once per arming.
    fn take_armed(&self) -> bool {
        fence(SeqCst);
        self.armed.load(SeqCst) && self.armed.swap(false, SeqCst)
    }
}

/// The rest of a run split by a take, first in line for the next.
struct Head(Option<Delivery>);

/// A new stream holding up to `capacity` frames (at least 1): the reactor's end and the
/// receivers' end.
pub(crate) fn stream(capacity: usize) -> (Inlet, Outlet) {
    assert!(capacity > 0, "an incoming queue holds at least one frame");
    let counters = Arc::new(Counters::new(capacity));
    let (items_tx, items_rx) = crossbeam_channel::unbounded();
    let (head_tx, head_rx) = crossbeam_channel::bounded(1);
    head_tx.send(Head(None)).expect("an empty slot");
    (
        Inlet {
            items: items_tx,
            counters: counters.clone(),
        },
        Outlet {
            items: items_rx,
            head: head_rx,
            head_back: head_tx,
            counters,
        },
    )
}

/// The reactor's end of the stream.
pub(crate) struct Inlet {
    items: Sender<Received>,
    counters: Arc<Counters>,
}

impl Inlet {
    /// Frames that can be pushed now. Only receivers change it meanwhile, and only upward.
    pub(crate) fn room(&self) -> usize {
        self.counters.room()
    }

    /// Pushes frames; the caller checked that they fit ([`room`](Self::room)).
    pub(crate) fn push(&self, delivery: Delivery) {
        debug_assert!(delivery.len() <= self.room());
        // Counted before it can be taken, so the count never goes below zero.
        self.counters.pushing(delivery.len());
        let _ = self.items.send(Received::Frames(delivery));
    }

    /// Pushes a notice, after every frame pushed before it.
    pub(crate) fn push_notice(&self, notice: Disconnect) {
        let _ = self.items.send(Received::Disconnect(notice));
    }

    /// Called with frames to push and no room: asks the next take that makes room to say so
    /// ([`Taken::made_room`]). Returns false, without asking, if there is room already.
    pub(crate) fn wait_for_room(&self) -> bool {
        self.counters.wait_for_room()
    }

    /// True once per arming by a receiver: the reactor then notifies it.
    pub(crate) fn take_armed(&self) -> bool {
        self.counters.take_armed()
    }
}

impl Inlet {
    /// Ends the stream: receivers take what is in it, then learn that nothing more will
    /// come. Later pushes are dropped. (Dropping the inlet does the same.)
    pub(crate) fn close(&mut self) {
        // Receivers that arm from now on learn that the stream has ended.
        self.counters.closed.store(true, SeqCst);
        // A sender whose receiver is gone: the real one drops, and the channel ends.
        let (ended, _) = crossbeam_channel::unbounded();
        drop(std::mem::replace(&mut self.items, ended));
    }
}

impl Drop for Inlet {
    fn drop(&mut self) {
        self.counters.closed.store(true, SeqCst);
    }
}

/// The receivers' end of the stream; clones share it.
#[derive(Clone)]
pub(crate) struct Outlet {
    items: Receiver<Received>,
    head: Receiver<Head>,
    head_back: Sender<Head>,
    counters: Arc<Counters>,
}

impl Outlet {
    /// Frames in the stream.
    pub(crate) fn frames(&self) -> usize {
        self.counters.frames.load(SeqCst)
    }

    /// True if no frame and no notice waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames() == 0 && self.items.is_empty()
    }

    /// True once the reactor's end is gone (items may still wait).
    pub(crate) fn is_closed(&self) -> bool {
        self.counters.closed.load(SeqCst)
    }

    /// Takes items until `max` frames and notices (at least one, unless there is none and
    /// `wait` is [`Wait::No`]), splitting a run if need be.
    pub(crate) fn take(
        &self,
        max: usize,
        wait: Wait,
        out: &mut Vec<Received>,
    ) -> Result<Taken, Waited> {
        let max = max.max(1);
        let mut head = match wait {
            // Another receiver is taking: there is nothing for this one now.
            Wait::No => match self.head.try_recv() {
                Ok(head) => head,
                Err(_) => return Ok(Taken::default()),
            },
            Wait::Until(None) => self.head.recv().map_err(|_| Waited::Closed)?,
            Wait::Until(Some(deadline)) => match self.head.recv_deadline(deadline) {
                Ok(head) => head,
                Err(RecvTimeoutError::Timeout) => return Err(Waited::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(Waited::Closed),
            },
        };
        let mut taken = Taken::default();
        let mut ended = None;
        while taken.frames + taken.notices < max {
            let item = match head.0.take() {
                Some(rest) => Ok(Received::Frames(rest)),
                None => match (taken.items, wait) {
                    (0, Wait::Until(None)) => self.items.recv().map_err(|_| Waited::Closed),
                    (0, Wait::Until(Some(deadline))) => {
                        self.items.recv_deadline(deadline).map_err(|err| match err {
                            RecvTimeoutError::Timeout => Waited::Timeout,
                            RecvTimeoutError::Disconnected => Waited::Closed,
                        })
                    }
                    _ => self.items.try_recv().map_err(|err| match err {
                        TryRecvError::Empty => Waited::Timeout,
                        TryRecvError::Disconnected => Waited::Closed,
                    }),
                },
            };
            match item {
                Ok(Received::Frames(mut delivery)) => {
                    let want = max - taken.frames - taken.notices;
                    if delivery.len() > want {
                        let first = delivery.split_to(want);
                        head.0 = Some(delivery);
                        delivery = first;
                    }
                    taken.frames += delivery.len();
                    out.push(Received::Frames(delivery));
                }
                Ok(notice) => {
                    taken.notices += 1;
                    out.push(notice);
                }
                Err(err) => {
                    ended = Some(err);
                    break;
                }
            }
            taken.items += 1;
        }
        // The only token is this one, and its slot is empty: this never blocks.
        let _ = self.head_back.send(head);
        if taken.frames > 0 {
            taken.made_room = self.counters.took(taken.frames);
        }
        match (taken.items, ended) {
            (0, Some(Waited::Timeout)) if matches!(wait, Wait::No) => Ok(taken),
            (0, Some(err)) => Err(err),
            _ => Ok(taken),
        }
    }

    /// Takes the notices at the front of the stream without waiting, stopping before the
    /// first frame (which stays first in line). Nothing if another receiver is taking.
    pub(crate) fn take_notices(&self, out: &mut Vec<Received>) -> Result<Taken, Waited> {
        let Ok(mut head) = self.head.try_recv() else {
            return Ok(Taken::default());
        };
        let mut taken = Taken::default();
        let mut ended = None;
        while head.0.is_none() {
            match self.items.try_recv() {
                Ok(Received::Frames(delivery)) => head.0 = Some(delivery),
                Ok(notice) => {
                    out.push(notice);
                    taken.items += 1;
                    taken.notices += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended = Some(Waited::Closed);
                    break;
                }
            }
        }
        let _ = self.head_back.send(head);
        match (taken.items, ended) {
            (0, Some(err)) => Err(err),
            _ => Ok(taken),
        }
    }

    /// Asks to be notified (the reactor calls the consumer's hook) once something arrives.
    /// Returns false, without asking, if something waits already or the stream has ended:
    /// take it (or the end) now.
    pub(crate) fn arm(&self) -> bool {
        self.counters.arm(|| !self.is_empty() || self.is_closed())
    }

    /// True while a consumer is armed: it waits, and has not been notified since.
    pub(crate) fn is_armed(&self) -> bool {
        self.counters.armed.load(SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::codec::{encode_frame, EncodedFrames};
    use crate::transport::DisconnectReason;
    use std::time::Duration;

    fn run(id: usize, payloads: &[&[u8]]) -> Delivery {
        let mut wire = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut wire).unwrap();
        }
        let len = wire.len();
        Delivery {
            id,
            frames: Decoded::Run(EncodedFrames::new(Arc::from(wire), 0..len).unwrap()),
        }
    }

    fn one(id: usize, payload: &[u8]) -> Delivery {
        Delivery {
            id,
            frames: Decoded::Frame(payload.to_vec()),
        }
    }

    fn notice(id: usize) -> Disconnect {
        Disconnect {
            parked: false,
            unacknowledged: None,
            id,
            reason: DisconnectReason::Eof,
            unsent: Vec::new(),
        }
    }

    /// (id, payload) per frame, and "notice <id>" per notice.
    fn flatten(items: Vec<Received>) -> Vec<String> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Received::Frames(delivery) => {
                    let mut envelopes = Vec::new();
                    delivery.into_envelopes(&mut envelopes);
                    out.extend(
                        envelopes.iter().map(|e| {
                            format!("{} {}", e.id(), String::from_utf8_lossy(e.payload()))
                        }),
                    );
                }
                Received::Disconnect(notice) => out.push(format!("notice {}", notice.id)),
            }
        }
        out
    }

    #[test]
    fn room_counts_frames_and_a_split_run_is_taken_before_what_follows() {
        let (inlet, outlet) = stream(5);
        assert_eq!(inlet.room(), 5);
        inlet.push(run(1, &[b"a", b"b", b"c"]));
        inlet.push(one(2, b"x"));
        inlet.push_notice(notice(1));
        assert_eq!((inlet.room(), outlet.frames()), (1, 4));
        let mut out = Vec::new();
        let taken = outlet.take(2, Wait::No, &mut out).unwrap();
        assert_eq!((taken.frames, taken.items), (2, 1));
        assert_eq!(inlet.room(), 3);
        let taken = outlet.take(10, Wait::No, &mut out).unwrap();
        assert_eq!((taken.frames, taken.items, taken.notices), (2, 3, 1));
        assert_eq!(
            flatten(out),
            ["1 a", "1 b", "1 c", "2 x", "notice 1"],
            "the rest of the run first, the notice after every frame"
        );
        assert!(outlet.is_empty());
        let mut out = Vec::new();
        assert_eq!(outlet.take(1, Wait::No, &mut out), Ok(Taken::default()));
    }

    #[test]
    fn a_take_that_makes_room_for_a_waiting_reactor_says_so_once() {
        let (inlet, outlet) = stream(2);
        inlet.push(run(1, &[b"a", b"b"]));
        assert!(inlet.wait_for_room(), "full: the reactor waits");
        let mut out = Vec::new();
        assert!(outlet.take(1, Wait::No, &mut out).unwrap().made_room);
        assert!(!outlet.take(1, Wait::No, &mut out).unwrap().made_room);
        assert!(!inlet.wait_for_room(), "room already: no waiting");
    }

    #[test]
    fn an_armed_receiver_is_notified_once_and_arming_with_items_waiting_is_refused() {
        let (inlet, outlet) = stream(4);
        assert!(!inlet.take_armed());
        assert!(outlet.arm());
        assert!(outlet.is_armed());
        inlet.push(one(1, b"a"));
        assert!(inlet.take_armed());
        assert!(!inlet.take_armed(), "once per arming");
        assert!(!outlet.arm(), "something waits: take it now");
        let mut out = Vec::new();
        outlet.take(4, Wait::No, &mut out).unwrap();
        inlet.push_notice(notice(1));
        assert!(!outlet.arm(), "a notice waits too");
    }

    #[test]
    fn a_closed_stream_gives_what_it_holds_then_closed() {
        let (inlet, outlet) = stream(8);
        inlet.push(run(1, &[b"a", b"b"]));
        drop(inlet);
        assert!(!outlet.arm(), "closed: nothing to wait for");
        let mut out = Vec::new();
        assert_eq!(
            outlet.take(1, Wait::Until(None), &mut out).unwrap().frames,
            1
        );
        assert_eq!(outlet.take(5, Wait::No, &mut out).unwrap().frames, 1);
        assert_eq!(outlet.take(5, Wait::No, &mut out), Err(Waited::Closed));
        assert_eq!(
            outlet.take(5, Wait::Until(None), &mut out),
            Err(Waited::Closed)
        );
        assert_eq!(flatten(out), ["1 a", "1 b"]);
    }

    #[test]
    fn blocked_receivers_each_get_frames_of_one_push() {
        let (inlet, outlet) = stream(100);
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let outlet = outlet.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    outlet.take(1, Wait::Until(None), &mut out).unwrap();
                    flatten(out)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        inlet.push(run(7, &[b"1", b"2", b"3", b"4"]));
        let mut got: Vec<_> = receivers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, ["7 1", "7 2", "7 3", "7 4"]);
    }

    #[test]
    fn a_wait_with_a_deadline_times_out_and_gives_the_token_back() {
        let (inlet, outlet) = stream(1);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            outlet.take(1, Wait::Until(Some(deadline)), &mut out),
            Err(Waited::Timeout)
        );
        assert!(Instant::now() >= deadline);
        inlet.push(one(1, b"a"));
        assert_eq!(outlet.take(1, Wait::No, &mut out).unwrap().frames, 1);
    }

    #[test]
    fn a_non_blocking_take_while_another_receiver_waits_finds_nothing() {
        let (inlet, outlet) = stream(4);
        let waiting = {
            let outlet = outlet.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                outlet.take(1, Wait::Until(None), &mut out).unwrap();
                flatten(out)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut out = Vec::new();
        assert_eq!(outlet.take(1, Wait::No, &mut out), Ok(Taken::default()));
        inlet.push(one(3, b"z"));
        assert_eq!(waiting.join().unwrap(), ["3 z"]);
    }
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn a_reactor_that_waits_for_room_is_woken_by_the_take_that_makes_it() {
        loom::model(|| {
            let counters = Arc::new(Counters::new(1));
            counters.pushing(1);
            let receiver = {
                let counters = counters.clone();
                loom::thread::spawn(move || counters.took(1))
            };
            let sleeps = counters.wait_for_room();
            let woke_it = receiver.join().unwrap();
            if sleeps {
                assert!(woke_it, "a reactor that sleeps for room is woken");
            }
        });
    }

    #[test]
    fn an_armed_receiver_is_notified_of_what_comes_after_it_armed() {
        loom::model(|| {
            let counters = Arc::new(Counters::new(4));
            let reactor = {
                let counters = counters.clone();
                loom::thread::spawn(move || {
                    counters.pushing(1);
                    counters.take_armed()
                })
            };
            let waits = counters.arm(|| counters.frames.load(SeqCst) > 0);
            let notified = reactor.join().unwrap();
            if waits {
                assert!(notified, "a receiver that waits is notified");
            }
        });
    }
}
