//! The architecture, checked on the sources: no upward imports (`config` imports nothing from
//! `api`, `engine` or `http`; `store` nothing from `crypt` or `engine`; `api` nothing from
//! `engine`); the command line is the binary's, and its modules import each other without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn source(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn rust_files(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.strip_prefix(&root).unwrap().display().to_string();
                files.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files
}

/// Each module and what it must not import: the layers below it never reach up.
const NO_UPWARD_IMPORTS: &[(&str, &[&str])] = &[
    ("config", &["crate::api", "crate::engine", "crate::http"]),
    (
        "store",
        &["crate::crypt", "crate::engine", "crate::sync", "crate::api"],
    ),
    ("api", &["crate::engine", "crate::sync", "crate::store"]),
    (
        "http",
        &["crate::api", "crate::engine", "crate::sync", "crate::store"],
    ),
];

#[test]
fn lower_layers_import_nothing_from_upper_ones() {
    for (module, upward) in NO_UPWARD_IMPORTS {
        for (name, text) in rust_files(&format!("src/{module}")) {
            for import in *upward {
                assert!(!text.contains(import), "src/{module}/{name} uses {import}");
            }
        }
    }
}

#[test]
fn the_command_line_is_the_binary_s_not_the_library_s() {
    let lib = source("src/lib.rs");
    assert!(!lib.contains("mod cli"), "lib.rs declares the cli module");
    assert!(source("src/main.rs").contains("mod cli;"));
    for (name, text) in rust_files("src") {
        assert!(
            !text.contains("std::env::var(") || name.starts_with("config/"),
            "{name} reads the environment: settings come from claudedl::config"
        );
    }
}

#[test]
fn the_cli_modules_import_each_other_without_a_cycle() {
    let imports = cli_imports();
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        visit(module, &imports, &mut Vec::new(), &mut done);
    }
    assert!(imports["common"].contains("args") && imports["cli"].contains("common"));
}

/// Module → the modules it depends on: its `use super::…` imports (an item of `cli/mod.rs`
/// counts as `cli`), and for `cli` itself every module it declares (it runs them).
fn cli_imports() -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files("src/cli");
    let module_of = |name: &str| match name.trim_end_matches(".rs").split('/').next() {
        Some("mod") | None => "cli".to_owned(),
        Some(module) => module.to_owned(),
    };
    let modules: BTreeSet<String> = files.iter().map(|(name, _)| module_of(name)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in &files {
        let module = module_of(name);
        let entry = imports.entry(module.clone()).or_default();
        if module == "cli" {
            for line in text.lines() {
                let declared = line.trim_start_matches("pub ").strip_prefix("mod ");
                if let Some(declared) = declared.and_then(|d| d.strip_suffix(';')) {
                    entry.insert(declared.to_owned());
                }
            }
            continue;
        }
        // Within a module directory (`logging/`), `super` is that module.
        if name.contains('/') && !name.ends_with("mod.rs") {
            continue;
        }
        for import in text.split("use super::").skip(1) {
            let import = import.split(';').next().unwrap_or_default();
            for path in top_level_paths(import) {
                let first: String = path
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if first.is_empty() || first == "self" {
                    continue;
                }
                let target = if modules.contains(&first) {
                    first
                } else {
                    "cli".to_owned()
                };
                if target != module {
                    entry.insert(target);
                }
            }
        }
    }
    imports
}

/// The paths of one `use` tree: `a::b` → [`a::b`]; `{a::{x, y}, b}` → [`a::{x, y}`, `b`].
fn top_level_paths(tree: &str) -> Vec<&str> {
    let tree = tree.trim();
    let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return vec![tree];
    };
    let (mut paths, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                paths.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    paths.push(&inner[start..]);
    paths
}

/// Depth-first search that fails on a back edge.
fn visit(
    module: &str,
    imports: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) {
    if done.contains(module) {
        return;
    }
    assert!(
        !path.iter().any(|m| m == module),
        "import cycle in src/cli: {} → {module}",
        path.join(" → ")
    );
    path.push(module.to_owned());
    for next in imports.get(module).into_iter().flatten() {
        visit(next, imports, path, done);
    }
    path.pop();
    done.insert(module.to_owned());
}
