//! Plain patterns compiled into one path-compressed trie, walked once per request.
//!
//! Patterns sharing a prefix share nodes, and a placeholder is an edge like any other (a
//! repeat of its character class; `[0-9]+` from a regex pattern is another, and `[0-9]` alone
//! is a one-byte class edge), so `/{a}.json` and `/{b}.xml` share the node after their
//! placeholder. Runs of literal bytes with no branching are stored as one label and compared
//! in one go.
//!
//! Matching simulates the trie as an automaton over the path bytes. A single live position
//! (the common case) skips through labels and repeat runs without per-byte bookkeeping. Where
//! the path is ambiguous (a repeat that may go on or end, overlapping edges), a few live
//! positions are first stepped in lockstep; a longer stretch, or more positions, is tracked
//! as a lazily built DFA (and goes back to lockstep where the DFA keeps building states it
//! never reuses): each distinct set is stored once per walk with
//! its transitions, over byte classes (bytes the trie cannot tell apart share one), so a path
//! that keeps the automaton in a few states costs one table lookup per byte however many
//! rules are behind them. Equal positions are merged, and the rules at a node are reported at
//! most once per walk. The work a walk may do is bounded ([`WalkLimits`]); a walk that would
//! need more stops and says so.
//!
//! Each node is stored contiguously in one byte arena (header, label, edge bytes, children),
//! so descending one level of a large trie costs one or two cache lines, not one per array.
//!
//! Prefix semantics: a rule without `$` matches as soon as its node is reached; a rule with
//! `$` only if its node is reached exactly at the end of the path.

use std::collections::BTreeMap;

use hashbrown::HashTable;

use super::pattern::{ByteClass, Token};

const NONE: u32 = u32::MAX;
/// `State::off` from this value up: inside a repeat of class `off - IN_REPEAT`, whose
/// continuation is `State::node`. Labels are shorter than this.
const IN_REPEAT: u32 = 1 << 31;
/// In a class edge's class id: the edge takes exactly one byte (no repeat).
const ONCE: u32 = 1 << 31;

/// Node layout in the arena, at the node's offset (its id):
/// `label_len: u32 | rules: u32 | edges: u16 | class_edges: u16 | label | edge index |
/// padding to 4 | (child: u32) per literal edge | (class: u32, child: u32) per class edge`.
/// The edge index is the children's first bytes in order (up to [`NARROW`] edges, searched
/// eight at a time in a u64) or a 256-bit map of them (wider nodes, ranked with popcount):
/// both without data-dependent branches. A class edge's class has [`ONCE`] set when it takes
/// one byte, and is a repeat (one or more bytes) otherwise.
const HEADER: usize = 12;
/// Nodes with at most this many literal edges list their first bytes.
const NARROW: usize = 8;
const BITMAP: usize = 32;

/// A node's header, decoded.
#[derive(Debug, Clone, Copy)]
struct Node {
    id: u32,
    label_len: u32,
    /// Index in `rule_ranges`, or [`NONE`] (most nodes end no pattern).
    rules: u32,
    edges: u16,
    class_edges: u16,
}

impl Node {
    fn label_start(&self) -> usize {
        self.id as usize + HEADER
    }

    fn index_start(&self) -> usize {
        self.label_start() + self.label_len as usize
    }

    fn index_len(&self) -> usize {
        match usize::from(self.edges) {
            n if n <= NARROW => n,
            _ => BITMAP,
        }
    }

    fn children_start(&self) -> usize {
        (self.index_start() + self.index_len()).next_multiple_of(4)
    }

    fn class_edges_start(&self) -> usize {
        self.children_start() + 4 * usize::from(self.edges)
    }

    fn size(&self) -> usize {
        self.class_edges_start() + 8 * usize::from(self.class_edges) - self.id as usize
    }
}

/// The rules ending at a node: `rule_ids[start..start + prefix_len]` without `$`, then
/// `end_len` with `$`.
#[derive(Debug, Clone, Copy)]
struct RuleRange {
    start: u32,
    prefix_len: u32,
    end_len: u32,
}

/// A live position: `off` bytes of `node`'s label matched (`off == label_len`: at the node),
/// or `IN_REPEAT + class` inside a repeat leading to `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct State {
    node: u32,
    off: u32,
}

#[derive(Debug, Default, Clone)]
pub struct Trie {
    arena: Vec<u8>,
    nodes: usize,
    rule_ranges: Vec<RuleRange>,
    rule_ids: Vec<u32>,
    classes: Vec<ByteClass>,
    roots: Vec<u32>,
    /// The byte class of each byte: bytes no label, edge or class of this trie tells apart
    /// share one, so the DFA's transition rows have one entry per class, not per byte.
    byte_class: Vec<u8>,
    /// A byte of each byte class.
    representative: Vec<u8>,
}

/// What one walk may spend; beyond either bound it stops and reports [`Walked::Exhausted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Positions stepped where the path is ambiguous (each costs a few nanoseconds), plus
    /// [`Self::steps_per_byte`] for each byte of the path.
    pub steps: u64,
    pub steps_per_byte: u64,
    /// Bytes the DFA cache may hold; at the bound it is emptied and rebuilt as needed.
    pub cache_bytes: usize,
}

/// What a walk spent: for benchmarks, tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkWork {
    /// Path bytes read.
    pub bytes: u64,
    /// Positions stepped while building DFA states.
    pub steps: u64,
    /// DFA states built.
    pub dfa_states: u64,
    /// Times the DFA cache was full and emptied.
    pub cache_clears: u64,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Every matching rule was reported.
    Complete,
    /// The walk stopped at its [`WalkLimits`]: the rules reported so far match, others may too.
    Exhausted,
}

impl WalkLimits {
    /// Far more than realistic rules need (a few dozen steps a request: `make bench`), and
    /// well under a millisecond of work (a step costs a few nanoseconds).
    pub const DEFAULT: WalkLimits = WalkLimits {
        steps: 1 << 17,
        steps_per_byte: 8,
        cache_bytes: 256 * 1024,
    };
}

/// Live positions a walk may track at once (8 bytes each): beyond, it stops. Realistic
/// rules keep a handful; a set this large means thousands of overlapping patterns.
const MAX_LIVE_POSITIONS: usize = 16 * 1024;

/// Ambiguous bytes a walk steps in lockstep before it builds DFA states.
const LOCKSTEP_BYTES: u32 = 32;
/// Lockstep is for sets of at most this many positions; larger ones go to the DFA at once.
const LOCKSTEP_MAX_POSITIONS: usize = 8;
/// The DFA is judged over this many transitions: when nearly all built new states (the path
/// never comes back to a set) and the set is small, lockstep is cheaper again, for
/// [`LOCKSTEP_AFTER_MISSES`] more bytes.
const DFA_WINDOW: u32 = 64;
const DFA_WINDOW_MISSES: u32 = 56;
const LOCKSTEP_AFTER_MISSES: u32 = 1024;

