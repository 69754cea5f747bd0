#![cfg(not(target_arch = "wasm32"))]
//! Property tests for the core. In the filter a panic traps the VM, so the first thing checked
//! here is that nothing panics on any input: configuration bytes, requests, and the lower-level
//! readers they go through. Along the way the invariants the filter relies on are checked (the
//! authrep target is a valid request target, the matched path is ASCII, every failed load is
//! explained), and the rule matcher is checked against the regex APIcast would build.
//!
//! Failures are not persisted to files (other engineers share this tree); proptest prints the
//! minimal failing input, which goes into a `regression_*` test below.

// Test code: a failing test should fail loudly. clippy.toml's allow-*-in-tests covers `#[test]`
// functions and `#[cfg(test)]` modules, not the helpers of an integration test, hence this.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Number, Value};

use tollgate::args::{self, ArgValue, FormArgs, RequestArgs, MAX_ARGS};
use tollgate::backend::percent;
use tollgate::credentials::{nginx_decode_base64, Authorization};
use tollgate::path::{self, BadPath, PathBuffers};
use tollgate::rules::pattern::{analyze, PatternKind, Token};
use tollgate::rules::query::QueryCondition;
use tollgate::rules::{MatchScratch, RuleInput, RuleSet};
use tollgate::url::HttpUrl;
use tollgate::{Compiled, DenyReason, MetricIndex, RequestView, RuleIndex, Scratch, Verdict};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// `cases`, multiplied by `TOLLGATE_PROPTEST_SCALE` when set (for a longer hunt than CI's).
fn cfg(cases: u32) -> ProptestConfig {
    let scale = std::env::var("TOLLGATE_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `test` over `cases` values of `strategy`; panics with proptest's report (which names
/// the minimal failing input) on failure.
fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(cfg(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// Standard base64 with padding (RFC 4648 §4), as a client would write a Basic credential.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = b0 << 16 | b1 << 8 | b2;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Every `%` is followed by two upper-case hex digits.
fn escapes_well_formed(s: &[u8]) -> bool {
    s.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (s.get(i + 1).copied().is_some_and(is_upper_hex)
                && s.get(i + 2).copied().is_some_and(is_upper_hex))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JSON leaf of any type.
fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        select(&[0.0, 1.0, 2.0, 1.5, -1.0, 404.0, 9.1e15, 1e300][..])
            .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        json_key().prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
    .boxed()
}

/// Object keys: mostly names the loaders look for, so random documents reach deep code.
fn json_key() -> BoxedStrategy<String> {
    const KEYS: &[&str] = &[
        "services",
        "proxy_config",
        "proxy_configs",
        "content",
        "provider_key",
        "kind",
        "version",
        "request_body_max_bytes",
        "request_line_max_bytes",
        "id",
        "name",
        "system_name",
        "backend_version",
        "backend_authentication_type",
        "backend_authentication_value",
        "proxy",
        "hosts",
        "api_backend",
        "backend",
        "endpoint",
        "host",
        "credentials_location",
        "auth_user_key",
        "auth_app_id",
        "auth_app_key",
        "error_auth_missing",
        "error_status_no_match",
        "error_headers_auth_failed",
        "secret_token",
        "hostname_rewrite",
        "policy_chain",
        "proxy_rules",
        "http_method",
        "pattern",
        "metric_system_name",
        "delta",
        "querystring_parameters",
        "last",
        "authentication_method",
        "tollgate.FilterConfig",
        "1",
        "2",
        "oauth",
    ];
    prop_oneof![4 => select(KEYS).prop_map(str::to_owned), 1 => any::<String>()].boxed()
}

/// Any JSON value, bounded in depth and size.
fn arb_json(depth: u32, size: u32) -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(depth, size, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((json_key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

fn small_json() -> BoxedStrategy<Value> {
    arb_json(2, 8)
}

// ---------------------------------------------------------------------------------------------
// Property 1: load() never panics, and explains every failure
// ---------------------------------------------------------------------------------------------

const PATH_PREFIXES: &[&str] = &[
    "services",
    "proxy_config",
    "proxy_configs",
    "kind",
    "version",
    "request_body_max_bytes",
    "request_line_max_bytes",
    "control_service",
    "skipped_policies",
    "provider_key",
    "tollgate",
    // Admin API answers that are not proxy configurations are named at their own key.
    "service",
    "proxy",
    "mapping_rules",
];

#[derive(Default)]
struct LoadStats {
    cases: Cell<usize>,
    compiled: Cell<usize>,
}

impl LoadStats {
    fn count(&self, compiled: bool) {
        self.cases.set(self.cases.get() + 1);
        if compiled {
            self.compiled.set(self.compiled.get() + 1);
        }
    }
}

/// The one path outside the known roots, by design: an unknown top-level field of a
/// FilterConfig is reported at the unknown key itself (`id`), as nested ones are
/// (`services[0].bogus`). See `unknown_top_level_field_is_reported_at_its_key`.
fn names_unknown_top_level_field(d: &tollgate::Diagnostic) -> bool {
    // FilterConfig's strict refusal, or the 3scale import's "did you mean".
    d.message
        .starts_with(&format!("unknown field `{}`", d.path))
        || d.message
            .starts_with(&format!("unknown field '{}'", d.path))
}

/// Follows a diagnostic path (`services[1].proxy.proxy_rules[4].pattern`) into `doc`. Keys may
/// themselves contain '.' or '[' (query argument names do), so every key that fits is tried.
/// `Some(Some(v))`: the path names `v`; `Some(None)`: it names a field missing from an object
/// that exists (a "missing" diagnostic); `None`: it names nothing in the document.
fn resolve<'a>(v: &'a Value, rest: &str) -> Option<Option<&'a Value>> {
    if rest.is_empty() {
        return Some(Some(v));
    }
    if let Some(after) = rest.strip_prefix('[') {
        if let (Some(close), Value::Array(items)) = (after.find(']'), v) {
            if let Ok(i) = after[..close].parse::<usize>() {
                let tail = &after[close + 1..];
                let tail = tail.strip_prefix('.').unwrap_or(tail);
                if let Some(found) = items.get(i).and_then(|child| resolve(child, tail)) {
                    return Some(found);
                }
            }
        }
    }
    let obj = v.as_object()?;
    for (k, child) in obj {
        // An empty key would be written `parent.` and never comes right before an index.
        let Some(tail) = rest.strip_prefix(k.as_str()) else {
            continue;
        };
        if k.is_empty() && tail.starts_with('[') {
            continue;
        }
        let next = if tail.starts_with('[') {
            Some(tail)
        } else if tail.is_empty() {
            Some("")
        } else {
            tail.strip_prefix('.')
        };
        if let Some(found) = next.and_then(|n| resolve(child, n)) {
            return Some(found);
        }
    }
    (!rest.contains(['.', '['])).then_some(None)
}

/// Every diagnostic path names something in `doc` (or a field missing from an object in it),
/// and diagnostics that quote a value or describe it are about the value at their path.
fn check_paths(doc: &Value, diags: &tollgate::Diagnostics) -> Result<(), TestCaseError> {
    for d in diags.iter() {
        if d.path.is_empty() || names_unknown_top_level_field(d) {
            continue;
        }
        let found = resolve(doc, &d.path);
        prop_assert!(
            found.is_some(),
            "diagnostic path names nothing in the document: {}",
            d
        );
        let value = found.flatten();
        // The import reads an integer where it reads text (`pattern: 7` is "7").
        let number_text = value
            .and_then(Value::as_f64)
            .filter(|f| f.fract() == 0.0)
            .map(|f| (f as i64).to_string());
        let text = value.and_then(Value::as_str).or(number_text.as_deref());
        let m = d.message.as_str();
        if m.starts_with("pattern '") {
            prop_assert!(
                text.is_some_and(|p| m.starts_with(&format!("pattern '{p}' "))),
                "diagnostic about another rule's pattern ({:?} at its path): {}",
                value,
                d
            );
        }
        if m.ends_with("' is not an HTTP method") {
            prop_assert!(
                text.is_some_and(|t| m == format!("'{t}' is not an HTTP method")),
                "diagnostic about another rule's method ({:?} at its path): {}",
                value,
                d
            );
        }
        let host = |s: &str| {
            let mut buf = [0u8; tollgate::service::MAX_HOST_LEN];
            tollgate::service::normalize_host(s.as_bytes(), &mut buf).map(<[u8]>::to_vec)
        };
        // An absent (or unreadable) `hosts` is ["localhost"], reported at `proxy.hosts` (at
        // `proxy` when the service has no proxy object).
        let host_text = if d.path.ends_with(".hosts") || d.path.ends_with(".proxy") {
            Some("localhost")
        } else {
            text
        };
        if m == "host name is empty" {
            prop_assert!(
                host_text.is_some_and(|t| host(t) == Some(Vec::new())),
                "diagnostic about another host ({:?} at its path): {}",
                value,
                d
            );
        }
        if m.starts_with("host name is longer than") {
            prop_assert!(
                host_text.is_some_and(|t| host(t).is_none()),
                "diagnostic about another host ({:?} at its path): {}",
                value,
                d
            );
        }
        if m.starts_with("the port is ignored") || m.contains("is already served by") {
            prop_assert!(
                host_text.is_some_and(|t| t.contains(':') || m.contains("already served")),
                "diagnostic about another host ({:?} at its path): {}",
                value,
                d
            );
        }
    }
    Ok(())
}

/// Loads `bytes` and checks what must hold for any input. Returns whether it compiled.
fn check_load(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let loaded = tollgate::load(bytes);
    let diags = &loaded.diagnostics;
    let listing = || {
        diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    match &loaded.compiled {
        Some(_) => prop_assert!(
            !diags.has_errors(),
            "compiled despite errors:\n{}",
            listing()
        ),
        None => prop_assert!(
            diags.has_errors(),
            "failed without an error diagnostic:\n{}",
            listing()
        ),
    }
    prop_assert_eq!(loaded.config.is_some(), loaded.compiled.is_some());
    if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
        check_paths(&doc, diags)?;
    }
    {
        let all: Vec<_> = diags.iter().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                prop_assert!(a != b, "duplicate diagnostic: {}", a);
            }
        }
    }
    for d in diags.iter() {
        if names_unknown_top_level_field(d) {
            continue;
        }
        prop_assert!(
            d.path.is_empty() || PATH_PREFIXES.iter().any(|p| d.path.starts_with(p)),
            "diagnostic path {:?} outside the document's known roots: {}",
            d.path,
            d
        );
    }
    let (Some(config), Some(compiled)) = (&loaded.config, &loaded.compiled) else {
        return Ok(false);
    };

    // What `tollgate generate filter` writes must load back, with the same compile-time
    // warnings: those of the 3scale import itself (a missing id, a typo...) are not the
    // FilterConfig's.
    let again = tollgate::load(config.to_json_pretty().as_bytes());
    let mut import_only = tollgate::Diagnostics::new();
    if loaded.format == Some(tollgate::SourceFormat::ThreeScale) {
        if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
            let _ = tollgate::threescale::translate(&doc, &[], &mut import_only);
        }
    }
    let compile_warnings = |d: &tollgate::Diagnostics| -> Vec<String> {
        d.warnings()
            .filter(|w| !import_only.iter().any(|i| i == *w))
            .map(|w| {
                // These name a service or a rule by its path, which differs between the
                // documents.
                if w.message.contains("is already served by") {
                    "<host already served>".to_owned()
                } else if w.message.contains("never runs: the rule at") {
                    "<rule shadowed>".to_owned()
                } else {
                    w.message.clone()
                }
            })
            .collect()
    };
    prop_assert!(
        again.compiled.is_some(),
        "the FilterConfig written for a loaded config does not load:\n{}",
        again
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    prop_assert_eq!(
        compile_warnings(&again.diagnostics),
        compile_warnings(diags),
        "warnings differ after the FilterConfig round trip"
    );

    // A few ordinary requests against every host of the random config.
    let headers: Vec<(&str, &str)> = vec![
        ("authorization", "Bearer tok"),
        ("user_key", "k"),
        ("app_id", "i"),
        ("app_key", "s"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let mut scratch = Scratch::new();
    for svc in &config.services {
        for host in &svc.hosts {
            for (method, target) in [
                ("GET", "/"),
                ("GET", "/v1/a/1.json?user_key=k&app_id=i&app_key=s"),
                ("POST", "/a+b/%C3%A9?a_param=1"),
                ("DELETE", "/x/../y/./z"),
            ] {
                let req = RequestView {
                    method: method.as_bytes(),
                    authority: host.as_bytes(),
                    target: target.as_bytes(),
                    headers: &headers,
                    body: Some(&b"user_key=b&speed=2x"[..]),
                };
                check_decision(compiled, &req, &mut scratch, None)?;
            }
        }
    }
    Ok(true)
}

/// How wild the values of a generated 3scale document are.
#[derive(Debug, Clone, Copy)]
enum Noise {
    /// Plausible values only; optional fields may be absent. Such documents mostly compile.
    Clean,
    /// Any field may be absent, null, odd (plausible but invalid) or of any JSON type.
    Noisy,
    /// Services that identify themselves properly, with a noisy proxy: the translation keeps
    /// them, and compile() checks whatever of the proxy could be read.
    InsideProxy,
}

type FieldStrategy = BoxedStrategy<Option<(String, Value)>>;

fn field(
    key: &str,
    noise: Noise,
    optional: bool,
    good: BoxedStrategy<Value>,
    odd: BoxedStrategy<Value>,
) -> FieldStrategy {
    let key = key.to_owned();
    let k = key.clone();
    let present = move |s: BoxedStrategy<Value>| {
        let k = k.clone();
        s.prop_map(move |v| Some((k.clone(), v)))
    };
    match noise {
        Noise::Clean if optional => prop_oneof![1 => Just(None), 4 => present(good)].boxed(),
        Noise::Clean => present(good).boxed(),
        Noise::Noisy | Noise::InsideProxy => prop_oneof![
            1 => Just(None),
            1 => Just(Some((key, Value::Null))),
            5 => present(good),
            3 => present(odd),
            1 => present(small_json()),
        ]
        .boxed(),
    }
}

fn object(fields: Vec<FieldStrategy>) -> BoxedStrategy<Value> {
    fields
        .prop_map(|kvs| Value::Object(kvs.into_iter().flatten().collect::<Map<_, _>>()))
        .boxed()
}

fn values(v: Vec<Value>) -> BoxedStrategy<Value> {
    select(v).boxed()
}

fn string(re: &'static str) -> BoxedStrategy<Value> {
    re.prop_map(Value::String).boxed()
}

const PATTERN_PIECES: &[&str] = &[
    "/", "/", "/", "a", "b", "v1", "words", "{id}", "{word}", "{x/y}", "{", "}", "{}", "{}}", "$",
    "$$", "?", "?q={v}", "+", "*", "(", ")", "[", "]", "\\", ".", ".json", "%", "%2F", " ", "é",
    "\n", "|", "^", "{a}{b}", "\\{", "\\.", "(x|y)", "[a-z]", "{2}", "//", "\u{0}", "\t", "~", "@",
    "{\n}", "\\Q", "(?",
];

/// Mapping-rule patterns: mostly regex-ish soup starting with '/', sometimes anything.
fn pattern() -> BoxedStrategy<String> {
    prop_oneof![
        6 => vec(select(PATTERN_PIECES), 0..10).prop_map(|p| format!("/{}", p.concat())),
        2 => vec(select(PATTERN_PIECES), 0..10).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
    .boxed()
}

fn host_good() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,8}(\\.[a-z]{1,5}){0,2}",
        1 => "[A-Za-z]{1,6}\\.example(:[0-9]{1,5})?\\.?",
        1 => Just("[::1]".to_owned()),
        1 => Just("localhost".to_owned()),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn host_odd() -> BoxedStrategy<Value> {
    prop_oneof![
        values(vec![
            json!(""),
            json!("."),
            json!(":80"),
            json!("[::1]:8080"),
            json!("é.example"),
            json!("a b"),
            json!("a".repeat(300)),
            json!(5),
            json!(null),
        ]),
        any::<String>().prop_map(Value::String),
    ]
    .boxed()
}

fn url_good() -> BoxedStrategy<Value> {
    values(vec![
        json!("http://up.example"),
        json!("https://api.example:8443/base/"),
        json!("http://127.0.0.1:8081"),
        json!("http://[::1]:9000/x?y=1"),
        json!("HTTPS://Echo-API.3scale.net:443"),
        json!(""),
    ])
}

fn url_odd() -> BoxedStrategy<Value> {
    prop_oneof![
        values(vec![
            json!("ftp://x"),
            json!("http://"),
            json!("http://u@h"),
            json!("http://h:0"),
            json!("http://h:99999"),
            json!("http://h/a b"),
            json!("up.example"),
            json!("http://h/#f"),
            json!("http://[::1"),
            json!("http://[]"),
            json!("http://[zz]:1"),
            json!("http://h:"),
            json!("http://é/"),
        ]),
        "(https?|ftp)://[a-z@:\\[\\]0-9./?#% é]{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
    .boxed()
}

fn header_value_odd() -> BoxedStrategy<Value> {
    values(vec![
        json!("a\r\nb"),
        json!("x\u{0}y"),
        json!("\n"),
        json!(""),
    ])
}

fn status_good() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (200u64..=599).prop_map(Value::from),
        1 => (200u64..=599).prop_map(|s| Value::String(s.to_string())),
    ]
    .boxed()
}

fn status_odd() -> BoxedStrategy<Value> {
    values(vec![
        json!(0),
        json!(199),
        json!(600),
        json!(70000),
        json!(-1),
        json!(404.0),
        json!(404.5),
        json!("abc"),
        json!(""),
        json!(" 404 "),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("99999999999999999999"),
    ])
}

fn querystring_good() -> BoxedStrategy<Value> {
    prop_oneof![
        vec(
            (
                select(&["a_param", "user_key", "speed", "", "é", "a b"][..]),
                select(&["1", "{x}", "a b", "", "2x", "{}", "%41", "{-_}"][..]),
            ),
            0..3,
        )
        .prop_map(|kv| {
            Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                    .collect(),
            )
        }),
        Just(json!([])),
    ]
    .boxed()
}

fn mapping_rule(noise: Noise) -> BoxedStrategy<Value> {
    object(vec![
        field(
            "http_method",
            noise,
            false,
            values(vec![
                json!("GET"),
                json!("POST"),
                json!("PUT"),
                json!("DELETE"),
                json!("PATCH"),
                json!("ANY"),
            ]),
            values(vec![
                json!("get"),
                json!(""),
                json!("G E T"),
                json!("GÉT"),
                json!("a\nb"),
            ]),
        ),
        field(
            "pattern",
            noise,
            false,
            pattern().prop_map(Value::String).boxed(),
            any::<String>().prop_map(Value::String).boxed(),
        ),
        field(
            "metric_system_name",
            noise,
            false,
            prop_oneof![
                values(vec![
                    json!("hits"),
                    json!("a b/c"),
                    json!("usage[x]"),
                    json!("é"),
                    json!("x&y=z#1"),
                ]),
                string("[a-z_]{1,8}"),
            ]
            .boxed(),
            values(vec![json!(""), json!(5)]),
        ),
        field(
            "delta",
            noise,
            true,
            values(vec![json!(1), json!(2), json!(3), json!(0), json!(5.0)]),
            values(vec![
                // APIcast fails counting with a string.
                json!("3"),
                json!(-1),
                json!(1.5),
                json!("x"),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(1e16),
                json!(""),
                json!(" 7 "),
                json!(-9.0e15),
            ]),
        ),
        field(
            "querystring_parameters",
            noise,
            true,
            querystring_good(),
            values(vec![
                json!({"a": 1}),
                json!({"a": null}),
                json!([1]),
                json!("x"),
            ]),
        ),
        field(
            "last",
            noise,
            true,
            values(vec![json!(true), json!(false)]),
            values(vec![json!("true"), json!(1)]),
        ),
    ])
}

fn proxy(noise: Noise) -> BoxedStrategy<Value> {
    let mut fields = vec![
        field(
            "hosts",
            noise,
            true,
            vec(host_good(), 0..3).prop_map(Value::Array).boxed(),
            vec(prop_oneof![host_good(), host_odd()], 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        field("api_backend", noise, true, url_good(), url_odd()),
        field(
            "backend",
            noise,
            true,
            object(vec![
                field("endpoint", noise, true, url_good(), url_odd()),
                field(
                    "host",
                    noise,
                    true,
                    values(vec![json!("su1.3scale.net"), json!("backend:3000")]),
                    header_value_odd(),
                ),
            ]),
            values(vec![json!("x"), json!([])]),
        ),
        field(
            "credentials_location",
            noise,
            true,
            values(vec![
                json!("query"),
                json!("headers"),
                json!("authorization"),
            ]),
            values(vec![json!("Query"), json!("body"), json!("")]),
        ),
        field(
            "authentication_method",
            noise,
            true,
            values(vec![json!("1"), json!("2"), json!("oauth")]),
            values(vec![json!("oidc")]),
        ),
        field(
            "secret_token",
            noise,
            true,
            string("[A-Za-z0-9_]{0,20}"),
            header_value_odd(),
        ),
        field(
            "hostname_rewrite",
            noise,
            true,
            values(vec![json!("api.internal"), json!("")]),
            header_value_odd(),
        ),
        field(
            "policy_chain",
            noise,
            true,
            vec(
                values(vec![
                    json!({"name": "apicast"}),
                    json!({"name": "apicast.policy.apicast", "configuration": {}}),
                    json!({"name": "logging"}),
                    json!({"name": "apicast.policy.cors", "enabled": false}),
                ]),
                0..3,
            )
            .prop_map(Value::Array)
            .boxed(),
            values(vec![
                json!([1, {}, {"name": 5}, null]),
                // Policies tollgate cannot run (errors unless accepted).
                json!([{"name": "cors"}, {"name": "apicast.policy.headers"}]),
                json!("x"),
                json!({}),
            ]),
        ),
        field(
            "proxy_rules",
            noise,
            true,
            vec(mapping_rule(noise), 0..6)
                .prop_map(Value::Array)
                .boxed(),
            prop_oneof![
                values(vec![json!("x"), json!({}), json!([1, null, "r"])]),
                vec(mapping_rule(Noise::Noisy), 1..4).prop_map(Value::Array),
            ]
            .boxed(),
        ),
    ];
    for name in ["auth_user_key", "auth_app_id", "auth_app_key"] {
        fields.push(field(
            name,
            noise,
            true,
            values(vec![
                json!("user_key"),
                json!("X-Api-Key"),
                json!("API_User"),
                json!("app-id"),
            ]),
            values(vec![
                json!(""),
                json!("a b"),
                json!("é"),
                json!("a&b"),
                json!("x=y"),
            ]),
        ));
    }
    for kind in ["auth_missing", "auth_failed", "no_match", "limits_exceeded"] {
        fields.push(field(
            &format!("error_{kind}"),
            noise,
            true,
            any::<String>().prop_map(Value::String).boxed(),
            values(vec![json!(""), json!(1)]),
        ));
        fields.push(field(
            &format!("error_status_{kind}"),
            noise,
            true,
            status_good(),
            status_odd(),
        ));
        fields.push(field(
            &format!("error_headers_{kind}"),
            noise,
            true,
            values(vec![
                json!("text/plain"),
                json!("application/json; charset=utf-8"),
            ]),
            header_value_odd(),
        ));
    }
    object(fields)
}

fn service(noise: Noise) -> BoxedStrategy<Value> {
    let proxy_noise = noise;
    let noise = match noise {
        Noise::InsideProxy => Noise::Clean,
        other => other,
    };
    object(vec![
        field(
            "id",
            noise,
            false,
            prop_oneof![
                (1u64..1_000_000).prop_map(Value::from),
                "[0-9]{1,6}".prop_map(Value::String),
            ]
            .boxed(),
            values(vec![
                json!(""),
                json!("x y"),
                json!(1.5),
                json!(-3),
                json!(u64::MAX),
                json!(1),
            ]),
        ),
        field(
            "system_name",
            noise,
            true,
            string("[a-z_ é]{0,10}"),
            values(vec![json!(1)]),
        ),
        field(
            "backend_version",
            noise,
            false,
            values(vec![
                json!("1"),
                json!("2"),
                json!("oauth"),
                json!(1),
                json!(2),
            ]),
            values(vec![
                json!("3"),
                json!("OAuth"),
                json!(0),
                json!(2.0),
                json!(""),
                json!(true),
            ]),
        ),
        field(
            "backend_authentication_type",
            noise,
            false,
            values(vec![json!("service_token"), json!("provider_key")]),
            values(vec![json!(""), json!("token")]),
        ),
        field(
            "backend_authentication_value",
            noise,
            false,
            prop_oneof![
                string("[a-z0-9]{1,12}"),
                values(vec![json!("tok en+/=é&#%")]),
            ]
            .boxed(),
            values(vec![json!("")]),
        ),
        field(
            "proxy",
            noise,
            false,
            proxy(proxy_noise),
            values(vec![json!("proxy"), json!([]), json!(1)]),
        ),
    ])
}

/// A 3scale document in one of its three shapes.
fn threescale_doc(noise: Noise) -> BoxedStrategy<Value> {
    let services = vec(service(noise), 0..4);
    let provider_key = proptest::option::of(prop_oneof![string("[a-z0-9]{0,8}"), small_json()]);
    (0u8..3, services, provider_key)
        .prop_map(|(shape, services, provider_key)| {
            let mut root = match shape {
                0 => json!({ "services": services }),
                1 => match services.into_iter().next() {
                    Some(s) => json!({"proxy_config": {"id": 7, "version": 1, "content": s}}),
                    None => json!({"proxy_config": {}}),
                },
                _ => json!({
                    "proxy_configs": services
                        .into_iter()
                        .map(|s| json!({"proxy_config": {"content": s}}))
                        .collect::<Vec<_>>()
                }),
            };
            if let (Some(pk), Value::Object(o)) = (provider_key, &mut root) {
                o.insert("provider_key".into(), pk);
            }
            root
        })
        .boxed()
}

/// An edit of a JSON document at the node reached by following child indices.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    RemoveChild(usize),
    Insert(String, Value),
}

fn descend<'a>(v: &'a mut Value, path: &[usize]) -> &'a mut Value {
    let Some((&i, rest)) = path.split_first() else {
        return v;
    };
    let n = match &*v {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    if n == 0 {
        return v;
    }
    match v {
        Value::Array(a) => descend(&mut a[i % n], rest),
        Value::Object(o) => match o.values_mut().nth(i % n) {
            Some(child) => descend(child, rest),
            None => unreachable!(),
        },
        other => other,
    }
}

fn apply(v: &mut Value, path: &[usize], edit: Edit) {
    let node = descend(v, path);
    match (edit, node) {
        (Edit::RemoveChild(i), Value::Array(a)) if !a.is_empty() => {
            let n = a.len();
            a.remove(i % n);
        }
        (Edit::RemoveChild(i), Value::Object(o)) if !o.is_empty() => {
            let n = o.len();
            if let Some(k) = o.keys().nth(i % n).cloned() {
                o.remove(&k);
            }
        }
        (Edit::RemoveChild(_), node) => *node = Value::Null,
        (Edit::Insert(k, x), Value::Object(o)) => {
            o.insert(k, x);
        }
        (Edit::Insert(_, x), Value::Array(a)) => a.push(x),
        (Edit::Insert(_, x) | Edit::Replace(x), node) => *node = x,
    }
}

fn edits() -> impl Strategy<Value = Vec<(Vec<usize>, Edit)>> {
    let edit = prop_oneof![
        small_json().prop_map(Edit::Replace),
        any::<usize>().prop_map(Edit::RemoveChild),
        (json_key(), small_json()).prop_map(|(k, v)| Edit::Insert(k, v)),
    ];
    vec((vec(any::<usize>(), 0..7), edit), 1..4)
}

/// The FilterConfig a clean 3scale document translates to, when it loads.
fn as_filter_config(doc: &Value) -> Option<Value> {
    let bytes = serde_json::to_vec(doc).ok()?;
    let loaded = tollgate::load(&bytes);
    let text = loaded.config?.to_json_pretty();
    serde_json::from_str(&text).ok()
}

/// Syntactically damaged versions of a document: cut short, or with bytes overwritten.
fn damaged(doc: Value, cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
    for &(at, b) in flips {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] = b;
        }
    }
    if cut.is_multiple_of(3) && !bytes.is_empty() {
        let n = bytes.len();
        bytes.truncate(cut % n);
    }
    bytes
}

const JSON_SOUP: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"services\"",
    "\"proxy_config\"",
    "\"proxy_configs\"",
    "\"content\"",
    "\"kind\"",
    "\"proxy\"",
    "\"hosts\"",
    "\"proxy_rules\"",
    "\"pattern\"",
    "null",
    "true",
    "1",
    "-0",
    "1e999",
    "2.5",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é\"",
    " ",
    "\n",
    "\u{feff}",
];

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn load_never_panics_on_arbitrary_bytes(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..4096),
            vec(select(JSON_SOUP), 0..64).prop_map(|p| p.concat().into_bytes()),
        ]
    ) {
        check_load(&bytes)?;
    }
}

