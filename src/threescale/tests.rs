//! 3scale import: shapes, tolerance, defaults, and every problem reported at its path.

use serde_json::json;

use crate::config::{
    BackendVersion, ControlServiceAuthKind, CredentialsLocation, ErrorsConfig, FilterConfig,
};
use crate::diagnostics::Severity;
use crate::load::{load, SourceFormat};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn service() -> serde_json::Value {
    json!({
        "id": 42,
        "system_name": "api",
        "backend_version": 1,
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "token-value",
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": ["api.example.com"],
            "proxy_rules": [
                {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 2}
            ]
        }
    })
}

/// (severity, path, message) of every diagnostic, for assertions.
fn diags(doc: &serde_json::Value) -> Vec<(Severity, String, String)> {
    load(doc.to_string().as_bytes())
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.path.clone(), d.message.clone()))
        .collect()
}

fn config(doc: &serde_json::Value) -> FilterConfig {
    let loaded = load(doc.to_string().as_bytes());
    assert!(loaded.compiled.is_some(), "{:?}", loaded.diagnostics);
    loaded.config.unwrap()
}

fn has(d: &[(Severity, String, String)], sev: Severity, path: &str, needle: &str) -> bool {
    d.iter()
        .any(|(s, p, m)| *s == sev && p == path && m.contains(needle))
}

#[test]
fn all_three_shapes_give_the_same_service() {
    let a = config(&json!({"services": [service()]}));
    let b = config(
        &json!({"proxy_config": {"id": 1, "version": 3, "environment": "production", "content": service()}}),
    );
    let c =
        config(&json!({"proxy_configs": [{"proxy_config": {"version": 3, "content": service()}}]}));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.services[0].id, "42");
    assert_eq!(a.services[0].name, "api");
    assert_eq!(a.services[0].backend_version, BackendVersion::UserKey);
}

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let mut s = service();
    s["deployment_option"] = json!("hosted");
    s["proxiable?"] = json!(true);
    s["proxy"]["endpoint"] = json!("https://api.example.com:443");
    s["proxy"]["something_new"] = json!({"nested": [1, 2]});
    // Known, and stated so that nothing is left to warn about.
    s["proxy"]["backend"] = json!({"endpoint": "https://su1.3scale.net"});
    s["proxy"]["proxy_rules"][0]["id"] = json!(375837);
    s["proxy"]["proxy_rules"][0]["position"] = json!(1);
    s["proxy"]["proxy_rules"][0]["owner_type"] = json!("Proxy");
    let d = diags(&json!({"id": 1, "timestamp": "2024-01-01", "oidc": [], "services": [s]}));
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn defaults_are_apicast_defaults_and_stated() {
    let mut s = service();
    s["proxy"].as_object_mut().unwrap().remove("hosts");
    let c = config(&json!({"services": [s]}));
    let svc = &c.services[0];
    assert_eq!(svc.hosts, ["localhost"]);
    assert_eq!(svc.credentials.location, CredentialsLocation::Query);
    assert_eq!(
        (
            svc.credentials.user_key.as_str(),
            svc.credentials.app_id.as_str(),
            svc.credentials.app_key.as_str()
        ),
        ("user_key", "app_id", "app_key")
    );
    assert_eq!(svc.errors, ErrorsConfig::default());
    assert_eq!(svc.errors.auth_missing.status, 401);
    assert_eq!(
        svc.errors.auth_missing.body,
        "Authentication parameters missing"
    );
    assert_eq!(
        svc.errors.no_match.content_type,
        "text/plain; charset=utf-8"
    );
    assert_eq!(svc.errors.limits_exceeded.body, "Limits exceeded");
    // Every field is written out, defaults included.
    let written: serde_json::Value = serde_json::from_str(&c.to_json_pretty()).unwrap();
    assert_eq!(written["kind"], "tollgate.FilterConfig");
    assert_eq!(written["version"], 1);
    assert_eq!(written["request_body_max_bytes"], 65536);
    assert_eq!(
        written["services"][0]["errors"]["auth_failed"]["status"],
        403
    );
    assert_eq!(
        written["services"][0]["upstream"]["hostname_rewrite"],
        serde_json::Value::Null
    );
    assert_eq!(written["services"][0]["mapping_rules"][0]["last"], false);
}

