//! The batcher against the fake store: what the control service receives (bodies, how
//! often, from how many VMs), what is counted and logged, and that the store stays bounded.
//! Several `Flusher`s on one `FakeHost` stand for Envoy's workers and its main-thread VM.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::batch::{self, AddOutcome, FlushTicket, Flusher, REPORT_PATH};
use super::fakes::FakeHost;
use super::outbox::{CallMethod, Outgoing, Ticket};
use super::seams::{BatchEvent, Level, SharedStore};
use crate::config::FilterConfig;
use crate::credentials::Credentials;
use crate::diagnostics::Diagnostics;
use crate::index::MetricIndex;
use crate::load;
use crate::model::{Compiled, Service};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_700_000_000_000_000_000;

/// A 3scale service doc: rules `GET /v1` hits 1, `GET /search` search 3.
fn service_doc(id: u64, token: &str, version: Value, host: &str) -> Value {
    json!({
        "id": id, "backend_version": version,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": token,
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": [host],
            "backend": {"endpoint": "http://control.internal:3000"},
            "proxy_rules": [
                {"http_method": "GET", "pattern": "/v1", "metric_system_name": "hits", "delta": 1},
                {"http_method": "GET", "pattern": "/search", "metric_system_name": "search", "delta": 3}
            ]
        }
    })
}

/// Services `(doc, batching)` compiled.
fn compiled(services: Vec<(Value, Value)>) -> Compiled {
    let docs: Vec<Value> = services.iter().map(|(d, _)| d.clone()).collect();
    let loaded = load(json!({ "services": docs }).to_string().as_bytes());
    let config = loaded.config.unwrap();
    let mut value = serde_json::to_value(&config).unwrap();
    for (i, (_, batching)) in services.iter().enumerate() {
        value["services"][i]["batching"] = batching.clone();
    }
    let mut diags = Diagnostics::default();
    let config =
        FilterConfig::from_value(&value, &mut diags).unwrap_or_else(|| panic!("{diags:?}"));
    let loaded = load(serde_json::to_string(&config).unwrap().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.compiled.unwrap()
}

fn batching(interval: u32, max_pending: u32) -> Value {
    json!({"auths_ttl_seconds": 10, "batch_report_seconds": interval, "max_pending": max_pending})
}

/// One user_key service `7` (token `svc-token`) batching every `interval` seconds.
fn one_service(interval: u32, max_pending: u32) -> Compiled {
    compiled(vec![(
        service_doc(7, "svc-token", json!(1), "api.example.com"),
        batching(interval, max_pending),
    )])
}

fn host() -> FakeHost {
    batch::reset_drop_log();
    let host = FakeHost::default();
    host.clock.advance_millis(T0 / 1_000_000);
    host
}

fn metric(service: &Service, name: &str) -> MetricIndex {
    let at = service
        .metrics()
        .iter()
        .position(|m| m.name() == name)
        .unwrap();
    MetricIndex::from_usize(at)
}

fn user_key(key: &str) -> Credentials<'static> {
    Credentials::UserKey(Cow::Owned(key.as_bytes().to_vec()))
}

fn hits(service: &Service, n: i64) -> Vec<(MetricIndex, i64)> {
    vec![(metric(service, "hits"), n)]
}

fn tick(flusher: &mut Flusher, model: &Compiled, host: &FakeHost) -> Vec<Outgoing> {
    let mut out = Vec::new();
    flusher.on_tick(model, host.effects(), &mut out);
    for o in &out {
        assert_eq!(o.method, CallMethod::Post);
        assert_eq!(o.path, REPORT_PATH);
    }
    out
}

fn ticket(o: Outgoing) -> FlushTicket {
    match o.ticket {
        Ticket::Flush(t) => t,
        other => panic!("not a flush: {other:?}"),
    }
}

/// A call's headers, whether the outbox hands them as an iterator or an array.
fn all<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    headers.into_iter().collect()
}

