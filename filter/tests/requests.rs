//! tollgate.wasm answering requests, as a client, the upstream and the control service see
//! it. Every test also checks that the VM never trapped and that no log line (at any level)
//! holds a credential or token.
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
const SG_TOKEN: &str = "sendgrid-service-token-8f2c1b7e";
const SG_SECRET: &str = "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e";
const JSON: &str = "application/json";

fn counters(host: &Host) -> Vec<(String, u64)> {
    host.metric_names()
        .into_iter()
        .filter(|n| n.starts_with("tollgate.") && !n.starts_with("tollgate.cache."))
        .map(|n| (n.clone(), host.metric(&n)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn only_counter(host: &Host, name: &str, n: u64) {
    assert_eq!(counters(host), vec![(format!("tollgate.{name}"), n)]);
}

#[test]
fn unknown_host_gets_404_with_an_empty_body() {
    let host = host(sendgrid());
    let r = local_reply(&get(
        &host,
        0,
        "elsewhere.example",
        "/api/mail.send.json?api_user=a&api_key=b",
    ));
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "{r:?}");
    assert!(host.pending_calls().is_empty());
    only_counter(&host, "unknown_service", 1);
    check(&host, &[]);
}

#[test]
fn missing_credentials_get_the_configured_error() {
    let host = host(sendgrid());
    let r = local_reply(&get(&host, 0, SG, "/api/mail.send.json?api_user=a"));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type").as_deref(), Some(JSON));
    assert_eq!(
        r.body_text(),
        r#"{"errors":[{"message":"api_user and api_key are required"}]}"#
    );
    only_counter(&host, "auth_missing", 1);

    let host = tollgate_common_twitter();
    let r = local_reply(&get(
        &host,
        1,
        "api.twitter.example",
        "/1.1/statuses/home_timeline.json",
    ));
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=us-ascii")
    );
    assert_eq!(r.body_text(), "Authentication parameters missing");
    only_counter(&host, "auth_missing", 1);
    check(&host, &[]);
}

fn tollgate_common_twitter() -> Host {
    host(twitter())
}

#[test]
fn no_mapping_rule_gets_the_configured_error() {
    let host = host(sendgrid());
    let r = local_reply(&get(&host, 0, SG, "/nothing/here?api_user=a&api_key=b"));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type").as_deref(), Some(JSON));
    assert_eq!(
        r.body_text(),
        r#"{"errors":[{"message":"unknown endpoint"}]}"#
    );
    assert!(host.pending_calls().is_empty());
    only_counter(&host, "no_match", 1);
    check(&host, &[]);
}

#[test]
fn a_bad_request_target_is_refused() {
    let host = host(sendgrid());
    let r = local_reply(&get(
        &host,
        0,
        SG,
        "/api/mail.send.json%zz?api_user=a&api_key=b",
    ));
    assert_eq!(r.status, 400, "{r:?}");
    only_counter(&host, "bad_request", 1);
    check(&host, &[]);
}

/// NGINX's 414 for a request line over 8 KiB, before any other check and without a callout.
#[test]
fn a_request_line_over_the_limit_is_refused_with_414() {
    let host = host(sendgrid());
    let long = format!(
        "/api/mail.send.json?api_user=a&api_key=b&pad={}",
        "x".repeat(8200)
    );
    let r = local_reply(&get(&host, 0, SG, &long));
    assert_eq!(r.status, 414, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("414 Request-URI Too Large"));
    only_counter(&host, "uri_too_long", 1);
    check(&host, &[]);
}

/// Rules only a regex engine evaluates, and a path that would make each of them scan 8 KiB:
/// refused at the bound on one decision's work, with NGINX's 414, and no callout.
#[test]
fn a_request_too_costly_to_match_is_refused_with_414() {
    let rules: Vec<String> = (0..100)
        .map(|i| get_rule(&format!("/v1/(xy|z)+/{{id}}{i}.json"), "hits"))
        .collect();
    let host = host(sendgrid_with_rules(&rules.join(",")));
    let path = format!("/v1/{}?api_user=a&api_key=b", "xy".repeat(4_000));
    let r = local_reply(&get(&host, 1, SG, &path));
    assert_eq!(r.status, 414, "{r:?}");
    assert!(host.pending_calls().is_empty());
    only_counter(&host, "match_limit", 1);
    // The same rules on a short path decide as usual (no rule of them matches it: 404).
    let r = local_reply(&get(&host, 0, SG, "/v1/xyz/1.xml?api_user=a&api_key=b"));
    assert_eq!(r.status, 404, "{r:?}");
    check(&host, &[]);
}

fn authorized(config: Vec<u8>) {
    let host = host(config);
    let s = host.worker(1).request(&[
        (":method", "GET"),
        (":path", "/api/mail.send.json?api_user=alice&api_key=k1"),
        (":authority", SG),
        ("x-3scale-debug", "not-the-token"),
        ("x-3scale-proxy-secret-token", "forged-by-the-client"),
    ]);
    let call = only_call(&s);
    assert_eq!(call.cluster(), CLUSTER);
    assert_eq!(call.header(":method").as_deref(), Some("GET"));
    assert_eq!(call.header(":authority").as_deref(), Some("su1.3scale.net"));
    assert_eq!(
        call.header(":path").as_deref(),
        Some(
            "/transactions/authrep.xml?service_id=2555417735060&service_token=sendgrid-service-token-8f2c1b7e\
             &app_id=alice&app_key=k1&usage%5Bmail%5D=1"
        )
    );
    assert_eq!(
        call.header("3scale-options").as_deref(),
        Some("rejection_reason_header=1&limit_headers=1&no_body=1")
    );
    assert_eq!(call.timeout(), Some(Duration::from_millis(1000)));
    assert!(call.body().is_empty());
    assert_eq!(call.vm(), "worker1");
    call.respond(
        200,
        &[("content-type", "application/vnd.3scale-v2.0+xml")],
        b"",
    );

    let up = s
        .outcome()
        .upstream()
        .cloned()
        .expect("the request went upstream");
    assert_eq!(
        up.headers.get_all("x-3scale-proxy-secret-token"),
        [SG_SECRET]
    );
    assert!(!up.headers.contains("x-3scale-debug"), "{:?}", up.headers);
    assert_eq!(
        up.headers.get(":path").as_deref(),
        Some("/api/mail.send.json?api_user=alice&api_key=k1")
    );
    let resp = s
        .response(&[(":status", "200"), ("content-type", JSON)])
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers
            .names()
            .iter()
            .all(|n| !n.starts_with("x-3scale")),
        "{resp:?}"
    );
    assert!(s.is_finished());
    only_counter(&host, "authorized", 1);
    check(&host, &["k1"]);
}

