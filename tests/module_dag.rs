//! The core's top-level modules form a DAG: no module reaches, through `crate::` (or `super::`
//! up to the root) paths, one that reaches back to it. Read from the source, so a new import
//! that closes a cycle fails here with the cycle spelled out. Test code (`tests.rs` files and
//! what follows a `#[cfg(test)]`) is left out: tests may use the whole crate.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's module path below the crate root (`src/rules/trie.rs` → `["rules", "trie"]`).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Non-test code without comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path below the crate root in `code` (`crate::a::b` → `a`,
/// `crate::{a::X, b}` → `a`, `b`; `super::x` from a top-level module → `x`).
fn root_segments(code: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let after_root = if !boundary {
            None
        } else if let Some(r) = rest.strip_prefix("crate::") {
            Some(r)
        } else if rest.starts_with("super::") {
            let mut r = rest;
            let mut up = 0;
            while let Some(next) = r.strip_prefix("super::") {
                r = next;
                up += 1;
            }
            (up == depth).then_some(r)
        } else {
            None
        };
        match after_root {
            Some(r) if r.starts_with('{') => {
                // One level of braces: each item's first segment.
                let mut level = 0;
                let mut item_start = true;
                for (k, c) in r.char_indices() {
                    match c {
                        '{' => {
                            level += 1;
                            item_start = level == 1;
                        }
                        '}' => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        ',' if level == 1 => item_start = true,
                        c if c.is_whitespace() => {}
                        _ if item_start && level == 1 => {
                            found.push(ident_at(&r[k..]).to_owned());
                            item_start = false;
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            Some(r) => {
                let name = ident_at(r);
                if !name.is_empty() {
                    found.push(name.to_owned());
                }
                i += 1;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// Names the crate root declares: its modules, and what it re-exports, by the module the
/// item comes from.
fn root_names() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let lib = code(&lib);
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let line = line.trim();
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
        {
            let m = m.trim_end_matches(';').trim();
            names.insert(m.to_owned(), m.to_owned());
        }
    }
    // `pub use a::b::{X, Y};` spans lines; read each statement whole.
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path).to_owned();
        let items = match path.find('{') {
            Some(open) => path[open + 1..].trim_end_matches('}').to_owned(),
            None => path.rsplit("::").next().unwrap().to_owned(),
        };
        for item in items.split(',') {
            let item = item.trim();
            let item = item.rsplit(" as ").next().unwrap().trim();
            let item = item.rsplit("::").next().unwrap();
            if !item.is_empty() {
                names.entry(item.to_owned()).or_insert(module.clone());
            }
        }
    }
    names
}

/// Top-level module → the top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let names = root_names();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let path = module_path(&file);
        let Some(top) = path.first().cloned() else {
            continue; // lib.rs: the root re-exports everything.
        };
        if path.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = graph.entry(top.clone()).or_default();
        for name in root_segments(&code(&text), path.len()) {
            let module = names.get(&name).unwrap_or_else(|| {
                panic!(
                    "{}: `crate::{name}` is neither a module nor a re-export of the root",
                    file.display()
                )
            });
            if *module != top {
                uses.insert(module.clone());
            }
        }
    }
    graph
}

/// A cycle through `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_modules_form_a_dag() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}\ngraph: {graph:#?}", cycle.join(" → "));
    }
}

#[test]
fn the_reader_sees_every_kind_of_path() {
    let code = "use crate::a::X;\nuse crate::{b::Y, c};\nfn f() { crate::d::g(); super::e::h(); }\nlet notcrate::x = 1;";
    assert_eq!(root_segments(code, 1), ["a", "b", "c", "d", "e"]);
    assert_eq!(root_segments(code, 2), ["a", "b", "c", "d"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
