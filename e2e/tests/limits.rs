//! Local limiters through a real Envoy 1.40 (V8, 2 workers) running target/tollgate.wasm, the
//! local control service and the echo upstream: concurrent requests across both workers admit
//! exactly the bucket, applications and end users are limited apart, a bucket refills, and a
//! flood of distinct keys leaves Envoy's memory bounded and a limited key limited.
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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate::config::{Authorization, LimiterConfig};
use tollgate_e2e::client::{Answer, Request};
use tollgate_e2e::stack::{received, Gateway};

/// Authorized with the control service; applications by user key.
const APPS: &str = "api.apps.example";
const APPS_ID: &str = "42";
/// Authorized with the control service; end users by the `x-user` header.
const USERS: &str = "api.users.example";
const USERS_ID: &str = "43";
/// `authorization: "none"`: forwarded to the upstream without the control service.
const OPEN: &str = "api.open.example";
const OPEN_ID: &str = "44";

const KEY_A: &str = "app-a-key-5d21";
const KEY_B: &str = "app-b-key-90fe";
const KEY_U: &str = "users-key-3c7a";

const CONTROL_DATA: &str = r#"
services:
  - id: 42
    service_token: apps-service-token-1f0c
    backend_version: "1"
    metrics:
      - name: hits
    plans:
      - name: open
    applications:
      - {user_key: app-a-key-5d21, plan: open}
      - {user_key: app-b-key-90fe, plan: open}
  - id: 43
    service_token: users-service-token-77b2
    backend_version: "1"
    metrics:
      - name: hits
    plans:
      - name: open
    applications:
      - {user_key: users-key-3c7a, plan: open}
"#;

/// The three services, each on the echo upstream under `/<system_name>`.
fn services(upstream: SocketAddr) -> tollgate_e2e::Result<Value> {
    let service = |id: u64, name: &str, host: &str, token: &str| {
        json!({
            "id": id,
            "system_name": name,
            "backend_version": "1",
            "backend_authentication_type": "service_token",
            "backend_authentication_value": token,
            "proxy": {
                "api_backend": format!("http://{upstream}/{name}"),
                "hosts": [host],
                "credentials_location": "query",
                "auth_user_key": "user_key",
                "proxy_rules": [
                    {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}
                ]
            }
        })
    };
    Ok(json!({"services": [
        service(42, "apps", APPS, "apps-service-token-1f0c"),
        service(43, "users", USERS, "users-service-token-77b2"),
        service(44, "open", OPEN, "open-service-token-e4a8"),
    ]}))
}

struct Stack {
    control: tollgate_control::Running,
    gw: Gateway,
}

impl Stack {
    /// The stack with `limiters` (FilterConfig JSON) on the service of each id; the service
    /// [`OPEN_ID`] does not authorize.
    fn start(limiters: &[(&str, Value)]) -> Self {
        let control = tollgate_control::spawn(CONTROL_DATA, None).unwrap();
        let limiters: Vec<(String, LimiterConfig)> = limiters
            .iter()
            .map(|(id, l)| ((*id).to_owned(), serde_json::from_value(l.clone()).unwrap()))
            .collect();
        let gw = Gateway::serve(
            services,
            control.addr(),
            |config| {
                for service in &mut config.services {
                    if service.id == OPEN_ID {
                        service.authorization = Authorization::None;
                    }
                    service.limiters.extend(
                        limiters
                            .iter()
                            .filter(|(id, _)| *id == service.id)
                            .map(|(_, l)| l.clone()),
                    );
                }
            },
            |_| {},
        )
        .unwrap();
        Self { control, gw }
    }

    fn get(&self, host: &str, target: &str, user: Option<&str>) -> Answer {
        let mut request = Request::new("GET", host, target);
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        self.gw.send(&request).unwrap()
    }

    /// The control service's requests whose query names `user_key`.
    fn authorized_for(&self, user_key: &str) -> usize {
        let needle = format!("user_key={user_key}");
        received(self.control.addr())
            .unwrap()
            .iter()
            .filter(|r| r.path_and_query.contains(&needle))
            .count()
    }

    /// Requests the upstream received with `x-user: user` (any user when `None`).
    fn upstream_saw(&self, user: Option<&str>) -> usize {
        self.gw
            .echo
            .seen()
            .iter()
            .filter(|s| user.is_none() || s.header("x-user") == user)
            .count()
    }

    fn counter(&self, name: &str) -> u64 {
        self.gw.counter(name).unwrap()
    }

    fn limiter_counter(&self, service: &str, limiter: &str, outcome: &str) -> u64 {
        self.counter(&format!(
            "wasmcustom.tollgate.limiter.{service}.{limiter}.{outcome}"
        ))
    }
}

