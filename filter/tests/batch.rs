//! APIcast's 3scale Batcher in tollgate.wasm (issue 11), as the client and the control
//! service see it: misses authorize (`GET /transactions/authorize.xml`), answers are cached
//! `auths_ttl_seconds`, admitted usage is summed in shared data and one VM of the whole Envoy
//! (main + 4 workers all tick) reports it with `POST /transactions.xml` every
//! `batch_report_seconds`; the lease passes on when its holder is restarted, a failed report
//! is retried with backoff and its usage kept, and `max_pending` bounds what waits. The clock
//! is the test host's; every test checks that no VM trapped and no log line holds a
//! credential.
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
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tollgate_testhost::{HostCall, Hostile, Status};

const SG: &str = "api.sendgrid.example";
const SERVICE: &str = "2555417735060";
const SG_TOKEN: &str = "sendgrid-service-token-8f2c1b7e";
const SG_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e";
const AUTHORIZE: &str = "/transactions/authorize.xml?";
const REPORT: &str = "/transactions.xml";
const SECOND: Duration = Duration::from_secs(1);

fn mail(user: &str) -> String {
    format!("/api/mail.send.json?api_user={user}&api_key=k1")
}

/// SendGrid's FilterConfig with `batching` on its service.
fn config(batching: Value) -> Vec<u8> {
    let mut config: Value = serde_json::from_slice(&sendgrid_filter_config()).unwrap();
    let mut b = json!({"auths_ttl_seconds": 10, "batch_report_seconds": 10, "max_pending": 4096});
    for (k, v) in batching.as_object().unwrap() {
        b[k] = v.clone();
    }
    config["services"][0]["batching"] = b;
    serde_json::to_vec_pretty(&config).unwrap()
}

fn batch_host(batching: Value, workers: usize) -> Host {
    Host::builder(wasm())
        .plugin_config(config(batching))
        .cluster(CLUSTER)
        .workers(workers)
        .build()
        .unwrap_or_else(|e| panic!("the filter did not configure: {e}"))
}

fn batched(host: &Host, event: &str) -> u64 {
    host.metric(&format!("tollgate.batch.{event}"))
}

/// Usage per application (app_id) of the mail metric.
type Usage = BTreeMap<String, u64>;

/// A report the control service got.
#[derive(Debug)]
struct Post {
    /// Seconds since the host started.
    at: u64,
    vm: String,
    usage: Usage,
    transactions: usize,
}

/// Reads a `POST /transactions.xml`: its headers, the service's parameters, then per
/// transaction an app_id and the mail usage (an application in two transactions is summed,
/// as 3scale does).
fn read_post(call: &Call<'_>, at: u64) -> Post {
    assert_eq!(call.cluster(), CLUSTER);
    assert_eq!(call.header(":method").as_deref(), Some("POST"));
    assert_eq!(call.header(":path").as_deref(), Some(REPORT));
    assert_eq!(call.header(":authority").as_deref(), Some("su1.3scale.net"));
    assert_eq!(call.timeout(), Some(Duration::from_millis(1000)));
    assert_eq!(
        call.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let body = String::from_utf8(call.body().to_vec()).unwrap();
    let rest = body
        .strip_prefix(&format!("service_id={SERVICE}&service_token={SG_TOKEN}&"))
        .unwrap_or_else(|| panic!("{body}"));
    let mut apps: BTreeMap<usize, (Option<String>, u64)> = BTreeMap::new();
    for pair in rest.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{body}"));
        let k = k
            .strip_prefix("transactions%5B")
            .unwrap_or_else(|| panic!("{body}"));
        let (i, field) = k.split_once("%5D%5B").unwrap_or_else(|| panic!("{body}"));
        let entry = apps.entry(i.parse().unwrap()).or_default();
        match field {
            "app_id%5D" => entry.0 = Some(v.to_owned()),
            "usage%5D%5Bmail%5D" => entry.1 += v.parse::<u64>().unwrap(),
            other => panic!("unexpected field {other} in {body}"),
        }
        // Never the application's key.
        assert!(!field.contains("app_key"), "{body}");
    }
    let transactions = apps.len();
    assert_eq!(
        apps.keys().copied().collect::<Vec<_>>(),
        (0..transactions).collect::<Vec<_>>(),
        "{body}"
    );
    let mut usage = Usage::new();
    for (_, (app, hits)) in apps {
        assert!(hits > 0, "{body}");
        *usage
            .entry(app.unwrap_or_else(|| panic!("{body}")))
            .or_default() += hits;
    }
    Post {
        at,
        vm: call.vm(),
        usage,
        transactions,
    }
}