#[test]
fn authorized_raw_3scale_config_goes_upstream_with_the_secret_token() {
    authorized(sendgrid());
}

#[test]
fn authorized_filter_config_goes_upstream_with_the_secret_token() {
    authorized(sendgrid_filter_config());
}

#[test]
fn authrep_percent_encodes_credentials_and_sums_usage() {
    let host = host(sendgrid());
    // Query credentials are NGINX's raw `$arg_<name>` (APIcast does not decode them), so
    // their escapes are escaped again; the body's are decoded first (see the POST test).
    let s = get(
        &host,
        0,
        SG,
        "/api/stats.get.json?aggregate=1&api_user=a%2Bb%26c+d&api_key=%C3%A9t%C3%A9",
    );
    let call = only_call(&s);
    let path = call.header(":path").unwrap();
    assert!(
        path.contains("&app_id=a%252Bb%2526c%2Bd&app_key=%25C3%25A9t%25C3%25A9&"),
        "credentials are not encoded as the core does: {path}"
    );
    // Both stats rules match: 2 + 1.
    assert!(path.ends_with("&usage%5Bstats%5D=3"), "usage: {path}");
    call.respond(200, NO_HEADERS, b"");
    assert!(s.outcome().upstream().is_some());
    check(&host, &["a%2Bb", "%C3%A9t%C3%A9", "été"]);
}