/// A limited answer: the default limits-exceeded error with `Retry-After` in whole seconds,
/// which is returned.
fn limited(a: &Answer) -> u64 {
    assert_eq!(
        (a.status, a.body.as_str()),
        (429, "Limits exceeded"),
        "{a:?}"
    );
    let retry = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {a:?}"));
    let seconds: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {retry:?}"));
    assert!(seconds > 0, "Retry-After {seconds}");
    seconds
}

fn passed(a: &Answer) {
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.echoed().is_some(), "the upstream did not answer: {a:?}");
}

fn bucket(name: &str, key: &str, rate: u64, per: &str, burst: u64) -> Value {
    json!({
        "name": name,
        "counts": "requests",
        "key": key,
        "token_bucket": {"rate": rate, "per": per, "burst": burst}
    })
}

#[test]
fn concurrent_requests_on_two_workers_admit_exactly_the_burst() {
    const THREADS: usize = 50;
    const EACH: usize = 4;
    let st = Stack::start(&[(APPS_ID, bucket("burst", "application", 1, "hour", 50))]);
    let target = format!("/ping?user_key={KEY_A}");
    let start = Barrier::new(THREADS);
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    (0..EACH)
                        .map(|_| st.get(APPS, &target, None))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(answers.len(), THREADS * EACH);
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let upstream = st.upstream_saw(None);
    let control = st.authorized_for(KEY_A);
    let admitted = st.limiter_counter(APPS_ID, "burst", "admitted");
    eprintln!(
        "concurrent: {} requests, {ok} answered 200, upstream saw {upstream}, control service \
         saw {control}, admitted counter {admitted}, over-admission {}",
        answers.len(),
        i64::try_from(admitted).unwrap() - 50
    );
    for a in answers.iter().filter(|a| a.status != 200) {
        limited(a);
    }
    for a in answers.iter().filter(|a| a.status == 200) {
        passed(a);
    }
    // Both workers took connections: the bucket was contended across them.
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            st.counter(&format!(
                "listener.127.0.0.1_{}.worker_{w}.downstream_cx_total",
                st.gw.port
            ))
        })
        .collect();
    eprintln!("concurrent: connections per worker {per_worker:?}");
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    assert_eq!(ok, 50);
    assert_eq!(upstream, 50);
    assert_eq!(control, 50);
    assert_eq!(st.counter("wasmcustom.tollgate.rate_limited"), 150);
    assert_eq!(admitted, 50);
    assert_eq!(st.limiter_counter(APPS_ID, "burst", "limited"), 150);
}

#[test]
fn after_the_refill_time_requests_pass_again() {
    let st = Stack::start(&[(APPS_ID, bucket("refill", "application", 1, "second", 5))]);
    let target = format!("/ping?user_key={KEY_A}");
    for _ in 0..5 {
        passed(&st.get(APPS, &target, None));
    }
    let retry = limited(&st.get(APPS, &target, None));
    assert_eq!(retry, 1, "one token a second");
    std::thread::sleep(Duration::from_millis(1200));
    passed(&st.get(APPS, &target, None));
    assert_eq!(st.upstream_saw(None), 6);
    assert_eq!(st.authorized_for(KEY_A), 6);
    assert_eq!(st.limiter_counter(APPS_ID, "refill", "admitted"), 6);
    assert_eq!(st.limiter_counter(APPS_ID, "refill", "limited"), 1);
}

#[test]
fn applications_and_end_users_are_limited_apart() {
    let st = Stack::start(&[
        (APPS_ID, bucket("per-app", "application", 1, "hour", 3)),
        (USERS_ID, bucket("per-user", "header:x-user", 1, "hour", 3)),
    ]);
    // Two applications.
    let a = format!("/ping?user_key={KEY_A}");
    let b = format!("/ping?user_key={KEY_B}");
    for _ in 0..3 {
        passed(&st.get(APPS, &a, None));
    }
    limited(&st.get(APPS, &a, None));
    for _ in 0..3 {
        passed(&st.get(APPS, &b, None));
    }
    limited(&st.get(APPS, &b, None));
    limited(&st.get(APPS, &a, None));
    assert_eq!(st.authorized_for(KEY_A), 3);
    assert_eq!(st.authorized_for(KEY_B), 3);

    // Two end users of one application.
    let u = format!("/ping?user_key={KEY_U}");
    for _ in 0..3 {
        passed(&st.get(USERS, &u, Some("alice")));
    }
    limited(&st.get(USERS, &u, Some("alice")));
    for _ in 0..3 {
        passed(&st.get(USERS, &u, Some("bob")));
    }
    limited(&st.get(USERS, &u, Some("bob")));
    limited(&st.get(USERS, &u, Some("alice")));
    assert_eq!(st.upstream_saw(Some("alice")), 3);
    assert_eq!(st.upstream_saw(Some("bob")), 3);
    assert_eq!(st.authorized_for(KEY_U), 6);

    assert_eq!(st.upstream_saw(None), 12);
    assert_eq!(st.counter("wasmcustom.tollgate.rate_limited"), 6);
    assert_eq!(st.limiter_counter(APPS_ID, "per-app", "admitted"), 6);
    assert_eq!(st.limiter_counter(APPS_ID, "per-app", "limited"), 3);
    assert_eq!(st.limiter_counter(USERS_ID, "per-user", "admitted"), 6);
    assert_eq!(st.limiter_counter(USERS_ID, "per-user", "limited"), 3);
}