proptest! {
    #![proptest_config(cfg(384))]

    #[test]
    fn load_never_panics_on_arbitrary_json(doc in arb_json(5, 96)) {
        let bytes = serde_json::to_vec(&doc).unwrap();
        check_load(&bytes)?;
        // The same document as each of the three 3scale shapes.
        for wrapped in [
            json!({ "services": [doc.clone()] }),
            json!({ "proxy_config": { "content": doc.clone() } }),
            json!({ "proxy_configs": [{ "proxy_config": { "content": doc.clone() } }] }),
            json!({ "services": [{ "id": 1, "backend_version": "1", "proxy": doc.clone() }] }),
        ] {
            check_load(&serde_json::to_vec(&wrapped).unwrap())?;
        }
    }
}

#[test]
fn load_never_panics_on_near_valid_threescale_configs() {
    let stats = [
        LoadStats::default(),
        LoadStats::default(),
        LoadStats::default(),
    ];
    let strategy = prop_oneof![
        threescale_doc(Noise::Clean).prop_map(|d| (0usize, d)),
        threescale_doc(Noise::Noisy).prop_map(|d| (1usize, d)),
        threescale_doc(Noise::InsideProxy).prop_map(|d| (2usize, d)),
    ];
    run(1024, strategy, |(which, doc)| {
        let bytes = serde_json::to_vec(&doc).unwrap();
        let compiled = check_load(&bytes)?;
        stats[which].count(compiled);
        Ok(())
    });
    let (clean, noisy) = (&stats[0], &stats[1]);
    // Clean documents should often compile (about half do since the import refuses what
    // tollgate cannot run, so the bound leaves room for chance); noisy ones mostly not.
    assert!(
        clean.compiled.get() * 3 >= clean.cases.get(),
        "only {}/{} clean documents compiled: the generator no longer reaches compile()",
        clean.compiled.get(),
        clean.cases.get()
    );
    assert!(
        noisy.compiled.get() < noisy.cases.get(),
        "every noisy document compiled"
    );
}

