//! Mapping rules: compiled once per service, evaluated per request (reference §1).
//!
//! Plain patterns live in one [`trie::Trie`] with a root per HTTP method (that method's rules)
//! and one root for the `ANY` rules, shared by every method; a request walks its method's root
//! and the `ANY` root. The common regex constructs are trie tokens too (see [`pattern`]);
//! patterns beyond them keep APIcast's regex (`regex-lite`), each gated in the same trie by
//! its literal prefix, so a regex only runs when the path starts with that prefix. Both feed
//! one candidate list, which is then evaluated in configuration order: query conditions,
//! `last`, and per-metric sums.
//!
//! The cost of one evaluation is bounded whatever the rules ([`MatchLimits`]): the walk's
//! automaton work, and what the regex engine may scan. An evaluation that would need more
//! stops and says so ([`Evaluated::Exhausted`]); the caller refuses the request rather than
//! count less usage than APIcast would.

pub mod lint;
pub mod pattern;
pub mod query;
pub mod trie;

use hashbrown::HashMap;

use crate::args::{ArgValue, FormArgs, RequestArgs};
use crate::index::{MetricIndex, RuleIndex};
use pattern::{Analysis, PatternKind, Token};
use query::QueryCondition;
use trie::{Trie, TrieBuilder, WalkLimits, WalkScratch, WalkWork, Walked};

/// Marks a trie entry as "try regex gate n" rather than "rule n matched".
const REGEX_GATE: u32 = 1 << 31;

/// A rule ready to be compiled into a [`RuleSet`].
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub method: String,
    pub pattern: String,
    pub analysis: Analysis,
    pub metric: MetricIndex,
    pub delta: i64,
    pub last: bool,
    pub conditions: Vec<QueryCondition>,
}

/// What evaluation reads of a rule, kept dense (24 bytes) so a large rule table costs few
/// cache lines; conditions live in one flat table, patterns apart (explain and debug only).
#[derive(Debug, Clone)]
struct Rule {
    delta: i64,
    metric: MetricIndex,
    conditions_start: u32,
    conditions_len: u32,
    last: bool,
}

/// A regex gate: where the trie found a regex pattern's literal prefix, the regex to run and
/// the rules (of that root) whose pattern it is.
#[derive(Debug, Clone)]
struct RegexGate {
    regex: u32,
    rules: Vec<u32>,
}

#[derive(Debug, Clone)]
struct CompiledRegex {
    regex: regex_lite::Regex,
    /// What one byte of path costs this regex, in [`MatchLimits::regex_units`]: `regex-lite`
    /// simulates its NFA, whose size follows the pattern's.
    cost_per_byte: u64,
}

/// A rule whose pattern could not be compiled: it never matches (as in APIcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncompilable {
    pub rule: usize,
    pub reason: String,
}

/// The regex engine refused a pattern's regex: its own message, on one line. The
/// configuration's fault, reported as a warning (the rule never matches, as in APIcast).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegexRejected {
    message: String,
}

impl RegexRejected {
    pub fn fault(&self) -> crate::Fault {
        crate::Fault::Configuration
    }
}

/// A rule that makes the configuration unacceptable (a limit, a pattern nested too deep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: usize,
    pub kind: RefusalKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The rule's method is one more than [`RuleLimits::max_methods`].
    TooManyMethods,
    /// The rule's pattern would grow the trie past [`RuleLimits::max_nodes`].
    TooManyNodes,
    /// The pattern itself is refused ([`PatternKind::Refused`]).
    Pattern,
}

/// What a service's rules may cost to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLimits {
    /// Distinct HTTP methods (other than `ANY`) among the rules.
    pub max_methods: usize,
    /// Trie nodes before compression (about one per pattern byte that no other pattern
    /// shares; a regex alternative adds its own).
    pub max_nodes: usize,
}

impl RuleLimits {
    pub const DEFAULT: RuleLimits = RuleLimits {
        max_methods: 64,
        max_nodes: 4_000_000,
    };
}

/// What one evaluation may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchLimits {
    pub walk: WalkLimits,
    /// Path bytes times [`CompiledRegex::cost_per_byte`], summed over the regexes run.
    pub regex_units: u64,
}

impl MatchLimits {
    pub const DEFAULT: MatchLimits = MatchLimits {
        walk: WalkLimits::DEFAULT,
        // regex-lite takes about 1 to 1.6 ns a unit (a path byte times a pattern byte): under
        // a millisecond, e.g. 17 regex-engine rules of 30 bytes on a 1 KiB path.
        regex_units: 1 << 19,
    };
}

