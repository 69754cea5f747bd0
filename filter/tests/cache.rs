//! The authorization cache (issue 11) in tollgate.wasm, in authrep mode (no batching), as a
//! client, the upstream and the control service see it: hits on any worker after one miss,
//! TTLs, one call per key per worker, background authreps and what their answers do, every
//! caching mode against every kind of failure, retries with backoff, coalesced reports, a
//! flood of bad keys against a small key space, debug headers, requests decided on their
//! body, clients going away and a host or store that refuses. The clock is the test host's;
//! every test also checks that no VM trapped and no log line holds a credential.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_testhost::{HostCall, Hostile, Status};

const SG: &str = "api.sendgrid.example";
const SERVICE: &str = "2555417735060";
const SG_TOKEN: &str = "sendgrid-service-token-8f2c1b7e";
const SG_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e";
const AUTH_FAILED: &str = r#"{"errors":[{"message":"authentication failed"}]}"#;
const LIMITED: &str = r#"{"errors":[{"message":"rate limit exceeded"}]}"#;
const AUTHREP: &str = "/transactions/authrep.xml?";
const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn mail(user: &str) -> String {
    format!("/api/mail.send.json?api_user={user}&api_key=k1")
}

/// SendGrid's FilterConfig with `cache`'s fields over the service's cache settings.
fn config(cache: Value) -> Vec<u8> {
    let mut config: Value = serde_json::from_slice(&sendgrid_filter_config()).unwrap();
    for (k, v) in cache.as_object().unwrap() {
        config["services"][0]["cache"][k] = v.clone();
    }
    assert_eq!(config["services"][0]["batching"], Value::Null);
    serde_json::to_vec_pretty(&config).unwrap()
}

fn cache_host(cache: Value, workers: usize) -> Host {
    Host::builder(wasm())
        .plugin_config(config(cache))
        .cluster(CLUSTER)
        .workers(workers)
        .build()
        .unwrap_or_else(|e| panic!("the filter did not configure: {e}"))
}

fn cached(host: &Host, event: &str) -> u64 {
    host.metric(&format!("tollgate.cache.{event}"))
}

/// The cache counters that are not zero, sorted.
fn cache_counters(host: &Host) -> Vec<(String, u64)> {
    let mut got: Vec<(String, u64)> = host
        .metric_names()
        .into_iter()
        .filter_map(|n| Some(n.strip_prefix("tollgate.cache.")?.to_owned()))
        .map(|n| (n.clone(), cached(host, &n)))
        .filter(|(_, v)| *v > 0)
        .collect();
    got.sort();
    got
}

fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut want: Vec<(String, u64)> = pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect();
    want.sort();
    want
}

/// The authrep a call is: its user (app_id) and the mail usage it reports.
fn authrep(call: &Call<'_>) -> (String, u64) {
    assert_eq!(call.cluster(), CLUSTER);
    assert_eq!(call.header(":method").as_deref(), Some("GET"));
    // A worker's own calls are sent as a request's are.
    assert_eq!(call.header(":authority").as_deref(), Some("su1.3scale.net"));
    assert_eq!(
        call.header("3scale-options").as_deref(),
        Some("rejection_reason_header=1&limit_headers=1&no_body=1")
    );
    assert_eq!(call.timeout(), Some(Duration::from_millis(1000)));
    assert!(call.body().is_empty());
    let path = call.header(":path").unwrap();
    let query = path
        .strip_prefix(AUTHREP)
        .unwrap_or_else(|| panic!("not an authrep: {path}"));
    assert!(
        query.starts_with(&format!("service_id={SERVICE}&service_token={SG_TOKEN}&")),
        "{path}"
    );
    let value = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let user = value("app_id").unwrap_or_else(|| panic!("no app_id: {path}"));
    assert_eq!(value("app_key").as_deref(), Some("k1"), "{path}");
    let hits = value("usage%5Bmail%5D")
        .unwrap_or_else(|| panic!("no mail usage: {path}"))
        .parse()
        .unwrap();
    (user, hits)
}

/// Every pending call, as authreps: (worker label, user, mail usage).
fn pending_authreps(host: &Host) -> Vec<(String, String, u64)> {
    host.pending_calls()
        .iter()
        .map(|c| {
            let (user, hits) = authrep(c);
            (c.vm(), user, hits)
        })
        .collect()
}

/// The request went upstream, with the service's secret token.
fn went_upstream(s: &Stream<'_>) {
    let Outcome::Continued(up) = s.outcome() else {
        panic!("not forwarded: {:?}", s.outcome());
    };
    assert_eq!(
        up.headers.get_all("x-3scale-proxy-secret-token"),
        [SG_SECRET]
    );
}

/// The service's auth_failed error, with no call made for it.
fn auth_failed(s: &Stream<'_>) {
    let r = local_reply(s);
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (403, AUTH_FAILED),
        "{r:?}"
    );
    assert!(s.pending_calls().is_empty());
}

/// A miss of `user` on `worker`: it waits on one authrep carrying its usage, answered
/// `status` (200: it goes upstream).
fn miss<'h>(host: &'h Host, worker: usize, user: &str, status: u16) -> Stream<'h> {
    let before = host.pending_calls().len();
    let s = get(host, worker, SG, &mail(user));
    assert_eq!(s.outcome(), Outcome::Paused, "{user} did not wait");
    let calls = host.pending_calls();
    assert_eq!(calls.len(), before + 1, "{calls:?}");
    let call = calls.into_iter().last().unwrap();
    assert_eq!(authrep(&call), (user.to_owned(), 1));
    call.respond(status, NO_HEADERS, b"");
    if status == 200 {
        went_upstream(&s);
    } else {
        assert_eq!(local_reply(&s).status, 403);
    }
    s
}