#[test]
fn config_values_override_defaults() {
    let mut s = service();
    let p = &mut s["proxy"];
    p["credentials_location"] = json!("headers");
    p["auth_user_key"] = json!("X-Api-KEY");
    p["error_auth_missing"] = json!("no key");
    p["error_status_auth_missing"] = json!(403);
    p["error_headers_auth_missing"] = json!("text/plain; charset=us-ascii");
    p["error_no_match"] = json!("{\"e\":1}");
    p["error_status_no_match"] = json!("412");
    p["error_headers_limits_exceeded"] = json!("text/plan; charset=us-ascii");
    p["hostname_rewrite"] = json!("");
    p["secret_token"] = json!("s3cret");
    let c = config(&json!({"services": [s]}));
    let svc = &c.services[0];
    assert_eq!(svc.credentials.location, CredentialsLocation::Headers);
    assert_eq!(svc.credentials.user_key, "x-api-key");
    assert_eq!(svc.errors.auth_missing.status, 403);
    assert_eq!(svc.errors.auth_missing.body, "no key");
    assert_eq!(
        svc.errors.auth_missing.content_type,
        "text/plain; charset=us-ascii"
    );
    assert_eq!(svc.errors.no_match.status, 412);
    assert_eq!(svc.errors.no_match.body, "{\"e\":1}");
    assert_eq!(
        svc.errors.limits_exceeded.content_type,
        "text/plan; charset=us-ascii"
    );
    assert_eq!(
        svc.upstream.secret_token.as_ref().unwrap().expose(),
        "s3cret"
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let mut bad = service();
    bad["backend_version"] = json!("3");
    bad["proxy"]["credentials_location"] = json!("cookie");
    bad["proxy"]["proxy_rules"] = json!([
        {"http_method": "GET", "pattern": "/ok", "metric_system_name": "hits", "delta": 1},
        {"http_method": "GET", "metric_system_name": "hits", "delta": "many"},
        {"http_method": 7, "pattern": "/x", "metric_system_name": "hits", "last": "yes"},
        "not a rule",
    ]);
    let mut also_bad = service();
    also_bad["id"] = json!(44);
    also_bad["proxy"]["error_status_no_match"] = json!(999);
    also_bad["proxy"]["api_backend"] = json!("test.com");
    also_bad["proxy"]["hosts"] = json!(["b.example", 5]);
    also_bad["proxy"]["proxy_rules"] = json!([
        {"http_method": "GET", "pattern": 1, "metric_system_name": "hits"},
        {"http_method": "GET", "pattern": "/a$b", "metric_system_name": "hits", "delta": 1},
    ]);
    let d = diags(&json!({"services": [service(), bad, also_bad]}));
    let e = Severity::Error;
    assert!(
        has(
            &d,
            e,
            "services[1].backend_version",
            "unknown backend_version '3'"
        ),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.credentials_location", "cookie"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.proxy_rules[1].pattern", "missing"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.proxy_rules[1].delta", "\"many\""),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            e,
            "services[1].proxy.proxy_rules[2].http_method",
            "expected a string, found a number"
        ),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            e,
            "services[1].proxy.proxy_rules[2].last",
            "true or false"
        ),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.proxy_rules[3]", "found a string"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[2].proxy.hosts[1]", "found a number"),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            e,
            "services[2].proxy.proxy_rules[0].pattern",
            "found a number"
        ),
        "{d:#?}"
    );
    // The same pass checks the values of what could be read, at the right source paths
    // even though proxy_rules[0] was left out.
    assert!(
        has(&d, e, "services[2].proxy.error_status_no_match", "999"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[2].proxy.api_backend", "test.com"),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[2].proxy.proxy_rules[1].pattern",
            "'$'"
        ),
        "{d:#?}"
    );
    assert_eq!(d.iter().filter(|x| x.0 == e).count(), 11, "{d:#?}");
    assert!(load(
        json!({"services": [service(), {"id": 1}]})
            .to_string()
            .as_bytes()
    )
    .compiled
    .is_none());

    // Semantic problems are reported with 3scale paths too.
    let mut semantic = service();
    semantic["id"] = json!(43);
    semantic["proxy"]["error_status_no_match"] = json!(999);
    semantic["proxy"]["api_backend"] = json!("test.com");
    semantic["proxy"]["backend"] = json!({"endpoint": "ftp://backend"});
    semantic["proxy"]["auth_user_key"] = json!("");
    let d = diags(&json!({"services": [service(), semantic]}));
    assert!(
        has(&d, e, "services[1].proxy.error_status_no_match", "999"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.api_backend", "test.com"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.backend.endpoint", "ftp"),
        "{d:#?}"
    );
    assert!(
        has(&d, e, "services[1].proxy.auth_user_key", "empty"),
        "{d:#?}"
    );
}

