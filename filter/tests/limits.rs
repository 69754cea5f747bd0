//! Local limiters (issue 10) in tollgate.wasm, as a client, the control service and the
//! counters see them: several worker VMs sharing one bucket under the test host's clock, lost
//! compare-and-swaps, a restarted VM, keys kept apart, report-only mode and `RateLimit-*`
//! headers. Every test also checks that no VM trapped and no log line holds a credential.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use std::time::Duration;

const SG: &str = "api.sendgrid.example";
const SERVICE: &str = "2555417735060";
const LIMITED_BODY: &str = r#"{"errors":[{"message":"rate limit exceeded"}]}"#;
const MAIL: &str = "/api/mail.send.json?api_user=alice&api_key=k1";
const MINUTE: Duration = Duration::from_secs(60);

/// One limiter of the service, as FilterConfig JSON.
fn limiter(name: &str, key: &str, limit: &str, mode: &str) -> String {
    format!(
        r#"{{"name": "{name}", "counts": "requests", "key": "{key}", "scope": "service",
            {limit}, "mode": "{mode}", "status": null, "max_keys": 65536}}"#
    )
}

/// `burst` requests at once, then one more per minute.
fn bucket(burst: u64) -> String {
    format!(r#""token_bucket": {{"rate": 1, "per": "minute", "burst": {burst}}}"#)
}

fn window(count: u64, seconds: u64) -> String {
    format!(r#""fixed_window": {{"count": {count}, "window_seconds": {seconds}}}"#)
}

/// SendGrid's FilterConfig with `limiters` on its service.
fn config(limiters: &[String], rate_limit_headers: bool) -> Vec<u8> {
    let mut config: serde_json::Value = serde_json::from_slice(&sendgrid_filter_config()).unwrap();
    let limiters: Vec<serde_json::Value> = limiters
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    config["services"][0]["limiters"] = serde_json::Value::Array(limiters);
    config["services"][0]["rate_limit_headers"] = serde_json::Value::Bool(rate_limit_headers);
    // Each admitted request's own call shows it was admitted: no cache (cache.rs has it).
    config["services"][0]["cache"]["mode"] = serde_json::Value::from("none");
    serde_json::to_vec_pretty(&config).unwrap()
}

fn limited_host(limiters: &[String], headers: bool, workers: usize) -> Host {
    Host::builder(wasm())
        .plugin_config(config(limiters, headers))
        .cluster(CLUSTER)
        .workers(workers)
        .build()
        .unwrap_or_else(|e| panic!("the filter did not configure: {e}"))
}

fn counter(host: &Host, limiter: &str, outcome: &str) -> u64 {
    host.metric(&format!("tollgate.limiter.{SERVICE}.{limiter}.{outcome}"))
}

/// What a client saw of one request.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Asked the control service (answered 200) and went upstream.
    Admitted,
    /// Limited: 429 with this Retry-After, and no call.
    Limited(u64),
}

/// The 429 of a limited request: the service's limits_exceeded error, Retry-After in whole
/// seconds, and no call made for it.
fn limited(stream: &Stream<'_>) -> u64 {
    let r = local_reply(stream);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body_text(), LIMITED_BODY);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(
        stream.pending_calls().is_empty(),
        "a limited request called"
    );
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"))
        .parse()
        .unwrap()
}

/// Sends `path` on `worker`; an admitted request's authrep call is answered 200 and the
/// request must then go upstream.
fn send(host: &Host, worker: usize, path: &str) -> Seen {
    let s = get(host, worker, SG, path);
    if s.outcome() == Outcome::Paused {
        only_call(&s).respond(200, NO_HEADERS, b"");
        assert!(s.outcome().upstream().is_some(), "{:?}", s.outcome());
        Seen::Admitted
    } else {
        Seen::Limited(limited(&s))
    }
}

fn admitted(seen: &[Seen]) -> usize {
    seen.iter().filter(|s| **s == Seen::Admitted).count()
}