fn body(o: &Outgoing) -> String {
    String::from_utf8(o.body.clone()).unwrap()
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The body's `(key, value)` pairs, decoded.
fn form(o: &Outgoing) -> Vec<(String, String)> {
    body(o)
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect()
}

/// `credential value → (metric → sum)` from a report body.
fn totals(o: &Outgoing) -> Vec<(String, String, u64)> {
    let pairs = form(o);
    let mut who = std::collections::HashMap::new();
    for (k, v) in &pairs {
        if let Some(rest) = k.strip_prefix("transactions[") {
            let (i, field) = rest.split_once("][").unwrap();
            if !field.starts_with("usage") {
                who.insert(i.to_string(), v.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (k, v) in &pairs {
        if let Some(rest) = k.strip_prefix("transactions[") {
            let (i, field) = rest.split_once("][").unwrap();
            if let Some(m) = field.strip_prefix("usage][") {
                let m = m.strip_suffix(']').unwrap();
                out.push((who[i].clone(), m.to_string(), v.parse().unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn sum_of(reports: &[Outgoing]) -> u64 {
    reports.iter().flat_map(totals).map(|(_, _, n)| n).sum()
}

/// Ticks `flusher` once a second until it sends something (at most `secs` ticks).
fn tick_until_report(
    flusher: &mut Flusher,
    model: &Compiled,
    host: &FakeHost,
    secs: u64,
) -> (u64, Vec<Outgoing>) {
    for s in 0..=secs {
        let out = tick(flusher, model, host);
        if !out.is_empty() {
            return (s, out);
        }
        host.clock.advance_millis(1000);
    }
    panic!("no report in {secs} s");
}

#[test]
fn three_requests_of_one_app_are_one_transaction_at_the_interval() {
    let model = one_service(5, 64);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    // The first tick starts the schedule: nothing is sent at once.
    assert!(tick(&mut flusher, &model, &host).is_empty());
    for _ in 0..3 {
        let added = batch::add_usage(service, &user_key("k1"), &hits(service, 1), host.effects());
        assert_eq!(added, AddOutcome::Queued);
    }
    assert_eq!(host.counters.batch_total(BatchEvent::Queued), 3);
    let (after, mut out) = tick_until_report(&mut flusher, &model, &host, 10);
    assert_eq!(after, 5, "reported one interval after the schedule started");
    assert_eq!(out.len(), 1);
    assert_eq!(
        body(&out[0]),
        "service_id=7&service_token=svc-token\
         &transactions%5B0%5D%5Buser_key%5D=k1&transactions%5B0%5D%5Busage%5D%5Bhits%5D=3"
    );
    assert_eq!(
        all(out[0].headers(&model)),
        vec![
            (":method", "POST"),
            (":path", "/transactions.xml"),
            (":authority", service.control_authority()),
            ("content-type", "application/x-www-form-urlencoded"),
        ]
    );
    let t = ticket(out.remove(0));
    assert_eq!(t.transactions(), 1);
    flusher.on_flush_answer(&model, t, Some(200), host.effects());
    assert_eq!(host.counters.batch_total(BatchEvent::Flushed), 1);
    assert_eq!(host.counters.batch_total(BatchEvent::Transactions), 1);
    // Nothing pending: the next intervals send nothing.
    for _ in 0..12 {
        host.clock.advance_millis(1000);
        assert!(tick(&mut flusher, &model, &host).is_empty());
    }
}

#[test]
fn two_apps_are_two_transactions_of_one_post_without_app_key_and_encoded() {
    let model = compiled(vec![(
        service_doc(42, "tok en+/=&x", json!(2), "api.example.com"),
        batching(3, 64),
    )]);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    let app = |id: &str, key: &str| Credentials::AppId {
        app_id: Cow::Owned(id.as_bytes().to_vec()),
        app_key: Cow::Owned(key.as_bytes().to_vec()),
    };
    let usage = vec![(metric(service, "hits"), 1), (metric(service, "search"), 3)];
    batch::add_usage(
        service,
        &app("a b&c", "secret-key-1"),
        &usage,
        host.effects(),
    );
    batch::add_usage(
        service,
        &app("a b&c", "secret-key-1"),
        &hits(service, 2),
        host.effects(),
    );
    batch::add_usage(
        service,
        &app("plain", "secret-key-2"),
        &usage,
        host.effects(),
    );
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 5);
    assert_eq!(out.len(), 1, "one POST for both applications");
    let raw = body(&out[0]);
    assert!(
        raw.starts_with("service_id=42&service_token=tok%20en%2B%2F%3D%26x&"),
        "{raw}"
    );
    assert!(!raw.contains("secret-key"), "no app_key in {raw}");
    assert!(!raw.contains("app_key"), "no app_key in {raw}");
    assert!(raw.contains("%5Bapp_id%5D=a%20b%26c&"), "{raw}");
    assert_eq!(
        totals(&out[0]),
        vec![
            ("a b&c".into(), "hits".into(), 3),
            ("a b&c".into(), "search".into(), 3),
            ("plain".into(), "hits".into(), 1),
            ("plain".into(), "search".into(), 3),
        ]
    );
    // Both transactions are numbered from 0.
    let indices: std::collections::BTreeSet<String> = form(&out[0])
        .into_iter()
        .filter_map(|(k, _)| {
            k.strip_prefix("transactions[")
                .map(|r| r.split(']').next().unwrap().to_string())
        })
        .collect();
    assert_eq!(indices.into_iter().collect::<Vec<_>>(), vec!["0", "1"]);
}

#[test]
fn oauth_reports_the_access_token() {
    let model = compiled(vec![(
        service_doc(9, "t", json!("oauth"), "api.example.com"),
        batching(1, 8),
    )]);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    let token = Credentials::AccessToken(Cow::Borrowed(b"tok/1"));
    batch::add_usage(service, &token, &hits(service, 4), host.effects());
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 2);
    assert!(
        body(&out[0]).ends_with(
            "&transactions%5B0%5D%5Baccess_token%5D=tok%2F1\
             &transactions%5B0%5D%5Busage%5D%5Bhits%5D=4"
        ),
        "{}",
        body(&out[0])
    );
}

#[test]
fn zero_and_negative_deltas_add_nothing() {
    let model = one_service(1, 8);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    batch::add_usage(service, &user_key("k"), &hits(service, 0), host.effects());
    batch::add_usage(service, &user_key("k"), &hits(service, -5), host.effects());
    for _ in 0..3 {
        host.clock.advance_millis(1000);
        assert!(tick(&mut flusher, &model, &host).is_empty());
    }
    batch::add_usage(service, &user_key("k"), &hits(service, -5), host.effects());
    batch::add_usage(service, &user_key("k"), &hits(service, 2), host.effects());
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 2);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 2)]);
}

/// A tiny deterministic generator, so the flood tests need no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn two_services() -> Compiled {
    compiled(vec![
        (
            service_doc(7, "svc-token", json!(1), "api.example.com"),
            batching(5, 256),
        ),
        (
            service_doc(8, "other", json!(1), "other.example.com"),
            batching(7, 256),
        ),
    ])
}

/// Every report answered `status`; `(service index, sent at seconds since T0, report)`.
fn answer_all(
    model: &Compiled,
    host: &FakeHost,
    flusher: &mut Flusher,
    out: Vec<Outgoing>,
    at: u64,
    sent: &mut Vec<(usize, u64, u64)>,
) {
    for o in out {
        sent.push((o.service.as_usize(), at, sum_of(std::slice::from_ref(&o))));
        flusher.on_flush_answer(model, ticket(o), Some(200), host.effects());
    }
}

#[test]
fn five_vms_report_each_service_exactly_once_per_interval() {
    let model = two_services();
    let host = host();
    let mut vms: Vec<Flusher> = (0..5).map(|_| Flusher::default()).collect();
    let mut rng = Lcg(7);
    let mut added = [0u64; 2];
    let mut sent = Vec::new();
    for second in 0..35u64 {
        // Usage all along, between the ticks.
        for _ in 0..20 {
            let s = rng.next(2) as usize;
            let service = &model.services()[s];
            let app = format!("app-{}", rng.next(30));
            let n = 1 + rng.next(3) as i64;
            if batch::add_usage(service, &user_key(&app), &hits(service, n), host.effects())
                == AddOutcome::Queued
            {
                added[s] += n as u64;
            }
        }
        // Each VM ticks once a second, in an order that changes.
        let first = rng.next(5) as usize;
        for k in 0..5 {
            let vm = &mut vms[(first + k) % 5];
            let out = tick(vm, &model, &host);
            answer_all(&model, &host, vm, out, second, &mut sent);
        }
        host.clock.advance_millis(1000);
    }
    assert_eq!(host.counters.batch_total(BatchEvent::Dropped), 0);
    // Then usage stops; one more interval of each drains what is pending.
    for second in 35..45u64 {
        for vm in vms.iter_mut() {
            let out = tick(vm, &model, &host);
            answer_all(&model, &host, vm, out, second, &mut sent);
        }
        host.clock.advance_millis(1000);
    }
    for (s, interval) in [(0usize, 5u64), (1, 7)] {
        let times: Vec<u64> = sent
            .iter()
            .filter(|(i, _, _)| *i == s)
            .map(|(_, t, _)| *t)
            .collect();
        // The schedule starts at the first tick (second 0); usage is added until 34 s, so
        // every interval up to 35 s has some, and none after.
        let expected: Vec<u64> = (1..)
            .map(|k| k * interval)
            .take_while(|t| *t <= 35)
            .collect();
        assert_eq!(times, expected, "service {s}: one POST per interval");
        let total: u64 = sent
            .iter()
            .filter(|(i, _, _)| *i == s)
            .map(|(_, _, n)| n)
            .sum();
        assert_eq!(
            total, added[s],
            "service {s}: every hit added was reported once"
        );
    }
    assert_eq!(
        host.counters.batch_total(BatchEvent::LeaseTaken),
        1,
        "one VM took the lease and kept it"
    );
}

#[test]
fn another_vm_takes_over_when_the_holder_stops_ticking() {
    let model = one_service(5, 64);
    let service = &model.services()[0];
    let host = host();
    let mut vms: Vec<Flusher> = (0..3).map(|_| Flusher::default()).collect();
    let mut added = 0;
    let mut posts: Vec<(usize, u64, u64)> = Vec::new();
    let mut stopped: Option<usize> = None;
    let mut taken_over_at = None;
    for second in 0..40u64 {
        batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
        added += 1;
        for (i, vm) in vms.iter_mut().enumerate() {
            if Some(i) == stopped {
                continue;
            }
            let out = tick(vm, &model, &host);
            for o in out {
                posts.push((i, second, sum_of(std::slice::from_ref(&o))));
                vm.on_flush_answer(&model, ticket(o), Some(200), host.effects());
            }
        }
        if taken_over_at.is_none() && host.counters.batch_total(BatchEvent::LeaseTaken) == 2 {
            taken_over_at = Some(second);
        }
        // The holder (the first VM to tick) stops after its second report.
        if second == 11 {
            assert_eq!(posts.iter().filter(|p| p.0 == 0).count(), 2);
            stopped = Some(0);
        }
        host.clock.advance_millis(1000);
    }
    let times: Vec<u64> = posts.iter().map(|p| p.1).collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 5, "an interval flushed twice: {times:?}");
        assert!(
            gap <= 5 + 3,
            "an interval skipped longer than the lease: {times:?}"
        );
    }
    assert!(
        posts.iter().any(|p| p.0 != 0),
        "another VM flushed: {posts:?}"
    );
    assert!(posts.iter().skip(2).all(|p| p.0 != 0));
    assert_eq!(host.counters.batch_total(BatchEvent::LeaseTaken), 2);
    // Its last tick was at 11 s: the lease it renewed then ran out 3 ticks later.
    assert_eq!(taken_over_at, Some(14));
    // What the stopped VM's last lease covered is reported by the next holder.
    let pending = 40 - posts.last().unwrap().1 - 1;
    assert_eq!(posts.iter().map(|p| p.2).sum::<u64>() + pending, added);
}

#[test]
fn a_failed_report_puts_the_usage_back_and_backs_off() {
    let model = one_service(5, 64);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    batch::add_usage(service, &user_key("k"), &hits(service, 3), host.effects());
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 6);
    let mut out = out;
    let mut added = 3;
    // Each failure: the usage is back, and the next try comes 1 s, 2 s, 4 s, then 5 s (the
    // interval) later.
    let mut waits = Vec::new();
    for status in [None, Some(503), Some(400), Some(500), Some(302)] {
        flusher.on_flush_answer(&model, ticket(out.remove(0)), status, host.effects());
        batch::add_usage(service, &user_key("k2"), &hits(service, 1), host.effects());
        added += 1;
        host.clock.advance_millis(1000);
        let (after, next) = tick_until_report(&mut flusher, &model, &host, 10);
        waits.push(after + 1);
        out = next;
    }
    assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    assert_eq!(host.counters.batch_total(BatchEvent::FlushFailed), 5);
    assert_eq!(
        sum_of(&out),
        added,
        "every failed report's usage is in the next one"
    );
    assert_eq!(
        totals(&out[0]),
        vec![
            ("k".into(), "hits".into(), 3),
            ("k2".into(), "hits".into(), 5)
        ]
    );
    flusher.on_flush_answer(&model, ticket(out.remove(0)), Some(202), host.effects());
    assert_eq!(host.counters.batch_total(BatchEvent::Flushed), 1);
    // Success resets the backoff: the next report is an interval later, with new usage only.
    batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
    host.clock.advance_millis(1000);
    let (after, out) = tick_until_report(&mut flusher, &model, &host, 10);
    assert_eq!(after + 1, 5);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 1)]);
    // No failure log names a credential or the token.
    let lines = host.log.lines();
    assert!(lines
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("service 7") && m.contains("503")));
    for (_, m) in &lines {
        assert!(!m.contains("svc-token") && !m.contains("k2"), "{m}");
    }
}

