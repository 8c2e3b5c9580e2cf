//! The crate's layering, checked: the top-level modules (`src/<module>/` or `src/<module>.rs`)
//! import each other without a cycle, so each can be read, tested and changed with only what is
//! below it in mind (`catalog` at the bottom, `cli` at the top).
//!
//! The check reads the source, not the compiler's view: every `crate::…` path outside comments
//! (in `use` declarations, braced groups included, and inline paths alike) and every `super::…`
//! that climbs out of its top-level module is an edge. A cycle fails the test, naming its modules
//! and the file and line of each edge.
//!
//! A second check holds each `etl.*` table to one owner: only one top-level module names it
//! outside comments (the store, or the module whose concept it is, as `auth` for `etl.tokens`),
//! in SQL and in the messages about it alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import between two top-level modules, and where it is written.
#[derive(Debug, Clone)]
struct Edge {
    to: String,
    at: String,
}

/// Top-level module → the modules it imports, each with the first place it does.
type Graph = BTreeMap<String, BTreeMap<String, Edge>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/`: `jobs/runner.rs` → `[jobs, runner]`,
/// `catalog/mod.rs` → `[catalog]`, `lib.rs` → `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// `line` without a `//` comment (doc comments mention paths they do not import).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segment of each path a `crate::` (or resolved `super::`) reference names: for
/// `{a::x, b}` both `a` and `b`.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![identifier(rest).to_owned()];
    };
    let mut depth = 0;
    let mut items = vec![String::new()];
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => items.push(String::new()),
            _ => {}
        }
        if depth == 0 && c != ',' {
            items.last_mut().expect("an item").push(c);
        }
    }
    items
        .iter()
        .map(|item| identifier(item.trim()).to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The edges between top-level modules of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            module_path(f.strip_prefix(src).expect("below src"))
                .first()
                .cloned()
        })
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let relative = file.strip_prefix(src).expect("below src");
        let path = module_path(relative);
        let Some(from) = path.first() else { continue };
        // A group's braces may span lines: read the file as one text, comments removed.
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let lines: Vec<&str> = text.lines().map(code).collect();
        for (index, line) in lines.iter().enumerate() {
            let rest_of_file = lines[index..].join(" ");
            let mut targets = Vec::new();
            for (at, _) in line.match_indices("crate::") {
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                    continue; // `reporting_etl_crate::`, `$crate::`
                }
                targets.extend(first_segments(&rest_of_file[at + "crate::".len()..]));
            }
            for (at, _) in line.match_indices("super::") {
                if line[..at].ends_with("super::") {
                    continue; // counted from the first `super::` of the chain
                }
                let mut chain = &rest_of_file[at..];
                let mut climbs = 0;
                while let Some(rest) = chain.strip_prefix("super::") {
                    climbs += 1;
                    chain = rest;
                }
                // `super` of `a/b.rs` is `a`; climbing to the root leaves the next segment as
                // the top-level module named.
                if climbs >= path.len() {
                    targets.extend(first_segments(chain));
                }
            }
            for to in targets {
                if &to != from && modules.contains(&to) {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to.clone())
                        .or_insert(Edge {
                            to,
                            at: format!("src/{}:{}", relative.display(), index + 1),
                        });
                }
            }
        }
    }
    graph
}

/// A cycle of `graph`, as the edges that form it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<(String, Edge)>> {
    fn visit(
        graph: &Graph,
        node: &str,
        stack: &mut Vec<(String, Edge)>,
        on_stack: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<(String, Edge)>> {
        on_stack.insert(node.to_owned());
        for edge in graph.get(node).into_iter().flat_map(|e| e.values()) {
            stack.push((node.to_owned(), edge.clone()));
            if on_stack.contains(&edge.to) {
                let start = stack.iter().position(|(from, _)| *from == edge.to).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if !done.contains(&edge.to)
                && let Some(cycle) = visit(graph, &edge.to, stack, on_stack, done)
            {
                return Some(cycle);
            }
            stack.pop();
        }
        on_stack.remove(node);
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if !done.contains(node)
            && let Some(cycle) = visit(graph, node, &mut Vec::new(), &mut BTreeSet::new(), &mut done)
        {
            return Some(cycle);
        }
    }
    None
}

fn describe(cycle: &[(String, Edge)]) -> String {
    let names: Vec<&str> = cycle
        .iter()
        .map(|(from, _)| from.as_str())
        .chain(cycle.first().map(|(from, _)| from.as_str()))
        .collect();
    let edges: Vec<String> = cycle
        .iter()
        .map(|(from, edge)| format!("  {from} → {} at {}", edge.to, edge.at))
        .collect();
    format!("{}\n{}", names.join(" → "), edges.join("\n"))
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The check must see the crate's real edges, or it proves nothing.
    assert!(graph["config"].contains_key("catalog"), "{graph:#?}");
    assert!(graph["jobs"].contains_key("datasets"), "{graph:#?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between top-level modules: {}", describe(&cycle));
    }
    // `catalog` is the leaf everything may depend on.
    assert!(
        !graph.contains_key("catalog"),
        "catalog imports {:?}",
        graph.get("catalog")
    );
}

