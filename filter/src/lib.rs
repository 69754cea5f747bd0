//! tollgate as a proxy-wasm filter (`tollgate.wasm`): a thin binding of the core's request flow
//! ([`tollgate::runtime`]) to the proxy-wasm ABI.
//!
//! - [`host`]: the ABI edge, every host call, every status an error;
//! - [`exports`]: the callbacks the host calls, and the context table;
//! - [`root`]: the root context (configuration);
//! - [`stream`]: one HTTP stream, moving bytes between the host and the flow;
//! - [`effects`]: the core's seams (clock, log, counters) over host calls;
//! - [`alloc`]: the counted allocator.
//!
//! Never panic (a panic traps the VM and Envoy then fails requests): the module does not link
//! the proxy-wasm SDK, whose wrappers panic on statuses they do not expect. Credentials and
//! tokens are never logged.

#![deny(unsafe_code)]

mod alloc;
mod effects;
mod exports;
mod host;
mod root;
mod stream;