#[test]
fn max_pending_bounds_applications_and_drops_are_logged_once_a_tick() {
    let model = one_service(2, 2);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    let apps = ["a", "b", "c", "d", "e"];
    let mut queued = std::collections::HashMap::new();
    for round in 0..4 {
        // 50 requests per tick, over 5 applications.
        for i in 0..50 {
            let app = apps[i % 5];
            if batch::add_usage(service, &user_key(app), &hits(service, 1), host.effects())
                == AddOutcome::Queued
            {
                *queued.entry(app).or_insert(0u64) += 1;
            }
        }
        host.clock.advance_millis(1000);
        let out = tick(&mut flusher, &model, &host);
        if round % 2 == 1 {
            assert_eq!(out.len(), 1);
            let t = totals(&out[0]);
            assert_eq!(t.len(), 2, "two applications held the two slots: {t:?}");
            for (app, _, n) in t {
                assert_eq!(queued.remove(app.as_str()), Some(n));
            }
            flusher.on_flush_answer(
                &model,
                ticket(out.into_iter().next().unwrap()),
                Some(200),
                host.effects(),
            );
        }
    }
    assert!(queued.is_empty());
    let dropped = host.counters.batch_total(BatchEvent::Dropped);
    assert_eq!(dropped, 200 - host.counters.batch_total(BatchEvent::Queued));
    assert!(dropped >= 4 * 30);
    let lines: Vec<String> = host
        .log
        .lines()
        .into_iter()
        .filter(|(_, m)| m.contains("dropped"))
        .map(|(_, m)| m)
        .collect();
    assert!(lines.len() <= 5, "at most one line a tick: {lines:?}");
    // The lines account for every drop, and name neither the credentials nor the token.
    let logged: u64 = lines
        .iter()
        .map(|m| m.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(logged, dropped);
    for m in &lines {
        assert!(!m.contains("svc-token"), "{m}");
    }
}

#[test]
fn a_flood_of_applications_keeps_the_store_bounded() {
    let model = one_service(1, 64);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    let mut queued = 0u64;
    for i in 0..10_000 {
        if batch::add_usage(
            service,
            &user_key(&format!("app-{i}")),
            &hits(service, 1),
            host.effects(),
        ) == AddOutcome::Queued
        {
            queued += 1;
        }
        if i % 1000 == 999 {
            host.clock.advance_millis(1000);
            let out = tick(&mut flusher, &model, &host);
            for o in out {
                flusher.on_flush_answer(&model, ticket(o), Some(200), host.effects());
            }
        }
    }
    // 64 slots, 1 bitmap chunk, the schedule, the lease and the VM counter.
    assert!(host.store.keys() <= 64 + 4, "{} keys", host.store.keys());
    assert_eq!(queued, 64 * 10);
    assert_eq!(
        host.counters.batch_total(BatchEvent::Dropped),
        10_000 - queued
    );
}

#[test]
fn more_than_a_thousand_applications_are_several_posts() {
    let model = one_service(1, 4096);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    for i in 0..2500 {
        batch::add_usage(
            service,
            &user_key(&format!("app-{i}")),
            &hits(service, 1),
            host.effects(),
        );
    }
    let queued = host.counters.batch_total(BatchEvent::Queued);
    // Four choices in 4096 slots, 61 % used: a few percent find all four taken.
    assert!(queued >= 2400, "queued {queued} of 2500");
    assert_eq!(
        host.counters.batch_total(BatchEvent::Dropped),
        2500 - queued
    );
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 2);
    assert_eq!(out.len(), 3);
    let mut reported = 0;
    for o in &out {
        let t = totals(o);
        assert!(t.len() <= 1000);
        assert!(body(o).contains("transactions%5B0%5D%5Buser_key%5D="));
        reported += t.len() as u64;
    }
    assert_eq!(reported, queued);
    assert_eq!(sum_of(&out), queued);
    let tickets: Vec<usize> = out.into_iter().map(|o| ticket(o).transactions()).collect();
    assert_eq!(tickets, vec![1000, 1000, queued as usize - 2000]);
}