/// Requests for one key on 4 worker VMs in turn, their authrep calls left pending while the
/// others come in: exactly the burst is admitted and calls the control service; then each
/// minute the clock moves admits exactly one more, whichever VM asks.
#[test]
fn four_workers_share_one_token_bucket_exactly() {
    let host = limited_host(
        &[limiter("burst", "service", &bucket(10), "enforce")],
        false,
        4,
    );
    let streams: Vec<_> = (0..40).map(|i| get(&host, i % 4, SG, MAIL)).collect();
    let paused: Vec<_> = streams
        .iter()
        .filter(|s| s.outcome() == Outcome::Paused)
        .collect();
    assert_eq!(paused.len(), 10);
    assert_eq!(
        host.pending_calls().len(),
        10,
        "one call per admitted request"
    );
    // The first ten, whatever their VM.
    for (i, s) in streams.iter().enumerate() {
        assert_eq!(s.outcome() == Outcome::Paused, i < 10, "request {i}");
    }
    for s in &streams[10..] {
        // Empty, one token a minute: a minute to wait.
        assert_eq!(limited(s), 60);
    }
    for call in host.pending_calls() {
        call.respond(200, NO_HEADERS, b"");
    }
    assert!(paused.iter().all(|s| s.outcome().upstream().is_some()));

    let mut total = 10;
    for minutes in [1u32, 3, 2] {
        host.advance_clock(MINUTE * minutes);
        let seen: Vec<Seen> = (0..12).map(|i| send(&host, (i + 1) % 4, MAIL)).collect();
        let n = minutes as usize;
        assert!(seen[..n].iter().all(|s| *s == Seen::Admitted), "{seen:?}");
        assert!(
            seen[n..].iter().all(|s| *s == Seen::Limited(60)),
            "{seen:?}"
        );
        total += n;
    }
    // Half a minute refills half a token: still limited, for the other half.
    host.advance_clock(MINUTE / 2);
    assert_eq!(send(&host, 2, MAIL), Seen::Limited(30));
    host.advance_clock(MINUTE / 2);
    assert_eq!(send(&host, 3, MAIL), Seen::Admitted);
    assert_eq!(send(&host, 0, MAIL), Seen::Limited(60));
    total += 1;

    let refused = 30 + 3 * 12 - 6 + 2;
    assert_eq!(counter(&host, "burst", "admitted"), total as u64);
    assert_eq!(counter(&host, "burst", "limited"), refused);
    assert_eq!(counter(&host, "burst", "contended"), 0);
    assert_eq!(host.metric("tollgate.rate_limited"), refused);
    assert_eq!(host.metric("tollgate.authorized"), total as u64);
    check(&host, &["k1"]);
}

/// A fixed window counts per window of the clock, not from the first request: started 10 s
/// into a minute, its window ends 50 s later and the next admits the count again.
#[test]
fn four_workers_share_one_fixed_window_aligned_to_the_clock() {
    let host = limited_host(
        &[limiter("window", "service", &window(5, 60), "enforce")],
        false,
        4,
    );
    // The host's clock starts on a whole minute.
    host.advance_clock(Duration::from_secs(10));
    let seen: Vec<Seen> = (0..16).map(|i| send(&host, i % 4, MAIL)).collect();
    assert_eq!(admitted(&seen), 5);
    assert!(seen[..5].iter().all(|s| *s == Seen::Admitted), "{seen:?}");
    assert!(
        seen[5..].iter().all(|s| *s == Seen::Limited(50)),
        "{seen:?}"
    );

    host.advance_clock(Duration::from_secs(49));
    assert_eq!(send(&host, 1, MAIL), Seen::Limited(1));
    host.advance_clock(Duration::from_secs(1));
    let seen: Vec<Seen> = (0..8).map(|i| send(&host, (i + 2) % 4, MAIL)).collect();
    assert!(seen[..5].iter().all(|s| *s == Seen::Admitted), "{seen:?}");
    assert!(
        seen[5..].iter().all(|s| *s == Seen::Limited(60)),
        "{seen:?}"
    );

    assert_eq!(counter(&host, "window", "admitted"), 10);
    assert_eq!(counter(&host, "window", "limited"), 11 + 1 + 3);
    assert_eq!(host.metric("tollgate.rate_limited"), 15);
    assert_eq!(host.metric("tollgate.authorized"), 10);
    check(&host, &["k1"]);
}

/// Another worker writes the bucket between a VM's read and its write, 8 times in a row:
/// the 9th attempt (the last the retry bound allows) wins, the request is admitted once and
/// takes one token; the bucket's other 8 tokens are all there is left.
#[test]
fn lost_compare_and_swaps_are_retried_and_count_once() {
    let host = limited_host(
        &[limiter("burst", "service", &bucket(10), "enforce")],
        false,
        2,
    );
    // The first request creates the key (a creation is not raced).
    assert_eq!(send(&host, 0, MAIL), Seen::Admitted);
    host.race_shared_data(8);
    assert_eq!(send(&host, 1, MAIL), Seen::Admitted);
    assert_eq!(host.races_left(), 0, "the filter did not retry 8 times");
    assert_eq!(host.pending_calls().len(), 0);
    let seen: Vec<Seen> = (0..10).map(|i| send(&host, i % 2, MAIL)).collect();
    assert_eq!(admitted(&seen), 8, "{seen:?}");
    assert_eq!(counter(&host, "burst", "admitted"), 10);
    assert_eq!(counter(&host, "burst", "contended"), 0);
    assert_eq!(host.metric("tollgate.authorized"), 10);
    check(&host, &["k1"]);
}

