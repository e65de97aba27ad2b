//! The napi binding of wiremesh: the core's mesh, transports and connections, shaped for
//! the hand-written `index.ts`, which adds the public API, the typed errors and the
//! promises. Nothing here knows the public contract's error classes; everything here is
//! thin over `wiremesh-core`.
//!
//! - `env`: the one waker per JavaScript environment, and the environment's teardown.
//! - `lend`: lent reads, the connection a receive waits on polled and read on the
//!   JavaScript thread.
//! - `mesh`: the mesh handle, batched receiving, disconnect notices.
//! - `transport`: transports, listeners and connections before they join a mesh.

// The #[napi] exports are registered for Node, not called from Rust: a test build sees
// them as unused.
#![cfg_attr(test, allow(dead_code))]

mod env;
mod lend;
mod mesh;
mod transport;