/// How an evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluated {
    /// `matched` and `usage` are APIcast's.
    Complete,
    /// The evaluation stopped at its [`MatchLimits`]; `matched` and `usage` are empty.
    Exhausted,
}

/// The compiled rules and what compiling them found.
#[derive(Debug, Clone)]
pub struct RuleSetBuild {
    pub set: RuleSet,
    pub uncompilable: Vec<Uncompilable>,
    pub refused: Vec<Refusal>,
    /// Trie nodes before compression, for the configuration-wide limit.
    pub nodes: usize,
}

/// One service's mapping rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    trie: Trie,
    /// `(key, method, root)`: at most [`RuleLimits::max_methods`], compared by their
    /// [`method_key`] first.
    method_roots: Vec<(u64, Box<[u8]>, u32)>,
    /// The `ANY` rules' root; `None` without such rules.
    any_root: Option<u32>,
    /// Whether every method's root also holds the `ANY` rules (then a request walks one root:
    /// its method's, or the `ANY` root for a method no rule names).
    any_copied: bool,
    regexes: Vec<CompiledRegex>,
    gates: Vec<RegexGate>,
    rules: Vec<Rule>,
    conditions: Vec<QueryCondition>,
    /// Every argument name a condition reads, decoded, to its slot in [`ArgTable`].
    condition_names: HashMap<Box<[u8]>, u32>,
    longest_condition_name: usize,
    patterns: Vec<Box<str>>,
}

/// Per-request working memory, reused across requests.
#[derive(Debug, Default, Clone)]
pub struct MatchScratch {
    walk: WalkScratch,
    candidates: Vec<u32>,
    args: ArgTable,
    regex_units: u64,
    /// Rules that matched, in evaluation order (up to and including a matching `last` rule).
    pub matched: Vec<RuleIndex>,
    /// `(metric, total)` for totals > 0, sorted by metric.
    pub usage: Vec<(MetricIndex, i64)>,
}

impl MatchScratch {
    /// What the last evaluation's walks spent.
    pub fn work(&self) -> WalkWork {
        self.walk.work()
    }

    /// Request arguments the last evaluation read for query conditions (each at most once).
    pub fn args_read(&self) -> u32 {
        self.args.read
    }

    /// Regex work units the last evaluation spent.
    pub fn regex_units(&self) -> u64 {
        self.regex_units
    }

    /// Whether a buffer may hold more than `bytes` (cheap: no walk over the DFA cache).
    pub fn may_hold_more_than(&self, bytes: usize) -> bool {
        let work = self.walk.work();
        work.dfa_states > 0
            || work.steps > 1024
            || 4 * self.candidates.capacity().max(self.matched.capacity()) > bytes
            || 16 * self.usage.capacity() > bytes
    }

    /// Gives back memory beyond about `retain` bytes per buffer.
    pub fn trim(&mut self, retain: usize) {
        self.walk.trim(retain);
        if 4 * self.candidates.capacity() > retain {
            self.candidates = Vec::new();
        }
        if 4 * self.matched.capacity() > retain {
            self.matched = Vec::new();
        }
        if 16 * self.usage.capacity() > retain {
            self.usage = Vec::new();
        }
        self.args.trim(retain);
    }

    /// Heap bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.walk.capacity_bytes()
            + 4 * (self.candidates.capacity() + self.matched.capacity())
            + 16 * self.usage.capacity()
            + self.args.capacity_bytes()
    }
}

/// The request's arguments that conditions read, parsed once per request: for each name a
/// condition reads, the last value in the body and in the query (lua-nginx-module's arg
/// tables, where the body wins).
#[derive(Debug, Default, Clone)]
struct ArgTable {
    /// Whether the table was built for the current evaluation.
    built: bool,
    /// Arguments read to build it (at most [`crate::args::MAX_ARGS`] per source).
    read: u32,
    generation: u32,
    slots: Vec<ArgSlot>,
    name: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ArgSlot {
    generation: u32,
    body: Option<ArgRef>,
    query: Option<ArgRef>,
}

/// An argument value as a place in the query or body, so the table borrows nothing.
#[derive(Debug, Clone, Copy)]
enum ArgRef {
    Flag,
    Raw { start: u32, len: u32 },
}

impl ArgRef {
    fn new(source: &[u8], value: ArgValue<'_>) -> Self {
        match value {
            ArgValue::Flag => ArgRef::Flag,
            ArgValue::Raw(raw) => {
                // `raw` is a subslice of `source`.
                let start = (raw.as_ptr() as usize).saturating_sub(source.as_ptr() as usize);
                ArgRef::Raw {
                    start: u32::try_from(start).unwrap_or(u32::MAX),
                    len: u32::try_from(raw.len()).unwrap_or(0),
                }
            }
        }
    }