/// Reusable memory for [`Trie::walk`]: the DFA cache and the once-per-walk marks.
#[derive(Debug, Clone)]
pub struct WalkScratch {
    dfa: Dfa,
    lockstep: Lockstep,
    /// Per rule range: the walk that last reported it.
    reported: Vec<u32>,
    walk_id: u32,
    /// Steps left in the current budget (set by [`WalkScratch::start`]).
    steps_left: u64,
    cache_bytes: usize,
    work: WalkWork,
}

impl Default for WalkScratch {
    fn default() -> Self {
        Self {
            dfa: Dfa::default(),
            lockstep: Lockstep::default(),
            reported: Vec::new(),
            walk_id: 0,
            steps_left: WalkLimits::DEFAULT.steps,
            cache_bytes: WalkLimits::DEFAULT.cache_bytes,
            work: WalkWork::default(),
        }
    }
}

impl WalkScratch {
    /// Starts a budget shared by the walks of one `path_len`-byte path until the next call.
    pub fn start(&mut self, limits: WalkLimits, path_len: usize) {
        let per_byte = limits.steps_per_byte.saturating_mul(path_len as u64);
        self.steps_left = limits.steps.saturating_add(per_byte);
        self.cache_bytes = limits.cache_bytes;
        self.work = WalkWork::default();
    }

    /// What the walks since [`Self::start`] spent.
    pub fn work(&self) -> WalkWork {
        self.work
    }

    /// Gives back memory beyond `retain` bytes (after an unusually expensive walk).
    pub fn trim(&mut self, retain: usize) {
        if self.dfa.capacity_bytes() > retain {
            self.dfa = Dfa::default();
        }
        if 8 * (self.lockstep.current.capacity() + self.lockstep.next.capacity()) > retain {
            self.lockstep = Lockstep::default();
        }
    }

    /// Heap bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.dfa.capacity_bytes()
            + 8 * (self.lockstep.current.capacity() + self.lockstep.next.capacity())
            + 4 * self.reported.capacity()
    }
}

/// The live positions of a walk stepping in lockstep, and the next ones.
#[derive(Debug, Default, Clone)]
struct Lockstep {
    current: Vec<State>,
    next: Vec<State>,
}

/// The DFA states built during a walk: sets of live positions, each with a transition row.
#[derive(Debug, Default, Clone)]
struct Dfa {
    /// Every state's positions, sorted, one after the other.
    members: Vec<State>,
    /// `(start, len)` of each state in `members`.
    spans: Vec<(u32, u32)>,
    /// `spans.len() * stride` targets: a state id, [`UNKNOWN`] or [`DEAD`].
    table: Vec<u32>,
    stride: usize,
    /// State ids by the hash of their positions.
    index: HashTable<u32>,
    /// The next set being built.
    next: Vec<State>,
    /// Room for [`sort_states`].
    merge: Vec<State>,
}

const UNKNOWN: u32 = u32::MAX;
const DEAD: u32 = u32::MAX - 1;

