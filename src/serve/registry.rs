//! The roots registered on this host (`deploy init` adds its own), which `deploy serve`
//! serves when no `--root` is given: a directory of symbolic links, one per root
//! (`/etc/deploy/roots`, or `roots_dir` in /etc/deploy/serve.yml).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::root::Root;

/// Adds `root` (idempotent), and drops links to roots that no longer exist.
pub(crate) fn register(dir: &Path, root: &Root) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !entry.path().join("code.git").is_dir() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let link = dir.join(link_name(root.path()));
    if std::fs::read_link(&link).is_ok_and(|target| target == root.path()) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(root.path(), &link).with_context(|| {
        format!(
            "failed to register `{}` in `{}`",
            root.path().display(),
            dir.display()
        )
    })
}

/// The registered roots that exist, in name order; the others are named in the log.
pub(crate) fn registered(dir: &Path) -> Vec<Root> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    links.sort();
    let mut roots = Vec::new();
    for link in links {
        match std::fs::canonicalize(&link) {
            Ok(path) if path.join("code.git").is_dir() => roots.push(Root::new(path)),
            _ => tracing::warn!(link = %link.display(), "a registered root is gone; not served"),
        }
    }
    roots
}

/// `/srv/shop` → `srv_shop`: one name per path.
fn link_name(path: &Path) -> String {
    let text = path.to_string_lossy();
    text.trim_start_matches('/')
        .replace('_', "__")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_registered_once_and_gone_ones_are_dropped() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("roots");
        let (a, b) = (base.path().join("a_b"), base.path().join("a/b"));
        for path in [&a, &b] {
            std::fs::create_dir_all(path.join("code.git")).unwrap();
        }
        for path in [&a, &b, &a] {
            register(&dir, &Root::new(path.clone())).unwrap();
        }
        let paths = |roots: Vec<Root>| {
            roots
                .iter()
                .map(|r| r.path().to_path_buf())
                .collect::<Vec<_>>()
        };
        let mut want = vec![a.clone(), b.clone()];
        want.sort_by_key(|p| link_name(p));
        assert_eq!(paths(registered(&dir)), want);
        std::fs::remove_dir_all(&a).unwrap();
        assert_eq!(paths(registered(&dir)), std::slice::from_ref(&b));
        register(&dir, &Root::new(b.clone())).unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "the link to a gone root is dropped"
        );
    }
}