#[test]
fn load_never_panics_on_edited_documents() {
    let stats = LoadStats::default();
    // Clean 3scale documents and the FilterConfigs they translate to, then edited at random.
    let base = threescale_doc(Noise::Clean).prop_flat_map(|doc| {
        let filter = as_filter_config(&doc);
        let docs = match filter {
            Some(f) => vec![doc, f],
            None => vec![doc],
        };
        select(docs)
    });
    let strategy = (
        base,
        edits(),
        any::<usize>(),
        vec((any::<usize>(), any::<u8>()), 0..3),
    );
    run(512, strategy, |(mut doc, edits, cut, flips)| {
        for (path, edit) in edits {
            apply(&mut doc, &path, edit);
        }
        let compiled = check_load(&serde_json::to_vec(&doc).unwrap())?;
        stats.count(compiled);
        check_load(&damaged(doc, cut, &flips))?;
        Ok(())
    });
    assert!(stats.compiled.get() > 0, "no edited document compiled");
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    for depth in [127, 128, 129, 100_000] {
        for (open, close) in [("[", "]"), ("{\"services\":", "}")] {
            let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let loaded = tollgate::load(doc.as_bytes());
            assert!(loaded.compiled.is_none());
            assert!(loaded.diagnostics.has_errors());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property 2: Compiled::decide never panics, and what it hands on is well-formed
// ---------------------------------------------------------------------------------------------

const CONFIG_V1_QUERY: &str = r#"{"services":[{
    "id": "1", "backend_version": "1",
    "backend_authentication_type": "service_token", "backend_authentication_value": "st-1",
    "proxy": {
        "hosts": ["a.example", "A2.Example:8080"],
        "api_backend": "http://a.upstream:8080/base",
        "proxy_rules": [
            {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1},
            {"http_method": "POST", "pattern": "/v1/{id}.json$", "metric_system_name": "writes", "delta": 2},
            {"http_method": "ANY", "pattern": "/a", "metric_system_name": "a b/c[é]#&=+", "delta": 1}
        ]
    }
}]}"#;

