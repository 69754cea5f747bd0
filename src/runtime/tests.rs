//! The request flow event by event, in the orders Envoy produces, with what the client, the
//! upstream and the control service would see.

use serde_json::{json, Value};

use super::fakes::{FakeHost, FakeStore};
use super::seams::{update, Level, SharedStore, Swap, Updated, Version};
use super::*;
use crate::load;
use crate::model::decision::{decimal, Response};
use crate::pairs;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn runtime(proxy_extra: Value, node: Option<&[u8]>) -> Runtime {
    let mut proxy = json!({
        "api_backend": "http://127.0.0.1:8081",
        "hosts": ["api.example.com"],
        "backend": {"endpoint": "http://control.internal:3000", "host": "su1.3scale.net"},
        "secret_token": "upstream-secret",
        "proxy_rules": [
            {"http_method": "GET", "pattern": "/v1", "metric_system_name": "hits", "delta": 1},
            {"http_method": "POST", "pattern": "/v1/orders", "metric_system_name": "orders", "delta": 2}
        ]
    });
    if let (Some(p), Some(extra)) = (proxy.as_object_mut(), proxy_extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    let config = json!({"services": [{
        "id": 7,
        "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "svc-token",
        "proxy": proxy
    }]});
    let loaded = load(config.to_string().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    // These tests follow one request's own call: no cache (cache_tests.rs has the cache).
    let mut config = loaded.config.unwrap();
    config.services[0].cache.mode = crate::config::CacheMode::None;
    let loaded = load(serde_json::to_string(&config).unwrap().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    Runtime::new(loaded.compiled.unwrap(), node)
}

/// A runtime for the test service, with fake host effects and fresh working memory.
fn setup(proxy_extra: Value, node: Option<&[u8]>) -> (Runtime, FakeHost, Workspace) {
    (
        runtime(proxy_extra, node),
        FakeHost::default(),
        Workspace::new(),
    )
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut bytes = Vec::new();
    pairs::encode(
        pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut bytes,
    );
    HeaderMap::parse(bytes).unwrap()
}

fn get(path: &str) -> HeaderMap {
    headers(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
    ])
}

fn form_post(path: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "api.example.com"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    h.extend_from_slice(extra);
    headers(&h)
}

const AUTHREP_V1: &str =
    "/transactions/authrep.xml?service_id=7&service_token=svc-token&user_key=k1&usage%5Bhits%5D=1";

fn expected_call(path: &str) -> Action<'_> {
    Action::Call(ControlCall {
        cluster: "tollgate_control_service",
        authority: "su1.3scale.net",
        path,
        timeout_ms: 1000,
    })
}

#[test]
fn an_authorized_request_goes_upstream_with_the_secret_token() {
    let (gw, host, mut ws) = setup(json!({}), None);
    let mut flow = RequestFlow::new();
    let action =
        flow.on_request_headers(&gw, &mut ws, get("/v1?user_key=k1"), true, host.effects());
    assert_eq!(action, expected_call(AUTHREP_V1));
    if let Action::Call(call) = action {
        assert_eq!(
            call.headers(),
            [
                (":method", "GET"),
                (":path", AUTHREP_V1),
                (":authority", "su1.3scale.net"),
                (
                    "3scale-options",
                    "rejection_reason_header=1&limit_headers=1&no_body=1"
                ),
            ]
        );
    }
    assert!(flow.is_calling());
    let answer = headers(&[(":status", "200"), ("content-length", "0")]);
    assert_eq!(
        flow.on_call_answer(&gw, Some(&answer), host.effects()),
        Action::Forward(UpstreamEdits {
            secret_token: Some("upstream-secret"),
            sent: SentHeaders::default(),
        })
    );
    assert_eq!(host.counters.counted(), vec![Outcome::Authorized]);
    assert!(flow.on_response_headers().is_empty());
    // Nothing of ours is pending any more: the rest of the stream passes through.
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 10, true, host.effects()),
        Action::Continue
    );
    assert_eq!(flow.on_request_trailers(), Action::Continue);
    assert!(host.log.lines().is_empty());
}

