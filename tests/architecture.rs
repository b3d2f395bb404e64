//! The shape of the library, checked on its source: only `cli`, `commands` and `main.rs` know
//! the command line, and the top-level modules import each other in one direction only (an
//! import cycle fails with the loop named and the whole graph printed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The command line's side of the crate, left out of the graph: it may use everything.
const FRONT: [&str; 4] = ["lib", "main", "cli", "commands"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file belongs to: `src/x.rs` and everything under `src/x/`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without its comments (doc comments name modules freely).
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named after `crate::` in `code`, through `use crate::{a, b::c}`
/// groups too; `crate::Error`/`Result` and `crate::Outcome` are the root's re-exports of
/// `error` and `outcome`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut name = |word: &str| {
        let word = match word {
            "Error" | "Result" => "error",
            "Outcome" => "outcome",
            other => other,
        };
        if modules.contains(word) {
            found.insert(word.to_string());
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        name(item.trim().split("::").next().unwrap_or(""));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            name(item.trim().split("::").next().unwrap_or(""));
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            name(&word);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(&src());
    let all: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if FRONT.contains(&module.as_str()) {
            continue;
        }
        let mut deps = imports(&code(file), &all);
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

fn show(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let lines: Vec<String> = graph
        .iter()
        .map(|(m, deps)| format!("{m:>10} -> {}", Vec::from_iter(deps.clone()).join(", ")))
        .collect();
    lines.join("\n")
}

#[test]
fn library_modules_never_import_the_command_line() {
    let graph = graph();
    for (module, deps) in &graph {
        for front in ["cli", "commands"] {
            assert!(
                !deps.contains(front),
                "library module `{module}` imports `{front}`:\n{}",
                show(&graph)
            );
        }
    }
    for file in rust_files(&src()) {
        if FRONT.contains(&module_of(&file).as_str()) {
            continue;
        }
        let code = code(&file);
        for word in ["clap::", "GlobalArgs", "ValueEnum"] {
            assert!(!code.contains(word), "{} uses {word}", file.display());
        }
    }
}

#[test]
fn top_level_modules_import_each_other_in_one_direction() {
    let graph = graph();
    assert!(graph.len() > 5, "too few modules found:\n{}", show(&graph));
    // Depth-first search; a module met again while still on the path closes a loop.
    fn visit<'g>(
        module: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            return Some([&path[at..], &[module]].concat().join(" -> "));
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for dep in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {cycle}\n{}", show(&graph));
        }
    }
}

/// The checker itself finds what it must: a group import, a path in code, a cycle.
#[test]
fn the_import_reader_sees_groups_and_paths() {
    let modules: BTreeSet<String> = ["io", "text", "error", "generate"].map(String::from).into();
    let code = "use crate::{io::{Block, Release}, text, Error};\nlet x = crate::generate::f();";
    let found = imports(code, &modules);
    assert_eq!(
        found,
        ["error", "generate", "io", "text"].map(String::from).into()
    );
}
