//! Mapping-rule semantics, from the reference's §1.11 table (APIcast master's
//! `spec/mapping_rule_spec.lua` run in a harness) and its facts list.

use super::pattern::analyze;
use super::query::QueryCondition;
use super::*;
use crate::args::RequestArgs;
use crate::index::MetricIndex;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

struct R<'a> {
    method: &'a str,
    pattern: &'a str,
    qs: &'a [(&'a str, &'a str)],
    metric: u32,
    delta: i64,
    last: bool,
}

fn rule<'a>(method: &'a str, pattern: &'a str) -> R<'a> {
    R {
        method,
        pattern,
        qs: &[],
        metric: 0,
        delta: 1,
        last: false,
    }
}

impl<'a> R<'a> {
    fn qs(mut self, qs: &'a [(&'a str, &'a str)]) -> Self {
        self.qs = qs;
        self
    }
    fn delta(mut self, metric: u32, delta: i64) -> Self {
        self.metric = metric;
        self.delta = delta;
        self
    }
    fn last(mut self) -> Self {
        self.last = true;
        self
    }
}

fn set(rules: Vec<R<'_>>) -> RuleSet {
    let inputs = rules
        .into_iter()
        .map(|r| RuleInput {
            method: r.method.into(),
            pattern: r.pattern.into(),
            analysis: analyze(r.pattern),
            metric: MetricIndex::new(r.metric),
            delta: r.delta,
            last: r.last,
            conditions: r
                .qs
                .iter()
                .map(|(k, v)| QueryCondition::new(k, v))
                .collect(),
        })
        .collect();
    let (set, broken) = RuleSet::compile(inputs);
    assert!(broken.is_empty(), "{broken:?}");
    set
}

/// Runs one request; returns (matched rule ids, usage).
fn run(set: &RuleSet, method: &str, path: &str, query: &str) -> (Vec<u32>, Vec<(u32, i64)>) {
    run_with_body(set, method, path, query, None)
}

fn run_with_body(
    set: &RuleSet,
    method: &str,
    path: &str,
    query: &str,
    body: Option<&str>,
) -> (Vec<u32>, Vec<(u32, i64)>) {
    let mut scratch = MatchScratch::default();
    let args = RequestArgs {
        query: query.as_bytes(),
        body: body.map(str::as_bytes),
    };
    set.evaluate(method.as_bytes(), path.as_bytes(), &args, &mut scratch);
    (
        scratch.matched.iter().map(|r| r.get()).collect(),
        scratch.usage.iter().map(|&(m, t)| (m.get(), t)).collect(),
    )
}

fn matches_one(
    method: &str,
    pattern: &str,
    qs: &[(&str, &str)],
    req_method: &str,
    path: &str,
    query: &str,
) -> bool {
    let s = set(vec![rule(method, pattern).qs(qs)]);
    let (matched, usage) = run(&s, req_method, path, query);
    assert_eq!(matched.is_empty(), usage.is_empty());
    !matched.is_empty()
}

/// §1.11 rows 1–19: master spec, the "master result" column.
#[test]
fn master_spec_table() {
    let a1 = &[("a_param", "1")][..];
    // (rule method, pattern, querystring_parameters, request method, path, query, master result)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
        bool,
    );
    let rows: &[Row<'_>] = &[
        ("GET", "/abc", a1, "GET", "/abc", "a_param=1", true),
        ("GET", "/abc", &[], "GET", "/abc", "a_param=1", true),
        ("GET", "/abc", a1, "POST", "/abc", "a_param=1", false),
        ("GET", "/abc", a1, "GET", "/aaa", "a_param=1", false),
        ("GET", "/abc", a1, "GET", "/abc", "a_param=2", false),
        ("GET", "/abc", a1, "POST", "/def", "x=y", false),
        (
            "GET",
            "/foo/{wildcard}/bar",
            &[],
            "GET",
            "/foo/a@b/bar",
            "",
            true,
        ),
        (
            "GET",
            "/foo/{wildcard}/bar",
            &[],
            "GET",
            "/foo/a:b/bar",
            "",
            true,
        ),
        (
            "GET",
            "/foo/{wildcard}/bar",
            &[],
            "GET",
            "/foo/a%b/bar",
            "",
            true,
        ),
        ("GET", "/foo//bar", &[], "GET", "/foo/bar", "", true),
        ("GET", "/foo///bar", &[], "GET", "/foo/bar", "", true),
        ("GET", "/foo/ /bar", &[], "GET", "/foo/ /bar", "", true),
        ("GET", "/foo/bar///", &[], "GET", "/foo/bar/", "", true),
        ("GET", "///foo///bar///", &[], "GET", "/foo/bar/", "", true),
        ("ANY", "/foo/", &[], "GET", "/foo/", "", true),
        ("ANY", "/foo/", &[], "POST", "/foo/", "", true),
        ("ANY", "/foo/", &[], "PUT", "/foo/", "", true),
        ("ANY", "/foo/", &[], "DELETE", "/foo/", "", true),
        ("ANY", "/foo/", &[], "PATCH", "/foo/", "", true),
    ];
    for (i, &(m, pattern, qs, rm, path, query, want)) in rows.iter().enumerate() {
        assert_eq!(
            matches_one(m, pattern, qs, rm, path, query),
            want,
            "row {}: {m} {pattern} vs {rm} {path}?{query}",
            i + 1
        );
    }
}