#[test]
fn pattern_problems_are_warnings_at_the_rule() {
    let mut s = service();
    s["proxy"]["proxy_rules"] = json!([
        {"http_method": "GET", "pattern": "/ok", "metric_system_name": "hits", "delta": 1},
        {"http_method": "GET", "pattern": "/a$b", "metric_system_name": "hits", "delta": 1},
        {"http_method": "GET", "pattern": "/abc\\{d\\}", "metric_system_name": "hits", "delta": 1},
        {"http_method": "get", "pattern": "/x", "metric_system_name": "hits", "delta": 0},
    ]);
    let loaded = load(json!({"services": [s]}).to_string().as_bytes());
    assert!(loaded.compiled.is_some(), "warnings do not stop loading");
    let d: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.path.clone(), d.message.clone()))
        .collect();
    let w = Severity::Warning;
    assert!(
        has(
            &d,
            w,
            "services[0].proxy.proxy_rules[1].pattern",
            "'$' anchors the end of the path"
        ),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            w,
            "services[0].proxy.proxy_rules[2].pattern",
            "never matches"
        ),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            w,
            "services[0].proxy.proxy_rules[3].http_method",
            "never matches a GET"
        ),
        "{d:#?}"
    );
    assert!(
        has(&d, w, "services[0].proxy.proxy_rules[3].delta", "delta 0"),
        "{d:#?}"
    );
    assert!(!d.iter().any(|x| x.1.contains("proxy_rules[0]")));
}

#[test]
fn policies_we_do_not_implement_are_warnings() {
    let mut s = service();
    s["proxy"]["policy_chain"] = json!([
        {"name": "apicast.policy.cors", "version": "builtin", "configuration": {}},
        {"name": "apicast", "version": "builtin", "configuration": {}},
        {"name": "caching", "configuration": {"caching_type": "resilient"}},
    ]);
    let d = diags(&json!({"services": [s.clone()]}));
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[0].proxy.policy_chain[0].name",
            "'apicast.policy.cors' is not implemented"
        ),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[0].proxy.policy_chain[2].name",
            "'caching'"
        ),
        "{d:#?}"
    );
    s["proxy"]["policy_chain"] = json!([{"name": "apicast.policy.upstream"}]);
    let d = diags(&json!({"services": [s]}));
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[0].proxy.policy_chain",
            "no 'apicast' policy"
        ),
        "{d:#?}"
    );
}

#[test]
fn duplicate_hosts_warn_and_the_first_service_wins() {
    let mut second = service();
    second["id"] = json!(43);
    second["proxy"]["hosts"] = json!(["API.example.com", "other.example"]);
    let loaded = load(
        json!({"services": [service(), second]})
            .to_string()
            .as_bytes(),
    );
    let d: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.path.clone(), d.message.clone()))
        .collect();
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[1].proxy.hosts[0]",
            "already served by services[0]"
        ),
        "{d:#?}"
    );
    let compiled = loaded.compiled.unwrap();
    assert_eq!(
        compiled
            .service_for_authority(b"api.example.com")
            .unwrap()
            .id(),
        "42"
    );
    assert_eq!(
        compiled
            .service_for_authority(b"other.example")
            .unwrap()
            .id(),
        "43"
    );
}

