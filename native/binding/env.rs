//! One waker per JavaScript environment (the main thread, each worker), and what it wakes.
//!
//! # Contract
//!
//! - `registerWaker(fn)` is called once per environment, when the package loads. It makes
//!   the environment's only threadsafe function, weak (it does not keep the event loop
//!   alive), whose calls run `fn` on the JavaScript thread.
//! - Whatever has work for JavaScript (a mesh, the lobby) has a [`Mark`] with a key. It is
//!   woken with [`EnvWaker::wake`]: its key joins the list of woken keys (once, until
//!   JavaScript takes it), and the threadsafe function is called unless a call is pending
//!   already. JavaScript takes the keys (`takeWoken`) and serves only those: a wake never
//!   makes it look at a mesh that has nothing for it.
//! - The pending flag is cleared on the JavaScript thread just before `fn` runs, and a
//!   key's mark is cleared when JavaScript takes it, before it serves it: a wake that comes
//!   meanwhile is never lost.
//! - `keepAlive(true | false)` refs and unrefs the threadsafe function: the package keeps it
//!   ref'd while any mesh is ref'd or anything waits, so the process lives exactly as long
//!   as something can still arrive for it.
//! - When the environment is torn down (a worker exits or is terminated, or the process
//!   exits), everything registered with [`on_teardown`] is stopped: meshes shut down and
//!   their reactor threads joined, the lobby stopped and its thread joined.
//!
//! Only Node-API is used (through napi-rs): no libuv, so the addon runs wherever Node-API
//! does.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

use crossbeam_queue::SegQueue;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

type WakeFunction = ThreadsafeFunction<(), (), (), Status, false, true>;

/// Something that can have work for JavaScript, named by a key.
#[derive(Debug)]
pub(crate) struct Mark {
    pub(crate) key: u32,
    /// On the woken list, not yet taken by JavaScript.
    listed: AtomicBool,
}

/// Wakes one environment's JavaScript thread. Shared with the threads that wake it.
pub(crate) struct EnvWaker {
    function: WakeFunction,
    /// A call of the function is on its way.
    pending: Arc<AtomicBool>,
    woken: SegQueue<Arc<Mark>>,
    next_key: AtomicU32,
}

impl EnvWaker {
    /// A new mark, with a key of its own in this environment.
    pub(crate) fn mark(&self) -> Arc<Mark> {
        Arc::new(Mark {
            key: self.next_key.fetch_add(1, SeqCst),
            listed: AtomicBool::new(false),
        })
    }

    /// Lists `mark` as woken and schedules the wake callback unless one is pending. Safe
    /// from any thread, and after the environment is gone (the call is then refused,
    /// harmlessly).
    pub(crate) fn wake(&self, mark: &Arc<Mark>) {
        if !mark.listed.swap(true, SeqCst) {
            self.woken.push(mark.clone());
        }
        if !self.pending.swap(true, SeqCst) {
            let _ = self
                .function
                .call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// What an environment's binding keeps.
pub(crate) struct EnvState {
    pub(crate) waker: Arc<EnvWaker>,
    teardown: RefCell<Vec<Box<dyn Fn()>>>,
}

impl EnvState {
    fn tear_down(&self) {
        for stop in self.teardown.take() {
            stop();
        }
    }
}

thread_local! {
    /// Node runs one environment per thread, so the thread is the environment.
    static ENV: RefCell<Option<Rc<EnvState>>> = const { RefCell::new(None) };
}

/// The calling environment's state; `registerWaker` must have run.
pub(crate) fn current() -> Result<Rc<EnvState>> {
    ENV.with(|env| env.borrow().clone()).ok_or_else(|| {
        Error::new(
            Status::GenericFailure,
            "wiremesh: the binding was loaded without its package (registerWaker was not called)",
        )
    })
}

/// Runs `stop` when the environment is torn down (it must not keep what it stops alive:
/// hold it weakly).
pub(crate) fn on_teardown(state: &EnvState, stop: Box<dyn Fn()>) {
    state.teardown.borrow_mut().push(stop);
}

/// Makes this environment's waker, which runs `callback` on the JavaScript thread.
#[napi]
pub fn register_waker(env: Env, callback: Function<(), ()>) -> Result<()> {
    let pending = Arc::new(AtomicBool::new(false));
    let cleared = pending.clone();
    let function: WakeFunction = callback
        .build_threadsafe_function::<()>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(move |_| {
            cleared.store(false, SeqCst);
            Ok(())
        })?;
    let state = Rc::new(EnvState {
        waker: Arc::new(EnvWaker {
            function,
            pending,
            woken: SegQueue::new(),
            // Keys count from 1: 0 names nothing.
            next_key: AtomicU32::new(1),
        }),
        teardown: RefCell::new(Vec::new()),
    });
    if let Some(previous) = ENV.with(|env| env.borrow_mut().replace(state)) {
        previous.tear_down();
    }
    env.add_env_cleanup_hook((), |()| {
        if let Some(state) = ENV.with(|env| env.borrow_mut().take()) {
            state.tear_down();
        }
    })?;
    Ok(())
}

/// Takes the keys of what was woken since the last call into `keys` (as many as fit; the
/// rest stay for the next call). Returns how many.
#[napi]
pub fn take_woken(mut keys: Uint32Array) -> Result<u32> {
    let state = current()?;
    // SAFETY: the JavaScript thread is in this call; nothing else touches `keys` meanwhile.
    let keys = unsafe { keys.as_mut() };
    let mut count = 0;
    while count < keys.len() {
        let Some(mark) = state.waker.woken.pop() else {
            break;
        };
        // Cleared before JavaScript serves it: a wake from now on lists it again.
        mark.listed.store(false, SeqCst);
        keys[count] = mark.key;
        count += 1;
    }
    Ok(count as u32)
}

/// Refs (`true`) or unrefs the environment's waker: while ref'd, it keeps the process alive.
#[napi]
pub fn keep_alive(env: Env, on: bool) -> Result<()> {
    let state = current()?;
    let raw = state.waker.function.raw();
    // SAFETY: called on the environment's own thread, with its live threadsafe function.
    let status = unsafe {
        if on {
            napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
        } else {
            napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
        }
    };
    match status {
        napi::sys::Status::napi_ok => Ok(()),
        status => Err(Error::new(
            Status::from(status),
            "wiremesh: could not change the waker's ref",
        )),
    }
}