/// A service of its own host with `backend` as its `proxy.backend` (`null`: none).
fn service_with_backend(id: u32, backend: Value) -> Value {
    let mut proxy = json!({
        "api_backend": "http://127.0.0.1:8081",
        "hosts": [format!("s{id}.example.com")],
        "proxy_rules": [{"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}]
    });
    if !backend.is_null() {
        proxy["backend"] = backend;
    }
    json!({
        "id": id,
        "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "svc-token",
        "proxy": proxy
    })
}

/// The `:authority` of each service's call, with the operator's `control_service.authority`.
fn call_authorities(services: Vec<Value>, authority: Option<&str>) -> Vec<String> {
    let loaded = load(json!({ "services": services }).to_string().as_bytes());
    let mut config = loaded.config.unwrap();
    config.control_service.authority = authority.map(str::to_owned);
    for s in &mut config.services {
        s.cache.mode = crate::config::CacheMode::None;
    }
    let mut diags = crate::Diagnostics::new();
    let compiled = crate::compile(&config, &crate::config::FilterConfigPaths, &mut diags).unwrap();
    let gw = Runtime::new(compiled, None);
    let (host, mut ws) = (FakeHost::default(), Workspace::new());
    (0..services.len())
        .map(|i| {
            let request = headers(&[
                (":method", "GET"),
                (":path", "/?user_key=k"),
                (":authority", &format!("s{}.example.com", i + 1)),
            ]);
            let mut flow = RequestFlow::new();
            match flow.on_request_headers(&gw, &mut ws, request, true, host.effects()) {
                Action::Call(call) => call.authority.to_owned(),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

/// APIcast's backend client sends `backend.host`, else the host (without port) of the URL it
/// calls; the URL an operator points the cluster at (its BACKEND_ENDPOINT_OVERRIDE) wins over
/// both.
#[test]
fn calls_carry_the_authority_of_the_control_service_they_reach() {
    let services = vec![
        service_with_backend(1, json!({"endpoint": "http://control.internal:3000"})),
        // Names none: its calls go to the cluster the others name.
        service_with_backend(2, Value::Null),
        service_with_backend(
            3,
            json!({"endpoint": "http://control.internal:3000", "host": "su1.3scale.net"}),
        ),
    ];
    assert_eq!(
        call_authorities(services.clone(), None),
        // The bare host: APIcast names no port.
        ["control.internal", "control.internal", "su1.3scale.net"]
    );
    assert_eq!(
        call_authorities(services, Some("127.0.0.1:3001")),
        ["127.0.0.1:3001", "127.0.0.1:3001", "127.0.0.1:3001"]
    );
    // No control service anywhere: the cluster's name, as before.
    assert_eq!(
        call_authorities(vec![service_with_backend(1, Value::Null)], None),
        ["tollgate_control_service"]
    );
}

#[test]
fn an_authority_no_header_can_carry_is_an_error_at_its_path() {
    for bad in ["", "has space", "a\r\nb"] {
        let loaded = load(
            json!({"services": [service_with_backend(1, Value::Null)]})
                .to_string()
                .as_bytes(),
        );
        let mut doc = serde_json::to_value(loaded.config.unwrap()).unwrap();
        doc["control_service"]["authority"] = json!(bad);
        let loaded = load(doc.to_string().as_bytes());
        let errors: Vec<_> = loaded
            .diagnostics
            .errors()
            .map(|d| d.path.clone())
            .collect();
        assert_eq!(errors, ["control_service.authority"], "{bad:?}");
    }
}

#[test]
fn local_denials_answer_with_the_service_errors_and_are_counted() {
    let (gw, host, mut ws) = setup(
        json!({"error_no_match": "no rule", "error_status_no_match": 404}),
        None,
    );
    let cases: [(HeaderMap, u16, &str, Outcome); 4] = [
        (
            get("/nothing?user_key=k1"),
            404,
            "no rule",
            Outcome::NoMatch,
        ),
        (
            get("/v1"),
            401,
            "Authentication parameters missing",
            Outcome::AuthMissing,
        ),
        (
            headers(&[
                (":method", "GET"),
                (":path", "/v1"),
                (":authority", "other.example.com"),
            ]),
            404,
            "",
            Outcome::UnknownService,
        ),
        (get("/v1/%zz?user_key=k1"), 400, "", Outcome::BadRequest),
    ];
    for (request, status, body, outcome) in cases {
        let mut flow = RequestFlow::new();
        let action = flow.on_request_headers(&gw, &mut ws, request, true, host.effects());
        let Action::Reply(reply) = action else {
            panic!("{outcome:?}: {action:?}");
        };
        assert_eq!(
            (
                reply.response.status,
                reply.response.body,
                reply.retry_after
            ),
            (status, body, None)
        );
        assert_eq!(host.counters.counted().last(), Some(&outcome));
        // A denied request's later events pass through (the host has the reply).
        assert_eq!(
            flow.on_request_body(&gw, &mut ws, 3, true, host.effects()),
            Action::Continue
        );
    }
}

#[test]
fn control_service_refusals_become_replies() {
    let (gw, host, mut ws) = setup(
        json!({"error_limits_exceeded": "slow down", "error_headers_limits_exceeded": "text/plain"}),
        None,
    );
    let mut answer_with = |answer: Option<HeaderMap>| {
        let mut flow = RequestFlow::new();
        let action =
            flow.on_request_headers(&gw, &mut ws, get("/v1?user_key=k1"), true, host.effects());
        assert_eq!(action, expected_call(AUTHREP_V1));
        match flow.on_call_answer(&gw, answer.as_ref(), host.effects()) {
            Action::Reply(r) => (
                r.response.status,
                r.response.body.to_owned(),
                r.response.content_type.to_owned(),
                r.retry_after,
            ),
            other => panic!("{other:?}"),
        }
    };
    let limits = headers(&[
        (":status", "409"),
        ("3scale-rejection-reason", "limits_exceeded"),
        ("3scale-limit-reset", "37"),
    ]);
    assert_eq!(
        answer_with(Some(limits)),
        (429, "slow down".into(), "text/plain".into(), Some(37))
    );
    let denied = headers(&[
        (":status", "403"),
        ("3scale-rejection-reason", "user_key_invalid"),
    ]);
    assert_eq!(
        answer_with(Some(denied)),
        (
            403,
            "Authentication failed".into(),
            "text/plain; charset=utf-8".into(),
            None
        )
    );
    let down = headers(&[(":status", "503")]);
    assert_eq!(answer_with(Some(down)).0, 403);
    assert_eq!(answer_with(None).0, 403);
    // A status that is not three digits is no answer at all.
    assert_eq!(answer_with(Some(headers(&[(":status", "20")]))).0, 403);
    assert_eq!(
        host.counters.counted(),
        vec![
            Outcome::LimitsExceeded,
            Outcome::AuthFailed,
            Outcome::ControlServiceError,
            Outcome::ControlServiceError,
            Outcome::ControlServiceError
        ]
    );
    assert_eq!(
        host.log.lines(),
        vec![
            (
                Level::Warn,
                "control service unavailable for service 7 (status 503)".to_owned()
            ),
            (
                Level::Warn,
                "control service unavailable for service 7 (no answer)".to_owned()
            ),
            (
                Level::Warn,
                "control service unavailable for service 7 (no answer)".to_owned()
            ),
        ]
    );
}

#[test]
fn a_call_the_host_cannot_send_is_an_unavailable_control_service() {
    let (gw, host, mut ws) = setup(json!({}), None);
    let mut flow = RequestFlow::new();
    flow.on_request_headers(&gw, &mut ws, get("/v1?user_key=k1"), true, host.effects());
    let Action::Reply(reply) = flow.on_call_failed(&gw, host.effects()) else {
        panic!("no reply");
    };
    assert_eq!(reply.response.status, 403);
    assert_eq!(host.counters.counted(), vec![Outcome::ControlServiceError]);
    // A second report of the same call changes nothing.
    assert_eq!(flow.on_call_failed(&gw, host.effects()), Action::Continue);
    assert_eq!(host.counters.counted().len(), 1);
}

#[test]
fn body_credentials_hold_the_request_until_the_body_ends() {
    let (gw, host, mut ws) = setup(json!({}), None);
    let mut flow = RequestFlow::new();
    let post = form_post("/v1/orders", &[]);
    assert_eq!(
        flow.on_request_headers(&gw, &mut ws, post, false, host.effects()),
        Action::Pause
    );
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 5, false, host.effects()),
        Action::Pause
    );
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 11, true, host.effects()),
        Action::ReadBody
    );
    let action = flow.on_body(&gw, &mut ws, Some(b"user_key=k1"), host.effects());
    assert_eq!(
        action,
        expected_call("/transactions/authrep.xml?service_id=7&service_token=svc-token&user_key=k1&usage%5Borders%5D=2")
    );
    // Envoy may deliver more of the stream while the call is out: it stays held.
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 11, true, host.effects()),
        Action::Pause
    );
    assert_eq!(flow.on_request_trailers(), Action::Pause);
    assert_eq!(
        flow.on_body(&gw, &mut ws, None, host.effects()),
        Action::Pause
    );
}