#[test]
fn lost_races_still_sum_exactly() {
    let model = one_service(1, 16);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
    for n in 0..40 {
        host.store.lose_races(n % 8);
        let added = batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
        assert_eq!(added, AddOutcome::Queued);
    }
    host.store.lose_races(3);
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 3);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 41)]);
    // A race lost every time: the request's usage is dropped and counted, not guessed.
    host.store.lose_races(100);
    let added = batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
    assert_eq!(added, AddOutcome::Dropped);
    assert_eq!(host.counters.batch_total(BatchEvent::Dropped), 1);
}

#[test]
fn a_refusing_store_drops_and_counts_and_nothing_panics() {
    let model = one_service(1, 16);
    let service = &model.services()[0];
    let host = host();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    batch::add_usage(service, &user_key("k"), &hits(service, 2), host.effects());
    host.store.refuse(Some(2));
    let added = batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
    assert_eq!(added, AddOutcome::Dropped);
    assert_eq!(host.counters.batch_total(BatchEvent::Dropped), 1);
    for _ in 0..5 {
        host.clock.advance_millis(1000);
        assert!(tick(&mut flusher, &model, &host).is_empty());
    }
    host.store.refuse(None);
    // The store is back: what was queued before is reported.
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 3);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 2)]);
    // The answer arrives while the store refuses: counted, dropped, no panic.
    host.store.refuse(Some(2));
    let t = ticket(out.into_iter().next().unwrap());
    flusher.on_flush_answer(&model, t, Some(503), host.effects());
    assert_eq!(host.counters.batch_total(BatchEvent::FlushFailed), 1);
    assert_eq!(host.counters.batch_total(BatchEvent::Dropped), 2);
}

