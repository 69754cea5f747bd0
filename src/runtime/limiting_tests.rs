//! Local limits in the request flow, against the fake store: what the client gets, whether
//! the control service is asked, what is counted, and exactness when races are lost.

use serde_json::{json, Value};

use super::fakes::FakeHost;
use super::seams::LimitOutcome;
use super::*;
use crate::config::FilterConfig;
use crate::diagnostics::Diagnostics;
use crate::load;
use crate::pairs;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// A user_key service (rules: `GET /v1` hits 1, `GET /search` search 3) with `limiters`.
fn config(limiters: Value, authorization: &str) -> FilterConfig {
    let doc = json!({"services": [{
        "id": 7, "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "svc-token",
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": ["api.example.com"],
            "backend": {"endpoint": "http://control.internal:3000"},
            "proxy_rules": [
                {"http_method": "GET", "pattern": "/v1", "metric_system_name": "hits", "delta": 1},
                {"http_method": "GET", "pattern": "/search", "metric_system_name": "search", "delta": 3}
            ]
        }
    }]});
    let loaded = load(doc.to_string().as_bytes());
    let mut config = loaded.config.unwrap();
    let mut value = serde_json::to_value(&config).unwrap();
    value["services"][0]["limiters"] = limiters;
    value["services"][0]["authorization"] = json!(authorization);
    let mut diags = Diagnostics::default();
    config = FilterConfig::from_value(&value, &mut diags).unwrap_or_else(|| panic!("{diags:?}"));
    config
}

fn runtime_with(limiters: Value, authorization: &str, headers: bool) -> Runtime {
    let mut c = config(limiters, authorization);
    c.services[0].rate_limit_headers = headers;
    // Each admitted request's own call shows it was admitted: no cache.
    c.services[0].cache.mode = crate::config::CacheMode::None;
    let loaded = load(serde_json::to_string(&c).unwrap().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    Runtime::new(loaded.compiled.unwrap(), None)
}

fn runtime(limiters: Value) -> Runtime {
    runtime_with(limiters, "threescale", false)
}

fn bucket(name: &str, key: &str, rate: u64, per: &str, burst: u64) -> Value {
    json!({"name": name, "counts": "requests", "key": key,
           "token_bucket": {"rate": rate, "per": per, "burst": burst}})
}

fn request(path: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
    ];
    h.extend_from_slice(extra);
    let mut bytes = Vec::new();
    pairs::encode(
        h.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut bytes,
    );
    HeaderMap::parse(bytes).unwrap()
}