/// The control service: authorizes everyone, takes every report.
struct Control {
    start: SystemTime,
    posts: Vec<Post>,
    authorizes: usize,
}

impl Control {
    fn new(host: &Host) -> Self {
        Control {
            start: host.now(),
            posts: Vec::new(),
            authorizes: 0,
        }
    }

    fn now(&self, host: &Host) -> u64 {
        host.now().duration_since(self.start).unwrap().as_secs()
    }

    /// Answers every pending call 200.
    fn serve(&mut self, host: &Host) {
        for call in host.pending_calls() {
            let path = call.header(":path").unwrap();
            if path.starts_with(AUTHORIZE) {
                self.authorizes += 1;
            } else {
                let post = read_post(&call, self.now(host));
                self.posts.push(post);
            }
            call.respond(200, NO_HEADERS, b"");
        }
    }

    /// Everything the reports carried.
    fn reported(&self) -> Usage {
        let mut total = Usage::new();
        for p in &self.posts {
            for (app, n) in &p.usage {
                *total.entry(app.clone()).or_default() += n;
            }
        }
        total
    }

    fn times(&self) -> Vec<u64> {
        self.posts.iter().map(|p| p.at).collect()
    }
}

fn went_upstream(s: &Stream<'_>) {
    let Outcome::Continued(up) = s.outcome() else {
        panic!("not forwarded: {:?}", s.outcome());
    };
    assert_eq!(
        up.headers.get_all("x-3scale-proxy-secret-token"),
        [SG_SECRET]
    );
}

/// A request of `user` on `worker`, served by `control` if it waits; it must go upstream.
fn admit(host: &Host, control: &mut Control, worker: usize, user: &str, admitted: &mut Usage) {
    let s = get(host, worker, SG, &mail(user));
    if s.outcome() == Outcome::Paused {
        let call = only_call(&s);
        let path = call.header(":path").unwrap();
        assert!(path.starts_with(AUTHORIZE), "{path}");
        assert!(
            path.contains(&format!("&app_id={user}&app_key=k1")),
            "{path}"
        );
        control.serve(host);
    }
    went_upstream(&s);
    *admitted.entry(user.to_owned()).or_default() += 1;
}

/// Four workers and main over 45 s of clock, requests every second on every worker: one
/// report every 10 s, from one VM, carrying exactly what was admitted.
#[test]
fn one_report_per_interval_for_four_workers_and_main() {
    let host = batch_host(json!({}), 4);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    let users = ["alice", "bob", "carol"];
    for second in 0..35 {
        for w in 0..4 {
            admit(
                &host,
                &mut control,
                w,
                users[(second + w) % 3],
                &mut admitted,
            );
        }
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    // Nothing more comes in; what waits goes with the next report.
    for _ in 0..10 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    let times = control.times();
    eprintln!(
        "reports at {times:?} s from {:?}; {} authorize calls for 140 requests",
        control.posts.iter().map(|p| &p.vm).collect::<Vec<_>>(),
        control.authorizes
    );
    assert_eq!(times.len(), 4, "{:#?}", control.posts);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 10, "{times:?}");
    }
    let vms: Vec<&str> = control.posts.iter().map(|p| p.vm.as_str()).collect();
    assert!(vms.iter().all(|v| *v == vms[0]), "one flusher: {vms:?}");
    assert_eq!(control.reported(), admitted);
    assert_eq!(admitted.values().sum::<u64>(), 140);
    assert_eq!(batched(&host, "lease_taken"), 1);
    assert_eq!(batched(&host, "queued"), 140);
    assert_eq!(batched(&host, "flushed"), 4);
    assert_eq!(
        batched(&host, "transactions"),
        control
            .posts
            .iter()
            .map(|p| p.transactions as u64)
            .sum::<u64>()
    );
    assert_eq!(
        batched(&host, "dropped") + batched(&host, "flush_failed"),
        0
    );
    // auths_ttl_seconds (10): each worker authorizes a key about once per 10 s, not per
    // request; the answer is shared, so fewer still.
    assert!(control.authorizes <= 3 * 4 * 4, "{}", control.authorizes);
    assert!(control.authorizes >= 3, "{}", control.authorizes);
    assert_eq!(host.metric("tollgate.authorized"), 140);
    check(&host, &["k1"]);
}