    fn get<'a>(self, source: &'a [u8]) -> ArgValue<'a> {
        match self {
            ArgRef::Flag => ArgValue::Flag,
            ArgRef::Raw { start, len } => {
                let start = start as usize;
                ArgValue::Raw(source.get(start..start + len as usize).unwrap_or_default())
            }
        }
    }
}

impl ArgTable {
    fn build(&mut self, set: &RuleSet, args: &RequestArgs<'_>) {
        self.built = true;
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.fill(ArgSlot::default());
            self.generation = 1;
        }
        if self.slots.len() < set.condition_names.len() {
            self.slots
                .resize(set.condition_names.len(), ArgSlot::default());
        }
        // A decoded name is at least a third of its encoding.
        let longest_raw = set.longest_condition_name.saturating_mul(3);
        let sources = [(args.body, true), (Some(args.query), false)];
        for (source, is_body) in sources {
            let Some(source) = source else {
                continue;
            };
            for (raw_name, value) in FormArgs::new(source) {
                self.read += 1;
                if raw_name.len() > longest_raw {
                    continue;
                }
                self.name.clear();
                crate::args::decode_into(raw_name, &mut self.name);
                let Some(&slot) = set.condition_names.get(self.name.as_slice()) else {
                    continue;
                };
                let Some(entry) = self.slots.get_mut(slot as usize) else {
                    continue;
                };
                if entry.generation != self.generation {
                    *entry = ArgSlot {
                        generation: self.generation,
                        ..ArgSlot::default()
                    };
                }
                // The last value wins, as in APIcast's `value[#value]`.
                let value = Some(ArgRef::new(source, value));
                if is_body {
                    entry.body = value;
                } else {
                    entry.query = value;
                }
            }
        }
    }

    fn get<'a>(&self, slot: u32, args: &RequestArgs<'a>) -> Option<ArgValue<'a>> {
        let entry = self.slots.get(slot as usize)?;
        if entry.generation != self.generation {
            return None;
        }
        if let (Some(v), Some(body)) = (entry.body, args.body) {
            return Some(v.get(body));
        }
        entry.query.map(|v| v.get(args.query))
    }

    fn holds(&self, condition: &QueryCondition, args: &RequestArgs<'_>) -> bool {
        condition.holds_for(self.get(condition.slot, args))
    }

    fn trim(&mut self, retain: usize) {
        if self.name.capacity() > retain {
            self.name = Vec::new();
        }
    }

    fn capacity_bytes(&self) -> usize {
        self.name.capacity() + std::mem::size_of::<ArgSlot>() * self.slots.capacity()
    }
}

pub const ANY_METHOD: &str = "ANY";

/// The literal text every path matching regex `pattern` starts with, as trie tokens; empty
/// when the pattern has a top-level `|` (APIcast's `^a|b` matches `b` anywhere).
fn regex_gate(pattern: &str) -> Vec<Token> {
    let tokens = pattern::literal_prefix(pattern);
    tokens.into_iter().map(Token::Byte).collect()
}

impl RuleSet {
    /// Compiles the rules within [`RuleLimits::DEFAULT`]. Patterns whose regex does not
    /// compile are returned with the reason; they never match, as do refused ones.
    pub fn compile(inputs: Vec<RuleInput>) -> (Self, Vec<Uncompilable>) {
        let build = Self::build(inputs, RuleLimits::DEFAULT);
        (build.set, build.uncompilable)
    }