/// A hit of `user` on `worker`: upstream at once, and a background authrep of its usage
/// goes out (returned, unanswered).
fn hit<'h>(host: &'h Host, worker: usize, user: &str) -> Call<'h> {
    let before = host.pending_calls().len();
    let s = get(host, worker, SG, &mail(user));
    went_upstream(&s);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), before + 1, "one background authrep: {calls:?}");
    let call = calls.into_iter().last().unwrap();
    assert_eq!(authrep(&call), (user.to_owned(), 1));
    assert_eq!(call.vm(), format!("worker{worker}"));
    call
}

#[test]
fn a_hit_after_a_miss_on_another_worker_goes_upstream_at_once_and_reports_in_the_background() {
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "alice", 200);
    assert!(host.pending_calls().is_empty());
    // Worker 1 has never seen alice: the entry is in shared data.
    let report = hit(&host, 1, "alice");
    assert_eq!(
        cache_counters(&host),
        counts(&[("miss", 1), ("hit", 1), ("report", 1)])
    );
    assert_eq!(host.metric("tollgate.authorized"), 2);
    report.respond(200, NO_HEADERS, b"");
    assert!(host.pending_calls().is_empty());
    // Another key of the same application is a different entry (usage is in the key).
    let s = get(
        &host,
        1,
        SG,
        "/api/bounces.get.json?api_user=alice&api_key=k1",
    );
    assert_eq!(s.outcome(), Outcome::Paused);
    check(&host, &["k1"]);
}

#[test]
fn an_entry_expires_after_its_ttl_and_a_background_answer_refreshes_it() {
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "alice", 200);
    host.advance_clock(59 * SECOND);
    // Still fresh at 59 s; its report's 200 makes it fresh for 60 s from now.
    hit(&host, 1, "alice").respond(200, NO_HEADERS, b"");
    host.advance_clock(60 * SECOND - MS);
    hit(&host, 0, "alice").respond(200, NO_HEADERS, b"");
    // 60 s after that last answer, nothing is fresh: the request waits again.
    host.advance_clock(60 * SECOND);
    miss(&host, 1, "alice", 200);
    assert_eq!(
        cache_counters(&host),
        counts(&[("miss", 2), ("hit", 2), ("report", 2)])
    );

    // Without a hit in between, 61 s is past the TTL.
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "bob", 200);
    host.advance_clock(61 * SECOND);
    miss(&host, 0, "bob", 200);
    assert_eq!(cache_counters(&host), counts(&[("miss", 2)]));
    check(&host, &["k1"]);
}

#[test]
fn misses_of_one_key_on_one_worker_share_one_call_and_report_the_followers_after() {
    let host = cache_host(json!({}), 2);
    let streams: Vec<_> = (0..3).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
    for s in &streams {
        assert_eq!(s.outcome(), Outcome::Paused);
    }
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "one call for the key: {calls:?}");
    assert_eq!(cache_counters(&host), counts(&[("miss", 1), ("joined", 2)]));
    let call = calls.into_iter().next().unwrap();
    assert_eq!(authrep(&call), ("alice".to_owned(), 1));
    call.respond(200, NO_HEADERS, b"");
    for s in &streams {
        went_upstream(s);
    }
    // The leader's usage went with the call; each follower's goes in its own authrep.
    assert_eq!(
        pending_authreps(&host),
        vec![
            ("worker0".to_owned(), "alice".to_owned(), 1),
            ("worker0".to_owned(), "alice".to_owned(), 1)
        ]
    );
    assert_eq!(cached(&host, "report"), 2);
    assert_eq!(host.metric("tollgate.authorized"), 3);
    for c in host.pending_calls() {
        c.respond(200, NO_HEADERS, b"");
    }
    assert!(host.pending_calls().is_empty());
    check(&host, &["k1"]);
}

#[test]
fn followers_of_a_denied_call_are_denied_and_report_nothing() {
    let host = cache_host(json!({}), 1);
    let streams: Vec<_> = (0..3)
        .map(|_| get(&host, 0, SG, &mail("mallory")))
        .collect();
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1);
    calls
        .into_iter()
        .next()
        .unwrap()
        .respond(403, NO_HEADERS, b"");
    for s in &streams {
        auth_failed(s);
    }
    assert!(host.pending_calls().is_empty());
    assert_eq!(host.metric("tollgate.auth_failed"), 3);
    check(&host, &["k1"]);
}

#[test]
fn a_second_workers_miss_of_the_same_key_makes_its_own_call() {
    let host = cache_host(json!({}), 2);
    let a = get(&host, 0, SG, &mail("alice"));
    let b = get(&host, 1, SG, &mail("alice"));
    assert_eq!(
        pending_authreps(&host),
        vec![
            ("worker0".to_owned(), "alice".to_owned(), 1),
            ("worker1".to_owned(), "alice".to_owned(), 1)
        ]
    );
    assert_eq!(cache_counters(&host), counts(&[("miss", 2)]));
    for c in host.pending_calls() {
        c.respond(200, NO_HEADERS, b"");
    }
    went_upstream(&a);
    went_upstream(&b);
    // Both were leaders: each call reported its own usage, nothing more goes out.
    assert!(host.pending_calls().is_empty());
    check(&host, &["k1"]);
}