fn hash_states(states: &[State]) -> u64 {
    // FxHash's mixing: sets are few and short; a collision only costs a comparison.
    let mut h: u64 = states.len() as u64;
    for s in states {
        h = (h.rotate_left(5) ^ (u64::from(s.node) << 32 | u64::from(s.off)))
            .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h
}

impl Dfa {
    fn reset(&mut self, stride: usize) {
        self.members.clear();
        self.spans.clear();
        self.table.clear();
        self.index.clear();
        self.stride = stride;
    }

    fn bytes_used(&self) -> usize {
        8 * self.members.len() + 8 * self.spans.len() + 4 * self.table.len() + 8 * self.index.len()
    }

    fn capacity_bytes(&self) -> usize {
        8 * self.members.capacity()
            + 8 * self.spans.capacity()
            + 4 * self.table.capacity()
            + 8 * self.index.capacity()
            + 8 * (self.next.capacity() + self.merge.capacity())
    }

    fn members_of(&self, id: u32) -> &[State] {
        match self.spans.get(id as usize) {
            Some(&(start, len)) => {
                let start = start as usize;
                self.members
                    .get(start..start + len as usize)
                    .unwrap_or_default()
            }
            None => &[],
        }
    }

    /// The id of the state for `self.next` (sorted, deduplicated), and whether it is new.
    fn intern_next(&mut self) -> (u32, bool) {
        let Dfa {
            members,
            spans,
            table,
            stride,
            index,
            next,
            ..
        } = self;
        let hash = hash_states(next);
        let members_of = |id: u32| -> &[State] {
            let Some(&(start, len)) = spans.get(id as usize) else {
                return &[];
            };
            let start = start as usize;
            members.get(start..start + len as usize).unwrap_or_default()
        };
        if let Some(&id) = index.find(hash, |&id| members_of(id) == next.as_slice()) {
            return (id, false);
        }
        let id = u32::try_from(spans.len()).unwrap_or(DEAD);
        let start = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(next.len()).unwrap_or(u32::MAX);
        members.extend_from_slice(next);
        spans.push((start, len));
        table.resize(table.len() + *stride, UNKNOWN);
        let (members, spans) = (&*members, &*spans);
        index.insert_unique(hash, id, |&id| {
            let Some(&(start, len)) = spans.get(id as usize) else {
                return 0;
            };
            let start = start as usize;
            hash_states(members.get(start..start + len as usize).unwrap_or_default())
        });
        (id, true)
    }
}

/// Sorts and deduplicates a set of positions. Stepping a sorted set yields a few ascending
/// runs (labels advance in order; a repeat's exits land apart), so natural runs are merged
/// pairwise, O(n) per pass, using `buffer`.
fn sort_states(states: &mut Vec<State>, buffer: &mut Vec<State>) {
    if states.len() <= 8 {
        // The usual set: a handful of positions, sorted in place.
        for i in 1..states.len() {
            let mut j = i;
            while j > 0 && states.get(j - 1) > states.get(j) {
                states.swap(j - 1, j);
                j -= 1;
            }
        }
        states.dedup();
        return;
    }
    // Run starts are found again after each pass (few passes: a pass halves the runs).
    loop {
        let run_end = |from: usize| -> usize {
            let mut i = from + 1;
            while let (Some(a), Some(b)) = (states.get(i - 1), states.get(i)) {
                if a > b {
                    break;
                }
                i += 1;
            }
            i.min(states.len())
        };
        let first = run_end(0);
        if first >= states.len() {
            break;
        }
        buffer.clear();
        let mut start = 0;
        while start < states.len() {
            let middle = run_end(start);
            let end = if middle < states.len() {
                run_end(middle)
            } else {
                middle
            };
            let left = states.get(start..middle).unwrap_or_default();
            let right = states.get(middle..end).unwrap_or_default();
            let (mut i, mut j) = (0, 0);
            while let (Some(&x), Some(&y)) = (left.get(i), right.get(j)) {
                if x <= y {
                    buffer.push(x);
                    i += 1;
                } else {
                    buffer.push(y);
                    j += 1;
                }
            }
            buffer.extend_from_slice(left.get(i..).unwrap_or_default());
            buffer.extend_from_slice(right.get(j..).unwrap_or_default());
            start = end;
        }
        std::mem::swap(states, buffer);
    }
    states.dedup();
}

/// A node while patterns are collected: 16 bytes, children in a sibling list, so a large
/// configuration costs little memory to compile.
#[derive(Debug, Clone, Copy)]
struct BuildNode {
    /// Children in a list sorted by edge: literal bytes first, in byte order.
    first_child: u32,
    next_sibling: u32,
    /// The edge from the parent: a byte (below [`CLASS_EDGE`]), or `CLASS_EDGE | class index`
    /// with [`ONCE`] for a one-byte class edge.
    edge: u32,
    /// The patterns ending here: the head of a list in [`TrieBuilder::ends`].
    first_end: u32,
}

/// In [`BuildNode::edge`]: a class edge (the low bits index the builder's classes).
const CLASS_EDGE: u32 = 1 << 30;

impl BuildNode {
    const EMPTY: BuildNode = BuildNode {
        first_child: NONE,
        next_sibling: NONE,
        edge: 0,
        first_end: NONE,
    };
}

/// The trie would exceed the node limit given to [`TrieBuilder::with_node_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyNodes;

/// Collects patterns byte by byte, then freezes them into a compressed [`Trie`].
pub struct TrieBuilder {
    nodes: Vec<BuildNode>,
    roots: Vec<u32>,
    /// `(next in the node's list, anchored, rule)` for every pattern end.
    ends: Vec<(u32, bool, u32)>,
    classes: Vec<ByteClass>,
    class_ids: BTreeMap<ByteClass, u32>,
    node_limit: usize,
}

impl Default for TrieBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            roots: Vec::new(),
            ends: Vec::new(),
            classes: Vec::new(),
            class_ids: BTreeMap::new(),
            node_limit: usize::MAX,
        }
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder that refuses to grow past `limit` nodes (one per pattern byte not shared with
    /// another pattern, before compression).
    pub fn with_node_limit(limit: usize) -> Self {
        Self {
            node_limit: limit,
            ..Self::default()
        }
    }

    /// Nodes so far, roots included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A new, empty root; returns its index for [`Self::insert`] and [`Trie::walk`].
    pub fn add_root(&mut self) -> u32 {
        self.nodes.push(BuildNode::EMPTY);
        let node = len_u32(self.nodes.len() - 1);
        self.roots.push(node);
        len_u32(self.roots.len() - 1)
    }

    fn edge_of(&mut self, token: Token) -> Option<u32> {
        let (class, once) = match token {
            Token::Byte(b) => return Some(u32::from(b)),
            Token::End => return None,
            Token::Class(c) => (c, true),
            Token::Repeat(c) => (c, false),
        };
        let next = len_u32(self.classes.len());
        let id = *self.class_ids.entry(class).or_insert(next);
        if id == next {
            self.classes.push(class);
        }
        Some(CLASS_EDGE | id | if once { ONCE } else { 0 })
    }

    /// The child of `node` over `edge`, or where a new one goes: after `Err(Some(sibling))`,
    /// or first with `Err(None)`.
    fn child(&self, node: u32, edge: u32) -> Result<u32, Option<u32>> {
        let mut before = None;
        let mut c = self
            .nodes
            .get(node as usize)
            .map_or(NONE, |n| n.first_child);
        while let Some(n) = self.nodes.get(c as usize) {
            if n.edge == edge {
                return Ok(c);
            }
            if n.edge > edge {
                break;
            }
            before = Some(c);
            c = n.next_sibling;
        }
        Err(before)
    }

    /// Adds `tokens` under root `root` for `rule`. [`Token::End`] may only come last (the
    /// pattern reader guarantees it). At the node limit nothing more is added.
    pub fn insert(&mut self, root: u32, tokens: &[Token], rule: u32) -> Result<(), TooManyNodes> {
        let Some(&mut mut node) = self.roots.get_mut(root as usize) else {
            return Ok(());
        };
        let mut anchored = false;
        for &token in tokens {
            let Some(edge) = self.edge_of(token) else {
                anchored = true;
                break;
            };
            node = match self.child(node, edge) {
                Ok(child) => child,
                Err(after) => {
                    if self.nodes.len() >= self.node_limit {
                        return Err(TooManyNodes);
                    }
                    let child = len_u32(self.nodes.len());
                    // Linked in edge order, so literal edges come out sorted by byte.
                    let link = match after {
                        Some(sibling) => self
                            .nodes
                            .get_mut(sibling as usize)
                            .map(|n| &mut n.next_sibling),
                        None => self
                            .nodes
                            .get_mut(node as usize)
                            .map(|n| &mut n.first_child),
                    };
                    let Some(link) = link else {
                        return Ok(());
                    };
                    let next_sibling = std::mem::replace(link, child);
                    self.nodes.push(BuildNode {
                        next_sibling,
                        edge,
                        ..BuildNode::EMPTY
                    });
                    child
                }
            };
        }
        let end = len_u32(self.ends.len());
        if let Some(n) = self.nodes.get_mut(node as usize) {
            let next = std::mem::replace(&mut n.first_end, end);
            self.ends.push((next, anchored, rule));
        }
        Ok(())
    }

    /// The patterns ending at `node`: `(anchored, rule)`, newest first.
    fn ends_of(&self, node: u32) -> impl Iterator<Item = (bool, u32)> + '_ {
        let mut e = self.nodes.get(node as usize).map_or(NONE, |n| n.first_end);
        std::iter::from_fn(move || {
            let &(next, anchored, rule) = self.ends.get(e as usize)?;
            e = next;
            Some((anchored, rule))
        })
    }

    /// Freezes the trie: chains of single-child nodes become labels, nodes are laid out
    /// depth-first so a walk reads memory mostly forward. Iterative, so a pattern of any
    /// length cannot exhaust the stack. Offsets are u32: a trie larger than 4 GiB (far beyond
    /// the node limit) would be cut short.
    pub fn build(self) -> Trie {
        let mut trie = Trie {
            roots: vec![NONE; self.roots.len()],
            ..Trie::default()
        };
        let mut class_ids: BTreeMap<ByteClass, u32> = BTreeMap::new();
        let mut literal = [false; 256];
        // (build node, first label byte for a literal child, where to write the new node's id:
        // an arena offset, or a root index when `None`)
        let mut tasks: Vec<(u32, Option<u8>, Result<usize, usize>)> = self
            .roots
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &node)| (node, None, Err(i)))
            .collect();
        let mut label: Vec<u8> = Vec::new();
        let mut literals: Vec<(u8, u32)> = Vec::new();
        let mut class_edges: Vec<(u32, u32)> = Vec::new();
        while let Some((start, first, fill)) = tasks.pop() {
            label.clear();
            label.extend(first);
            let mut b = start;
            // Absorb single-child chains into the label.
            while let Some(n) = self.nodes.get(b as usize) {
                let only_child = self.nodes.get(n.first_child as usize).filter(|c| {
                    c.next_sibling == NONE
                        && c.edge < CLASS_EDGE
                        && n.first_end == NONE
                        && label.len() < (IN_REPEAT - 1) as usize
                });
                let Some(child) = only_child else {
                    break;
                };
                label.push(u8::try_from(child.edge).unwrap_or(0));
                b = n.first_child;
            }
            for &byte in &label {
                if let Some(l) = literal.get_mut(usize::from(byte)) {
                    *l = true;
                }
            }
            let Some(n) = self.nodes.get(b as usize) else {
                continue;
            };
            literals.clear();
            class_edges.clear();
            let mut c = n.first_child;
            while let Some(child) = self.nodes.get(c as usize) {
                match u8::try_from(child.edge) {
                    Ok(byte) => literals.push((byte, c)),
                    Err(_) => class_edges.push((child.edge & !CLASS_EDGE, c)),
                }
                c = child.next_sibling;
            }
            let Ok(id) = u32::try_from(trie.arena.len()) else {
                break;
            };
            let rules = if n.first_end == NONE {
                NONE
            } else {
                // Prefix rules, then anchored ones (a rule twice at a node is harmless: the
                // walk's caller deduplicates).
                let start = len_u32(trie.rule_ids.len());
                let prefix = self.ends_of(b).filter(|e| !e.0).map(|e| e.1);
                trie.rule_ids.extend(prefix);
                let prefix_len = len_u32(trie.rule_ids.len()) - start;
                let anchored = self.ends_of(b).filter(|e| e.0).map(|e| e.1);
                trie.rule_ids.extend(anchored);
                trie.rule_ranges.push(RuleRange {
                    start,
                    prefix_len,
                    end_len: len_u32(trie.rule_ids.len()) - start - prefix_len,
                });
                len_u32(trie.rule_ranges.len() - 1)
            };
            // At most 256 literal edges (one per byte); distinct class edges are few.
            class_edges.truncate(usize::from(u16::MAX));
            let node = Node {
                id,
                label_len: len_u32(label.len()),
                rules,
                edges: u16::try_from(literals.len()).unwrap_or(u16::MAX),
                class_edges: u16::try_from(class_edges.len()).unwrap_or(u16::MAX),
            };
            let arena = &mut trie.arena;
            arena.extend_from_slice(&node.label_len.to_le_bytes());
            arena.extend_from_slice(&rules.to_le_bytes());
            arena.extend_from_slice(&node.edges.to_le_bytes());
            arena.extend_from_slice(&node.class_edges.to_le_bytes());
            arena.extend_from_slice(&label);
            if literals.len() <= NARROW {
                arena.extend(literals.iter().map(|&(byte, _)| byte));
            } else {
                let mut map = [0u8; BITMAP];
                for &(b, _) in &literals {
                    if let Some(m) = map.get_mut(usize::from(b >> 3)) {
                        *m |= 1 << (b & 7);
                    }
                }
                arena.extend_from_slice(&map);
            }
            arena.resize(node.children_start(), 0);
            arena.resize(id as usize + node.size(), 0xff);
            trie.nodes += 1;
            match fill {
                Err(root) => {
                    if let Some(r) = trie.roots.get_mut(root) {
                        *r = id;
                    }
                }
                Ok(slot) => write_u32(&mut trie.arena, slot, id),
            }
            // Children are pushed in reverse so they are laid out in order, depth-first.
            for (k, &(edge, child)) in class_edges.iter().enumerate().rev() {
                let class = self
                    .classes
                    .get((edge & !ONCE) as usize)
                    .copied()
                    .unwrap_or(ByteClass::EMPTY);
                let next_id = len_u32(class_ids.len());
                let class_id = *class_ids.entry(class).or_insert(next_id);
                if class_id == next_id {
                    trie.classes.push(class);
                }
                let at = node.class_edges_start() + 8 * k;
                write_u32(&mut trie.arena, at, class_id | (edge & ONCE));
                tasks.push((child, None, Ok(at + 4)));
            }
            for (k, &(byte, child)) in literals.iter().enumerate().rev() {
                tasks.push((child, Some(byte), Ok(node.children_start() + 4 * k)));
            }
        }
        // Lets the edge search read eight bytes at any index.
        trie.arena.extend_from_slice(&[0; NARROW]);
        trie.compute_byte_classes(&literal);
        trie
    }
}

