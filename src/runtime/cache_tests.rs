//! The authorization cache in the flow: what clients get and which calls go out, with
//! workers (one `Workspace` each) sharing one fake store and clock.

use serde_json::json;

use super::fakes::FakeHost;
use super::outbox::{Outgoing, Ticket};
use super::seams::CacheEvent;
use super::*;
use crate::config::{CacheMode, FilterConfig};
use crate::load;
use crate::pairs;
use crate::time::Timestamp;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn runtime(tweak: impl FnOnce(&mut crate::config::ServiceConfig)) -> Runtime {
    let doc = json!({"services": [{
        "id": 7, "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "svc-token",
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": ["api.example.com"],
            "backend": {"endpoint": "http://control.internal:3000"},
            "secret_token": "upstream-secret",
            "proxy_rules": [
                {"http_method": "GET", "pattern": "/v1", "metric_system_name": "hits", "delta": 1}
            ]
        }
    }]});
    let loaded = load(doc.to_string().as_bytes());
    let mut config: FilterConfig = loaded.config.unwrap();
    tweak(&mut config.services[0]);
    let loaded = load(serde_json::to_string(&config).unwrap().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    Runtime::new(loaded.compiled.unwrap(), None)
}

fn host() -> FakeHost {
    FakeHost {
        clock: super::fakes::FakeClock::at(Timestamp::from_nanos(1_700_000_000_000_000_000)),
        ..FakeHost::default()
    }
}

fn request(user: &str) -> HeaderMap {
    let path = format!("/v1?user_key={user}");
    let h = [
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", "api.example.com"),
    ];
    let mut bytes = Vec::new();
    pairs::encode(
        h.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut bytes,
    );
    HeaderMap::parse(bytes).unwrap()
}

fn answer(status: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = vec![(":status", status)];
    h.extend_from_slice(extra);
    let mut bytes = Vec::new();
    pairs::encode(
        h.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut bytes,
    );
    HeaderMap::parse(bytes).unwrap()
}

/// What the client saw (or is waiting for).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Upstream,
    Reply(u16, Option<u64>),
    Waiting(FlightKey),
    /// Its own call (no cache).
    Calling(String),
}

