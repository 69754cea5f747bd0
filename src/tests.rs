//! Whole decisions over whole configurations: what a client would receive, and what the control
//! service would be asked. Cases from APIcast's `t/` integration tests (reference §1.11, §2, §3).

use serde_json::{json, Value};

use crate::decision::{DenyReason, Verdict};
use crate::path::BadPath;
use crate::{load, Compiled, RequestView, Scratch};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn compiled(services: Value) -> Compiled {
    let loaded = load(json!({ "services": services }).to_string().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.compiled.unwrap()
}

fn service(id: u64, rules: Value) -> Value {
    json!({
        "id": id,
        "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "token-value",
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": ["localhost"],
            "proxy_rules": rules
        }
    })
}

fn r(method: &str, pattern: &str, metric: &str, delta: i64) -> Value {
    json!({"http_method": method, "pattern": pattern, "metric_system_name": metric, "delta": delta})
}

/// What the client and the control service would see for one request.
#[derive(Debug, PartialEq)]
struct Seen {
    verdict: Verdict,
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
    matched: Vec<String>,
    authrep: Option<String>,
}

struct Req<'a> {
    method: &'a str,
    target: &'a [u8],
    host: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    body: Option<&'a [u8]>,
}

fn get(target: &str) -> Req<'_> {
    Req {
        method: "GET",
        target: target.as_bytes(),
        host: "localhost",
        headers: vec![],
        body: None,
    }
}

impl<'a> Req<'a> {
    fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }
    fn host(mut self, h: &'a str) -> Self {
        self.host = h;
        self
    }
    fn header(mut self, n: &'a str, v: &'a [u8]) -> Self {
        self.headers.push((n, v));
        self
    }
    fn form(mut self, body: &'a str) -> Self {
        self.headers
            .push(("Content-Type", b"application/x-www-form-urlencoded"));
        self.body = Some(body.as_bytes());
        self
    }
}