const CONFIG_V2_HEADERS: &str = r#"{"proxy_config": {"content": {
    "id": 2, "backend_version": "2",
    "backend_authentication_type": "provider_key", "backend_authentication_value": "pk &=+#%é",
    "proxy": {
        "hosts": ["b.example"],
        "credentials_location": "headers",
        "auth_app_id": "X-App-Id", "auth_app_key": "X-App-Key",
        "error_status_auth_missing": 403, "error_auth_missing": "nope",
        "error_headers_auth_missing": "application/json",
        "proxy_rules": [
            {"http_method": "ANY", "pattern": "/{x}", "metric_system_name": "hits", "delta": 1},
            {"http_method": "GET", "pattern": "/", "metric_system_name": "zero", "delta": 0}
        ]
    }
}}}"#;

const CONFIG_OAUTH: &str = r#"{"services":[{
    "id": 3, "backend_version": "oauth",
    "backend_authentication_type": "service_token", "backend_authentication_value": "st-3",
    "proxy": {
        "hosts": ["c.example"],
        "credentials_location": "authorization",
        "proxy_rules": [
            {"http_method": "ANY", "pattern": "/", "metric_system_name": "hits", "delta": 1}
        ]
    }
}]}"#;

/// Three services sharing many rules: placeholders, regexes, query conditions, `last`, odd
/// metrics, an uncompilable regex, an empty and a relative pattern (shared with the fuzz
/// targets).
fn config_many_rules() -> String {
    include_str!("../testdata/many-rules.json").to_owned()
}

fn fixed_configs() -> Vec<Compiled> {
    let docs = [
        CONFIG_V1_QUERY.to_owned(),
        CONFIG_V2_HEADERS.to_owned(),
        CONFIG_OAUTH.to_owned(),
        config_many_rules(),
    ];
    docs.iter()
        .map(|doc| {
            let loaded = tollgate::load(doc.as_bytes());
            let listing: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
            loaded
                .compiled
                .unwrap_or_else(|| panic!("fixture does not compile: {listing:#?}"))
        })
        .collect()
}

const HOSTS: &[&str] = &[
    "a.example",
    "A.EXAMPLE:443",
    "a.example.",
    "a2.example:8080",
    "b.example",
    "c.example",
    "d1.example",
    "d2.example",
    "D3.Example",
    "[::1]:80",
    "[",
    "",
];

fn authority() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => select(HOSTS).prop_map(|h| h.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..300),
    ]
    .boxed()
}

fn method() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "ANY", ""][..])
            .prop_map(|m| m.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..8),
    ]
    .boxed()
}

const TARGET_PIECES: &[&[u8]] = &[
    b"/",
    b"/",
    b"/",
    b"//",
    b"a",
    b"b",
    b"x",
    b"1",
    b"v1",
    b"words",
    b"foo",
    b"form",
    b"last",
    b"q",
    b"caf",
    b".json",
    b".",
    b"..",
    b"/..",
    b"/.",
    b"%2F",
    b"%2f",
    b"%2E",
    b"%2e",
    b"%2E%2E",
    b"%00",
    b"%",
    b"%4",
    b"%zz",
    b"%C3%A9",
    b"%c3%a9",
    "é".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\x80",
    b"?",
    b"#",
    b"+",
    b"&",
    b"=",
    b"%20",
    b" ",
    b"\t",
    b"[",
    b"]",
    b"{",
    b"}",
    b"~",
    b"!",
    b"$",
    b"*",
    b"(",
    b")",
    b"%25",
    b"%23",
    b"%3F",
    b"\\",
    b"\x7f",
    b"?user_key=k1",
    b"?user_key=a%2Bb+c%26d",
    b"&app_id=i",
    b"&app_key=k",
    b"?api_user=me&api_key=s",
    b"&API_User=U",
    b"access_token=t",
    b"?a_param=1",
    b"&speed=2x",
    b"&n=a+b",
    b"&m",
    b"#frag",
    b"?",
    b"&user_key=",
];

fn target() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..200),
        6 => (
            prop_oneof![9 => Just(&b"/"[..]), 1 => Just(&b""[..]), 1 => Just(&b"*"[..])],
            vec(select(TARGET_PIECES), 0..16),
        )
            .prop_map(|(first, pieces)| [first, pieces.concat().as_slice()].concat()),
    ]
    .boxed()
}

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "Authorization",
    "AUTHORIZATION",
    "content-type",
    "Content-Type",
    "user_key",
    "User-Key",
    "app_id",
    "app_key",
    "X-App-Id",
    "x_app_key",
    "x-api-key",
    "access_token",
    "Access-Token",
    "api_user",
    "api-key",
];

fn header_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..40),
        2 => (vec(any::<u8>(), 0..12), vec(any::<u8>(), 0..12))
            .prop_map(|(u, p)| format!("Basic {}", b64(&[&u[..], &b":"[..], &p[..]].concat())).into_bytes()),
        1 => vec(any::<u8>(), 0..16).prop_map(|b| format!("Basic {}", b64(&b)).into_bytes()),
        1 => "(Basic|basic|Bearer|bearer|Digest)[ \t]{0,2}[A-Za-z0-9+/=:]{0,24}"
            .prop_map(String::into_bytes),
        2 => vec(any::<u8>(), 0..24).prop_map(|b| [&b"Bearer "[..], b.as_slice()].concat()),
        1 => select(&[
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            "text/plain",
        ][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => "[a-z0-9]{0,8}".prop_map(String::into_bytes),
    ]
    .boxed()
}

fn headers() -> BoxedStrategy<Vec<(Vec<u8>, Vec<u8>)>> {
    vec(
        (
            prop_oneof![
                5 => select(HEADER_NAMES).prop_map(|n| n.as_bytes().to_vec()),
                1 => vec(any::<u8>(), 0..12),
            ],
            header_value(),
        ),
        0..6,
    )
    .boxed()
}

const BODY_PIECES: &[&str] = &[
    "user_key=k",
    "user_key=a%2Bb+c",
    "app_id=i",
    "app_key=k",
    "access_token=t",
    "api_user=u",
    "api_key=k%21",
    "speed=2x",
    "a_param=1",
    "=x",
    "",
    "a",
    "%41=%4",
    "+",
    "&",
    "n=a+b",
    "m",
];

fn body() -> BoxedStrategy<Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        vec(any::<u8>(), 0..64),
        vec(select(BODY_PIECES), 0..6).prop_map(|p| p.join("&").into_bytes()),
    ])
    .boxed()
}

#[derive(Default)]
struct DecideStats {
    decisions: Cell<usize>,
    authorized: Cell<usize>,
    bad_request: Cell<usize>,
}