#[test]
fn undecodable_bytes_never_panic_and_are_cleared() {
    let model = one_service(1, 1);
    let service = &model.services()[0];
    let host = host();
    let prefix = service
        .cache()
        .batching()
        .unwrap()
        .store_prefix()
        .to_string();
    let garbage: &[&[u8]] = &[
        b"",
        b"\x01\x07",
        b"\x02zzz",
        b"\x01\x01\xff\xff\xff\xff",
        b"\x01\x01\x01\x00\x00\x00k\x05\x00",
    ];
    for bytes in garbage {
        for key in [
            format!("{prefix}0"),
            format!("{prefix}used0"),
            format!("{prefix}next"),
            {
                let mut k = Vec::new();
                batch::lease_key(&model, &mut k);
                String::from_utf8(k).unwrap()
            },
            "tollgate.vm.v1|next_id".into(),
        ] {
            host.store
                .compare_and_swap(key.as_bytes(), bytes, None)
                .unwrap();
        }
        let mut flusher = Flusher::default();
        batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
        for _ in 0..3 {
            tick(&mut flusher, &model, &host);
            host.clock.advance_millis(1000);
        }
    }
    // After a flush cleared the garbage, the slot is usable again.
    let mut flusher = Flusher::default();
    for _ in 0..4 {
        tick(&mut flusher, &model, &host);
        host.clock.advance_millis(1000);
    }
    batch::add_usage(service, &user_key("k"), &hits(service, 6), host.effects());
    let (_, out) = tick_until_report(&mut flusher, &model, &host, 3);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 6)]);
    let mut lease = Vec::new();
    batch::lease_key(&model, &mut lease);
    assert!(host.store.get(&lease).unwrap().is_some());
}