#[test]
fn trailers_end_a_held_body() {
    let (gw, host, mut ws) = setup(json!({}), None);
    let mut flow = RequestFlow::new();
    flow.on_request_headers(
        &gw,
        &mut ws,
        form_post("/v1/orders", &[]),
        false,
        host.effects(),
    );
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 11, false, host.effects()),
        Action::Pause
    );
    assert_eq!(flow.on_request_trailers(), Action::ReadBody);
    // The body could not be read: decided without it.
    let Action::Reply(reply) = flow.on_body(&gw, &mut ws, None, host.effects()) else {
        panic!("no reply");
    };
    assert_eq!(reply.response.status, 401);
}

#[test]
fn bodies_over_the_limit_are_never_waited_for() {
    let (gw, host, mut ws) = setup(json!({}), None);
    // Announced too large: decided at the headers, without the body.
    let mut flow = RequestFlow::new();
    let big = form_post("/v1/orders", &[("content-length", " 65537 ")]);
    let Action::Reply(reply) = flow.on_request_headers(&gw, &mut ws, big, false, host.effects())
    else {
        panic!("no reply");
    };
    assert_eq!(reply.response.status, 401);
    // Grown too large while streaming: decided without it as soon as it passes the limit.
    let mut flow = RequestFlow::new();
    flow.on_request_headers(
        &gw,
        &mut ws,
        form_post("/v1/orders", &[]),
        false,
        host.effects(),
    );
    let Action::Reply(reply) = flow.on_request_body(&gw, &mut ws, 65_537, false, host.effects())
    else {
        panic!("no reply");
    };
    assert_eq!(reply.response.status, 401);
    // Within the limit, with credentials in the query: no need to wait at all for a GET.
    let mut flow = RequestFlow::new();
    assert!(matches!(
        flow.on_request_headers(&gw, &mut ws, get("/v1?user_key=k1"), false, host.effects()),
        Action::Call(_)
    ));
    // A JSON body cannot hold credentials APIcast reads.
    let mut flow = RequestFlow::new();
    let json_post = headers(&[
        (":method", "POST"),
        (":path", "/v1/orders?user_key=k1"),
        (":authority", "api.example.com"),
        ("content-type", "application/json"),
    ]);
    assert!(matches!(
        flow.on_request_headers(&gw, &mut ws, json_post, false, host.effects()),
        Action::Call(_)
    ));
}

