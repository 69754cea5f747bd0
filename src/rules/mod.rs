//! Mapping rules: compiled once per service, evaluated per request (reference §1).
//!
//! Plain patterns live in one [`trie::Trie`] with a root per method and one for `ANY`; patterns
//! that use regex syntax keep APIcast's regex (`regex-lite`) and are tried one by one. Both feed
//! the same candidate list, which is then evaluated in configuration order: query conditions,
//! `last`, and per-metric sums.

pub mod pattern;
pub mod query;
pub mod trie;

use crate::args::RequestArgs;
use pattern::{Analysis, PatternKind};
use query::QueryCondition;
use trie::{Trie, TrieBuilder, WalkScratch};

/// A rule ready to be compiled into a [`RuleSet`].
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub method: String,
    pub pattern: String,
    pub analysis: Analysis,
    pub metric: u32,
    pub delta: i64,
    pub last: bool,
    pub conditions: Vec<QueryCondition>,
}

#[derive(Debug, Clone)]
struct Rule {
    metric: u32,
    delta: i64,
    last: bool,
    conditions: Box<[QueryCondition]>,
    pattern: Box<str>,
}

#[derive(Debug, Clone)]
struct RegexRule {
    rule: u32,
    /// `None` for `ANY`.
    method: Option<Box<[u8]>>,
    regex: regex_lite::Regex,
}

/// A rule whose pattern could not be compiled: it never matches (as in APIcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncompilable {
    pub rule: usize,
    pub reason: String,
}

/// One service's mapping rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    trie: Trie,
    method_roots: Vec<(Box<[u8]>, u32)>,
    any_root: u32,
    regex_rules: Vec<RegexRule>,
    rules: Vec<Rule>,
}

/// Per-request working memory, reused across requests.
#[derive(Debug, Default, Clone)]
pub struct MatchScratch {
    walk: WalkScratch,
    candidates: Vec<u32>,
    /// Rules that matched, in evaluation order (up to and including a matching `last` rule).
    pub matched: Vec<u32>,
    /// `(metric id, total)` for totals > 0, sorted by metric id.
    pub usage: Vec<(u32, i64)>,
}

pub const ANY_METHOD: &str = "ANY";

impl RuleSet {
    /// Compiles the rules. Patterns whose regex does not compile are returned with the reason;
    /// they never match.
    pub fn compile(inputs: Vec<RuleInput>) -> (Self, Vec<Uncompilable>) {
        let mut builder = TrieBuilder::new();
        let any_root = builder.add_root();
        let mut method_roots: Vec<(Box<[u8]>, u32)> = Vec::new();
        let mut regex_rules = Vec::new();
        let mut rules = Vec::with_capacity(inputs.len());
        let mut broken = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let id = u32::try_from(index).unwrap_or(u32::MAX);
            let is_any = input.method == ANY_METHOD;
            match &input.analysis.kind {
                PatternKind::Plain(tokens) => {
                    let root = if is_any {
                        any_root
                    } else {
                        match method_roots
                            .iter()
                            .find(|(m, _)| m.as_ref() == input.method.as_bytes())
                        {
                            Some(&(_, root)) => root,
                            None => {
                                let root = builder.add_root();
                                method_roots.push((input.method.as_bytes().into(), root));
                                root
                            }
                        }
                    };
                    builder.insert(root, tokens, id);
                }
                PatternKind::Regex(source) => match regex_lite::Regex::new(source) {
                    Ok(regex) => regex_rules.push(RegexRule {
                        rule: id,
                        method: (!is_any).then(|| input.method.as_bytes().into()),
                        regex,
                    }),
                    Err(e) => broken.push(Uncompilable {
                        rule: index,
                        reason: first_line(&e.to_string()),
                    }),
                },
            }
            rules.push(Rule {
                metric: input.metric,
                delta: input.delta,
                last: input.last,
                conditions: input.conditions.into(),
                pattern: input.pattern.into(),
            });
        }
        let set = Self {
            trie: builder.build(),
            method_roots,
            any_root,
            regex_rules,
            rules,
        };
        (set, broken)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn trie_nodes(&self) -> usize {
        self.trie.node_count()
    }

    pub fn regex_rule_count(&self) -> usize {
        self.regex_rules.len()
    }

    /// The pattern of rule `id`, as configured.
    pub fn pattern(&self, id: u32) -> &str {
        self.rules.get(id as usize).map_or("", |r| &r.pattern)
    }

    /// Evaluates the rules for one request: fills `scratch.matched` and `scratch.usage`.
    /// `path` is the normalised, re-escaped path ([`crate::path::normalize`]).
    pub fn evaluate(
        &self,
        method: &[u8],
        path: &[u8],
        args: &RequestArgs<'_>,
        scratch: &mut MatchScratch,
    ) {
        let MatchScratch {
            walk,
            candidates,
            matched,
            usage,
        } = scratch;
        candidates.clear();
        matched.clear();
        usage.clear();

        let method_root = self
            .method_roots
            .iter()
            .find(|(m, _)| m.as_ref() == method)
            .map(|&(_, root)| root);
        match method_root {
            Some(root) => self
                .trie
                .walk(&[root, self.any_root], path, walk, candidates),
            None => self.trie.walk(&[self.any_root], path, walk, candidates),
        }
        if !self.regex_rules.is_empty() {
            // The normalised path is ASCII; anything else cannot match a regex rule.
            if let Ok(text) = std::str::from_utf8(path) {
                for r in &self.regex_rules {
                    let method_ok = r.method.as_deref().is_none_or(|m| m == method);
                    if method_ok && r.regex.is_match(text) {
                        candidates.push(r.rule);
                    }
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();

        for &id in candidates.iter() {
            let Some(rule) = self.rules.get(id as usize) else {
                continue;
            };
            if !rule.conditions.iter().all(|c| c.holds(args)) {
                continue;
            }
            matched.push(id);
            match usage.iter_mut().find(|(m, _)| *m == rule.metric) {
                Some((_, total)) => *total = total.saturating_add(rule.delta),
                None => usage.push((rule.metric, rule.delta)),
            }
            if rule.last {
                break;
            }
        }
        // APIcast merges usage into the request context, dropping totals <= 0.
        usage.retain(|&(_, total)| total > 0);
        usage.sort_unstable_by_key(|&(metric, _)| metric);
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