/// Decides `req` and checks the decision, what `response()` says about it and, for an
/// authorization, the authrep request target.
fn check_decision(
    compiled: &Compiled,
    req: &RequestView<'_>,
    scratch: &mut Scratch,
    stats: Option<&DecideStats>,
) -> Result<(), TestCaseError> {
    let decision = compiled.decide(req, tollgate::time::Timestamp::default(), scratch);
    let response = decision.response();
    if let Some(stats) = stats {
        stats.decisions.set(stats.decisions.get() + 1);
    }
    match decision.verdict {
        Verdict::Authorize => {
            prop_assert!(response.is_none());
            if let Some(stats) = stats {
                stats.authorized.set(stats.authorized.get() + 1);
            }
            let service = decision
                .service
                .expect("an authorization names its service");
            let credentials = decision
                .credentials
                .as_ref()
                .expect("an authorization carries credentials");
            prop_assert!(!scratch.usage().is_empty());
            let mut out = String::new();
            service.write_authrep(credentials, scratch.usage(), &mut out);
            let b = out.as_bytes();
            prop_assert!(out.is_ascii(), "authrep target is not ASCII: {:?}", out);
            prop_assert!(
                !out.contains(' ') && !out.contains('#'),
                "authrep target has a space or '#': {:?}",
                out
            );
            prop_assert!(
                b.iter().all(|c| c.is_ascii_graphic()),
                "authrep target has a control character: {:?}",
                out
            );
            prop_assert!(
                escapes_well_formed(b),
                "authrep target has a malformed escape: {:?}",
                out
            );
            prop_assert!(out.starts_with("/transactions/"));
        }
        Verdict::Forward => {
            prop_assert!(response.is_none());
            let service = decision.service.expect("a forward names its service");
            prop_assert!(!service.authorizes());
            prop_assert!(decision.credentials.is_none());
        }
        Verdict::Deny(reason) => {
            let r = response.expect("a denial has a response");
            prop_assert!((200..=599).contains(&r.status));
            match reason {
                DenyReason::BadRequest(_) => {
                    if let Some(stats) = stats {
                        stats.bad_request.set(stats.bad_request.get() + 1);
                    }
                    prop_assert_eq!(r.status, 400);
                }
                DenyReason::MatchLimit => prop_assert_eq!(r.status, 414),
                DenyReason::UriTooLong => {
                    prop_assert_eq!(r.status, 414);
                    let line = tollgate::decision::request_line_len(req.method, req.target);
                    prop_assert!(line > compiled.request_line_max_bytes());
                }
                DenyReason::UnknownService => prop_assert_eq!(r.status, 404),
                DenyReason::AuthMissing => prop_assert!(decision.credentials.is_none()),
                DenyReason::NoMatch => prop_assert!(scratch.usage().is_empty()),
            }
        }
    }
    if !matches!(
        decision.verdict,
        Verdict::Deny(DenyReason::BadRequest(_) | DenyReason::UriTooLong)
    ) {
        prop_assert!(
            scratch.matched_path().is_ascii(),
            "matched path is not ASCII: {:?}",
            show(scratch.matched_path())
        );
    }
    if let Some(service) = decision.service {
        for &id in scratch.matched_rules() {
            prop_assert!(id.as_usize() < service.rules().len());
        }
        for w in scratch.usage().windows(2) {
            prop_assert!(w[0].0 < w[1].0, "usage not sorted: {:?}", scratch.usage());
        }
        for &(metric, total) in scratch.usage() {
            prop_assert!(total > 0);
            prop_assert!(metric.as_usize() < service.metrics().len());
        }
    }
    Ok(())
}

type Request = (
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<(Vec<u8>, Vec<u8>)>,
    Option<Vec<u8>>,
);

const CLEAN_PATH_PIECES: &[&str] = &[
    "/",
    "a",
    "b",
    "v1",
    "words",
    "w",
    "1",
    ".json",
    "foo",
    "form",
    "last",
    "q",
    "x",
    "y",
    "ab",
    "caf%C3%A9",
    "x%2Fy",
    "%7B",
    "~",
    "!",
    "(",
    ")",
    "+",
];

const QUERY_PIECES: &[&str] = &[
    "user_key=k1",
    "user_key=a%2Bb+c%26d",
    "USER_KEY=K",
    "app_id=i",
    "app_key=k",
    "api_user=me",
    "API_USER=Me",
    "api_key=s%21",
    "access_token=t",
    "a_param=1",
    "speed=2x",
    "n=a+b",
    "m",
    "",
];

/// Requests that often pass: a known host, a clean path, and the credentials that host's
/// service looks for (with arbitrary values), plus noise.
fn plausible_request() -> BoxedStrategy<Request> {
    let value = prop_oneof![
        Just(b"k".to_vec()),
        Just(b"Bearer t0k".to_vec()),
        Just(format!("Basic {}", b64(b"id:key")).into_bytes()),
        Just(b"application/x-www-form-urlencoded".to_vec()),
        vec(any::<u8>(), 0..8),
    ];
    (
        0usize..6,
        select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"][..]),
        vec(select(CLEAN_PATH_PIECES), 0..6),
        vec(select(QUERY_PIECES), 0..3),
        "[A-Za-z0-9%+~.!*'()=:@/$,;-]{0,10}",
        vec(any::<u8>(), 0..12),
        vec(any::<u8>(), 0..12),
        vec(
            (
                select(HEADER_NAMES).prop_map(|n| n.as_bytes().to_vec()),
                value,
            ),
            0..3,
        ),
        proptest::option::of(vec(select(BODY_PIECES), 0..4).prop_map(|p| p.join("&").into_bytes())),
    )
        .prop_map(
            |(recipe, method, path, query, token, h1, h2, mut headers, body)| {
                let mut query: Vec<String> = query.into_iter().map(str::to_owned).collect();
                let host = match recipe {
                    0 => {
                        query.push(format!("user_key={token}"));
                        "a.example"
                    }
                    1 => {
                        headers.push((b"X-App-Id".to_vec(), h1));
                        headers.push((b"x_app_key".to_vec(), h2));
                        "b.example"
                    }
                    2 => {
                        headers.push((
                            b"Authorization".to_vec(),
                            [&b"Bearer "[..], &h1[..]].concat(),
                        ));
                        "c.example"
                    }
                    3 => {
                        let basic =
                            format!("Basic {}", b64(&[&h1[..], &b":"[..], &h2[..]].concat()));
                        headers.push((b"authorization".to_vec(), basic.into_bytes()));
                        "d1.example"
                    }
                    4 => {
                        query.push(format!("api_user={token}"));
                        query.push(format!("API_KEY={token}"));
                        "d2.example"
                    }
                    _ => {
                        headers.push((b"User-Key".to_vec(), h1));
                        "d3.example"
                    }
                };
                let target = format!("/{}?{}", path.concat(), query.join("&"));
                (
                    method.as_bytes().to_vec(),
                    host.as_bytes().to_vec(),
                    target.into_bytes(),
                    headers,
                    body,
                )
            },
        )
        .boxed()
}

fn wild_request() -> BoxedStrategy<Request> {
    (method(), authority(), target(), headers(), body()).boxed()
}

#[test]
fn decide_never_panics() {
    let configs = fixed_configs();
    let stats = DecideStats::default();
    let strategy = prop_oneof![wild_request(), plausible_request()];
    run(
        2500,
        strategy,
        |(method, authority, target, headers, body)| {
            let req = RequestView {
                method: &method,
                authority: &authority,
                target: &target,
                headers: &headers,
                body: body.as_deref(),
            };
            // One scratch across configs, as the filter reuses one across requests.
            let mut scratch = Scratch::new();
            for compiled in &configs {
                check_decision(compiled, &req, &mut scratch, Some(&stats))?;
            }
            Ok(())
        },
    );
    let (n, ok, bad) = (
        stats.decisions.get(),
        stats.authorized.get(),
        stats.bad_request.get(),
    );
    // Each request meets every config but has the host of at most one.
    let requests = n / configs.len();
    assert!(
        ok * 10 >= requests,
        "only {ok} of {requests} requests authorized: the generator no longer reaches the rules"
    );
    assert!(bad * 2 <= n, "{bad}/{n} decisions were bad requests");
}

// ---------------------------------------------------------------------------------------------
// Property 3: the lower-level readers
// ---------------------------------------------------------------------------------------------

fn pathish() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..64),
        3 => vec(select(TARGET_PIECES), 0..12).prop_map(|p| [&b"/"[..], p.concat().as_slice()].concat()),
    ]
    .boxed()
}