fn seen(action: Action<'_>) -> Seen {
    match action {
        Action::Forward(_) => Seen::Upstream,
        Action::Reply(r) => Seen::Reply(r.response.status, r.retry_after),
        Action::Join(k) => Seen::Waiting(k),
        Action::Call(c) => Seen::Calling(c.path.to_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

fn send(rt: &Runtime, host: &FakeHost, ws: &mut Workspace, user: &str) -> (RequestFlow, Seen) {
    let mut flow = RequestFlow::new();
    let s = seen(flow.on_request_headers(rt, ws, request(user), true, host.effects()));
    (flow, s)
}

fn outgoing(ws: &mut Workspace) -> Vec<Outgoing> {
    ws.take_outgoing().collect()
}

/// Answers one worker call; returns what its waiting requests are told.
fn land(
    rt: &Runtime,
    host: &FakeHost,
    ws: &mut Workspace,
    out: Outgoing,
    a: Option<HeaderMap>,
) -> Option<FlightOutcome> {
    on_outgoing_answer(rt, ws, out.ticket, a.as_ref(), host.effects())
}

/// A miss for `user` on `ws`, answered with `a`: what the client got.
fn miss(
    rt: &Runtime,
    host: &FakeHost,
    ws: &mut Workspace,
    user: &str,
    a: Option<HeaderMap>,
) -> Seen {
    let (mut flow, s) = send(rt, host, ws, user);
    assert!(matches!(s, Seen::Waiting(_)), "{s:?}");
    // The key's call; other calls (reports) stay queued.
    let (mut flights, others): (Vec<_>, Vec<_>) = outgoing(ws)
        .into_iter()
        .partition(|o| matches!(o.ticket, Ticket::Flight(_)));
    ws.worker.outbox.extend(others);
    assert_eq!(flights.len(), 1, "{flights:?}");
    let call = flights.remove(0);
    assert!(
        call.path.starts_with("/transactions/authrep.xml?"),
        "{}",
        call.path
    );
    assert!(call.path.contains(&format!("user_key={user}")));
    let outcome = land(rt, host, ws, call, a).expect("the key's call lands");
    seen(flow.on_flight_answer(rt, ws, &outcome, host.effects()))
}

fn ok() -> Option<HeaderMap> {
    Some(answer("200", &[]))
}

fn reports(out: &[Outgoing]) -> Vec<&str> {
    out.iter()
        .filter(|o| matches!(o.ticket, Ticket::Report(_)))
        .map(|o| o.path.as_str())
        .collect()
}

#[test]
fn a_miss_waits_and_reports_once_then_every_worker_hits_with_a_report_afterwards() {
    let rt = runtime(|_| {});
    let host = host();
    let (mut w0, mut w1) = (Workspace::new(), Workspace::new());
    assert_eq!(miss(&rt, &host, &mut w0, "k", ok()), Seen::Upstream);
    // The miss's own authrep reported it: nothing more goes out.
    assert!(outgoing(&mut w0).is_empty());
    for ws in [&mut w1, &mut w0] {
        let (_, s) = send(&rt, &host, ws, "k");
        assert_eq!(s, Seen::Upstream);
        let out = outgoing(ws);
        assert_eq!(reports(&out).len(), 1, "{out:?}");
        assert!(reports(&out)[0].contains("user_key=k&usage%5Bhits%5D=1"));
    }
    assert_eq!(host.counters.cache_count(CacheEvent::Miss), 1);
    assert_eq!(host.counters.cache_count(CacheEvent::Hit), 2);
    assert_eq!(host.counters.cache_count(CacheEvent::Report), 2);
}

#[test]
fn an_entry_past_its_ttl_waits_again() {
    let rt = runtime(|s| s.cache.ttl_seconds = 60);
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    host.clock.advance_millis(59_000);
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
    let _ = outgoing(&mut ws);
    host.clock.advance_millis(1_000);
    assert!(matches!(send(&rt, &host, &mut ws, "k").1, Seen::Waiting(_)));
}

#[test]
fn concurrent_misses_of_one_key_in_a_worker_share_one_call() {
    let rt = runtime(|_| {});
    let host = host();
    let (mut ws, mut other) = (Workspace::new(), Workspace::new());
    let mut flows: Vec<RequestFlow> = (0..3)
        .map(|_| {
            let (flow, s) = send(&rt, &host, &mut ws, "k");
            assert!(matches!(s, Seen::Waiting(_)));
            flow
        })
        .collect();
    let mut out = outgoing(&mut ws);
    assert_eq!(out.len(), 1, "one call for three requests");
    // Another worker's miss makes its own.
    assert!(matches!(
        send(&rt, &host, &mut other, "k").1,
        Seen::Waiting(_)
    ));
    assert_eq!(outgoing(&mut other).len(), 1);
    let outcome = land(&rt, &host, &mut ws, out.remove(0), ok()).unwrap();
    for flow in &mut flows {
        assert_eq!(
            seen(flow.on_flight_answer(&rt, &mut ws, &outcome, host.effects())),
            Seen::Upstream
        );
    }
    // The two that joined report their own usage; the first's went with the call.
    let out = outgoing(&mut ws);
    assert_eq!(reports(&out).len(), 2, "{out:?}");
    assert_eq!(host.counters.cache_count(CacheEvent::Joined), 2);
}

#[test]
fn a_background_denial_evicts_and_later_requests_are_denied_without_a_call() {
    let rt = runtime(|_| {});
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
    let report = outgoing(&mut ws).remove(0);
    assert!(land(&rt, &host, &mut ws, report, Some(answer("403", &[]))).is_none());
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Reply(403, None));
    assert!(outgoing(&mut ws).is_empty(), "denied from the cache");
    // Until the denial's time is up (5 s): then the key waits again.
    host.clock.advance_millis(5_000);
    assert!(matches!(send(&rt, &host, &mut ws, "k").1, Seen::Waiting(_)));
}

#[test]
fn background_limits_exceeded_answers_429_with_retry_after_without_a_call() {
    let rt = runtime(|s| s.cache.denied_ttl_seconds = 60);
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
    let report = outgoing(&mut ws).remove(0);
    let limited = answer(
        "409",
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-reset", "30"),
        ],
    );
    let _ = land(&rt, &host, &mut ws, report, Some(limited));
    host.clock.advance_millis(10_000);
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Reply(429, Some(20)));
    assert!(outgoing(&mut ws).is_empty());
    // The period resets: the key waits again.
    host.clock.advance_millis(20_000);
    assert!(matches!(send(&rt, &host, &mut ws, "k").1, Seen::Waiting(_)));
}