fn write_u32(arena: &mut [u8], at: usize, value: u32) {
    if let Some(slot) = arena.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

/// Where a walk reports rules: each node's prefix rules at most once per walk.
struct Report<'a> {
    reported: &'a mut [u32],
    walk_id: u32,
    out: &'a mut Vec<u32>,
}

impl Report<'_> {
    fn prefix(&mut self, trie: &Trie, node: &Node) {
        let Some(mark) = self.reported.get_mut(node.rules as usize) else {
            return;
        };
        if *mark == self.walk_id {
            return;
        }
        *mark = self.walk_id;
        self.out.extend_from_slice(trie.prefix_rules(node));
    }
}

/// The walk's mode: one live position, several stepped in lockstep, or a DFA state.
#[derive(Clone, Copy)]
enum Mode {
    Single(State),
    Lockstep,
    Dfa(u32),
}

/// Where [`Trie::advance_single`] stopped.
enum Single {
    /// No live state: nothing more can match.
    Dead,
    /// The path is consumed with this state live.
    End(State),
    /// The next byte leads several ways: continue in lockstep from this state.
    Ambiguous(State),
}

impl Trie {
    /// Gives every byte its class: each literal byte of the trie is alone in its class, then
    /// every class of a class edge splits the classes it cuts across.
    fn compute_byte_classes(&mut self, literal: &[bool; 256]) {
        let mut class_of = [0u16; 256];
        let mut next = 1u16;
        for (c, &is_literal) in class_of.iter_mut().zip(literal) {
            if is_literal {
                *c = next;
                next += 1;
            }
        }
        for class in &self.classes {
            split(&mut class_of, |b| class.contains(b));
        }
        // Dense, in the order of the bytes' first appearance (so at most 256 classes).
        split(&mut class_of, |_| false);
        self.byte_class = class_of
            .iter()
            .map(|&c| u8::try_from(c).unwrap_or(u8::MAX))
            .collect();
        self.representative.clear();
        for (b, &c) in (0u8..=255).zip(&self.byte_class) {
            if usize::from(c) == self.representative.len() {
                self.representative.push(b);
            }
        }
    }
}

