//! The library's layering (ARCHITECTURE.md, "Invariants"), checked on the source text: the
//! engine never depends on tauri, `policy` and `repo` do no IO, and the folders that sit below
//! others do not import them back. Comment lines are not code and are skipped; each failure
//! names the file and line.

use std::path::{Path, PathBuf};

/// One source file: its path relative to the crate and its lines.
struct Source {
    rel: String,
    lines: Vec<String>,
}

fn sources(under: &str) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let start = root.join(under);
    let mut paths = Vec::new();
    if start.is_dir() {
        walk(&start, &mut paths);
    } else {
        paths.push(start);
    }
    paths.sort();
    assert!(!paths.is_empty(), "no source files under {under}");
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Source {
                rel: p.strip_prefix(root).unwrap().display().to_string(),
                lines: text.lines().map(str::to_string).collect(),
            }
        })
        .collect()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// The code lines of a file (1-based numbers), comments left out; with `before_tests`, only
/// those above the first `#[cfg(test)]` line (the unit tests, which may read fixtures).
fn code_lines(s: &Source, before_tests: bool) -> Vec<(usize, &str)> {
    let end = if before_tests {
        s.lines
            .iter()
            .position(|l| l.trim() == "#[cfg(test)]")
            .unwrap_or(s.lines.len())
    } else {
        s.lines.len()
    };
    s.lines[..end]
        .iter()
        .enumerate()
        .filter(|(_, l)| !is_comment(l))
        .map(|(i, l)| (i + 1, l.as_str()))
        .collect()
}

/// Whether `line` names the module `crate::<module>` (as a path or an import).
fn names_module(line: &str, module: &str) -> bool {
    let needle = format!("crate::{module}");
    line.match_indices(&needle).any(|(i, _)| {
        let after = line[i + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The top-level modules a grouped import (`use crate::{a, b::c};`) names, with the line it
/// starts on.
fn grouped_imports(s: &Source) -> Vec<(usize, String)> {
    let lines = code_lines(s, false);
    let mut out = Vec::new();
    for (k, (n, line)) in lines.iter().enumerate() {
        let Some(start) = line.find("crate::{") else {
            continue;
        };
        let mut text = line[start + "crate::{".len()..].to_string();
        for (_, more) in lines.iter().skip(k + 1).take(40) {
            if text.contains('}') && brace_depth(&text) < 0 {
                break;
            }
            text.push(' ');
            text.push_str(more);
        }
        let (mut depth, mut item) = (0i32, String::new());
        for c in text.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push((*n, first_segment(&item)));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        out.push((*n, first_segment(&item)));
    }
    out.retain(|(_, m)| !m.is_empty());
    out
}

fn brace_depth(text: &str) -> i32 {
    text.chars().fold(0, |d, c| match c {
        '{' => d + 1,
        '}' => d - 1,
        _ => d,
    })
}

fn first_segment(item: &str) -> String {
    item.trim()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("")
        .to_string()
}

/// Every place a file under `under` imports one of `forbidden` (`crate::<module>`).
fn imports(under: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for s in sources(under) {
        for (n, line) in code_lines(&s, false) {
            for m in forbidden {
                if names_module(line, m) {
                    found.push(format!("{}:{n}: uses crate::{m}: {}", s.rel, line.trim()));
                }
            }
        }
        for (n, m) in grouped_imports(&s) {
            if forbidden.contains(&m.as_str()) {
                found.push(format!("{}:{n}: imports crate::{{{m}, …}}", s.rel));
            }
        }
    }
    found
}

fn assert_none(rule: &str, found: &[String]) {
    assert!(found.is_empty(), "{rule}:\n  {}", found.join("\n  "));
}

#[test]
fn the_library_never_mentions_tauri() {
    // Comments may say that it does not (lib.rs does); code may not name it.
    let found: Vec<String> = sources("src")
        .iter()
        .flat_map(|s| {
            code_lines(s, false)
                .into_iter()
                .filter(|(_, l)| l.to_lowercase().contains("tauri"))
                .map(|(n, l)| format!("{}:{n}: {}", s.rel, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_none("the engine library (src/) must not depend on tauri", &found);
}

#[test]
fn policy_and_repo_do_no_io() {
    const IO: [&str; 7] = [
        "tokio::",
        "reqwest",
        "std::fs",
        "std::net",
        "rusqlite",
        "std::process",
        "std::env",
    ];
    // No exemption is needed: `src/repo/build.rs` builds signed repos in memory and writes
    // their CAR to any `std::io::Write` its caller gives it (a `Vec`, a file the benchmark
    // opened), so it opens nothing itself and is held to the same rule.
    let mut found = Vec::new();
    for under in ["src/policy", "src/repo"] {
        for s in sources(under) {
            for (n, line) in code_lines(&s, true) {
                for io in IO {
                    if line.contains(io) {
                        found.push(format!("{}:{n}: uses {io}: {}", s.rel, line.trim()));
                    }
                }
            }
        }
    }
    assert_none(
        "policy and repo are pure (IO only in their #[cfg(test)] modules)",
        &found,
    );
}

#[test]
fn circles_do_not_read_the_verifier() {
    // The verifier reads its results and gives them to `Circles::publish`.
    assert_none(
        "src/group must not import crate::verify",
        &imports("src/group", &["verify"]),
    );
}

#[test]
fn the_store_imports_nothing_above_it() {
    // The store may use `repo` (record decoding); the settings it keeps and the blob paths
    // are its own (`store::settings`, `store::blob_path`).
    assert_none(
        "src/store must not import the layers above it",
        &imports(
            "src/store",
            &[
                "history", "sync", "group", "verify", "engine", "app", "export", "serve",
                "restore", "session", "identity",
            ],
        ),
    );
}

#[test]
fn history_and_export_do_not_import_sync() {
    let mut found = imports("src/history", &["sync"]);
    found.extend(imports("src/export.rs", &["sync"]));
    assert_none(
        "src/history and src/export.rs must not import crate::sync (blob paths are store::blob_path)",
        &found,
    );
}

#[test]
fn the_node_controller_does_not_import_the_app() {
    assert_none(
        "src/engine must not import crate::app",
        &imports("src/engine", &["app"]),
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanner itself: a check that finds nothing because it cannot see is no check.
    let s = Source {
        rel: "x.rs".into(),
        lines: [
            "//! crate::verify in a comment",
            "use crate::{",
            "    store::{self, StoreError},",
            "    verify::db,",
            "};",
            "let p = crate::sync::blobs::x();",
            "let q = crate::synced();",
            "#[cfg(test)]",
            "use std::fs;",
        ]
        .map(String::from)
        .to_vec(),
    };
    let modules: Vec<String> = grouped_imports(&s).into_iter().map(|(_, m)| m).collect();
    assert_eq!(modules, ["store", "verify"]);
    let lines = code_lines(&s, true);
    assert!(lines
        .iter()
        .any(|(n, l)| *n == 6 && names_module(l, "sync")));
    assert!(!lines.iter().any(|(_, l)| names_module(l, "verify")));
    assert!(!lines.iter().any(|(_, l)| l.contains("std::fs")));
}
