//! The rules ARCHITECTURE.md states, held by a test: which modules may use bollard, sqlx and
//! git2, that every source file says what it is for, and that the codemap names every file.

use std::path::{Path, PathBuf};

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("src"), &mut out);
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `src/compose/tree.rs` → `compose/tree.rs`.
fn rel(path: &Path) -> String {
    path.strip_prefix(root().join("src"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The code of a file without its comments, so a doc line that names a crate is no use.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which crates a module may name in its code, by the ARCHITECTURE.md invariants.
#[test]
fn only_the_edges_use_their_libraries() {
    let mut broken = Vec::new();
    for path in sources() {
        let rel = rel(&path);
        let code = code(&path);
        let uses = |krate: &str| {
            code.contains(&format!("{krate}::")) || code.contains(&format!("use {krate}"))
        };
        if uses("bollard") && !rel.starts_with("docker/") {
            broken.push(format!(
                "{rel} uses bollard: only docker/ talks to the engine"
            ));
        }
        for krate in ["sqlx", "git2"] {
            let home = if krate == "sqlx" { "ledger/" } else { "git/" };
            if uses(krate) && !rel.starts_with(home) {
                broken.push(format!("{rel} uses {krate}: only {home} may"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| rel(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line at the top: {missing:?}"
    );
}

/// Every file is named in the codemap: by its path (`compose/tree.rs`), or by its name
/// (`tree.rs`) in the codemap's entry for its directory; a `mod.rs` by its directory.
#[test]
fn the_codemap_names_every_source_file() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("## Codemap")
        .expect("ARCHITECTURE.md has a codemap");
    let rest = &text[start + 3..];
    let codemap = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    // The codemap's entries: a top-level `- ` bullet and its continuation lines.
    let entries: Vec<String> = codemap.split("\n- ").map(|e| e.to_owned()).collect();
    let mut missing = Vec::new();
    for path in sources() {
        let rel = rel(&path);
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (format!("src/{dir}/"), name.to_owned()),
            None => ("src/".to_owned(), rel.clone()),
        };
        let named = if name == "mod.rs" {
            codemap.contains(&format!("`{dir}`"))
        } else {
            codemap.contains(&format!("src/{rel}`"))
                || codemap.contains(&format!("`{rel}`"))
                || entries
                    .iter()
                    .any(|e| e.contains(&format!("`{dir}")) && e.contains(&format!("`{name}`")))
        };
        if !named {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "source files the codemap of ARCHITECTURE.md does not name: {missing:?}"
    );
}
