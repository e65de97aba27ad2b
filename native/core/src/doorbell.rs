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
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};

use crossbeam_queue::SegQueue;
use mio::{Registry, Token, Waker};

/// The reactor's doorbell, shared by its handles and itself.
#[derive(Debug)]
pub(crate) struct Doorbell {
    ready: SegQueue<usize>,
    waker: Waker,
    /// True while the reactor is awake or a wake is on its way.
    awake: AtomicBool,
    /// Set when the reactor thread has ended, for whatever reason.
    stopped: AtomicBool,
}

impl Doorbell {
    /// A doorbell whose waker is registered with `registry` under `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        Ok(Doorbell {
            ready: SegQueue::new(),
            waker: Waker::new(registry, token)?,
            // The reactor starts awake: it looks for work before its first sleep.
            awake: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
        })
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