/// NGINX's `$uri` + APIcast's `escape_uri`, written the other way round from the library: decode
/// the whole path first, then resolve it segment by segment. `Err(())` for any 400.
fn nginx_uri_model(target: &[u8]) -> Result<Vec<u8>, ()> {
    if target.first() != Some(&b'/') || target.iter().any(|&b| is_control(b)) {
        return Err(());
    }
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let raw = &target[..end];
    // (byte, separator?): only a '/' sent raw or as %2F separates segments.
    let mut chars: Vec<(u8, bool)> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(())?;
            let text = std::str::from_utf8(hex).map_err(|_| ())?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            let byte = u8::from_str_radix(text, 16).map_err(|_| ())?;
            if byte == 0 {
                return Err(());
            }
            // A decoded '%', '#' or '?' is an ordinary character; anything else counts as sent.
            chars.push((byte, byte == b'/'));
            i += 3;
        } else {
            chars.push((raw[i], raw[i] == b'/'));
            i += 1;
        }
    }
    let segments: Vec<Vec<u8>> = chars
        .split(|&(_, sep)| sep)
        .map(|s| s.iter().map(|&(b, _)| b).collect())
        .collect();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut trailing_slash = false;
    let count = segments.len();
    for (k, seg) in segments.into_iter().enumerate().skip(1) {
        let last = k + 1 == count;
        match &seg[..] {
            b"" | b"." => {}
            b".." => {
                stack.pop().ok_or(())?;
            }
            _ => stack.push(seg.clone()),
        }
        if last {
            trailing_slash = matches!(&seg[..], b"" | b"." | b"..");
        }
    }
    let mut decoded = b"/".to_vec();
    decoded.extend(stack.join(&b'/'));
    if trailing_slash && !stack.is_empty() {
        decoded.push(b'/');
    }
    let mut out = Vec::new();
    for b in decoded {
        if b <= 0x20 || b >= 0x7f || br##""#%<>?\^`{|}"##.contains(&b) {
            out.extend(format!("%{b:02X}").bytes());
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn is_control(b: u8) -> bool {
    b <= 0x20 || b == 0x7f
}

proptest! {
    #![proptest_config(cfg(2000))]

    #[test]
    fn normalize_keeps_its_invariants(target in pathish()) {
        let mut buffers = PathBuffers::default();
        let result = path::normalize(&target, &mut buffers).map(<[u8]>::to_vec);
        if target.first() != Some(&b'/') {
            prop_assert_eq!(result, Err(BadPath::NotAbsolute));
            return Ok(());
        }
        if target.iter().any(|&b| is_control(b)) {
            prop_assert_eq!(result, Err(BadPath::ControlCharacter));
            return Ok(());
        }
        let Ok(out) = result else { return Ok(()) };
        prop_assert!(out.starts_with(b"/"), "{:?}", show(&out));
        prop_assert!(out.is_ascii(), "{:?}", show(&out));
        prop_assert!(!out.iter().any(|&b| is_control(b)), "{:?}", show(&out));
        prop_assert!(!contains(&out, b"//"), "{:?}", show(&out));
        prop_assert!(!contains(&out, b"/./"), "{:?}", show(&out));
        prop_assert!(!contains(&out, b"/../"), "{:?}", show(&out));
        prop_assert!(!out.ends_with(b"/.") && !out.ends_with(b"/.."), "{:?}", show(&out));
        prop_assert!(escapes_well_formed(&out), "{:?}", show(&out));
        // The matched path is a fixed point: normalising it again gives it back.
        let mut again = PathBuffers::default();
        let twice = path::normalize(&out, &mut again).map(<[u8]>::to_vec);
        prop_assert_eq!(twice.as_deref(), Ok(&out[..]), "{:?}", show(&out));
        // The query never influences the path.
        if let Some(q) = target.iter().position(|&b| b == b'?' || b == b'#') {
            let mut cut = PathBuffers::default();
            let without = path::normalize(&target[..q], &mut cut).map(<[u8]>::to_vec);
            prop_assert_eq!(without.as_deref(), Ok(&out[..]));
        }
    }

    #[test]
    fn normalize_agrees_with_a_segment_model(target in pathish()) {
        let mut buffers = PathBuffers::default();
        let got = path::normalize(&target, &mut buffers).map(<[u8]>::to_vec);
        let want = nginx_uri_model(&target);
        prop_assert_eq!(
            got.as_ref().ok().map(|p| show(p)),
            want.as_ref().ok().map(|p| show(p)),
            "target {:?}: library {:?}",
            show(&target),
            got
        );
    }

    #[test]
    fn raw_query_is_between_question_mark_and_fragment(target in pathish()) {
        let q = path::raw_query(&target);
        prop_assert!(!q.contains(&b'#'));
        let first = target.iter().position(|&b| b == b'?' || b == b'#');
        match first {
            Some(i) if target[i] == b'?' => {
                let rest = &target[i + 1..];
                let end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
                prop_assert_eq!(q, &rest[..end]);
            }
            _ => prop_assert!(q.is_empty()),
        }
    }

    #[test]
    fn raw_arg_follows_nginx(
        query in prop_oneof![
            vec(any::<u8>(), 0..64),
            vec(select(&["user_key", "USER_KEY", "=", "&", "k", "x", "user_key=", "&user_key="][..]), 0..8)
                .prop_map(|p| p.concat().into_bytes()),
        ],
        name in prop_oneof![
            Just(b"user_key".to_vec()),
            vec(select(&b"aA=&k_"[..]), 0..4),
            vec(any::<u8>(), 0..4),
        ],
    ) {
        let got = args::raw_arg(&query, &name);
        if let Some(v) = got {
            prop_assert!(!v.contains(&b'&'));
        }
        // Without '&' in the name, NGINX's search is "the first piece that starts with
        // `name=`" (names compared case-insensitively).
        if !name.contains(&b'&') {
            let model = if name.is_empty() {
                None
            } else {
                query.split(|&b| b == b'&').find_map(|piece| {
                    let (head, tail) = piece.split_at_checked(name.len())?;
                    (head.eq_ignore_ascii_case(&name) && tail.first() == Some(&b'='))
                        .then(|| &tail[1..])
                })
            };
            prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn form_args_follow_lua_tables(
        encoded in prop_oneof![
            vec(any::<u8>(), 0..128),
            vec(select(&["a", "b=1", "", "=", "=x", "%41", "+", "c=%zz", "a=1=2"][..]), 0..300)
                .prop_map(|p| p.join("&").into_bytes()),
        ]
    ) {
        let got: Vec<_> = FormArgs::new(&encoded).collect();
        prop_assert!(got.len() <= MAX_ARGS);
        let model: Vec<_> = if encoded.is_empty() {
            Vec::new()
        } else {
            // ngx_http_lua_parse_args: every '&'-separated piece counts toward the limit.
            encoded
                .split(|&b| b == b'&')
                .take(MAX_ARGS)
                .filter_map(|piece| {
                    let (name, value) = match piece.iter().position(|&b| b == b'=') {
                        Some(i) => (&piece[..i], ArgValue::Raw(&piece[i + 1..])),
                        None => (piece, ArgValue::Flag),
                    };
                    (!name.is_empty()).then_some((name, value))
                })
                .collect()
        };
        prop_assert_eq!(got, model);
    }

    #[test]
    fn decoded_eq_agrees_with_decode(
        raw in prop_oneof![
            vec(any::<u8>(), 0..32),
            vec(select(&["%", "%4", "%41", "%zz", "+", "a", "%2B", "%25", "%c3%A9", "%00"][..]), 0..8)
                .prop_map(|p| p.concat().into_bytes()),
        ],
        change in 0usize..4,
        other in vec(any::<u8>(), 0..8),
    ) {
        let decoded = args::decode(&raw);
        prop_assert!(decoded.len() <= raw.len());
        let mut into = b"prefix".to_vec();
        args::decode_into(&raw, &mut into);
        prop_assert_eq!(&into[6..], &decoded[..]);
        let mut expected = decoded.clone();
        match change {
            0 => {}
            1 => { expected.pop(); }
            2 => expected.extend_from_slice(&other),
            _ => expected = other.clone(),
        }
        prop_assert_eq!(args::decoded_eq(&raw, &expected), decoded == expected);
        // And through a query condition, which compares the last value decoded.
        let query = [&b"k="[..], raw.as_slice()].concat();
        if !raw.contains(&b'&') {
            if let Ok(want) = std::str::from_utf8(&expected) {
                let has_var = QueryCondition::new("k", want);
                let holds = has_var.holds(&RequestArgs { query: &query, body: None });
                if !want.contains('{') {
                    prop_assert_eq!(holds, decoded == expected);
                }
            }
        }
    }

    #[test]
    fn authorization_parse_never_panics(value in vec(any::<u8>(), 0..64)) {
        let _ = Authorization::parse(&value);
        let _ = nginx_decode_base64(&value);
    }

    #[test]
    fn basic_credentials_round_trip(
        user in vec(prop_oneof![3 => any::<u8>(), 1 => Just(b':')], 0..24),
        password in vec(prop_oneof![3 => any::<u8>(), 1 => Just(b':')], 0..24),
        ws in "[ \t]{0,3}",
    ) {
        let joined = [&user[..], &b":"[..], &password[..]].concat();
        let header = format!("Basic{}{}", if ws.is_empty() { " " } else { &ws }, b64(&joined));
        let auth = Authorization::parse(header.as_bytes());
        // Lua's greedy `^(.*):(.*)$`: the split is at the last ':'.
        let colon = joined.iter().rposition(|&b| b == b':').unwrap();
        prop_assert_eq!(auth.userid.as_deref(), Some(&joined[..colon]));
        prop_assert_eq!(auth.password.as_deref(), Some(&joined[colon + 1..]));
        prop_assert_eq!(auth.token, None);
        // Without any ':' there are no credentials at all.
        let no_colon: Vec<u8> = joined.iter().copied().filter(|&b| b != b':').collect();
        let header = format!("Basic {}", b64(&no_colon));
        let auth = Authorization::parse(header.as_bytes());
        prop_assert_eq!(auth, Authorization::default());
    }

    #[test]
    fn bearer_tokens_are_taken_verbatim(token in vec(any::<u8>(), 0..32)) {
        let header = [&b"Bearer "[..], token.as_slice()].concat();
        let auth = Authorization::parse(&header);
        let skipped = token
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
            .unwrap_or(token.len());
        prop_assert_eq!(auth.token, Some(&token[skipped..]));
        prop_assert_eq!(auth.userid, None);
    }

    #[test]
    fn base64_round_trips(bytes in vec(any::<u8>(), 0..64), trailing in vec(any::<u8>(), 0..4)) {
        let encoded = b64(&bytes);
        prop_assert_eq!(nginx_decode_base64(encoded.as_bytes()), Some(bytes.clone()));
        let unpadded = encoded.trim_end_matches('=');
        prop_assert_eq!(nginx_decode_base64(unpadded.as_bytes()), Some(bytes.clone()));
        // Anything after the first '=' is ignored.
        let with_tail = [unpadded.as_bytes(), &b"="[..], trailing.as_slice()].concat();
        prop_assert_eq!(nginx_decode_base64(&with_tail), Some(bytes.clone()));
    }

    #[test]
    fn analyze_never_panics(pattern in prop_oneof![pattern(), any::<String>()]) {
        let analysis = analyze(&pattern);
        match &analysis.kind {
            PatternKind::Trie(variants) => {
                for tokens in variants {
                    if let Some(i) = tokens.iter().position(|t| *t == Token::End) {
                        prop_assert_eq!(i + 1, tokens.len(), "End before the last token");
                    }
                }
            }
            PatternKind::Regex(source) => prop_assert!(source.starts_with('^')),
            PatternKind::Refused(reason) => prop_assert!(reason.contains("deep"), "{}", reason),
        }
        // Compiled and evaluated, whatever it is.
        let (set, _broken) = RuleSet::compile(vec![RuleInput {
            method: "GET".into(),
            pattern: pattern.clone(),
            analysis,
            metric: MetricIndex::new(0),
            delta: 1,
            last: false,
            conditions: vec![],
        }]);
        let mut scratch = MatchScratch::default();
        for path in [&b"/"[..], b"/a/b", b"/v1/x.json", b"", b"/%C3%A9"] {
            set.evaluate(b"GET", path, &RequestArgs::default(), &mut scratch);
            prop_assert!(scratch.matched.len() <= 1);
        }
    }

    #[test]
    fn http_url_parse_round_trips(
        input in prop_oneof![
            any::<String>(),
            "(https?|HTTP|ftp|)(://)?[a-zA-Z0-9.:@\\[\\]_-]{0,16}(/[a-z/ %é]{0,8})?(\\?[a-z=&#]{0,6})?(#x)?",
        ]
    ) {
        if let Ok(url) = HttpUrl::parse(&input) {
            prop_assert!(!url.host.is_empty());
            prop_assert_eq!(url.host.to_ascii_lowercase(), url.host.clone());
            // The path as written (a trailing `/` matters upstream), except a lone `/`.
            prop_assert!(url.path.is_empty() || (url.path.starts_with('/') && url.path != "/"));
            prop_assert!(url.port != Some(0));
            let _ = url.host_header();
            let again = HttpUrl::parse(&url.to_string());
            prop_assert_eq!(again, Ok(url.clone()), "{}", url);
        }
    }

    #[test]
    fn percent_encoding_is_unreserved_or_escaped(bytes in vec(any::<u8>(), 0..64)) {
        let encoded = percent::encode(&bytes);
        let b = encoded.as_bytes();
        prop_assert!(b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~%".contains(&c)));
        prop_assert!(escapes_well_formed(b), "{:?}", encoded);
        prop_assert!(!encoded.contains('+'));
        prop_assert_eq!(args::decode(b), bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Property 4: the trie matches what APIcast's regex matches
// ---------------------------------------------------------------------------------------------

/// APIcast's placeholder, written out independently of the library's constant.
const APICAST_PLACEHOLDER: &str = r"([\w\-\.~%!$&'()*+,;=@:]+)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    Ph,
}

/// Literal bytes of plain patterns: no regex syntax, no '?', no braces.
const PATTERN_LITERALS: &[u8] = b"//ab1.-_~%:@!,;='&";
/// Path bytes: the pattern literals, placeholder-class bytes that are regex syntax in a
/// pattern, and bytes outside the class.
const PATH_BYTES: &[u8] = b"ab1.-_~%:@!,;='&*+()$[]^|\"";

#[derive(Debug, Clone)]
struct PlainRule {
    method: &'static str,
    tokens: Vec<Tok>,
    anchored: bool,
}

impl PlainRule {
    fn pattern(&self) -> String {
        let mut s = String::new();
        for t in &self.tokens {
            match *t {
                Tok::Lit(b) => s.push(char::from(b)),
                Tok::Ph => s.push_str("{id}"),
            }
        }
        if self.anchored {
            s.push('$');
        }
        s
    }

    /// `^` + literals escaped + a placeholder group each + `$` if anchored, after merging
    /// slashes as APIcast does first.
    fn apicast_regex(&self) -> regex::Regex {
        let mut re = String::from("^");
        let mut previous = None;
        for &t in &self.tokens {
            if t == Tok::Lit(b'/') && previous == Some(Tok::Lit(b'/')) {
                continue;
            }
            match t {
                Tok::Lit(b) => re.push_str(&regex::escape(&char::from(b).to_string())),
                Tok::Ph => re.push_str(APICAST_PLACEHOLDER),
            }
            previous = Some(t);
        }
        if self.anchored {
            re.push('$');
        }
        regex::Regex::new(&re).unwrap()
    }
}

fn plain_rule() -> impl Strategy<Value = PlainRule> {
    let tok = prop_oneof![
        7 => select(PATTERN_LITERALS).prop_map(Tok::Lit),
        3 => Just(Tok::Ph),
    ];
    (
        select(&["GET", "POST", "ANY"][..]),
        prop_oneof![9 => Just(true), 1 => Just(false)],
        vec(tok, 0..7),
        prop_oneof![2 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(method, slash, rest, anchored)| {
            let mut tokens = Vec::new();
            if slash {
                tokens.push(Tok::Lit(b'/'));
            }
            tokens.extend(rest);
            PlainRule {
                method,
                tokens,
                anchored,
            }
        })
}

fn random_path() -> impl Strategy<Value = String> {
    vec(vec(select(PATH_BYTES), 0..5), 0..5).prop_map(|segments| {
        let mut p = String::new();
        for s in segments {
            p.push('/');
            p.extend(s.into_iter().map(char::from));
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    })
}

/// A path that spells out one of the rules: its literals, something for each placeholder
/// (possibly empty or out of class), then a random tail.
fn instantiate(rule: &PlainRule, fills: &[String], tail: &str) -> String {
    let mut p = String::new();
    let mut fills = fills.iter().cycle();
    for t in &rule.tokens {
        match *t {
            Tok::Lit(b) => p.push(char::from(b)),
            Tok::Ph => p.push_str(fills.next().map_or("x", String::as_str)),
        }
    }
    p.push_str(tail);
    p
}

#[test]
fn trie_matches_what_the_apicast_regex_matches() {
    assert_eq!(
        tollgate::rules::pattern::PLACEHOLDER_REGEX,
        APICAST_PLACEHOLDER
    );
    let strategy = vec(plain_rule(), 1..7).prop_flat_map(|rules| {
        let n = rules.len();
        let fill = vec(select(PATH_BYTES), 0..4)
            .prop_map(|b| b.into_iter().map(char::from).collect::<String>());
        (
            Just(rules),
            select(&["GET", "POST", "PUT"][..]),
            prop_oneof![1 => Just(None), 2 => (0..n).prop_map(Some)],
            vec(fill, 1..4),
            prop_oneof![2 => Just(String::new()), 1 => random_path()],
            random_path(),
        )
    });
    let matched_some = Cell::new(0usize);
    let cases = Cell::new(0usize);
    run(
        1024,
        strategy,
        |(rules, method, spelled, fills, tail, random)| {
            let path = match spelled {
                Some(i) => instantiate(&rules[i], &fills, &tail),
                None => random,
            };
            let inputs: Vec<RuleInput> = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let pattern = r.pattern();
                    RuleInput {
                        method: r.method.into(),
                        analysis: analyze(&pattern),
                        pattern,
                        metric: MetricIndex::new(i as u32),
                        delta: 1,
                        last: false,
                        conditions: vec![],
                    }
                })
                .collect();
            for input in &inputs {
                prop_assert!(
                    matches!(input.analysis.kind, PatternKind::Trie(_)),
                    "{:?} is not a trie pattern",
                    input.pattern
                );
            }
            let (set, broken) = RuleSet::compile(inputs);
            prop_assert!(broken.is_empty());
            let mut scratch = MatchScratch::default();
            set.evaluate(
                method.as_bytes(),
                path.as_bytes(),
                &RequestArgs::default(),
                &mut scratch,
            );
            let expected: Vec<RuleIndex> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.method == "ANY" || r.method == method)
                .filter(|(_, r)| r.apicast_regex().is_match(&path))
                .map(|(i, _)| RuleIndex::from_usize(i))
                .collect();
            prop_assert_eq!(
                &scratch.matched,
                &expected,
                "{} {:?} against {:?}",
                method,
                path,
                rules.iter().map(PlainRule::pattern).collect::<Vec<_>>()
            );
            // Rule i counts metric i.
            let usage: Vec<(MetricIndex, i64)> = expected
                .iter()
                .map(|&i| (MetricIndex::new(i.get()), 1))
                .collect();
            prop_assert_eq!(&scratch.usage, &usage);
            cases.set(cases.get() + 1);
            if !expected.is_empty() {
                matched_some.set(matched_some.get() + 1);
            }
            Ok(())
        },
    );
    let (hit, n) = (matched_some.get(), cases.get());
    assert!(
        hit * 5 >= n && hit * 20 <= n * 19,
        "{hit}/{n} cases matched a rule: the generator is too far from (or too close to) the rules"
    );
}

// ---------------------------------------------------------------------------------------------
// Mapping-rule query conditions, against a model of APIcast's arg tables
// ---------------------------------------------------------------------------------------------

/// lua-nginx-module's arg table lookup: among the first [`MAX_ARGS`] `&`-separated pieces
/// (empty ones count), the last whose decoded name is `name`; a body argument wins over a URI
/// one.
fn last_arg_model<'a>(encoded: &'a [u8], name: &[u8]) -> Option<ArgValue<'a>> {
    if encoded.is_empty() {
        return None;
    }
    encoded
        .split(|&b| b == b'&')
        .take(MAX_ARGS)
        .map(|piece| match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], ArgValue::Raw(&piece[i + 1..])),
            None => (piece, ArgValue::Flag),
        })
        .filter(|(n, _)| !n.is_empty())
        .filter(|(n, _)| args::decode(n) == name)
        .last()
        .map(|(_, v)| v)
}

