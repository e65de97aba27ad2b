//! The doorbell: how a mesh's handles tell its reactor that there is work.
//!
//! # Contract
//!
//! - A sender that makes a connection's queue non-empty puts the id on the ready list
//!   ([`Doorbell::schedule`]); a handle that sends a command rings ([`Doorbell::ring`]).
//! - Ringing costs a system call (the mio waker) only when the reactor may be asleep: the
//!   `awake` flag is cleared by the reactor just before it looks for work one last time
//!   and polls with no timeout, and set again when it wakes. A busy reactor costs its
//!   senders nothing but an atomic swap.
//! - Who writes what: handles push ids and ring; the reactor pops ids, and is the only
//!   one to clear `awake` and to set `stopped`.
//!
//! # Implementation notes
//!
//! `awake` is `SeqCst` on both sides: the reactor stores `false` then looks at the ready
//! list and its commands; a handle pushes then swaps `awake`. Each side writes one variable
//! and then reads the other's, which only a single total order keeps from both missing the
//! other (`tests/loom.rs` checks it).

use std::io;
use std::sync::atomic::Ordering::SeqCst;

use mio::{Registry, Token};

use crate::sync::{fence, AtomicBool, SegQueue};

/// What actually wakes a sleeping reactor: mio's waker (a model counts wakes under loom).
pub(crate) trait Wake {
    fn wake(&self) -> io::Result<()>;
}

impl Wake for mio::Waker {
    fn wake(&self) -> io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// The reactor's doorbell, shared by its handles and itself.
#[derive(Debug)]
pub(crate) struct Doorbell<W = mio::Waker> {
    ready: SegQueue<usize>,
    waker: W,
    /// True while the reactor is awake or a wake is on its way.
    awake: AtomicBool,
    /// Set when the reactor thread has ended, for whatever reason.
    stopped: AtomicBool,
}

impl Doorbell {
    /// A doorbell whose waker is registered with `registry` under `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        Ok(Doorbell::with_waker(mio::Waker::new(registry, token)?))
    }
}

impl<W: Wake> Doorbell<W> {
    fn with_waker(waker: W) -> Self {
        Doorbell {
            ready: SegQueue::new(),
            waker,
            // The reactor starts awake: it looks for work before its first sleep.
            awake: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
        }
    }

    /// Puts a connection on the ready list and rings.
    pub(crate) fn schedule(&self, id: usize) -> io::Result<()> {
        self.ready.push(id);
        self.ring()
    }

    /// Puts a connection on the ready list; the caller rings after (once for many).
    pub(crate) fn list(&self, id: usize) {
        self.ready.push(id);
    }

    /// Wakes the reactor unless it is awake already or about to be.
    pub(crate) fn ring(&self) -> io::Result<()> {
        fence(SeqCst);
        if self.awake.swap(true, SeqCst) {
            return Ok(());
        }
        self.waker.wake()
    }

    /// The next id on the ready list (reactor only).
    pub(crate) fn pop_ready(&self) -> Option<usize> {
        self.ready.pop()
    }

    /// Called by the reactor before its last look for work: rings from now on make a wake.
    pub(crate) fn may_sleep(&self) {
        self.awake.store(false, SeqCst);
        fence(SeqCst);
    }

    /// True if an id waits on the ready list.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Called by the reactor when its poll returns.
    pub(crate) fn woke(&self) {
        self.awake.store(true, SeqCst);
    }

    /// Called once, when the reactor thread ends.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, SeqCst);
    }

    /// True once the reactor thread has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use crate::sync::AtomicUsize;
    use loom::sync::Arc;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Arc<Wakes> {
        fn wake(&self) -> io::Result<()> {
            self.0.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_send_while_the_reactor_goes_to_sleep_is_seen_or_wakes_it() {
        loom::model(|| {
            let wakes = Arc::new(Wakes::default());
            let doorbell = Arc::new(Doorbell::with_waker(wakes.clone()));
            let sender = {
                let doorbell = doorbell.clone();
                loom::thread::spawn(move || {
                    doorbell.list(7);
                    doorbell.ring().unwrap();
                })
            };
            // The reactor, out of work: it allows wakes, then looks once more.
            doorbell.may_sleep();
            let sleeps = !doorbell.has_ready();
            sender.join().unwrap();
            if sleeps {
                assert_eq!(wakes.0.load(SeqCst), 1, "a reactor that sleeps is woken");
            }
        });
    }
}