#[test]
fn a_used_slot_without_its_bit_is_found_by_the_sweep() {
    let model = one_service(1, 64);
    let service = &model.services()[0];
    let host = host();
    let prefix = service
        .cache()
        .batching()
        .unwrap()
        .store_prefix()
        .to_string();
    let mut flusher = Flusher::default();
    tick(&mut flusher, &model, &host);
    batch::add_usage(service, &user_key("k"), &hits(service, 5), host.effects());
    // The bit is lost (as when its compare-and-swap was contended).
    host.store
        .compare_and_swap(
            format!("{prefix}used0").as_bytes(),
            &[1, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
        )
        .unwrap();
    let (after, out) = tick_until_report(&mut flusher, &model, &host, 64 / 16 + 1);
    assert!(after <= 64 / 16 + 1);
    assert_eq!(totals(&out[0]), vec![("k".into(), "hits".into(), 5)]);
}

#[test]
fn no_tick_period_without_batching() {
    let model = compiled(vec![(
        service_doc(7, "svc-token", json!(1), "api.example.com"),
        Value::Null,
    )]);
    assert_eq!(batch::tick_period_ms(&model), None);
    assert_eq!(batch::tick_period_ms(&one_service(3, 4)), Some(1000));
    // A VM without batched services never touches the store.
    let host = host();
    let mut flusher = Flusher::default();
    assert!(tick(&mut flusher, &model, &host).is_empty());
    assert_eq!(host.store.keys(), 0);
}

#[test]
fn two_vms_that_both_hold_the_lease_still_report_each_interval_once() {
    let model = one_service(3, 64);
    let service = &model.services()[0];
    let host = host();
    let mut a = Flusher::default();
    tick(&mut a, &model, &host);
    // The VM counter is rewound (as after a lost write), so B gets A's id and both take
    // the lease as their own.
    let counter = host.store.get(batch::VM_ID_KEY).unwrap().unwrap().value;
    host.store
        .compare_and_swap(
            batch::VM_ID_KEY,
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
        )
        .unwrap();
    let mut b = Flusher::default();
    tick(&mut b, &model, &host);
    assert_eq!(
        host.store.get(batch::VM_ID_KEY).unwrap().unwrap().value,
        counter
    );
    let mut posts = Vec::new();
    for second in 1..=30u64 {
        host.clock.advance_millis(1000);
        batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
        // Both flush when due; the one that moves the schedule second finds it moved.
        for vm in [&mut a, &mut b] {
            for o in tick(vm, &model, &host) {
                posts.push((second, sum_of(std::slice::from_ref(&o))));
            }
        }
    }
    let times: Vec<u64> = posts.iter().map(|p| p.0).collect();
    assert_eq!(times, (1..=10).map(|k| k * 3).collect::<Vec<_>>());
    assert_eq!(posts.iter().map(|p| p.1).sum::<u64>(), 30);
}

#[test]
fn two_configurations_each_report_their_services() {
    // Two listeners with their own FilterConfigs in one Envoy: each has a flusher.
    let first = one_service(2, 16);
    let second = compiled(vec![(
        service_doc(8, "other", json!(1), "other.example.com"),
        batching(2, 16),
    )]);
    let host = host();
    let mut a = Flusher::default();
    let mut b = Flusher::default();
    let mut reported = Vec::new();
    for _ in 0..5 {
        for (model, vm) in [(&first, &mut a), (&second, &mut b)] {
            let service = &model.services()[0];
            batch::add_usage(service, &user_key("k"), &hits(service, 1), host.effects());
            for o in tick(vm, model, &host) {
                reported.push(body(&o));
            }
        }
        host.clock.advance_millis(1000);
    }
    let first_service: Vec<bool> = reported
        .iter()
        .map(|b| b.starts_with("service_id=7&"))
        .collect();
    assert_eq!(
        first_service,
        vec![true, false, true, false],
        "{reported:?}"
    );
    assert_eq!(host.counters.batch_total(BatchEvent::LeaseTaken), 2);
}

#[test]
fn a_credential_too_long_is_dropped_and_counted() {
    let model = one_service(1, 16);
    let service = &model.services()[0];
    let host = host();
    let long = "k".repeat(batch::MAX_IDENTITY_BYTES + 1);
    let added = batch::add_usage(service, &user_key(&long), &hits(service, 1), host.effects());
    assert_eq!(added, AddOutcome::Dropped);
    assert_eq!(host.counters.batch_total(BatchEvent::Dropped), 1);
    let fits = "k".repeat(batch::MAX_IDENTITY_BYTES);
    let added = batch::add_usage(service, &user_key(&fits), &hits(service, 1), host.effects());
    assert_eq!(added, AddOutcome::Queued);
    assert!(host.log.lines().iter().all(|(_, m)| !m.contains("kkkk")));
}
