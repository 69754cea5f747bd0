//! Regressions for the inputs that once made one decision slow, big or fatal (issue 7): each
//! family decides as APIcast would (checked against APIcast's rule-by-rule regex loop), within
//! the stated bounds of work and memory. Work is counted, not timed: `make bench` prints the
//! times (`benches/worst_cases.rs`).
// The reference regex engine and threads are native-only.
#![cfg(not(target_arch = "wasm32"))]
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{json, Value};
use tollgate::rules::pattern::apicast_regex;
use tollgate::rules::trie::WalkLimits;
use tollgate::rules::MatchLimits;
use tollgate::{load, Compiled, DenyReason, RequestView, Scratch, Verdict};

use tollgate_testsupport::threescale::{rule, Service, HOST};

fn service(rules: Vec<Value>) -> Value {
    Service::new(7).rules(rules).build()
}

fn compiled(rules: Vec<Value>) -> Compiled {
    let loaded = load(json!({"services": [service(rules)]}).to_string().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.compiled.unwrap()
}

/// The same rules with `request_line_max_bytes` raised, so a 60 KB target is matched.
fn compiled_with_line_max(rules: Vec<Value>, line_max: u32) -> Compiled {
    let loaded = load(json!({"services": [service(rules)]}).to_string().as_bytes());
    let mut doc = serde_json::to_value(loaded.config.unwrap()).unwrap();
    doc["request_line_max_bytes"] = json!(line_max);
    let loaded = load(doc.to_string().as_bytes());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.compiled.unwrap()
}

/// A target of exactly `len` bytes: `path_head` repeated `fill`, then the credentials.
fn target(head: &str, fill: &str, len: usize) -> String {
    let tail = "?user_key=k";
    let mut t = head.to_owned();
    while t.len() + fill.len() + tail.len() <= len {
        t.push_str(fill);
    }
    t.push_str(tail);
    t
}

struct Seen {
    verdict: Verdict,
    matched: Vec<u32>,
    steps: u64,
    dfa_states: u64,
    regex_units: u64,
    args_read: u32,
    /// Heap the scratch held right after the decision.
    scratch_bytes: usize,
}

fn decide(c: &Compiled, scratch: &mut Scratch, target: &str) -> Seen {
    let headers: Vec<(&str, &str)> = Vec::new();
    let view = RequestView {
        method: b"GET",
        authority: HOST.as_bytes(),
        target: target.as_bytes(),
        headers: &headers,
        body: None,
    };
    let verdict = c
        .decide(&view, tollgate::time::Timestamp::default(), scratch)
        .verdict;
    let work = scratch.match_work();
    Seen {
        verdict,
        matched: scratch.matched_rules().iter().map(|r| r.get()).collect(),
        steps: work.steps,
        dfa_states: work.dfa_states,
        regex_units: scratch.rules().regex_units(),
        args_read: scratch.rules().args_read(),
        scratch_bytes: scratch.capacity_bytes(),
    }
}

/// The rules APIcast would match: every rule's regex, tried in order.
fn apicast_matches(patterns: &[String], path: &str) -> Vec<u32> {
    // Patterns that differ only in placeholder names are one regex: try each once.
    let mut verdicts: std::collections::HashMap<String, bool> = Default::default();
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let source = apicast_regex(p);
            *verdicts
                .entry(source)
                .or_insert_with_key(|s| regex::Regex::new(s).unwrap().is_match(path))
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// What one decision may hold: the path twice (decoded and escaped), the DFA cache, live
/// positions, and a little more.
fn memory_bound(target_len: usize) -> usize {
    2 * target_len + WalkLimits::DEFAULT.cache_bytes + 64 * 1024
}

/// Decides `family` with an 8 KiB and a 60 KB target and checks APIcast's answer, the work
/// bound, that the longer target costs about the same steps (the DFA remembers), and the
/// memory bound.
fn check_family(name: &str, patterns: &[String], head: &str, fill: &str) -> Seen {
    let rules: Vec<Value> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| rule("GET", p, &format!("m{i}")))
        .collect();
    let short = compiled(rules.clone());
    let long = compiled_with_line_max(rules, 65_536);
    let mut scratch = Scratch::new();
    let mut results = Vec::new();
    for (c, len) in [(&short, 8_192 - "GET  HTTP/1.1\r\n".len()), (&long, 60_000)] {
        let t = target(head, fill, len);
        let seen = decide(c, &mut scratch, &t);
        let path = t.split('?').next().unwrap();
        let want = apicast_matches(patterns, path);
        let expected = if want.is_empty() {
            Verdict::Deny(DenyReason::NoMatch)
        } else {
            Verdict::Authorize
        };
        assert_eq!(seen.verdict, expected, "{name} at {len} bytes");
        assert_eq!(seen.matched, want, "{name} at {len} bytes");
        assert!(
            seen.steps <= WalkLimits::DEFAULT.steps,
            "{name}: {} steps",
            seen.steps
        );
        assert!(
            seen.scratch_bytes <= memory_bound(len),
            "{name} at {len} bytes: the scratch holds {} bytes",
            seen.scratch_bytes
        );
        results.push(seen);
    }
    let (s, l) = (&results[0], &results[1]);
    assert!(
        l.steps <= 2 * s.steps + 2_048 && l.dfa_states <= 2 * s.dfa_states + 64,
        "{name}: 8 KiB took {} steps and {} DFA states, 60 KB {} and {}",
        s.steps,
        s.dfa_states,
        l.steps,
        l.dfa_states
    );
    // A normal request afterwards gets the memory back.
    decide(&long, &mut scratch, "/?user_key=k");
    let kept = decide(&long, &mut scratch, "/?user_key=k").scratch_bytes;
    assert!(
        kept <= 4 * tollgate::decision::SCRATCH_RETAIN_BYTES,
        "{name}: the scratch keeps {kept} bytes after an oversized request"
    );
    results.pop().unwrap()
}

#[test]
fn a_thousand_identical_rules_are_reported_once_per_walk() {
    for n in [100, 1_000] {
        let patterns = vec!["/{a}x".to_owned(); n];
        let seen = check_family(&format!("{n} x /{{a}}x"), &patterns, "/", "x");
        assert_eq!(seen.matched.len(), n);
    }
}

#[test]
fn a_thousand_textually_distinct_rules_on_one_trie_path() {
    let patterns: Vec<String> = (0..1_000)
        .map(|i| format!("/r{{p{i}}}/{{id}}.json"))
        .collect();
    check_family("/r{p<i>}/{id}.json", &patterns, "/ra/", ".json");
    let patterns: Vec<String> = (0..1_000).map(|i| format!("/r{i}/{{id}}.json")).collect();
    check_family("/r<i>/{id}.json", &patterns, "/r7/", ".json");
}

#[test]
fn chained_placeholders_cost_no_more_per_byte_however_many() {
    let chain: String = (0..32).map(|i| format!("{{p{i}}}")).collect();
    check_family("32 placeholders $", &[format!("/{chain}$")], "/", "a");
    let seen = check_family("32 placeholders x", &[format!("/{chain}x")], "/", "a");
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
}

#[test]
fn what_once_needed_the_regex_engine_is_matched_by_the_trie() {
    // A top-level '|', `(a|b)*` a hundred times, and the mix from the issue.
    let seen = check_family("/a|/v", &["/a|/v".to_owned()], "/", "v");
    assert_eq!(seen.regex_units, 0);
    let star = format!("/{}$", "(a|b)*".repeat(100));
    let seen = check_family("(a|b)* x100", &[star], "/", "a");
    assert_eq!(seen.regex_units, 0);
    let mix: Vec<String> = ["/{a}{b}{c}{d}", r"/[a-z]+/\d{2}", "/{a}{b}x", "/u|/v"]
        .map(str::to_owned)
        .to_vec();
    let seen = check_family("mix", &mix, "/", "a");
    assert_eq!(seen.regex_units, 0);
}

#[test]
fn long_labels_after_a_placeholder_stay_within_the_work_bound() {
    check_family(
        "/{a} + x*250",
        &[format!("/{{a}}{}", "x".repeat(250))],
        "/",
        "x",
    );
    let ladder: Vec<String> = (1..=250)
        .map(|i| format!("/{{a}}{}y", "x".repeat(i)))
        .collect();
    check_family("250 rules /{a} + x*i + y", &ladder, "/", "x");
}

/// Rules only a regex engine can evaluate, on a path their prefix matches: the regex work is
/// bounded, and a decision that would need more is refused with NGINX's 414 rather than
/// counted with less usage than APIcast would.
#[test]
fn regex_engine_work_is_bounded() {
    let patterns: Vec<String> = (0..100)
        .map(|i| format!("/v1/(xy|z)+/{{id}}{i}.json"))
        .collect();
    let rules: Vec<Value> = patterns.iter().map(|p| rule("GET", p, "hits")).collect();
    let c = compiled(rules);
    assert_eq!(c.services()[0].rules().regex_rule_count(), 100);
    let mut scratch = Scratch::new();
    // A realistic path: every regex runs, well within the bound.
    let ok = decide(&c, &mut scratch, "/v1/xyxyz/42.xml?user_key=k");
    assert_eq!(ok.verdict, Verdict::Deny(DenyReason::NoMatch));
    assert!(ok.regex_units < MatchLimits::DEFAULT.regex_units / 4);
    let hit = decide(&c, &mut scratch, "/v1/xyz/a0.json?user_key=k");
    assert_eq!(hit.verdict, Verdict::Authorize);
    assert_eq!(hit.matched, [0]);
    // 8 KiB of `xy`: refused once the bound is reached.
    let t = target("/v1/", "xy", 8_000);
    let seen = decide(&c, &mut scratch, &t);
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::MatchLimit));
    assert!(seen.regex_units <= MatchLimits::DEFAULT.regex_units + 8_000 * 64);
    let headers: Vec<(&str, &str)> = Vec::new();
    let view = RequestView {
        method: b"GET",
        authority: HOST.as_bytes(),
        target: t.as_bytes(),
        headers: &headers,
        body: None,
    };
    let response = c
        .decide(&view, tollgate::time::Timestamp::default(), &mut scratch)
        .response()
        .unwrap();
    assert_eq!(response.status, 414);
    // Identical regex patterns are compiled and run once.
    let same: Vec<Value> = (0..1_000)
        .map(|_| rule("GET", "/v1/(xy|z)+/{id}.json", "hits"))
        .collect();
    let c = compiled(same);
    assert_eq!(c.services()[0].rules().regex_rule_count(), 1);
    let seen = decide(&c, &mut scratch, "/v1/xyz/7.json?user_key=k");
    assert_eq!(seen.matched.len(), 1_000);
    assert!(seen.regex_units < 100 * 64);
}

