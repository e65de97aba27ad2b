//! One waker per JavaScript environment (the main thread, each worker).
//!
//! # Contract
//!
//! - `registerWaker(fn)` is called once per environment, when `index.js` loads. It makes
//!   the environment's only threadsafe function, weak (it does not keep the event loop
//!   alive), whose calls run `fn` on the JavaScript thread.
//! - A reactor wakes the environment with [`EnvWaker::wake`]: the threadsafe function is
//!   called only if no call is pending already (an atomic flag, cleared on the JavaScript
//!   thread just before `fn` runs, so a wake that comes while `fn` drains is never lost).
//! - `keepAlive(true | false)` refs and unrefs that function: `index.js` keeps it ref'd
//!   while any mesh is ref'd or any receive waits, so the process lives exactly as long
//!   as something can still arrive for it.
//! - When the environment is torn down (a worker exits or is terminated), every mesh it
//!   made is shut down and its reactor thread joined, and every listener is closed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use wiremesh_core::WeakMesh;

use crate::transport::ListenerShared;

type WakeFunction = ThreadsafeFunction<(), (), (), Status, false, true>;

/// Wakes one environment's JavaScript thread.
pub(crate) struct EnvWaker {
    function: WakeFunction,
    pending: Arc<AtomicBool>,
}

impl EnvWaker {
    /// Schedules the wake callback unless one is pending already. Safe from any thread,
    /// and after the environment is gone (the call is then refused, harmlessly).
    pub(crate) fn wake(&self) {
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
    meshes: RefCell<Vec<WeakMesh>>,
    listeners: RefCell<Vec<Weak<ListenerShared>>>,
}

impl EnvState {
    fn tear_down(&self) {
        for mesh in self.meshes.borrow_mut().drain(..) {
            mesh.shutdown();
        }
        for listener in self.listeners.borrow_mut().drain(..) {
            if let Some(listener) = listener.upgrade() {
                listener.close();
            }
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
            "wiremesh: the binding was loaded without index.js (registerWaker was not called)",
        )
    })
}

/// Remembers a mesh so that the environment's teardown shuts it down.
pub(crate) fn track_mesh(state: &EnvState, mesh: WeakMesh) {
    let mut meshes = state.meshes.borrow_mut();
    meshes.retain(WeakMesh::is_alive);
    meshes.push(mesh);
}

/// Remembers a listener so that the environment's teardown closes it.
pub(crate) fn track_listener(state: &EnvState, listener: Weak<ListenerShared>) {
    let mut listeners = state.listeners.borrow_mut();
    listeners.retain(|listener| listener.strong_count() > 0);
    listeners.push(listener);
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
        waker: Arc::new(EnvWaker { function, pending }),
        meshes: RefCell::new(Vec::new()),
        listeners: RefCell::new(Vec::new()),
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