#[test]
fn an_answer_after_the_stream_ended_is_ignored() {
    let (gw, host, mut ws) = setup(json!({}), None);
    let mut flow = RequestFlow::new();
    flow.on_request_headers(&gw, &mut ws, get("/v1?user_key=k1"), true, host.effects());
    flow.on_stream_end();
    let answer = headers(&[(":status", "200")]);
    assert_eq!(
        flow.on_call_answer(&gw, Some(&answer), host.effects()),
        Action::Continue
    );
    assert!(host.counters.counted().is_empty());
}

#[test]
fn the_debug_headers_need_the_service_token() {
    let (gw, host, mut ws) = setup(json!({}), Some(b"edge-1"));
    let ok = headers(&[(":status", "200")]);
    let mut run = |token: &str| {
        let mut flow = RequestFlow::new();
        let request = headers(&[
            (":method", "GET"),
            (":path", "/v1?user_key=k1"),
            (":authority", "api.example.com"),
            ("x-3scale-debug", token),
        ]);
        flow.on_request_headers(&gw, &mut ws, request, true, host.effects());
        flow.on_call_answer(&gw, Some(&ok), host.effects());
        flow.on_response_headers()
    };
    assert!(run("wrong").is_empty());
    let debug = run("svc-token");
    let names: Vec<_> = debug.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "x-3scale-matched-rules",
            "x-3scale-credentials",
            "x-3scale-usage",
            "x-3scale-hostname",
            "x-3scale-service-id",
            "x-3scale-service-name"
        ]
    );
    assert_eq!(debug.get(1).map(|(_, v)| v.as_str()), Some("user_key=k1"));
    assert_eq!(debug.get(3).map(|(_, v)| v.as_str()), Some("edge-1"));
    assert_eq!(UpstreamEdits::DEBUG, "x-3scale-debug");
}