/// More lost races than the bound: after 9 attempts the request is denied (429, Retry-After
/// 1, no call), counted `contended`, and takes nothing from the bucket.
#[test]
fn too_many_lost_compare_and_swaps_deny_and_never_admit() {
    let host = limited_host(
        &[limiter("burst", "service", &bucket(10), "enforce")],
        false,
        2,
    );
    assert_eq!(send(&host, 0, MAIL), Seen::Admitted);
    host.race_shared_data(12);
    assert_eq!(send(&host, 1, MAIL), Seen::Limited(1));
    assert_eq!(host.races_left(), 3, "not exactly 9 attempts");
    assert_eq!(counter(&host, "burst", "contended"), 1);
    assert_eq!(counter(&host, "burst", "limited"), 0);
    assert_eq!(host.metric("tollgate.rate_limited"), 1);
    assert_eq!(host.metric("tollgate.authorized"), 1);
    assert!(host
        .logs()
        .iter()
        .any(|l| l.vm == "worker1" && l.message.contains("could not be updated")));
    // The contended request took no token: 9 are left.
    host.race_shared_data(0);
    let seen: Vec<Seen> = (0..11).map(|i| send(&host, i % 2, MAIL)).collect();
    assert_eq!(admitted(&seen), 9, "{seen:?}");
    assert_eq!(counter(&host, "burst", "admitted"), 10);
    check(&host, &["k1"]);
}

/// The bucket lives in shared data, not in a VM's memory: a worker VM restarted (a fresh
/// instance, configured again) still refuses the exhausted key, and refills at the same rate.
#[test]
fn a_restarted_vm_keeps_limiting_an_exhausted_key() {
    let host = limited_host(
        &[limiter("burst", "service", &bucket(10), "enforce")],
        false,
        2,
    );
    let seen: Vec<Seen> = (0..11).map(|_| send(&host, 0, MAIL)).collect();
    assert_eq!(admitted(&seen), 10);
    assert_eq!(seen[10], Seen::Limited(60));

    let configured = |host: &Host| {
        host.logs()
            .iter()
            .filter(|l| l.vm == "worker0" && l.message.starts_with("configured "))
            .count()
    };
    assert_eq!(configured(&host), 1);
    host.restart_vm(1).unwrap();
    assert_eq!(configured(&host), 2, "worker0 was not configured again");
    assert_eq!(host.reloads(), 0);

    assert_eq!(send(&host, 0, MAIL), Seen::Limited(60));
    host.advance_clock(MINUTE);
    assert_eq!(send(&host, 0, MAIL), Seen::Admitted);
    assert_eq!(send(&host, 0, MAIL), Seen::Limited(60));
    // The other worker, never restarted, agrees.
    assert_eq!(send(&host, 1, MAIL), Seen::Limited(60));
    assert_eq!(host.metric("tollgate.authorized"), 11);
    check(&host, &["k1"]);
}

/// Keyed by application, two user keys have a bucket each.
#[test]
fn applications_are_limited_independently() {
    // SendGrid's service with user keys (backend version 1) instead of app id and key.
    let config = String::from_utf8(config(
        &[limiter("per_app", "application", &bucket(2), "enforce")],
        false,
    ))
    .unwrap();
    assert!(config.contains("\"backend_version\": \"2\""));
    let host = Host::builder(wasm())
        .plugin_config(config.replacen(
            "\"backend_version\": \"2\"",
            "\"backend_version\": \"1\"",
            1,
        ))
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap();
    let s = get(&host, 0, SG, "/api/mail.send.json?user_key=a");
    let call = only_call(&s);
    assert!(
        call.header(":path").unwrap().contains("user_key=a&"),
        "{call:?}"
    );
    call.respond(200, NO_HEADERS, b"");
    let a = "/api/mail.send.json?user_key=a";
    let b = "/api/mail.send.json?user_key=b";
    assert_eq!(send(&host, 1, a), Seen::Admitted);
    assert_eq!(send(&host, 0, a), Seen::Limited(60));
    assert_eq!(send(&host, 1, b), Seen::Admitted);
    assert_eq!(send(&host, 0, b), Seen::Admitted);
    assert_eq!(send(&host, 1, b), Seen::Limited(60));
    assert_eq!(send(&host, 1, a), Seen::Limited(60));
    assert_eq!(counter(&host, "per_app", "admitted"), 4);
    assert_eq!(counter(&host, "per_app", "limited"), 3);
    check(&host, &[]);
}

