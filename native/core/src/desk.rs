//! The desk: where a sleeping reactor leaves its connections, so that a sender can write
//! to them itself instead of waking it.
//!
//! This is the one fast path that changes who does I/O, fenced here. It keeps the rule
//! that one party at a time does I/O on a connection's socket by moving the reactor's whole
//! state, every connection in it, by value: whoever holds it is the reactor for that
//! moment, and runs the reactor's own code on it.
//!
//! # Contract
//!
//! - The reactor [`lend`](Desk::lend)s its state just before it sleeps with nothing to do,
//!   and [`reclaim`](Desk::reclaim)s it when it wakes. A sender that would otherwise have
//!   to wake it [`borrow`](Desk::borrow)s it instead, writes, and
//!   [`give_back`](Desk::give_back)s it. A desk holds one state or none: `borrow` of an
//!   empty desk (the reactor is awake, or another sender has it) gets nothing, and the
//!   sender queues as usual.
//! - Nobody waits for the desk. A reactor that wakes while a sender holds its state says
//!   so (`wanted`) and sleeps again; the sender that gives the state back while it is
//!   wanted rings the doorbell. A sender never waits either: it queues.
//! - A borrower only writes (a write is what would have woken the reactor). Readiness
//!   events that come meanwhile are met by the reactor's poll, kept, and handled once it
//!   has its state back.
//!
//! # Implementation notes
//!
//! The slot is a one-place crossbeam `ArrayQueue` of a `Box`: pushing and popping it moves
//! the state. `wanted` and the slot form a store-then-load pair on each side (the reactor
//! sets `wanted` then looks in the slot; a sender fills the slot then takes `wanted`), so
//! every operation is `SeqCst` and separated by a fence; `tests/loom.rs` checks that the
//! state is never lost and a wanting reactor is always rung.

use std::sync::atomic::Ordering::SeqCst;

use crate::sync::{fence, ArrayQueue, AtomicBool};

/// A one-place desk for a reactor's state `S`.
#[derive(Debug)]
pub(crate) struct Desk<S> {
    slot: ArrayQueue<Box<S>>,
    /// The reactor woke and waits for its state.
    wanted: AtomicBool,
}

impl<S> Desk<S> {
    pub(crate) fn new() -> Self {
        Desk {
            slot: ArrayQueue::new(1),
            wanted: AtomicBool::new(false),
        }
    }

    /// The reactor, going to sleep: leaves its state on the desk.
    pub(crate) fn lend(&self, state: Box<S>) {
        if self.slot.push(state).is_err() {
            unreachable!("the desk holds one state: the reactor's, which it had")
        }
    }

    /// The reactor, awake: takes its state back, or `None` if a sender has it (the sender
    /// rings the doorbell when it gives it back; the reactor sleeps until then).
    pub(crate) fn reclaim(&self) -> Option<Box<S>> {
        if let Some(state) = self.slot.pop() {
            return Some(state);
        }
        self.wanted.store(true, SeqCst);
        fence(SeqCst);
        let state = self.slot.pop()?;
        // Given back between the two looks: no ring needed, and none must be asked for.
        self.wanted.store(false, SeqCst);
        Some(state)
    }

    /// A sender: takes the state if the reactor sleeps and nobody else has it.
    pub(crate) fn borrow(&self) -> Option<Box<S>> {
        self.slot.pop()
    }

    /// A sender: gives the state back. Returns true if the reactor woke meanwhile and
    /// wants it: ring the doorbell.
    pub(crate) fn give_back(&self, state: Box<S>) -> bool {
        if self.slot.push(state).is_err() {
            unreachable!("the desk was empty: this sender had the state")
        }
        fence(SeqCst);
        self.wanted.load(SeqCst) && self.wanted.swap(false, SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_lent_state_goes_to_one_borrower_and_back() {
        let desk = Desk::new();
        desk.lend(Box::new(7));
        let state = desk.borrow().expect("lent");
        assert!(desk.borrow().is_none(), "one borrower at a time");
        assert!(!desk.give_back(state), "the reactor did not want it");
        assert_eq!(desk.reclaim().map(|s| *s), Some(7));
        assert!(desk.borrow().is_none(), "the reactor has it");
    }

    #[test]
    fn a_reactor_that_wakes_while_it_is_lent_is_rung_when_it_comes_back() {
        let desk = Desk::new();
        desk.lend(Box::new(1));
        let state = desk.borrow().unwrap();
        assert!(desk.reclaim().is_none(), "a sender has it");
        assert!(desk.give_back(state), "wanted: ring");
        assert!(desk.reclaim().is_some());
        desk.lend(Box::new(2));
        let state = desk.borrow().unwrap();
        assert!(!desk.give_back(state), "a want is answered once");
    }
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    #[test]
    fn the_state_is_never_lost_and_a_reactor_that_wants_it_is_rung() {
        loom::model(|| {
            let desk = Arc::new(Desk::new());
            let rung = Arc::new(AtomicBool::new(false));
            desk.lend(Box::new(1));
            let sender = {
                let (desk, rung) = (desk.clone(), rung.clone());
                loom::thread::spawn(move || {
                    if let Some(state) = desk.borrow() {
                        if desk.give_back(state) {
                            rung.store(true, SeqCst);
                        }
                    }
                })
            };
            let reclaimed = desk.reclaim();
            sender.join().unwrap();
            if reclaimed.is_none() {
                // The reactor sleeps until rung: the sender must have rung, and the state
                // must be back on the desk.
                assert!(rung.load(SeqCst), "a reactor that wants its state is rung");
                assert!(desk.reclaim().is_some(), "the state is on the desk");
            }
        });
    }
}