/// APIcast (proxy.lua) sets the debug headers once credentials and usage are known, just
/// before the authrep: every answer after that carries them, refusals and failures included;
/// a request refused before (no credentials, no rule) gets none.
#[test]
fn the_debug_headers_go_with_every_answer_after_the_call() {
    let (gw, host, mut ws) = setup(json!({}), Some(b"edge-1"));
    let debug_request = |path: &str| {
        headers(&[
            (":method", "GET"),
            (":path", path),
            (":authority", "api.example.com"),
            ("x-3scale-debug", "svc-token"),
        ])
    };
    let limits = headers(&[
        (":status", "409"),
        ("3scale-rejection-reason", "limits_exceeded"),
        ("3scale-limit-reset", "30"),
    ]);
    let denied = headers(&[(":status", "403")]);
    let down = headers(&[(":status", "503")]);
    for (answer, status) in [
        (Some(&limits), 429),
        (Some(&denied), 403),
        (Some(&down), 403),
        (None, 403),
    ] {
        let mut flow = RequestFlow::new();
        let call = flow.on_request_headers(
            &gw,
            &mut ws,
            debug_request("/v1?user_key=k1"),
            true,
            host.effects(),
        );
        assert!(matches!(call, Action::Call(_)), "{call:?}");
        let Action::Reply(reply) = flow.on_call_answer(&gw, answer, host.effects()) else {
            panic!("{status}: no reply");
        };
        assert_eq!(reply.response.status, status);
        let debug = flow.on_response_headers();
        assert_eq!(
            debug,
            [
                ("x-3scale-matched-rules", "/v1".to_owned()),
                ("x-3scale-credentials", "user_key=k1".to_owned()),
                ("x-3scale-usage", "usage%5Bhits%5D=1".to_owned()),
                ("x-3scale-hostname", "edge-1".to_owned()),
                ("x-3scale-service-id", "7".to_owned()),
                ("x-3scale-service-name", String::new()),
            ],
            "{status}"
        );
        // Given once: the reply's response callbacks add nothing more.
        assert!(flow.on_response_headers().is_empty());
    }
    // The host could not even send the call: the 403 carries them too.
    let mut flow = RequestFlow::new();
    flow.on_request_headers(
        &gw,
        &mut ws,
        debug_request("/v1?user_key=k1"),
        true,
        host.effects(),
    );
    assert!(matches!(
        flow.on_call_failed(&gw, host.effects()),
        Action::Reply(_)
    ));
    assert_eq!(flow.on_response_headers().len(), 6);
    // Refused before credentials and usage were known: none.
    for path in ["/v1", "/nothing?user_key=k1"] {
        let mut flow = RequestFlow::new();
        let action =
            flow.on_request_headers(&gw, &mut ws, debug_request(path), true, host.effects());
        assert!(matches!(action, Action::Reply(_)), "{path}: {action:?}");
        assert!(flow.on_response_headers().is_empty(), "{path}");
    }
}

#[test]
fn the_node_name_defaults_to_tollgate() {
    assert_eq!(runtime(json!({}), None).node_name(), "tollgate");
    assert_eq!(runtime(json!({}), Some(b"")).node_name(), "tollgate");
    assert_eq!(runtime(json!({}), Some(b"n\xff")).node_name(), "n\u{fffd}");
}

#[test]
fn reply_headers_are_encoded_for_the_host() {
    let mut out = Vec::new();
    let reply = Reply {
        response: Response {
            status: 429,
            content_type: "text/plain",
            body: "slow down",
        },
        retry_after: Some(120),
    };
    reply.encode_headers(&mut out);
    let map = HeaderMap::parse(out.clone()).unwrap();
    let pairs: Vec<_> = map.iter().collect();
    assert_eq!(
        pairs,
        vec![
            (&b"content-type"[..], &b"text/plain"[..]),
            (b"retry-after", b"120")
        ]
    );
    // Without a body, no content type: Envoy would drop it, so the client never sees one.
    Reply::INTERNAL_ERROR.encode_headers(&mut out);
    assert_eq!(HeaderMap::parse(out.clone()).unwrap().len(), 0);
    let empty_limit = Reply {
        response: Response {
            body: "",
            ..reply.response
        },
        retry_after: Some(7),
    };
    empty_limit.encode_headers(&mut out);
    let map = HeaderMap::parse(out.clone()).unwrap();
    assert_eq!(
        map.iter().collect::<Vec<_>>(),
        vec![(&b"retry-after"[..], &b"7"[..])]
    );
    // The debug headers a request asked for follow the reply's own.
    let extra = [("x-3scale-usage", "usage%5Bhits%5D=1".to_owned())];
    reply.encode_headers_with(&extra, &mut out);
    let map = HeaderMap::parse(out).unwrap();
    let names: Vec<_> = map.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [&b"content-type"[..], b"retry-after", b"x-3scale-usage"]
    );
    let mut digits = [0u8; 20];
    assert_eq!(decimal(0, &mut digits), b"0");
    assert_eq!(decimal(u64::MAX, &mut digits), b"18446744073709551615");
}