#[test]
fn credentials_in_headers_for_twitter() {
    let host = host(twitter());
    let s = host.worker(0).request(&[
        (":method", "GET"),
        (":path", "/1.1/statuses/show/42.json"),
        (":authority", "api.twitter.example"),
        ("x-app-id", "app 1+é"),
        ("x-app-key", "key&2"),
    ]);
    let call = only_call(&s);
    let path = call.header(":path").unwrap();
    assert!(
        path.contains("&app_id=app%201%2B%C3%A9&app_key=key%262&"),
        "{path}"
    );
    assert!(
        path.contains("service_token=twitter-service-token-51d0c9aa"),
        "{path}"
    );
    call.respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(
        up.headers.get("x-3scale-proxy-secret-token").as_deref(),
        Some("Shared_secret_sent_from_proxy_to_API_backend_9b7d2e41")
    );
    only_counter(&host, "authorized", 1);
    check(&host, &["key&2", "key%262"]);
}

fn answered(status: u16, headers: &[(&str, &str)]) -> (Host, Reply) {
    let host = host(sendgrid());
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    only_call(&s).respond(status, headers, b"<error/>");
    let r = local_reply(&s);
    assert!(host.pending_calls().is_empty());
    (host, r)
}

#[test]
fn limits_exceeded_gets_429_with_retry_after() {
    let (host, r) = answered(
        409,
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-reset", "30"),
            ("3scale-limit-max-value", "100"),
        ],
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("30"));
    assert_eq!(r.header("content-type").as_deref(), Some(JSON));
    assert_eq!(
        r.body_text(),
        r#"{"errors":[{"message":"rate limit exceeded"}]}"#
    );
    only_counter(&host, "limits_exceeded", 1);
    check(&host, &[]);
}

#[test]
fn limits_exceeded_without_a_reset_has_no_retry_after() {
    let (host, r) = answered(409, &[("3scale-rejection-reason", "limits_exceeded")]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), None);
    check(&host, &[]);
}

#[test]
fn a_disabled_metric_is_auth_failed() {
    let (host, r) = answered(
        409,
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-max-value", "0"),
            ("3scale-limit-reset", "30"),
        ],
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(
        r.body_text(),
        r#"{"errors":[{"message":"authentication failed"}]}"#
    );
    only_counter(&host, "auth_failed", 1);
    check(&host, &[]);
}

#[test]
fn denials_are_auth_failed() {
    for (status, reason) in [
        (403, "user_key_invalid"),
        (404, "application_not_found"),
        (409, "application_not_active"),
    ] {
        let (host, r) = answered(status, &[("3scale-rejection-reason", reason)]);
        assert_eq!(r.status, 403, "{status}");
        assert_eq!(r.header("content-type").as_deref(), Some(JSON));
        assert_eq!(
            r.body_text(),
            r#"{"errors":[{"message":"authentication failed"}]}"#
        );
        only_counter(&host, "auth_failed", 1);
        check(&host, &[]);
    }
}

fn control_service_error(answer: impl FnOnce(Call<'_>)) {
    let host = host(sendgrid());
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    answer(only_call(&s));
    let r = local_reply(&s);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body_text(),
        r#"{"errors":[{"message":"authentication failed"}]}"#
    );
    only_counter(&host, "control_service_error", 1);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("control service unavailable")),
        "{:#?}",
        host.logs()
    );
    check(&host, &[]);
}

#[test]
fn control_service_unreachable_503_is_auth_failed() {
    control_service_error(|c| c.fail_503());
}

#[test]
fn control_service_timeout_504_is_auth_failed() {
    control_service_error(|c| c.timeout_504());
}

#[test]
fn control_service_5xx_is_auth_failed() {
    control_service_error(|c| c.respond(500, NO_HEADERS, b"oops"));
}

#[test]
fn control_service_reset_is_auth_failed() {
    control_service_error(|c| c.reset());
}