proptest! {
    #![proptest_config(cfg(2000))]

    #[test]
    fn query_conditions_follow_apicast(
        name in select(&["a", "a b", "x_y", "é", ""][..]),
        value in prop_oneof![
            select(&["1", "a b", "{x}", "{}", "{-_}", "{x", "a{b}c", "{é}", "{a b}", "%41", ""][..])
                .prop_map(str::to_owned),
            "[{}a-z_ -]{0,6}",
        ],
        query in vec(select(&["a=1", "a", "a=", "a+b=a+b", "a%20b=a%2520b", "x_y=%31", "x%5Fy=1",
                              "%C3%A9={x}", "a={}", "&", "=", "a=%41"][..]), 0..5)
            .prop_map(|p| p.join("&")),
        body in proptest::option::of(vec(select(&["a=a b", "a=%7Bx%7D", "x_y", "b=2"][..]), 0..3)
            .prop_map(|p| p.join("&"))),
        many in 0usize..3,
        empty in prop_oneof![Just(0usize), 0usize..120],
    ) {
        // Sometimes push the interesting arguments past lua-nginx-module's limit, with
        // arguments or with empty pieces (which count too).
        let query = format!("{}{}{query}", "p=1&".repeat(many * 60), "&".repeat(empty));
        let condition = QueryCondition::new(name, &value);
        let variable = regex::Regex::new(r"(?-u:\{[-\w_]+\})").unwrap();
        let present_only = variable.is_match(&value);
        let args = RequestArgs { query: query.as_bytes(), body: body.as_deref().map(str::as_bytes) };
        let found = body
            .as_deref()
            .and_then(|b| last_arg_model(b.as_bytes(), name.as_bytes()))
            .or_else(|| last_arg_model(query.as_bytes(), name.as_bytes()));
        let want = match (found, present_only) {
            (None, _) => false,
            (Some(_), true) => true,
            (Some(ArgValue::Flag), false) => false,
            (Some(ArgValue::Raw(raw)), false) => args::decode(raw) == value.as_bytes(),
        };
        prop_assert_eq!(condition.holds(&args), want);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: minimal inputs for what the properties found in the library
// ---------------------------------------------------------------------------------------------

/// Found by `load_never_panics_on_arbitrary_json`: an unknown top-level field of a FilterConfig
/// is reported at the unknown key itself, a path outside the roots a valid document has. That
/// is intended: the path says exactly where the offending field is.
#[test]
fn unknown_top_level_field_is_reported_at_its_key() {
    let loaded = tollgate::load(br#"{"kind": "tollgate.FilterConfig", "id": 1}"#);
    assert!(loaded.compiled.is_none());
    let d = loaded.diagnostics.iter().next().unwrap();
    assert_eq!(d.path, "id");
    assert!(d.message.starts_with("unknown field `id`"), "{d}");
}

/// Found by `load_never_panics_on_near_valid_threescale_configs` (Noise::InsideProxy): a
/// non-string host is reported and left out, and the hosts after it must still be reported at
/// their own index in `proxy.hosts`, not at their position among the hosts that were kept.
#[test]
fn regression_host_diagnostics_after_a_non_string_host() {
    let doc = br#"{"services": [{"id": 1, "backend_version": "1",
        "backend_authentication_type": "service_token", "backend_authentication_value": "x",
        "proxy": {"hosts": [5, ""]}}]}"#;
    let loaded = tollgate::load(doc);
    let paths: Vec<(&str, &str)> = loaded
        .diagnostics
        .errors()
        .map(|d| (d.path.as_str(), d.message.as_str()))
        .collect();
    assert!(
        paths.contains(&("services[0].proxy.hosts[1]", "host name is empty")),
        "{paths:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The regex subset the trie expands: same answers as APIcast's regex
// ---------------------------------------------------------------------------------------------

/// Rule `i` has pattern `patterns[i]`, the method `method(i)`, metric `i` and delta 1.
fn rule_inputs(patterns: &[String], method: impl Fn(usize) -> &'static str) -> Vec<RuleInput> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| RuleInput {
            method: method(i).into(),
            pattern: p.clone(),
            analysis: analyze(p),
            metric: MetricIndex::new(i as u32),
            delta: 1,
            last: false,
            conditions: vec![],
        })
        .collect()
}