#[test]
fn a_background_denial_is_cached_and_later_requests_get_403_without_a_call() {
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "alice", 200);
    // The application was suspended meanwhile: the report of a hit says so.
    hit(&host, 1, "alice").respond(403, NO_HEADERS, b"");
    for w in [0, 1, 0] {
        auth_failed(&get(&host, w, SG, &mail("alice")));
    }
    assert!(host.pending_calls().is_empty());
    assert_eq!(cached(&host, "denied_hit"), 3);
    assert_eq!(host.metric("tollgate.auth_failed"), 3);
    // For denied_ttl_seconds (5) only.
    host.advance_clock(5 * SECOND);
    miss(&host, 1, "alice", 200);
    check(&host, &["k1"]);
}

#[test]
fn a_background_limits_exceeded_gives_429_with_retry_after_until_the_reset() {
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "alice", 200);
    hit(&host, 0, "alice").respond(
        409,
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-reset", "3"),
        ],
        b"",
    );
    let limited = |worker: usize| {
        let s = get(&host, worker, SG, &mail("alice"));
        let r = local_reply(&s);
        assert_eq!((r.status, r.body_text().as_str()), (429, LIMITED), "{r:?}");
        assert!(host.pending_calls().is_empty(), "a limited request called");
        r.header("retry-after").unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(limited(1), 3);
    host.advance_clock(SECOND);
    assert_eq!(limited(0), 2);
    assert_eq!(host.metric("tollgate.limits_exceeded"), 2);
    assert_eq!(cached(&host, "denied_hit"), 2);
    // The period resets at 3 s, before denied_ttl_seconds (5): the next request asks again.
    host.advance_clock(2 * SECOND);
    miss(&host, 1, "alice", 200);
    check(&host, &["k1"]);
}

#[test]
fn a_denial_is_cached_for_denied_ttl_seconds() {
    let host = cache_host(json!({}), 2);
    miss(&host, 0, "mallory", 403);
    host.advance_clock(5 * SECOND - MS);
    auth_failed(&get(&host, 1, SG, &mail("mallory")));
    assert_eq!(cached(&host, "denied_hit"), 1);
    host.advance_clock(MS);
    miss(&host, 1, "mallory", 403);
    assert_eq!(
        cache_counters(&host),
        counts(&[("miss", 2), ("denied_hit", 1)])
    );
    assert_eq!(host.metric("tollgate.auth_failed"), 3);

    // denied_ttl_seconds 0 in strict: a denial is not kept.
    let host = cache_host(json!({"denied_ttl_seconds": 0}), 1);
    miss(&host, 0, "mallory", 403);
    miss(&host, 0, "mallory", 403);
    check(&host, &["k1"]);
}

#[test]
fn mode_none_caches_nothing() {
    let host = cache_host(json!({"mode": "none"}), 2);
    for w in [0, 0, 1] {
        miss(&host, w, "alice", 200);
    }
    // And concurrent requests of one key each make their own call.
    let streams: Vec<_> = (0..2).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
    assert_eq!(host.pending_calls().len(), 2);
    for c in host.pending_calls() {
        c.respond(200, NO_HEADERS, b"");
    }
    for s in &streams {
        went_upstream(s);
    }
    assert!(host.pending_calls().is_empty());
    assert_eq!(cache_counters(&host), counts(&[]));
    assert!(host
        .shared_data_keys()
        .iter()
        .all(|k| !k.starts_with(b"tollgate.auth.")));
    check(&host, &["k1"]);
}

#[test]
fn a_key_too_long_to_cache_waits_for_its_own_call() {
    let host = cache_host(json!({}), 1);
    let user = "u".repeat(3000);
    for _ in 0..2 {
        let s = get(&host, 0, SG, &mail(&user));
        let call = only_call(&s);
        assert_eq!(authrep(&call), (user.clone(), 1));
        call.respond(200, NO_HEADERS, b"");
        went_upstream(&s);
    }
    assert_eq!(cache_counters(&host), counts(&[("uncacheable", 2)]));
    check(&host, &["k1"]);
}

/// How a call to the control service fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The stream is reset: no answer at all.
    Reset,
    /// Envoy's own 503: the cluster cannot be reached.
    Unreachable,
    /// The clock passes the call's timeout: Envoy's 504.
    Timeout,
    /// An answer whose `:status` is not a status.
    GarbageStatus,
}

const FAILURES: [Failure; 4] = [
    Failure::Reset,
    Failure::Unreachable,
    Failure::Timeout,
    Failure::GarbageStatus,
];

fn fail(host: &Host, call: Call<'_>, how: Failure) {
    match how {
        Failure::Reset => call.reset(),
        Failure::Unreachable => call.fail_503(),
        Failure::Timeout => {
            let timeout = call.timeout().unwrap();
            assert_eq!(timeout, Duration::from_millis(1000));
            drop(call);
            host.advance_clock(timeout);
        }
        Failure::GarbageStatus => call.respond_raw(&[(":status", "2x0")], b""),
    }
}

