//! Plain patterns compiled into one path-compressed trie, walked once per request.
//!
//! Patterns sharing a prefix share nodes, and a placeholder is an edge like any other (a
//! repeat of its character class; `[0-9]+` from a regex pattern is another), so `/{a}.json`
//! and `/{b}.xml` share the node after their placeholder. Runs of literal bytes with no
//! branching are stored as one label and compared in one go. Matching simulates the trie as an
//! automaton over the path bytes: the set of live states is bounded by how many patterns are
//! ambiguous at the same point of the path, not by how many patterns there are, and a single
//! live state (the common case) skips through labels and repeat runs without per-byte
//! bookkeeping.
//!
//! Each node is stored contiguously in one byte arena (header, label, edge bytes, children),
//! so descending one level of a large trie costs one or two cache lines, not one per array.
//!
//! Prefix semantics: a rule without `$` matches as soon as its node is reached; a rule with
//! `$` only if its node is reached exactly at the end of the path.

use std::collections::BTreeMap;

use super::pattern::{ByteClass, Token};

const NONE: u32 = u32::MAX;
/// `State::off` from this value up: inside a repeat of class `off - IN_REPEAT`, whose
/// continuation is `State::node`. Labels are shorter than this.
const IN_REPEAT: u32 = 1 << 31;

