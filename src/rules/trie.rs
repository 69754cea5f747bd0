//! Plain patterns compiled into one trie over their tokens, walked once per request.
//!
//! Patterns sharing a prefix share nodes, and a placeholder is an edge like any other (all
//! placeholders are the same character class), so `/{a}.json` and `/{b}.xml` share the node after
//! their placeholder. Matching simulates the trie as an automaton over the path bytes: the set
//! of live states is bounded by how many patterns are ambiguous at the same point of the path,
//! not by how many patterns there are. Prefix semantics fall out naturally: a rule without `$`
//! matches as soon as its node is reached; a rule with `$` only if its node is live at the end.
//!
//! Several roots (one per HTTP method, one for `ANY`) live in one arena, so one walk serves the
//! request's method and `ANY` together.

use std::collections::BTreeMap;

use super::pattern::{placeholder_class, Token};

const NONE: u32 = u32::MAX;
/// State flag: inside a placeholder whose continuation is the node in the low bits.
const IN_PLACEHOLDER: u32 = 1 << 31;

static PLACEHOLDER_CLASS: [bool; 256] = placeholder_class();

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Children by literal byte: `edges[edges_start..edges_start + edges_len]`, sorted.
    edges_start: u32,
    edges_len: u32,
    /// Child reached through a placeholder, or [`NONE`].
    placeholder: u32,
    /// Rules ending here without `$`: `rule_ids[prefix_start..prefix_start + prefix_len]`.
    prefix_start: u32,
    prefix_len: u32,
    /// Rules ending here with `$`.
    end_start: u32,
    end_len: u32,
}

#[derive(Debug, Default, Clone)]
pub struct Trie {
    nodes: Vec<Node>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    rule_ids: Vec<u32>,
}

/// Reusable state sets for [`Trie::walk`].
#[derive(Debug, Default, Clone)]
pub struct WalkScratch {
    current: Vec<u32>,
    next: Vec<u32>,
}

#[derive(Default)]
struct BuildNode {
    children: BTreeMap<u8, u32>,
    placeholder: Option<u32>,
    prefix_rules: Vec<u32>,
    end_rules: Vec<u32>,
}

/// Collects patterns, then freezes them into a [`Trie`].
#[derive(Default)]
pub struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty root.
    pub fn add_root(&mut self) -> u32 {
        self.push_node()
    }

    fn push_node(&mut self) -> u32 {
        let id = u32::try_from(self.nodes.len()).unwrap_or(NONE);
        self.nodes.push(BuildNode::default());
        id
    }

    /// Adds `tokens` under `root` for `rule`. [`Token::End`] may only come last (the pattern
    /// reader guarantees it).
    pub fn insert(&mut self, root: u32, tokens: &[Token], rule: u32) {
        let mut node = root;
        let mut anchored = false;
        for &token in tokens {
            let existing = match token {
                Token::End => {
                    anchored = true;
                    break;
                }
                Token::Byte(b) => self.node(node).and_then(|n| n.children.get(&b).copied()),
                Token::Placeholder => self.node(node).and_then(|n| n.placeholder),
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
                            Token::Placeholder => n.placeholder = Some(child),
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

    fn node(&self, id: u32) -> Option<&BuildNode> {
        self.nodes.get(id as usize)
    }

    pub fn build(self) -> Trie {
        let mut trie = Trie::default();
        trie.nodes.reserve_exact(self.nodes.len());
        for n in self.nodes {
            let edges_start = len_u32(&trie.edge_bytes);
            for (b, child) in n.children {
                trie.edge_bytes.push(b);
                trie.edge_targets.push(child);
            }
            let prefix_start = len_u32(&trie.rule_ids);
            trie.rule_ids.extend(&n.prefix_rules);
            let end_start = len_u32(&trie.rule_ids);
            trie.rule_ids.extend(&n.end_rules);
            trie.nodes.push(Node {
                edges_start,
                edges_len: len_u32(&trie.edge_bytes) - edges_start,
                placeholder: n.placeholder.unwrap_or(NONE),
                prefix_start,
                prefix_len: end_start - prefix_start,
                end_start,
                end_len: len_u32(&trie.rule_ids) - end_start,
            });
        }
        trie
    }
}

fn len_u32<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

fn push_unique(set: &mut Vec<u32>, state: u32) {
    if !set.contains(&state) {
        set.push(state);
    }
}

impl Trie {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn child(&self, node: &Node, byte: u8) -> Option<u32> {
        let start = node.edges_start as usize;
        let bytes = self
            .edge_bytes
            .get(start..start + node.edges_len as usize)?;
        let i = if bytes.len() <= 8 {
            bytes.iter().position(|&b| b == byte)?
        } else {
            bytes.binary_search(&byte).ok()?
        };
        self.edge_targets.get(start + i).copied()
    }

    fn rules(&self, start: u32, len: u32) -> &[u32] {
        let start = start as usize;
        self.rule_ids
            .get(start..start + len as usize)
            .unwrap_or_default()
    }

    /// Appends to `out` every rule (from the given roots) whose pattern matches `path`.
    /// `out` may receive a rule more than once; the caller sorts and deduplicates.
    pub fn walk(&self, roots: &[u32], path: &[u8], scratch: &mut WalkScratch, out: &mut Vec<u32>) {
        let WalkScratch { current, next } = scratch;
        current.clear();
        for &root in roots {
            if let Some(node) = self.nodes.get(root as usize) {
                push_unique(current, root);
                out.extend_from_slice(self.rules(node.prefix_start, node.prefix_len));
            }
        }
        for &byte in path {
            if current.is_empty() {
                return;
            }
            next.clear();
            let in_class = PLACEHOLDER_CLASS
                .get(usize::from(byte))
                .copied()
                .unwrap_or(false);
            for &state in current.iter() {
                if state & IN_PLACEHOLDER != 0 {
                    if in_class {
                        push_unique(next, state);
                        push_unique(next, state & !IN_PLACEHOLDER);
                    }
                    continue;
                }
                let Some(node) = self.nodes.get(state as usize) else {
                    continue;
                };
                if let Some(child) = self.child(node, byte) {
                    push_unique(next, child);
                }
                if in_class && node.placeholder != NONE {
                    push_unique(next, node.placeholder | IN_PLACEHOLDER);
                    push_unique(next, node.placeholder);
                }
            }
            for &state in next.iter() {
                if state & IN_PLACEHOLDER == 0 {
                    if let Some(node) = self.nodes.get(state as usize) {
                        out.extend_from_slice(self.rules(node.prefix_start, node.prefix_len));
                    }
                }
            }
            std::mem::swap(current, next);
        }
        for &state in current.iter() {
            if state & IN_PLACEHOLDER == 0 {
                if let Some(node) = self.nodes.get(state as usize) {
                    out.extend_from_slice(self.rules(node.end_start, node.end_len));
                }
            }
        }
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
            let PatternKind::Plain(tokens) = analyze(p).kind else {
                panic!("{p} is not plain")
            };
            b.insert(root, &tokens, i as u32);
        }
        (b.build(), root)
    }

    fn matches(t: &(Trie, u32), path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.0.walk(
            &[t.1],
            path.as_bytes(),
            &mut WalkScratch::default(),
            &mut out,
        );
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
    fn empty_pattern_matches_everything() {
        let t = trie(&[""]);
        assert_eq!(matches(&t, "/anything"), [0]);
        assert_eq!(matches(&t, ""), [0]);
    }
}
