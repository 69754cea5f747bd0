//! The authorization cache and batched reports through a real Envoy 1.40 (V8, 2 workers)
//! running target/tollgate.wasm, with the in-process control service (behind a recording relay
//! where bodies, spacing or exact call counts are read): a warm cache answers without waiting
//! and every admitted request is reported once; the batcher reports once per interval with
//! summed usage and no app_key; each failure mode keeps its promise while the control service
//! is down and the totals add up after it restarts on its state file; a stalled control
//! service costs a waiting request the timeout and no more, and a cached one nothing; a key
//! the control service starts refusing for limits is refused locally.
//!
//! Envoy and target/tollgate.wasm (`make wasm envoy`) are required: missing, these tests fail
//! with the command that provides them.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_e2e::client::{Answer, Request};
use tollgate_e2e::stack::Gateway;
use tollgate_e2e::tap::{form_pairs, Tap};
use tollgate_e2e::wait_until;

const AUTHREP: &str = "/transactions/authrep.xml";
const AUTHORIZE: &str = "/transactions/authorize.xml";
const REPORT: &str = "/transactions.xml";

/// Applications every service of the control data has: `app-<i>` with key `key-<i>`.
const APPS: usize = 10;

/// The tests share two cores with each other and with other builds: one at a time, so their
/// timings (TTLs, flush intervals, the timeout) are the gateway's and not the machine's.
static SERIAL: Mutex<()> = Mutex::new(());

fn token(id: u64) -> String {
    format!("service-token-{id}")
}

fn app(i: usize) -> String {
    format!("app-{i}")
}

fn key(i: usize) -> String {
    format!("key-{i}")
}

/// One service of a test: its id, host and FilterConfig `cache` / `batching`.
#[derive(Clone)]
struct Svc {
    id: u64,
    host: String,
    cache: Value,
    batching: Value,
}

impl Svc {
    fn new(id: u64, cache: Value, batching: Value) -> Self {
        Self {
            id,
            host: format!("api-{id}.example"),
            cache,
            batching,
        }
    }
}

/// Control data for `services`: each on `backend_version: "2"` with `APPS` open applications
/// and `capped` (key `capped-key`), whose plan allows 5 hits a minute.
fn control_data(services: &[Svc]) -> String {
    let mut yaml = String::from("services:\n");
    for s in services {
        yaml.push_str(&format!(
            "  - id: {id}\n    service_token: {token}\n    backend_version: \"2\"\n    \
             metrics:\n      - name: hits\n    plans:\n      - name: open\n      - name: capped\n        \
             limits:\n          hits: {{minute: 5}}\n    applications:\n",
            id = s.id,
            token = token(s.id)
        ));
        for i in 0..APPS {
            yaml.push_str(&format!(
                "      - {{app_id: {}, app_keys: [{}], plan: open}}\n",
                app(i),
                key(i)
            ));
        }
        yaml.push_str("      - {app_id: capped, app_keys: [capped-key], plan: capped}\n");
    }
    yaml
}

/// The 3scale document: every service on the echo upstream, credentials in the query, one
/// rule counting 1 hit for any GET.
fn services_doc(services: &[Svc], upstream: SocketAddr) -> Value {
    let list: Vec<Value> = services
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "system_name": format!("svc{}", s.id),
                "backend_version": "2",
                "backend_authentication_type": "service_token",
                "backend_authentication_value": token(s.id),
                "proxy": {
                    "api_backend": format!("http://{upstream}/svc{}", s.id),
                    "hosts": [s.host],
                    "credentials_location": "query",
                    "auth_app_id": "app_id",
                    "auth_app_key": "app_key",
                    "proxy_rules": [
                        {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}
                    ]
                }
            })
        })
        .collect();
    json!({ "services": list })
}

struct Stack {
    /// `None` while a test has it stopped.
    control: Option<tollgate_control::Running>,
    /// Between Envoy and the control service, when the test reads what was sent.
    tap: Option<Tap>,
    gw: Gateway,
    data: String,
    state: Option<PathBuf>,
    control_addr: SocketAddr,
}

