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
//!   made is shut down and its reactor thread joined, every listener is closed, and every
//!   poll of a lent connection ([`crate::lend`]) is closed; the teardown is an async
//!   cleanup hook, so Node closes the loop only after those polls' close callbacks.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use wiremesh_core::WeakMesh;

use crate::lend::{self, Lender};
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
    /// The wake callback, for [`EnvState::wake_now`] (lent reads: Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    direct: DirectCall,
    /// The environment's libuv loop, where lent connections are polled.
    pub(crate) uv_loop: *mut std::ffi::c_void,
    meshes: RefCell<Vec<WeakMesh>>,
    listeners: RefCell<Vec<Weak<ListenerShared>>>,
    lenders: RefCell<Vec<std::rc::Weak<Lender>>>,
}

/// What calling the wake callback from a libuv callback takes (see [`EnvState::wake_now`]).
struct DirectCall {
    env: napi::sys::napi_env,
    callback: napi::sys::napi_ref,
    context: napi::sys::napi_async_context,
}

impl EnvState {
    /// Runs the wake callback now, from a libuv callback on the environment's thread (not
    /// from inside JavaScript): as a threadsafe call would, with the microtasks it queues
    /// run after it, but without a trip through the loop. An exception it throws is
    /// reported as uncaught, as a threadsafe call's would be.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn wake_now(&self) {
        use napi::sys;
        let DirectCall {
            env,
            callback,
            context,
        } = self.direct;
        // SAFETY: on the environment's thread, outside any JavaScript frame; the reference
        // and the context live as long as the environment.
        unsafe {
            let mut scope = std::ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return self.waker.wake();
            }
            let mut function = std::ptr::null_mut();
            let mut global = std::ptr::null_mut();
            let mut result = std::ptr::null_mut();
            let status = match (
                sys::napi_get_reference_value(env, callback, &mut function),
                sys::napi_get_global(env, &mut global),
            ) {
                (sys::Status::napi_ok, sys::Status::napi_ok) if !function.is_null() => {
                    sys::napi_make_callback(
                        env,
                        context,
                        global,
                        function,
                        0,
                        std::ptr::null(),
                        &mut result,
                    )
                }
                _ => sys::Status::napi_generic_failure,
            };
            if status == sys::Status::napi_pending_exception {
                let mut error = std::ptr::null_mut();
                if sys::napi_get_and_clear_last_exception(env, &mut error) == sys::Status::napi_ok {
                    sys::napi_fatal_exception(env, error);
                }
            } else if status != sys::Status::napi_ok {
                self.waker.wake();
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }

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

/// Remembers a mesh's lender so that the environment's teardown closes its poll.
pub(crate) fn track_lender(state: &EnvState, lender: &Rc<Lender>) {
    let mut lenders = state.lenders.borrow_mut();
    lenders.retain(|lender| lender.strong_count() > 0);
    lenders.push(Rc::downgrade(lender));
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
    let callback_value = callback.raw();
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
        direct: direct_call(&env, callback_value)?,
        uv_loop: env.get_uv_event_loop()?.cast(),
        meshes: RefCell::new(Vec::new()),
        listeners: RefCell::new(Vec::new()),
        lenders: RefCell::new(Vec::new()),
    });
    if let Some(previous) = ENV.with(|env| env.borrow_mut().replace(state)) {
        previous.tear_down();
        lend::close_all(previous.lenders.take(), Box::new(|| {}));
    }
    let mut hook = std::ptr::null_mut();
    // SAFETY: a plain registration; `teardown` runs on this thread when the environment
    // ends, and removes the hook once the polls it closes are closed.
    let status = unsafe {
        napi::sys::napi_add_async_cleanup_hook(
            env.raw(),
            Some(teardown),
            std::ptr::null_mut(),
            &mut hook,
        )
    };
    match status {
        napi::sys::Status::napi_ok => Ok(()),
        status => Err(Error::new(
            Status::from(status),
            "wiremesh: could not register the environment's teardown",
        )),
    }
}

/// A reference to the wake callback and an async context to call it in.
fn direct_call(env: &Env, callback: napi::sys::napi_value) -> Result<DirectCall> {
    use napi::sys;
    let raw = env.raw();
    let mut direct = DirectCall {
        env: raw,
        callback: std::ptr::null_mut(),
        context: std::ptr::null_mut(),
    };
    let name = "wiremesh";
    let (mut resource, mut resource_name) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain napi calls on the environment's thread, inside a napi call.
    let statuses = unsafe {
        [
            sys::napi_create_reference(raw, callback, 1, &mut direct.callback),
            sys::napi_create_object(raw, &mut resource),
            sys::napi_create_string_utf8(
                raw,
                name.as_ptr().cast(),
                name.len() as isize,
                &mut resource_name,
            ),
            sys::napi_async_init(raw, resource, resource_name, &mut direct.context),
        ]
    };
    match statuses
        .into_iter()
        .find(|status| *status != sys::Status::napi_ok)
    {
        None => Ok(direct),
        Some(status) => Err(Error::new(
            Status::from(status),
            "wiremesh: could not keep the wake callback",
        )),
    }
}

/// The environment ends: shut its meshes down, close its listeners and its polls; Node
/// goes on once the hook is removed, after the last poll's close callback.
unsafe extern "C" fn teardown(
    hook: napi::sys::napi_async_cleanup_hook_handle,
    _: *mut std::ffi::c_void,
) {
    let lenders = match ENV.with(|env| env.borrow_mut().take()) {
        Some(state) => {
            state.tear_down();
            state.lenders.take()
        }
        None => Vec::new(),
    };
    lend::close_all(
        lenders,
        Box::new(move || {
            // SAFETY: the handle this hook was registered with, removed once.
            unsafe { napi::sys::napi_remove_async_cleanup_hook(hook) };
        }),
    );
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
