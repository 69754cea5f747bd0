//! `tollgate check` on mapping rules that can never match or never run: one rule per lint, and
//! the lines a provider reads.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::tollgate_with_stdin;
use serde_json::{json, Value};
use tollgate_testsupport::threescale::{self, Service};

/// A 3scale proxy configuration with one service holding `rules` (and a control service, so
/// the rules' are the only warnings).
fn document(rules: Vec<Value>) -> Value {
    let service = Service::new(42)
        .proxy("backend", json!({"endpoint": "http://127.0.0.1:3001"}))
        .rules(rules);
    threescale::document(vec![service.build()])
}

fn rule(method: &str, pattern: &str) -> Value {
    threescale::rule(method, pattern, "hits")
}

/// `tollgate check -c -` on `doc`: the exit status and standard output.
fn check(doc: &Value) -> (Option<i32>, String) {
    let out = tollgate_with_stdin(&["check", "-c", "-"], doc.to_string().into_bytes());
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn check_names_each_rule_that_never_matches_or_never_runs() {
    let mut last = rule("GET", "/v2");
    last["last"] = json!(true);
    let doc = document(vec![
        rule("GET", "/a$/b"),
        rule("GET", "/a/../b"),
        rule("GET", "/a%2Fb"),
        rule("get", "/c"),
        rule("GTE", "/d"),
        rule("GET", "/users/{id"),
        rule("GET", "/v1/.*"),
        // Regex syntax the gateway matches as APIcast does, and slashes APIcast merges: fine.
        rule("GET", "/a+b"),
        rule("GET", "/api//v1"),
        last,
        rule("GET", "/v2/x"),
    ]);
    let (status, out) = check(&doc);
    assert_eq!(
        status,
        Some(0),
        "warnings do not make a configuration invalid:\n{out}"
    );
    let rules = "warning: services[0].proxy.proxy_rules";
    let expected = [
        format!(
            "{rules}[0].pattern: pattern '/a$/b' never matches: '$' anchors the end of the \
             path, so nothing can follow it; put '$' at the end of the path part (before any \
             '?'), or remove it"
        ),
        format!(
            "{rules}[1].pattern: pattern '/a/../b' never matches: the gateway resolves '.' and \
             '..' segments before matching (as NGINX does), so the path it matches has no '..' \
             segment; write the path as it reads once resolved"
        ),
        format!(
            "{rules}[2].pattern: pattern '/a%2Fb' never matches: the gateway decodes '%2F' \
             before matching and does not escape '/' again, so the path it matches never holds \
             '%2F'; write '/' instead"
        ),
        format!(
            "{rules}[3].http_method: methods are compared case-sensitively: 'get' never matches \
             a GET request (NGINX refuses a method in lower case); write 'GET'"
        ),
        format!(
            "{rules}[4].http_method: 'GTE' is not an HTTP method: the rule matches only a \
             request whose method is exactly 'GTE'; did you mean 'GET'?"
        ),
        format!(
            "{rules}[5].pattern: pattern '/users/{{id' never matches: no '}}' closes its '{{', \
             so the brace is a literal character, which the gateway escapes (as %7B) in the \
             path it matches; did you mean '{{id}}'?"
        ),
        format!(
            "{rules}[6].pattern: pattern '/v1/.*' uses '.*', but '.' is a literal dot (APIcast \
             escapes every '.'), so '.*' means any number of dots, not any characters; a \
             pattern already matches every path that starts with it, so drop '.*'"
        ),
        format!(
            "{rules}[10].pattern: pattern '/v2/x' never runs: the rule at \
             services[0].proxy.proxy_rules[9].pattern ('GET /v2', last: true) matches every \
             request this rule matches and ends the evaluation there; move this rule above it, \
             or set 'last' to false on that rule"
        ),
    ];
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings, expected, "\n{out}");
}

#[test]
fn check_reads_a_shadowing_rule_through_the_source_paths() {
    // A rule the import leaves out (no pattern) shifts the model's indices, not the paths.
    let mut first = rule("ANY", "/");
    first["last"] = json!(true);
    let doc = document(vec![
        json!({"http_method": "GET", "metric_system_name": "hits", "delta": 1}),
        first,
        rule("POST", "/orders"),
    ]);
    let (_, out) = check(&doc);
    let line = "warning: services[0].proxy.proxy_rules[2].pattern: pattern '/orders' never runs: \
                the rule at services[0].proxy.proxy_rules[1].pattern ('ANY /', last: true)";
    assert!(out.lines().any(|l| l.starts_with(line)), "{out}");
}