impl Stack {
    /// `tap`: put the recording relay between Envoy and the control service. `state`: give
    /// the control service a state file, so it can be restarted with its counters.
    fn start(services: &[Svc], timeout_ms: u32, tap: bool, state: bool) -> Self {
        let data = control_data(services);
        let state = state.then(|| {
            let dir = std::env::temp_dir().join(format!(
                "tollgate-cache-e2e-{}-{}",
                std::process::id(),
                services[0].id
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("state.json");
            let _ = std::fs::remove_file(&path);
            path
        });
        let control = tollgate_control::spawn(&data, state.clone()).unwrap();
        let control_addr = control.addr();
        let tap = tap.then(|| Tap::start(control_addr).unwrap());
        let target = tap.as_ref().map_or(control_addr, Tap::addr);
        let configured = services.to_vec();
        let gw = Gateway::serve(
            |upstream| Ok(services_doc(services, upstream)),
            target,
            |config| {
                config.control_service.timeout_ms = timeout_ms;
                for service in &mut config.services {
                    let s = configured
                        .iter()
                        .find(|s| s.id.to_string() == service.id)
                        .unwrap();
                    service.cache = serde_json::from_value(s.cache.clone()).unwrap();
                    service.batching = serde_json::from_value(s.batching.clone()).unwrap();
                }
            },
            |_| {},
        )
        .unwrap();
        Self {
            control: Some(control),
            tap,
            gw,
            data,
            state,
            control_addr,
        }
    }

    fn get(&self, svc: &Svc, app_id: &str, app_key: &str) -> Answer {
        let target = format!("/r?app_id={app_id}&app_key={app_key}");
        self.gw
            .send(&Request::new("GET", &svc.host, &target))
            .unwrap()
    }

    /// Stops the control service: it writes its state file and its port refuses connections.
    fn kill_control(&mut self) {
        drop(self.control.take());
    }

    /// Starts it again on the same address with the same data and state file.
    fn restart_control(&mut self) {
        let control =
            tollgate_control::spawn_on(&self.data, self.state.clone(), self.control_addr).unwrap();
        self.control = Some(control);
    }

    fn tap(&self) -> &Tap {
        self.tap.as_ref().unwrap()
    }

    fn counter(&self, name: &str) -> u64 {
        self.gw
            .counter(&format!("wasmcustom.tollgate.{name}"))
            .unwrap()
    }

    /// `hits` the control service counted for `app_id` of service `id`, all time.
    fn usage(&self, id: u64, app_id: &str) -> u64 {
        let url = format!("http://{}/_tollgate/usage", self.control_addr);
        let body = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let doc: Value = serde_json::from_str(&body).unwrap();
        let hits = &doc["services"][id.to_string()]["applications"][app_id]["hits"];
        // `total` where the control service gives it, else the eternity window (the same
        // number: every request of these tests falls in one process lifetime).
        hits["total"]
            .as_u64()
            .or_else(|| hits["eternity"].as_u64())
            .unwrap_or(0)
    }

    /// The control service's `/_tollgate/calls` count of `kind` (`authrep`, `report`, ...).
    fn calls(&self, kind: &str) -> u64 {
        let url = format!("http://{}/_tollgate/calls", self.control_addr);
        let body = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let doc: Value = serde_json::from_str(&body).unwrap();
        doc[kind]
            .as_u64()
            .unwrap_or_else(|| panic!("no {kind} in {body}"))
    }

    fn upstream_saw(&self) -> usize {
        self.gw.echo.seen().len()
    }
}

fn passed(a: &Answer) {
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.echoed().is_some(), "the upstream did not answer: {a:?}");
}

fn refused(a: &Answer) {
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, "Authentication failed"),
        "{a:?}"
    );
}

/// A limited answer: 429 with `Retry-After` in whole seconds, which is returned.
fn limited(a: &Answer) -> u64 {
    assert_eq!(
        (a.status, a.body.as_str()),
        (429, "Limits exceeded"),
        "{a:?}"
    );
    let retry = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {a:?}"));
    retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {retry:?}"))
}

fn authrep_cache(extra: Value) -> Value {
    let mut cache = json!({"mode": "strict", "ttl_seconds": 60});
    cache
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    cache
}