/// 300 rules told apart by a query condition: the query is read once per request, and a run
/// of `&` counts toward lua-nginx-module's 100-argument limit (so `method=m7` after it is not
/// seen, as in APIcast).
#[test]
fn query_conditions_read_the_query_once() {
    let rules: Vec<Value> = (0..300)
        .map(|i| {
            json!({"http_method": "GET", "pattern": "/search", "metric_system_name": format!("m{i}"),
                   "delta": 1, "querystring_parameters": {"method": format!("m{i}")}})
        })
        .collect();
    let c = compiled(rules);
    let mut scratch = Scratch::new();
    let seen = decide(&c, &mut scratch, "/search?method=m7&user_key=k");
    assert_eq!(seen.matched, [7]);
    assert_eq!(seen.args_read, 2);
    let t = format!("/search?{}method=m7&user_key=k", "&".repeat(8_000));
    let seen = decide(&c, &mut scratch, &t);
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
    assert!(seen.args_read <= 100, "{} arguments read", seen.args_read);
    let t = format!("/search?{}method=m7&user_key=k", "&".repeat(98));
    assert_eq!(decide(&c, &mut scratch, &t).matched, [7]);
}

/// A pattern nested thousands of groups deep is refused with its JSON path, in a thread with
/// a 1 MiB stack (V8 traps on less than a few thousand levels of recursion); one at PCRE's
/// limit of 250 still compiles and matches there.
#[test]
fn deeply_nested_patterns_are_refused_without_a_crash() {
    let outcome = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let deep = |n: usize| format!("/{}a{}", "(".repeat(n), ")".repeat(n));
            let doc = json!({"services": [service(vec![rule("GET", &deep(5_000), "hits")])]});
            let loaded = load(doc.to_string().as_bytes());
            assert!(loaded.compiled.is_none());
            let e = loaded.diagnostics.errors().next().unwrap();
            assert_eq!(e.path, "services[0].proxy.proxy_rules[0].pattern");
            assert!(
                e.message.contains("5000 deep") && e.message.contains("250"),
                "{e}"
            );
            // At the limit, in the trie and in the regex engine (a repeated group).
            let at_limit = deep(250);
            let regex = format!("/{}(ab)+{}", "(".repeat(249), ")".repeat(249));
            let c = compiled(vec![rule("GET", &at_limit, "a"), rule("GET", &regex, "b")]);
            assert_eq!(c.services()[0].rules().regex_rule_count(), 1);
            let mut scratch = Scratch::new();
            assert_eq!(decide(&c, &mut scratch, "/a?user_key=k").matched, [0]);
            assert_eq!(decide(&c, &mut scratch, "/abab?user_key=k").matched, [0, 1]);
            assert_eq!(decide(&c, &mut scratch, "/ab?user_key=k").matched, [0, 1]);
            assert_eq!(
                decide(&c, &mut scratch, "/b?user_key=k").matched,
                Vec::<u32>::new()
            );
        })
        .unwrap()
        .join();
    assert!(outcome.is_ok(), "the 1 MiB thread failed");
}