/// One keep-alive HTTP/1.1 connection to the gateway, for the flood.
struct Connection {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Connection {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
            port,
        }
    }

    /// Sends a GET and reads the answer; returns its status. Reconnects when the gateway
    /// closes the connection.
    fn get(&mut self, host: &str, target: &str, user: &str, line: &mut String) -> u16 {
        let request = format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nx-user: {user}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        line.clear();
        self.reader.read_line(line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {line:?}"));
        let mut length = None;
        let mut close = false;
        loop {
            line.clear();
            self.reader.read_line(line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<u64>().unwrap());
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                panic!("unexpected transfer-encoding {value}");
            }
        }
        let length = length.unwrap_or_else(|| panic!("no content-length on a {status}"));
        std::io::copy(&mut (&mut self.reader).take(length), &mut std::io::sink()).unwrap();
        if close {
            *self = Self::open(self.port);
        }
        status
    }
}

/// Envoy's resident memory in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// Sends `count` requests with distinct `x-user` values starting at `first`, over
/// `connections` keep-alive connections; returns (200s, 429s).
fn flood(port: u16, first: usize, count: usize, connections: usize) -> (usize, usize) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                s.spawn(move || {
                    let mut conn = Connection::open(port);
                    let mut line = String::new();
                    let (mut ok, mut limited) = (0, 0);
                    for i in (first + c..first + count).step_by(connections) {
                        match conn.get(OPEN, "/flood", &format!("flood-{i}"), &mut line) {
                            200 => ok += 1,
                            429 => limited += 1,
                            other => panic!("flood request {i} answered {other}"),
                        }
                    }
                    (ok, limited)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    })
}

#[test]
fn a_flood_of_distinct_keys_keeps_memory_bounded_and_the_limited_limited() {
    const HALF: usize = 100_000;
    const CONNECTIONS: usize = 16;
    let mut limiter = bucket("per-user", "header:x-user", 1, "hour", 3);
    limiter["max_keys"] = json!(4096);
    let st = Stack::start(&[(OPEN_ID, limiter)]);
    let pid = st.gw.envoy.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "envoy", "the pid is Envoy's");

    for _ in 0..3 {
        passed(&st.get(OPEN, "/victim", Some("victim")));
    }
    limited(&st.get(OPEN, "/victim", Some("victim")));
    assert!(
        received(st.control.addr()).unwrap().is_empty(),
        "authorization none asks nothing"
    );

    let before = rss_kib(pid);
    let started = Instant::now();
    let first = flood(st.gw.port, 0, HALF, CONNECTIONS);
    let half = rss_kib(pid);
    let second = flood(st.gw.port, HALF, HALF, CONNECTIONS);
    let after = rss_kib(pid);
    let took = started.elapsed();
    eprintln!(
        "flood: {} requests in {took:.1?} ({:.0}/s); first half {} passed {} limited, second \
         half {} passed {} limited",
        2 * HALF,
        (2 * HALF) as f64 / took.as_secs_f64(),
        first.0,
        first.1,
        second.0,
        second.1
    );
    eprintln!(
        "Envoy VmRSS: before {before} KiB, after {HALF} {half} KiB (+{} KiB), after {} {after} \
         KiB (+{} KiB in the second half)",
        half.saturating_sub(before),
        2 * HALF,
        i64::try_from(after).unwrap() - i64::try_from(half).unwrap()
    );

    assert_eq!(first.0 + first.1, HALF);
    assert_eq!(second.0 + second.1, HALF);
    // 4096 slots of 3 tokens, refilled once an hour, the victim's slot already empty: 100,000
    // keys fill every other slot in the first half, and nothing passes in the second.
    assert_eq!((first.0, second.0), (4095 * 3, 0), "{first:?} {second:?}");
    assert!(
        after.saturating_sub(half) < 4 * 1024,
        "the second half grew Envoy by {} KiB",
        after.saturating_sub(half)
    );
    limited(&st.get(OPEN, "/victim", Some("victim")));
    assert_eq!(st.upstream_saw(Some("victim")), 3);
    assert_eq!(st.upstream_saw(None), 3 + first.0 + second.0);
    assert_eq!(
        st.limiter_counter(OPEN_ID, "per-user", "limited"),
        u64::try_from(2 + first.1 + second.1).unwrap()
    );
}