/// Keyed by a header, two end users of one application have a bucket each; requests
/// without the header share the bucket of the empty value.
#[test]
fn end_users_are_limited_independently() {
    let host = limited_host(
        &[limiter("per_user", "header:x-user", &bucket(1), "enforce")],
        false,
        2,
    );
    let as_user = |worker: usize, user: Option<&str>| {
        let mut headers = vec![
            (":method", "GET"),
            (":path", MAIL),
            (":authority", SG),
            (":scheme", "https"),
        ];
        if let Some(user) = user {
            headers.push(("x-user", user));
        }
        let s = host.worker(worker).request(headers);
        if s.outcome() == Outcome::Paused {
            only_call(&s).respond(200, NO_HEADERS, b"");
            assert!(s.outcome().upstream().is_some());
            Seen::Admitted
        } else {
            Seen::Limited(limited(&s))
        }
    };
    assert_eq!(as_user(0, Some("alice")), Seen::Admitted);
    assert_eq!(as_user(1, Some("alice")), Seen::Limited(60));
    assert_eq!(as_user(1, Some("bob")), Seen::Admitted);
    assert_eq!(as_user(0, Some("bob")), Seen::Limited(60));
    assert_eq!(as_user(0, None), Seen::Admitted);
    assert_eq!(as_user(1, None), Seen::Limited(60));
    assert_eq!(counter(&host, "per_user", "admitted"), 3);
    assert_eq!(counter(&host, "per_user", "limited"), 3);
    check(&host, &["k1"]);
}

/// A report-only limiter lets everything through to the control service, counting what it
/// would have refused.
#[test]
fn report_only_admits_over_the_limit_and_counts_it() {
    let host = limited_host(
        &[limiter("trial", "service", &bucket(2), "report_only")],
        false,
        2,
    );
    let seen: Vec<Seen> = (0..5).map(|i| send(&host, i % 2, MAIL)).collect();
    assert_eq!(admitted(&seen), 5, "{seen:?}");
    assert_eq!(counter(&host, "trial", "admitted"), 2);
    assert_eq!(counter(&host, "trial", "report_only"), 3);
    assert_eq!(counter(&host, "trial", "limited"), 0);
    assert_eq!(host.metric("tollgate.rate_limited"), 0);
    assert_eq!(host.metric("tollgate.authorized"), 5);
    check(&host, &["k1"]);
}

fn rate_headers(headers: &tollgate_testhost::Headers) -> [Option<String>; 3] {
    ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"].map(|n| headers.get(n))
}

fn some3(limit: u64, remaining: u64, reset: u64) -> [Option<String>; 3] {
    [limit, remaining, reset].map(|v| Some(v.to_string()))
}

/// `rate_limit_headers: true`: the client's response, after the control service's 200 and
/// the upstream's, says the tightest of the limits (fewest left); a 429 says the limit that
/// refused it.
#[test]
fn rate_limit_headers_say_the_tightest_limit() {
    let fast = r#""token_bucket": {"rate": 1, "per": "second", "burst": 2}"#;
    let host = limited_host(
        &[
            limiter("fast", "service", fast, "enforce"),
            limiter("hourly", "service", &window(3, 3600), "enforce"),
        ],
        true,
        2,
    );
    let admitted = |worker: usize| {
        let s = get(&host, worker, SG, MAIL);
        only_call(&s).respond(200, NO_HEADERS, b"");
        assert!(s.outcome().upstream().is_some());
        let r = s.response(&[(":status", "200")]).unwrap();
        assert_eq!(r.status, 200);
        rate_headers(&r.headers)
    };
    // fast: 1 of 2 left, full in 1 s; hourly: 2 of 3 left, for the hour.
    assert_eq!(admitted(0), some3(2, 1, 1));
    host.advance_clock(Duration::from_secs(1));
    // fast refilled: 1 of 2; hourly: 1 of 3 (a tie keeps the first).
    assert_eq!(admitted(1), some3(2, 1, 1));
    host.advance_clock(Duration::from_secs(1));
    // hourly: none of 3 left, 3598 s to go.
    assert_eq!(admitted(0), some3(3, 0, 3598));
    host.advance_clock(Duration::from_secs(1));
    let s = get(&host, 1, SG, MAIL);
    assert_eq!(limited(&s), 3597);
    assert_eq!(rate_headers(&local_reply(&s).headers), some3(3, 0, 3597));
    assert_eq!(counter(&host, "hourly", "limited"), 1);
    assert_eq!(host.metric("tollgate.rate_limited"), 1);
    // The next hour's window admits again.
    host.advance_clock(Duration::from_secs(3597));
    assert_eq!(admitted(0), some3(2, 1, 1));
    check(&host, &["k1"]);
}