/// The holder of the lease is restarted (half-way through a second, so that the fresh
/// instance ticks after the others): another VM takes over once the lease runs out, the
/// schedule still allows one report per interval, and no usage is lost or reported twice.
#[test]
fn the_lease_passes_on_when_its_holder_is_restarted() {
    let host = batch_host(json!({}), 4);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    let users = ["alice", "bob"];
    let mut restarted = Vec::new();
    let mut second = 0;
    while control.now(&host) < 45 {
        if second < 38 {
            for w in 0..4 {
                admit(
                    &host,
                    &mut control,
                    w,
                    users[(second + w) % 2],
                    &mut admitted,
                );
            }
        }
        second += 1;
        host.advance_clock(SECOND);
        control.serve(&host);
        // Right after each of the first two reports, its sender is restarted.
        if control.posts.len() > restarted.len() && restarted.len() < 2 {
            let holder = control.posts.last().unwrap().vm.clone();
            let index = match holder.as_str() {
                "main" => 0,
                w => w.strip_prefix("worker").unwrap().parse::<usize>().unwrap() + 1,
            };
            host.advance_clock(SECOND / 2);
            host.restart_vm(index).unwrap();
            host.advance_clock(SECOND / 2);
            restarted.push(holder);
            control.serve(&host);
        }
    }
    let times = control.times();
    let vms: Vec<&str> = control.posts.iter().map(|p| p.vm.as_str()).collect();
    eprintln!("restarted {restarted:?}; reports at {times:?} s from {vms:?}");
    assert_eq!(times.len(), 4, "{:#?}", control.posts);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 10, "{times:?}");
    }
    // Each restart handed the reports to another VM.
    assert_eq!(restarted, vms[..2]);
    assert_ne!(vms[0], vms[1]);
    assert_ne!(vms[1], vms[2]);
    assert_eq!(vms[2], vms[3]);
    assert_eq!(control.reported(), admitted);
    assert_eq!(batched(&host, "lease_taken"), 3);
    // Three flushers, each a VM id of its own.
    let mut flushers: Vec<String> = host
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("batching: this VM (flusher "))
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(flushers.len(), 3, "{flushers:?}");
    flushers.sort();
    flushers.dedup();
    assert_eq!(flushers.len(), 3, "{flushers:?}");
    check(&host, &["k1"]);
}

