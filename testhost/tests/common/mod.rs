//! What the host's own tests share: the probe filter (testhost/probe) in a host like Envoy's.
// Test code: unwrap/panic are how tests fail; each test binary uses its own subset.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

use tollgate_testhost::{Builder, Host, Outcome, Reply, Stream};

/// The probe with plugin configuration `config`, on main + 2 workers, knowing cluster `ctl`.
pub fn builder(config: &str) -> Builder {
    Host::builder(tollgate_testsupport::probe_wasm().unwrap())
        .plugin_config(config)
        .vm_config("vmcfg")
        .cluster("ctl")
        .workers(2)
}

pub fn host(config: &str) -> Host {
    builder(config).build().unwrap()
}

pub fn get<'h>(host: &'h Host, worker: usize, path: &str) -> Stream<'h> {
    host.worker(worker).request(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "probe.example"),
    ])
}

pub fn reply(s: &Stream<'_>) -> Reply {
    match s.outcome() {
        Outcome::LocalReply(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}