/// Compiling is bounded too: `ANY` rules have one root of their own instead of a copy under
/// each of many methods, and more distinct methods than the limit are refused by name.
#[test]
fn compile_limits_name_themselves() {
    let mut rules: Vec<Value> = (0..64)
        .flat_map(|m| (0..3).map(move |k| rule(&format!("M{m}"), &format!("/m{m}/{k}"), "hits")))
        .collect();
    rules.extend((0..1_000).map(|i| rule("ANY", &format!("/any/{i}/{{id}}"), "hits")));
    let c = compiled(rules.clone());
    let mut scratch = Scratch::new();
    let headers: Vec<(&str, &str)> = Vec::new();
    for method in ["M7", "M63", "GET"] {
        let view = RequestView {
            method: method.as_bytes(),
            authority: HOST.as_bytes(),
            target: b"/any/999/x?user_key=k",
            headers: &headers,
            body: None,
        };
        assert_eq!(
            c.decide(&view, tollgate::time::Timestamp::default(), &mut scratch)
                .verdict,
            Verdict::Authorize
        );
        assert_eq!(
            scratch.matched_rules(),
            [tollgate::RuleIndex::new(64 * 3 + 999)]
        );
    }
    rules.push(rule("M64", "/", "hits"));
    let loaded = load(json!({"services": [service(rules)]}).to_string().as_bytes());
    assert!(loaded.compiled.is_none());
    let e = loaded.diagnostics.errors().next().unwrap();
    assert_eq!(
        e.path,
        format!(
            "services[0].proxy.proxy_rules[{}].http_method",
            64 * 3 + 1_000
        )
    );
    assert!(e.message.contains("64 distinct methods"), "{e}");
}