/// A report that fails (503, no answer, a timeout) keeps its usage: the next attempt, after
/// 1 s, 2 s, then 4 s, carries it with what came in since.
#[test]
fn a_failed_reports_usage_goes_in_the_next_one_with_backoff() {
    let host = batch_host(json!({}), 2);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    for (w, user) in [(0, "alice"), (1, "alice"), (0, "bob"), (1, "alice")] {
        admit(&host, &mut control, w, user, &mut admitted);
    }
    let mut attempts: Vec<(u64, Usage)> = Vec::new();
    fn next<'h>(host: &'h Host, control: &Control, attempts: &mut Vec<(u64, Usage)>) -> Call<'h> {
        let calls = host.pending_calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let call = calls.into_iter().next().unwrap();
        let post = read_post(&call, control.now(host));
        attempts.push((post.at, post.usage));
        call
    }
    // The schedule starts at the first tick (1 s): the first report at 11 s.
    host.advance_clock(11 * SECOND);
    next(&host, &control, &mut attempts).fail_503();
    assert_eq!(batched(&host, "flush_failed"), 1);
    admit(&host, &mut control, 1, "carol", &mut admitted);
    host.advance_clock(SECOND);
    next(&host, &control, &mut attempts).reset();
    host.advance_clock(SECOND);
    assert!(
        host.pending_calls().is_empty(),
        "2 s after the second failure"
    );
    host.advance_clock(SECOND);
    // This one times out (the control service's timeout is 1 s).
    let _ = next(&host, &control, &mut attempts);
    host.advance_clock(SECOND);
    assert_eq!(batched(&host, "flush_failed"), 3);
    host.advance_clock(3 * SECOND);
    assert!(
        host.pending_calls().is_empty(),
        "4 s after the third failure"
    );
    host.advance_clock(SECOND);
    let last = next(&host, &control, &mut attempts);
    last.respond(200, NO_HEADERS, b"");
    let when: Vec<u64> = attempts.iter().map(|(at, _)| *at).collect();
    assert_eq!(when, [11, 12, 14, 19]);
    let first = Usage::from([("alice".to_owned(), 3), ("bob".to_owned(), 1)]);
    assert_eq!(attempts[0].1, first);
    assert_eq!(attempts[3].1, admitted);
    assert_eq!(admitted["carol"], 1);
    assert_eq!(batched(&host, "flushed"), 1);
    // Back on schedule: nothing waits, nothing is sent again.
    for _ in 0..30 {
        host.advance_clock(SECOND);
        assert!(host.pending_calls().is_empty());
    }
    check(&host, &["k1"]);
}

/// At `max_pending` applications waiting, another application's usage is dropped and
/// counted; its requests are still admitted. Once a report empties the slots it is queued
/// again.
#[test]
fn max_pending_bounds_what_waits_and_counts_the_drops() {
    let host = batch_host(json!({"max_pending": 1}), 2);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    for (w, user) in [
        (0, "alice"),
        (1, "bob"),
        (0, "alice"),
        (1, "bob"),
        (1, "alice"),
    ] {
        admit(&host, &mut control, w, user, &mut admitted);
    }
    assert_eq!(batched(&host, "queued"), 3);
    assert_eq!(batched(&host, "dropped"), 2);
    assert_eq!(host.metric("tollgate.authorized"), 5);
    for _ in 0..11 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    assert_eq!(control.times(), [11]);
    assert_eq!(control.reported(), Usage::from([("alice".to_owned(), 3)]));
    // The slot is free again.
    admit(&host, &mut control, 0, "bob", &mut admitted);
    for _ in 0..10 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    assert_eq!(control.times(), [11, 21]);
    assert_eq!(control.posts[1].usage, Usage::from([("bob".to_owned(), 1)]));
    assert_eq!(batched(&host, "dropped"), 2);
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|l| l.message.contains("usage dropped") && l.message.contains(SERVICE)),
        "{logs:#?}"
    );
    check(&host, &["k1"]);
}

/// Denials are cached `auths_ttl_seconds` too, and nothing of theirs is queued.
#[test]
fn batched_denials_are_cached_for_auths_ttl() {
    let host = batch_host(json!({}), 2);
    let s = get(&host, 0, SG, &mail("mallory"));
    only_call(&s).respond(403, NO_HEADERS, b"");
    assert_eq!(local_reply(&s).status, 403);
    let s = get(&host, 0, SG, &mail("limited"));
    only_call(&s).respond(
        409,
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-reset", "60"),
        ],
        b"",
    );
    assert_eq!(local_reply(&s).status, 429);
    host.advance_clock(10 * SECOND - Duration::from_millis(1));
    let s = get(&host, 1, SG, &mail("mallory"));
    assert_eq!(local_reply(&s).status, 403);
    let s = get(&host, 1, SG, &mail("limited"));
    let r = local_reply(&s);
    assert_eq!(r.status, 429);
    // 60 s from the answer, 10 s ago.
    assert_eq!(r.header("retry-after").as_deref(), Some("51"));
    assert!(host.pending_calls().is_empty());
    assert_eq!(host.metric("tollgate.cache.denied_hit"), 2);
    host.advance_clock(Duration::from_millis(1));
    let s = get(&host, 1, SG, &mail("mallory"));
    assert!(only_call(&s)
        .header(":path")
        .unwrap()
        .starts_with(AUTHORIZE));
    assert_eq!(batched(&host, "queued"), 0);
    check(&host, &["k1"]);
}