/// What a client sees of one request: `Ok(())` when it goes to the control service (or
/// upstream), `Err((status, retry_after))` when the gateway answers it.
fn send(
    rt: &Runtime,
    host: &FakeHost,
    ws: &mut Workspace,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<(), (u16, Option<u64>)> {
    let mut flow = RequestFlow::new();
    match flow.on_request_headers(rt, ws, request(path, extra), true, host.effects()) {
        Action::Call(_) | Action::Forward(_) => Ok(()),
        Action::Reply(r) => Err((r.response.status, r.retry_after)),
        other => panic!("unexpected {other:?}"),
    }
}

fn admitted(rt: &Runtime, host: &FakeHost, ws: &mut Workspace, n: usize, key: &str) -> usize {
    let path = format!("/v1?user_key={key}");
    (0..n)
        .filter(|_| send(rt, host, ws, &path, &[]).is_ok())
        .count()
}

#[test]
fn a_bucket_admits_its_burst_then_refills_at_its_rate() {
    let rt = runtime(json!([bucket("b", "service", 2, "minute", 5)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 20, "a"), 5);
    let limited = send(&rt, &host, &mut ws, "/v1?user_key=a", &[]);
    // 2 a minute: the next token in 30 s.
    assert_eq!(limited, Err((429, Some(30))));
    host.clock.advance_millis(60_000);
    assert_eq!(admitted(&rt, &host, &mut ws, 20, "a"), 2);
    let counted = host.counters.counted();
    assert_eq!(
        counted
            .iter()
            .filter(|o| **o == Outcome::RateLimited)
            .count(),
        15 + 1 + 18
    );
    assert_eq!(
        host.counters
            .limiter_outcomes()
            .iter()
            .filter(|(_, _, o)| *o == LimitOutcome::Admitted)
            .count(),
        7
    );
}

#[test]
fn lost_races_are_retried_and_never_admit_more() {
    let rt = runtime(json!([bucket("b", "service", 1, "hour", 10)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    // The key exists after the first request; then every request loses a few races.
    let mut admitted_total = usize::from(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
    for _ in 0..30 {
        host.store.lose_races(3);
        admitted_total += usize::from(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
    }
    assert_eq!(admitted_total, 10);
}

#[test]
fn more_lost_races_than_the_bound_deny_and_count_contention() {
    let rt = runtime(json!([bucket("b", "service", 1, "hour", 10)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert!(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
    host.store.lose_races(limiting::MAX_CAS_RETRIES + 1);
    assert_eq!(
        send(&rt, &host, &mut ws, "/v1?user_key=a", &[]),
        Err((429, Some(1)))
    );
    assert!(host.counters.limiter_outcomes().contains(&(
        crate::index::ServiceIndex::new(0),
        0,
        LimitOutcome::Contended
    )));
    // Races lost up to the bound are won on the last attempt.
    host.store.lose_races(limiting::MAX_CAS_RETRIES);
    assert!(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
}

#[test]
fn a_store_that_refuses_denies_rather_than_admits() {
    let rt = runtime(json!([bucket("b", "service", 1, "hour", 10)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    host.store.refuse(Some(10));
    assert_eq!(
        send(&rt, &host, &mut ws, "/v1?user_key=a", &[]),
        Err((429, Some(1)))
    );
}

#[test]
fn applications_end_users_and_addresses_have_buckets_of_their_own() {
    let rt = runtime(json!([bucket("app", "application", 1, "day", 2)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 5, "a"), 2);
    assert_eq!(admitted(&rt, &host, &mut ws, 5, "b"), 2);

    let rt = runtime(json!([bucket("user", "header:X-User", 1, "day", 1)]));
    let host = FakeHost::default();
    let as_user = |u: &str, ws: &mut Workspace| {
        send(&rt, &host, ws, "/v1?user_key=a", &[("x-user", u)]).is_ok()
    };
    assert!(as_user("alice", &mut ws));
    assert!(!as_user("alice", &mut ws));
    assert!(as_user("bob", &mut ws));

    let rt = runtime(json!([bucket("ip", "client_address", 1, "day", 1)]));
    let host = FakeHost::default();
    host.peer.set(Some("10.0.0.1:4000"));
    assert!(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
    host.peer.set(Some("10.0.0.1:4001"));
    assert!(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_err());
    host.peer.set(Some("10.0.0.2:4000"));
    assert!(send(&rt, &host, &mut ws, "/v1?user_key=a", &[]).is_ok());
}

#[test]
fn a_metric_limiter_counts_the_rules_delta_and_nothing_else() {
    let rt = runtime(
        json!([{"name": "search", "counts": "metric:search", "key": "service",
        "fixed_window": {"count": 7, "window_seconds": 60}}]),
    );
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    // `GET /search` costs 3: two fit in 7, the third does not.
    assert!(send(&rt, &host, &mut ws, "/search?user_key=a", &[]).is_ok());
    assert!(send(&rt, &host, &mut ws, "/search?user_key=a", &[]).is_ok());
    assert!(send(&rt, &host, &mut ws, "/search?user_key=a", &[]).is_err());
    // `GET /v1` assigns no search: not counted.
    assert_eq!(admitted(&rt, &host, &mut ws, 10, "a"), 10);
}

#[test]
fn a_refused_request_gives_back_what_earlier_limiters_took() {
    let rt = runtime(json!([
        bucket("wide", "service", 1, "day", 100),
        bucket("narrow", "application", 1, "day", 1)
    ]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 50, "a"), 1);
    // 49 refusals by `narrow` gave back `wide`'s token: 99 left for others.
    let others: usize = (0..200)
        .map(|i| admitted(&rt, &host, &mut ws, 1, &format!("k{i}")))
        .sum();
    assert_eq!(others, 99);
}

#[test]
fn report_only_admits_and_counts_what_it_would_limit() {
    let rt = runtime(json!([{"name": "b", "counts": "requests", "key": "service",
        "token_bucket": {"rate": 1, "per": "day", "burst": 1}, "mode": "report_only"}]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 3, "a"), 3);
    let outcomes: Vec<_> = host
        .counters
        .limiter_outcomes()
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(
        outcomes,
        [
            LimitOutcome::Admitted,
            LimitOutcome::ReportOnly,
            LimitOutcome::ReportOnly
        ]
    );
}

#[test]
fn limits_apply_to_services_that_do_not_authorize() {
    let rt = runtime_with(json!([bucket("b", "service", 1, "day", 2)]), "none", false);
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 5, "ignored"), 2);
}

#[test]
fn a_limited_reply_has_the_limiters_status_and_the_services_body() {
    let rt = runtime(json!([{"name": "b", "counts": "requests", "key": "service",
        "token_bucket": {"rate": 1, "per": "day", "burst": 1}, "status": 503}]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    let mut flow = RequestFlow::new();
    let _ = flow.on_request_headers(
        &rt,
        &mut ws,
        request("/v1?user_key=a", &[]),
        true,
        host.effects(),
    );
    let mut flow = RequestFlow::new();
    match flow.on_request_headers(
        &rt,
        &mut ws,
        request("/v1?user_key=a", &[]),
        true,
        host.effects(),
    ) {
        Action::Reply(r) => {
            assert_eq!(r.response.status, 503);
            assert_eq!(r.response.body, "Limits exceeded");
            assert_eq!(r.retry_after, Some(86_400));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rate_limit_headers_come_from_the_tightest_limiter() {
    let rt = runtime_with(
        json!([
            bucket("wide", "service", 1, "day", 100),
            json!({"name": "narrow", "counts": "requests", "key": "service",
                   "fixed_window": {"count": 3, "window_seconds": 60}})
        ]),
        "threescale",
        true,
    );
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    let mut flow = RequestFlow::new();
    let action = flow.on_request_headers(
        &rt,
        &mut ws,
        request("/v1?user_key=a", &[]),
        true,
        host.effects(),
    );
    assert!(matches!(action, Action::Call(_)));
    let answer = {
        let mut bytes = Vec::new();
        pairs::encode([(&b":status"[..], &b"200"[..])].into_iter(), &mut bytes);
        HeaderMap::parse(bytes).unwrap()
    };
    assert!(matches!(
        flow.on_call_answer(&rt, Some(&answer), host.effects()),
        Action::Forward(_)
    ));
    let headers = flow.on_response_headers();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(get("ratelimit-remaining").as_deref(), Some("2"));
    assert!(get("ratelimit-reset").is_some());
}

#[test]
fn invalid_limiters_are_errors_with_their_path() {
    let cases = [
        (
            json!([{"name": "a b", "counts": "requests", "key": "service",
                 "token_bucket": {"rate": 1, "per": "second", "burst": 1}}]),
            "services[0].limiters[0].name",
        ),
        (
            json!([{"name": "a", "counts": "hits", "key": "service",
                 "token_bucket": {"rate": 1, "per": "second", "burst": 1}}]),
            "services[0].limiters[0].counts",
        ),
        (
            json!([{"name": "a", "counts": "requests", "key": "user",
                 "token_bucket": {"rate": 1, "per": "second", "burst": 1}}]),
            "services[0].limiters[0].key",
        ),
        (
            json!([{"name": "a", "counts": "requests", "key": "service"}]),
            "services[0].limiters[0]",
        ),
        (
            json!([{"name": "a", "counts": "requests", "key": "service",
                 "token_bucket": {"rate": 0, "per": "second", "burst": 1}}]),
            "services[0].limiters[0].token_bucket",
        ),
        (
            json!([{"name": "a", "counts": "requests", "key": "service",
                 "fixed_window": {"count": 1, "window_seconds": 0}}]),
            "services[0].limiters[0].fixed_window.window_seconds",
        ),
        (
            json!([{"name": "a", "counts": "requests", "key": "service", "max_keys": 0,
                 "fixed_window": {"count": 1, "window_seconds": 1}}]),
            "services[0].limiters[0].max_keys",
        ),
        (
            json!([
                bucket("a", "service", 1, "second", 1),
                bucket("a", "service", 1, "second", 1)
            ]),
            "services[0].limiters[1].name",
        ),
    ];
    for (limiters, path) in cases {
        let c = config(limiters.clone(), "threescale");
        let loaded = load(serde_json::to_string(&c).unwrap().as_bytes());
        assert!(loaded.compiled.is_none(), "{limiters}");
        assert!(
            loaded.diagnostics.errors().any(|d| d.path == path),
            "{limiters}: {:?}",
            loaded.diagnostics
        );
    }
    // What needs credentials or rules is an error without them.
    for limiters in [
        json!([bucket("a", "application", 1, "second", 1)]),
        json!([{"name": "a", "counts": "metric:hits", "key": "service",
                "token_bucket": {"rate": 1, "per": "second", "burst": 1}}]),
    ] {
        let c = config(limiters.clone(), "none");
        let loaded = load(serde_json::to_string(&c).unwrap().as_bytes());
        assert!(loaded.compiled.is_none(), "{limiters}");
    }
}

#[test]
fn generate_filter_writes_every_default() {
    let c = config(
        json!([bucket("a", "service", 1, "second", 1)]),
        "threescale",
    );
    let written = serde_json::to_value(&c).unwrap();
    let limiter = &written["services"][0]["limiters"][0];
    assert_eq!(limiter["scope"], "service");
    assert_eq!(limiter["mode"], "enforce");
    assert_eq!(limiter["status"], Value::Null);
    assert_eq!(limiter["max_keys"], 65_536);
    assert_eq!(written["services"][0]["rate_limit_headers"], false);
}

#[test]
fn the_control_services_limit_headers_count_when_they_are_tighter() {
    let rt = runtime_with(
        json!([bucket("wide", "service", 1, "day", 100)]),
        "threescale",
        true,
    );
    let answer = |pairs_in: &[(&str, &str)]| {
        let mut bytes = Vec::new();
        pairs::encode(
            pairs_in.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            &mut bytes,
        );
        HeaderMap::parse(bytes).unwrap()
    };
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    let headers_after = |ws: &mut Workspace, a: &HeaderMap| {
        let mut flow = RequestFlow::new();
        let action = flow.on_request_headers(
            &rt,
            ws,
            request("/v1?user_key=a", &[]),
            true,
            host.effects(),
        );
        assert!(matches!(action, Action::Call(_)));
        assert!(matches!(
            flow.on_call_answer(&rt, Some(a), host.effects()),
            Action::Forward(_)
        ));
        flow.on_response_headers()
    };
    // 3scale's limit is tighter: its numbers (remaining clamped at 0).
    let h = headers_after(
        &mut ws,
        &answer(&[
            (":status", "200"),
            ("3scale-limit-max-value", "10"),
            ("3scale-limit-remaining", "-2"),
            ("3scale-limit-reset", "60"),
        ]),
    );
    assert_eq!(
        h,
        vec![
            ("ratelimit-limit", "10".to_owned()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", "60".to_owned())
        ]
    );
    // No reset (or 0): APIcast emits nothing for 3scale's; the local limiter's apply.
    let h = headers_after(
        &mut ws,
        &answer(&[
            (":status", "200"),
            ("3scale-limit-max-value", "10"),
            ("3scale-limit-remaining", "1"),
            ("3scale-limit-reset", "0"),
        ]),
    );
    assert_eq!(h.first().map(|(_, v)| v.as_str()), Some("100"));
    assert_eq!(h.get(1).map(|(_, v)| v.as_str()), Some("98"));
}

#[test]
fn a_spent_key_is_refused_without_reading_the_store_until_it_may_refill() {
    let rt = runtime(json!([bucket("b", "service", 1, "hour", 2)]));
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    assert_eq!(admitted(&rt, &host, &mut ws, 3, "a"), 2);
    // From now on a store that refuses would mean `Retry-After: 1` (contended): this worker
    // knows the key is spent and answers with the real wait, without asking the store.
    host.store.refuse(Some(10));
    assert_eq!(
        send(&rt, &host, &mut ws, "/v1?user_key=a", &[]),
        Err((429, Some(3600)))
    );
    host.clock.advance_millis(1_800_000);
    assert_eq!(
        send(&rt, &host, &mut ws, "/v1?user_key=a", &[]),
        Err((429, Some(1800)))
    );
    // Once the key may have refilled, the store decides again.
    host.store.refuse(None);
    host.clock.advance_millis(1_800_000);
    assert_eq!(admitted(&rt, &host, &mut ws, 3, "a"), 1);
    // Another worker (workspace) reads the store itself.
    let mut other = Workspace::new();
    assert_eq!(
        send(&rt, &host, &mut other, "/v1?user_key=a", &[]),
        Err((429, Some(3600)))
    );
}
