//! The atomics and lock-free queues of the hand-written protocols (the desk, the doorbell,
//! the outgoing queue, the incoming stream's counters): std's and crossbeam's, or, when
//! built with `--cfg loom`, loom's models of them, so that the model checks
//! (`loom` modules of those files; run by `npm test` through `cargo test` with
//! `RUSTFLAGS="--cfg loom"`) explore every interleaving of the real code.
//!
//! Under loom the queues are small models: a `VecDeque` behind a spin flag, whose spin
//! yields to loom's scheduler. They stand for crossbeam's queues, which are linearizable:
//! what is checked is the protocol around them, not the queues themselves.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use crossbeam_queue::{ArrayQueue, SegQueue};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize};

#[cfg(loom)]
pub(crate) use model::{ArrayQueue, SegQueue};

#[cfg(loom)]
mod model {
    use std::collections::VecDeque;

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::SeqCst;

    /// A linearizable queue for loom: every operation holds a spin flag.
    #[derive(Debug)]
    struct Guarded<T> {
        busy: AtomicBool,
        items: UnsafeCell<VecDeque<T>>,
    }

    // SAFETY: the items are reached only through `with`, one thread at a time.
    unsafe impl<T: Send> Sync for Guarded<T> {}

    impl<T> Guarded<T> {
        fn new() -> Self {
            Guarded {
                busy: AtomicBool::new(false),
                items: UnsafeCell::new(VecDeque::new()),
            }
        }

        fn with<R>(&self, f: impl FnOnce(&mut VecDeque<T>) -> R) -> R {
            while self
                .busy
                .compare_exchange(false, true, SeqCst, SeqCst)
                .is_err()
            {
                loom::thread::yield_now();
            }
            // SAFETY: the flag gives one thread at a time the items.
            let result = self.items.with_mut(|items| f(unsafe { &mut *items }));
            self.busy.store(false, SeqCst);
            result
        }
    }

    /// Stands for `crossbeam_queue::SegQueue`.
    #[derive(Debug)]
    pub(crate) struct SegQueue<T>(Guarded<T>);

    impl<T> SegQueue<T> {
        pub(crate) fn new() -> Self {
            SegQueue(Guarded::new())
        }

        pub(crate) fn push(&self, value: T) {
            self.0.with(|items| items.push_back(value));
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.with(VecDeque::pop_front)
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.0.with(|items| items.is_empty())
        }
    }

    /// Stands for `crossbeam_queue::ArrayQueue`.
    #[derive(Debug)]
    pub(crate) struct ArrayQueue<T>(Guarded<T>, usize);

    impl<T> ArrayQueue<T> {
        pub(crate) fn new(capacity: usize) -> Self {
            ArrayQueue(Guarded::new(), capacity)
        }

        pub(crate) fn push(&self, value: T) -> Result<(), T> {
            let capacity = self.1;
            self.0.with(|items| match items.len() < capacity {
                true => {
                    items.push_back(value);
                    Ok(())
                }
                false => Err(value),
            })
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.with(VecDeque::pop_front)
        }
    }
}