/// The trie has a node budget for the whole configuration: a document of patterns that
/// expand (16 alternatives each) into more nodes than that is refused, naming the limit.
#[test]
fn the_trie_node_limit_refuses_a_configuration_that_would_exceed_it() {
    let group = "(a|b)(c|d)(e|f)(g|h)";
    let tail = "x".repeat(1_000);
    let rules: Vec<Value> = (0..300)
        .map(|i| rule("GET", &format!("/{i}{group}{tail}"), "hits"))
        .collect();
    let loaded = load(json!({"services": [service(rules)]}).to_string().as_bytes());
    assert!(loaded.compiled.is_none(), "300 x 16 x 1,000 bytes fit?");
    let e = loaded.diagnostics.errors().next().unwrap();
    assert!(e.path.ends_with(".pattern"), "{e}");
    let limit = tollgate::model::compiler::MAX_TRIE_NODES;
    assert!(
        e.message
            .contains(&format!("need more than {limit} trie nodes")),
        "{e}"
    );
}

/// One long rule of placeholders and literals (`/{a}x` 20,000 times) against a path that keeps
/// two positions live all along, never the same two: the DFA would build a state a byte, so
/// the walk steps such stretches in lockstep, and a 60 KB path stays within the bound.
#[test]
fn a_long_run_of_new_small_sets_is_stepped_in_lockstep() {
    let pattern = "/{a}x".repeat(20_000);
    let c = compiled_with_line_max(vec![rule("GET", &pattern, "hits")], 65_536);
    let mut scratch = Scratch::new();
    let path = "/bx".repeat(19_990);
    let seen = decide(&c, &mut scratch, &format!("{path}?user_key=k"));
    // The rule needs 20,000 segments; the path has fewer.
    assert_eq!(seen.verdict, Verdict::Deny(DenyReason::NoMatch));
    let budget = WalkLimits::DEFAULT.steps + WalkLimits::DEFAULT.steps_per_byte * path.len() as u64;
    assert!(seen.steps <= budget / 2, "{} steps of {budget}", seen.steps);
    // Without going back to lockstep: two states an ambiguous byte, about 40,000.
    assert!(
        (seen.dfa_states as usize) < path.len() / 8,
        "{} DFA states: the walk did not go back to lockstep",
        seen.dfa_states
    );
    let full = "/bx".repeat(20_000);
    let c = compiled_with_line_max(vec![rule("GET", &pattern, "hits")], 65_536);
    assert_eq!(
        decide(&c, &mut scratch, &format!("{full}?user_key=k")).verdict,
        Verdict::Authorize
    );
}
