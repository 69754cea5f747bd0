//! End to end: the example services in a real Envoy 1.40 (V8, 2 workers) running
//! target/tollgate.wasm, the local control service over real HTTP, and an echo upstream, all
//! on 127.0.0.1. One test per outcome, each with a stack of its own (so one failure hides no
//! other, and counts are exact): each asserts what a client, the upstream and the control
//! service saw, the filter's counter for that outcome, and that Envoy's log holds no secret.
//!
//! Envoy is required: a missing Envoy or tollgate.wasm fails these tests with the `make`
//! command that provides it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;
use tollgate_e2e::client::{Answer, Request};
use tollgate_e2e::envoy::{direct_response_bootstrap, Envoy};
use tollgate_e2e::stack::{received, Gateway, EXAMPLES, NODE_ID};
use tollgate_e2e::{free_port, tollgate_wasm};

const SENDGRID: &str = "api.sendgrid.example";
const SENDGRID_ID: &str = "2555417735060";
const SENDGRID_TOKEN: &str = "sendgrid-service-token-8f2c1b7e";
const SENDGRID_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e";
const TWITTER: &str = "api.twitter.example";
const TWITTER_ID: &str = "2555417735077";
const TWITTER_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_9b7d2e41";
/// Credentials the tests authorize with.
const MAIL: &str = "/api/mail.send.json?api_user=acme-mailer&api_key=acme-key-1";

/// An application id and key with every character that needs encoding in a query.
const ODD_APP_ID: &str = "app+1&x=y é";
const ODD_APP_KEY: &str = "k;%#/?";

/// The control service's data for these tests.
fn control_data() -> String {
    include_str!("../../testdata/gateway-control.yaml").to_owned()
}

/// One test's stack: the control service with the tests' data, and the gateway calling it.
struct Stack {
    control: tollgate_control::Running,
    gw: Gateway,
}

impl Stack {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// As [`Stack::start`], with the FilterConfig changed by `tweak`.
    fn start_with(tweak: impl FnOnce(&mut tollgate::FilterConfig)) -> Self {
        let control = tollgate_control::spawn(&control_data(), None).unwrap();
        let gw = Gateway::start(&EXAMPLES, control.addr(), tweak).unwrap();
        Self { control, gw }
    }

    /// Every request waits for its own authrep: what the control service answers is what the
    /// client gets.
    fn start_uncached() -> Self {
        Self::start_with(|c| {
            for s in &mut c.services {
                s.cache.mode = tollgate::config::CacheMode::None;
            }
        })
    }

    fn send(&self, request: &Request<'_>) -> Answer {
        self.gw.send(request).unwrap()
    }

    fn control(&self) -> SocketAddr {
        self.control.addr()
    }

    /// The filter's counter for `outcome`, from Envoy's /stats.
    fn counted(&self, outcome: &str) -> u64 {
        self.gw
            .counter(&format!("wasmcustom.tollgate.{outcome}"))
            .unwrap()
    }
}

/// No credential, token or secret of the examples or the tests' data in Envoy's log.
fn no_secrets_logged(gw: &Gateway, extra: &[&str]) {
    let log = gw.envoy.log();
    if let Some(secret) = tollgate_testsupport::leaked(&log, extra) {
        panic!("Envoy's log holds {secret}");
    }
}

/// A header the upstream received, from the echo's description.
fn echoed_header(seen: &Value, name: &str) -> Option<String> {
    seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_owned())
}

fn json(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body))
}

/// The Service Management requests the control service received, raw.
fn control_requests(control: SocketAddr) -> Vec<String> {
    received(control)
        .unwrap()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect()
}

/// The control service's counter for one application, metric and period.
fn usage(control: SocketAddr, service: &str, app: &str, metric: &str, period: &str) -> u64 {
    let body = ureq::get(&format!("http://{control}/_tollgate/usage"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let all: Value = serde_json::from_str(&body).unwrap();
    all["services"][service]["applications"][app][metric][period]
        .as_u64()
        .unwrap_or(0)
}

fn get(host: &'static str, target: &'static str) -> Request<'static> {
    Request::new("GET", host, target)
}

#[test]
fn an_unknown_host_is_404_with_an_empty_body_and_nothing_asked() {
    let st = Stack::start();
    let a = st.send(&get("unknown.example", "/v3/templates"));
    assert_eq!((a.status, a.body.as_str()), (404, ""));
    assert_eq!(control_requests(st.control()), Vec::<String>::new());
    assert_eq!(st.counted("unknown_service"), 1);
    no_secrets_logged(&st.gw, &[]);
}

#[test]
fn missing_credentials_get_each_services_configured_error() {
    let st = Stack::start();
    let a = st.send(&get(SENDGRID, "/api/mail.send.json"));
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        json(&a)["errors"][0]["message"],
        "api_user and api_key are required"
    );
    let a = st.send(&get(TWITTER, "/1.1/statuses/home_timeline.json"));
    assert_eq!(a.status, 403);
    assert_eq!(a.body, "Authentication parameters missing");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/plain; charset=us-ascii")
    );
    assert_eq!(control_requests(st.control()), Vec::<String>::new());
    assert_eq!(st.counted("auth_missing"), 2);
    no_secrets_logged(&st.gw, &[]);
}