/// The rules APIcast matches on `path` (each rule's regex, in order), leaving out `broken`
/// ones (their regex does not compile: they never match).
fn apicast_matches(patterns: &[String], path: &str, broken: &[usize]) -> Vec<RuleIndex> {
    patterns
        .iter()
        .enumerate()
        .filter(|(i, _)| !broken.contains(i))
        .filter(|(_, p)| {
            regex::Regex::new(&tollgate::rules::pattern::apicast_regex(p))
                .is_ok_and(|re| re.is_match(path))
        })
        .map(|(i, _)| RuleIndex::from_usize(i))
        .collect()
}

/// A piece of a regex-flavoured pattern, as a provider might write one.
fn regexish_atom() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&["a", "b", "1", "/", ".", "-", "x"][..]).prop_map(str::to_owned),
        1 => Just("{id}".to_owned()),
        1 => Just("[0-9]+".to_owned()),
        1 => Just("[ab]".to_owned()),
        1 => Just("[^/]+".to_owned()),
        1 => Just(r"\d+".to_owned()),
        1 => Just(r"\.".to_owned()),
        1 => Just("a+".to_owned()),
        1 => Just("b*".to_owned()),
        1 => Just("(a|b1)".to_owned()),
        1 => Just("(x|{id}|/)".to_owned()),
        1 => Just("({id})+".to_owned()),
        1 => Just("(a|b)+".to_owned()),
        1 => Just("|".to_owned()),
        1 => Just("$".to_owned()),
    ]
}

#[test]
fn regex_patterns_match_what_the_apicast_regex_matches() {
    let strategy = (
        vec(
            vec(regexish_atom(), 0..6).prop_map(|a| format!("/{}", a.concat())),
            1..5,
        ),
        vec(
            select(
                &[
                    "a", "b", "1", "2", "/", ".", "-", "x", "ab", "11", "/a", "b1",
                ][..],
            ),
            0..8,
        )
        .prop_map(|p| format!("/{}", p.concat())),
    );
    let matched_some = Cell::new(0usize);
    let through_trie = Cell::new(0usize);
    run(2048, strategy, |(patterns, path)| {
        let inputs = rule_inputs(&patterns, |_| "GET");
        through_trie.set(
            through_trie.get()
                + inputs
                    .iter()
                    .filter(|i| matches!(i.analysis.kind, PatternKind::Trie(_)))
                    .count(),
        );
        let (set, _broken) = RuleSet::compile(inputs);
        let mut scratch = MatchScratch::default();
        set.evaluate(
            b"GET",
            path.as_bytes(),
            &RequestArgs::default(),
            &mut scratch,
        );
        let expected = apicast_matches(&patterns, &path, &[]);
        prop_assert_eq!(
            &scratch.matched,
            &expected,
            "{:?} against {:?}",
            path,
            patterns
        );
        if !expected.is_empty() {
            matched_some.set(matched_some.get() + 1);
        }
        Ok(())
    });
    assert!(
        matched_some.get() > 100,
        "too few matches to mean anything: {}",
        matched_some.get()
    );
    assert!(
        through_trie.get() > 1000,
        "too few patterns took the trie: {}",
        through_trie.get()
    );
}

// ---------------------------------------------------------------------------------------------
// Long, ambiguous paths: the lockstep and DFA parts of the walk, and a DFA cache emptied
// at every state, give APIcast's answers too
// ---------------------------------------------------------------------------------------------

#[test]
fn long_ambiguous_paths_match_what_the_apicast_regex_matches() {
    use tollgate::rules::trie::WalkLimits;
    use tollgate::rules::{Evaluated, MatchLimits};
    let atom = prop_oneof![
        4 => select(&["a", "x", "/", ".", "1"][..]).prop_map(str::to_owned),
        2 => Just("{id}".to_owned()),
        1 => Just("x+".to_owned()),
        1 => Just("[ax]*".to_owned()),
        1 => Just("[0-9]".to_owned()),
        1 => Just("(a|x)".to_owned()),
        1 => Just("(a|x1)".to_owned()),
        1 => Just("|".to_owned()),
        1 => Just("$".to_owned()),
    ];
    let strategy = (
        vec(
            vec(atom, 0..7).prop_map(|a| format!("/{}", a.concat())),
            1..6,
        ),
        vec(
            select(&["a", "x", "xx", ".", "/", "1", "a.x", "x1"][..]),
            0..90,
        )
        .prop_map(|p| format!("/{}", p.concat())),
    );
    let long = Cell::new(0usize);
    let matched_some = Cell::new(0usize);
    run(1024, strategy, |(patterns, path)| {
        let inputs = rule_inputs(&patterns, |i| if i % 3 == 2 { "ANY" } else { "GET" });
        let (set, broken) = RuleSet::compile(inputs);
        let broken: Vec<usize> = broken.iter().map(|b| b.rule).collect();
        let expected = apicast_matches(&patterns, &path, &broken);
        let mut scratch = MatchScratch::default();
        let e = set.evaluate(
            b"GET",
            path.as_bytes(),
            &RequestArgs::default(),
            &mut scratch,
        );
        prop_assert_eq!(e, Evaluated::Complete);
        prop_assert_eq!(
            &scratch.matched,
            &expected,
            "{:?} against {:?}",
            path,
            patterns
        );
        // A cache too small for two states: emptied before every new one.
        let tiny = MatchLimits {
            walk: WalkLimits {
                cache_bytes: 64,
                ..WalkLimits::DEFAULT
            },
            ..MatchLimits::DEFAULT
        };
        let e = set.evaluate_within(
            b"GET",
            path.as_bytes(),
            &RequestArgs::default(),
            &mut scratch,
            tiny,
        );
        prop_assert_eq!(e, Evaluated::Complete);
        prop_assert_eq!(
            &scratch.matched,
            &expected,
            "tiny cache: {:?} against {:?}",
            path,
            patterns
        );
        if scratch.work().dfa_states > 0 {
            long.set(long.get() + 1);
        }
        if !expected.is_empty() {
            matched_some.set(matched_some.get() + 1);
        }
        Ok(())
    });
    assert!(
        long.get() > 100,
        "too few cases reached the DFA: {}",
        long.get()
    );
    assert!(
        matched_some.get() > 100,
        "too few matches: {}",
        matched_some.get()
    );
}
