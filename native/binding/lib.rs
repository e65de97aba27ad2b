//! The napi binding of wiremesh: the core's mesh, transports and connections, shaped for
//! the package's hand-written TypeScript, which adds the public API, the typed errors and
//! the promises. Nothing here knows the public contract's error classes; everything here
//! is thin over `wiremesh-core`. The modules point one way:
//!
//! - `env`: the one waker per JavaScript environment, what it wakes, and the
//!   environment's teardown.
//! - `transport`: transports, listeners and connections outside a mesh, driven by the
//!   environment's lobby (uses `env`).
//! - `handover`: what a mesh received, on its way to JavaScript.
//! - `mesh`: the mesh handle and its per-message calls (uses the three above).

// The #[napi] exports are registered for Node, not called from Rust: a test build sees
// them as unused.
#![cfg_attr(test, allow(dead_code))]

mod env;
mod handover;
mod mesh;
mod transport;
