//! Mapping rules: compiled once per service, evaluated per request (reference §1).
//!
//! Plain patterns live in one [`trie::Trie`] with a root per HTTP method (holding that
//! method's rules and the `ANY` rules) and one root for other methods (`ANY` rules only), so a
//! request walks exactly one root. The common regex constructs are trie tokens too (see
//! [`pattern`]); patterns beyond them keep APIcast's regex (`regex-lite`), each gated in the
//! same trie by its literal prefix, so a regex only runs when the path starts with that
//! prefix. Both feed one candidate list, which is then evaluated in configuration order:
//! query conditions, `last`, and per-metric sums.

pub mod pattern;
pub mod query;
pub mod trie;

use crate::args::RequestArgs;
use pattern::{Analysis, PatternKind, Token};
use query::QueryCondition;
use trie::{Trie, TrieBuilder, WalkScratch};

/// Marks a trie entry as "try regex rule n" rather than "rule n matched".
const REGEX_GATE: u32 = 1 << 31;

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

/// What evaluation reads of a rule, kept dense (24 bytes) so a large rule table costs few
/// cache lines; conditions live in one flat table, patterns apart (explain and debug only).
#[derive(Debug, Clone)]
struct Rule {
    delta: i64,
    metric: u32,
    conditions_start: u32,
    conditions_len: u32,
    last: bool,
}

#[derive(Debug, Clone)]
struct RegexRule {
    rule: u32,
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
    /// Root for methods no rule names: only `ANY` rules.
    other_root: u32,
    regex_rules: Vec<RegexRule>,
    rules: Vec<Rule>,
    conditions: Vec<QueryCondition>,
    patterns: Vec<Box<str>>,
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

/// The literal text every path matching regex `pattern` starts with, as trie tokens; empty
/// when the pattern has a top-level `|` (APIcast's `^a|b` matches `b` anywhere).
fn regex_gate(pattern: &str) -> Vec<Token> {
    let tokens = pattern::literal_prefix(pattern);
    tokens.into_iter().map(Token::Byte).collect()
}

impl RuleSet {
    /// Compiles the rules. Patterns whose regex does not compile are returned with the reason;
    /// they never match.
    pub fn compile(inputs: Vec<RuleInput>) -> (Self, Vec<Uncompilable>) {
        let mut builder = TrieBuilder::new();
        let mut method_roots: Vec<(Box<[u8]>, u32)> = Vec::new();
        for input in &inputs {
            let method = input.method.as_bytes();
            if input.method != ANY_METHOD && !method_roots.iter().any(|(m, _)| m.as_ref() == method)
            {
                method_roots.push((method.into(), builder.add_root()));
            }
        }
        let other_root = builder.add_root();
        let all_roots: Vec<u32> = method_roots
            .iter()
            .map(|&(_, r)| r)
            .chain(std::iter::once(other_root))
            .collect();
        let roots_for = |method: &str| -> Vec<u32> {
            if method == ANY_METHOD {
                all_roots.clone()
            } else {
                method_roots
                    .iter()
                    .filter(|(m, _)| m.as_ref() == method.as_bytes())
                    .map(|&(_, r)| r)
                    .collect()
            }
        };

        let mut regex_rules = Vec::new();
        let mut rules = Vec::with_capacity(inputs.len());
        let mut conditions = Vec::new();
        let mut patterns = Vec::with_capacity(inputs.len());
        let mut broken = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let id = u32::try_from(index).unwrap_or(u32::MAX);
            match &input.analysis.kind {
                PatternKind::Trie(variants) => {
                    for root in roots_for(&input.method) {
                        for tokens in variants {
                            builder.insert(root, tokens, id);
                        }
                    }
                }
                PatternKind::Regex(source) => match regex_lite::Regex::new(source) {
                    Ok(regex) => {
                        let gate = REGEX_GATE | u32::try_from(regex_rules.len()).unwrap_or(0);
                        let prefix = regex_gate(&input.pattern);
                        for root in roots_for(&input.method) {
                            builder.insert(root, &prefix, gate);
                        }
                        regex_rules.push(RegexRule { rule: id, regex });
                    }
                    Err(e) => broken.push(Uncompilable {
                        rule: index,
                        reason: first_line(&e.to_string()),
                    }),
                },
            }
            rules.push(Rule {
                delta: input.delta,
                metric: input.metric,
                conditions_start: u32::try_from(conditions.len()).unwrap_or(u32::MAX),
                conditions_len: u32::try_from(input.conditions.len()).unwrap_or(u32::MAX),
                last: input.last,
            });
            conditions.extend(input.conditions);
            patterns.push(input.pattern.into_boxed_str());
        }
        let set = Self {
            trie: builder.build(),
            method_roots,
            other_root,
            regex_rules,
            rules,
            conditions,
            patterns,
        };
        (set, broken)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Bytes the compiled trie occupies (its arena and rule tables).
    pub fn trie_bytes(&self) -> usize {
        self.trie.size_bytes()
    }

    /// Whether any rule has `querystring_parameters` (which body arguments can satisfy).
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    pub fn trie_nodes(&self) -> usize {
        self.trie.node_count()
    }

    pub fn regex_rule_count(&self) -> usize {
        self.regex_rules.len()
    }

    /// The pattern of rule `id`, as configured.
    pub fn pattern(&self, id: u32) -> &str {
        self.patterns.get(id as usize).map_or("", |p| p)
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

        let root = self
            .method_roots
            .iter()
            .find(|(m, _)| m.as_ref() == method)
            .map_or(self.other_root, |&(_, root)| root);
        self.trie.walk(root, path, walk, candidates);
        if candidates.iter().any(|&c| c & REGEX_GATE != 0) {
            // The normalised path is ASCII; anything else cannot match a regex rule.
            let text = std::str::from_utf8(path).ok();
            candidates.retain_mut(|c| {
                if *c & REGEX_GATE == 0 {
                    return true;
                }
                match (self.regex_rules.get((*c & !REGEX_GATE) as usize), text) {
                    (Some(r), Some(text)) if r.regex.is_match(text) => {
                        *c = r.rule;
                        true
                    }
                    _ => false,
                }
            });
        }
        candidates.sort_unstable();
        candidates.dedup();

        for &id in candidates.iter() {
            let Some(rule) = self.rules.get(id as usize) else {
                continue;
            };
            let start = rule.conditions_start as usize;
            let conditions = self
                .conditions
                .get(start..start + rule.conditions_len as usize)
                .unwrap_or_default();
            if !conditions.iter().all(|c| c.holds(args)) {
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