/// One request of `user` on `worker` that must wait on a call, which fails.
fn failed<'h>(host: &'h Host, worker: usize, user: &str, how: Failure) -> Stream<'h> {
    let s = get(host, worker, SG, &mail(user));
    let call = only_call(&s);
    assert_eq!(authrep(&call), (user.to_owned(), 1));
    fail(host, call, how);
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Resilient,
    Allow,
    None,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Resilient => "resilient",
            Mode::Allow => "allow",
            Mode::None => "none",
        }
    }

    /// Whether the last answer stands when the control service fails.
    fn keeps_answers(self) -> bool {
        matches!(self, Mode::Resilient | Mode::Allow)
    }
}

/// A key never seen, during an outage: only `allow` admits it, and then caches it.
fn unseen_key_during_an_outage(mode: Mode, how: Failure) {
    let host = cache_host(json!({"mode": mode.name()}), 2);
    let s = failed(&host, 0, "alice", how);
    if mode == Mode::Allow {
        went_upstream(&s);
        assert_eq!(cached(&host, "assumed"), 1);
        // Admitted without the control service's word: its usage is reported after.
        assert_eq!(
            pending_authreps(&host),
            [("worker0".to_owned(), "alice".to_owned(), 1)]
        );
        host.pending_calls()
            .into_iter()
            .for_each(|c| c.respond(200, NO_HEADERS, b""));
        // Cached as authorized: a hit on the other worker.
        hit(&host, 1, "alice").respond(200, NO_HEADERS, b"");
        assert_eq!(host.metric("tollgate.authorized"), 2);
    } else {
        auth_failed(&s);
        assert!(host.pending_calls().is_empty(), "{mode:?} {how:?}");
        assert_eq!(host.metric("tollgate.control_service_error"), 1);
        // Nothing was cached: the next request waits.
        miss(&host, 1, "alice", 200);
    }
    check(&host, &["k1"]);
}

/// An authorization past its TTL, during an outage: it stands in resilient and allow.
fn stale_authorization_during_an_outage(mode: Mode, how: Failure) {
    let host = cache_host(json!({"mode": mode.name()}), 2);
    miss(&host, 0, "alice", 200);
    host.advance_clock(61 * SECOND);
    let s = failed(&host, 1, "alice", how);
    if mode.keeps_answers() {
        went_upstream(&s);
        assert_eq!(cached(&host, "stale"), 1, "{mode:?} {how:?}");
        // Its usage still has to reach the control service.
        let reports = pending_authreps(&host);
        assert_eq!(
            reports,
            [("worker1".to_owned(), "alice".to_owned(), 1)],
            "{mode:?} {how:?}"
        );
    } else {
        auth_failed(&s);
        assert!(host.pending_calls().is_empty(), "{mode:?} {how:?}");
        assert_eq!(host.metric("tollgate.control_service_error"), 1);
        assert_eq!(cached(&host, "stale"), 0);
        // Strict evicted it (and none never had it): the next request waits.
        miss(&host, 0, "alice", 200);
    }
    check(&host, &["k1"]);
}

/// A denial past its TTL, during an outage: it stands where answers stand, and every other
/// mode denies for lack of an answer.
fn stale_denial_during_an_outage(mode: Mode, how: Failure) {
    let host = cache_host(json!({"mode": mode.name()}), 2);
    miss(&host, 0, "mallory", 403);
    host.advance_clock(6 * SECOND);
    let s = failed(&host, 1, "mallory", how);
    auth_failed(&s);
    assert!(host.pending_calls().is_empty(), "{mode:?} {how:?}");
    if mode.keeps_answers() {
        assert_eq!(cached(&host, "stale"), 1);
        assert_eq!(host.metric("tollgate.auth_failed"), 2);
    } else {
        assert_eq!(host.metric("tollgate.control_service_error"), 1);
    }
    check(&host, &["k1"]);
}

/// A background authrep fails: strict evicts the entry (the next request waits), resilient
/// and allow keep it (the next request is a hit, its usage summed into the retry).
fn background_report_fails(mode: Mode, how: Failure) {
    let host = cache_host(json!({"mode": mode.name()}), 2);
    miss(&host, 0, "alice", 200);
    let report = hit(&host, 1, "alice");
    fail(&host, report, how);
    assert_eq!(cached(&host, "report_failed"), 1, "{mode:?} {how:?}");
    assert!(host.pending_calls().is_empty());
    if mode.keeps_answers() {
        let s = get(&host, 1, SG, &mail("alice"));
        went_upstream(&s);
        assert!(host.pending_calls().is_empty(), "{mode:?} {how:?}");
        assert_eq!(cached(&host, "coalesced"), 1);
    } else {
        miss(&host, 1, "alice", 200);
    }
    check(&host, &["k1"]);
}

fn every_failure(mode: Mode) {
    for how in FAILURES {
        unseen_key_during_an_outage(mode, how);
        stale_authorization_during_an_outage(mode, how);
        stale_denial_during_an_outage(mode, how);
        if mode != Mode::None {
            background_report_fails(mode, how);
        }
    }
}

#[test]
fn strict_mode_against_every_failure() {
    every_failure(Mode::Strict);
}

#[test]
fn resilient_mode_against_every_failure() {
    every_failure(Mode::Resilient);
}

#[test]
fn allow_mode_against_every_failure() {
    every_failure(Mode::Allow);
}

#[test]
fn mode_none_against_every_failure() {
    every_failure(Mode::None);
}

