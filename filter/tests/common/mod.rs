//! Shared helpers for the filter's tests: they run the real `target/tollgate.wasm` in the
//! wasmtime test host.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    unused_imports
)]

pub use tollgate_testhost::{Call, Host, LogLine, Outcome, Reply, Stream, NO_HEADERS};
pub use tollgate_testsupport::SECRETS;

pub const CLUSTER: &str = "tollgate_control_service";

/// `target/tollgate.wasm` (or `$TOLLGATE_WASM`); missing is a failure, never a skip.
pub fn wasm() -> std::path::PathBuf {
    tollgate_testsupport::tollgate_wasm().unwrap()
}

pub fn sendgrid() -> Vec<u8> {
    tollgate_testsupport::read(&tollgate_testsupport::example("sendgrid.json")).unwrap()
}

pub fn twitter() -> Vec<u8> {
    tollgate_testsupport::read(&tollgate_testsupport::example("twitter.json")).unwrap()
}

/// The FilterConfig `tollgate generate filter` makes for SendGrid, checked in (the CLI's
/// tests keep it current with `generate filter --check`).
pub fn sendgrid_filter_config() -> Vec<u8> {
    tollgate_testsupport::read(&tollgate_testsupport::testdata("sendgrid.filter.json")).unwrap()
}

/// A host running `config` on main + 2 workers, knowing the control service's cluster.
pub fn host(config: Vec<u8>) -> Host {
    Host::builder(wasm())
        .plugin_config(config)
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap_or_else(|e| panic!("the filter did not configure: {e}"))
}

/// The checks every test ends with: no trap, and no secret (nor `extra` credential) in any
/// log line at any level.
pub fn check(host: &Host, extra: &[&str]) {
    assert!(
        host.traps().is_empty(),
        "the VM trapped: {:#?}",
        host.traps()
    );
    for line in host.logs() {
        if let Some(secret) = tollgate_testsupport::leaked(&line.message, extra) {
            panic!("log line leaks {secret:?}: {line}");
        }
    }
}

pub fn get<'h>(host: &'h Host, worker: usize, authority: &str, path: &str) -> Stream<'h> {
    host.worker(worker).request(&[
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        (":scheme", "https"),
    ])
}

/// The one callout the stream is waiting on.
pub fn only_call<'h>(stream: &Stream<'h>) -> Call<'h> {
    assert_eq!(
        stream.outcome(),
        Outcome::Paused,
        "the filter did not wait for a call"
    );
    let mut calls = stream.pending_calls();
    assert_eq!(calls.len(), 1, "expected one callout: {calls:?}");
    calls.remove(0)
}

pub fn local_reply(stream: &Stream<'_>) -> Reply {
    match stream.outcome() {
        Outcome::LocalReply(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

/// SendGrid's configuration with `rules` (3scale JSON objects, comma-separated) before its own.
pub fn sendgrid_with_rules(rules: &str) -> Vec<u8> {
    let config = String::from_utf8(sendgrid()).unwrap();
    assert!(config.contains("\"proxy_rules\": ["));
    config
        .replacen(
            "\"proxy_rules\": [",
            &format!("\"proxy_rules\": [{rules},"),
            1,
        )
        .into_bytes()
}

/// A 3scale mapping rule for `GET pattern` counting `metric`, as JSON text.
pub fn get_rule(pattern: &str, metric: &str) -> String {
    tollgate_testsupport::threescale::rule("GET", pattern, metric).to_string()
}