#[test]
fn master_facts_beyond_the_table() {
    // `{var}` accepts an empty value; literal values are exact, not prefixes.
    assert!(matches_one("GET", "/a", &[("q", "{v}")], "GET", "/a", "q="));
    assert!(!matches_one(
        "GET",
        "/a",
        &[("q", "ab")],
        "GET",
        "/a",
        "q=abc"
    ));
    // The matcher itself does not merge slashes in the request (NGINX already did).
    assert!(!matches_one("GET", "/foo/bar", &[], "GET", "/foo//bar", ""));
    // Prefix match and `$`.
    assert!(matches_one("GET", "/foo", &[], "GET", "/foobar", ""));
    assert!(!matches_one("GET", "/foo$", &[], "GET", "/foobar", ""));
    assert!(matches_one("GET", "/foo$", &[], "GET", "/foo", ""));
    // `.` is literal.
    assert!(!matches_one("GET", "/a.json", &[], "GET", "/axjson", ""));
    // Methods are exact and case-sensitive; no HEAD->GET.
    assert!(!matches_one("get", "/", &[], "GET", "/", ""));
    assert!(!matches_one("GET", "/", &[], "HEAD", "/", ""));
    assert!(matches_one("OPTIONS", "/", &[], "OPTIONS", "/x", ""));
    // `+` is a regex quantifier, as in APIcast.
    assert!(matches_one("GET", "/a+b", &[], "GET", "/aaab", ""));
    assert!(!matches_one("GET", "/a+b", &[], "GET", "/a+b", ""));
    // The query part of a pattern plays no role without querystring_parameters.
    assert!(matches_one(
        "GET",
        "/foo?bar=baz",
        &[],
        "GET",
        "/foo",
        "bar=other"
    ));
    // Case-sensitive paths.
    assert!(!matches_one("GET", "/abc", &[], "GET", "/ABC", ""));
    // Placeholders stop at '/'.
    assert!(!matches_one("GET", "/{a}$", &[], "GET", "/x/y", ""));
}

/// `t/apicast-mapping-rules.t` TEST 5 and the matcher spec: all matches add up, `last` stops
/// only when it matches.
#[test]
fn usage_is_summed_and_last_stops_only_on_a_match() {
    let s = set(vec![
        rule("GET", "/").delta(0, 1),
        rule("GET", "/i_dont_match").delta(0, 100).last(),
        rule("GET", "/abc").delta(0, 2).last(),
        rule("GET", "/abc/def").delta(0, 10),
    ]);
    let (matched, usage) = run(&s, "GET", "/abc/def", "user_key=uk");
    assert_eq!(matched, [0, 2]);
    assert_eq!(usage, [(0, 3)]);

    // hits+1 (match), hits+2 (no match), hits+3 (match) = 4
    let s = set(vec![
        rule("GET", "/").delta(0, 1),
        rule("GET", "/nope").delta(0, 2),
        rule("ANY", "/").delta(0, 3),
    ]);
    assert_eq!(run(&s, "GET", "/x", "").1, [(0, 4)]);
}

#[test]
fn evaluation_follows_array_order_across_methods_and_regexes() {
    // A `last` ANY rule listed first stops a later GET rule; a regex rule in between counts.
    let s = set(vec![
        rule("GET", "/a+").delta(1, 5),
        rule("ANY", "/a").delta(0, 1).last(),
        rule("GET", "/a").delta(2, 7),
    ]);
    let (matched, usage) = run(&s, "GET", "/a", "");
    assert_eq!(matched, [0, 1]);
    assert_eq!(usage, [(0, 1), (1, 5)]);
}

#[test]
fn delta_zero_and_negative_totals_are_dropped() {
    let s = set(vec![rule("GET", "/").delta(0, 0)]);
    let (matched, usage) = run(&s, "GET", "/", "");
    assert_eq!(matched, [0], "the rule matched");
    assert!(usage.is_empty(), "but contributes nothing");

    let s = set(vec![
        rule("GET", "/").delta(0, -1),
        rule("GET", "/abc").delta(0, 2),
        rule("GET", "/abc").delta(1, -3),
    ]);
    assert_eq!(run(&s, "GET", "/abc", "").1, [(0, 1)]);
}