    /// Compiles the rules within `limits`. Identical patterns under one method share their
    /// trie path; identical regexes are compiled once for the whole service.
    pub fn build(inputs: Vec<RuleInput>, limits: RuleLimits) -> RuleSetBuild {
        let mut builder = TrieBuilder::with_node_limit(limits.max_nodes);
        let mut refused = Vec::new();
        let mut method_roots: Vec<(Box<[u8]>, u32)> = Vec::new();
        let mut any_root = None;
        // Roots: one per method within the limit, and one for ANY if any rule has it.
        let mut root_of: Vec<Option<u32>> = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let root = if input.method == ANY_METHOD {
                Some(*any_root.get_or_insert_with(|| builder.add_root()))
            } else {
                let method = input.method.as_bytes();
                match method_roots.iter().find(|(m, _)| m.as_ref() == method) {
                    Some(&(_, root)) => Some(root),
                    None if method_roots.len() < limits.max_methods => {
                        let root = builder.add_root();
                        method_roots.push((method.into(), root));
                        Some(root)
                    }
                    None => {
                        refused.push(Refusal {
                            rule: index,
                            kind: RefusalKind::TooManyMethods,
                            reason: format!(
                                "method '{}' is one more than the {} distinct methods a \
                                 service may have",
                                input.method, limits.max_methods
                            ),
                        });
                        None
                    }
                }
            };
            root_of.push(root);
        }
        let method_roots: Vec<(u64, Box<[u8]>, u32)> = method_roots
            .into_iter()
            .map(|(m, root)| (method_key(&m), m, root))
            .collect();

        let mut patterns = PatternCompiler {
            builder,
            limits,
            regexes: Vec::new(),
            regex_ids: HashMap::new(),
            gates: Vec::new(),
            uncompilable: Vec::new(),
            refused,
            full: false,
            first_pass: true,
        };
        let mut condition_names: HashMap<Box<[u8]>, u32> = HashMap::new();
        let mut rules = Vec::with_capacity(inputs.len());
        let mut conditions = Vec::new();
        let mut any_nodes = 0;
        for (index, input) in inputs.iter().enumerate() {
            let root = root_of.get(index).copied().flatten();
            let before = patterns.builder.node_count();
            if let Some(root) = root {
                patterns.add(root, index, input);
            }
            if input.method == ANY_METHOD {
                any_nodes += patterns.builder.node_count() - before;
            }
            let conditions_start = u32::try_from(conditions.len()).unwrap_or(u32::MAX);
            for c in &input.conditions {
                let next = u32::try_from(condition_names.len()).unwrap_or(u32::MAX);
                let slot = *condition_names.entry(c.name.clone()).or_insert(next);
                conditions.push(QueryCondition { slot, ..c.clone() });
            }
            rules.push(Rule {
                delta: input.delta,
                metric: input.metric,
                conditions_start,
                conditions_len: u32::try_from(input.conditions.len()).unwrap_or(u32::MAX),
                last: input.last,
            });
        }
        // A copy of the ANY rules under each method's root spares every request a second
        // walk; it is made only while it costs little (at most as many nodes again as the
        // rest, or 64 Ki), so many methods with many ANY rules keep one shared root.
        // Never at the cost of the node limit: copying is an optimisation, not a refusal.
        let nodes = patterns.builder.node_count();
        let other_nodes = nodes - any_nodes;
        let copies = any_nodes.saturating_mul(method_roots.len());
        let any_copied = any_root.is_some()
            && !patterns.full
            && copies <= other_nodes.max(ANY_COPY_MIN_NODES)
            && copies <= limits.max_nodes.saturating_sub(nodes);
        if any_copied {
            patterns.first_pass = false;
            for &(_, _, root) in &method_roots {
                for (index, input) in inputs.iter().enumerate() {
                    if input.method == ANY_METHOD {
                        patterns.add(root, index, input);
                    }
                }
            }
        }
        let PatternCompiler {
            builder,
            regexes,
            gates,
            uncompilable,
            refused,
            ..
        } = patterns;
        let nodes = builder.node_count();
        let longest_condition_name = condition_names.keys().map(|n| n.len()).max().unwrap_or(0);
        let patterns = inputs.iter().map(|i| i.pattern.as_str().into()).collect();
        let set = Self {
            trie: builder.build(),
            method_roots,
            any_root,
            any_copied,
            regexes,
            gates,
            rules,
            conditions,
            condition_names,
            longest_condition_name,
            patterns,
        };
        RuleSetBuild {
            set,
            uncompilable,
            refused,
            nodes,
        }
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

    /// Distinct regexes the rules need (identical patterns share one).
    pub fn regex_rule_count(&self) -> usize {
        self.regexes.len()
    }

    /// The pattern of rule `id`, as configured.
    pub fn pattern(&self, id: RuleIndex) -> &str {
        self.patterns.get(id.as_usize()).map_or("", |p| p)
    }