/// Misses of one key on one worker share one authorize; every one of them is queued, the
/// leader too (an authorize reports nothing).
#[test]
fn requests_that_shared_an_authorize_are_all_queued() {
    let host = batch_host(json!({}), 1);
    let mut control = Control::new(&host);
    let streams: Vec<_> = (0..3).map(|_| get(&host, 0, SG, &mail("alice"))).collect();
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let path = calls[0].header(":path").unwrap();
    assert!(path.starts_with(AUTHORIZE), "{path}");
    control.serve(&host);
    for s in &streams {
        went_upstream(s);
    }
    // A hit on the cached answer: no call at all.
    went_upstream(&get(&host, 0, SG, &mail("alice")));
    assert!(host.pending_calls().is_empty());
    assert_eq!(batched(&host, "queued"), 4);
    assert_eq!(host.metric("tollgate.cache.report"), 0);
    for _ in 0..11 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    assert_eq!(control.authorizes, 1);
    assert_eq!(control.times(), [11]);
    assert_eq!(control.reported(), Usage::from([("alice".to_owned(), 4)]));
    check(&host, &["k1"]);
}

/// With `cache.mode` resilient, an authorization past auths_ttl stands when the authorize
/// fails, and its usage is queued; in strict the request is refused and nothing is queued.
#[test]
fn a_failed_authorize_is_refused_in_strict_and_admitted_and_queued_in_resilient() {
    for mode in ["strict", "resilient"] {
        let mut config: Value = serde_json::from_slice(&config(json!({}))).unwrap();
        config["services"][0]["cache"]["mode"] = json!(mode);
        let host = Host::builder(wasm())
            .plugin_config(serde_json::to_vec(&config).unwrap())
            .cluster(CLUSTER)
            .workers(2)
            .build()
            .unwrap();
        let mut control = Control::new(&host);
        let mut admitted = Usage::new();
        admit(&host, &mut control, 0, "alice", &mut admitted);
        host.advance_clock(10 * SECOND);
        // The report of the first request, at 11 s, is not due yet.
        assert!(host.pending_calls().is_empty());
        let s = get(&host, 1, SG, &mail("alice"));
        only_call(&s).fail_503();
        if mode == "resilient" {
            went_upstream(&s);
            assert_eq!(host.metric("tollgate.cache.stale"), 1);
            *admitted.entry("alice".to_owned()).or_default() += 1;
        } else {
            assert_eq!(local_reply(&s).status, 403, "{mode}");
            assert_eq!(host.metric("tollgate.control_service_error"), 1);
        }
        for _ in 0..2 {
            host.advance_clock(SECOND);
            control.serve(&host);
        }
        assert_eq!(control.times(), [11], "{mode}");
        assert_eq!(control.reported(), admitted, "{mode}");
        check(&host, &["k1"]);
    }
}

/// Other workers writing the same slot between a worker's read and its write (lost
/// compare-and-swaps) cost retries, not usage: the report carries every admitted request.
#[test]
fn lost_races_on_the_pending_usage_lose_nothing() {
    let host = batch_host(json!({}), 4);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    admit(&host, &mut control, 0, "alice", &mut admitted);
    for i in 0..20 {
        host.race_shared_data(3);
        admit(&host, &mut control, i % 4, "alice", &mut admitted);
        assert_eq!(host.races_left(), 0, "the add did not retry");
    }
    assert_eq!(batched(&host, "dropped"), 0);
    for _ in 0..11 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    assert_eq!(control.reported(), Usage::from([("alice".to_owned(), 21)]));
    check(&host, &["k1"]);
}

