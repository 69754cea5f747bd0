//! End to end: the example services in a real Envoy 1.40 (V8) running target/tollgate.wasm,
//! the local control service over real HTTP, and an echo upstream, all on 127.0.0.1. Each
//! test asserts what a client, the upstream and the control service saw.
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
use tollgate_e2e::stack::{Gateway, EXAMPLES};
use tollgate_e2e::{free_port, tollgate_wasm, workspace};

const SENDGRID: &str = "api.sendgrid.example";
const SENDGRID_ID: &str = "2555417735060";
const SENDGRID_TOKEN: &str = "sendgrid-service-token-8f2c1b7e";
const SENDGRID_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e";
const TWITTER: &str = "api.twitter.example";
const TWITTER_ID: &str = "2555417735077";
const TWITTER_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_9b7d2e41";

/// An application id and key with every character that needs encoding in a query.
const ODD_APP_ID: &str = "app+1&x=y é";
const ODD_APP_KEY: &str = "k;%#/?";

/// The control service's data for these tests.
fn control_data() -> String {
    include_str!("../../testdata/gateway-control.yaml").to_owned()
}

fn json(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body))
}

/// The Service Management requests the control service received, raw.
fn control_requests(control: SocketAddr) -> Vec<String> {
    let body = ureq::get(&format!("http://{control}/_tollgate/requests"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let list: Value = serde_json::from_str(&body).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["path_and_query"].as_str().unwrap().to_owned())
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
fn every_outcome_through_envoy() {
    let control = tollgate_control::spawn(&control_data(), None).unwrap();
    let gw = Gateway::start(&EXAMPLES, control.addr(), |_| {}).unwrap();
    let upstream = gw.echo.addr;

    // Unknown host: 404, empty body, nothing forwarded or asked.
    let a = gw.send(&get("unknown.example", "/v3/templates")).unwrap();
    assert_eq!((a.status, a.body.as_str()), (404, ""));

    // Credentials missing: the service's configured status, content type and body.
    let a = gw.send(&get(SENDGRID, "/api/mail.send.json")).unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        json(&a)["errors"][0]["message"],
        "api_user and api_key are required"
    );
    let a = gw
        .send(&get(TWITTER, "/1.1/statuses/home_timeline.json"))
        .unwrap();
    assert_eq!(a.status, 403);
    assert_eq!(a.body, "Authentication parameters missing");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/plain; charset=us-ascii")
    );

    // No mapping rule: answered locally, the control service is not asked.
    let asked_before = control_requests(control.addr()).len();
    let a = gw
        .send(&get(
            SENDGRID,
            "/api/unknown.json?api_user=acme-mailer&api_key=acme-key-1",
        ))
        .unwrap();
    assert_eq!(a.status, 404);
    assert_eq!(json(&a)["errors"][0]["message"], "unknown endpoint");
    assert_eq!(control_requests(control.addr()).len(), asked_before);

    // Authorized: the upstream sees the secret token, the backend's Host and path prefix.
    let a = gw
        .send(
            &get(
                SENDGRID,
                "/api/mail.send.json?api_user=acme-mailer&api_key=acme-key-1",
            )
            .header("X-3scale-Debug", "not the token"),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.echoed().expect("the upstream answered");
    assert_eq!(
        seen["path"],
        "/sendgrid/api/mail.send.json?api_user=acme-mailer&api_key=acme-key-1"
    );
    let headers = seen["headers"].as_array().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(
        header("x-3scale-proxy-secret-token").as_deref(),
        Some(SENDGRID_SECRET)
    );
    assert_eq!(header("host"), Some(upstream.to_string()));
    assert_eq!(
        header("x-3scale-debug"),
        None,
        "the debug header never goes upstream"
    );
    assert_eq!(
        a.header("x-3scale-matched-rules"),
        None,
        "wrong debug value"
    );

    // Twitter-like: credentials in headers, hostname_rewrite for Host, `last` rules.
    let a = gw
        .send(
            &get(TWITTER, "/1.1/statuses/home_timeline.json?count=5")
                .header("X-App-Id", "timeline-app")
                .header("X-App-Key", "timeline-key"),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.echoed().unwrap();
    assert_eq!(
        seen["path"],
        "/twitter/1.1/statuses/home_timeline.json?count=5"
    );
    let host = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "host")
        .map(|h| h[1].clone());
    assert_eq!(host, Some(Value::from("api.twitter.internal")));
    assert!(seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "x-3scale-proxy-secret-token" && h[1] == TWITTER_SECRET));

    // Debug headers when X-3scale-Debug carries the service token; usage is summed over the
    // two rules that match stats.get.json?aggregate=1 (2 + 1).
    let a = gw
        .send(
            &get(
                SENDGRID,
                "/api/stats.get.json?aggregate=1&api_user=acme-mailer&api_key=acme-key-1",
            )
            .header("X-3scale-Debug", SENDGRID_TOKEN),
        )
        .unwrap();
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
    assert!(
        a.header("x-3scale-hostname").is_some_and(|h| !h.is_empty()),
        "{a:?}"
    );
    let sent = control_requests(control.addr());
    let last = sent.last().unwrap();
    assert!(last.starts_with("/transactions/authrep.xml?"), "{last}");
    assert!(last.contains("usage%5Bstats%5D=3"), "{last}");
    assert!(
        last.contains(&format!("service_id={SENDGRID_ID}")),
        "{last}"
    );
    assert!(
        last.contains(&format!("service_token={SENDGRID_TOKEN}")),
        "{last}"
    );
    assert_eq!(
        usage(
            control.addr(),
            SENDGRID_ID,
            "acme-mailer",
            "stats",
            "eternity"
        ),
        3
    );
    assert!(
        usage(
            control.addr(),
            SENDGRID_ID,
            "acme-mailer",
            "hits",
            "eternity"
        ) >= 3
    );

    // Credentials that need encoding reach the control service encoded, and it finds them.
    // (Header values are taken as sent; query credentials would be APIcast's raw `$arg_`.)
    let a = gw
        .send(
            &get(TWITTER, "/2/tweets/7")
                .header("X-App-Id", ODD_APP_ID)
                .header("X-App-Key", ODD_APP_KEY),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let last = control_requests(control.addr()).pop().unwrap();
    assert!(
        last.contains("app_id=app%2B1%26x%3Dy%20%C3%A9&app_key=k%3B%25%23%2F%3F"),
        "{last}"
    );
    assert!(last.contains("usage%5Btweets_lookup%5D=1"), "{last}");

    // A POST whose credentials are urlencoded body arguments; the body reaches the upstream.
    let a = gw
        .send(
            &Request::new("POST", SENDGRID, "/api/mail.send.json")
                .form("api_user=acme-mailer&api_key=acme-key-1&to=ops%40acme.example"),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.echoed().unwrap()["body"],
        "api_user=acme-mailer&api_key=acme-key-1&to=ops%40acme.example"
    );

    // Auth failed: the control service says no (wrong key, unknown app).
    let a = gw
        .send(&get(
            SENDGRID,
            "/api/mail.send.json?api_user=acme-mailer&api_key=guess",
        ))
        .unwrap();
    assert_eq!(a.status, 403);
    assert_eq!(json(&a)["errors"][0]["message"], "authentication failed");
    let a = gw
        .send(&get(
            SENDGRID,
            "/api/mail.send.json?api_user=nobody&api_key=x",
        ))
        .unwrap();
    assert_eq!(a.status, 403);

    // A non-UTF-8 header value is an answer, not a crash; the next request still works.
    let a = gw
        .send(
            &get(TWITTER, "/1.1/statuses/home_timeline.json")
                .header("X-App-Id", b"\xff\xfetimeline".to_vec())
                .header("X-App-Key", "timeline-key"),
        )
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    let a = gw
        .send(
            &get(TWITTER, "/2/tweets/20")
                .header("X-App-Id", "timeline-app")
                .header("X-App-Key", "timeline-key"),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");

    // A disabled metric (limit 0 on the plan): 403, as APIcast.
    let a = gw
        .send(
            &Request::new("POST", TWITTER, "/2/tweets")
                .header("X-App-Id", "timeline-app")
                .header("X-App-Key", "timeline-key"),
        )
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body, "Authentication failed");

    // Limits: trial-app may fetch bounces twice a minute; the third is a 429 with Retry-After.
    for _ in 0..2 {
        let a = gw
            .send(&get(
                SENDGRID,
                "/api/bounces.get.json?api_user=trial-app&api_key=trial-key",
            ))
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    let a = gw
        .send(&get(
            SENDGRID,
            "/api/bounces.get.json?api_user=trial-app&api_key=trial-key",
        ))
        .unwrap();
    assert_eq!(a.status, 429, "{a:?}");
    assert_eq!(json(&a)["errors"][0]["message"], "rate limit exceeded");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        usage(
            control.addr(),
            SENDGRID_ID,
            "trial-app",
            "bounces",
            "minute"
        ),
        2,
        "a denied authrep does not count"
    );

    // A request line over APIcast's 8 KiB (Envoy admits 60 KiB): NGINX's 414, before the
    // host, credentials or rules matter, and the control service is not asked.
    let asked_before = control_requests(control.addr()).len();
    let long = format!(
        "/api/mail.send.json?api_user=acme-mailer&api_key=acme-key-1&pad={}",
        "x".repeat(8_200)
    );
    let a = gw.send(&Request::new("GET", SENDGRID, &long)).unwrap();
    assert_eq!(a.status, 414, "{a:?}");
    assert!(a.body.contains("414 Request-URI Too Large"), "{a:?}");
    assert_eq!(control_requests(control.addr()).len(), asked_before);

    // Every outcome has its counter, in /stats and /stats/prometheus.
    for (outcome, at_least) in [
        ("uri_too_long", 1),
        ("authorized", 7),
        ("auth_missing", 2),
        ("auth_failed", 4),
        ("no_match", 1),
        ("unknown_service", 1),
        ("limits_exceeded", 1),
    ] {
        let n = gw
            .counter(&format!("wasmcustom.tollgate.{outcome}"))
            .unwrap();
        assert!(
            n >= at_least,
            "tollgate.{outcome} = {n}, expected >= {at_least}"
        );
    }
    assert_eq!(
        gw.counter("wasmcustom.tollgate.control_service_error")
            .unwrap(),
        0
    );
    let prometheus = gw.envoy.admin("/stats/prometheus").unwrap();
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("tollgate_authorized") && !l.ends_with(" 0")),
        "{prometheus}"
    );

    // Nothing secret in Envoy's log.
    let log = gw.envoy.log();
    for secret in [
        SENDGRID_TOKEN,
        SENDGRID_SECRET,
        TWITTER_SECRET,
        "acme-key-1",
        "trial-key",
    ] {
        assert!(!log.contains(secret), "the log contains {secret}");
    }
    assert_eq!(
        usage(
            control.addr(),
            TWITTER_ID,
            ODD_APP_ID,
            "tweets_lookup",
            "eternity"
        ),
        1
    );
}

/// A control service that accepts connections and never answers.
fn black_hole() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[test]
fn control_service_down_or_silent_is_auth_failed_within_the_timeout() {
    // Nothing listens: Envoy fails the call at once.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let gw = Gateway::start(&EXAMPLES, nowhere, |_| {}).unwrap();
    let a = gw
        .send(&get(
            SENDGRID,
            "/api/mail.send.json?api_user=acme-mailer&api_key=acme-key-1",
        ))
        .unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.elapsed < Duration::from_secs(2), "took {:?}", a.elapsed);
    assert_eq!(
        gw.counter("wasmcustom.tollgate.control_service_error")
            .unwrap(),
        1
    );
    drop(gw);

    // It accepts and never answers: the filter's timeout (here 300 ms) answers the client.
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
    drop(gw);
    drop(keep);
}

#[test]
fn envoy_refuses_an_invalid_configuration_and_names_the_json_path() {
    let wasm = tollgate_wasm().unwrap();
    let text = std::fs::read_to_string(workspace().join("examples/sendgrid.json")).unwrap();
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
