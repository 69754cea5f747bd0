//! What a local limiter costs the core: `cargo bench --bench limits`.
//!
//! Times the request flow's headers event for one authorized request (decision, limits, the
//! authrep call built) on a service without limiters, with one limiter that admits, and with
//! one that refuses, against the in-memory shared store of `runtime::fakes` (a hash map; in
//! Envoy the store is a mutex-guarded map behind two host calls, which `make bench`'s Envoy
//! figures include). The difference is the limiter's check: key, slot, get, arithmetic, CAS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use serde_json::json;
use tollgate::pairs::{self, HeaderMap};
use tollgate::runtime::fakes::FakeHost;
use tollgate::runtime::{Action, RequestFlow, Runtime, Workspace};

fn runtime(limiters: serde_json::Value) -> Runtime {
    let doc = json!({"services": [{
        "id": 7, "backend_version": 1,
        "backend_authentication_type": "service_token", "backend_authentication_value": "t",
        "proxy": {"api_backend": "http://127.0.0.1:1", "hosts": ["api.example.com"],
            "backend": {"endpoint": "http://127.0.0.1:2"},
            "proxy_rules": [{"http_method": "GET", "pattern": "/v1", "metric_system_name": "hits", "delta": 1}]}
    }]});
    let mut config = tollgate::load(doc.to_string().as_bytes()).config.unwrap();
    config.services[0].limiters = serde_json::from_value(limiters).unwrap();
    let loaded = tollgate::load(config.to_json_pretty().as_bytes());
    Runtime::new(loaded.compiled.unwrap(), None)
}

fn headers() -> HeaderMap {
    let mut bytes = Vec::new();
    pairs::encode(
        [
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/v1?user_key=bench-key"),
            (b":authority", b"api.example.com"),
        ]
        .into_iter(),
        &mut bytes,
    );
    HeaderMap::parse(bytes).unwrap()
}

/// Median ns per headers event over 7 runs of `n` requests; checks what each request got.
fn time(rt: &Runtime, n: u32, expect_call: bool) -> f64 {
    let host = FakeHost::default();
    let mut ws = Workspace::new();
    let h = headers();
    let mut samples = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..n {
            let mut flow = RequestFlow::new();
            let action = flow.on_request_headers(rt, &mut ws, h.clone(), true, host.effects());
            assert_eq!(matches!(action, Action::Call(_)), expect_call, "{action:?}");
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    samples.sort_by(f64::total_cmp);
    samples[3]
}

fn main() {
    let n = 200_000;
    let none = time(&runtime(json!([])), n, true);
    let admits = time(
        &runtime(
            json!([{"name": "wide", "counts": "requests", "key": "application",
            "token_bucket": {"rate": 1_000_000_000, "per": "second", "burst": 1_000_000_000}}]),
        ),
        n,
        true,
    );
    let refusing = runtime(
        json!([{"name": "shut", "counts": "requests", "key": "application",
        "fixed_window": {"count": 0, "window_seconds": 3600}}]),
    );
    let refuses = time(&refusing, n, false);
    println!("request flow, headers event, median of 7 x {n} requests (in-memory store):");
    println!("  no limiter                  {none:>7.0} ns/request");
    println!(
        "  one limiter, admitted       {admits:>7.0} ns/request  -> {:.0} ns per check",
        admits - none
    );
    println!("  one limiter, limited (429)  {refuses:>7.0} ns/request");
}