#[test]
fn a_flood_of_one_bad_key_costs_one_call() {
    let rt = runtime(|_| {});
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(
        miss(&rt, &host, &mut ws, "bad", Some(answer("403", &[]))),
        Seen::Reply(403, None)
    );
    for _ in 0..100 {
        assert_eq!(send(&rt, &host, &mut ws, "bad").1, Seen::Reply(403, None));
    }
    assert!(outgoing(&mut ws).is_empty());
    assert_eq!(host.counters.cache_count(CacheEvent::DeniedHit), 100);
}

/// Every way a call fails: no answer, 503, a status that is not one.
fn failures() -> Vec<(&'static str, Option<HeaderMap>)> {
    vec![
        ("no answer", None),
        ("503", Some(answer("503", &[]))),
        ("garbage", Some(answer("2x0", &[]))),
    ]
}

#[test]
fn strict_denies_on_a_failure_and_evicts() {
    for (what, failure) in failures() {
        let rt = runtime(|s| s.cache.mode = CacheMode::Strict);
        let host = host();
        let mut ws = Workspace::new();
        assert_eq!(
            miss(&rt, &host, &mut ws, "new", failure.clone()),
            Seen::Reply(403, None),
            "{what}"
        );
        assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
        assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
        let report = outgoing(&mut ws).remove(0);
        let _ = land(&rt, &host, &mut ws, report, failure.clone());
        // Evicted: the next request waits, and the failure denies it.
        assert_eq!(
            miss(&rt, &host, &mut ws, "k", failure),
            Seen::Reply(403, None),
            "{what}"
        );
    }
}

#[test]
fn resilient_keeps_the_last_answer_through_failures() {
    for (what, failure) in failures() {
        let rt = runtime(|s| s.cache.mode = CacheMode::Resilient);
        let host = host();
        let mut ws = Workspace::new();
        assert_eq!(miss(&rt, &host, &mut ws, "good", ok()), Seen::Upstream);
        assert_eq!(
            miss(&rt, &host, &mut ws, "bad", Some(answer("403", &[]))),
            Seen::Reply(403, None)
        );
        // Past every TTL, during an outage.
        host.clock.advance_millis(120_000);
        assert_eq!(
            miss(&rt, &host, &mut ws, "good", failure.clone()),
            Seen::Upstream,
            "{what}"
        );
        assert_eq!(
            miss(&rt, &host, &mut ws, "bad", failure.clone()),
            Seen::Reply(403, None),
            "{what}"
        );
        assert_eq!(
            miss(&rt, &host, &mut ws, "unseen", failure),
            Seen::Reply(403, None),
            "{what}"
        );
        assert!(host.counters.cache_count(CacheEvent::Stale) >= 2);
    }
}