/// 2,000 applications in one interval against `max_pending` 64 and `max_keys` 64: the
/// shared data holds a bounded number of keys, and what could not wait is counted.
#[test]
fn a_flood_of_applications_keeps_shared_data_bounded() {
    let mut config: Value = serde_json::from_slice(&config(json!({"max_pending": 64}))).unwrap();
    config["services"][0]["cache"]["max_keys"] = json!(64);
    let host = Host::builder(wasm())
        .plugin_config(serde_json::to_vec(&config).unwrap())
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap();
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    for i in 0..2000 {
        admit(
            &host,
            &mut control,
            i % 2,
            &format!("app{i}"),
            &mut admitted,
        );
    }
    let queued = batched(&host, "queued");
    let dropped = batched(&host, "dropped");
    eprintln!(
        "{queued} queued, {dropped} dropped, {} shared-data keys",
        host.shared_data_keys().len()
    );
    assert_eq!(queued + dropped, 2000);
    assert!(queued <= 64, "{queued}");
    // 64 cache slots, 64 usage slots, the used-slot bitmap, the schedule, the lease, the VM
    // ids.
    assert!(host.shared_data_keys().len() <= 64 + 64 + 4);
    for _ in 0..11 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    assert_eq!(control.times(), [11]);
    let reported = control.reported();
    assert_eq!(reported.values().sum::<u64>(), queued);
    assert!(reported.values().all(|n| *n == 1));
    assert!(reported.keys().all(|app| admitted.contains_key(app)));
    // Drops are logged once a second at most per VM, with their count.
    let lines = host
        .logs()
        .iter()
        .filter(|l| l.message.contains("usage dropped"))
        .count();
    assert!((1..=4).contains(&lines), "{lines} lines about drops");
    check(&host, &["k1"]);
}

/// Every shared-data key overwritten with bytes that mean nothing (another plugin with the
/// same vm_id, or an older format): nothing is trusted, nothing traps, and from then on
/// requests are authorized, cached and reported as before.
#[test]
fn garbage_in_every_shared_data_key_is_never_trusted() {
    let mut config: Value = serde_json::from_slice(&config(json!({"max_pending": 64}))).unwrap();
    config["services"][0]["cache"]["max_keys"] = json!(64);
    let host = Host::builder(wasm())
        .plugin_config(serde_json::to_vec(&config).unwrap())
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap();
    let mut control = Control::new(&host);
    let mut before = Usage::new();
    host.advance_clock(SECOND);
    for (w, user) in [(0, "alice"), (1, "bob"), (1, "alice")] {
        admit(&host, &mut control, w, user, &mut before);
    }
    let keys = host.shared_data_keys();
    assert!(keys.len() >= 6, "{keys:?}");
    for garbage in [&b""[..], b"\x01", b"\xff\xfe\x00garbage", &[1u8; 40]] {
        for k in &keys {
            host.set_shared_data(std::str::from_utf8(k).unwrap(), garbage);
        }
        let mut admitted = Usage::new();
        for (w, user) in [(0, "alice"), (1, "carol"), (0, "alice"), (1, "alice")] {
            admit(&host, &mut control, w, user, &mut admitted);
        }
        control.posts.clear();
        for _ in 0..12 {
            host.advance_clock(SECOND);
            control.serve(&host);
        }
        assert_eq!(control.posts.len(), 1, "{garbage:?}: {:#?}", control.posts);
        // What was queued before the garbage is gone with it; what came after is reported.
        assert_eq!(control.reported(), admitted, "{garbage:?}");
    }
    check(&host, &["k1"]);
}

/// The host refuses the report's call: its usage is put back and goes with the next attempt;
/// a store that refuses writes drops usage, counted, and admits the requests all the same.
#[test]
fn a_refused_report_call_is_retried_and_a_refusing_store_drops_counted() {
    let host = batch_host(json!({}), 2);
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    for (w, user) in [(0, "alice"), (1, "bob")] {
        admit(&host, &mut control, w, user, &mut admitted);
    }
    host.advance_clock(10 * SECOND);
    host.set_hostile(&[Hostile {
        call: HostCall::HttpCall,
        status: Status::InternalFailure,
    }]);
    host.advance_clock(SECOND);
    assert!(host.pending_calls().is_empty());
    assert_eq!(batched(&host, "flush_failed"), 1);
    host.set_hostile(&[Hostile {
        call: HostCall::SetSharedData,
        status: Status::InternalFailure,
    }]);
    // Admitted (past auths_ttl: authorized again), but its usage finds no place.
    let s = get(&host, 0, SG, &mail("alice"));
    only_call(&s).respond(200, NO_HEADERS, b"");
    went_upstream(&s);
    assert_eq!(batched(&host, "dropped"), 1);
    assert_eq!(batched(&host, "queued"), 2);
    host.set_hostile(&[]);
    host.advance_clock(SECOND);
    control.serve(&host);
    assert_eq!(control.times(), [12]);
    assert_eq!(control.reported(), admitted);
    assert_eq!(batched(&host, "flushed"), 1);
    check(&host, &["k1"]);
}