#[test]
fn control_service_credentials() {
    // A top-level provider_key serves services that name none.
    let mut s = service();
    let o = s.as_object_mut().unwrap();
    o.remove("backend_authentication_type");
    o.remove("backend_authentication_value");
    let c = config(&json!({"provider_key": "pk-1", "services": [s.clone()]}));
    assert_eq!(
        c.services[0].control_service_auth.kind,
        ControlServiceAuthKind::ProviderKey
    );
    assert_eq!(c.services[0].control_service_auth.value.expose(), "pk-1");
    let d = diags(&json!({"services": [s]}));
    assert!(
        has(
            &d,
            Severity::Error,
            "services[0].backend_authentication_value",
            "missing"
        ),
        "{d:#?}"
    );
}

#[test]
fn oidc_is_refused_rather_than_guessed() {
    let mut s = service();
    s["backend_version"] = json!("oauth");
    s["proxy"]["authentication_method"] = json!("oidc");
    let d = diags(&json!({"services": [s]}));
    assert!(
        has(
            &d,
            Severity::Error,
            "services[0].proxy.authentication_method",
            "not supported"
        ),
        "{d:#?}"
    );
}

#[test]
fn documents_that_are_not_configurations() {
    let one = |bytes: &[u8]| {
        let l = load(bytes);
        assert!(l.compiled.is_none());
        let d: Vec<_> = l
            .diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.message.clone()))
            .collect();
        assert!(!d.is_empty());
        d
    };
    assert!(one(b"")[0].1.contains("empty"));
    assert!(one(b"  \n")[0].1.contains("empty"));
    let d = one(b"{\n  \"services\": [\n    {\"id\": 1,,}\n  ]\n}");
    assert!(d[0].1.contains("line 3, column 14"), "{d:?}");
    assert!(one(b"[]")[0].1.contains("top level"));
    assert!(one(b"{}")[0].1.contains("not a 3scale proxy configuration"));
    assert_eq!(
        one(b"{\"services\": []}")[0],
        (
            "services".to_owned(),
            "the configuration has no services".to_owned()
        )
    );
    assert!(one(b"{\"services\": {}}")[0]
        .1
        .contains("expected an array"));
    assert!(one(b"{\"proxy_config\": {}}")[0]
        .1
        .contains("no \"content\""));
    let deep = "[".repeat(10_000);
    assert!(one(deep.as_bytes())[0].1.contains("recursion limit"));
}

#[test]
fn filter_config_round_trips_and_is_strict() {
    let c = config(&json!({"services": [service()]}));
    let text = c.to_json_pretty();
    let again = load(text.as_bytes());
    assert_eq!(again.format, Some(SourceFormat::FilterConfig));
    assert_eq!(again.config.as_ref(), Some(&c));

    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["services"][0]["mapping_rules"][0]["surprise"] = json!(1);
    let l = load(v.to_string().as_bytes());
    assert!(l.compiled.is_none());
    let d = l.diagnostics.iter().next().unwrap();
    assert_eq!(d.path, "services[0].mapping_rules[0].surprise");
    assert!(d.message.contains("unknown field `surprise`"), "{d}");

    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["version"] = json!(2);
    let l = load(v.to_string().as_bytes());
    assert_eq!(l.diagnostics.iter().next().unwrap().path, "version");

    // Semantic errors use FilterConfig paths.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["services"][0]["errors"]["no_match"]["status"] = json!(99);
    v["services"][0]["mapping_rules"][0]["pattern"] = json!("/a(");
    let l = load(v.to_string().as_bytes());
    let d: Vec<_> = l
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.path.clone(), d.message.clone()))
        .collect();
    assert!(
        has(
            &d,
            Severity::Error,
            "services[0].errors.no_match.status",
            "99"
        ),
        "{d:#?}"
    );
    assert!(
        has(
            &d,
            Severity::Warning,
            "services[0].mapping_rules[0].pattern",
            "never matches"
        ),
        "{d:#?}"
    );
}
