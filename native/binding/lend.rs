//! Lent reads: the JavaScript thread reads the connection it waits on itself.
//!
//! # Contract
//!
//! - When a receive starts to wait (`armRecv` finds nothing queued) right after a
//!   conversation with one peer (the last two receives took envelopes from one connection
//!   only, and the last one-connection batch went to it), that connection is lent to the
//!   JavaScript thread ([`Mesh::lend_reads`]): libuv polls a duplicate of its socket, and
//!   when it is readable the poll callback reads it ([`LentReads::read`]) and runs the
//!   environment's wake callback at once. A reply to a request then wakes one thread, as
//!   it would with `net`, not the reactor first and JavaScript after it. A server that
//!   answers many peers in turn lends nothing (each lend costs a few system calls: it
//!   would pay them on every request).
//! - Only one connection per mesh is lent at a time; it stays lent while receives keep
//!   waiting. It is given back when another connection qualifies, when the socket is
//!   readable but no receive waits (what arrives then is the reactor's to buffer), when
//!   the mesh shuts down, when its handles are collected, and when the environment is torn
//!   down. The reactor takes it back by itself when the
//!   connection closes; the next poll callback or wait notices and stops polling.
//! - libuv polls a duplicate of the socket, closed only in the handle's close callback,
//!   so a socket number the reactor closes and the system reuses is never watched or
//!   unwatched by mistake. Every poll handle is closed before the environment's loop is:
//!   teardown waits for their close callbacks through an async cleanup hook.
//! - Unix only (elsewhere `Lender` does nothing and the reactor reads everything).
//!
//! [`Mesh::lend_reads`]: wiremesh_core::Mesh::lend_reads
//! [`LentReads::read`]: wiremesh_core::LentReads::read

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use wiremesh_core::{Incoming, Mesh};

use crate::env::EnvWaker;

/// What a mesh's JavaScript handles share: the connection they last sent to, and the
/// poll of the one lent, if any.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Lender {
    mesh: Mesh,
    /// The mesh's receive side, kept so a poll callback asks whether a receive waits
    /// without making a handle each time.
    incoming: Incoming,
    waker: Arc<EnvWaker>,
    /// The connection of the last one-connection batch (0: none).
    last_sent: Cell<usize>,
    /// The connection the last receives took from, and how many receives in a row took
    /// envelopes from it alone.
    streak: Cell<(usize, u32)>,
    #[cfg(unix)]
    poll: Cell<*mut imp::Poll>,
    #[cfg(unix)]
    uv_loop: *mut std::ffi::c_void,
}

impl Lender {
    pub(crate) fn new(
        mesh: Mesh,
        waker: Arc<EnvWaker>,
        uv_loop: *mut std::ffi::c_void,
    ) -> Rc<Self> {
        #[cfg(not(unix))]
        let _ = uv_loop;
        Rc::new(Lender {
            incoming: mesh.incoming(),
            mesh,
            waker,
            last_sent: Cell::new(0),
            streak: Cell::new((0, 0)),
            #[cfg(unix)]
            poll: Cell::new(std::ptr::null_mut()),
            #[cfg(unix)]
            uv_loop,
        })
    }

    /// A one-connection batch went to `id`.
    pub(crate) fn sent(&self, id: usize) {
        self.last_sent.set(id);
    }

    /// A receive took envelopes: from connection `from` only, or (`None`) from several.
    pub(crate) fn received(&self, from: Option<usize>) {
        let (id, count) = self.streak.get();
        self.streak.set(match from {
            Some(from) if from == id => (id, count.saturating_add(1)),
            Some(from) => (from, 1),
            None => (0, 0),
        });
    }

    /// A receive waits (the incoming queue is armed): lend the connection of a one-peer
    /// conversation, if there is one.
    pub(crate) fn waiting(self: &Rc<Self>) {
        let (id, count) = self.streak.get();
        if count >= 2 && id == self.last_sent.get() {
            #[cfg(unix)]
            imp::lend(self, id);
        }
    }