/// The sum of the mail usage every authrep the control service took reported.
struct Ledger(u64);

impl Ledger {
    fn take(&mut self, call: Call<'_>) -> u64 {
        let (_, hits) = authrep(&call);
        call.respond(200, NO_HEADERS, b"");
        self.0 += hits;
        hits
    }
}

#[test]
fn a_failed_background_report_is_retried_with_backoff_and_the_totals_are_what_was_admitted() {
    let host = cache_host(json!({"mode": "resilient"}), 2);
    let mut ledger = Ledger(0);
    let mut admitted = 0;
    let s = get(&host, 0, SG, &mail("alice"));
    ledger.take(only_call(&s));
    went_upstream(&s);
    admitted += 1;
    hit(&host, 0, "alice").fail_503();
    admitted += 1;
    // While the retry waits, hits are summed into it.
    for _ in 0..2 {
        went_upstream(&get(&host, 0, SG, &mail("alice")));
        admitted += 1;
    }
    assert!(host.pending_calls().is_empty());
    assert_eq!(cached(&host, "coalesced"), 2);
    // The first retry after 1 s.
    host.advance_clock(SECOND - MS);
    assert!(host.pending_calls().is_empty());
    host.advance_clock(MS);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let retry = calls.into_iter().next().unwrap();
    assert_eq!(authrep(&retry), ("alice".to_owned(), 3));
    assert_eq!(retry.vm(), "worker0");
    retry.reset();
    assert_eq!(cached(&host, "report_failed"), 2);
    // The second after 2 s more.
    host.advance_clock(SECOND);
    assert!(host.pending_calls().is_empty());
    host.advance_clock(SECOND);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(ledger.take(calls.into_iter().next().unwrap()), 3);
    // Taken: nothing waits any more.
    host.advance_clock(40 * SECOND);
    assert!(host.pending_calls().is_empty());
    assert_eq!(ledger.0, admitted);
    check(&host, &["k1"]);
}

#[test]
fn in_strict_mode_a_failed_report_evicts_and_is_still_retried() {
    let host = cache_host(json!({}), 2);
    let mut ledger = Ledger(0);
    let s = get(&host, 0, SG, &mail("alice"));
    ledger.take(only_call(&s));
    hit(&host, 1, "alice").respond_raw(&[(":status", "")], b"");
    // Evicted: the next request waits, and its own authrep reports it.
    let s = get(&host, 1, SG, &mail("alice"));
    ledger.take(only_call(&s));
    went_upstream(&s);
    host.advance_clock(SECOND);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(ledger.take(calls.into_iter().next().unwrap()), 1);
    host.advance_clock(40 * SECOND);
    assert!(host.pending_calls().is_empty());
    assert_eq!(ledger.0, 3);
    check(&host, &["k1"]);
}

#[test]
fn coalesced_reports_sum_the_hits_made_while_one_is_out() {
    let host = cache_host(json!({"coalesce_reports": true}), 2);
    let mut ledger = Ledger(0);
    let mut admitted = 1;
    let s = get(&host, 0, SG, &mail("alice"));
    ledger.take(only_call(&s));
    let first = hit(&host, 0, "alice");
    admitted += 1;
    for _ in 0..5 {
        went_upstream(&get(&host, 0, SG, &mail("alice")));
        admitted += 1;
    }
    assert_eq!(host.pending_calls().len(), 1, "one report out per key");
    assert_eq!(cached(&host, "coalesced"), 5);
    // Coalescing is per worker: worker 1's hit has its own report.
    let other = hit(&host, 1, "alice");
    admitted += 1;
    assert_eq!(ledger.take(other), 1);
    assert_eq!(ledger.take(first), 1);
    // The sum goes out when the one out answers.
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let next = calls.into_iter().next().unwrap();
    assert_eq!(next.vm(), "worker0");
    assert_eq!(ledger.take(next), 5);
    assert!(host.pending_calls().is_empty());
    // Nothing waits: the next hit reports at once again.
    assert_eq!(ledger.take(hit(&host, 0, "alice")), 1);
    admitted += 1;
    assert_eq!(ledger.0, admitted);
    assert_eq!(cached(&host, "report"), 4);
    check(&host, &["k1"]);
}

#[test]
fn a_flood_of_bad_keys_stays_within_max_keys_and_keeps_a_good_key() {
    let host = cache_host(json!({"max_keys": 64}), 2);
    miss(&host, 0, "alice", 200);
    for i in 0..2000 {
        let s = get(&host, i % 2, SG, &mail(&format!("bad{i}")));
        let call = only_call(&s);
        call.respond(403, NO_HEADERS, b"");
        assert_eq!(local_reply(&s).status, 403);
    }
    assert_eq!(host.metric("tollgate.auth_failed"), 2000);
    let keys = host.shared_data_keys();
    let cache_keys = keys
        .iter()
        .filter(|k| k.starts_with(format!("tollgate.auth.v1|s13:{SERVICE}|64|").as_bytes()))
        .count();
    // Every slot holds something (a denial, or alice), and there are no more of them.
    assert_eq!(cache_keys, 64, "cache keys");
    assert!(keys.len() <= 64 + 4, "{} shared-data keys", keys.len());
    // The authorization cached before the flood was never displaced by a denial.
    for w in [0, 1] {
        hit(&host, w, "alice").respond(200, NO_HEADERS, b"");
    }
    check(&host, &["k1"]);
}