#[test]
fn the_callout_times_out_when_the_clock_passes_its_timeout() {
    let host = host(sendgrid());
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    let _ = only_call(&s);
    host.advance_clock(Duration::from_millis(999));
    assert_eq!(s.outcome(), Outcome::Paused);
    host.advance_clock(Duration::from_millis(1));
    assert_eq!(local_reply(&s).status, 403);
    only_counter(&host, "control_service_error", 1);
    check(&host, &[]);
}

#[test]
fn an_unknown_control_cluster_is_auth_failed() {
    let host = Host::builder(wasm())
        .plugin_config(sendgrid())
        .workers(1)
        .build()
        .unwrap();
    let r = local_reply(&get(
        &host,
        0,
        SG,
        "/api/mail.send.json?api_user=a&api_key=b",
    ));
    assert_eq!(r.status, 403);
    only_counter(&host, "control_service_error", 1);
    assert!(host
        .logs()
        .iter()
        .any(|l| l.message.contains("cannot call the control service")));
    check(&host, &[]);
}

#[test]
fn an_unanswered_callout_leaves_the_request_paused() {
    let host = host(sendgrid());
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    let _ = only_call(&s);
    assert_eq!(s.outcome(), Outcome::Paused);
    assert!(!s.is_finished());
    assert!(counters(&host).is_empty());
    check(&host, &[]);
}

#[test]
fn debug_headers_when_x_3scale_debug_is_the_service_token() {
    let host = host(sendgrid());
    let s = host.worker(0).request(&[
        (":method", "GET"),
        (
            ":path",
            "/api/stats.get.json?aggregate=1&api_user=a&api_key=b",
        ),
        (":authority", SG),
        ("x-3scale-debug", SG_TOKEN),
    ]);
    only_call(&s).respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert!(
        !up.headers.contains("x-3scale-debug"),
        "the token must not go upstream"
    );
    let r = s.response(&[(":status", "200")]).unwrap();
    assert_eq!(
        r.header("x-3scale-service-id").as_deref(),
        Some("2555417735060")
    );
    assert_eq!(
        r.header("x-3scale-credentials").as_deref(),
        Some("app_id=a&app_key=b")
    );
    assert_eq!(
        r.header("x-3scale-usage").as_deref(),
        Some("usage%5Bstats%5D=3")
    );
    assert_eq!(r.header("x-3scale-hostname").as_deref(), Some("tollgate"));
    let rules = r.header("x-3scale-matched-rules").unwrap();
    assert!(rules.contains("/api/stats.get.json"), "{rules}");
    check(&host, &[]);
}

/// A SendGrid GET for `path` that asks for the debug headers.
fn debug_get<'h>(host: &'h Host, path: &str) -> Stream<'h> {
    host.worker(0).request(&[
        (":method", "GET"),
        (":path", path),
        (":authority", SG),
        ("x-3scale-debug", SG_TOKEN),
    ])
}

