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

use std::path::PathBuf;

pub use tollgate_testhost::{Call, Host, LogLine, Outcome, Reply, Stream, NO_HEADERS};

pub const CLUSTER: &str = "tollgate_control_service";

/// Every credential and token of the example configurations: none may appear in any log.
pub const SECRETS: &[&str] = &[
    "sendgrid-service-token-8f2c1b7e",
    "sendgrid-provider-key-3a9e",
    "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e",
    "twitter-service-token-51d0c9aa",
    "Shared_secret_sent_from_proxy_to_API_backend_9b7d2e41",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/tollgate.wasm` (or `$TOLLGATE_WASM`); missing is a failure, never a skip.
pub fn wasm() -> PathBuf {
    let path = std::env::var_os("TOLLGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/tollgate.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `make wasm` in the workspace first",
        path.display()
    );
    path
}

pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("examples").join(name)).unwrap()
}

pub fn sendgrid() -> Vec<u8> {
    example("sendgrid.json")
}

pub fn twitter() -> Vec<u8> {
    example("twitter.json")
}

/// The FilterConfig `tollgate generate filter` makes for SendGrid (the CLI's snapshot).
pub fn sendgrid_filter_config() -> Vec<u8> {
    let snap =
        std::fs::read_to_string(workspace().join("cli/tests/snapshots/cli__filter_sendgrid.snap"))
            .unwrap();
    // An insta snapshot: a `---` delimited header, then the JSON.
    let json = snap.splitn(3, "---\n").nth(2).unwrap();
    json.as_bytes().to_vec()
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
        for secret in SECRETS.iter().chain(extra) {
            assert!(
                !line.message.contains(secret),
                "log line leaks {secret:?}: {line}"
            );
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

/// A 3scale mapping rule for `GET pattern` counting `metric`.
pub fn get_rule(pattern: &str, metric: &str) -> String {
    let pattern = pattern.replace('\\', "\\\\");
    format!(
        r#"{{"http_method": "GET", "pattern": "{pattern}", "metric_system_name": "{metric}", "delta": 1}}"#
    )
}