/// A 3scale proxy configuration with the `caching` and `3scale_batcher` policies runs as
/// their FilterConfig does: resilient answers, authorizes cached `auths_ttl`, reports every
/// `batch_report_seconds`.
#[test]
fn the_caching_and_batcher_policies_of_a_3scale_configuration() {
    let mut config: Value = serde_json::from_slice(&sendgrid()).unwrap();
    config["services"][0]["proxy"]["policy_chain"] = json!([
        {"name": "caching", "version": "builtin", "configuration": {"caching_type": "resilient"}},
        {"name": "3scale_batcher", "version": "builtin",
         "configuration": {"auths_ttl": 5, "batch_report_seconds": 20}},
        {"name": "apicast", "version": "builtin", "configuration": {}}
    ]);
    let host = Host::builder(wasm())
        .plugin_config(serde_json::to_vec(&config).unwrap())
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap();
    let mut control = Control::new(&host);
    let mut admitted = Usage::new();
    admit(&host, &mut control, 0, "alice", &mut admitted);
    admit(&host, &mut control, 1, "alice", &mut admitted);
    assert_eq!(control.authorizes, 1);
    // Past auths_ttl (5 s) the control service is down: the last answer stands.
    host.advance_clock(5 * SECOND);
    let s = get(&host, 1, SG, &mail("alice"));
    let call = only_call(&s);
    assert!(call.header(":path").unwrap().starts_with(AUTHORIZE));
    call.fail_503();
    went_upstream(&s);
    *admitted.entry("alice".to_owned()).or_default() += 1;
    assert_eq!(host.metric("tollgate.cache.stale"), 1);
    for _ in 0..17 {
        host.advance_clock(SECOND);
        control.serve(&host);
    }
    // The schedule starts at the first tick (1 s): the first report 20 s after it.
    assert_eq!(control.times(), [21]);
    assert_eq!(control.reported(), admitted);
    check(&host, &["k1"]);
}

/// A user_key service: the report names each application by its user_key, percent-encoded
/// as the authorize's (a query credential is NGINX's raw `$arg_`, so its escapes are
/// escaped again); the key is in no log line.
#[test]
fn user_key_applications_are_reported_by_their_key() {
    let mut config: Value = serde_json::from_slice(&config(json!({}))).unwrap();
    config["services"][0]["backend_version"] = json!("1");
    let host = Host::builder(wasm())
        .plugin_config(serde_json::to_vec(&config).unwrap())
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .unwrap();
    let path = "/api/mail.send.json?user_key=k%26y%2F%C3%BC";
    for w in [0, 1, 1] {
        let s = get(&host, w, SG, path);
        if s.outcome() == Outcome::Paused {
            let call = only_call(&s);
            let p = call.header(":path").unwrap();
            assert!(p.starts_with(AUTHORIZE), "{p}");
            assert!(p.contains("&user_key=k%2526y%252F%25C3%25BC&"), "{p}");
            call.respond(200, NO_HEADERS, b"");
        }
        went_upstream(&s);
    }
    host.advance_clock(11 * SECOND);
    let calls = host.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let body = String::from_utf8(calls[0].body().to_vec()).unwrap();
    assert_eq!(
        body,
        format!(
            "service_id={SERVICE}&service_token={SG_TOKEN}\
             &transactions%5B0%5D%5Buser_key%5D=k%2526y%252F%25C3%25BC\
             &transactions%5B0%5D%5Busage%5D%5Bmail%5D=3"
        )
    );
    calls
        .into_iter()
        .next()
        .unwrap()
        .respond(200, NO_HEADERS, b"");
    assert_eq!(batched(&host, "transactions"), 1);
    check(&host, &["k%26y", "k%2526y"]);
}