#[test]
fn a_warm_cache_answers_without_waiting_and_reports_every_request_once() {
    const REQUESTS: usize = 10_000;
    const THREADS: usize = 16;
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let svc = Svc::new(50, authrep_cache(json!({})), Value::Null);
    let st = Stack::start(std::slice::from_ref(&svc), 1000, true, false);

    for i in 0..APPS {
        passed(&st.get(&svc, &app(i), &key(i)));
    }
    let warm_misses = st.counter("cache.miss");
    assert_eq!(
        warm_misses, APPS as u64,
        "each application's first request waited"
    );
    assert_eq!(st.tap().count(AUTHREP), APPS);

    let started = Instant::now();
    let answers: Vec<(usize, Answer)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (st, svc) = (&st, &svc);
                s.spawn(move || {
                    (t..REQUESTS)
                        .step_by(THREADS)
                        .map(|n| {
                            let i = n % APPS;
                            (i, st.get(svc, &app(i), &key(i)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let took = started.elapsed();
    assert_eq!(answers.len(), REQUESTS);
    for (_, a) in &answers {
        passed(a);
    }
    let mut admitted = [1u64; APPS];
    for (i, _) in &answers {
        admitted[*i] += 1;
    }
    let misses = st.counter("cache.miss") - warm_misses;
    let joined = st.counter("cache.joined");
    let hits = st.counter("cache.hit");
    let slowest = answers.iter().map(|(_, a)| a.elapsed).max().unwrap();
    eprintln!(
        "warm: {REQUESTS} requests over {THREADS} connections in {took:.1?} ({:.0}/s), \
         {hits} hits, {misses} misses and {joined} joined after the warm-up, slowest {slowest:?}",
        REQUESTS as f64 / took.as_secs_f64()
    );
    // At most one request per application waited again (an entry refreshed while read).
    assert!(
        misses + joined <= APPS as u64,
        "{misses} misses, {joined} joined"
    );
    assert_eq!(hits + misses + joined, REQUESTS as u64);
    assert_eq!(st.upstream_saw(), REQUESTS + APPS);

    // Each hit's usage goes out in its own background authrep, each miss's in the one it
    // waited for: once per admitted request, never twice.
    let total = (REQUESTS + APPS) as u64;
    let reported = || (0..APPS).map(|i| st.usage(svc.id, &app(i))).sum::<u64>();
    let settled = wait_until(Duration::from_secs(20), "background reports", || {
        reported() >= total
    });
    std::thread::sleep(Duration::from_millis(500));
    let per_app: Vec<u64> = (0..APPS).map(|i| st.usage(svc.id, &app(i))).collect();
    eprintln!(
        "warm: control service counted {per_app:?}, {} authreps, settled {:?} after the last \
         answer",
        st.tap().count(AUTHREP),
        started.elapsed() - took
    );
    settled.unwrap();
    assert_eq!(per_app, admitted.to_vec());
    assert_eq!(st.tap().count(AUTHREP), REQUESTS + APPS);
    assert_eq!(st.calls("authrep"), (REQUESTS + APPS) as u64);
    assert_eq!(st.tap().count(AUTHORIZE), 0);
    assert_eq!(st.tap().count(REPORT), 0);
    assert_eq!(st.counter("cache.report"), hits);
}

/// The `transactions[i][…]` of one report body: app_id → hits, with every key seen.
fn transactions(body: &[u8]) -> (BTreeMap<String, u64>, Vec<String>) {
    let pairs = form_pairs(body);
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let mut apps: BTreeMap<usize, String> = BTreeMap::new();
    let mut hits: BTreeMap<usize, u64> = BTreeMap::new();
    for (k, v) in &pairs {
        let Some(rest) = k.strip_prefix("transactions[") else {
            continue;
        };
        let (index, field) = rest.split_once(']').unwrap();
        let index: usize = index.parse().unwrap();
        match field {
            "[app_id]" => assert!(apps.insert(index, v.clone()).is_none(), "{keys:?}"),
            "[usage][hits]" => {
                assert!(hits.insert(index, v.parse().unwrap()).is_none(), "{keys:?}")
            }
            // A report may date its transactions; nothing else belongs in one.
            "[timestamp]" => {}
            other => panic!("unexpected transaction field {other} in {keys:?}"),
        }
    }
    assert_eq!(
        apps.keys().collect::<Vec<_>>(),
        hits.keys().collect::<Vec<_>>(),
        "{keys:?}"
    );
    let mut by_app = BTreeMap::new();
    for (index, app_id) in apps {
        // One transaction per application per report: its usage summed.
        assert!(
            by_app.insert(app_id, hits[&index]).is_none(),
            "an application twice in one report: {keys:?}"
        );
    }
    (by_app, keys)
}

#[test]
fn batched_reports_go_out_once_per_interval_with_summed_usage() {
    const INTERVAL: u64 = 3;
    const RUN: Duration = Duration::from_secs(12);
    const USED: usize = 3;
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let svc = Svc::new(
        51,
        json!({"mode": "strict"}),
        json!({"auths_ttl_seconds": 10, "batch_report_seconds": INTERVAL, "max_pending": 64}),
    );
    let st = Stack::start(std::slice::from_ref(&svc), 1000, true, false);

    let started = Instant::now();
    let per_thread: Vec<[u64; USED]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (st, svc) = (&st, &svc);
                s.spawn(move || {
                    let mut admitted = [0u64; USED];
                    let mut n = t;
                    while started.elapsed() < RUN {
                        let i = n % USED;
                        passed(&st.get(svc, &app(i), &key(i)));
                        admitted[i] += 1;
                        n += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    admitted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let run_end = Instant::now();
    let mut admitted = BTreeMap::new();
    for counts in &per_thread {
        for (i, n) in counts.iter().enumerate() {
            *admitted.entry(app(i)).or_insert(0) += n;
        }
    }
    let total: u64 = admitted.values().sum();
    assert_eq!(st.upstream_saw() as u64, total);

    // The last interval's usage goes out at the next flush.
    let reported = |st: &Stack| -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for t in st.tap().requests().iter().filter(|t| t.path() == REPORT) {
            for (app_id, hits) in transactions(&t.body).0 {
                *sum.entry(app_id).or_insert(0) += hits;
            }
        }
        sum
    };
    let settled = wait_until(
        Duration::from_secs(INTERVAL * 2 + 2),
        "the last batch",
        || reported(&st) == admitted,
    );
    let posts: Vec<_> = st
        .tap()
        .requests()
        .into_iter()
        .filter(|t| t.path() == REPORT)
        .collect();
    let offsets: Vec<String> = posts
        .iter()
        .map(|p| format!("{:.2}", p.at.duration_since(started).as_secs_f64()))
        .collect();
    eprintln!(
        "batched: {total} requests admitted in {RUN:?} {admitted:?}; {} report POSTs at {offsets:?} \
         s; {} authorize calls; reported {:?}",
        posts.len(),
        st.tap().count(AUTHORIZE),
        reported(&st)
    );
    settled.unwrap();

    for post in &posts {
        assert_eq!(post.method, "POST");
        let (by_app, keys) = transactions(&post.body);
        assert!(!by_app.is_empty(), "an empty report");
        assert!(
            keys.iter().all(|k| !k.contains("app_key")),
            "app_key in a report: {keys:?}"
        );
        let body = String::from_utf8_lossy(&post.body);
        assert!(
            (0..APPS).all(|i| !body.contains(&key(i))),
            "an application key in a report: {body}"
        );
        let pairs = form_pairs(&post.body);
        assert!(pairs.contains(&("service_id".to_owned(), svc.id.to_string())));
        assert!(pairs.contains(&("service_token".to_owned(), token(svc.id))));
    }
    // One POST per interval while requests came in: consecutive POSTs an interval apart (the
    // flusher ticks each second, so up to a second late), none in between.
    let during: Vec<_> = posts.iter().filter(|p| p.at <= run_end).collect();
    let expected = RUN.as_secs() / INTERVAL;
    assert!(
        (expected - 1..=expected + 1).contains(&(during.len() as u64)),
        "{} POSTs during {RUN:?}",
        during.len()
    );
    for pair in posts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at).as_secs_f64();
        assert!(
            (INTERVAL as f64 - 0.5..=INTERVAL as f64 + 1.5).contains(&gap),
            "reports {gap:.2} s apart, at {offsets:?}"
        );
    }
    for (app_id, n) in &admitted {
        assert_eq!(st.usage(svc.id, app_id), *n, "{app_id}");
    }
    assert_eq!(st.tap().count(AUTHREP), 0, "the batcher never authreps");
    // Each application's answer is cached for 10 s: at most one call per application, per
    // worker (two workers may miss together), per TTL window of the 12 s run.
    let authorizes = st.tap().count(AUTHORIZE);
    assert!(
        (USED..=USED * 2 * 2).contains(&authorizes),
        "{authorizes} authorize calls"
    );
    assert_eq!(st.counter("batch.flushed"), posts.len() as u64);
    assert_eq!(st.counter("batch.queued"), total);
    assert_eq!(st.counter("batch.dropped"), 0);
    assert_eq!(st.counter("batch.flush_failed"), 0);
    let carried: usize = posts.iter().map(|p| transactions(&p.body).0.len()).sum();
    assert_eq!(st.counter("batch.transactions"), carried as u64);
    // The control service took every report whole.
    assert_eq!(st.calls("report"), posts.len() as u64);
    assert_eq!(st.calls("report_transactions"), carried as u64);
    assert_eq!(st.calls("report_dropped"), 0);
    assert_eq!(st.calls("authorize"), authorizes as u64);
}

/// What a client of a service gets for its known-good key, its known-bad key and a key not
/// seen before the outage, in one round of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    good: u16,
    bad: u16,
    unseen: u16,
}

const PASS: u16 = 200;
const DENY: u16 = 403;

struct ModeCase {
    svc: Svc,
    /// While the control service is down: right after it stops, once the background authrep
    /// of the first request has failed, and after the batcher's auths_ttl has run out.
    during: [Round; 3],
}

#[test]
fn each_failure_mode_keeps_its_promise_while_the_control_service_is_down() {
    const TIMEOUT_MS: u32 = 300;
    /// What the client may wait beyond the control-service timeout (Envoy, the client, two
    /// busy cores).
    const MARGIN: Duration = Duration::from_millis(250);
    const AUTHS_TTL: Duration = Duration::from_secs(2);
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let authrep = |id, mode: &str| {
        Svc::new(
            id,
            json!({"mode": mode, "ttl_seconds": 60, "denied_ttl_seconds": 60}),
            Value::Null,
        )
    };
    let batched = |id, mode: &str, max_pending: u32| {
        Svc::new(
            id,
            json!({"mode": mode, "ttl_seconds": 60, "denied_ttl_seconds": 60}),
            json!({"auths_ttl_seconds": AUTHS_TTL.as_secs(), "batch_report_seconds": 1,
                   "max_pending": max_pending}),
        )
    };
    let r = |good, bad, unseen| Round { good, bad, unseen };
    let cases = [
        // strict: a cached authorization stands until a call fails, then the key is denied.
        ModeCase {
            svc: authrep(60, "strict"),
            during: [
                r(PASS, DENY, DENY),
                r(DENY, DENY, DENY),
                r(DENY, DENY, DENY),
            ],
        },
        // resilient: the last answer stands.
        ModeCase {
            svc: authrep(61, "resilient"),
            during: [
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
            ],
        },
        // allow: as resilient, and a key never seen passes.
        ModeCase {
            svc: authrep(62, "allow"),
            during: [
                r(PASS, DENY, PASS),
                r(PASS, DENY, PASS),
                r(PASS, DENY, PASS),
            ],
        },
        // none: every request waits for the control service, which does not answer.
        ModeCase {
            svc: authrep(63, "none"),
            during: [
                r(DENY, DENY, DENY),
                r(DENY, DENY, DENY),
                r(DENY, DENY, DENY),
            ],
        },
        // The batcher answers from its cache for auths_ttl without any call; after that
        // the mode decides.
        ModeCase {
            svc: batched(64, "strict", 4096),
            during: [
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
                r(DENY, DENY, DENY),
            ],
        },
        ModeCase {
            svc: batched(65, "resilient", 4096),
            during: [
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
            ],
        },
        // One pending slot: the unseen key's usage competes with the good key's for it
        // while no flush succeeds, so the bound drops some (counted).
        ModeCase {
            svc: batched(66, "allow", 1),
            during: [
                r(PASS, DENY, PASS),
                r(PASS, DENY, PASS),
                r(PASS, DENY, PASS),
            ],
        },
        ModeCase {
            svc: batched(67, "none", 4096),
            during: [
                r(PASS, DENY, DENY),
                r(PASS, DENY, DENY),
                r(DENY, DENY, DENY),
            ],
        },
    ];
    let svcs: Vec<Svc> = cases.iter().map(|c| c.svc.clone()).collect();
    let mut st = Stack::start(&svcs, TIMEOUT_MS, false, true);
    let (good, bad, unseen) = (
        (app(0), key(0)),
        (app(1), "wrong-key".to_owned()),
        (app(2), key(2)),
    );

    // Admitted requests per (service, application), and the slowest answer.
    let mut admitted: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let mut up_admitted: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    // `up`: the control service answers; `unseen`: ask for the key not used before the outage.
    let mut round = |st: &Stack, svc: &Svc, up: bool, unseen_too: bool| -> Round {
        let mut status = |(id, k): &(String, String)| {
            let a = st.get(svc, id, k);
            slowest = slowest.max(a.elapsed);
            assert!(
                a.elapsed < Duration::from_millis(TIMEOUT_MS.into()) + MARGIN,
                "service {} waited {:?}: {a:?}",
                svc.id,
                a.elapsed
            );
            match a.status {
                200 => {
                    passed(&a);
                    *admitted.entry((svc.id, id.clone())).or_insert(0) += 1;
                    if up {
                        *up_admitted.entry((svc.id, id.clone())).or_insert(0) += 1;
                    }
                }
                _ => refused(&a),
            }
            a.status
        };
        Round {
            good: status(&good),
            bad: status(&bad),
            unseen: if unseen_too { status(&unseen) } else { 0 },
        }
    };

    // A flusher holds the lease (its first tick after Envoy started), so the batched
    // services' flushes fall due during the outage, a tick or two after it starts.
    wait_until(Duration::from_secs(5), "a flusher", || {
        st.counter("batch.lease_taken") >= 1
    })
    .unwrap();
    // The cache learns the good key and the bad one.
    let warmed = Instant::now();
    for c in &cases {
        let got = round(&st, &c.svc, true, false);
        assert_eq!((got.good, got.bad), (PASS, DENY), "service {}", c.svc.id);
    }
    st.kill_control();
    let mut got: Vec<[Round; 3]> = vec![[r(0, 0, 0); 3]; cases.len()];
    for (c, g) in cases.iter().zip(got.iter_mut()) {
        g[0] = round(&st, &c.svc, false, true);
    }
    // The first request's background authrep has been refused by now.
    std::thread::sleep(Duration::from_millis(400));
    for (c, g) in cases.iter().zip(got.iter_mut()) {
        g[1] = round(&st, &c.svc, false, true);
    }
    // The batcher's cached answers have expired.
    std::thread::sleep(
        (warmed + AUTHS_TTL + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    );
    for (c, g) in cases.iter().zip(got.iter_mut()) {
        g[2] = round(&st, &c.svc, false, true);
    }
    let outage = warmed.elapsed();
    for (c, g) in cases.iter().zip(&got) {
        eprintln!(
            "outage: service {} {} {}: {g:?}",
            c.svc.id,
            c.svc.cache["mode"],
            if c.svc.batching.is_null() {
                "authrep"
            } else {
                "batched"
            }
        );
    }
    eprintln!("outage: {outage:.1?}");
    for (c, g) in cases.iter().zip(&got) {
        assert_eq!(
            g, &c.during,
            "service {} ({})",
            c.svc.id, c.svc.cache["mode"]
        );
    }

    // Back, with the counters of its state file: every mode authorizes again.
    st.restart_control();
    for c in &cases {
        let got = round(&st, &c.svc, true, true);
        assert_eq!(
            got,
            r(PASS, DENY, PASS),
            "service {} after the restart",
            c.svc.id
        );
    }
    eprintln!("slowest answer, up or down: {slowest:?}");
    let unreported = |st: &Stack| -> u64 {
        admitted
            .iter()
            .map(|((id, app_id), n)| n.saturating_sub(st.usage(*id, app_id)))
            .sum()
    };
    // Batches kept through the outage go out at the next flushes (backoff at most 1 s);
    // background authreps refused during it are retried by their worker (backoff 1 s, 2 s,
    // 4 s, ...). Only what the bound dropped is missing.
    let settled = wait_until(
        Duration::from_secs(15),
        "the usage kept through the outage",
        || unreported(&st) == st.counter("batch.dropped"),
    );
    let dropped = st.counter("batch.dropped");
    let counted: BTreeMap<(u64, String), u64> = admitted
        .keys()
        .map(|(id, app_id)| ((*id, app_id.clone()), st.usage(*id, app_id)))
        .collect();
    eprintln!(
        "after the restart: admitted {admitted:?}\n  counted {counted:?}\n  dropped {dropped}, \
         flush_failed {}, stale {}, assumed {}, admitted while up {up_admitted:?}",
        st.counter("batch.flush_failed"),
        st.counter("cache.stale"),
        st.counter("cache.assumed")
    );
    settled.unwrap();
    // The bound of one slot dropped some of the allow service's usage, and only there.
    assert!(dropped >= 1, "nothing dropped at a bound of one slot");
    for ((id, app_id), n) in &admitted {
        let c = counted[&(*id, app_id.clone())];
        if *id == 66 {
            assert!(c <= *n, "service {id} {app_id}: counted {c}, admitted {n}");
        } else {
            assert_eq!(c, *n, "service {id} {app_id}: usage lost or doubled");
        }
    }
    // No report the gateway sent after the restart was refused (calls kept in the state file).
    assert_eq!(st.calls("report_dropped"), 0);
    assert!(
        st.counter("batch.flush_failed") >= 1,
        "no flush failed during the outage"
    );
}

#[test]
fn a_key_refused_for_limits_in_the_background_is_limited_without_a_call() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let svc = Svc::new(52, authrep_cache(json!({})), Value::Null);
    let st = Stack::start(std::slice::from_ref(&svc), 1000, true, false);
    // A fixed control-service clock early in a minute: the plan's 5 a minute does not reset
    // while the test runs.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    st.control
        .as_ref()
        .unwrap()
        .clock()
        .set_ms(Some(now - now % 60_000 + 1_000));

    // 1 miss and 4 hits are authorized by the control service; the 6th request is a hit
    // too, forwarded at once, and its background authrep comes back limits_exceeded.
    let mut ok = 0;
    let first_limited = loop {
        let a = st.get(&svc, "capped", "capped-key");
        if a.status != 200 {
            break a;
        }
        passed(&a);
        ok += 1;
        assert!(ok <= 20, "never limited");
        std::thread::sleep(Duration::from_millis(100));
    };
    let retry = limited(&first_limited);
    assert_eq!(ok, 6, "200s before the first 429");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let calls = st.tap().count(AUTHREP);
    assert_eq!(calls, 6, "one authrep per admitted request");
    let denied_before = st.counter("cache.denied_hit");
    for _ in 0..10 {
        let a = st.get(&svc, "capped", "capped-key");
        let r = limited(&a);
        assert!((1..=60).contains(&r), "Retry-After {r}");
    }
    eprintln!(
        "limits: {ok} passed, then 429 (Retry-After {retry}); {calls} authreps, {} after 10 more",
        st.tap().count(AUTHREP)
    );
    assert_eq!(
        st.tap().count(AUTHREP),
        calls,
        "a limited key was asked again"
    );
    assert_eq!(st.calls("authrep"), 6);
    assert_eq!(st.counter("cache.denied_hit") - denied_before, 10);
    assert_eq!(st.upstream_saw(), ok);
    assert_eq!(st.usage(svc.id, "capped"), 5);
}

#[test]
fn a_stalled_control_service_costs_a_waiting_request_the_timeout_and_no_more() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const MARGIN: Duration = Duration::from_millis(250);
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let svc = |id, mode: &str| {
        Svc::new(
            id,
            json!({"mode": mode, "ttl_seconds": 60, "denied_ttl_seconds": 60}),
            Value::Null,
        )
    };
    let (strict, resilient, allow, none) = (
        svc(70, "strict"),
        svc(71, "resilient"),
        svc(72, "allow"),
        svc(73, "none"),
    );
    let all = [
        strict.clone(),
        resilient.clone(),
        allow.clone(),
        none.clone(),
    ];
    let st = Stack::start(&all, TIMEOUT.as_millis() as u32, true, false);
    let mut admitted: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let mut took = Vec::new();
    // Sends one request and checks its answer and how long it took.
    let mut expect = |s: &Svc, i: usize, status: u16, wait: Wait| {
        let a = st.get(s, &app(i), &key(i));
        assert_eq!(a.status, status, "service {} app-{i}: {a:?}", s.id);
        if status == 200 {
            passed(&a);
            *admitted.entry((s.id, app(i))).or_insert(0) += 1;
        } else {
            refused(&a);
        }
        let within = match wait {
            Wait::Cached => Duration::ZERO..TIMEOUT / 2,
            Wait::Timeout => TIMEOUT - Duration::from_millis(50)..TIMEOUT + MARGIN,
            Wait::Answer => Duration::ZERO..TIMEOUT,
        };
        assert!(
            within.contains(&a.elapsed),
            "service {} app-{i} took {:?}, expected {wait:?} (the timeout is {TIMEOUT:?})",
            s.id,
            a.elapsed
        );
        took.push(a.elapsed);
    };
    for s in &all {
        expect(s, 0, 200, Wait::Answer);
    }
    st.tap().set_hanging(true);
    // Cached: answered at once; their background authreps hang until the timeout.
    expect(&strict, 0, 200, Wait::Cached);
    expect(&resilient, 0, 200, Wait::Cached);
    expect(&allow, 0, 200, Wait::Cached);
    // Not cached: each waits for the timeout.
    expect(&none, 0, 403, Wait::Timeout);
    expect(&allow, 1, 200, Wait::Timeout);
    expect(&resilient, 1, 403, Wait::Timeout);
    // The strict key's background authrep has timed out: evicted, its next request waits.
    std::thread::sleep(TIMEOUT + Duration::from_millis(200));
    expect(&strict, 0, 403, Wait::Timeout);
    expect(&resilient, 0, 200, Wait::Cached);
    // The unseen key allow admitted is cached now.
    expect(&allow, 1, 200, Wait::Cached);
    st.tap().set_hanging(false);
    // strict was evicted and none never caches: they ask; the others still hold the key.
    expect(&strict, 0, 200, Wait::Answer);
    expect(&resilient, 0, 200, Wait::Cached);
    expect(&allow, 0, 200, Wait::Cached);
    expect(&none, 0, 200, Wait::Answer);
    eprintln!("stalled: answers took {took:.0?}");
    // The reports that timed out never reached the control service: retried, they do now.
    let unreported = || -> u64 {
        admitted
            .iter()
            .map(|((id, app_id), n)| n.saturating_sub(st.usage(*id, app_id)))
            .sum()
    };
    let settled = wait_until(Duration::from_secs(15), "the retried reports", || {
        unreported() == 0
    });
    let counted: Vec<_> = admitted
        .keys()
        .map(|(id, app_id)| (*id, app_id.clone(), st.usage(*id, app_id)))
        .collect();
    eprintln!("stalled: admitted {admitted:?}, counted {counted:?}");
    settled.unwrap();
    for (id, app_id, c) in counted {
        assert_eq!(c, admitted[&(id, app_id.clone())], "service {id} {app_id}");
    }
}

/// How long a request may take, against the control-service timeout.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Answered from the cache: without waiting for any call.
    Cached,
    /// Waited for a call that got no answer: the timeout, give or take.
    Timeout,
    /// Waited for the control service's answer.
    Answer,
}
