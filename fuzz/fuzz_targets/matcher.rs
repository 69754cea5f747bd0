//! Differential: the mapping-rule matcher (trie, and regex-lite for what the trie cannot
//! express) against the regex APIcast builds for each pattern, run by the `regex` crate; the
//! reference of `regex_patterns_match_what_the_apicast_regex_matches` in tests/properties.rs.
//!
//! 1..8 patterns (all `GET`, metric i, delta 1) and one path, in the format described in
//! src/lib.rs. Compared only where the reference means something: rules the RuleSet reports as
//! uncompilable, refused patterns (`PatternKind::Refused`: the configuration would be refused)
//! and patterns whose reference regex the `regex` crate refuses are left out of both sides; a
//! path that is not ASCII (the normalised path always is) is skipped, and so is an evaluation
//! that stopped at its work bound (`Evaluated::Exhausted`: nothing matched). Also checked: the
//! usage follows the matched rules, and a reused `MatchScratch` answers as a fresh one.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tollgate::args::RequestArgs;
use tollgate::rules::pattern::{analyze, apicast_regex, PatternKind};
use tollgate::rules::{Evaluated, MatchScratch, RuleInput, RuleSet};
use tollgate::MetricIndex;
use tollgate_fuzz::MatcherInput;

thread_local! {
    /// Reused across inputs, and checked against a fresh one each time.
    static REUSED: RefCell<MatchScratch> = RefCell::new(MatchScratch::default());
    /// Reference regexes by source. Building one (Unicode classes) costs far more than
    /// everything else an input does, and mutated inputs repeat most of their patterns.
    static REFERENCES: RefCell<HashMap<String, Option<regex::Regex>>> =
        RefCell::new(HashMap::new());
}

/// How many reference regexes are kept; the cache starts over beyond.
const MAX_CACHED: usize = 512;

/// `regex::Regex::new(source)`, as `regex_patterns_match_what_the_apicast_regex_matches` builds
/// the reference; `None` when the regex crate refuses it.
fn reference(source: &str) -> Option<regex::Regex> {
    REFERENCES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(source) {
            return re.clone();
        }
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let re = regex::Regex::new(source).ok();
        cache.insert(source.to_owned(), re.clone());
        re
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Some(input) = MatcherInput::decode(bytes) else {
        return;
    };
    let Ok(path) = std::str::from_utf8(&input.path) else {
        return;
    };
    if !path.is_ascii() {
        return;
    }
    let patterns: Vec<String> = input
        .patterns
        .into_iter()
        .filter_map(|p| String::from_utf8(p).ok())
        .collect();
    if patterns.is_empty() {
        return;
    }
    let inputs: Vec<RuleInput> = patterns
        .iter()
        .enumerate()
        .map(|(i, pattern)| RuleInput {
            method: "GET".into(),
            pattern: pattern.clone(),
            analysis: analyze(pattern),
            metric: MetricIndex::new(i as u32),
            delta: 1,
            last: false,
            conditions: vec![],
        })
        .collect();
    // The variant's name (trie, regex, ...), whatever variants the core has.
    let kinds: Vec<String> = inputs
        .iter()
        .map(|i| {
            let kind = format!("{:?}", i.analysis.kind);
            kind.split('(').next().unwrap_or_default().to_owned()
        })
        .collect();
    // A refused pattern (nested deeper than PCRE accepts) never matches: the configuration
    // would be refused, so there is nothing to compare.
    let refused: Vec<bool> = inputs
        .iter()
        .map(|i| matches!(i.analysis.kind, PatternKind::Refused(_)))
        .collect();
    let (set, broken) = RuleSet::compile(inputs);
    let mut scratch = MatchScratch::default();
    let evaluated = set.evaluate(
        b"GET",
        path.as_bytes(),
        &RequestArgs::default(),
        &mut scratch,
    );

    // Every rule has its own metric and delta 1: usage is the matched rules, in id order.
    let usage: Vec<(MetricIndex, i64)> = scratch
        .matched
        .iter()
        .map(|&i| (MetricIndex::new(i.get()), 1))
        .collect();
    assert_eq!(
        scratch.usage, usage,
        "usage does not follow the matched rules"
    );
    REUSED.with(|r| {
        let reused = &mut *r.borrow_mut();
        let again = set.evaluate(b"GET", path.as_bytes(), &RequestArgs::default(), reused);
        assert_eq!(
            again, evaluated,
            "a reused scratch changes how evaluation ends"
        );
        assert_eq!(
            reused.matched, scratch.matched,
            "a reused scratch changes the answer"
        );
        assert_eq!(
            reused.usage, scratch.usage,
            "a reused scratch changes the usage"
        );
    });

    if evaluated == Evaluated::Exhausted {
        // Stopped at the bound on one evaluation's work: nothing matched, nothing to compare.
        assert!(
            scratch.matched.is_empty(),
            "an exhausted evaluation matched rules"
        );
        return;
    }

    let references: Vec<String> = patterns.iter().map(|p| apicast_regex(p)).collect();
    let compiled: Vec<Option<regex::Regex>> = references.iter().map(|re| reference(re)).collect();
    let compared =
        |i: usize| compiled[i].is_some() && !refused[i] && !broken.iter().any(|b| b.rule == i);
    let got: Vec<u32> = scratch
        .matched
        .iter()
        .map(|i| i.get())
        .filter(|&i| compared(i as usize))
        .collect();
    let expected: Vec<u32> = compiled
        .iter()
        .enumerate()
        .filter(|&(i, re)| compared(i) && re.as_ref().is_some_and(|re| re.is_match(path)))
        .map(|(i, _)| i as u32)
        .collect();
    if got != expected {
        eprintln!("\n==== matcher mismatch ====");
        eprintln!("path:     {path:?}");
        for (i, p) in patterns.iter().enumerate() {
            let status = if refused[i] {
                "refused, not compared"
            } else if broken.iter().any(|b| b.rule == i) {
                "uncompilable in the RuleSet, not compared"
            } else if compiled[i].is_none() {
                "reference regex refused by the regex crate, not compared"
            } else {
                kinds[i].as_str()
            };
            eprintln!("rule {i}:   pattern {p:?}");
            eprintln!("          reference {:?} ({status})", references[i]);
        }
        eprintln!("matched:  {got:?} (all: {:?})", scratch.matched);
        eprintln!("expected: {expected:?}");
        eprintln!("==========================\n");
        panic!(
            "the matcher disagrees with the APIcast regex: path {path:?}, patterns {patterns:?}"
        );
    }
});