#[test]
fn allow_also_admits_keys_never_seen_but_not_those_last_denied() {
    for (what, failure) in failures() {
        let rt = runtime(|s| s.cache.mode = CacheMode::Allow);
        let host = host();
        let mut ws = Workspace::new();
        assert_eq!(
            miss(&rt, &host, &mut ws, "bad", Some(answer("403", &[]))),
            Seen::Reply(403, None)
        );
        host.clock.advance_millis(120_000);
        assert_eq!(
            miss(&rt, &host, &mut ws, "unseen", failure.clone()),
            Seen::Upstream,
            "{what}"
        );
        assert_eq!(
            miss(&rt, &host, &mut ws, "bad", failure),
            Seen::Reply(403, None),
            "{what}"
        );
        // The admitted key is cached as authorized: the next one does not wait, and its usage
        // (and the first's, which no authrep reported) goes out in reports.
        assert_eq!(send(&rt, &host, &mut ws, "unseen").1, Seen::Upstream);
        assert_eq!(host.counters.cache_count(CacheEvent::Assumed), 1);
        let out = outgoing(&mut ws);
        assert_eq!(reports(&out).len(), 2, "{out:?}");
    }
}

#[test]
fn none_makes_every_request_wait_for_its_own_call() {
    let rt = runtime(|s| s.cache.mode = CacheMode::None);
    let host = host();
    let mut ws = Workspace::new();
    for _ in 0..3 {
        let (mut flow, s) = send(&rt, &host, &mut ws, "k");
        assert!(matches!(s, Seen::Calling(_)), "{s:?}");
        let a = answer("200", &[]);
        assert_eq!(
            seen(flow.on_call_answer(&rt, Some(&a), host.effects())),
            Seen::Upstream
        );
    }
    assert!(outgoing(&mut ws).is_empty());
    assert!(host.counters.cache_events().is_empty());
}

#[test]
fn a_failed_background_report_is_retried_with_what_came_since() {
    let rt = runtime(|_| {});
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
    let report = outgoing(&mut ws).remove(0);
    let _ = land(&rt, &host, &mut ws, report, Some(answer("503", &[])));
    // Resilient or not, strict evicted the key: make it fresh again, then hit twice.
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    for _ in 0..2 {
        assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
    }
    // Both hits' usage waits with the failed one's for the retry.
    assert!(outgoing(&mut ws).is_empty(), "summed while a retry waits");
    on_tick(&rt, &mut ws, host.effects());
    assert!(outgoing(&mut ws).is_empty(), "not before the backoff");
    host.clock.advance_millis(1_000);
    on_tick(&rt, &mut ws, host.effects());
    let out = outgoing(&mut ws);
    assert_eq!(reports(&out).len(), 1, "{out:?}");
    assert!(
        reports(&out)[0].contains("usage%5Bhits%5D=3"),
        "{}",
        reports(&out)[0]
    );
    assert_eq!(host.counters.cache_count(CacheEvent::ReportFailed), 1);
}

#[test]
fn coalescing_sums_usage_while_a_report_is_out_and_keeps_the_total() {
    let rt = runtime(|s| s.cache.coalesce_reports = true);
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "k", ok()), Seen::Upstream);
    let mut reported = 0;
    let mut admitted = 0;
    let mut out_now: Vec<Outgoing> = Vec::new();
    for round in 0..4 {
        for _ in 0..5 {
            assert_eq!(send(&rt, &host, &mut ws, "k").1, Seen::Upstream);
            admitted += 1;
            out_now.extend(outgoing(&mut ws));
        }
        assert_eq!(out_now.len(), 1, "round {round}: one report out at a time");
        let report = out_now.remove(0);
        let hits: i64 = report
            .path
            .rsplit("usage%5Bhits%5D=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        reported += hits;
        let _ = land(&rt, &host, &mut ws, report, ok());
        out_now.extend(outgoing(&mut ws));
    }
    // What is still queued goes with the last one out.
    while let Some(report) = out_now.pop() {
        reported += report
            .path
            .rsplit('=')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap();
        let _ = land(&rt, &host, &mut ws, report, ok());
        out_now.extend(outgoing(&mut ws));
    }
    assert_eq!(reported, admitted);
    assert!(host.counters.cache_count(CacheEvent::Coalesced) >= 12);
}

