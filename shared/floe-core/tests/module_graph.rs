//! floe-core's modules must not import each other in a circle, neither between the folders (`pipeline`,
//! `table`, `input`, `stateful`, `state`, `ingest`, `commit`, …) nor between the files of one folder: each step
//! of the data path builds only on the steps below it. Reads the sources, so it fails as soon as a `use` or a
//! path closes a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file under `src/` (`commit/emit.rs` → `commit::emit`, `commit/mod.rs` → `commit`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module paths a line of code names: `crate::a::b::…` and, at file level, `super::x::…`.
fn referenced(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let mut path = Vec::new();
        let mut rest = rest;
        loop {
            let name = ident(rest);
            if name.is_empty() {
                break;
            }
            rest = &rest[name.len()..];
            path.push(name);
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        found.push(path);
    }
    // `super::` at file level names a sibling of this file's module; indented, it is inside an inline module
    // (tests) and names this module's own items.
    if !line.starts_with(char::is_whitespace)
        && let Some(rest) = code.strip_prefix("use super::")
        && !module.is_empty()
    {
        let mut path = module[..module.len() - 1].to_vec();
        for name in rest.split(['{', ',', '}', ';']).next().unwrap_or("").split("::") {
            let name = ident(name.trim());
            if name.is_empty() || name == "self" {
                break;
            }
            path.push(name);
        }
        found.push(path);
    }
    found
}

/// The edges between children of `parent` (the crate root when empty) that the sources imply.
fn edges(all: &BTreeMap<Vec<String>, Vec<Vec<String>>>, parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let children: BTreeSet<String> = all
        .keys()
        .filter(|m| m.len() > parent.len() && m.starts_with(parent))
        .map(|m| m[parent.len()].clone())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, refs) in all {
        if module.len() <= parent.len() || !module.starts_with(parent) {
            continue;
        }
        let from = &module[parent.len()];
        for r in refs {
            if r.len() > parent.len() && r.starts_with(parent) && children.contains(&r[parent.len()]) {
                let to = &r[parent.len()];
                if to != from {
                    edges.entry(from.clone()).or_default().insert(to.clone());
                }
            }
        }
    }
    edges
}

/// A circle in the graph, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn graph() -> BTreeMap<Vec<String>, Vec<Vec<String>>> {
    let src = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .iter()
        .map(|f| {
            let module = module_of(&src, f);
            let text = std::fs::read_to_string(f).unwrap();
            let refs = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .flat_map(|l| referenced(l, &module))
                .collect();
            (module, refs)
        })
        .collect()
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let all = graph();
    let parents: BTreeSet<Vec<String>> =
        all.keys().filter(|m| !m.is_empty()).map(|m| m[..m.len() - 1].to_vec()).collect();
    for parent in parents {
        let edges = edges(&all, &parent);
        if let Some(c) = circle(&edges) {
            panic!("import circle in floe-core/{}: {}", parent.join("/"), c.join(" → "));
        }
    }
}

#[test]
fn the_folders_follow_the_data_path() {
    let edges = edges(&graph(), &[]);
    let uses = |from: &str, to: &str| edges.get(from).is_some_and(|e| e.contains(to));
    // The pipeline file is the bottom: it plans no SQL and knows no table, input or state (errors and the
    // stable hash are crate-wide utilities).
    let pipeline = edges.get("pipeline");
    assert!(pipeline.is_none_or(|e| e.iter().all(|m| m == "error" || m == "hash")), "{pipeline:?}");
    assert!(uses("ingest", "input") && uses("commit", "state"), "{edges:?}");
    assert!(!uses("commit", "ingest") && !uses("ingest", "commit"), "{edges:?}");
}

#[test]
fn the_checker_finds_a_circle() {
    let a_b_a: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(circle(&a_b_a), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
    let module = vec!["commit".to_string(), "emit".to_string()];
    let refs = referenced("use super::tables::{TableReport, load};", &module);
    assert_eq!(refs, [vec!["commit".to_string(), "tables".to_string()]]);
    let refs = referenced("    let x = crate::state::StateStore::fence(); // crate::ingest", &module);
    assert_eq!(refs, [vec!["state".to_string(), "StateStore".to_string(), "fence".to_string()]]);
}