#[test]
fn clients_that_go_away_while_their_keys_call_is_out_leave_the_others_waiting_on_it() {
    let host = cache_host(json!({}), 1);
    let streams: Vec<_> = (0..4).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
    assert_eq!(host.pending_calls().len(), 1);
    // The leader (whose request made the call) and one follower go away.
    streams[0].client_reset();
    streams[2].client_reset();
    assert!(streams[0].is_finished() && streams[2].is_finished());
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "the key's call stays out: {calls:?}");
    calls
        .into_iter()
        .next()
        .unwrap()
        .respond(200, NO_HEADERS, b"");
    went_upstream(&streams[1]);
    went_upstream(&streams[3]);
    assert_eq!(streams[0].outcome(), Outcome::Reset);
    // The call reported the leader's usage; only the two followers that went upstream are
    // reported after it.
    assert_eq!(
        pending_authreps(&host),
        [
            ("worker0".to_owned(), "alice".to_owned(), 1),
            ("worker0".to_owned(), "alice".to_owned(), 1)
        ]
    );
    assert_eq!(host.metric("tollgate.authorized"), 2);
    // And the answer was cached.
    for c in host.pending_calls() {
        c.respond(200, NO_HEADERS, b"");
    }
    hit(&host, 0, "alice").respond(200, NO_HEADERS, b"");
    check(&host, &["k1"]);
}

#[test]
fn a_restarted_worker_forgets_its_calls_and_asks_again() {
    let host = cache_host(json!({}), 2);
    let waiting: Vec<_> = (0..2).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
    assert_eq!(host.pending_calls().len(), 1);
    host.restart_vm(1).unwrap();
    // Its streams got the failure policy's 503 and its call is gone.
    for s in &waiting {
        assert!(local_reply(s).is_failure_policy());
    }
    assert!(host.pending_calls().is_empty());
    // The fresh instance has no call out for the key: it makes one.
    miss(&host, 0, "alice", 200);
    // What it cached is shared: worker 1 hits.
    hit(&host, 1, "alice").respond(200, NO_HEADERS, b"");
    check(&host, &["k1"]);
}

#[test]
fn with_coalescing_a_failed_report_keeps_the_sum_for_its_retry() {
    let host = cache_host(json!({"coalesce_reports": true}), 1);
    let mut ledger = Ledger(0);
    let s = get(&host, 0, SG, &mail("alice"));
    ledger.take(only_call(&s));
    let first = hit(&host, 0, "alice");
    for _ in 0..5 {
        went_upstream(&get(&host, 0, SG, &mail("alice")));
    }
    first.fail_503();
    // Strict: evicted, so the next request waits and reports itself.
    let s = get(&host, 0, SG, &mail("alice"));
    ledger.take(only_call(&s));
    went_upstream(&s);
    assert!(host.pending_calls().is_empty());
    host.advance_clock(SECOND);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(ledger.take(calls.into_iter().next().unwrap()), 6);
    host.advance_clock(40 * SECOND);
    assert!(host.pending_calls().is_empty());
    assert_eq!(ledger.0, 8);
    check(&host, &["k1"]);
}

/// Failed background reports wait per worker for at most 1024 keys: beyond, a failure's
/// usage is dropped and counted; the rest is retried.
#[test]
fn failed_reports_waiting_for_a_retry_are_bounded_per_worker() {
    // Room for every key's entry (two slots a key: 1030 keys in 10000 would displace some).
    let host = cache_host(json!({"mode": "resilient", "max_keys": 1 << 20}), 1);
    let users: Vec<String> = (0..1030).map(|i| format!("u{i}")).collect();
    for u in &users {
        miss(&host, 0, u, 200);
    }
    for u in &users {
        hit(&host, 0, u).fail_503();
    }
    assert_eq!(cached(&host, "report_failed"), 1030);
    assert_eq!(cached(&host, "report_dropped"), 6);
    // The retries, 1 s later: every one that was kept, whatever the batch of calls per
    // callback.
    let mut retried = 0;
    for _ in 0..40 {
        host.advance_clock(SECOND);
        // An answer lets the worker send more of what waits: answered as they come.
        while let Some(c) = host.pending_calls().into_iter().next() {
            assert_eq!(authrep(&c).1, 1);
            c.respond(200, NO_HEADERS, b"");
            retried += 1;
        }
    }
    assert_eq!(cached(&host, "report_failed"), 1030);
    assert_eq!(retried, 1024);
    check(&host, &["k1"]);
}

fn debug_get<'h>(host: &'h Host, worker: usize, user: &str) -> Stream<'h> {
    host.worker(worker).request(&[
        (":method", "GET"),
        (":path", mail(user).as_str()),
        (":authority", SG),
        ("x-3scale-debug", SG_TOKEN),
    ])
}

/// The debug headers: a client with the service token gets them whether its answer came
/// from a call, another request's call or the cache.
fn debug_headers(r: &Reply, user: &str) {
    assert_eq!(r.header("x-3scale-service-id").as_deref(), Some(SERVICE));
    assert_eq!(
        r.header("x-3scale-credentials"),
        Some(format!("app_id={user}&app_key=k1")),
        "{r:?}"
    );
    assert_eq!(
        r.header("x-3scale-usage").as_deref(),
        Some("usage%5Bmail%5D=1")
    );
}

