//! tollgate's CLI as a library: what other crates (the end-to-end tests, the demo) render
//! in-process.

pub mod envoy;