#[test]
fn no_mapping_rule_is_answered_locally_without_asking_the_control_service() {
    let st = Stack::start();
    let a = st.send(&get(
        SENDGRID,
        "/api/unknown.json?api_user=acme-mailer&api_key=acme-key-1",
    ));
    assert_eq!(a.status, 404);
    assert_eq!(json(&a)["errors"][0]["message"], "unknown endpoint");
    assert_eq!(control_requests(st.control()), Vec::<String>::new());
    assert_eq!(st.counted("no_match"), 1);
    no_secrets_logged(&st.gw, &[]);
}

#[test]
fn authorized_requests_reach_the_upstream_with_the_secret_token() {
    let st = Stack::start();
    let info: Value = serde_json::from_str(&st.gw.envoy.admin("/server_info").unwrap()).unwrap();
    assert_eq!(
        info["command_line_options"]["concurrency"], 2,
        "Envoy's workers"
    );
    // SendGrid-like: the upstream sees the secret token, the backend's Host and path prefix.
    let a = st.send(&get(SENDGRID, MAIL).header("X-3scale-Debug", "not the token"));
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.echoed().expect("the upstream answered");
    assert_eq!(seen["path"], format!("/sendgrid{MAIL}"));
    assert_eq!(
        echoed_header(&seen, "x-3scale-proxy-secret-token").as_deref(),
        Some(SENDGRID_SECRET)
    );
    assert_eq!(
        echoed_header(&seen, "host"),
        Some(st.gw.echo.addr.to_string())
    );
    assert_eq!(
        echoed_header(&seen, "x-3scale-debug"),
        None,
        "the debug header never goes upstream"
    );
    assert_eq!(
        a.header("x-3scale-matched-rules"),
        None,
        "wrong debug value"
    );

    // Twitter-like: credentials in headers, hostname_rewrite for Host, `last` rules.
    let a = st.send(
        &get(TWITTER, "/1.1/statuses/home_timeline.json?count=5")
            .header("X-App-Id", "timeline-app")
            .header("X-App-Key", "timeline-key"),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.echoed().unwrap();
    assert_eq!(
        seen["path"],
        "/twitter/1.1/statuses/home_timeline.json?count=5"
    );
    assert_eq!(
        echoed_header(&seen, "host").as_deref(),
        Some("api.twitter.internal")
    );
    assert_eq!(
        echoed_header(&seen, "x-3scale-proxy-secret-token").as_deref(),
        Some(TWITTER_SECRET)
    );

    let sent = control_requests(st.control());
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(
        sent.iter()
            .all(|r| r.starts_with("/transactions/authrep.xml?")),
        "{sent:#?}"
    );
    assert_eq!(st.counted("authorized"), 2);
    assert_eq!(st.counted("control_service_error"), 0);
    // Envoy's Prometheus view names the counter too.
    let prometheus = st.gw.envoy.admin("/stats/prometheus").unwrap();
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("tollgate_authorized") && l.ends_with(" 2")),
        "{prometheus}"
    );
    no_secrets_logged(&st.gw, &[]);
}

/// Debug headers when X-3scale-Debug carries the service token; usage is summed over the two
/// rules that match stats.get.json?aggregate=1 (2 + 1).
#[test]
fn debug_headers_when_x_3scale_debug_is_the_service_token() {
    let st = Stack::start();
    let a = st.send(
        &get(
            SENDGRID,
            "/api/stats.get.json?aggregate=1&api_user=acme-mailer&api_key=acme-key-1",
        )
        .header("X-3scale-Debug", SENDGRID_TOKEN),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("x-3scale-matched-rules").as_deref(),
        Some("/api/stats.get.json?aggregate=1, /api/stats.get.json$")
    );
    assert_eq!(
        a.header("x-3scale-usage").as_deref(),
        Some("usage%5Bstats%5D=3")
    );
    assert_eq!(
        a.header("x-3scale-service-id").as_deref(),
        Some(SENDGRID_ID)
    );
    assert_eq!(
        a.header("x-3scale-service-name").as_deref(),
        Some("sendgrid")
    );
    assert_eq!(
        a.header("x-3scale-credentials").as_deref(),
        Some("app_id=acme-mailer&app_key=acme-key-1")
    );
    // APIcast's hostname is the gateway's (nginx's $hostname), here Envoy's node id.
    assert_eq!(a.header("x-3scale-hostname").as_deref(), Some(NODE_ID));
    let sent = control_requests(st.control());
    let [only] = sent.as_slice() else {
        panic!("{sent:#?}")
    };
    assert!(only.starts_with("/transactions/authrep.xml?"), "{only}");
    assert!(only.contains("usage%5Bstats%5D=3"), "{only}");
    assert!(
        only.contains(&format!("service_id={SENDGRID_ID}")),
        "{only}"
    );
    assert!(
        only.contains(&format!("service_token={SENDGRID_TOKEN}")),
        "{only}"
    );
    let used = |metric| usage(st.control(), SENDGRID_ID, "acme-mailer", metric, "eternity");
    assert_eq!(used("stats"), 3);
    assert_eq!(used("hits"), 3);
    assert_eq!(st.counted("authorized"), 1);
    no_secrets_logged(&st.gw, &[]);
}