#[test]
fn debug_headers_come_with_hits_joined_requests_and_cached_denials() {
    let host = cache_host(json!({}), 2);
    let leader = debug_get(&host, 0, "alice");
    let follower = debug_get(&host, 0, "alice");
    assert_eq!(host.pending_calls().len(), 1);
    host.pending_calls()
        .into_iter()
        .for_each(|c| c.respond(200, NO_HEADERS, b""));
    for s in [&leader, &follower] {
        let up = s.outcome().upstream().cloned().unwrap();
        assert!(!up.headers.contains("x-3scale-debug"));
        debug_headers(&s.response(&[(":status", "200")]).unwrap(), "alice");
    }
    host.pending_calls()
        .into_iter()
        .for_each(|c| c.respond(200, NO_HEADERS, b""));
    let hit = debug_get(&host, 1, "alice");
    went_upstream(&hit);
    debug_headers(&hit.response(&[(":status", "200")]).unwrap(), "alice");
    host.pending_calls()
        .into_iter()
        .for_each(|c| c.respond(200, NO_HEADERS, b""));
    miss(&host, 0, "mallory", 403);
    let denied = debug_get(&host, 1, "mallory");
    auth_failed(&denied);
    debug_headers(&local_reply(&denied), "mallory");
    // Without the token: none of them.
    let plain = get(&host, 1, SG, &mail("alice"));
    let r = plain.response(&[(":status", "200")]).unwrap();
    assert!(!r.headers.names().iter().any(|n| n.starts_with("x-3scale")));
    check(&host, &["k1"]);
}

#[test]
fn a_store_that_refuses_every_call_skips_the_cache_not_the_request() {
    for refused in [HostCall::GetSharedData, HostCall::SetSharedData] {
        let host = cache_host(json!({}), 2);
        host.set_hostile(&[Hostile {
            call: refused,
            status: Status::InternalFailure,
        }]);
        for w in [0, 1, 0] {
            miss(&host, w, "alice", 200);
            // Whatever the worker found, no report goes out for a request that waited.
            assert!(host.pending_calls().is_empty());
        }
        miss(&host, 1, "mallory", 403);
        miss(&host, 1, "mallory", 403);
        assert!(!host.hostile_answers().is_empty());
        assert!(
            host.logs()
                .iter()
                .any(|l| l.message.contains("the authorization cache is unavailable")),
            "{refused:?}"
        );
        check(&host, &["k1"]);
    }
}

#[test]
fn a_call_the_host_refuses_fails_as_the_mode_says() {
    for mode in ["strict", "allow"] {
        let host = cache_host(json!({"mode": mode}), 1);
        host.set_hostile(&[Hostile {
            call: HostCall::HttpCall,
            status: Status::BadArgument,
        }]);
        let s = get(&host, 0, SG, &mail("alice"));
        if mode == "allow" {
            went_upstream(&s);
            assert_eq!(cached(&host, "assumed"), 1);
            // Its report could not be sent either: it waits for a retry.
            assert_eq!(cached(&host, "report_failed"), 1);
        } else {
            auth_failed(&s);
            assert_eq!(host.metric("tollgate.control_service_error"), 1);
        }
        host.set_hostile(&[]);
        if mode == "allow" {
            // Cached as authorized: a hit; the retry comes a second later with both.
            went_upstream(&get(&host, 0, SG, &mail("alice")));
            assert!(host.pending_calls().is_empty());
            host.advance_clock(SECOND);
            let calls = host.pending_calls();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(authrep(&calls[0]), ("alice".to_owned(), 2));
        } else {
            miss(&host, 0, "alice", 200);
        }
        check(&host, &["k1"]);
    }
}

fn post_headers(len: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/api/mail.send.json".into()),
        (":authority", SG.into()),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("content-length", len.to_string()),
    ]
}

/// Credentials in a form body: the key is known at the body's end; requests waiting on one
/// call, and a hit, go upstream with their bodies untouched.
#[test]
fn requests_decided_on_their_body_share_calls_and_hit_the_cache() {
    let host = Host::builder(wasm())
        .plugin_config(config(json!({})))
        .cluster(CLUSTER)
        .workers(2)
        .allow_on_headers_stop_iteration(true)
        .build()
        .unwrap();
    let body = b"to=x%40y.example&api_user=bob&api_key=k1";
    let a = host.worker(0).request_streaming(post_headers(body.len()));
    let b = host.worker(0).request_streaming(post_headers(body.len()));
    a.body(&body[..10], false);
    b.body(body, true);
    // b decided first: its call is the key's; a joins it at its body's end.
    assert_eq!(host.pending_calls().len(), 1);
    a.body(&body[10..], true);
    assert_eq!(host.pending_calls().len(), 1);
    assert_eq!(cache_counters(&host), counts(&[("miss", 1), ("joined", 1)]));
    let call = host.pending_calls().into_iter().next().unwrap();
    assert_eq!(authrep(&call), ("bob".to_owned(), 1));
    call.respond(200, NO_HEADERS, b"");
    for s in [&a, &b] {
        went_upstream(s);
        assert_eq!(s.outcome().upstream().unwrap().body, body.to_vec());
    }
    // a's report.
    assert_eq!(
        pending_authreps(&host),
        [("worker0".to_owned(), "bob".to_owned(), 1)]
    );
    host.pending_calls()
        .into_iter()
        .for_each(|c| c.respond(200, NO_HEADERS, b""));
    let c = host
        .worker(1)
        .request_with_body(post_headers(body.len()), body);
    went_upstream(&c);
    assert_eq!(c.outcome().upstream().unwrap().body, body.to_vec());
    assert_eq!(cached(&host, "hit"), 1);
    check(&host, &["k1"]);
}

