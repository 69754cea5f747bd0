//! tollgate's core: 3scale configuration in, APIcast's decisions out.
//!
//! Host-free: no proxy-wasm, no I/O, no clock of its own. The filter, the CLI and the benchmarks
//! are faces over the same pipeline (ARCHITECTURE.md has the map):
//!
//! ```text
//! bytes ─ load() ─▶ FilterConfig ─ compile() ─▶ Compiled ─ decide(&RequestView, now) ─▶ Decision
//! per request: runtime::RequestFlow: host events ─▶ decide ─▶ actions (reply, call, forward)
//! ```

pub mod args;
pub mod backend;
pub mod config;
pub mod credentials;
pub mod diagnostics;
pub mod fault;
pub mod forward;
pub mod index;
pub mod limits;
pub mod load;
pub mod model;
pub mod pairs;
pub mod path;
pub mod percent;
pub mod request;
pub mod rules;
pub mod runtime;
pub mod service;
pub mod threescale;
pub mod time;
pub mod url;

pub use config::location::ErrorKind;
pub use config::FilterConfig;
pub use credentials::Credentials;
pub use diagnostics::{Diagnostic, Diagnostics, Severity};
pub use fault::Fault;
pub use index::{MetricIndex, RuleIndex, ServiceIndex};
pub use load::{load, load_with, LoadOptions, Loaded, SourceFormat};
pub use model::decision::{Decision, DenyReason, Outcome, Reply, Response, Scratch, Verdict};
pub use model::{compile, decision, Compiled, Service};
pub use request::{Headers, RequestView};

#[cfg(test)]
mod tests;