/// Node layout in the arena, at the node's offset (its id):
/// `label_len: u32 | rules: u32 | edges: u16 | repeats: u16 | label | edge index |
/// padding to 4 | (child: u32) per literal edge | (class: u32, child: u32) per repeat edge`.
/// The edge index is the children's first bytes in order (up to [`NARROW`] edges, searched
/// eight at a time in a u64) or a 256-bit map of them (wider nodes, ranked with popcount):
/// both without data-dependent branches.
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
    repeats: u16,
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

    fn repeats_start(&self) -> usize {
        self.children_start() + 4 * usize::from(self.edges)
    }

    fn size(&self) -> usize {
        self.repeats_start() + 8 * usize::from(self.repeats) - self.id as usize
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// Reusable state sets for [`Trie::walk`].
#[derive(Debug, Default, Clone)]
pub struct WalkScratch {
    current: Vec<State>,
    next: Vec<State>,
}

#[derive(Default)]
struct BuildNode {
    children: BTreeMap<u8, u32>,
    repeats: Vec<(ByteClass, u32)>,
    prefix_rules: Vec<u32>,
    end_rules: Vec<u32>,
}

/// Collects patterns byte by byte, then freezes them into a compressed [`Trie`].
#[derive(Default)]
pub struct TrieBuilder {
    nodes: Vec<BuildNode>,
    roots: Vec<u32>,
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty root; returns its index for [`Self::insert`] and [`Trie::walk`].
    pub fn add_root(&mut self) -> u32 {
        let node = self.push_node();
        self.roots.push(node);
        len_u32(self.roots.len() - 1)
    }

    fn push_node(&mut self) -> u32 {
        self.nodes.push(BuildNode::default());
        len_u32(self.nodes.len() - 1)
    }

    /// Adds `tokens` under root `root` for `rule`. [`Token::End`] may only come last (the
    /// pattern reader guarantees it).
    pub fn insert(&mut self, root: u32, tokens: &[Token], rule: u32) {
        let Some(&mut mut node) = self.roots.get_mut(root as usize) else {
            return;
        };
        let mut anchored = false;
        for &token in tokens {
            let existing = match token {
                Token::End => {
                    anchored = true;
                    break;
                }
                Token::Byte(b) => self
                    .nodes
                    .get(node as usize)
                    .and_then(|n| n.children.get(&b).copied()),
                Token::Repeat(class) => self.nodes.get(node as usize).and_then(|n| {
                    n.repeats
                        .iter()
                        .find(|(c, _)| *c == class)
                        .map(|&(_, child)| child)
                }),
            };
            node = match existing {
                Some(child) => child,
                None => {
                    let child = self.push_node();
                    if let Some(n) = self.nodes.get_mut(node as usize) {
                        match token {
                            Token::Byte(b) => {
                                n.children.insert(b, child);
                            }
                            Token::Repeat(class) => n.repeats.push((class, child)),
                            Token::End => {}
                        }
                    }
                    child
                }
            };
        }
        if let Some(n) = self.nodes.get_mut(node as usize) {
            if anchored {
                n.end_rules.push(rule);
            } else {
                n.prefix_rules.push(rule);
            }
        }
    }

    /// Freezes the trie: chains of single-child nodes become labels, nodes are laid out
    /// depth-first so a walk reads memory mostly forward. Iterative, so a pattern of any
    /// length cannot exhaust the stack. Offsets are u32: a trie larger than 4 GiB (far beyond
    /// the configuration size limit) would be cut short.
    pub fn build(self) -> Trie {
        let mut trie = Trie {
            roots: vec![NONE; self.roots.len()],
            ..Trie::default()
        };
        let mut class_ids: BTreeMap<ByteClass, u32> = BTreeMap::new();
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
        while let Some((start, first, fill)) = tasks.pop() {
            label.clear();
            label.extend(first);
            let mut b = start;
            // Absorb single-child chains into the label.
            while let Some(n) = self.nodes.get(b as usize) {
                let only_child = match (n.children.len(), n.repeats.is_empty()) {
                    (1, true)
                        if n.prefix_rules.is_empty()
                            && n.end_rules.is_empty()
                            && label.len() < (IN_REPEAT - 1) as usize =>
                    {
                        n.children.iter().next()
                    }
                    _ => None,
                };
                let Some((&byte, &child)) = only_child else {
                    break;
                };
                label.push(byte);
                b = child;
            }
            let Some(n) = self.nodes.get(b as usize) else {
                continue;
            };
            let Ok(id) = u32::try_from(trie.arena.len()) else {
                break;
            };
            let rules = if n.prefix_rules.is_empty() && n.end_rules.is_empty() {
                NONE
            } else {
                let start = len_u32(trie.rule_ids.len());
                trie.rule_ids.extend(&n.prefix_rules);
                trie.rule_ids.extend(&n.end_rules);
                trie.rule_ranges.push(RuleRange {
                    start,
                    prefix_len: len_u32(n.prefix_rules.len()),
                    end_len: len_u32(n.end_rules.len()),
                });
                len_u32(trie.rule_ranges.len() - 1)
            };
            // At most 256 literal edges (one per byte); distinct repeat classes are few.
            let repeats = n
                .repeats
                .get(..n.repeats.len().min(usize::from(u16::MAX)))
                .unwrap_or_default();
            let node = Node {
                id,
                label_len: len_u32(label.len()),
                rules,
                edges: u16::try_from(n.children.len()).unwrap_or(u16::MAX),
                repeats: u16::try_from(repeats.len()).unwrap_or(u16::MAX),
            };
            let arena = &mut trie.arena;
            arena.extend_from_slice(&node.label_len.to_le_bytes());
            arena.extend_from_slice(&rules.to_le_bytes());
            arena.extend_from_slice(&node.edges.to_le_bytes());
            arena.extend_from_slice(&node.repeats.to_le_bytes());
            arena.extend_from_slice(&label);
            if n.children.len() <= NARROW {
                arena.extend(n.children.keys());
            } else {
                let mut map = [0u8; BITMAP];
                for &b in n.children.keys() {
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
            for (k, &(repeated, child)) in repeats.iter().enumerate().rev() {
                let next_id = len_u32(class_ids.len());
                let class_id = *class_ids.entry(repeated).or_insert(next_id);
                if class_id == next_id {
                    trie.classes.push(repeated);
                }
                let at = node.repeats_start() + 8 * k;
                write_u32(&mut trie.arena, at, class_id);
                tasks.push((child, None, Ok(at + 4)));
            }
            for (k, (&byte, &child)) in n.children.iter().enumerate().rev() {
                tasks.push((child, Some(byte), Ok(node.children_start() + 4 * k)));
            }
        }
        // Lets the edge search read eight bytes at any index.
        trie.arena.extend_from_slice(&[0; NARROW]);
        trie
    }
}

fn write_u32(arena: &mut [u8], at: usize, value: u32) {
    if let Some(slot) = arena.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

fn push_unique(set: &mut Vec<State>, state: State) -> bool {
    if set.contains(&state) {
        return false;
    }
    set.push(state);
    true
}

impl Trie {
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Bytes the trie occupies (arena and rule tables).
    pub fn size_bytes(&self) -> usize {
        self.arena.len() + 12 * self.rule_ranges.len() + 4 * self.rule_ids.len()
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
        let (repeats, _) = rest.split_first_chunk::<2>()?;
        Some(Node {
            id,
            label_len: u32::from_le_bytes(*label_len),
            rules: u32::from_le_bytes(*rules),
            edges: u16::from_le_bytes(*edges),
            repeats: u16::from_le_bytes(*repeats),
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
            .get(class as usize)
            .is_some_and(|c| c.contains(byte))
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

    /// `off` bytes of `node`'s label are matched: record the state, and the node's prefix
    /// rules if that completes the label.
    fn enter(&self, node: &Node, off: u32, next: &mut Vec<State>, out: &mut Vec<u32>) {
        if push_unique(next, State { node: node.id, off }) && off == node.label_len {
            out.extend_from_slice(self.prefix_rules(node));
        }
    }

    /// A repeat of `class` leading to `id` has consumed its first byte. If `id` has no label,
    /// the repeat may end here, which reaches `id` itself.
    fn enter_repeat(&self, id: u32, class: u32, next: &mut Vec<State>, out: &mut Vec<u32>) {
        let Some(node) = self.node(id) else {
            return;
        };
        let state = State {
            node: id,
            off: IN_REPEAT + class,
        };
        if push_unique(next, state) && node.label_len == 0 {
            out.extend_from_slice(self.prefix_rules(&node));
        }
    }

    /// From `node` (label complete), consume `byte`.
    fn leave(&self, node: &Node, byte: u8, next: &mut Vec<State>, out: &mut Vec<u32>) {
        if let Some(child) = self.child(node, byte).and_then(|c| self.node(c)) {
            self.enter(&child, 1, next, out);
        }
        let start = node.repeats_start();
        for k in 0..usize::from(node.repeats) {
            let at = start + 8 * k;
            let (Some(class), Some(child)) = (self.u32_at(at), self.u32_at(at + 4)) else {
                continue;
            };
            if self.in_class(class, byte) {
                self.enter_repeat(child, class, next, out);
            }
        }
    }

    fn step(&self, state: State, byte: u8, next: &mut Vec<State>, out: &mut Vec<u32>) {
        let Some(node) = self.node(state.node) else {
            return;
        };
        if state.off >= IN_REPEAT {
            if self.in_class(state.off - IN_REPEAT, byte) {
                push_unique(next, state);
            }
            // Or the repeat ended before `byte`, and the node's label starts with it.
            match self.label(&node).first() {
                None => self.leave(&node, byte, next, out),
                Some(&first) if first == byte => self.enter(&node, 1, next, out),
                Some(_) => {}
            }
        } else if state.off < node.label_len {
            let expected = self.arena.get(node.label_start() + state.off as usize);
            if expected == Some(&byte) {
                self.enter(&node, state.off + 1, next, out);
            }
        } else {
            self.leave(&node, byte, next, out);
        }
    }

    /// Appends to `out` every rule under root `root` whose pattern matches `path`.
    /// `out` may receive a rule more than once; the caller sorts and deduplicates.
    pub fn walk(&self, root: u32, path: &[u8], scratch: &mut WalkScratch, out: &mut Vec<u32>) {
        let WalkScratch { current, next } = scratch;
        current.clear();
        let Some(root) = self.roots.get(root as usize).and_then(|&r| self.node(r)) else {
            return;
        };
        if root.label_len == 0 {
            out.extend_from_slice(self.prefix_rules(&root));
        }
        let mut pos = 0;
        // One live state (the usual case) is kept here, out of the vectors.
        let mut single = Some(State {
            node: root.id,
            off: 0,
        });
        loop {
            if let Some(state) = single {
                match self.advance_single(state, path, &mut pos, out) {
                    Single::Dead => return,
                    Single::End(s) => {
                        self.end_rules_of(Some(s), out);
                        return;
                    }
                    Single::Ambiguous(s) => {
                        current.clear();
                        current.push(s);
                        single = None;
                    }
                }
            }
            let Some(&byte) = path.get(pos) else {
                for &state in current.iter() {
                    self.end_rules_of(Some(state), out);
                }
                return;
            };
            if current.is_empty() {
                return;
            }
            next.clear();
            for &state in current.iter() {
                self.step(state, byte, next, out);
            }
            std::mem::swap(current, next);
            pos += 1;
            if let [only] = current.as_slice() {
                single = Some(*only);
            }
        }
    }

    /// Moves the only live state as far as it can go without becoming ambiguous.
    fn advance_single(
        &self,
        mut state: State,
        path: &[u8],
        pos: &mut usize,
        out: &mut Vec<u32>,
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
                        out.extend_from_slice(self.prefix_rules(&node));
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
                        if node.label_len == 1 {
                            out.extend_from_slice(self.prefix_rules(&node));
                        }
                        state.off = 1;
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
            let start = node.repeats_start();
            let mut repeat = None;
            for k in 0..usize::from(node.repeats) {
                let at = start + 8 * k;
                if let (Some(class), Some(child)) = (self.u32_at(at), self.u32_at(at + 4)) {
                    if self.in_class(class, byte) {
                        if repeat.is_some() || literal.is_some() {
                            return Single::Ambiguous(state);
                        }
                        repeat = Some((class, child));
                    }
                }
            }
            *pos += 1;
            state = match (literal.and_then(|c| self.node(c)), repeat) {
                (Some(child), None) => {
                    if child.label_len == 1 {
                        out.extend_from_slice(self.prefix_rules(&child));
                    }
                    State {
                        node: child.id,
                        off: 1,
                    }
                }
                (None, Some((class, child))) => {
                    if let Some(c) = self.node(child).filter(|c| c.label_len == 0) {
                        out.extend_from_slice(self.prefix_rules(&c));
                    }
                    State {
                        node: child,
                        off: IN_REPEAT + class,
                    }
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
        let repeats = node.repeats_start();
        for k in 0..usize::from(node.repeats) {
            let class = self.u32_at(repeats + 8 * k);
            if let Some(class) = class.and_then(|c| self.classes.get(c as usize)) {
                set = set.union(*class);
            }
        }
        set
    }

    /// The rules anchored with `$` at a state's node, if the path ended there.
    fn end_rules_of(&self, state: Option<State>, out: &mut Vec<u32>) {
        let Some(state) = state else {
            return;
        };
        let Some(node) = self.node(state.node) else {
            return;
        };
        let at_node = if state.off >= IN_REPEAT {
            node.label_len == 0
        } else {
            state.off == node.label_len
        };
        if at_node {
            out.extend_from_slice(self.end_rules(&node));
        }
    }
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
                b.insert(root, &tokens, i as u32);
            }
        }
        (b.build(), root)
    }

    fn matches(t: &(Trie, u32), path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.0.walk(t.1, path.as_bytes(), &mut WalkScratch::default(), &mut out);
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