/// Requests that waited on one call that failed: each gets what the mode says, and in
/// `allow` each admitted request's usage is reported (the leader's too: its call reported
/// nothing).
#[test]
fn requests_sharing_a_failed_call_all_get_the_modes_answer() {
    for mode in [Mode::Strict, Mode::Allow] {
        let host = cache_host(json!({"mode": mode.name()}), 1);
        let streams: Vec<_> = (0..3).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
        let calls = host.pending_calls();
        assert_eq!(calls.len(), 1);
        calls.into_iter().next().unwrap().fail_503();
        if mode == Mode::Allow {
            for s in &streams {
                went_upstream(s);
            }
            assert_eq!(
                pending_authreps(&host),
                vec![("worker0".to_owned(), "alice".to_owned(), 1); 3]
            );
            assert_eq!(cached(&host, "assumed"), 1);
        } else {
            for s in &streams {
                auth_failed(s);
            }
            assert!(host.pending_calls().is_empty());
            assert_eq!(host.metric("tollgate.control_service_error"), 3);
        }
        check(&host, &["k1"]);
    }
}

/// A background report that keeps failing is tried again after 1, 2, 4, 8, 16, then every
/// 30 s; the first success stops it.
#[test]
fn report_retries_back_off_to_thirty_seconds() {
    let host = cache_host(json!({"mode": "resilient"}), 1);
    let start = host.now();
    miss(&host, 0, "alice", 200);
    hit(&host, 0, "alice").reset();
    let mut at = Vec::new();
    while at.len() < 8 {
        host.advance_clock(SECOND);
        if let Some(c) = host.pending_calls().into_iter().next() {
            assert_eq!(authrep(&c), ("alice".to_owned(), 1));
            at.push(host.now().duration_since(start).unwrap().as_secs());
            if at.len() < 8 {
                c.fail_503();
            } else {
                c.respond(200, NO_HEADERS, b"");
            }
        }
        assert!(host.now().duration_since(start).unwrap() < Duration::from_secs(300));
    }
    assert_eq!(at, [1, 3, 7, 15, 31, 61, 91, 121]);
    host.advance_clock(100 * SECOND);
    assert!(host.pending_calls().is_empty());
    assert_eq!(cached(&host, "report_failed"), 8);
    check(&host, &["k1"]);
}

#[test]
fn every_cache_and_batch_counter_is_defined_at_configure() {
    let host = cache_host(json!({}), 1);
    let names = host.metric_names();
    for event in [
        "hit",
        "denied_hit",
        "miss",
        "joined",
        "stale",
        "assumed",
        "report",
        "coalesced",
        "uncacheable",
        "report_dropped",
        "report_failed",
    ] {
        let name = format!("tollgate.cache.{event}");
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for event in [
        "queued",
        "dropped",
        "flushed",
        "transactions",
        "flush_failed",
        "lease_taken",
    ] {
        let name = format!("tollgate.batch.{event}");
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    check(&host, &[]);
}

/// A request's call goes out at once even when the worker has many background reports
/// queued (retries that came due together after an outage): the request waits for its own
/// answer, not behind reports no client waits for.
#[test]
fn a_miss_is_not_queued_behind_background_reports() {
    let host = cache_host(json!({"mode": "resilient", "max_keys": 1 << 20}), 1);
    let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    for u in &users {
        miss(&host, 0, u, 200);
    }
    for u in &users {
        hit(&host, 0, u).fail_503();
    }
    // The retries come due at once; the control service is slow to answer them.
    host.advance_clock(SECOND);
    let out = host.pending_calls().len();
    assert!(out < 300, "{out} retries out at once");
    let s = get(&host, 0, SG, &mail("zed"));
    let mine: Vec<_> = host
        .pending_calls()
        .into_iter()
        .filter(|c| authrep(c).0 == "zed")
        .collect();
    assert_eq!(mine.len(), 1, "the request's call was not sent");
    mine.into_iter()
        .next()
        .unwrap()
        .respond(200, NO_HEADERS, b"");
    went_upstream(&s);
    check(&host, &["k1"]);
}

/// Where the last answer stands (resilient, allow), an authorization past its TTL is what
/// admits its client during an outage: a flood of bad keys must not displace it either.
#[test]
fn a_flood_of_bad_keys_keeps_the_stale_authorizations_resilient_mode_falls_back_on() {
    for mode in [Mode::Resilient, Mode::Allow] {
        let host = cache_host(json!({"mode": mode.name(), "max_keys": 64}), 1);
        miss(&host, 0, "alice", 200);
        host.advance_clock(61 * SECOND);
        for i in 0..2000 {
            miss(&host, 0, &format!("bad{i}"), 403);
        }
        let s = failed(&host, 0, "alice", Failure::Unreachable);
        went_upstream(&s);
        assert_eq!(cached(&host, "stale"), 1, "{mode:?}");
        assert_eq!(cached(&host, "assumed"), 0, "{mode:?}");
        check(&host, &["k1"]);
    }
}