/// As APIcast: asked for with the service token, the debug headers are on the control
/// service's refusals too (here a 429 and a 403), once each; not on a refusal made before
/// the call.
#[test]
fn debug_headers_are_on_the_control_services_refusals_too() {
    for (status, headers, expected) in [
        (
            409,
            &[("3scale-rejection-reason", "limits_exceeded")][..],
            429,
        ),
        (
            403,
            &[("3scale-rejection-reason", "user_key_invalid")][..],
            403,
        ),
        (503, NO_HEADERS, 403),
    ] {
        let host = host(sendgrid());
        let s = debug_get(&host, "/api/bounces.get.json?api_user=a&api_key=b");
        only_call(&s).respond(status, headers, b"");
        let r = local_reply(&s);
        assert_eq!(r.status, expected);
        assert_eq!(r.header("content-type").as_deref(), Some(JSON));
        for (name, value) in [
            ("x-3scale-service-id", "2555417735060"),
            ("x-3scale-credentials", "app_id=a&app_key=b"),
            ("x-3scale-usage", "usage%5Bbounces%5D=1"),
            ("x-3scale-hostname", "tollgate"),
            ("x-3scale-service-name", "sendgrid"),
        ] {
            let all: Vec<_> = r
                .headers
                .0
                .iter()
                .filter(|(n, _)| n == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            assert_eq!(all, [value], "{status}: {name} in {:?}", r.headers);
        }
        check(&host, &[]);
    }
    // Refused before the call (no credentials): none.
    let host = host(sendgrid());
    let r = local_reply(&debug_get(&host, "/api/bounces.get.json"));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-3scale-usage"), None, "{:?}", r.headers);
    check(&host, &[]);
}

#[test]
fn debug_headers_use_the_node_id_as_hostname() {
    let host = Host::builder(wasm())
        .plugin_config(sendgrid())
        .cluster(CLUSTER)
        .node_id("gw-7")
        .build()
        .unwrap();
    let s = host.worker(0).request(&[
        (":method", "GET"),
        (":path", "/api/mail.send.json?api_user=a&api_key=b"),
        (":authority", SG),
        ("x-3scale-debug", SG_TOKEN),
    ]);
    only_call(&s).respond(200, NO_HEADERS, b"");
    let r = s.response(&[(":status", "204")]).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-3scale-hostname").as_deref(), Some("gw-7"));
    check(&host, &[]);
}

fn post_host(allow: bool) -> Host {
    Host::builder(wasm())
        .plugin_config(sendgrid())
        .cluster(CLUSTER)
        .workers(2)
        .allow_on_headers_stop_iteration(allow)
        .build()
        .unwrap()
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

#[test]
fn post_urlencoded_body_credentials() {
    let host = post_host(true);
    let body = b"to=x%40y.example&api_user=bob+m%C3%BCller&api_key=s%26cret";
    let s = host.worker(0).request_streaming(post_headers(body.len()));
    assert_eq!(
        s.outcome(),
        Outcome::Paused,
        "the filter waits for the body"
    );
    s.body(&body[..10], false);
    assert!(host.pending_calls().is_empty());
    s.body(&body[10..], true);
    let call = only_call(&s);
    let path = call.header(":path").unwrap();
    assert!(
        path.contains("&app_id=bob%20m%C3%BCller&app_key=s%26cret&usage%5Bmail%5D=1"),
        "{path}"
    );
    call.respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(up.body, body.to_vec(), "the body goes upstream untouched");
    assert_eq!(
        up.headers.get("x-3scale-proxy-secret-token").as_deref(),
        Some(SG_SECRET)
    );
    only_counter(&host, "authorized", 1);
    check(&host, &["s%26cret", "s&cret"]);
}

/// Envoy's default for `Pause` from `on_request_headers` is StopAllIterationAndWatermark: the
/// body is buffered and not shown to the filter until it resumes, which it never does while it
/// waits for the body. The Envoy configuration must set `allow_on_headers_stop_iteration`.
#[test]
fn post_body_needs_allow_on_headers_stop_iteration() {
    let host = post_host(false);
    let body = b"api_user=bob&api_key=k";
    let s = host
        .worker(0)
        .request_with_body(post_headers(body.len()), body);
    assert_eq!(s.outcome(), Outcome::Paused);
    assert!(host.pending_calls().is_empty());
    check(&host, &[]);
}

#[test]
fn a_body_over_the_limit_is_ignored() {
    let host = post_host(true);
    // Announced too long: decided on headers alone (credentials missing).
    let s = host.worker(0).request_streaming(post_headers(70_000));
    assert_eq!(local_reply(&s).status, 401);
    // Not announced, but longer than the limit once it comes.
    let mut headers = post_headers(0);
    headers.retain(|(k, _)| *k != "content-length");
    let s = host.worker(1).request_streaming(headers);
    assert_eq!(s.outcome(), Outcome::Paused);
    let mut big = b"api_user=bob&api_key=k&pad=".to_vec();
    big.resize(70_000, b'x');
    s.body(&big, false);
    assert_eq!(local_reply(&s).status, 401);
    only_counter(&host, "auth_missing", 2);
    check(&host, &["api_key=k"]);
}

#[test]
fn credentials_in_the_query_win_without_waiting_for_a_get_body() {
    let host = post_host(true);
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    assert_eq!(only_call(&s).cluster(), CLUSTER);
    check(&host, &[]);
}

#[test]
fn non_utf8_header_values_get_an_answer_not_a_trap() {
    let host = host(twitter());
    let s = host.worker(0).request(&[
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/1.1/statuses/show/1.json"),
        (b":authority", b"api.twitter.example"),
        (b"x-app-id", b"\xff\xfeid"),
        (b"x-app-key", b"k\x80"),
        (b"x-other", b"\xc3\x28"),
    ]);
    // Header values are bytes: they reach the control service percent-encoded.
    let call = only_call(&s);
    let path = call.header(":path").unwrap();
    assert!(path.contains("app_id=%FF%FEid&app_key=k%80"), "{path}");
    call.respond(200, NO_HEADERS, b"");
    assert!(s.outcome().upstream().is_some());
    // And in the authority: no service has that host.
    let s = host.worker(1).request(&[
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/1.1/statuses/show/\xff.json"),
        (b":authority", b"api.twitter.example\xff"),
    ]);
    assert_eq!(local_reply(&s).status, 404);
    assert_eq!(host.metric("tollgate.unknown_service"), 1);
    check(&host, &[]);
}

#[test]
fn counters_count_every_outcome_across_workers() {
    let host = host(sendgrid());
    let req = |w: usize, path: &str| get(&host, w, SG, path);
    // A user per request: each waits for its own call (no cached answer).
    let q = |user: &str| format!("/api/mail.send.json?api_user={user}&api_key=b");
    // authorized on both workers
    for w in 0..2 {
        let s = req(w, &q(&format!("w{w}")));
        only_call(&s).respond(200, NO_HEADERS, b"");
    }
    let _ = req(0, "/api/mail.send.json");
    let _ = req(1, "/nope?api_user=a&api_key=b");
    let _ = get(&host, 0, "other.example", &q("a"));
    let _ = req(1, "/api/mail.send.json%zz");
    let s = req(0, &q("limited"));
    only_call(&s).respond(409, &[("3scale-rejection-reason", "limits_exceeded")], b"");
    let s = req(1, &q("denied"));
    only_call(&s).respond(403, NO_HEADERS, b"");
    let s = req(0, &q("unavailable"));
    only_call(&s).fail_503();
    let mut got = counters(&host);
    got.sort();
    let want: Vec<(String, u64)> = [
        ("auth_failed", 1),
        ("auth_missing", 1),
        ("authorized", 2),
        ("bad_request", 1),
        ("control_service_error", 1),
        ("limits_exceeded", 1),
        ("no_match", 1),
        ("unknown_service", 1),
    ]
    .iter()
    .map(|(n, v)| (format!("tollgate.{n}"), *v))
    .collect();
    assert_eq!(got, want);
    check(&host, &[]);
}

#[test]
fn requests_on_many_streams_interleave() {
    let host = host(sendgrid());
    let a = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    let b = get(&host, 0, SG, "/api/bounces.get.json?api_user=c&api_key=d");
    let (ca, cb) = (only_call(&a), only_call(&b));
    assert!(cb.header(":path").unwrap().contains("usage%5Bbounces%5D=1"));
    cb.respond(409, &[("3scale-rejection-reason", "limits_exceeded")], b"");
    ca.respond(200, NO_HEADERS, b"");
    assert!(a.outcome().upstream().is_some());
    assert_eq!(local_reply(&b).status, 429);
    check(&host, &[]);
}

#[test]
fn a_response_after_a_local_reply_changes_nothing() {
    let host = host(sendgrid());
    let s = get(&host, 0, SG, "/api/mail.send.json");
    let r = local_reply(&s);
    assert_eq!(s.response(&[(":status", "200")]), Some(r));
    check(&host, &[]);
}

#[test]
fn a_filter_config_chooses_the_cluster_and_timeout() {
    let config = String::from_utf8(sendgrid_filter_config())
        .unwrap()
        .replacen(
            "\"cluster\": \"tollgate_control_service\"",
            "\"cluster\": \"ctl_east\"",
            1,
        )
        .replacen("\"timeout_ms\": 1000", "\"timeout_ms\": 250", 1);
    let host = Host::builder(wasm())
        .plugin_config(config)
        .cluster("ctl_east")
        .build()
        .unwrap();
    let s = get(&host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b");
    let call = only_call(&s);
    assert_eq!(call.cluster(), "ctl_east");
    assert_eq!(call.timeout(), Some(Duration::from_millis(250)));
    // Envoy answers 504 when the timeout passes.
    host.advance_clock(Duration::from_millis(250));
    assert_eq!(local_reply(&s).status, 403);
    only_counter(&host, "control_service_error", 1);
    check(&host, &[]);
}

/// A POST with query credentials and a JSON body (no body arguments to wait for).
fn json_post(body: &[u8]) -> Vec<(&'static str, String)> {
    json_post_as(body, "bob")
}

fn json_post_as(body: &[u8], user: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".to_owned()),
        (
            ":path",
            format!("/api/mail.send.json?api_user={user}&api_key=k"),
        ),
        (":authority", SG.to_owned()),
        ("content-type", "application/json".to_owned()),
        ("content-length", body.len().to_string()),
    ]
}

/// With `allow_on_headers_stop_iteration`, a body callback that returns Continue resumes the
/// request. A body that arrives while the authrep call is out must stay held, or a request
/// the control service then refuses would already be upstream.
#[test]
fn a_body_arriving_during_the_callout_waits_for_the_answer() {
    let host = post_host(true);
    let body = br#"{"text":"hello"}"#;
    let s = host.worker(0).request_streaming(json_post(body));
    let call = only_call(&s);
    s.body(body, true);
    assert_eq!(
        s.outcome(),
        Outcome::Paused,
        "nothing goes upstream before the answer"
    );
    call.respond(
        409,
        &[
            ("3scale-rejection-reason", "limits_exceeded"),
            ("3scale-limit-max-value", "0"),
        ],
        b"",
    );
    let reply = s.outcome().local_reply().cloned().unwrap();
    assert_eq!(reply.status, 403);
    only_counter(&host, "auth_failed", 1);

    // And an authorized one goes upstream with its whole body (the denial above is cached
    // for its key, so it is another key's request).
    let s = host
        .worker(1)
        .request_streaming(json_post_as(body, "other"));
    let call = only_call(&s);
    s.body(&body[..4], false);
    s.body(&body[4..], true);
    assert_eq!(s.outcome(), Outcome::Paused);
    call.respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(up.body, body.to_vec());
}

/// A service without the apicast policy forwards at once: what the client sent of the
/// debug and secret-token headers never reaches the upstream, and a request without them
/// goes as it came.
#[test]
fn forwarded_requests_lose_the_clients_debug_and_secret_token_headers_only_when_sent() {
    let mut config: serde_json::Value = serde_json::from_slice(&sendgrid()).unwrap();
    config["services"][0]["proxy"]["policy_chain"] = serde_json::json!([]);
    let host = host(serde_json::to_vec(&config).unwrap());
    let s = host.worker(0).request(&[
        (":method", "GET"),
        (":path", "/anything"),
        (":authority", SG),
        ("x-3scale-debug", "sendgrid-service-token-8f2c1b7e"),
        ("X-3scale-Proxy-Secret-Token", "forged-by-the-client"),
    ]);
    let up = s.outcome().upstream().cloned().expect("forwarded");
    assert!(!up.headers.contains("x-3scale-debug"), "{:?}", up.headers);
    assert!(
        !up.headers.contains("x-3scale-proxy-secret-token"),
        "{:?}",
        up.headers
    );
    let s = host.worker(0).request(&[
        (":method", "GET"),
        (":path", "/anything"),
        (":authority", SG),
        ("x-other", "kept"),
    ]);
    let up = s.outcome().upstream().cloned().expect("forwarded");
    assert_eq!(up.headers.get("x-other").as_deref(), Some("kept"));
    assert_eq!(host.metric("tollgate.forwarded"), 2);
    check(&host, &[]);
}