/// A scratch `src/` of `files` (path, text) for the checks' own tests.
#[cfg(test)]
fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, text).expect("a written file");
    }
    dir
}

#[test]
fn a_cycle_is_found_and_named_with_where_each_edge_is() {
    let dir = scratch(
        "layering",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a/mod.rs", "mod inner;\n// use crate::c; (a comment)\n"),
            ("a/inner.rs", "use crate::{\n    b::Thing,\n};\n"),
            ("b.rs", "pub fn f() { super::c::g() }\n"),
            ("c.rs", "use crate::a;\n"),
        ],
    );
    let graph = graph(&dir);
    let cycle = find_cycle(&graph).map(|cycle| describe(&cycle));
    std::fs::remove_dir_all(&dir).ok();
    let cycle = cycle.expect("a → b → c → a is a cycle");
    assert!(cycle.starts_with("a → b → c → a"), "{cycle}");
    assert!(cycle.contains("src/a/inner.rs:1"), "{cycle}");
    assert!(cycle.contains("src/b.rs:1"), "{cycle}");
}

/// Each `etl.*` table with the top-level modules whose code names it (comments left out):
/// one table, one owner, which alone holds the SQL that reads or writes it.
fn table_owners(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(src).expect("below src");
        let Some(module) = module_path(relative).first().cloned() else {
            continue;
        };
        if module == "layering" {
            continue; // this check, whose tests name tables
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for line in text.lines().map(code) {
            for (at, _) in line.match_indices("etl.") {
                if line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    continue; // `reporting_etl.x`, a path ending in `etl.`
                }
                let table = identifier(&line[at + "etl.".len()..]);
                // `etl.toml` is a file name in messages, not a table.
                if !table.is_empty() && table != "toml" {
                    owners
                        .entry(format!("etl.{table}"))
                        .or_default()
                        .insert(module.clone());
                }
            }
        }
    }
    owners
}

#[test]
fn every_etl_table_is_named_in_sql_by_one_top_level_module() {
    let owners = table_owners(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The check must see the real tables, or it proves nothing.
    assert!(owners.contains_key("etl.runs"), "{owners:#?}");
    assert!(owners.contains_key("etl.tokens"), "{owners:#?}");
    let shared: Vec<String> = owners
        .iter()
        .filter(|(_, modules)| modules.len() > 1)
        .map(|(table, modules)| format!("{table}: {modules:?}"))
        .collect();
    assert!(
        shared.is_empty(),
        "tables named by more than one module:\n{}",
        shared.join("\n")
    );
}

#[test]
fn a_table_named_by_two_modules_is_found() {
    let dir = scratch(
        "owners",
        &[
            ("store/mod.rs", "const Q: &str = \"SELECT * FROM etl.runs\";\n"),
            (
                "cli.rs",
                "// etl.runs in a comment\nconst Q: &str = \"UPDATE etl.runs SET x = 1\";\n",
            ),
            (
                "auth.rs",
                "// etl.tokens, said in a comment only\nfn f() { let _ = \"etl.toml\"; }\n",
            ),
        ],
    );
    let owners = table_owners(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(owners["etl.runs"].len(), 2, "{owners:?}");
    assert!(!owners.contains_key("etl.tokens"), "{owners:?}");
    assert!(!owners.contains_key("etl.toml"), "{owners:?}");
}
