//! 3scale import: shapes, tolerance, defaults, and every problem reported at its path.

use serde_json::json;

use crate::config::{
    BackendVersion, ControlServiceAuthKind, CredentialsLocation, ErrorResponseConfig, ErrorsConfig,
    FilterConfig,
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

/// Fails, showing every diagnostic, unless one at `path` of `sev` says `needle`.
#[track_caller]
fn expect(d: &[(Severity, String, String)], sev: Severity, path: &str, needle: &str) {
    assert!(
        has(d, sev, path, needle),
        "{sev:?} at {path} saying {needle:?}: {d:#?}"
    );
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
    assert_eq!(a.services[0].backend_version, Some(BackendVersion::UserKey));
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
    also_bad["proxy"]["hosts"] = json!(["b.example", true]);
    also_bad["proxy"]["proxy_rules"] = json!([
        {"http_method": "GET", "pattern": ["/a"], "metric_system_name": "hits"},
        {"http_method": "GET", "pattern": "/a$b", "metric_system_name": "hits", "delta": 1},
    ]);
    let d = diags(&json!({"services": [service(), bad, also_bad]}));
    let e = Severity::Error;
    expect(
        &d,
        e,
        "services[1].backend_version",
        "unknown backend_version '3'",
    );
    expect(&d, e, "services[1].proxy.credentials_location", "cookie");
    expect(&d, e, "services[1].proxy.proxy_rules[1].pattern", "missing");
    expect(&d, e, "services[1].proxy.proxy_rules[1].delta", "\"many\"");
    expect(
        &d,
        e,
        "services[1].proxy.proxy_rules[2].http_method",
        "expected a string, found a number",
    );
    expect(
        &d,
        Severity::Warning,
        "services[1].proxy.proxy_rules[2].last",
        "\"yes\" is not true or false; APIcast treats every value but false as true",
    );
    expect(&d, e, "services[1].proxy.proxy_rules[3]", "found a string");
    expect(&d, e, "services[2].proxy.hosts[1]", "found a boolean");
    expect(
        &d,
        e,
        "services[2].proxy.proxy_rules[0].pattern",
        "found an array",
    );
    // The same pass checks the values of what could be read, at the right source paths
    // even though proxy_rules[0] was left out.
    expect(&d, e, "services[2].proxy.error_status_no_match", "999");
    expect(&d, e, "services[2].proxy.api_backend", "test.com");
    expect(
        &d,
        Severity::Warning,
        "services[2].proxy.proxy_rules[1].pattern",
        "'$'",
    );
    assert_eq!(d.iter().filter(|x| x.0 == e).count(), 10, "{d:#?}");

    // Semantic problems are reported with 3scale paths too.
    let mut semantic = service();
    semantic["id"] = json!(43);
    semantic["proxy"]["error_status_no_match"] = json!(999);
    semantic["proxy"]["api_backend"] = json!("test.com");
    semantic["proxy"]["backend"] = json!({"endpoint": "ftp://backend"});
    semantic["proxy"]["auth_user_key"] = json!("");
    let d = diags(&json!({"services": [service(), semantic]}));
    expect(&d, e, "services[1].proxy.error_status_no_match", "999");
    expect(&d, e, "services[1].proxy.api_backend", "test.com");
    expect(&d, e, "services[1].proxy.backend.endpoint", "ftp");
    expect(&d, e, "services[1].proxy.auth_user_key", "empty");
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
    expect(
        &d,
        w,
        "services[0].proxy.proxy_rules[1].pattern",
        "'$' anchors the end of the path",
    );
    expect(
        &d,
        w,
        "services[0].proxy.proxy_rules[2].pattern",
        "never matches",
    );
    expect(
        &d,
        w,
        "services[0].proxy.proxy_rules[3].http_method",
        "never matches a GET",
    );
    expect(&d, w, "services[0].proxy.proxy_rules[3].delta", "delta 0");
    assert!(!d.iter().any(|x| x.1.contains("proxy_rules[0]")));
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
    expect(
        &d,
        Severity::Warning,
        "services[1].proxy.hosts[0]",
        "already served by services[0]",
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
fn oidc_is_refused_rather_than_guessed() {
    let mut s = service();
    s["backend_version"] = json!("oauth");
    s["proxy"]["authentication_method"] = json!("oidc");
    let d = diags(&json!({"services": [s]}));
    expect(
        &d,
        Severity::Error,
        "services[0].proxy.authentication_method",
        "not supported",
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
    expect(
        &d,
        Severity::Error,
        "services[0].errors.no_match.status",
        "99",
    );
    expect(
        &d,
        Severity::Warning,
        "services[0].mapping_rules[0].pattern",
        "never matches",
    );
}

/// Sets `path` (`proxy.proxy_rules[0].delta`) in `doc`, creating objects on the way.
fn set(doc: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (n, part) in parts.iter().enumerate() {
        let (key, idx) = match part.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (*part, None),
        };
        let last = n + 1 == parts.len();
        if idx.is_none() && last {
            at[key] = value;
            return;
        }
        at = &mut at[key];
        if let Some(i) = idx {
            if last {
                at[i] = value;
                return;
            }
            at = &mut at[i];
        }
    }
}

/// Translation only (no compile): what the import reads, and its diagnostics.
fn translated(doc: &serde_json::Value) -> (Option<FilterConfig>, Vec<(Severity, String, String)>) {
    let mut d = crate::Diagnostics::new();
    let t = super::translate(doc, &[], &mut d);
    let d = d
        .iter()
        .map(|x| (x.severity, x.path.clone(), x.message.clone()))
        .collect();
    (t.map(|t| t.config), d)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// Used when a string, ignored (with a warning) otherwise: `hostname_rewrite`.
    StringElseIgnored,
    Compared,
    Integer,
    Count,
    Flag,
}

#[derive(Debug, PartialEq)]
enum Seen {
    /// Read, as this text, without a diagnostic at the field.
    Read(String),
    /// Read, as this text, with a warning at the field.
    Warned(String),
    /// An error at the field.
    Refused,
}

#[test]
fn every_field_follows_the_one_coercion_rule() {
    use serde_json::Value;
    type Get = Box<dyn Fn(&FilterConfig) -> String>;
    type Fixed = fn(&FilterConfig) -> String;
    fn svc(c: &FilterConfig) -> crate::config::ServiceConfig {
        c.services[0].clone()
    }
    fn rule(c: &FilterConfig) -> crate::config::MappingRuleConfig {
        c.services[0].mapping_rules[0].clone()
    }
    // (path, kind, a valid string and what it reads as, what an absent field reads as, getter)
    let fixed: Vec<(&str, Kind, &str, &str, Fixed)> = vec![
        ("id", Kind::Text, "77", "default", |c| svc(c).id),
        ("system_name", Kind::Text, "words", "", |c| svc(c).name),
        // Read when system_name is absent.
        ("name", Kind::Text, "words", "", |c| svc(c).name),
        (
            "backend_authentication_type",
            Kind::Compared,
            "provider_key",
            "none",
            |c| {
                svc(c)
                    .control_service_auth
                    .map_or("none".into(), |a| a.kind.param().into())
            },
        ),
        (
            "proxy.hostname_rewrite",
            Kind::StringElseIgnored,
            "h.example",
            "none",
            |c| svc(c).upstream.hostname_rewrite.unwrap_or("none".into()),
        ),
        ("backend_version", Kind::Text, "2", "none", |c| {
            svc(c)
                .backend_version
                .map_or("none".into(), |v| v.as_str().into())
        }),
        (
            "backend_authentication_value",
            Kind::Text,
            "tok",
            "none",
            |c| {
                svc(c)
                    .control_service_auth
                    .map_or("none".into(), |a| a.value.expose().into())
            },
        ),
        (
            "proxy.hosts[0]",
            Kind::Text,
            "a.example",
            "localhost",
            |c| svc(c).hosts.first().cloned().unwrap_or_default(),
        ),
        (
            "proxy.backend.endpoint",
            Kind::Text,
            "http://b:1",
            "none",
            |c| svc(c).backend.endpoint.unwrap_or("none".into()),
        ),
        ("proxy.backend.host", Kind::Text, "b.example", "none", |c| {
            svc(c).backend.host.unwrap_or("none".into())
        }),
        ("proxy.api_backend", Kind::Text, "http://u:1", "none", |c| {
            svc(c).upstream.api_backend.unwrap_or("none".into())
        }),
        ("proxy.secret_token", Kind::Text, "s3", "none", |c| {
            svc(c)
                .upstream
                .secret_token
                .map_or("none".into(), |t| t.expose().into())
        }),
        (
            "proxy.credentials_location",
            Kind::Compared,
            "headers",
            "query",
            |c| svc(c).credentials.location.as_str().into(),
        ),
        ("proxy.auth_user_key", Kind::Text, "key", "user_key", |c| {
            svc(c).credentials.user_key
        }),
        ("proxy.auth_app_id", Kind::Text, "id", "app_id", |c| {
            svc(c).credentials.app_id
        }),
        ("proxy.auth_app_key", Kind::Text, "k", "app_key", |c| {
            svc(c).credentials.app_key
        }),
        (
            "proxy.policy_chain[0].name",
            Kind::Compared,
            "apicast",
            "none",
            |c| match svc(c).authorization {
                crate::config::Authorization::Threescale => "apicast".into(),
                crate::config::Authorization::None => "none".into(),
            },
        ),
        // The logging policy, skipped when enabled and left out when not.
        (
            "proxy.policy_chain[0].enabled",
            Kind::Flag,
            "",
            "true",
            |c| (!c.skipped_policies.is_empty()).to_string(),
        ),
        (
            "proxy.proxy_rules[0].http_method",
            Kind::Compared,
            "POST",
            "",
            |c| rule(c).method,
        ),
        ("proxy.proxy_rules[0].pattern", Kind::Text, "/p", "", |c| {
            rule(c).pattern
        }),
        (
            "proxy.proxy_rules[0].metric_system_name",
            Kind::Text,
            "m",
            "",
            |c| rule(c).metric,
        ),
        ("proxy.proxy_rules[0].delta", Kind::Count, "", "0", |c| {
            rule(c).delta.to_string()
        }),
        ("proxy.proxy_rules[0].last", Kind::Flag, "", "false", |c| {
            rule(c).last.to_string()
        }),
        (
            "proxy.proxy_rules[0].querystring_parameters.q",
            Kind::Compared,
            "v",
            "none",
            |c| {
                rule(c)
                    .querystring_parameters
                    .get("q")
                    .cloned()
                    .unwrap_or("none".into())
            },
        ),
    ];
    let mut fields: Vec<(String, Kind, &str, String, Get)> = fixed
        .into_iter()
        .map(|(p, k, v, a, g)| (p.to_owned(), k, v, a.to_owned(), Box::new(g) as Get))
        .collect();
    // The twelve error fields: body, content type and status of each kind.
    for kind in crate::ErrorKind::ALL {
        let x = kind.threescale_suffix();
        fn error_of(e: &ErrorsConfig, kind: crate::ErrorKind) -> ErrorResponseConfig {
            match kind {
                crate::ErrorKind::AuthMissing => e.auth_missing.clone(),
                crate::ErrorKind::AuthFailed => e.auth_failed.clone(),
                crate::ErrorKind::NoMatch => e.no_match.clone(),
                crate::ErrorKind::LimitsExceeded => e.limits_exceeded.clone(),
            }
        }
        let of = move |c: &FilterConfig| error_of(&c.services[0].errors, kind);
        let d = error_of(&ErrorsConfig::default(), kind);
        fields.extend([
            (
                format!("proxy.error_{x}"),
                Kind::Text,
                "no",
                d.body,
                Box::new(move |c: &FilterConfig| of(c).body) as Get,
            ),
            (
                format!("proxy.error_headers_{x}"),
                Kind::Text,
                "a/b",
                d.content_type,
                Box::new(move |c: &FilterConfig| of(c).content_type),
            ),
            (
                format!("proxy.error_status_{x}"),
                Kind::Integer,
                "404",
                d.status.to_string(),
                Box::new(move |c: &FilterConfig| of(c).status.to_string()),
            ),
        ]);
    }
    // Every field the import reads but `authentication_method` (only "oidc" means anything, and
    // it is refused).
    assert_eq!(fields.len(), 36);
    let read = |s: &str| Seen::Read(s.to_owned());
    let warned = |s: &str| Seen::Warned(s.to_owned());
    for (path, kind, valid, absent, get) in fields {
        let (path, absent) = (path.as_str(), absent.as_str());
        let digits = if path.ends_with("backend_version") {
            "2"
        } else {
            "404"
        };
        let number: i64 = digits.parse().unwrap();
        let mut probes: Vec<(Value, Seen)> = vec![(Value::Null, read(absent))];
        match kind {
            Kind::Text => probes.extend([
                (json!(valid), read(valid)),
                (json!(number), read(digits)),
                (json!(number as f64), read(digits)),
                (json!(4.5), Seen::Refused),
                (json!(1e15), Seen::Refused),
                (json!(true), Seen::Refused),
                (json!([valid]), Seen::Refused),
                (json!({"v": valid}), Seen::Refused),
            ]),
            Kind::StringElseIgnored => probes.extend([
                (json!(valid), read(valid)),
                (json!(7), warned(absent)),
                (json!(true), warned(absent)),
                (json!([valid]), warned(absent)),
            ]),
            Kind::Compared => probes.extend([
                (json!(valid), read(valid)),
                (json!(7), Seen::Refused),
                (json!(true), Seen::Refused),
                (json!([valid]), Seen::Refused),
            ]),
            Kind::Integer => probes.extend([
                (json!(404), read("404")),
                (json!(404.0), read("404")),
                (json!("404"), read("404")),
                (json!(" 404 "), read("404")),
                (json!("0x194"), read("404")),
                (json!(404.5), Seen::Refused),
                (json!("404 Not Found"), Seen::Refused),
                (json!(true), Seen::Refused),
            ]),
            Kind::Count => probes.extend([
                (json!(3), read("3")),
                (json!(3.0), read("3")),
                (json!(-1), read("-1")),
                (json!("3"), Seen::Refused),
                (json!(3.5), Seen::Refused),
                (json!(true), Seen::Refused),
            ]),
            Kind::Flag => probes.extend([
                (json!(true), read("true")),
                (json!(false), read("false")),
                (json!("true"), warned("true")),
                (json!("false"), warned("true")),
                (json!(0), warned("true")),
                (json!(""), warned("true")),
                (json!({}), warned("true")),
            ]),
        }
        for (value, expected) in probes {
            let mut doc = json!({"services": [service()]});
            let s = &mut doc["services"][0];
            if path.ends_with("enabled") {
                s["proxy"]["policy_chain"] = json!([{"name": "logging"}, {"name": "apicast"}]);
            } else if path.contains("policy_chain") {
                s["proxy"]["policy_chain"] = json!([{"name": "apicast"}]);
            }
            if path == "name" {
                s.as_object_mut().unwrap().remove("system_name");
            }
            if path.starts_with("proxy.backend.") {
                s["proxy"]["backend"] = json!({});
            }
            if path.starts_with("proxy.hosts") {
                s["proxy"]["hosts"] = json!([null]);
            }
            if path.ends_with(".q") {
                s["proxy"]["proxy_rules"][0]["querystring_parameters"] = json!({});
            }
            set(s, path, value.clone());
            let (config, d) = translated(&doc);
            let full = format!("services[0].{path}");
            let here = |sev| d.iter().any(|(s, p, _)| *s == sev && *p == full);
            let seen = if here(Severity::Error) {
                Seen::Refused
            } else {
                let config = config.unwrap();
                let read = get(&config);
                // An absent field may warn about the default it gets (`id`, `hosts`).
                if here(Severity::Warning) && !value.is_null() {
                    Seen::Warned(read)
                } else {
                    Seen::Read(read)
                }
            };
            // A null host is no host name; absent rule fields make the rule incomplete.
            let expected = match (&value, &expected, path) {
                (Value::Null, _, p)
                    if p.starts_with("proxy.hosts")
                        || p.ends_with("http_method")
                        || p.ends_with("pattern")
                        || p.ends_with("metric_system_name") =>
                {
                    Seen::Refused
                }
                _ => expected,
            };
            assert_eq!(seen, expected, "{full} = {value}: {d:#?}");
        }
    }
}

fn loaded(doc: &serde_json::Value) -> crate::Loaded {
    load(doc.to_string().as_bytes())
}

fn all(l: &crate::Loaded) -> Vec<(Severity, String, String)> {
    l.diagnostics
        .iter()
        .map(|d| (d.severity, d.path.clone(), d.message.clone()))
        .collect()
}

#[test]
fn tolerated_shapes_get_apicast_defaults_and_a_warning() {
    let w = Severity::Warning;
    // t/apicast.t TEST 13 and 14: services that are only an id and hosts.
    let l = loaded(&json!({"services": [{"id": 1}]}));
    let d = all(&l);
    assert!(!l.diagnostics.has_errors(), "{d:#?}");
    expect(
        &d,
        w,
        "services[0].proxy",
        "no proxy: APIcast's defaults apply",
    );
    expect(
        &d,
        w,
        "services[0].backend_version",
        "every request gets the auth-missing error",
    );
    expect(
        &d,
        w,
        "services[0].backend_authentication_value",
        "without a token, with service_id and the credentials only",
    );
    // What is said about its proxy's fields is said where the proxy would be.
    expect(&d, w, "services[0].proxy", "no api_backend");
    let svc = &l.config.as_ref().unwrap().services[0];
    assert_eq!(svc.hosts, ["localhost"]);
    assert!(svc.mapping_rules.is_empty());
    assert_eq!(svc.backend_version, None);
    assert_eq!(svc.control_service_auth, None);
    assert_eq!(svc.upstream.api_backend, None);

    // configuration.lua: `backend.endpoint or tostring(backend)`: a URL works as the backend.
    let mut s = service();
    s["proxy"]["backend"] = json!("https://su1.3scale.net");
    let c = config(&json!({"services": [s.clone()]}));
    assert_eq!(
        c.services[0].backend.endpoint.as_deref(),
        Some("https://su1.3scale.net")
    );
    s["proxy"]["backend"] = json!("ftp://x");
    expect(
        &diags(&json!({"services": [s]})),
        Severity::Error,
        "services[0].proxy.backend",
        "ftp",
    );

    // No id: APIcast's `tostring(service.id or 'default')`.
    let mut s = service();
    s.as_object_mut().unwrap().remove("id");
    let l = loaded(&json!({"services": [s]}));
    assert!(has(
        &all(&l),
        w,
        "services[0].id",
        "APIcast calls this service 'default'"
    ));
    assert_eq!(l.config.unwrap().services[0].id, "default");

    // No hosts: localhost, said once.
    let mut s = service();
    s["proxy"].as_object_mut().unwrap().remove("hosts");
    let d = diags(&json!({"services": [s]}));
    expect(&d, w, "services[0].proxy.hosts", "for the host localhost");

    // Two services with one id (as text, 42 and "42" are the same): the first wins whole.
    let mut second = service();
    second["id"] = json!("42");
    second["proxy"]["hosts"] = json!(["second.example"]);
    let l = loaded(&json!({"services": [service(), second]}));
    let d = all(&l);
    expect(
        &d,
        w,
        "services[1].id",
        "service id '42' is also the id of services[0]: APIcast keeps the first",
    );
    let compiled = l.compiled.unwrap();
    assert_eq!(compiled.services().len(), 1);
    assert!(compiled.service_for_authority(b"second.example").is_none());
    // Two services without an id are both 'default'.
    let (mut a, mut b) = (service(), service());
    a.as_object_mut().unwrap().remove("id");
    b.as_object_mut().unwrap().remove("id");
    b["proxy"]["hosts"] = json!(["b.example"]);
    let d = diags(&json!({"services": [a, b]}));
    expect(
        &d,
        w,
        "services[1].id",
        "'default' is also the id of services[0]",
    );

    // No services at all: valid, every request is for an unknown host.
    for doc in [json!({"services": []}), json!({"proxy_configs": []})] {
        let l = loaded(&doc);
        let d = all(&l);
        assert!(!l.diagnostics.has_errors(), "{d:#?}");
        assert!(
            d.iter().any(|(s, _, m)| *s == w
                && m.contains("no services: every request gets the unknown-host answer")),
            "{d:#?}"
        );
        assert!(l.compiled.unwrap().services().is_empty());
    }
}

#[test]
fn control_service_credentials() {
    let w = Severity::Warning;
    let mut s = service();
    let o = s.as_object_mut().unwrap();
    o.remove("backend_authentication_type");
    o.remove("backend_authentication_value");
    // A top-level provider_key (Porta's spec.json has one) serves services that name none.
    let c = config(&json!({"provider_key": "pk-1", "services": [s.clone()]}));
    let auth = c.services[0].control_service_auth.as_ref().unwrap();
    assert_eq!(auth.kind, ControlServiceAuthKind::ProviderKey);
    assert_eq!(auth.value.expose(), "pk-1");
    // Without either, APIcast calls authrep with service_id and the credentials only.
    let l = loaded(&json!({"services": [s.clone()]}));
    let d = all(&l);
    assert!(!l.diagnostics.has_errors(), "{d:#?}");
    expect(
        &d,
        w,
        "services[0].backend_authentication_value",
        "without a token, with service_id and the credentials only",
    );
    assert_eq!(l.config.unwrap().services[0].control_service_auth, None);
    // Half a pair sends nothing either.
    let mut half = s.clone();
    half["backend_authentication_type"] = json!("service_token");
    let d = diags(&json!({"services": [half]}));
    expect(
        &d,
        w,
        "services[0].backend_authentication_type",
        "APIcast sends no token",
    );
    let mut half = s;
    half["backend_authentication_value"] = json!("tok");
    let d = diags(&json!({"services": [half]}));
    expect(
        &d,
        w,
        "services[0].backend_authentication_value",
        "APIcast does not send it",
    );
    // The warning is tied to authorizing: a service that does not never calls.
    let mut none = service();
    none.as_object_mut()
        .unwrap()
        .remove("backend_authentication_type");
    none.as_object_mut()
        .unwrap()
        .remove("backend_authentication_value");
    none["proxy"]["policy_chain"] = json!([]);
    let d = diags(&json!({"services": [none]}));
    assert!(
        !d.iter()
            .any(|x| x.1 == "services[0].backend_authentication_value"),
        "{d:#?}"
    );
}

#[test]
fn the_apicast_policy_decides_whether_a_service_authorizes() {
    use crate::config::Authorization;
    let with_chain = |chain: serde_json::Value| {
        let mut s = service();
        s["proxy"]["policy_chain"] = chain;
        loaded(&json!({"services": [s]}))
    };
    let authorization = |l: &crate::Loaded| l.config.as_ref().unwrap().services[0].authorization;
    // No chain (or null): APIcast's default chain, the apicast policy alone.
    let mut s = service();
    s["proxy"]["policy_chain"] = json!(null);
    assert_eq!(
        config(&json!({"services": [s]})).services[0].authorization,
        Authorization::Threescale
    );
    assert_eq!(
        config(&json!({"services": [service()]})).services[0].authorization,
        Authorization::Threescale
    );
    for chain in [
        json!([{"name": "apicast", "version": "builtin", "configuration": {}}]),
        json!([{"name": "apicast.policy.apicast"}]),
        json!([{"name": "logging"}, {"name": "apicast"}]),
    ] {
        let l = with_chain(chain.clone());
        assert_eq!(authorization(&l), Authorization::Threescale, "{chain}");
    }
    // An empty chain is a chain: it has no apicast policy (local_chain.lua uses it as given).
    for chain in [
        json!([]),
        json!([{"name": "logging"}]),
        json!([{"name": "apicast", "enabled": false}]),
    ] {
        let l = with_chain(chain.clone());
        let d = all(&l);
        assert!(!l.diagnostics.has_errors(), "{chain}: {d:#?}");
        assert_eq!(authorization(&l), Authorization::None, "{chain}");
        assert!(
            has(
                &d,
                Severity::Warning,
                "services[0].proxy.policy_chain",
                "APIcast does not authorize these requests with 3scale"
            ),
            "{chain}: {d:#?}"
        );
    }
}

#[test]
fn policies_tollgate_cannot_run_are_errors_unless_accepted() {
    let e = Severity::Error;
    let w = Severity::Warning;
    let mut s = service();
    s["proxy"]["policy_chain"] = json!([
        {"name": "apicast.policy.cors", "version": "builtin", "configuration": {}},
        {"name": "apicast", "version": "builtin", "configuration": {}},
        {"name": "caching", "configuration": {"caching_type": "resilient"}},
        {"name": "3scale_batcher"},
        {"name": "my_custom", "version": "1.0.0"},
        {"name": "logging", "configuration": {"enable_access_logs": false}},
        {"name": "ip_check", "enabled": false},
        {"configuration": {}},
    ]);
    let doc = json!({"services": [s]});
    let l = loaded(&doc);
    let d = all(&l);
    assert!(l.compiled.is_none());
    let at = |k: usize| format!("services[0].proxy.policy_chain[{k}].name");
    expect(&d, e, &at(0), "policy 'apicast.policy.cors' is not implemented by tollgate: without it the gateway would do less");
    expect(&d, e, &at(0), "`--skip-policy cors`");
    // caching and 3scale_batcher are policies tollgate runs.
    assert!(
        !d.iter().any(|x| x.1.contains("[2]") || x.1.contains("[3]")),
        "{d:#?}"
    );
    expect(
        &d,
        e,
        &at(4),
        "not one of APIcast's built-in policies (a custom policy?)",
    );
    // Logging only: skipped with a warning; disabled: left out quietly.
    assert!(!d.iter().any(|x| x.0 == e && x.1.contains("[5]")), "{d:#?}");
    assert!(!d.iter().any(|x| x.1.contains("[6]")), "{d:#?}");
    expect(
        &d,
        w,
        "services[0].proxy.policy_chain[7]",
        "without a name is ignored",
    );
    assert_eq!(d.iter().filter(|x| x.0 == e).count(), 2, "{d:#?}");

    // Accepted by the caller, by either spelling, or by the document itself.
    let options = crate::LoadOptions {
        accept_skipped_policies: vec![
            "apicast.policy.caching".into(),
            "cors".into(),
            "3scale_batcher".into(),
            "cros".into(),
            "rate_limit".into(),
        ],
    };
    let mut doc = doc;
    doc["tollgate"] = json!({"accept_skipped_policies": ["my_custom"]});
    let l = crate::load_with(doc.to_string().as_bytes(), &options);
    let d = all(&l);
    assert!(!l.diagnostics.has_errors(), "{d:#?}");
    let c = l.config.unwrap();
    let skipped: Vec<(&str, &str)> = c
        .skipped_policies
        .iter()
        .map(|p| (p.service.as_str(), p.policy.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [("42", "cors"), ("42", "my_custom"), ("42", "logging")]
    );
    for k in [0, 4, 5] {
        let p = format!("services[0].proxy.policy_chain[{k}]");
        assert!(
            has(&d, w, &p, "the gateway does not run policy"),
            "{p}: {d:#?}"
        );
    }
    expect(
        &d,
        w,
        "",
        "policy 'cros' is accepted as skipped, but no service's policy_chain has it",
    );
    for name in ["rate_limit", "caching", "3scale_batcher"] {
        expect(
            &d,
            w,
            "",
            &format!(
                "policy '{name}' is accepted as skipped, but tollgate runs it: nothing is skipped"
            ),
        );
    }
    let svc = &c.services[0];
    assert_eq!(svc.cache.mode, crate::config::CacheMode::Resilient);
    assert_eq!(svc.batching, Some(crate::config::BatchingConfig::default()));
    assert_eq!(
        d.iter()
            .filter(|x| x.2.contains("does not run policy"))
            .count(),
        3,
        "one warning each: {d:#?}"
    );
    // The FilterConfig says so, and says it again when it is loaded.
    let again = load(c.to_json_pretty().as_bytes());
    let d = all(&again);
    expect(
        &d,
        w,
        "skipped_policies[0]",
        "the gateway does not run policy 'cors' of service '42'",
    );

    // tollgate's own object is strict.
    let d = diags(&json!({"tollgate": {"accept_skiped_policies": []}, "services": [service()]}));
    expect(
        &d,
        e,
        "tollgate.accept_skiped_policies",
        "tollgate's options are accept_skipped_policies",
    );
    let d = diags(&json!({"tollgate": {"accept_skipped_policies": [3]}, "services": [service()]}));
    expect(
        &d,
        e,
        "tollgate.accept_skipped_policies[0]",
        "expected a policy name",
    );
}

#[test]
fn near_misses_of_known_fields_are_named_at_every_level() {
    let w = Severity::Warning;
    let mut s = service();
    s["proxyy"] = json!({});
    s["backend_versoin"] = json!(2);
    let p = &mut s["proxy"];
    p["hostss"] = json!(["x.example"]);
    p["credentails_location"] = json!("headers");
    p["proxy_rule"] = json!([]);
    p["backend"] = json!({"endpont": "https://su1.3scale.net"});
    p["policy_chain"] = json!([{"name": "apicast", "configuraton": {}}]);
    p["proxy_rules"][0]["http_methd"] = json!("POST");
    p["proxy_rules"][0]["Last"] = json!(true);
    let d = diags(&json!({"servics": [], "services": [s]}));
    for (path, known) in [
        ("servics", "services"),
        ("services[0].proxyy", "proxy"),
        ("services[0].backend_versoin", "backend_version"),
        ("services[0].proxy.hostss", "hosts"),
        (
            "services[0].proxy.credentails_location",
            "credentials_location",
        ),
        ("services[0].proxy.proxy_rule", "proxy_rules"),
        ("services[0].proxy.backend.endpont", "endpoint"),
        (
            "services[0].proxy.policy_chain[0].configuraton",
            "configuration",
        ),
        ("services[0].proxy.proxy_rules[0].http_methd", "http_method"),
        ("services[0].proxy.proxy_rules[0].Last", "last"),
    ] {
        assert!(
            has(&d, w, path, &format!("did you mean '{known}'?")),
            "{path}: {d:#?}"
        );
    }
    // Porta's own fields, and fields far from any, say nothing.
    let mut s = service();
    s["state"] = json!("incomplete");
    s["proxy"]["sandbox_endpoint"] = json!("https://x");
    s["proxy"]["policies_config"] = json!([]);
    s["proxy"]["proxy_rules"][0]["position"] = json!(1);
    s["proxy"]["proxy_rules"][0]["redirect_url"] = json!(null);
    s["brand_new_field"] = json!(1);
    s["proxy"]["backend"] = json!({"endpoint": "https://su1.3scale.net"});
    let d = diags(&json!({"services": [s]}));
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn hosts_are_host_names() {
    let e = Severity::Error;
    let mut s = service();
    s["proxy"]["hosts"] = json!([
        "https://api.example.com/",
        "api.example.com/v1",
        "api.example.com?x=1",
        "user@api.example.com",
        "*.example.com",
        "ok.example.com:8080",
    ]);
    let l = loaded(&json!({"services": [s]}));
    let d = all(&l);
    assert!(l.compiled.is_none());
    let at = |k: usize| format!("services[0].proxy.hosts[{k}]");
    expect(
        &d,
        e,
        &at(0),
        "is a URL, not a host name: write its host name ('api.example.com')",
    );
    expect(
        &d,
        e,
        &at(1),
        "has a path or a query: hosts are host names only ('api.example.com')",
    );
    expect(&d, e, &at(2), "has a path or a query");
    expect(&d, e, &at(3), "is not a host name");
    expect(&d, e, &at(4), "no wildcards");
    expect(&d, Severity::Warning, &at(5), "the port is ignored");
    assert_eq!(d.iter().filter(|x| x.0 == e).count(), 5, "{d:#?}");
}

#[test]
fn filter_configs_written_before_these_fields_still_load() {
    let c = config(&json!({"services": [service()]}));
    let mut v: serde_json::Value = serde_json::from_str(&c.to_json_pretty()).unwrap();
    let svc = v["services"][0].as_object_mut().unwrap();
    svc.remove("authorization");
    v.as_object_mut().unwrap().remove("skipped_policies");
    let l = load(v.to_string().as_bytes());
    assert_eq!(l.config.as_ref(), Some(&c), "{:?}", l.diagnostics);
    // And a FilterConfig can say "no token", "no version" and "no authorization".
    v["services"][0]["control_service_auth"] = json!(null);
    v["services"][0]["backend_version"] = json!(null);
    v["services"][0]["authorization"] = json!("none");
    let l = load(v.to_string().as_bytes());
    let s = &l.config.as_ref().unwrap().services[0];
    assert_eq!(
        (s.control_service_auth.as_ref(), s.backend_version),
        (None, None)
    );
    assert_eq!(s.authorization, crate::config::Authorization::None);
    let d = all(&l);
    expect(
        &d,
        Severity::Warning,
        "services[0].authorization",
        "no 'apicast' policy",
    );
}

fn with_chain(chain: serde_json::Value) -> serde_json::Value {
    let mut s = service();
    s["proxy"]["policy_chain"] = chain;
    json!({"services": [s]})
}

fn rate_limit_doc(configuration: serde_json::Value) -> serde_json::Value {
    with_chain(json!([
        {"name": "apicast"},
        {"name": "rate_limit", "configuration": configuration},
    ]))
}

const RL: &str = "services[0].proxy.policy_chain[1].configuration";

#[test]
fn rate_limit_policy_becomes_limiters() {
    use crate::config::{
        FixedWindowConfig, LimiterMode, LimiterScope, RatePeriod, TokenBucketConfig,
        DEFAULT_LIMITER_MAX_KEYS,
    };
    let doc = rate_limit_doc(json!({
        "leaky_bucket_limiters": [
            {"key": {"name": "per_ip", "name_type": "liquid"}, "rate": 10, "burst": 5},
            {"key": {"name": "{{ remote_addr }}", "name_type": "liquid", "scope": "global"},
             "rate": 3, "burst": 0, "condition": {"operations": [], "combine_op": "and"}},
        ],
        "fixed_window_limiters": [
            {"key": {"name": "{{ headers['X-User'] }}", "name_type": "liquid"}, "count": 0, "window": 60},
            {"key": {"name": "u-{{headers[\"X-User\"]}}", "name_type": "liquid"}, "count": 7, "window": 0},
            {"key": {"name": "{{ headers.X-Api }}", "name_type": "liquid", "scope": "service"}, "count": 8},
            {"key": {"name": "plain name", "scope": "global"}, "count": 9, "window": 3600},
            {"key": {"name": "plain name"}, "count": 1, "window": 1},
            {"key": {"name": "plain-name"}, "count": 2, "window": 1},
        ],
        "limits_exceeded_error": {"status_code": "503", "error_handling": "log"},
    }));
    let d = diags(&doc);
    assert!(d.iter().all(|x| x.0 != Severity::Error), "{d:#?}");
    let c = config(&doc);
    let s = &c.services[0];
    assert!(!s.rate_limit_headers);
    let got: Vec<_> = s
        .limiters
        .iter()
        .map(|l| {
            assert_eq!(l.counts, "requests");
            assert_eq!(l.mode, LimiterMode::ReportOnly);
            assert_eq!(l.status, Some(503));
            assert_eq!(l.max_keys, DEFAULT_LIMITER_MAX_KEYS);
            (
                l.name.as_str(),
                l.key.as_str(),
                l.scope,
                l.token_bucket,
                l.fixed_window,
            )
        })
        .collect();
    let tb = |rate, burst| {
        Some(TokenBucketConfig {
            rate,
            per: RatePeriod::Second,
            burst,
        })
    };
    let fw = |count, window_seconds| {
        Some(FixedWindowConfig {
            count,
            window_seconds,
        })
    };
    use LimiterScope::{Global, Service};
    assert_eq!(
        got,
        [
            ("leaky_bucket_per_ip", "service", Service, tb(10, 6), None),
            (
                "leaky_bucket____remote_addr___",
                "client_address",
                Global,
                tb(3, 1),
                None
            ),
            (
                "fixed_window____headers__X-User_____",
                "header:x-user",
                Service,
                None,
                fw(0, 60)
            ),
            (
                "fixed_window_u-__headers__X-User____",
                "header:x-user",
                Service,
                None,
                fw(7, 1)
            ),
            (
                "fixed_window____headers_X-Api___",
                "header:x-api",
                Service,
                None,
                fw(8, 1)
            ),
            (
                "fixed_window_plain_name",
                "service",
                Global,
                None,
                fw(9, 3600)
            ),
            (
                "fixed_window_plain_name_2",
                "service",
                Service,
                None,
                fw(1, 1)
            ),
            (
                "fixed_window_plain-name",
                "service",
                Service,
                None,
                fw(2, 1)
            ),
        ]
    );
}

#[test]
fn rate_limit_defaults_long_names_and_headers_policy() {
    use crate::config::LimiterMode;
    let long = "k".repeat(80);
    let doc = with_chain(json!([
        {"name": "apicast"},
        {"name": "rate_limit", "configuration": {
            "fixed_window_limiters": [
                {"key": {"name": long}, "count": 1},
                {"key": {"name": long}, "count": 2},
            ],
        }},
        {"name": "apicast.policy.rate_limit", "configuration": {
            "fixed_window_limiters": [{"key": {"name": long}, "count": 3}],
            "limits_exceeded_error": {"status_code": 429},
        }},
        {"name": "rate_limit_headers", "configuration": {}},
        {"name": "rate_limit", "enabled": false, "configuration": {
            "fixed_window_limiters": [{"key": {"name": "off"}, "count": 3}],
        }},
    ]));
    let c = config(&doc);
    let s = &c.services[0];
    assert!(s.rate_limit_headers);
    assert!(c.skipped_policies.is_empty());
    let names: Vec<_> = s.limiters.iter().map(|l| l.name.clone()).collect();
    let base = format!("fixed_window_{}", "k".repeat(51));
    assert_eq!(base.len(), 64);
    assert_eq!(
        names,
        [
            base.clone(),
            format!("{}_2", &base[..62]),
            format!("{}_3", &base[..62])
        ]
    );
    assert_eq!(s.limiters[0].status, None);
    assert_eq!(s.limiters[0].mode, LimiterMode::Enforce);
    assert_eq!(s.limiters[2].status, Some(429));
    // Without the policies: none.
    let c = config(&json!({"services": [service()]}));
    assert!(c.services[0].limiters.is_empty());
    assert!(!c.services[0].rate_limit_headers);
}

#[test]
fn rate_limit_warns_about_what_it_cannot_express() {
    let w = Severity::Warning;
    let doc = rate_limit_doc(json!({
        "connection_limiters": [{"key": {"name": "c"}, "conn": 10, "burst": 5, "delay": 1}],
        "leaky_bucket_limiters": [
            {"key": {"name": "zero"}, "rate": 0, "burst": 1},
            {"key": {"name": "{{ jwt.sub }}", "name_type": "liquid"}, "rate": 1},
            {"key": {"name": "cond"}, "rate": 1, "condition": {"operations": [
                {"left": "{{ uri }}", "left_type": "liquid", "op": "==", "right": "/a"}]}},
            {"key": {"name": "kept"}, "rate": 1},
        ],
        "fixed_window_limiters": [
            {"key": {"name": "{{ remote_addr | downcase }}", "name_type": "liquid"}, "count": 1},
            {"key": {"name": "{{ remote_addr }}{{ host }}", "name_type": "liquid"}, "count": 1},
            {"key": {"name": "{% if a %}x{% endif %}", "name_type": "liquid"}, "count": 1},
        ],
        "redis_url": "redis://localhost:6379/1",
        "configuration_error": {"status_code": 500},
    }));
    let d = diags(&doc);
    assert!(d.iter().all(|x| x.0 != Severity::Error), "{d:#?}");
    expect(
        &d,
        w,
        &format!("{RL}.connection_limiters[0]"),
        "no connection limiters",
    );
    expect(
        &d,
        w,
        &format!("{RL}.leaky_bucket_limiters[0].rate"),
        "a rate of 0",
    );
    expect(
        &d,
        w,
        &format!("{RL}.leaky_bucket_limiters[1].key.name"),
        "left out",
    );
    expect(
        &d,
        w,
        &format!("{RL}.leaky_bucket_limiters[2].condition"),
        "condition",
    );
    for k in 0..3 {
        expect(
            &d,
            w,
            &format!("{RL}.fixed_window_limiters[{k}].key.name"),
            "one {{ remote_addr }}",
        );
    }
    expect(&d, w, &format!("{RL}.redis_url"), "not in Redis");
    expect(
        &d,
        w,
        &format!("{RL}.configuration_error"),
        "configuration_error",
    );
    let c = config(&doc);
    let names: Vec<_> = c.services[0]
        .limiters
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["leaky_bucket_kept"]);
    // An empty redis_url and no configuration_error: no warning.
    let d = diags(&rate_limit_doc(json!({"redis_url": ""})));
    assert!(d.iter().all(|x| !x.1.starts_with(RL)), "{d:#?}");
}

#[test]
fn rate_limit_refuses_wrong_types_at_their_paths() {
    let e = Severity::Error;
    let w = Severity::Warning;
    let doc = rate_limit_doc(json!({
        "leaky_bucket_limiters": [
            {"key": {"name": "a"}, "rate": "10"},
            {"key": {"name": "b"}, "rate": 1.5},
            {"key": {"name": "c"}, "rate": 1, "burst": -1},
            {"key": {"name": "d"}},
            {"rate": 1},
            "nope",
        ],
        "fixed_window_limiters": {"key": {"name": "x"}, "count": 1},
        "limits_exceeded_error": {"status_code": "many", "error_handlin": "log"},
    }));
    let d = diags(&doc);
    let lb = format!("{RL}.leaky_bucket_limiters");
    expect(
        &d,
        e,
        &format!("{lb}[0].rate"),
        "expected a number, found \"10\"",
    );
    expect(&d, e, &format!("{lb}[1].rate"), "expected an integer");
    expect(&d, e, &format!("{lb}[2].burst"), "-1 is negative");
    expect(&d, e, &format!("{lb}[3].rate"), "needs a rate");
    expect(&d, e, &format!("{lb}[4].key"), "needs a key");
    expect(
        &d,
        e,
        &format!("{lb}[5]"),
        "expected a limiter object, found a string",
    );
    expect(
        &d,
        e,
        &format!("{RL}.fixed_window_limiters"),
        "expected an array",
    );
    expect(
        &d,
        e,
        &format!("{RL}.limits_exceeded_error.status_code"),
        "expected an integer",
    );
    expect(
        &d,
        w,
        &format!("{RL}.limits_exceeded_error.error_handlin"),
        "did you mean 'error_handling'?",
    );
    let d = diags(&rate_limit_doc(json!({
        "leaky_bucket_limiter": [],
        "limits_exceeded_error": {"status_code": 99},
    })));
    expect(
        &d,
        w,
        &format!("{RL}.leaky_bucket_limiter"),
        "did you mean 'leaky_bucket_limiters'?",
    );
    expect(
        &d,
        e,
        &format!("{RL}.limits_exceeded_error.status_code"),
        "not between 200 and 599",
    );
    let d = diags(&rate_limit_doc(json!("text")));
    expect(&d, e, RL, "expected an object, found a string");
}

fn loaded_chain(chain: serde_json::Value) -> crate::Loaded {
    let mut s = service();
    s["proxy"]["policy_chain"] = chain;
    loaded(&json!({"services": [s]}))
}

fn first_service(l: &crate::Loaded) -> &crate::config::ServiceConfig {
    assert!(l.compiled.is_some(), "{:#?}", all(l));
    &l.config.as_ref().unwrap().services[0]
}

#[test]
fn caching_policy_sets_the_cache_mode() {
    use crate::config::CacheMode;
    for (given, mode) in [
        ("strict", CacheMode::Strict),
        ("resilient", CacheMode::Resilient),
        ("allow", CacheMode::Allow),
        ("none", CacheMode::None),
    ] {
        for name in ["caching", "apicast.policy.caching"] {
            // Before or after the apicast policy: APIcast exports the handler to the whole chain.
            for chain in [
                json!([{"name": "apicast"}, {"name": name, "configuration": {"caching_type": given}}]),
                json!([{"name": name, "configuration": {"caching_type": given}}, {"name": "apicast"}]),
            ] {
                let l = loaded_chain(chain.clone());
                let d = all(&l);
                let s = first_service(&l);
                assert_eq!(s.cache.mode, mode, "{chain}");
                assert_eq!(s.authorization, crate::config::Authorization::Threescale);
                assert!(
                    !d.iter().any(|x| x.1.contains("policy_chain")),
                    "{chain}: {d:#?}"
                );
                assert!(l.config.as_ref().unwrap().skipped_policies.is_empty());
                // The rest of the cache keeps its defaults; no batching.
                let defaults = crate::config::CacheConfig::default();
                assert_eq!(
                    (s.cache.ttl_seconds, s.cache.max_keys),
                    (defaults.ttl_seconds, defaults.max_keys)
                );
                assert_eq!(s.batching, None);
            }
        }
    }
    // No caching policy, or a disabled one: APIcast's default handler, strict.
    for chain in [
        json!([{"name": "apicast"}]),
        json!([{"name": "apicast"}, {"name": "caching", "enabled": false, "configuration": {"caching_type": "none"}}]),
    ] {
        let l = loaded_chain(chain.clone());
        assert_eq!(first_service(&l).cache.mode, CacheMode::Strict, "{chain}");
        assert!(
            !all(&l).iter().any(|x| x.1.contains("policy_chain")),
            "{chain}"
        );
    }
}

#[test]
fn a_missing_or_unknown_caching_type_disables_the_cache_with_a_warning() {
    use crate::config::CacheMode;
    let w = Severity::Warning;
    let at = "services[0].proxy.policy_chain[1].configuration";
    let field = format!("{at}.caching_type");
    for (configuration, needle) in [
        (
            json!({}),
            "no caching_type: APIcast logs an error and disables the cache",
        ),
        (json!(null), "no caching_type"),
        (json!({"caching_type": null}), "no caching_type"),
        (
            json!({"caching_type": "Strict"}),
            "unknown caching_type 'Strict'",
        ),
        (json!({"caching_type": "off"}), "unknown caching_type 'off'"),
        (json!({"caching_type": 1}), "unknown caching_type a number"),
        (
            json!({"caching_type": ["strict"]}),
            "unknown caching_type an array",
        ),
        (
            json!({"caching_type": "a-string-longer-than-sixteen"}),
            "unknown caching_type a string:",
        ),
    ] {
        let l = loaded_chain(
            json!([{"name": "apicast"}, {"name": "caching", "configuration": configuration}]),
        );
        let d = all(&l);
        assert_eq!(
            first_service(&l).cache.mode,
            CacheMode::None,
            "{configuration}"
        );
        expect(&d, w, &field, needle);
        expect(
            &d,
            w,
            &field,
            "(cache mode none: every request waits for the control service)",
        );
        assert!(!l.diagnostics.has_errors(), "{d:#?}");
    }
    // A policy without configuration at all, or a configuration that is not an object.
    let l = loaded_chain(json!([{"name": "apicast"}, {"name": "caching"}]));
    assert_eq!(first_service(&l).cache.mode, CacheMode::None);
    let whole = "no caching_type: APIcast logs an error and disables the cache, and so does \
                 tollgate (cache mode none: every request waits for the control service). \
                 Expected strict, resilient, allow or none";
    assert!(
        all(&l).contains(&(w, field.clone(), whole.to_owned())),
        "{:#?}",
        all(&l)
    );
    let l =
        loaded_chain(json!([{"name": "apicast"}, {"name": "caching", "configuration": "strict"}]));
    let d = all(&l);
    assert_eq!(first_service(&l).cache.mode, CacheMode::None);
    expect(
        &d,
        w,
        at,
        "expected an object, found a string: APIcast reads no field from it",
    );
    expect(&d, w, &field, "no caching_type");
    // A near miss is named.
    let l = loaded_chain(
        json!([{"name": "apicast"}, {"name": "caching", "configuration": {"cacheing_type": "strict"}}]),
    );
    let d = all(&l);
    assert_eq!(first_service(&l).cache.mode, CacheMode::None);
    expect(
        &d,
        w,
        &format!("{at}.cacheing_type"),
        "did you mean 'caching_type'?",
    );
    // A second caching policy: the first one's handler is the chain's.
    let l = loaded_chain(json!([
        {"name": "caching", "configuration": {"caching_type": "allow"}},
        {"name": "apicast"},
        {"name": "caching", "configuration": {"caching_type": "strict"}},
    ]));
    let d = all(&l);
    assert_eq!(first_service(&l).cache.mode, CacheMode::Allow);
    expect(
        &d,
        w,
        "services[0].proxy.policy_chain[2]",
        "a second caching policy has no effect",
    );
}

#[test]
fn batcher_policy_sets_batching() {
    use crate::config::{Authorization, BatchingConfig};
    let defaults = BatchingConfig::default();
    assert_eq!(
        (defaults.auths_ttl_seconds, defaults.batch_report_seconds),
        (10, 10)
    );
    for (configuration, ttl, interval) in [
        (None, 10, 10),
        (Some(json!(null)), 10, 10),
        (Some(json!({})), 10, 10),
        (Some(json!({"auths_ttl": 3})), 3, 10),
        (Some(json!({"batch_report_seconds": 7})), 10, 7),
        (
            Some(json!({"auths_ttl": 30, "batch_report_seconds": 2.0})),
            30,
            2,
        ),
        (
            Some(json!({"auths_ttl": null, "batch_report_seconds": 1})),
            10,
            1,
        ),
    ] {
        let mut policy = json!({"name": "apicast.policy.3scale_batcher"});
        if let Some(c) = &configuration {
            policy["configuration"] = c.clone();
        }
        // Before or after the apicast policy (APIcast's TEST 1 and TEST 4): the batcher's
        // rewrite phase turns the apicast policy's authrep off either way.
        for chain in [
            json!([policy.clone(), {"name": "apicast"}]),
            json!([{"name": "apicast"}, policy.clone()]),
        ] {
            let l = loaded_chain(chain.clone());
            let d = all(&l);
            let s = first_service(&l);
            assert_eq!(
                s.batching,
                Some(BatchingConfig {
                    auths_ttl_seconds: ttl,
                    batch_report_seconds: interval,
                    ..defaults
                }),
                "{chain}"
            );
            assert_eq!(s.authorization, Authorization::Threescale);
            assert_eq!(s.cache, crate::config::CacheConfig::default(), "{chain}");
            assert!(
                !d.iter().any(|x| x.1.contains("policy_chain")),
                "{chain}: {d:#?}"
            );
            assert!(l.config.as_ref().unwrap().skipped_policies.is_empty());
        }
    }
    // With the caching policy: its mode is the batcher's on failures (APIcast's TEST 5, 7).
    let l = loaded_chain(json!([
        {"name": "3scale_batcher", "configuration": {}},
        {"name": "apicast"},
        {"name": "caching", "configuration": {"caching_type": "resilient"}},
    ]));
    let s = first_service(&l);
    assert_eq!(s.cache.mode, crate::config::CacheMode::Resilient);
    assert!(s.batching.is_some());
    // Disabled: no batching.
    let l =
        loaded_chain(json!([{"name": "3scale_batcher", "enabled": false}, {"name": "apicast"}]));
    assert_eq!(first_service(&l).batching, None);
}

#[test]
fn batcher_values_that_are_not_positive_seconds_get_the_default_with_a_warning() {
    let w = Severity::Warning;
    let at = "services[0].proxy.policy_chain[0].configuration";
    for (value, shown) in [
        (json!(0), "a number"),
        (json!(-5), "a number"),
        (json!(1.5), "a number"),
        (json!("5"), "'5'"),
        (json!(true), "a boolean"),
        (json!({}), "an object"),
        (json!(8_589_934_592_u64), "a number"),
    ] {
        for (field, other) in [
            ("auths_ttl", "batch_report_seconds"),
            ("batch_report_seconds", "auths_ttl"),
        ] {
            let l = loaded_chain(json!([
                {"name": "3scale_batcher", "configuration": {field: value, other: 4}},
                {"name": "apicast"},
            ]));
            let d = all(&l);
            let b = first_service(&l).batching.unwrap();
            let (ttl, interval) = if field == "auths_ttl" {
                (10, 4)
            } else {
                (4, 10)
            };
            assert_eq!(
                (b.auths_ttl_seconds, b.batch_report_seconds),
                (ttl, interval),
                "{field}: {value}"
            );
            expect(
                &d,
                w,
                &format!("{at}.{field}"),
                &format!("expected a positive whole number of seconds, found {shown}"),
            );
            expect(
                &d,
                w,
                &format!("{at}.{field}"),
                "so tollgate uses the default, 10",
            );
            assert!(!has(&d, w, &format!("{at}.{other}"), "expected"), "{d:#?}");
            assert!(!l.diagnostics.has_errors(), "{d:#?}");
        }
    }
    let l = loaded_chain(json!([{"name": "3scale_batcher", "configuration": {"auths_ttl": 0}}]));
    let whole = "expected a positive whole number of seconds, found a number: APIcast's shared \
                 cache and timer misbehave with it (0 keeps answers forever, others fail), so \
                 tollgate uses the default, 10";
    assert!(
        all(&l).contains(&(w, format!("{at}.auths_ttl"), whole.to_owned())),
        "{:#?}",
        all(&l)
    );
    // Not an object: the defaults, with a warning.
    let l = loaded_chain(
        json!([{"name": "3scale_batcher", "configuration": [1]}, {"name": "apicast"}]),
    );
    let b = first_service(&l).batching.unwrap();
    assert_eq!((b.auths_ttl_seconds, b.batch_report_seconds), (10, 10));
    expect(&all(&l), w, at, "expected an object, found an array");
    // A near miss is named.
    let l = loaded_chain(
        json!([{"name": "3scale_batcher", "configuration": {"auth_ttl": 5}}, {"name": "apicast"}]),
    );
    assert_eq!(first_service(&l).batching.unwrap().auths_ttl_seconds, 10);
    expect(
        &all(&l),
        w,
        &format!("{at}.auth_ttl"),
        "did you mean 'auths_ttl'?",
    );
}

#[test]
fn a_batcher_without_the_apicast_policy_still_authorizes() {
    use crate::config::Authorization;
    let w = Severity::Warning;
    for chain in [
        json!([{"name": "3scale_batcher", "configuration": {"auths_ttl": 5}}]),
        json!([{"name": "apicast", "enabled": false}, {"name": "3scale_batcher", "configuration": {"auths_ttl": 5}}]),
    ] {
        let l = loaded_chain(chain.clone());
        let d = all(&l);
        let s = first_service(&l);
        assert_eq!(s.authorization, Authorization::Threescale, "{chain}");
        assert_eq!(s.batching.unwrap().auths_ttl_seconds, 5);
        let at = if chain[0]["name"] == "apicast" { 1 } else { 0 };
        expect(
            &d,
            w,
            &format!("services[0].proxy.policy_chain[{at}]"),
            "a 3scale_batcher without the apicast policy",
        );
        assert!(
            !d.iter()
                .any(|x| x.2.contains("APIcast does not authorize these requests")),
            "{chain}: {d:#?}"
        );
    }
    // A disabled batcher alone: nothing authorizes.
    let l = loaded_chain(json!([{"name": "3scale_batcher", "enabled": false}]));
    let s = first_service(&l);
    assert_eq!(s.authorization, Authorization::None);
    assert_eq!(s.batching, None);
    // Two batchers: the first one's configuration, a warning at the second.
    let l = loaded_chain(json!([
        {"name": "apicast"},
        {"name": "3scale_batcher", "configuration": {"auths_ttl": 5}},
        {"name": "apicast.policy.3scale_batcher", "configuration": {"auths_ttl": 7}},
    ]));
    let d = all(&l);
    assert_eq!(first_service(&l).batching.unwrap().auths_ttl_seconds, 5);
    expect(
        &d,
        w,
        "services[0].proxy.policy_chain[2]",
        "a second 3scale_batcher",
    );
    assert!(
        !d.iter().any(|x| x.2.contains("without the apicast policy")),
        "{d:#?}"
    );
}