#[test]
fn a_flood_of_distinct_bad_keys_stays_bounded_and_keeps_the_good_key() {
    let rt = runtime(|s| s.cache.max_keys = 64);
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&rt, &host, &mut ws, "good", ok()), Seen::Upstream);
    for i in 0..2_000 {
        let user = format!("bad{i}");
        assert_eq!(
            miss(&rt, &host, &mut ws, &user, Some(answer("403", &[]))),
            Seen::Reply(403, None)
        );
    }
    assert!(host.store.keys() <= 64, "{} keys", host.store.keys());
    assert_eq!(send(&rt, &host, &mut ws, "good").1, Seen::Upstream);
    assert_eq!(host.counters.cache_count(CacheEvent::Hit), 1);
}

#[test]
fn keys_too_long_to_cache_wait_as_without_a_cache() {
    let rt = runtime(|_| {});
    let host = host();
    let mut ws = Workspace::new();
    let long = "x".repeat(cache::MAX_KEY_BYTES);
    assert!(matches!(
        send(&rt, &host, &mut ws, &long).1,
        Seen::Calling(_)
    ));
    assert_eq!(host.counters.cache_count(CacheEvent::Uncacheable), 1);
}

#[test]
fn a_worker_reuses_a_batched_answer_it_read_until_it_expires() {
    let rt = runtime(|s| {
        s.batching = Some(crate::config::BatchingConfig {
            auths_ttl_seconds: 10,
            ..Default::default()
        })
    });
    let host = host();
    let (mut w0, mut w1) = (Workspace::new(), Workspace::new());
    let (mut flow, s) = send(&rt, &host, &mut w0, "k");
    assert!(matches!(s, Seen::Waiting(_)));
    let call = outgoing(&mut w0).remove(0);
    assert!(
        call.path.starts_with("/transactions/authorize.xml?"),
        "{}",
        call.path
    );
    let outcome = land(&rt, &host, &mut w0, call, ok()).unwrap();
    assert_eq!(
        seen(flow.on_flight_answer(&rt, &mut w0, &outcome, host.effects())),
        Seen::Upstream
    );
    // Another worker reads the answer from the store once...
    assert_eq!(send(&rt, &host, &mut w1, "k").1, Seen::Upstream);
    // ...then needs the store only for the usage: its reads of the cache fail from here on
    // and it still answers from what it read.
    host.store.refuse(Some(1));
    assert_eq!(send(&rt, &host, &mut w1, "k").1, Seen::Upstream);
    host.store.refuse(None);
    host.clock.advance_millis(10_000);
    assert!(matches!(send(&rt, &host, &mut w1, "k").1, Seen::Waiting(_)));
    assert!(
        outgoing(&mut w1)
            .iter()
            .all(|o| !matches!(o.ticket, Ticket::Report(_))),
        "batched: no authrep"
    );
}

#[test]
fn two_configurations_in_one_worker_keep_their_reports_apart() {
    // Two root contexts of one VM: the same service index, one Workspace.
    let a = runtime(|_| {});
    let b = runtime(|s| s.id = "8".into());
    let host = host();
    let mut ws = Workspace::new();
    assert_eq!(miss(&a, &host, &mut ws, "k", ok()), Seen::Upstream);
    assert_eq!(send(&a, &host, &mut ws, "k").1, Seen::Upstream);
    let report = outgoing(&mut ws).remove(0);
    let _ = land(&a, &host, &mut ws, report, None);
    host.clock.advance_millis(1_000);
    // b's timer retries none of a's reports; a's does, with a's service.
    on_tick(&b, &mut ws, host.effects());
    assert!(reports(&outgoing(&mut ws)).is_empty());
    on_tick(&a, &mut ws, host.effects());
    let out = outgoing(&mut ws);
    assert_eq!(reports(&out).len(), 1, "{out:?}");
    assert!(
        reports(&out)[0].contains("service_id=7&"),
        "{}",
        reports(&out)[0]
    );
}