/// Refines `class_of` so that bytes in one class agree on `member`; renumbers the classes
/// densely from 0 in the order of their first byte.
fn split(class_of: &mut [u16; 256], member: impl Fn(u8) -> bool) {
    let mut renumber = [u16::MAX; 2 * 257];
    let mut count = 0u16;
    for (b, c) in (0u8..=255).zip(class_of.iter_mut()) {
        let key = usize::from(*c) * 2 + usize::from(member(b));
        if let Some(slot) = renumber.get_mut(key) {
            if *slot == u16::MAX {
                *slot = count;
                count += 1;
            }
            *c = *slot;
        }
    }
}

impl Trie {
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Bytes the trie occupies (arena, rule tables, classes).
    pub fn size_bytes(&self) -> usize {
        self.arena.len()
            + 12 * self.rule_ranges.len()
            + 4 * self.rule_ids.len()
            + 32 * self.classes.len()
            + self.byte_class.len()
            + self.representative.len()
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes = self.arena.get(at..at + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn node(&self, id: u32) -> Option<Node> {
        let at = id as usize;
        let h = self.arena.get(at..at + HEADER)?;
        let (label_len, rest) = h.split_first_chunk::<4>()?;
        let (rules, rest) = rest.split_first_chunk::<4>()?;
        let (edges, rest) = rest.split_first_chunk::<2>()?;
        let (class_edges, _) = rest.split_first_chunk::<2>()?;
        Some(Node {
            id,
            label_len: u32::from_le_bytes(*label_len),
            rules: u32::from_le_bytes(*rules),
            edges: u16::from_le_bytes(*edges),
            class_edges: u16::from_le_bytes(*class_edges),
        })
    }

    fn label(&self, node: &Node) -> &[u8] {
        let start = node.label_start();
        self.arena
            .get(start..start + node.label_len as usize)
            .unwrap_or_default()
    }

    fn prefix_rules(&self, node: &Node) -> &[u32] {
        match self.rule_ranges.get(node.rules as usize) {
            Some(r) => {
                let start = r.start as usize;
                self.rule_ids
                    .get(start..start + r.prefix_len as usize)
                    .unwrap_or_default()
            }
            None => &[],
        }
    }

    fn end_rules(&self, node: &Node) -> &[u32] {
        match self.rule_ranges.get(node.rules as usize) {
            Some(r) => {
                let start = (r.start + r.prefix_len) as usize;
                self.rule_ids
                    .get(start..start + r.end_len as usize)
                    .unwrap_or_default()
            }
            None => &[],
        }
    }

    fn in_class(&self, class: u32, byte: u8) -> bool {
        self.classes
            .get((class & !ONCE) as usize)
            .is_some_and(|c| c.contains(byte))
    }

    /// Class edge `k` of `node`: `(class id, with [`ONCE`] for a one-byte edge; child)`.
    fn class_edge(&self, node: &Node, k: usize) -> Option<(u32, u32)> {
        let at = node.class_edges_start() + 8 * k;
        Some((self.u32_at(at)?, self.u32_at(at + 4)?))
    }

    fn child(&self, node: &Node, byte: u8) -> Option<u32> {
        let edges = usize::from(node.edges);
        let start = node.index_start();
        let i = if edges == 0 {
            return None;
        } else if edges <= NARROW {
            // Eight first bytes at once: the lowest zero byte of `firsts ^ byte` is the match
            // (first bytes are distinct; lanes past the edge count are masked off). The arena
            // ends with padding, so eight bytes can always be read.
            let lanes = self.arena.get(start..start + 8)?;
            let x = u64::from_le_bytes(lanes.try_into().ok()?)
                ^ (u64::from(byte) * 0x0101_0101_0101_0101);
            let zero = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
            let valid = u64::MAX >> (8 * (NARROW - edges));
            let hit = zero & valid;
            if hit == 0 {
                return None;
            }
            (hit.trailing_zeros() / 8) as usize
        } else {
            let map = self.arena.get(start..start + BITMAP)?;
            let (word, bit) = (usize::from(byte >> 6), u32::from(byte & 63));
            let mut words = [0u64; 4];
            for (w, chunk) in words.iter_mut().zip(map.chunks_exact(8)) {
                *w = u64::from_le_bytes(chunk.try_into().ok()?);
            }
            let this = *words.get(word)?;
            if this >> bit & 1 == 0 {
                return None;
            }
            let below: u32 = words.get(..word)?.iter().map(|w| w.count_ones()).sum();
            (below + (this & ((1u64 << bit) - 1)).count_ones()) as usize
        };
        self.u32_at(node.children_start() + 4 * i)
    }

    /// Whether a position is at its node (the node is reached), rather than inside its label.
    fn reached(state: State, node: &Node) -> bool {
        if state.off >= IN_REPEAT {
            node.label_len == 0
        } else {
            state.off == node.label_len
        }
    }

    /// The positions `state` moves to on `byte`, appended to `next` (duplicates allowed);
    /// the nodes they reach are reported.
    fn step(&self, state: State, byte: u8, next: &mut Vec<State>, report: &mut Report<'_>) {
        let Some(node) = self.node(state.node) else {
            return;
        };
        if state.off >= IN_REPEAT {
            if self.in_class(state.off - IN_REPEAT, byte) {
                // Still in the repeat: whatever it reaches was reported when it started.
                next.push(state);
            }
            // Or the repeat ended before `byte`, and the node's label starts with it.
            match self.label(&node).first() {
                None => self.leave(&node, byte, next, report),
                Some(&first) if first == byte => self.enter(&node, 1, next, report),
                Some(_) => {}
            }
        } else if state.off < node.label_len {
            if self.arena.get(node.label_start() + state.off as usize) == Some(&byte) {
                self.enter(&node, state.off + 1, next, report);
            }
        } else {
            self.leave(&node, byte, next, report);
        }
    }

    /// `off` bytes of `node`'s label are matched.
    fn enter(&self, node: &Node, off: u32, next: &mut Vec<State>, report: &mut Report<'_>) {
        next.push(State { node: node.id, off });
        if off == node.label_len {
            report.prefix(self, node);
        }
    }

    /// From `node` (reached), the positions its edges take `byte` to.
    fn leave(&self, node: &Node, byte: u8, next: &mut Vec<State>, report: &mut Report<'_>) {
        if let Some(child) = self.child(node, byte).and_then(|c| self.node(c)) {
            self.enter(&child, 1, next, report);
        }
        for k in 0..usize::from(node.class_edges) {
            let Some((class, child)) = self.class_edge(node, k) else {
                continue;
            };
            if !self.in_class(class, byte) {
                continue;
            }
            let Some(child) = self.node(child) else {
                continue;
            };
            if class & ONCE != 0 {
                self.enter(&child, 0, next, report);
            } else {
                // One byte of the repeat is in: if the node has no label, it is reached.
                next.push(State {
                    node: child.id,
                    off: IN_REPEAT + class,
                });
                if child.label_len == 0 {
                    report.prefix(self, &child);
                }
            }
        }
    }

    /// The rules anchored with `$` at a state's node, if the path ended there.
    fn report_end(&self, state: State, out: &mut Vec<u32>) {
        if let Some(node) = self.node(state.node) {
            if Self::reached(state, &node) {
                out.extend_from_slice(self.end_rules(&node));
            }
        }
    }

    /// Appends to `out` every rule under root `root` whose pattern matches `path`, within the
    /// budget started by [`WalkScratch::start`]. `out` may receive a rule more than once (a
    /// pattern with several alternatives ends at several nodes); the caller deduplicates.
    pub fn walk(
        &self,
        root: u32,
        path: &[u8],
        scratch: &mut WalkScratch,
        out: &mut Vec<u32>,
    ) -> Walked {
        let Some(root) = self.roots.get(root as usize).and_then(|&r| self.node(r)) else {
            return Walked::Complete;
        };
        scratch.walk_id = scratch.walk_id.wrapping_add(1);
        if scratch.walk_id == 0 {
            scratch.reported.fill(0);
            scratch.walk_id = 1;
        }
        if scratch.reported.len() < self.rule_ranges.len() {
            scratch.reported.resize(self.rule_ranges.len(), 0);
        }
        let WalkScratch {
            dfa,
            lockstep,
            reported,
            walk_id,
            steps_left,
            cache_bytes,
            work,
        } = scratch;
        let mut report = Report {
            reported,
            walk_id: *walk_id,
            out,
        };
        work.bytes += path.len() as u64;
        if root.label_len == 0 {
            report.prefix(self, &root);
        }
        let stride = self.representative.len();
        let mut dfa_ready = false;
        // Short ambiguous stretches (a `.json` after a placeholder) are stepped in lockstep:
        // cheaper than building DFA states that will not be used twice.
        let mut lockstep_left = LOCKSTEP_BYTES;
        // DFA transitions in the current window, and how many of them built a state.
        let (mut window, mut misses) = (0u32, 0u32);
        let mut pos = 0;
        let mut mode = Mode::Single(State {
            node: root.id,
            off: 0,
        });
        loop {
            match mode {
                Mode::Single(state) => {
                    match self.advance_single(state, path, &mut pos, &mut report) {
                        Single::Dead => return Walked::Complete,
                        Single::End(s) => {
                            self.report_end(s, report.out);
                            return Walked::Complete;
                        }
                        Single::Ambiguous(s) => {
                            lockstep.current.clear();
                            lockstep.current.push(s);
                            mode = Mode::Lockstep;
                        }
                    }
                }
                Mode::Lockstep => loop {
                    let Some(&byte) = path.get(pos) else {
                        for &s in &lockstep.current {
                            self.report_end(s, report.out);
                        }
                        return Walked::Complete;
                    };
                    if lockstep_left == 0 || lockstep.current.len() > LOCKSTEP_MAX_POSITIONS {
                        // A long ambiguous stretch, or many positions: with the DFA.
                        if !dfa_ready {
                            dfa.reset(stride);
                            dfa_ready = true;
                        }
                        dfa.next.clear();
                        dfa.next.extend_from_slice(&lockstep.current);
                        if dfa.bytes_used() + 8 * dfa.next.len() + 4 * stride > *cache_bytes {
                            dfa.reset(stride);
                            work.cache_clears += 1;
                        }
                        let (id, created) = dfa.intern_next();
                        if created {
                            work.dfa_states += 1;
                        }
                        mode = Mode::Dfa(id);
                        break;
                    }
                    lockstep_left -= 1;
                    let Lockstep { current, next } = lockstep;
                    next.clear();
                    for &s in current.iter() {
                        self.step(s, byte, next, &mut report);
                        if next.len() > MAX_LIVE_POSITIONS {
                            return Walked::Exhausted;
                        }
                    }
                    let cost = (current.len() + next.len()) as u64;
                    if cost > *steps_left {
                        return Walked::Exhausted;
                    }
                    *steps_left -= cost;
                    work.steps += cost;
                    sort_states(next, &mut dfa.merge);
                    if next.is_empty() {
                        return Walked::Complete;
                    }
                    std::mem::swap(current, next);
                    pos += 1;
                    if let [only] = current.as_slice() {
                        mode = Mode::Single(*only);
                        break;
                    }
                },
                Mode::Dfa(mut d) => loop {
                    if window == DFA_WINDOW {
                        let small = dfa.members_of(d).len() <= LOCKSTEP_MAX_POSITIONS;
                        if misses >= DFA_WINDOW_MISSES && small {
                            lockstep.current.clear();
                            lockstep.current.extend_from_slice(dfa.members_of(d));
                            lockstep_left = LOCKSTEP_AFTER_MISSES;
                            (window, misses) = (0, 0);
                            mode = Mode::Lockstep;
                            break;
                        }
                        (window, misses) = (0, 0);
                    }
                    window += 1;
                    let Some(&byte) = path.get(pos) else {
                        for &s in dfa.members_of(d) {
                            self.report_end(s, report.out);
                        }
                        return Walked::Complete;
                    };
                    let class = self.byte_class.get(usize::from(byte)).copied().unwrap_or(0);
                    let slot = d as usize * stride + usize::from(class);
                    let mut target = dfa.table.get(slot).copied().unwrap_or(UNKNOWN);
                    if target == UNKNOWN {
                        misses += 1;
                        let rep = self.representative.get(usize::from(class)).copied();
                        let (start, len) = dfa.spans.get(d as usize).copied().unwrap_or((0, 0));
                        dfa.next.clear();
                        let from = start as usize..(start + len) as usize;
                        for i in from {
                            if let (Some(&s), Some(rep)) = (dfa.members.get(i), rep) {
                                self.step(s, rep, &mut dfa.next, &mut report);
                            }
                            if dfa.next.len() > MAX_LIVE_POSITIONS {
                                return Walked::Exhausted;
                            }
                        }
                        let cost = u64::from(len) + dfa.next.len() as u64;
                        if cost > *steps_left {
                            return Walked::Exhausted;
                        }
                        *steps_left -= cost;
                        work.steps += cost;
                        sort_states(&mut dfa.next, &mut dfa.merge);
                        if dfa.next.is_empty() {
                            target = DEAD;
                            if let Some(t) = dfa.table.get_mut(slot) {
                                *t = DEAD;
                            }
                        } else {
                            let need = 8 * dfa.next.len() + 4 * stride + 24;
                            let cleared = dfa.bytes_used() + need > *cache_bytes;
                            if cleared {
                                dfa.reset(stride);
                                work.cache_clears += 1;
                            }
                            let (id, created) = dfa.intern_next();
                            if created {
                                work.dfa_states += 1;
                            }
                            if !cleared {
                                if let Some(t) = dfa.table.get_mut(slot) {
                                    *t = id;
                                }
                            }
                            target = id;
                        }
                    }
                    if target == DEAD {
                        return Walked::Complete;
                    }
                    pos += 1;
                    d = target;
                    if let [only] = dfa.members_of(d) {
                        mode = Mode::Single(*only);
                        break;
                    }
                },
            }
        }
    }

    /// Moves the only live state as far as it can go without becoming ambiguous.
    fn advance_single(
        &self,
        mut state: State,
        path: &[u8],
        pos: &mut usize,
        report: &mut Report<'_>,
    ) -> Single {
        loop {
            let Some(node) = self.node(state.node) else {
                return Single::Dead;
            };
            if state.off < node.label_len {
                // Inside a label: compare the rest of it in one go.
                let rest = self
                    .label(&node)
                    .get(state.off as usize..)
                    .unwrap_or_default();
                match path.get(*pos..*pos + rest.len()) {
                    Some(seen) if seen == rest => {
                        *pos += rest.len();
                        report.prefix(self, &node);
                        state.off = node.label_len;
                    }
                    _ => return Single::Dead,
                }
            } else if state.off >= IN_REPEAT {
                let class = self
                    .classes
                    .get((state.off - IN_REPEAT) as usize)
                    .copied()
                    .unwrap_or(ByteClass::EMPTY);
                let first = self.label(&node).first().copied();
                // Bytes that may end the repeat: the label's first byte, or (no label)
                // whatever the node's own edges take. Every other byte of the class extends it.
                let stop = match first {
                    Some(f) => ByteClass::EMPTY.with(f),
                    None => self.leaving_bytes(&node),
                };
                while let Some(&b) = path.get(*pos) {
                    if stop.contains(b) || !class.contains(b) {
                        break;
                    }
                    *pos += 1;
                }
                let Some(&b) = path.get(*pos) else {
                    return Single::End(state);
                };
                if class.contains(b) {
                    // The repeat could go on or end here.
                    return Single::Ambiguous(state);
                }
                // The repeat must end before `b`.
                match first {
                    Some(f) if f == b => {
                        *pos += 1;
                        state.off = 1;
                        if node.label_len == 1 {
                            report.prefix(self, &node);
                        }
                        continue;
                    }
                    Some(_) => return Single::Dead,
                    // The node itself is reached; branch on `b` below.
                    None => state.off = 0,
                }
            }
            // At the node: one edge may take the next byte, or several.
            let Some(&byte) = path.get(*pos) else {
                return Single::End(state);
            };
            let literal = self.child(&node, byte);
            let mut class_edge = None;
            for k in 0..usize::from(node.class_edges) {
                if let Some((class, child)) = self.class_edge(&node, k) {
                    if self.in_class(class, byte) {
                        if class_edge.is_some() || literal.is_some() {
                            return Single::Ambiguous(state);
                        }
                        class_edge = Some((class, child));
                    }
                }
            }
            *pos += 1;
            state = match (literal.and_then(|c| self.node(c)), class_edge) {
                (Some(child), None) => {
                    if child.label_len == 1 {
                        report.prefix(self, &child);
                    }
                    State {
                        node: child.id,
                        off: 1,
                    }
                }
                (None, Some((class, child))) => {
                    if let Some(c) = self.node(child).filter(|c| c.label_len == 0) {
                        report.prefix(self, &c);
                    }
                    let off = if class & ONCE != 0 {
                        0
                    } else {
                        IN_REPEAT + class
                    };
                    State { node: child, off }
                }
                _ => return Single::Dead,
            };
        }
    }

    /// Every byte one of `node`'s edges takes.
    fn leaving_bytes(&self, node: &Node) -> ByteClass {
        let start = node.index_start();
        let mut set = ByteClass::EMPTY;
        if usize::from(node.edges) <= NARROW {
            let firsts = self.arena.get(start..start + usize::from(node.edges));
            for &b in firsts.unwrap_or_default() {
                set = set.with(b);
            }
        } else if let Some(map) = self.arena.get(start..start + BITMAP) {
            for (i, &bits) in (0u8..).zip(map) {
                for bit in 0..8u8 {
                    if bits >> bit & 1 == 1 {
                        set = set.with(i << 3 | bit);
                    }
                }
            }
        }
        for k in 0..usize::from(node.class_edges) {
            let class = self.class_edge(node, k).map(|(c, _)| c);
            if let Some(class) = class.and_then(|c| self.classes.get((c & !ONCE) as usize)) {
                set = set.union(*class);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::super::pattern::{analyze, PatternKind};
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn trie(patterns: &[&str]) -> (Trie, u32) {
        let mut b = TrieBuilder::new();
        let root = b.add_root();
        for (i, p) in patterns.iter().enumerate() {
            let PatternKind::Trie(variants) = analyze(p).kind else {
                panic!("{p} is not a trie pattern")
            };
            for tokens in variants {
                b.insert(root, &tokens, i as u32).unwrap();
            }
        }
        (b.build(), root)
    }

    fn matches(t: &(Trie, u32), path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let walked =
            t.0.walk(t.1, path.as_bytes(), &mut WalkScratch::default(), &mut out);
        assert_eq!(walked, Walked::Complete);
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn prefix_and_anchor() {
        let t = trie(&["/", "/foo", "/foo$", "/foo/bar"]);
        assert_eq!(matches(&t, "/foo"), [0, 1, 2]);
        assert_eq!(matches(&t, "/foobar"), [0, 1]);
        assert_eq!(matches(&t, "/foo/bar/baz"), [0, 1, 3]);
        assert_eq!(matches(&t, "/fo"), [0]);
        assert_eq!(matches(&t, "x"), Vec::<u32>::new());
    }

    #[test]
    fn placeholders_backtrack_like_a_regex() {
        let t = trie(&["/w/{id}.json", "/w/{id}/defs", "/w/{id}$", "/{a}{b}x"]);
        // "a.b.json" is all placeholder characters, so the anchored rule matches too.
        assert_eq!(matches(&t, "/w/a.b.json"), [0, 2]);
        assert_eq!(matches(&t, "/w/abc"), [2]);
        assert_eq!(matches(&t, "/w/abc/defs"), [1]);
        assert_eq!(matches(&t, "/w/.json"), [2]); // placeholder needs one char before ".json"
        assert_eq!(matches(&t, "/w/"), Vec::<u32>::new());
        assert_eq!(matches(&t, "/abx"), [3]);
        assert_eq!(matches(&t, "/ax"), Vec::<u32>::new());
        // '/' is not in the placeholder class; '[' neither.
        assert_eq!(matches(&t, "/w/a/b.json"), Vec::<u32>::new());
        assert_eq!(matches(&t, "/w/a[b"), Vec::<u32>::new());
    }

    #[test]
    fn labels_split_where_patterns_diverge() {
        let t = trie(&["/v1/accounts/{id}", "/v1/accounting", "/v1/acc$", "/v2"]);
        assert_eq!(matches(&t, "/v1/accounts/7"), [0]);
        assert_eq!(matches(&t, "/v1/accounting/x"), [1]);
        assert_eq!(matches(&t, "/v1/acc"), [2]);
        assert_eq!(matches(&t, "/v1/accounts/"), Vec::<u32>::new());
        assert_eq!(matches(&t, "/v2x"), [3]);
        assert_eq!(matches(&t, "/v"), Vec::<u32>::new());
    }

    #[test]
    fn regex_classes_are_repeat_edges_too() {
        let t = trie(&[
            "/v1/[0-9]+$",
            "/v1/{slug}$",
            "/v1/(daily|weekly)/x",
            "/v1/a*b",
        ]);
        assert_eq!(matches(&t, "/v1/123"), [0, 1]);
        assert_eq!(matches(&t, "/v1/12a"), [1]);
        assert_eq!(matches(&t, "/v1/weekly/x/y"), [2]);
        assert_eq!(matches(&t, "/v1/b"), [1, 3]);
        assert_eq!(matches(&t, "/v1/aaab"), [1, 3]);
    }

    #[test]
    fn wide_and_narrow_nodes_find_every_child() {
        // A bitmap node (73 edges), then nodes of 1 to 9 edges.
        let wide: Vec<String> = (1u8..=126)
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~!&',;=:@".contains(b))
            .map(|b| format!("/{}$", char::from(b)))
            .collect();
        let refs: Vec<&str> = wide.iter().map(String::as_str).collect();
        let t = trie(&refs);
        for (i, p) in wide.iter().enumerate() {
            assert_eq!(matches(&t, p.trim_end_matches('$')), [i as u32], "{p}");
        }
        assert_eq!(matches(&t, "/%"), Vec::<u32>::new());
        assert_eq!(matches(&t, "/ab"), Vec::<u32>::new());
        for n in 1..=9u8 {
            let pats: Vec<String> = (0..n)
                .map(|k| format!("/x{}", char::from(b'a' + 2 * k)))
                .collect();
            let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
            let t = trie(&refs);
            for (i, p) in pats.iter().enumerate() {
                assert_eq!(matches(&t, p), [i as u32], "{n}: {p}");
            }
            for k in 0..=2 * n {
                if k % 2 == 1 {
                    assert_eq!(
                        matches(&t, &format!("/x{}", char::from(b'a' + k))),
                        Vec::<u32>::new()
                    );
                }
            }
        }
    }

    #[test]
    fn one_byte_class_edges_and_top_level_alternatives() {
        let t = trie(&["/v[0-9]/x$", "/v1/x", "/a|/b", r"/[a-z]+/\d{2}"]);
        assert_eq!(matches(&t, "/v1/x"), [0, 1]);
        assert_eq!(matches(&t, "/v7/x"), [0]);
        assert_eq!(matches(&t, "/vx/x"), Vec::<u32>::new());
        // `/b` anywhere, as PCRE reads APIcast's `^/a|/b`.
        assert_eq!(matches(&t, "/zz/b"), [2]);
        assert_eq!(matches(&t, "/abc"), [2]);
        assert_eq!(matches(&t, "/abc/12x"), [2, 3]);
        assert_eq!(matches(&t, "/xyz/1"), Vec::<u32>::new());
    }

    #[test]
    fn long_ambiguous_runs_go_through_the_dfa_and_report_rules_once() {
        let t = trie(&["/{a}x", "/{a}x", "/{a}{b}{c}$"]);
        let path = format!("/{}", "x".repeat(500));
        let mut scratch = WalkScratch::default();
        let mut out = Vec::new();
        assert_eq!(
            t.0.walk(t.1, path.as_bytes(), &mut scratch, &mut out),
            Walked::Complete
        );
        out.sort_unstable();
        assert_eq!(out, [0, 1, 2]);
        let work = scratch.work();
        assert!(work.dfa_states > 0 && work.dfa_states < 16, "{work:?}");
        // Out of budget: the walk says so.
        scratch.start(
            WalkLimits {
                steps: 10,
                steps_per_byte: 0,
                cache_bytes: 1 << 16,
            },
            path.len(),
        );
        out.clear();
        assert_eq!(
            t.0.walk(t.1, path.as_bytes(), &mut scratch, &mut out),
            Walked::Exhausted
        );
    }

    #[test]
    fn sorting_positions_merges_runs() {
        let st = |node: u32, off: u32| State { node, off };
        let mut buffer = Vec::new();
        let cases: Vec<Vec<State>> = vec![
            vec![],
            vec![st(1, 1)],
            vec![st(1, 2), st(1, 3), st(1, IN_REPEAT), st(1, 1), st(2, 0)],
            vec![st(5, 0), st(4, 0), st(3, 0), st(2, 0), st(1, 0), st(1, 0)],
            (0..40).rev().map(|n| st(n, 0)).collect(),
            (0..100).map(|n| st(n % 7, n % 3)).collect(),
        ];
        for case in cases {
            let mut want = case.clone();
            want.sort_unstable();
            want.dedup();
            let mut got = case;
            sort_states(&mut got, &mut buffer);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn empty_pattern_matches_everything() {
        let t = trie(&[""]);
        assert_eq!(matches(&t, "/anything"), [0]);
        assert_eq!(matches(&t, ""), [0]);
    }

    #[test]
    fn a_very_long_pattern_builds_and_matches() {
        let long = "/{a}x".repeat(20_000);
        let t = trie(&[&long]);
        assert_eq!(matches(&t, &"/bx".repeat(20_000)), [0]);
        assert_eq!(matches(&t, &"/bx".repeat(19_999)), Vec::<u32>::new());
    }
}