fn decide(c: &Compiled, req: Req<'_>) -> Seen {
    let view = RequestView {
        method: req.method.as_bytes(),
        authority: req.host.as_bytes(),
        target: req.target,
        headers: &req.headers,
        body: req.body,
    };
    let mut scratch = Scratch::new();
    let d = c.decide(&view, crate::time::Timestamp::default(), &mut scratch);
    let response = d.response();
    let authrep = match (d.verdict, d.service, &d.credentials) {
        (Verdict::Authorize, Some(s), Some(creds)) => {
            let mut q = String::new();
            s.write_authrep(creds, scratch.usage(), &mut q);
            Some(q)
        }
        _ => None,
    };
    Seen {
        verdict: d.verdict,
        status: response.map(|r| r.status),
        body: response.map(|r| r.body.to_owned()),
        content_type: response.map(|r| r.content_type.to_owned()),
        matched: d
            .service
            .map(|s| {
                scratch
                    .matched_rules()
                    .iter()
                    .map(|&i| s.rules().pattern(i).to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        authrep,
    }
}

#[test]
fn authrep_carries_service_credentials_and_summed_usage() {
    // t/apicast.t TEST 8: service_token, service_id, usage[hits]=2, user_key.
    let c = compiled(json!([service(42, json!([r("GET", "/", "hits", 2)]))]));
    let seen = decide(&c, get("/?user_key=value"));
    assert_eq!(seen.verdict, Verdict::Authorize);
    assert_eq!(
        seen.authrep.as_deref(),
        Some("/transactions/authrep.xml?service_id=42&service_token=token-value&user_key=value&usage%5Bhits%5D=2")
    );
    assert_eq!(seen.matched, ["/"]);
}

#[test]
fn last_rules_and_sums_end_to_end() {
    // t/apicast-mapping-rules.t TEST 5: usage[hits]=3.
    let mut rules = vec![r("GET", "/", "hits", 1)];
    let mut last = r("GET", "/i_dont_match", "hits", 100);
    last["last"] = json!(true);
    rules.push(last);
    let mut last = r("GET", "/abc", "hits", 2);
    last["last"] = json!(true);
    rules.push(last);
    rules.push(r("GET", "/abc/def", "hits", 10));
    let c = compiled(json!([service(1, Value::Array(rules))]));
    let seen = decide(&c, get("/abc/def?user_key=uk"));
    assert_eq!(seen.matched, ["/", "/abc"]);
    assert!(seen.authrep.unwrap().ends_with("&usage%5Bhits%5D=3"));
}

#[test]
fn usage_is_sent_sorted_by_metric_name() {
    let c = compiled(json!([service(
        1,
        json!([
            r("GET", "/", "zeta", 1),
            r("GET", "/a", "alpha", 3),
            r("GET", "/a%20b", "a b/c", 1)
        ])
    )]));
    let seen = decide(&c, get("/a?user_key=k"));
    assert!(seen
        .authrep
        .unwrap()
        .ends_with("&user_key=k&usage%5Balpha%5D=3&usage%5Bzeta%5D=1"));
    // A metric name is percent-encoded inside its key.
    let seen = decide(&c, get("/a%20b?user_key=k"));
    assert!(seen.authrep.unwrap().contains("&usage%5Ba%20b%2Fc%5D=1"));
}

#[test]
fn credentials_are_checked_before_mapping_rules() {
    let c = compiled(json!([service(1, json!([r("GET", "/foo", "hits", 1)]))]));
    // Unmapped path without credentials: 401, not 404.
    let seen = decide(&c, get("/unmapped"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::AuthMissing));
    assert_eq!(seen.status, Some(401));
    assert_eq!(
        seen.body.as_deref(),
        Some("Authentication parameters missing")
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    // With credentials, the no-match error.
    let seen = decide(&c, get("/unmapped?user_key=k"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
    assert_eq!(seen.status, Some(404));
    assert_eq!(seen.body.as_deref(), Some("No Mapping Rule matched"));
    // An empty user_key is present and goes to the control service (t/apicast.t TEST 27).
    let seen = decide(&c, get("/foo?user_key="));
    assert!(seen.authrep.unwrap().contains("&user_key=&"));
}

#[test]
fn no_rules_and_delta_zero_are_no_match() {
    // t/apicast.t TEST 4 / 5: no rules -> 404, or the configured error.
    let c = compiled(json!([service(1, json!([]))]));
    assert_eq!(decide(&c, get("/?user_key=value")).status, Some(404));
    let mut s = service(1, json!([r("GET", "/", "hits", 0)]));
    s["proxy"]["error_no_match"] = json!("no rule!");
    s["proxy"]["error_status_no_match"] = json!(412);
    s["proxy"]["error_headers_no_match"] = json!("application/json");
    let c = compiled(json!([s]));
    let seen = decide(&c, get("/?user_key=value"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
    assert_eq!(
        (
            seen.status,
            seen.body.as_deref(),
            seen.content_type.as_deref()
        ),
        (Some(412), Some("no rule!"), Some("application/json"))
    );
    assert_eq!(
        seen.matched,
        ["/"],
        "the delta-0 rule matched but counts nothing"
    );
}

#[test]
fn configured_error_answers_are_verbatim() {
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s["proxy"]["error_auth_missing"] = json!("{\"error\": \"no key\"}\n");
    s["proxy"]["error_status_auth_missing"] = json!(403);
    s["proxy"]["error_headers_auth_missing"] = json!("application/json; charset=us-ascii");
    let c = compiled(json!([s]));
    let seen = decide(&c, get("/"));
    assert_eq!(seen.status, Some(403));
    assert_eq!(seen.body.as_deref(), Some("{\"error\": \"no key\"}\n"));
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/json; charset=us-ascii")
    );
}

#[test]
fn services_are_found_by_host() {
    let mut a = service(1, json!([r("GET", "/", "hits", 1)]));
    a["proxy"]["hosts"] = json!(["one.example", "Shared.Example"]);
    let mut b = service(2, json!([r("GET", "/", "hits", 1)]));
    b["proxy"]["hosts"] = json!(["two.example", "shared.example"]);
    let c = compiled(json!([a, b]));
    let svc = |host| {
        let view = RequestView {
            method: b"GET",
            authority: host,
            target: b"/?user_key=k",
            headers: &Vec::<(&str, &str)>::new(),
            body: None,
        };
        c.decide(
            &view,
            crate::time::Timestamp::default(),
            &mut Scratch::new(),
        )
        .service
        .map(|s| s.id().to_string())
    };
    assert_eq!(svc(b"ONE.example:8080").as_deref(), Some("1"));
    assert_eq!(svc(b"two.example.").as_deref(), Some("2"));
    assert_eq!(
        svc(b"shared.example").as_deref(),
        Some("1"),
        "first service wins"
    );
    assert_eq!(svc(b"three.example"), None);
    // No service: 404 with an empty body (t/apicast.t TEST 13/14).
    let seen = decide(&c, get("/").host("three.example"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::UnknownService));
    assert_eq!((seen.status, seen.body.as_deref()), (Some(404), Some("")));
}

#[test]
fn paths_are_matched_as_nginx_normalises_them() {
    let c = compiled(json!([service(
        1,
        json!([
            r("GET", "/foo%20/bar/", "space", 1),
            r("GET", "/one/{test}$", "one", 1),
            r("GET", "/caf%C3%A9", "cafe", 1),
            r("GET", "/a/b$", "ab", 1)
        ])
    )]));
    let metric_of = |t: &str| decide(&c, get(t)).matched;
    // t/apicast-mapping-rules.t TEST 6, t/apicast-path-routing.t TEST 4.
    assert_eq!(metric_of("/foo%20/bar/?user_key=k"), ["/foo%20/bar/"]);
    assert_eq!(metric_of("/one/12%2012?user_key=k"), ["/one/{test}$"]);
    assert_eq!(metric_of("/caf%c3%a9?user_key=k"), ["/caf%C3%A9"]);
    assert_eq!(metric_of("//a/./x/../b?user_key=k"), ["/a/b$"]);
    assert_eq!(metric_of("/a%2Fb?user_key=k"), ["/a/b$"]);
    // NGINX answers 400 before APIcast runs.
    let seen = decide(&c, get("/../etc?user_key=k"));
    assert_eq!(
        seen.verdict,
        Verdict::Deny(DenyReason::BadRequest(BadPath::AboveRoot))
    );
    assert_eq!(seen.status, Some(400));
    assert_eq!(
        decide(&c, get("/%zz")).verdict,
        Verdict::Deny(DenyReason::BadRequest(BadPath::BadEscape))
    );
}

#[test]
fn body_arguments_follow_apicast() {
    let mut rule = r("POST", "/foo?bar=baz", "bar", 7);
    rule["querystring_parameters"] = json!({"bar": "baz"});
    let c = compiled(json!([service(1, json!([rule]))]));
    // t/apicast-mapping-rules.t TEST 3: body args count for POST.
    let seen = decide(
        &c,
        get("/foo?user_key=somekey").method("POST").form("bar=baz"),
    );
    assert_eq!(seen.verdict, Verdict::Authorize);
    // The credential can come from the body too, decoded.
    let seen = decide(
        &c,
        get("/foo").method("POST").form("bar=baz&user_key=a%2Bb"),
    );
    assert!(seen.authrep.unwrap().contains("&user_key=a%2Bb&"));
    // Not urlencoded: the body is not read.
    let mut req = get("/foo?user_key=k").method("POST");
    req.headers.push(("content-type", b"application/json"));
    req.body = Some(b"bar=baz");
    assert_eq!(decide(&c, req).verdict, Verdict::Deny(DenyReason::NoMatch));
    // GET bodies are never read.
    let mut rule = r("GET", "/foo", "bar", 1);
    rule["querystring_parameters"] = json!({"bar": "baz"});
    let c2 = compiled(json!([service(1, json!([rule]))]));
    assert_eq!(
        decide(&c2, get("/foo?user_key=k").form("bar=baz")).verdict,
        Verdict::Deny(DenyReason::NoMatch)
    );
    // t/apicast.t TEST 19: a body larger than the buffer is ignored, credentials included.
    let big = format!("user_key=k&pad={}", "x".repeat(70 * 1024));
    let seen = decide(&c, get("/foo?bar=baz").method("POST").form(&big));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::AuthMissing));
}

#[test]
fn v2_needs_both_halves_and_headers_are_flexible() {
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s["backend_version"] = json!("2");
    s["proxy"]["credentials_location"] = json!("headers");
    s["proxy"]["auth_app_id"] = json!("X-App-Id");
    let c = compiled(json!([s]));
    let only_key = decide(&c, get("/").header("app_key", b"k"));
    assert_eq!(only_key.verdict, Verdict::Deny(DenyReason::AuthMissing));
    let only_id = decide(&c, get("/").header("x-app-id", b"i"));
    assert_eq!(only_id.verdict, Verdict::Deny(DenyReason::AuthMissing));
    let both = decide(
        &c,
        get("/")
            .header("X_APP_ID", b"i d")
            .header("App-Key", b"\xffk"),
    );
    assert_eq!(
        both.authrep.as_deref(),
        Some("/transactions/authrep.xml?service_id=1&service_token=token-value&app_id=i%20d&app_key=%FFk&usage%5Bhits%5D=1")
    );
}

#[test]
fn oauth_calls_its_own_endpoint() {
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s["backend_version"] = json!("oauth");
    let c = compiled(json!([s]));
    let seen = decide(&c, get("/").header("Authorization", b"Bearer t0k"));
    assert_eq!(
        seen.authrep.as_deref(),
        Some("/transactions/oauth_authrep.xml?service_id=1&service_token=token-value&access_token=t0k&usage%5Bhits%5D=1")
    );
}

#[test]
fn the_examples_decide_as_documented() {
    let sendgrid = load(include_bytes!("../examples/sendgrid.json"));
    let twitter = load(include_bytes!("../examples/twitter.json"));
    assert!(
        sendgrid.diagnostics.is_empty(),
        "{:?}",
        sendgrid.diagnostics
    );
    assert!(twitter.diagnostics.is_empty(), "{:?}", twitter.diagnostics);
    let sg = sendgrid.compiled.unwrap();
    let tw = twitter.compiled.unwrap();
    let sg_req = |m, t| get(t).method(m).host("api.sendgrid.example");
    let seen = decide(
        &sg,
        sg_req("PATCH", "/v3/templates/t-1?api_user=u&api_key=k"),
    );
    assert!(seen
        .authrep
        .unwrap()
        .ends_with("&app_id=u&app_key=k&usage%5Btemplates%5D=1"));
    let seen = decide(
        &sg,
        sg_req(
            "GET",
            "/api/stats.get.json?aggregate=1&api_user=u&api_key=k",
        ),
    );
    assert!(seen.authrep.unwrap().ends_with("&usage%5Bstats%5D=3"));
    let seen = decide(&sg, sg_req("GET", "/api/stats.get.json?api_user=u"));
    assert_eq!(seen.status, Some(401));
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));

    let tw_req = |m, t| {
        get(t)
            .method(m)
            .host("api.twitter.example")
            .header("X-App-Id", b"app")
            .header("X-App-Key", b"key")
    };
    // A specific `last` rule stops before the generic ones.
    let seen = decide(&tw, tw_req("GET", "/1.1/statuses/show/20.json"));
    assert_eq!(seen.matched, ["/1.1/statuses/show/{id}.json"]);
    // Without the query argument its rule needs, the generic read rule applies.
    let seen = decide(&tw, tw_req("GET", "/1.1/search/tweets.json"));
    assert_eq!(seen.matched, ["/1.1/"]);
    let seen = decide(&tw, tw_req("POST", "/1.1/unknown"));
    assert_eq!(seen.matched, ["/"]);
    assert!(seen.authrep.unwrap().ends_with("&usage%5Bhits%5D=1"));
    let seen = decide(&tw, get("/2/tweets").host("api.twitter.example"));
    assert_eq!(
        seen.status,
        Some(403),
        "Porta's default status for missing credentials"
    );
}

#[test]
fn control_service_answers_become_apicast_replies() {
    use crate::backend::answer::ControlAnswer;
    use crate::Outcome;
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s["proxy"]["error_limits_exceeded"] = json!("slow down");
    s["proxy"]["error_headers_limits_exceeded"] = json!("text/plain");
    let c = compiled(json!([s]));
    let svc = &c.services()[0];
    assert_eq!(
        svc.reply_for(ControlAnswer::Authorized),
        (Outcome::Authorized, None)
    );
    let (outcome, reply) = svc.reply_for(ControlAnswer::LimitsExceeded {
        retry_after: Some(37),
    });
    let reply = reply.unwrap();
    assert_eq!(outcome, Outcome::LimitsExceeded);
    assert_eq!(
        (
            reply.response.status,
            reply.response.body,
            reply.response.content_type,
            reply.retry_after
        ),
        (429, "slow down", "text/plain", Some(37))
    );
    let (outcome, reply) = svc.reply_for(ControlAnswer::Denied);
    assert_eq!(outcome, Outcome::AuthFailed);
    assert_eq!(reply.unwrap().response.status, 403);
    let (outcome, reply) = svc.reply_for(ControlAnswer::Unavailable);
    assert_eq!(outcome, Outcome::ControlServiceError);
    assert_eq!(reply.unwrap().response.body, "Authentication failed");
}

#[test]
fn control_service_settings_are_checked() {
    let c = compiled(json!([service(1, json!([r("GET", "/", "hits", 1)]))]));
    assert_eq!(c.control_cluster(), "tollgate_control_service");
    assert_eq!(c.control_timeout_ms(), 1000);
    assert_eq!(
        c.services()[0].control_authority(),
        "tollgate_control_service"
    );

    let mut doc = load(
        json!({"services": [service(1, json!([]))]})
            .to_string()
            .as_bytes(),
    )
    .config
    .map(|c| serde_json::to_value(c).unwrap())
    .unwrap();
    doc["control_service"]["timeout_ms"] = json!(0);
    doc["control_service"]["cluster"] = json!("has space");
    doc["services"][0]["backend"] = json!({"endpoint": "https://su1.3scale.net:443", "host": null});
    let l = load(doc.to_string().as_bytes());
    let d: Vec<_> = l
        .diagnostics
        .errors()
        .map(|d| (d.path.clone(), d.message.clone()))
        .collect();
    assert!(
        d.iter()
            .any(|(p, m)| p == "control_service.timeout_ms" && m.contains("wait forever")),
        "{d:?}"
    );
    assert!(
        d.iter().any(|(p, _)| p == "control_service.cluster"),
        "{d:?}"
    );

    doc["control_service"] = json!({"cluster": "cs", "timeout_ms": 250});
    let c = load(doc.to_string().as_bytes()).compiled.unwrap();
    assert_eq!(c.services()[0].control_authority(), "su1.3scale.net");
    assert_eq!((c.control_cluster(), c.control_timeout_ms()), ("cs", 250));
}

#[test]
fn bodies_matter_only_where_apicast_reads_them() {
    let form: Vec<(&str, &str)> = vec![("content-type", "application/x-www-form-urlencoded")];
    let json_ct: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    let query_creds = compiled(json!([service(1, json!([r("POST", "/", "hits", 1)]))]));
    assert!(query_creds.wants_body(b"POST", b"localhost", &form));
    assert!(query_creds.wants_body(b"PATCH", b"localhost", &form));
    assert!(!query_creds.wants_body(b"GET", b"localhost", &form));
    assert!(!query_creds.wants_body(b"POST", b"localhost", &json_ct));
    assert!(!query_creds.wants_body(b"POST", b"elsewhere", &form));
    let mut s = service(1, json!([r("POST", "/", "hits", 1)]));
    s["proxy"]["credentials_location"] = json!("headers");
    let header_creds = compiled(json!([s.clone()]));
    assert!(!header_creds.wants_body(b"POST", b"localhost", &form));
    s["proxy"]["proxy_rules"][0]["querystring_parameters"] = json!({"a": "{a}"});
    let conditions = compiled(json!([s]));
    assert!(conditions.wants_body(b"POST", b"localhost", &form));
}

/// NGINX with APIcast's `large_client_header_buffers 4 8k` (observed with Debian's nginx 1.22.1,
/// as in `t/large-client-header-buffers.t`): a request line of 8192 bytes, CRLF included, is
/// served; one of 8193 gets 414 with NGINX's page, before the host or credentials matter.
#[test]
fn a_request_line_over_the_limit_gets_nginxs_414() {
    let c = compiled(json!([service(1, json!([r("GET", "/", "hits", 1)]))]));
    assert_eq!(c.request_line_max_bytes(), 8192);
    let fill = |method: &str, line: usize| {
        let target_len = line - method.len() - " HTTP/1.1\r\n".len() - 1;
        format!(
            "/?user_key=k&pad={}",
            "a".repeat(target_len - "/?user_key=k&pad=".len())
        )
    };
    for method in ["GET", "DELETE"] {
        let fits = fill(method, 8192);
        let seen = decide(&c, get(&fits).method(method));
        assert_ne!(
            seen.verdict,
            Verdict::Deny(DenyReason::UriTooLong),
            "{method}"
        );
        let over = fill(method, 8193);
        let seen = decide(&c, get(&over).method(method).host("unknown.example"));
        assert_eq!(seen.verdict, Verdict::Deny(DenyReason::UriTooLong));
        assert_eq!(seen.status, Some(414));
        assert_eq!(seen.content_type.as_deref(), Some("text/html"));
        let body = seen.body.unwrap();
        assert!(body.starts_with("<html>\r\n<head><title>414 Request-URI Too Large</title>"));
        assert_eq!(body.len(), 170, "NGINX's page is 170 bytes");
    }
    let over = fill("GET", 8193);
    assert_eq!(
        decide(&c, get(&over)).verdict,
        Verdict::Deny(DenyReason::UriTooLong)
    );
}

#[test]
fn the_request_line_limit_is_configurable_and_checked() {
    let mut doc = load(
        json!({"services": [service(1, json!([r("GET", "/", "hits", 1)]))]})
            .to_string()
            .as_bytes(),
    )
    .config
    .map(|c| serde_json::to_value(c).unwrap())
    .unwrap();
    assert_eq!(doc["request_line_max_bytes"], 8192);
    doc["request_line_max_bytes"] = json!(65536);
    let c = load(doc.to_string().as_bytes()).compiled.unwrap();
    let long = format!("/?user_key=k&pad={}", "a".repeat(60_000));
    assert_eq!(decide(&c, get(&long)).verdict, Verdict::Authorize);
    // Written before the field existed: the default applies.
    doc.as_object_mut()
        .unwrap()
        .remove("request_line_max_bytes");
    let c = load(doc.to_string().as_bytes()).compiled.unwrap();
    assert_eq!(c.request_line_max_bytes(), 8192);
    for bad in [0, 63, 1024 * 1024 + 1] {
        doc["request_line_max_bytes"] = json!(bad);
        let l = load(doc.to_string().as_bytes());
        assert!(l.compiled.is_none());
        let d = l.diagnostics.errors().next().unwrap();
        assert_eq!(d.path, "request_line_max_bytes", "{d}");
    }
}

fn loaded(doc: Value) -> Compiled {
    let loaded = load(doc.to_string().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.compiled.unwrap()
}

#[test]
fn without_a_token_authrep_carries_the_service_id_and_credentials_only() {
    // backend_client.lua: `{ service_id = … }`, plus `<type>=<value>` only with a type.
    let mut s = service(42, json!([r("GET", "/", "hits", 2)]));
    let o = s.as_object_mut().unwrap();
    o.remove("backend_authentication_type");
    o.remove("backend_authentication_value");
    let c = compiled(json!([s]));
    let seen = decide(&c, get("/?user_key=value"));
    assert_eq!(
        seen.authrep.as_deref(),
        Some("/transactions/authrep.xml?service_id=42&user_key=value&usage%5Bhits%5D=2")
    );
}

#[test]
fn tolerated_shapes_decide_as_apicast() {
    // No id: service_id=default.
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s.as_object_mut().unwrap().remove("id");
    let seen = decide(&compiled(json!([s])), get("/?user_key=k"));
    assert!(seen
        .authrep
        .unwrap()
        .starts_with("/transactions/authrep.xml?service_id=default&service_token=token-value&"));

    // No proxy: the host localhost, no rules, so 401 without credentials, 404 with them.
    let c = loaded(json!({"services": [{"id": 7, "backend_version": 1}]}));
    assert_eq!(
        decide(&c, get("/")).verdict,
        Verdict::Deny(DenyReason::AuthMissing)
    );
    let seen = decide(&c, get("/?user_key=k"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
    assert_eq!(seen.status, Some(404));

    // No backend_version: APIcast finds no credentials, whatever the request carries.
    let mut s = service(1, json!([r("GET", "/", "hits", 1)]));
    s.as_object_mut().unwrap().remove("backend_version");
    let c = compiled(json!([s]));
    for target in ["/?user_key=k", "/?app_id=a&app_key=b", "/?access_token=t"] {
        let seen = decide(&c, get(target));
        assert_eq!(
            seen.verdict,
            Verdict::Deny(DenyReason::AuthMissing),
            "{target}"
        );
        assert_eq!(seen.status, Some(401));
        assert_eq!(
            seen.body.as_deref(),
            Some("Authentication parameters missing")
        );
    }
    let seen = decide(&c, get("/").header("Authorization", b"Bearer t"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::AuthMissing));

    // The same id twice: the second service is skipped whole, hosts included.
    let first = service(5, json!([r("GET", "/", "hits", 1)]));
    let mut second = service(5, json!([r("GET", "/", "hits", 1)]));
    second["proxy"]["hosts"] = json!(["second.example"]);
    let c = compiled(json!([first, second]));
    let seen = decide(&c, get("/?user_key=k").host("second.example"));
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::UnknownService));
    assert_eq!((seen.status, seen.body.as_deref()), (Some(404), Some("")));

    // No services: every request is for an unknown host.
    let c = loaded(json!({"services": []}));
    assert_eq!(
        decide(&c, get("/?user_key=k")).verdict,
        Verdict::Deny(DenyReason::UnknownService)
    );
}

#[test]
fn a_chain_without_the_apicast_policy_forwards_without_asking() {
    let mut s = service(3, json!([r("GET", "/only", "hits", 1)]));
    s["proxy"]["policy_chain"] = json!([{"name": "logging"}]);
    let c = compiled(json!([s]));
    // No credentials, no rule, no call: forwarded.
    for target in ["/", "/elsewhere?x=1", "/only?user_key=k"] {
        let seen = decide(&c, get(target));
        assert_eq!(seen.verdict, Verdict::Forward, "{target}");
        assert_eq!((seen.status, seen.authrep), (None, None), "{target}");
        assert!(seen.matched.is_empty());
    }
    let form = get("/").method("POST").form("user_key=k");
    assert_eq!(decide(&c, form).verdict, Verdict::Forward);
    let headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/x-www-form-urlencoded")];
    assert!(
        !c.wants_body(b"POST", b"localhost", &headers),
        "nothing to read a body for"
    );
    // What NGINX refuses before any policy runs is still refused, and other hosts are unknown.
    assert_eq!(
        decide(&c, get("/../x")).verdict,
        Verdict::Deny(DenyReason::BadRequest(BadPath::AboveRoot))
    );
    assert_eq!(
        decide(&c, get("/").host("other.example")).verdict,
        Verdict::Deny(DenyReason::UnknownService)
    );
}

#[test]
fn last_is_true_for_every_value_but_false() {
    // mapping_rules_matcher.lua: `if rule.last then break end`.
    for last in [json!("false"), json!(0), json!(""), json!("true")] {
        let mut first = r("GET", "/", "hits", 1);
        first["last"] = last.clone();
        let c = compiled(json!([service(
            1,
            json!([first, r("GET", "/a", "hits", 10)])
        )]));
        let seen = decide(&c, get("/a?user_key=k"));
        assert_eq!(seen.matched, ["/"], "last: {last}");
        assert!(seen.authrep.unwrap().ends_with("&usage%5Bhits%5D=1"));
    }
}