    /// Evaluates the rules for one request within [`MatchLimits::DEFAULT`]: fills
    /// `scratch.matched` and `scratch.usage`. `path` is the normalised, re-escaped path
    /// ([`crate::path::normalize`]).
    pub fn evaluate(
        &self,
        method: &[u8],
        path: &[u8],
        args: &RequestArgs<'_>,
        scratch: &mut MatchScratch,
    ) -> Evaluated {
        self.evaluate_within(method, path, args, scratch, MatchLimits::DEFAULT)
    }

    /// [`Self::evaluate`] within `limits`.
    pub fn evaluate_within(
        &self,
        method: &[u8],
        path: &[u8],
        args: &RequestArgs<'_>,
        scratch: &mut MatchScratch,
        limits: MatchLimits,
    ) -> Evaluated {
        let evaluated = self.evaluate_inner(method, path, args, scratch, limits);
        if evaluated == Evaluated::Exhausted {
            scratch.matched.clear();
            scratch.usage.clear();
        }
        evaluated
    }

    fn evaluate_inner(
        &self,
        method: &[u8],
        path: &[u8],
        args: &RequestArgs<'_>,
        scratch: &mut MatchScratch,
        limits: MatchLimits,
    ) -> Evaluated {
        let MatchScratch {
            walk,
            candidates,
            args: table,
            regex_units,
            matched,
            usage,
        } = scratch;
        candidates.clear();
        matched.clear();
        usage.clear();
        table.built = false;
        table.read = 0;
        *regex_units = 0;
        walk.start(limits.walk, path.len());

        let key = method_key(method);
        let method_root = self
            .method_roots
            .iter()
            .find(|(k, m, _)| *k == key && m.as_ref() == method)
            .map(|&(_, _, root)| root);
        // The method's root, then (unless it holds copies of them) the ANY rules' root.
        let (first, second) = match (method_root, self.any_copied) {
            (Some(root), true) => (Some(root), None),
            (Some(root), false) => (Some(root), self.any_root),
            (None, _) => (self.any_root, None),
        };
        if let Some(root) = first {
            if self.trie.walk(root, path, walk, candidates) == Walked::Exhausted {
                return Evaluated::Exhausted;
            }
        }
        if let Some(root) = second {
            if self.trie.walk(root, path, walk, candidates) == Walked::Exhausted {
                return Evaluated::Exhausted;
            }
        }
        if candidates.iter().any(|&c| c & REGEX_GATE != 0) {
            // The normalised path is ASCII; anything else cannot match a regex rule.
            let text = std::str::from_utf8(path).ok();
            // Matching rules are appended after the gates, which are dropped afterwards.
            for i in 0..candidates.len() {
                let Some(&gate) = candidates.get(i) else {
                    break;
                };
                if gate & REGEX_GATE == 0 {
                    continue;
                }
                let Some(gate) = self.gates.get((gate & !REGEX_GATE) as usize) else {
                    continue;
                };
                let (Some(compiled), Some(text)) = (self.regexes.get(gate.regex as usize), text)
                else {
                    continue;
                };
                let cost = compiled
                    .cost_per_byte
                    .saturating_mul(path.len().max(1) as u64);
                *regex_units = regex_units.saturating_add(cost);
                if *regex_units > limits.regex_units {
                    return Evaluated::Exhausted;
                }
                if compiled.regex.is_match(text) {
                    candidates.extend_from_slice(&gate.rules);
                }
            }
            candidates.retain(|&c| c & REGEX_GATE == 0);
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
            if !conditions.is_empty() {
                if !table.built {
                    table.build(self, args);
                }
                if !conditions.iter().all(|c| table.holds(c, args)) {
                    continue;
                }
            }
            matched.push(RuleIndex::new(id));
            usage.push((rule.metric, rule.delta));
            if rule.last {
                break;
            }
        }
        // Sums per metric; APIcast merges usage into the request context, dropping totals <= 0.
        usage.sort_unstable_by_key(|&(metric, _)| metric);
        usage.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 = kept.1.saturating_add(later.1);
                true
            } else {
                false
            }
        });
        usage.retain(|&(_, total)| total > 0);
        Evaluated::Complete
    }
}

/// ANY rules are copied under every method's root while the copies need at most this many
/// trie nodes (or as many as the other rules).
const ANY_COPY_MIN_NODES: usize = 64 * 1024;

/// A regex source seen while compiling: its compiled regex (or why it does not compile), and
/// its gate `(root, gate)` under each root that has one.
type SeenRegex = (Result<u32, RegexRejected>, Vec<(u32, u32)>);