/// Header values are taken as sent; query credentials would be APIcast's raw `$arg_`.
#[test]
fn credentials_that_need_encoding_reach_the_control_service_encoded() {
    let st = Stack::start();
    let a = st.send(
        &get(TWITTER, "/2/tweets/7")
            .header("X-App-Id", ODD_APP_ID)
            .header("X-App-Key", ODD_APP_KEY),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let sent = control_requests(st.control());
    let [only] = sent.as_slice() else {
        panic!("{sent:#?}")
    };
    assert!(
        only.contains("app_id=app%2B1%26x%3Dy%20%C3%A9&app_key=k%3B%25%23%2F%3F"),
        "{only}"
    );
    assert!(only.contains("usage%5Btweets_lookup%5D=1"), "{only}");
    assert_eq!(
        usage(
            st.control(),
            TWITTER_ID,
            ODD_APP_ID,
            "tweets_lookup",
            "eternity"
        ),
        1
    );
    assert_eq!(st.counted("authorized"), 1);
    no_secrets_logged(&st.gw, &[ODD_APP_KEY]);
}

#[test]
fn body_borne_credentials_are_read_and_the_body_goes_upstream() {
    let st = Stack::start();
    let body = "api_user=acme-mailer&api_key=acme-key-1&to=ops%40acme.example";
    let a = st.send(&Request::new("POST", SENDGRID, "/api/mail.send.json").form(body));
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.echoed().unwrap();
    assert_eq!(seen["body"], body);
    assert_eq!(
        echoed_header(&seen, "x-3scale-proxy-secret-token").as_deref(),
        Some(SENDGRID_SECRET)
    );
    let sent = control_requests(st.control());
    let [only] = sent.as_slice() else {
        panic!("{sent:#?}")
    };
    assert!(
        only.contains("app_id=acme-mailer&app_key=acme-key-1"),
        "{only}"
    );
    assert_eq!(st.counted("authorized"), 1);
    no_secrets_logged(&st.gw, &[]);
}

#[test]
fn rejected_by_the_control_service_is_403() {
    let st = Stack::start();
    // A wrong key, then an unknown application.
    let a = st.send(&get(
        SENDGRID,
        "/api/mail.send.json?api_user=acme-mailer&api_key=guess",
    ));
    assert_eq!(a.status, 403);
    assert_eq!(json(&a)["errors"][0]["message"], "authentication failed");
    let a = st.send(&get(
        SENDGRID,
        "/api/mail.send.json?api_user=nobody&api_key=x",
    ));
    assert_eq!(a.status, 403);
    assert_eq!(json(&a)["errors"][0]["message"], "authentication failed");
    assert_eq!(control_requests(st.control()).len(), 2);
    assert_eq!(st.counted("auth_failed"), 2);
    assert_eq!(st.counted("authorized"), 0);
    no_secrets_logged(&st.gw, &[]);
}

#[test]
fn a_non_utf8_header_value_is_an_answer_and_the_next_request_still_works() {
    let st = Stack::start();
    // The control service knows no application with those bytes.
    let a = st.send(
        &get(TWITTER, "/1.1/statuses/home_timeline.json")
            .header("X-App-Id", b"\xff\xfetimeline".to_vec())
            .header("X-App-Key", "timeline-key"),
    );
    assert_eq!(a.status, 403, "{a:?}");
    let a = st.send(
        &get(TWITTER, "/2/tweets/20")
            .header("X-App-Id", "timeline-app")
            .header("X-App-Key", "timeline-key"),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        (st.counted("auth_failed"), st.counted("authorized")),
        (1, 1)
    );
    no_secrets_logged(&st.gw, &[]);
}

/// A disabled metric (limit 0 on the plan): 403, as APIcast.
#[test]
fn a_disabled_metric_is_403() {
    let st = Stack::start();
    let a = st.send(
        &Request::new("POST", TWITTER, "/2/tweets")
            .header("X-App-Id", "timeline-app")
            .header("X-App-Key", "timeline-key"),
    );
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body, "Authentication failed");
    assert_eq!(st.counted("auth_failed"), 1);
    no_secrets_logged(&st.gw, &[]);
}