#[test]
fn the_fake_store_behaves_as_envoys_shared_data() {
    let store = FakeStore::default();
    assert_eq!(store.get(b"k").unwrap(), None);
    // A missing key accepts any version, as Envoy's does.
    assert_eq!(
        store
            .compare_and_swap(b"k", b"1", Some(Version(777)))
            .unwrap(),
        Swap::Done
    );
    let first = store.get(b"k").unwrap().unwrap();
    assert_eq!(
        store
            .compare_and_swap(b"k", b"2", Some(first.version))
            .unwrap(),
        Swap::Done
    );
    assert_eq!(
        store
            .compare_and_swap(b"k", b"3", Some(first.version))
            .unwrap(),
        Swap::Lost
    );
    // A lost swap writes nothing, not even a new version.
    let second = store.get(b"k").unwrap().unwrap();
    assert_eq!(second.value, b"2");
    assert_eq!(
        store
            .compare_and_swap(b"k", b"3", Some(first.version))
            .unwrap(),
        Swap::Lost
    );
    assert_eq!(store.get(b"k").unwrap().unwrap(), second);
    assert_eq!(
        store.compare_and_swap(b"k", b"4", None).unwrap(),
        Swap::Done
    );
    assert_eq!(store.get(b"k").unwrap().unwrap().value, b"4");
    store.refuse(Some(2));
    assert_eq!(store.get(b"k").unwrap_err().status, 2);
    store.refuse(None);
    assert_eq!(store.keys(), 1);
}

#[test]
fn updates_retry_lost_races_within_their_bound() {
    let store = FakeStore::default();
    store.compare_and_swap(b"n", b"0", None).unwrap();
    let increment = |current: Option<&[u8]>, next: &mut Vec<u8>| {
        let n: u32 = current
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        next.extend_from_slice((n + 1).to_string().as_bytes());
        (true, n + 1)
    };
    store.lose_races(2);
    assert_eq!(
        update(&store, b"n", 2, increment).unwrap(),
        Updated::Written(1)
    );
    store.lose_races(3);
    assert_eq!(
        update(&store, b"n", 2, increment).unwrap(),
        Updated::Contended
    );
    assert_eq!(store.get(b"n").unwrap().unwrap().value, b"1");
    assert_eq!(
        update(&store, b"n", 0, |_, _| (false, "kept")).unwrap(),
        Updated::Unchanged("kept")
    );
    store.refuse(Some(10));
    assert!(update(&store, b"n", 2, increment).is_err());
}

#[test]
fn a_service_without_the_apicast_policy_forwards_at_once_without_the_secret_token() {
    let (gw, host, mut ws) = setup(json!({"policy_chain": [{"name": "logging"}]}), None);
    let mut flow = RequestFlow::new();
    // A body that would be read for credentials elsewhere, and the debug header: neither
    // matters, nothing is asked and nothing is added.
    let request = form_post("/anything", &[("x-3scale-debug", "svc-token")]);
    let action = flow.on_request_headers(&gw, &mut ws, request, false, host.effects());
    assert_eq!(
        action,
        Action::Forward(UpstreamEdits {
            secret_token: None,
            sent: SentHeaders {
                debug: true,
                secret_token: false
            },
        })
    );
    assert!(!flow.is_calling());
    assert_eq!(host.counters.counted(), vec![Outcome::Forwarded]);
    assert!(flow.on_response_headers().is_empty());
    assert_eq!(
        flow.on_request_body(&gw, &mut ws, 10, true, host.effects()),
        Action::Continue
    );
}