    /// Gives back whatever is lent.
    pub(crate) fn stop(&self) {
        #[cfg(unix)]
        imp::stop(self);
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closes the poll of every lender still alive (environment teardown); `done` runs once
/// every close callback has.
pub(crate) fn close_all(lenders: Vec<std::rc::Weak<Lender>>, done: Box<dyn FnOnce()>) {
    for lender in lenders.into_iter().filter_map(|lender| lender.upgrade()) {
        lender.stop();
    }
    #[cfg(unix)]
    imp::when_all_closed(done);
    #[cfg(not(unix))]
    done();
}

#[cfg(unix)]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::ffi::{c_int, c_void};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::rc::{Rc, Weak};

    use wiremesh_core::{Lent, LentReads};

    use super::Lender;

    /// `UV_POLL` in `uv_handle_type`, and `UV_READABLE` in `uv_poll_event`: stable libuv ABI.
    const UV_POLL: c_int = 8;
    const UV_READABLE: c_int = 1;

    type PollCallback = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
    type CloseCallback = unsafe extern "C" fn(handle: *mut c_void);

    // libuv, as the Node process exports it to addons.
    extern "C" {
        fn uv_handle_size(kind: c_int) -> usize;
        fn uv_poll_init(uv_loop: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
        fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCallback) -> c_int;
        fn uv_close(handle: *mut c_void, cb: CloseCallback);
        fn uv_unref(handle: *mut c_void);
        fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
        fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
    }

    /// One poll of a lent connection's socket: on the heap from `uv_poll_init` until the
    /// handle's close callback frees it.
    pub(crate) struct Poll {
        /// The `uv_poll_t`, as libuv sizes it (8-byte aligned).
        handle: Box<[u64]>,
        /// Taken (given back) when the poll stops.
        reads: Option<LentReads>,
        /// The duplicate libuv polls; closed with the handle.
        _socket: OwnedFd,
        lender: Weak<Lender>,
    }

    thread_local! {
        /// Poll handles initialised and not yet closed on this thread (its environment).
        static OPEN: Cell<usize> = const { Cell::new(0) };
        /// Run when `OPEN` reaches zero (teardown waits for it).
        static ON_ALL_CLOSED: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    pub(super) fn lend(lender: &Rc<Lender>, id: usize) {
        let current = lender.poll.get();
        if !current.is_null() {
            // SAFETY: a non-null `poll` is a live Poll this lender started (stop nulls it
            // before closing); this thread is the only one that touches it.
            let reads = unsafe { (*current).reads.as_ref() };
            if reads.is_some_and(|reads| reads.id() == id && reads.is_lent()) {
                return;
            }
            stop(lender);
        }
        if id == 0 {
            return;
        }
        let Some(reads) = lender.mesh.lend_reads(id) else {
            return;
        };
        let Ok(socket) = reads.duplicate_socket() else {
            return;
        };
        // SAFETY: uv_handle_size is a pure libuv query.
        let size = unsafe { uv_handle_size(UV_POLL) };
        let fd = socket.as_raw_fd();
        let poll = Box::into_raw(Box::new(Poll {
            handle: vec![0u64; size.div_ceil(8)].into_boxed_slice(),
            reads: Some(reads),
            _socket: socket,
            lender: Rc::downgrade(lender),
        }));
        // SAFETY: `poll` was just leaked and is freed only by `closed`; its handle memory is
        // as large as libuv asks and lives as long. The loop is this environment's.
        unsafe {
            let handle = (*poll).handle.as_mut_ptr().cast::<c_void>();
            if uv_poll_init(lender.uv_loop, handle, fd) != 0 {
                drop(Box::from_raw(poll));
                return;
            }
            OPEN.with(|open| open.set(open.get() + 1));
            uv_handle_set_data(handle, poll.cast());
            // The poll never keeps the process alive: waiting receives do (keepAlive).
            uv_unref(handle);
            lender.poll.set(poll);
            if uv_poll_start(handle, UV_READABLE, readable) != 0 {
                stop(lender);
            }
        }
    }

    pub(super) fn stop(lender: &Lender) {
        let poll = lender.poll.replace(std::ptr::null_mut());
        if poll.is_null() {
            return;
        }
        // SAFETY: `poll` was live (see `lend`); closing hands it to libuv until `closed`.
        unsafe {
            (*poll).reads = None;
            uv_close((*poll).handle.as_mut_ptr().cast(), closed);
        }
    }

    /// The lent socket is readable (or in error, which its read reports).
    unsafe extern "C" fn readable(handle: *mut c_void, _status: c_int, _events: c_int) {
        // SAFETY: the data is the Poll, live until `closed`, which comes after this; it is
        // reached through the raw pointer only, since `stop` changes it.
        unsafe {
            let poll = uv_handle_get_data(handle).cast::<Poll>();
            let Some(lender) = (*poll).lender.upgrade() else {
                return;
            };
            if (*poll).reads.is_none() {
                return;
            }
            if !lender.incoming.is_armed() {
                // No receive waits: the reactor buffers what comes now.
                return stop(&lender);
            }
            let lent = (*poll).reads.as_mut().expect("checked above").read();
            match lent {
                Lent::Yes(0) => {}
                // The receive that waits runs now, in this callback.
                Lent::Yes(_) => wake_now(&lender),
                Lent::No => {
                    stop(&lender);
                    // Taken back or ended: what ends it comes as a notice, through the waker.
                    lender.waker.wake();
                }
            }
        }
    }

    /// Runs the environment's wake callback now (or through its waker if the environment
    /// is going).
    fn wake_now(lender: &Lender) {
        match crate::env::current() {
            Ok(state) => state.wake_now(),
            Err(_) => lender.waker.wake(),
        }
    }

    unsafe extern "C" fn closed(handle: *mut c_void) {
        // SAFETY: leaked in `lend`; this is the handle's last callback.
        drop(unsafe { Box::from_raw(uv_handle_get_data(handle).cast::<Poll>()) });
        let left = OPEN.with(|open| {
            open.set(open.get() - 1);
            open.get()
        });
        if left == 0 {
            if let Some(done) = ON_ALL_CLOSED.with(|slot| slot.borrow_mut().take()) {
                done();
            }
        }
    }

    pub(super) fn when_all_closed(done: Box<dyn FnOnce()>) {
        if OPEN.with(Cell::get) == 0 {
            done();
        } else {
            ON_ALL_CLOSED.with(|slot| *slot.borrow_mut() = Some(done));
        }
    }
}