/// `t/apicast-mapping-rules.t` TEST 1–4 and `t/apicast.t` TEST 9–11.
#[test]
fn integration_query_cases() {
    let s = set(vec![rule(
        "GET",
        "/{env}/video/encode?size={size}&speed=2x",
    )
    .qs(&[("size", "{size}"), ("speed", "2x")])
    .delta(0, 2)]);
    let (_, usage) = run(
        &s,
        "GET",
        "/staging/video/encode",
        "size=100&speed=3x&user_key=foo&speed=2x",
    );
    assert_eq!(usage, [(0, 2)]);

    let s = set(vec![rule("POST", "/foo?bar=baz")
        .qs(&[("bar", "baz")])
        .delta(0, 7)]);
    assert_eq!(
        run(&s, "POST", "/foo", "bar=baz&user_key=somekey").1,
        [(0, 7)]
    );
    assert_eq!(
        run_with_body(&s, "POST", "/foo", "user_key=somekey", Some("bar=baz")).1,
        [(0, 7)]
    );

    let s = set(vec![rule("POST", "/foo?a_param=val1&another_param=val2")
        .qs(&[("a_param", "val1"), ("another_param", "val2")])]);
    assert_eq!(
        run_with_body(
            &s,
            "POST",
            "/foo",
            "a_param=val3&another_param=val2&user_key=k",
            Some("a_param=val1")
        )
        .1,
        [(0, 1)]
    );

    let s = set(vec![rule("GET", "/foo?bar=baz").qs(&[("bar", "baz")])]);
    assert!(run(&s, "GET", "/foo", "bar=foo&user_key=somekey")
        .0
        .is_empty());
    assert_eq!(
        run(&s, "GET", "/foo", "bar=baz&user_key=somekey").1,
        [(0, 1)]
    );

    let s = set(vec![rule("GET", "/foo?bar={baz}")
        .qs(&[("bar", "{baz}")])
        .delta(0, 3)]);
    assert_eq!(
        run(&s, "GET", "/foo", "bar={foo}&user_key=somekey").1,
        [(0, 3)]
    );
}

#[test]
fn escaped_patterns_match_escaped_paths() {
    // `t/apicast-mapping-rules.t` TEST 6: the literal pattern /foo%20/bar/.
    assert!(matches_one(
        "GET",
        "/foo%20/bar/",
        &[],
        "GET",
        "/foo%20/bar/",
        ""
    ));
    assert!(matches_one(
        "GET",
        "/one/{test}",
        &[],
        "GET",
        "/one/12%2012",
        ""
    ));
}

#[test]
fn uncompilable_patterns_never_match() {
    let inputs = vec![RuleInput {
        method: "GET".into(),
        pattern: r"/abc\{d\}".into(),
        analysis: analyze(r"/abc\{d\}"),
        metric: MetricIndex::new(0),
        delta: 1,
        last: false,
        conditions: vec![],
    }];
    let (s, broken) = RuleSet::compile(inputs);
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].rule, 0);
    assert!(run(&s, "GET", "/abc", "").0.is_empty());
    assert!(run(&s, "GET", r"/abc\x", "").0.is_empty());
}

#[test]
fn many_rules_only_the_right_ones_match() {
    let patterns: Vec<String> = (0..2000)
        .map(|i| format!("/v1/resource{i}/{{id}}.json"))
        .collect();
    let s = set(patterns
        .iter()
        .enumerate()
        .map(|(i, p)| rule(if i % 2 == 0 { "GET" } else { "POST" }, p).delta(i as u32, 1))
        .collect());
    assert_eq!(run(&s, "GET", "/v1/resource1234/7.json", "").0, [1234]);
    assert_eq!(run(&s, "POST", "/v1/resource1235/7.json", "").0, [1235]);
    assert!(run(&s, "GET", "/v1/resource1235/7.json", "").0.is_empty());
    assert!(run(&s, "GET", "/v1/resource1234/.json", "").0.is_empty());
}

/// Copying the `ANY` rules under each method's root is an optimisation: near the node limit
/// it is not made (one shared root instead), and never turns into a refusal.
#[test]
fn any_rules_are_copied_only_within_the_node_limit() {
    let inputs = |patterns: &[(&str, &str)]| -> Vec<RuleInput> {
        patterns
            .iter()
            .map(|&(method, pattern)| RuleInput {
                method: method.into(),
                pattern: pattern.into(),
                analysis: analyze(pattern),
                metric: MetricIndex::new(0),
                delta: 1,
                last: false,
                conditions: vec![],
            })
            .collect()
    };
    let rules = [
        ("GET", "/get/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("POST", "/post/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        ("ANY", "/any/cccccccccccccccccccccccccccccc"),
    ];
    let roomy = RuleSet::build(inputs(&rules), RuleLimits::DEFAULT);
    assert!(roomy.set.any_copied);
    // Enough nodes for every rule once, not for the copies.
    let tight = RuleLimits {
        max_nodes: roomy.nodes - 20,
        ..RuleLimits::DEFAULT
    };
    let built = RuleSet::build(inputs(&rules), tight);
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    assert!(!built.set.any_copied);
    for method in ["GET", "POST", "PUT"] {
        let (matched, _) = run(
            &built.set,
            method,
            "/any/cccccccccccccccccccccccccccccc",
            "",
        );
        assert_eq!(matched, [2], "{method}");
    }
    assert_eq!(
        run(&built.set, "GET", "/get/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "").0,
        [0]
    );
}
