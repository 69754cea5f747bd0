//! Each lint, with the requests that show what it claims: a pattern said to never match does
//! not match the request its author meant (and the suggested fix does), and a rule said to
//! never run is never among the matched rules.

use super::*;
use crate::args::RequestArgs;
use crate::config::location::FilterConfigPaths;
use crate::index::MetricIndex;
use crate::path::{normalize, PathBuffers};
use crate::rules::pattern::analyze;
use crate::rules::query::QueryCondition;
use crate::rules::{MatchScratch, RuleSet};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[derive(Clone, Copy)]
struct R<'a> {
    method: &'a str,
    pattern: &'a str,
    last: bool,
    query: bool,
}

fn get(pattern: &str) -> R<'_> {
    R {
        method: "GET",
        pattern,
        last: false,
        query: false,
    }
}

fn rule<'a>(method: &'a str, pattern: &'a str) -> R<'a> {
    R {
        method,
        ..get(pattern)
    }
}

impl R<'_> {
    fn last(self) -> Self {
        Self { last: true, ..self }
    }
    /// With a query condition (`a={a}`).
    fn query(self) -> Self {
        Self {
            query: true,
            ..self
        }
    }
}

fn inputs(rules: &[R<'_>]) -> Vec<RuleInput> {
    rules
        .iter()
        .map(|r| RuleInput {
            method: r.method.into(),
            pattern: r.pattern.into(),
            analysis: analyze(r.pattern),
            metric: MetricIndex::default(),
            delta: 1,
            last: r.last,
            conditions: if r.query {
                vec![QueryCondition::new("a", "{a}")]
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The warnings for a service with these rules, as `path: message` lines.
fn lints(rules: &[R<'_>]) -> Vec<String> {
    let mut diags = Diagnostics::new();
    let inputs = inputs(rules);
    let mut lints = ServiceLints::new(0, inputs.len());
    for (j, r) in inputs.iter().enumerate() {
        lints.rule(
            j,
            &r.method,
            &r.pattern,
            &r.analysis,
            &FilterConfigPaths,
            &mut diags,
        );
    }
    lints.finish(&inputs, &FilterConfigPaths, &mut diags);
    assert_eq!(diags.errors().count(), 0);
    diags
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect()
}

/// The one warning for a lone GET rule with `pattern` (`None` without any).
fn pattern_lint(pattern: &str) -> Option<String> {
    let found = lints(&[get(pattern)]);
    assert!(found.len() <= 1, "{found:#?}");
    found.into_iter().next()
}

fn assert_lint(pattern: &str, expected: &str) {
    let found = pattern_lint(pattern);
    assert!(
        found.as_deref().is_some_and(|m| m.contains(expected)),
        "{pattern}: expected {expected:?}, found {found:?}"
    );
}

/// The rules (by index) that match `method target`, where target is a raw request target.
fn matched(rules: &[R<'_>], method: &str, target: &str) -> Vec<u32> {
    let (set, _) = RuleSet::compile(inputs(rules));
    let mut buffers = PathBuffers::default();
    let Ok(path) = normalize(target.as_bytes(), &mut buffers) else {
        return Vec::new();
    };
    let mut scratch = MatchScratch::default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let args = RequestArgs {
        query: query.as_bytes(),
        body: None,
    };
    set.evaluate(method.as_bytes(), path, &args, &mut scratch);
    scratch.matched.iter().map(|r| r.get()).collect()
}

fn matches(pattern: &str, target: &str) -> bool {
    !matched(&[get(pattern)], "GET", target).is_empty()
}

/// `pattern` gets a "never matches" warning saying `expected`, does not match `meant` (the
/// request its author had in mind), and `fixed` does.
fn never(pattern: &str, expected: &str, meant: &str, fixed: &str) {
    assert_lint(pattern, "never matches");
    assert_lint(pattern, expected);
    assert!(!matches(pattern, meant), "{pattern} matches {meant}");
    assert!(matches(fixed, meant), "{fixed} does not match {meant}");
    assert_eq!(pattern_lint(fixed), None, "{fixed}");
}

#[test]
fn a_dollar_followed_by_more_path_never_matches() {
    let end = "'$' anchors the end of the path";
    never("/a$/b", end, "/a/b", "/a/b$");
    never("/users$/{id}", end, "/users/7", "/users/{id}$");
    never("/a${id}", end, "/a7", "/a{id}$");
    never("/(a$)b", end, "/ab", "/ab$");
    assert_eq!(pattern_lint("/a$b").map(|m| m.contains(end)), Some(true));
    // The query part is cut before '$' is read, and a '$' before it is the end anchor.
    for (fine, target) in [
        ("/a$", "/a"),
        ("/a$?x=1", "/a?x=1"),
        ("/a$$", "/a"),
        ("/(a$)", "/a"),
        ("/a\\$b", "/a$b"),
        ("/a$x*", "/a"),
        ("/a$|/b", "/b"),
    ] {
        let lint = pattern_lint(fine);
        assert!(
            !lint.as_ref().is_some_and(|m| m.contains("never")),
            "{lint:?}"
        );
        assert!(matches(fine, target), "{fine} {target}");
    }
}

#[test]
fn dot_segments_never_match_as_the_gateway_resolves_them() {
    let resolved = "resolves '.' and '..' segments";
    never("/a/../b", resolved, "/a/../b", "/b");
    never("/a/./b", resolved, "/a/./b", "/a/b");
    never("/a/..$", resolved, "/a/..", "/$");
    never("/a//./b", resolved, "/a/./b", "/a/b");
    // A dot starting a longer segment, or a prefix that a longer segment may complete.
    for fine in ["/a/.hidden", "/a/.../b", "/v1/.", "/v1/..", "/a.b/c"] {
        assert_eq!(pattern_lint(fine), None, "{fine}");
    }
    assert!(matches("/v1/.", "/v1/.well-known"));
}

#[test]
fn escapes_the_gateway_never_leaves_in_a_path_never_match() {
    never("/a%2Fb", "decodes '%2F'", "/a%2Fb", "/a/b");
    never("/a/%2E%2E/b", "decodes '%2E'", "/a/%2E%2E/b", "/b");
    never("/%7Euser", "write '~' instead", "/%7Euser", "/~user");
    never("/caf%c3%a9", "write '%C3'", "/caf%C3%A9", "/caf%C3%A9");
    never("/50%off", "'%' itself is '%25'", "/50%25off", "/50%25off");
    never("/a%2$", "'%' itself is '%25'", "/a%25", "/a%25");
    assert_lint("/a%00", "refused (400)");
    for fine in ["/a%20b", "/a%25", "/caf%C3%A9", "/a%", "/a%2", "/a%{x}"] {
        assert_eq!(pattern_lint(fine), None, "{fine}");
    }
}

#[test]
fn escaped_bytes_and_relative_patterns_never_match() {
    assert_lint("/a b", "(as %20); write %20 instead");
    assert!(!matches("/a b", "/a%20b"));
    assert_lint("/caf\u{e9}", "byte 0xC3");
    never("foo", "does not start with '/'", "/foo", "/foo");
    // A run of '/' starts with one.
    assert_eq!(pattern_lint("/+a"), None);
    assert!(matches("/+a", "/a"));
    // Regex syntax does not hide it.
    assert_lint("/a b+", "as %20");
    // Every alternative must be impossible.
    assert_lint("/(a b|c d)", "never matches");
    assert_eq!(pattern_lint("/(a b|cd)"), None);
}

#[test]
fn double_slashes_are_merged_as_apicast_does_so_they_are_fine() {
    // APIcast's regexpify merges runs of '/' in the pattern (the request's are merged by
    // NGINX), and Porta writes them when joining a backend's path: no warning.
    assert_eq!(pattern_lint("/api//v1"), None);
    assert!(matches("/api//v1", "/api/v1"));
    assert!(matches("/api//v1", "//api///v1"));
}

#[test]
fn braces_that_are_not_a_placeholder_say_which_was_meant() {
    never(
        "/users/{id",
        "no '}' closes its '{'",
        "/users/7",
        "/users/{id}",
    );
    assert_lint("/users/{id", "did you mean '{id}'?");
    assert_lint("/users/{user_id/x", "did you mean '{user_id}'?");
    never(
        "/users/id}",
        "its '}' closes no '{'",
        "/users/7",
        "/users/{id}",
    );
    assert_lint("/users/id}", "did you mean '{id}'?");
    never(
        "/users/{}",
        "'{}' is not a placeholder",
        "/users/7",
        "/users/{id}",
    );
    assert_lint("/users/{}", "did you mean '{id}'?");
    assert_eq!(pattern_lint("/users/{id}"), None);
}

#[test]
fn a_backslash_dot_never_matches() {
    never(
        "/v1/a\\.json",
        "'\\.' becomes a literal backslash",
        "/v1/a.json",
        "/v1/a.json",
    );
    // Inside a bracket expression it is a literal dot.
    assert!(!pattern_lint("/v1/a[\\.]json").is_some_and(|m| m.contains("never")));
    assert!(matches("/v1/a[\\.]json", "/v1/a.json"));
}

#[test]
fn a_repeated_dot_is_said_to_be_literal() {
    assert_lint("/v1/.*", "'.' is a literal dot");
    assert_lint("/v1/.*", "drop '.*'");
    assert_lint("/v1/.*$", "drop '.*$'");
    assert_lint("/v1/a.+/b", "one or more dots");
    assert_lint("/v1/a.+/b", "write '{name}' for any one segment");
    // What the lint says: '.*' is dots only, and the pattern was a prefix match anyway.
    assert!(!matches("/v1/.*/x", "/v1/abc/x"));
    assert!(matches("/v1/.*/x", "/v1/.../x"));
    assert!(matches("/v1/", "/v1/abc/x"));
    for fine in ["/v1/a.json", "/v1/[.]*", "/v1/a\\.*"] {
        assert!(
            !pattern_lint(fine).is_some_and(|m| m.contains("literal dot")),
            "{fine}"
        );
    }
}

#[test]
fn regex_syntax_matched_the_same_way_is_not_worth_a_warning() {
    for quiet in ["/a+b", "/v1/[0-9]+$", "/r/(daily|weekly)", "/v1/\\d+"] {
        assert_eq!(pattern_lint(quiet), None, "{quiet}");
    }
    // What is worth knowing stays: where the others match, and what costs more.
    assert_lint("/a|/b", "anywhere");
    assert_lint("/v1/(xy|z)+", "regex engine");
    assert_lint("", "matches every path");
}

#[test]
fn methods_nginx_refuses_never_match() {
    let found = lints(&[rule("get", "/x")]);
    assert_eq!(
        found,
        [
            "services[0].mapping_rules[0].method: methods are compared case-sensitively: 'get' \
          never matches a GET request (NGINX refuses a method in lower case); write 'GET'"
        ]
    );
    assert!(
        lints(&[rule("any", "/x")])[0].contains("write 'ANY' for a rule that matches every method")
    );
    assert!(lints(&[rule("GET2", "/x")])[0].contains("'GET2' never matches: NGINX refuses"));
    assert!(lints(&[rule("V1.GET", "/x")])[0].contains("never matches"));
    for refused in ["TRACE", "CONNECT"] {
        assert!(
            lints(&[rule(refused, "/x")])[0].contains("NGINX answers 405"),
            "{refused}"
        );
    }
}

#[test]
fn methods_nginx_does_not_know_are_named_with_a_suggestion() {
    assert!(lints(&[rule("GTE", "/x")])[0].ends_with("is exactly 'GTE'; did you mean 'GET'?"));
    assert!(lints(&[rule("DELET", "/x")])[0].contains("did you mean 'DELETE'?"));
    assert!(lints(&[rule("PURGE", "/x")])[0].contains("use one of GET, POST"));
    // Such a method still matches a request that uses it.
    assert_eq!(matched(&[rule("PURGE", "/x")], "PURGE", "/x"), [0]);
    for fine in [
        "GET", "POST", "PROPFIND", "ANY", "OPTIONS", "PATCH", "HEAD", "DELETE",
    ] {
        assert!(lints(&[rule(fine, "/x")]).is_empty(), "{fine}");
    }
    // Not a token at all: the compiler refuses it, the lint says nothing more.
    assert!(lints(&[rule("GE T", "/x")]).is_empty());
}

/// The rule at `j` is reported as shadowed by the rule at `k`, and never matches any of
/// `targets` while the rule at `k` does.
fn shadowed(rules: &[R<'_>], j: usize, k: usize, targets: &[(&str, &str)]) {
    let found = lints(rules);
    let expected = format!(
        "services[0].mapping_rules[{j}].pattern: pattern '{}' never runs: the rule at \
         services[0].mapping_rules[{k}].pattern",
        rules[j].pattern
    );
    assert!(
        found.iter().any(|l| l.starts_with(&expected)),
        "expected {expected:?} in {found:#?}"
    );
    for (method, target) in targets {
        let m = matched(rules, method, target);
        assert!(m.contains(&(k as u32)), "{method} {target}: {m:?}");
        assert!(!m.contains(&(j as u32)), "{method} {target}: {m:?}");
        // Without 'last', it would have matched.
        let mut open = rules.to_vec();
        open[k].last = false;
        assert!(matched(&open, method, target).contains(&(j as u32)));
    }
}

fn not_shadowed(rules: &[R<'_>]) {
    let found = lints(rules);
    assert!(
        !found.iter().any(|l| l.contains("never runs")),
        "{found:#?}"
    );
}

#[test]
fn rules_after_a_last_rule_that_matches_all_they_match_never_run() {
    shadowed(
        &[get("/").last(), get("/abc")],
        1,
        0,
        &[("GET", "/abc"), ("GET", "/abc/def")],
    );
    let found = lints(&[get("/").last(), get("/abc")]);
    assert_eq!(
        found,
        [
            "services[0].mapping_rules[1].pattern: pattern '/abc' never runs: the rule at \
          services[0].mapping_rules[0].pattern ('GET /', last: true) matches every request \
          this rule matches and ends the evaluation there; move this rule above it, or set \
          'last' to false on that rule"
        ]
    );
    shadowed(
        &[rule("ANY", "/v1").last(), get("/v1/x")],
        1,
        0,
        &[("GET", "/v1/x")],
    );
    shadowed(
        &[get("/users/{id}").last(), get("/users/7/x")],
        1,
        0,
        &[("GET", "/users/7/x")],
    );
    shadowed(&[get("/a$").last(), get("/a$")], 1, 0, &[("GET", "/a")]);
    shadowed(
        &[get("/r/(daily|weekly)").last(), get("/r/daily/x$")],
        1,
        0,
        &[("GET", "/r/daily/x")],
    );
    // A run of the earlier rule's last byte.
    shadowed(
        &[get("/ab").last(), get("/ab+c")],
        1,
        0,
        &[("GET", "/abbbc")],
    );
    // Each of the later rule's alternatives, by some alternative of the earlier one.
    shadowed(
        &[get("/(a|b)").last(), get("/(b|a)x")],
        1,
        0,
        &[("GET", "/ax"), ("GET", "/bx")],
    );
    // A later rule's query conditions only narrow it.
    shadowed(
        &[get("/").last(), get("/q").query()],
        1,
        0,
        &[("GET", "/q?a=1")],
    );
    // A regex the trie cannot express, by its literal prefix.
    shadowed(
        &[get("/v1/").last(), get("/v1/(xy|z)+")],
        1,
        0,
        &[("GET", "/v1/xyxy")],
    );
    // The first shadowing rule is named, once.
    let found = lints(&[get("/").last(), get("/a").last(), get("/a/b")]);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[1].contains("mapping_rules[0].pattern ('GET /'"));
}

#[test]
fn rules_a_last_rule_does_not_cover_still_run() {
    // Another method, or an earlier rule for one method and a later one for any.
    not_shadowed(&[get("/").last(), rule("POST", "/a")]);
    not_shadowed(&[get("/").last(), rule("ANY", "/a")]);
    // Not `last`, or narrowed by a query condition.
    not_shadowed(&[get("/"), get("/a")]);
    not_shadowed(&[get("/").last().query(), get("/a")]);
    // The earlier pattern is longer, anchored, or another path.
    not_shadowed(&[get("/ab").last(), get("/a")]);
    not_shadowed(&[get("/a$").last(), get("/a/b")]);
    not_shadowed(&[get("/a").last(), get("/b")]);
    not_shadowed(&[get("/users/{id}").last(), get("/users/")]);
    not_shadowed(&[get("/(a|b)").last(), get("/(b|c)x")]);
    // A rule that never matches shadows nothing.
    not_shadowed(&[rule("get", "/").last(), rule("get", "/a")]);
    not_shadowed(&[get("/a b").last(), get("/a b/c")]);
    assert_eq!(
        matched(&[get("/a$").last(), get("/a/b")], "GET", "/a/b"),
        [1]
    );
}

/// What the lints claim holds for any request: a pattern said to never match matches no
/// target, and a rule said to never run is never matched.
#[cfg(not(target_arch = "wasm32"))]
mod claims {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::{Config, TestRunner};

    const PATTERN_PARTS: &[&str] = &[
        "/", "/", "a", "b", ".", "..", "%2F", "%2e", "%41", "%20", "%25", "%", "$", "{", "}",
        "{x}", "+", "*", "(", ")", "|", "\\", "[a.]", " ", "?q=1",
    ];
    const TARGET_PARTS: &[&str] = &[
        "/", "/", "a", "b", "ab", ".", "..", "%2F", "%2E", "%41", "%20", "%25", "$", "+", "%7B",
        "%7D", "A",
    ];

    fn text(parts: &[&str]) -> String {
        parts.concat()
    }

    fn pattern() -> impl Strategy<Value = String> {
        vec(select(PATTERN_PARTS), 0..8).prop_map(|p| format!("/{}", text(&p)))
    }

    fn targets() -> impl Strategy<Value = Vec<String>> {
        vec(
            vec(select(TARGET_PARTS), 0..8).prop_map(|p| format!("/{}", text(&p))),
            1..12,
        )
    }

    /// Requests the pattern's author may have meant: its text as a path, with its regex
    /// syntax read a few ways.
    fn meant(pattern: &str) -> Vec<String> {
        let path = pattern.split('?').next().unwrap_or_default();
        let mut out = vec![path.to_owned()];
        for (from, to) in [("{x}", "a"), ("[a.]", "."), ("[a.]", "a"), ("\\", "")] {
            let next = out.last().unwrap().replace(from, to);
            out.push(next);
        }
        let plain: String = out
            .last()
            .unwrap()
            .chars()
            .filter(|c| !"$+*()|".contains(*c))
            .collect();
        out.push(plain.clone());
        out.push(plain.replace('%', "%25"));
        out
    }

    fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
        let config = Config {
            cases: 2048,
            failure_persistence: None,
            ..Config::default()
        };
        if let Err(e) = TestRunner::new(config).run(&strategy, test) {
            panic!("{e}");
        }
    }

    #[test]
    fn a_pattern_said_to_never_match_matches_nothing() {
        run((pattern(), targets()), |(pattern, targets)| {
            let never = lints(&[get(&pattern)])
                .iter()
                .any(|l| l.contains("never matches"));
            if never {
                for target in targets.iter().chain(&meant(&pattern)) {
                    prop_assert!(!matches(&pattern, target), "{pattern} matches {target}");
                }
            }
            Ok(())
        });
    }

    #[test]
    fn a_rule_said_to_never_run_is_never_matched() {
        run(
            (pattern(), pattern(), any::<bool>(), targets()),
            |(first, second, any_method, targets)| {
                let first = rule(if any_method { "ANY" } else { "GET" }, &first).last();
                let rules = [first, get(&second)];
                if lints(&rules).iter().any(|l| l.contains("never runs")) {
                    for target in &targets {
                        let m = matched(&rules, "GET", target);
                        prop_assert!(!m.contains(&1), "{second} runs on {target}");
                    }
                }
                Ok(())
            },
        );
    }
}