/// trial-app may fetch bounces twice a minute; the third is a 429 with Retry-After.
#[test]
fn limits_exceeded_is_429_with_retry_after() {
    let st = Stack::start_uncached();
    let bounces = "/api/bounces.get.json?api_user=trial-app&api_key=trial-key";
    for _ in 0..2 {
        let a = st.send(&get(SENDGRID, bounces));
        assert_eq!(a.status, 200, "{a:?}");
    }
    let a = st.send(&get(SENDGRID, bounces));
    assert_eq!(a.status, 429, "{a:?}");
    assert_eq!(json(&a)["errors"][0]["message"], "rate limit exceeded");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        usage(st.control(), SENDGRID_ID, "trial-app", "bounces", "minute"),
        2,
        "a denied authrep does not count"
    );
    assert_eq!(
        (st.counted("authorized"), st.counted("limits_exceeded")),
        (2, 1)
    );
    no_secrets_logged(&st.gw, &[]);
}

/// A request line over APIcast's 8 KiB (Envoy admits 60 KiB): NGINX's 414, before the host,
/// credentials or rules matter, and the control service is not asked.
#[test]
fn a_request_line_over_8_kib_is_414_without_asking_the_control_service() {
    let st = Stack::start();
    let long = format!("{MAIL}&pad={}", "x".repeat(8_200));
    let a = st.send(&Request::new("GET", SENDGRID, &long));
    assert_eq!(a.status, 414, "{a:?}");
    assert!(a.body.contains("414 Request-URI Too Large"), "{a:?}");
    assert_eq!(control_requests(st.control()), Vec::<String>::new());
    assert_eq!(st.counted("uri_too_long"), 1);
    no_secrets_logged(&st.gw, &[]);
}

/// Nothing listens: Envoy fails the call at once.
#[test]
fn control_service_down_is_auth_failed_at_once() {
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let gw = Gateway::start(&EXAMPLES, nowhere, |_| {}).unwrap();
    let a = gw.send(&get(SENDGRID, MAIL)).unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.elapsed < Duration::from_secs(2), "took {:?}", a.elapsed);
    assert_eq!(
        gw.counter("wasmcustom.tollgate.control_service_error")
            .unwrap(),
        1
    );
    no_secrets_logged(&gw, &[]);
}

/// A control service that accepts connections and never answers.
fn black_hole() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// It accepts and never answers: the filter's timeout (here 300 ms) answers the client.
#[test]
fn control_service_silent_is_auth_failed_within_the_timeout() {
    let (listener, silent) = black_hole();
    let keep = std::thread::spawn(move || {
        // Hold accepted connections open without reading a byte back.
        let mut held = Vec::new();
        for stream in listener.incoming().take(4).flatten() {
            held.push(stream);
        }
        let mut sink = [0u8; 1];
        for mut s in held {
            let _ = s.read(&mut sink);
        }
    });
    let gw = Gateway::start(&EXAMPLES, silent, |c| c.control_service.timeout_ms = 300).unwrap();
    let a = gw
        .send(
            &get(TWITTER, "/1.1/statuses/home_timeline.json")
                .header("X-App-Id", "timeline-app")
                .header("X-App-Key", "timeline-key"),
        )
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body, "Authentication failed");
    assert!(
        a.elapsed >= Duration::from_millis(250) && a.elapsed < Duration::from_secs(3),
        "took {:?}",
        a.elapsed
    );
    assert_eq!(
        gw.counter("wasmcustom.tollgate.control_service_error")
            .unwrap(),
        1
    );
    no_secrets_logged(&gw, &[]);
    drop(gw);
    drop(keep);
}

#[test]
fn envoy_refuses_an_invalid_configuration_and_names_the_json_path() {
    let wasm = tollgate_wasm().unwrap();
    let text = std::fs::read_to_string(tollgate_testsupport::example("sendgrid.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["services"][0]["proxy"]["proxy_rules"][3]["delta"] = Value::from("many");
    doc["services"][0]["backend_version"] = Value::from("7");
    let (port, admin) = (free_port().unwrap(), free_port().unwrap());
    let bootstrap =
        direct_response_bootstrap(port, admin, Some((&wasm, &doc.to_string())), Some(port));
    let log = Envoy::refuses(&bootstrap, admin).unwrap();
    assert!(log.contains("services[0].backend_version"), "{log}");
    assert!(
        log.contains("services[0].proxy.proxy_rules[3].delta"),
        "{log}"
    );
    assert!(!log.contains(SENDGRID_TOKEN), "the log names no secret");
}