/// Puts patterns into the trie: plain ones as tokens, regex ones as a gate on their literal
/// prefix, each distinct regex compiled once.
struct PatternCompiler<'i> {
    builder: TrieBuilder,
    limits: RuleLimits,
    regexes: Vec<CompiledRegex>,
    regex_ids: HashMap<&'i str, SeenRegex>,
    /// Whether rules are being added for the first time (not copied), so a pattern that
    /// does not compile is reported for each rule once.
    first_pass: bool,
    gates: Vec<RegexGate>,
    uncompilable: Vec<Uncompilable>,
    refused: Vec<Refusal>,
    /// The node limit was reached: nothing more is inserted.
    full: bool,
}

impl<'i> PatternCompiler<'i> {
    fn add(&mut self, root: u32, index: usize, input: &'i RuleInput) {
        let id = u32::try_from(index).unwrap_or(u32::MAX);
        match &input.analysis.kind {
            PatternKind::Refused(reason) => {
                if self.first_pass {
                    self.refused.push(Refusal {
                        rule: index,
                        kind: RefusalKind::Pattern,
                        reason: format!("pattern {reason}"),
                    });
                }
            }
            PatternKind::Trie(variants) => {
                for tokens in variants {
                    self.insert(root, tokens, id, index);
                }
            }
            PatternKind::Regex(source) => {
                let Some(regex) = self.regex(source, index) else {
                    return;
                };
                let gate = self
                    .regex_ids
                    .get(source.as_str())
                    .and_then(|(_, gates)| gates.iter().find(|&&(r, _)| r == root))
                    .map(|&(_, g)| g);
                match gate {
                    Some(g) => {
                        if let Some(gate) = self.gates.get_mut(g as usize) {
                            gate.rules.push(id);
                        }
                    }
                    None => {
                        let g = u32::try_from(self.gates.len()).unwrap_or(0);
                        self.insert(root, &regex_gate(&input.pattern), REGEX_GATE | g, index);
                        self.gates.push(RegexGate {
                            regex,
                            rules: vec![id],
                        });
                        if let Some((_, gates)) = self.regex_ids.get_mut(source.as_str()) {
                            gates.push((root, g));
                        }
                    }
                }
            }
        }
    }

    fn insert(&mut self, root: u32, tokens: &[Token], entry: u32, index: usize) {
        if !self.full && self.builder.insert(root, tokens, entry).is_err() {
            self.full = true;
            self.refused.push(node_limit_refusal(index, self.limits));
        }
    }

    /// The compiled regex for `source`, compiled on first use.
    fn regex(&mut self, source: &'i str, index: usize) -> Option<u32> {
        let compiled = match self.regex_ids.get(source) {
            Some((known, _)) => known.clone(),
            None => {
                let compiled = self.compile_regex(source);
                self.regex_ids
                    .insert(source, (compiled.clone(), Vec::new()));
                compiled
            }
        };
        match compiled {
            Ok(r) => Some(r),
            Err(reason) => {
                if self.first_pass {
                    self.uncompilable.push(Uncompilable {
                        rule: index,
                        reason: reason.to_string(),
                    });
                }
                None
            }
        }
    }

    fn compile_regex(&mut self, source: &str) -> Result<u32, RegexRejected> {
        match regex_lite::RegexBuilder::new(source)
            .nest_limit(pattern::REGEX_NEST_LIMIT)
            .build()
        {
            Ok(regex) => {
                let r = u32::try_from(self.regexes.len()).unwrap_or(u32::MAX);
                self.regexes.push(CompiledRegex {
                    regex,
                    cost_per_byte: source.len().max(1) as u64,
                });
                Ok(r)
            }
            Err(e) => Err(RegexRejected {
                message: first_line(&e.to_string()),
            }),
        }
    }
}

/// A method's length and first bytes in one word: methods are short, so comparing keys
/// settles almost every lookup without comparing bytes.
fn method_key(method: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(method) {
        *w = *b;
    }
    u64::from_le_bytes(word) ^ (method.len() as u64).rotate_right(8)
}

fn node_limit_refusal(rule: usize, limits: RuleLimits) -> Refusal {
    Refusal {
        rule,
        kind: RefusalKind::TooManyNodes,
        reason: format!(
            "the service's patterns need more than {} trie nodes (the limit on compiled mapping \
             rules); this rule is the first beyond it",
            limits.max_nodes
        ),
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
