//! Checking a revision out into ROOT/code without touching the bare repo's HEAD or branches.
//!
//! libgit2 decides what a checkout may delete by comparing the target with a *baseline*, which
//! is the repository's HEAD. In the bare repo HEAD is the branch the push just moved, not what
//! the work tree holds, so a rollback would delete any untracked file (an operator's `.env`,
//! a secret) that happens to share a path with a file in the newest push. So the checkout runs
//! through a private git dir, `code.git/deploy/checkout/`, which shares the bare repo's objects
//! and refs (through a `commondir` file, like a `git worktree`) but has its own HEAD (detached
//! at the revision last checked out) and its own index (the files that checkout wrote). It is
//! not registered under `code.git/worktrees/`, so `git worktree prune` and `git gc` leave it be,
//! and no `.git` file is written into the work tree.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{ErrorCode, FileMode, Index, ObjectType, Oid, Repository, Tree, TreeEntry};

use super::{Doing, GitError, find_commit};
use crate::ids::Revision;

/// The private git dir inside the bare repo. Two levels deep with `commondir` = `../..`, the
/// exact shape of `code.git/worktrees/<name>/`, which libgit2 knows how to open.
const GITDIR: &str = "deploy/checkout";

/// Where HEAD points before the first checkout (and after its commit was garbage-collected):
/// a ref that never exists, so libgit2 uses an empty baseline and the index alone says what
/// is tracked.
const UNBORN: &str = "refs/worktree/deploy-unborn";

/// Top-level names a revision may not track: the operator owns them on the host, and a push
/// must not be able to overwrite, or (through a later checkout) delete, them.
const RESERVED: &[&str] = &[".secrets"];

pub(super) fn checkout(repo: &Path, work_tree: &Path, rev: &Revision) -> Result<(), GitError> {
    let r = open_private(repo)?;
    fs::create_dir_all(work_tree).doing(|| format!("create `{}`", work_tree.display()))?;
    r.set_workdir(work_tree, false)
        .doing(|| format!("use `{}` as the work tree", work_tree.display()))?;

    let commit = find_commit(&r, rev)?;
    let tree = commit.tree().doing(|| format!("read the tree of {rev}"))?;
    for name in RESERVED {
        if tree.get_name(name).is_some() {
            return Err(GitError::ReservedPath {
                rev: rev.to_string(),
                path: (*name).to_owned(),
            });
        }
    }
    forget_lost_baseline(&r)?;

    let index = r
        .index()
        .doing(|| format!("read the index of `{}`", work_tree.display()))?;
    let mut in_the_way = Vec::new();
    scan(&r, &tree, Path::new(""), &index, work_tree, &mut in_the_way)?;
    if !in_the_way.is_empty() {
        return Err(GitError::UntrackedInTheWay {
            rev: rev.to_string(),
            work_tree: work_tree.to_owned(),
            paths: in_the_way
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        });
    }

    // Force: files an operator edited by hand are put back to what the revision says. The
    // scan above guarantees force never overwrites an untracked file; untracked and ignored
    // files that the revision does not name are never removed.
    let mut opts = CheckoutBuilder::new();
    opts.force()
        .recreate_missing(true)
        .remove_untracked(false)
        .remove_ignored(false);
    r.checkout_tree(tree.as_object(), Some(&mut opts))
        .doing(|| format!("check out {rev} into `{}`", work_tree.display()))?;
    // Only now, so a checkout that failed halfway is redone against the old baseline.
    r.set_head_detached(commit.id())
        .doing(|| format!("record {rev} as checked out in `{}`", r.path().display()))?;
    Ok(())
}

/// Opens (creating on first use) the private git dir described at the top of this file.
fn open_private(repo: &Path) -> Result<Repository, GitError> {
    if !repo.join("objects").is_dir() {
        return Err(GitError::NotBare(repo.to_owned()));
    }
    let gitdir = repo.join(GITDIR);
    fs::create_dir_all(&gitdir).doing(|| format!("create `{}`", gitdir.display()))?;
    for (name, content) in [
        ("commondir", "../..\n".to_owned()),
        ("HEAD", format!("ref: {UNBORN}\n")),
    ] {
        let path = gitdir.join(name);
        if !path.exists() {
            fs::write(&path, content).doing(|| format!("write `{}`", path.display()))?;
        }
    }
    Repository::open_bare(&gitdir)
        .doing(|| format!("open the checkout state `{}`", gitdir.display()))
}

/// The baseline commit can vanish: a force push makes it unreachable from every branch, and
/// `git gc` (which does not know about this git dir) may then prune it. Checking out against
/// an empty baseline is still correct, because the index says what the last checkout wrote.
fn forget_lost_baseline(r: &Repository) -> Result<(), GitError> {
    let baseline = r.head().and_then(|head| head.peel_to_tree());
    match baseline {
        Ok(_) => Ok(()),
        Err(e) if e.code() == ErrorCode::UnbornBranch => Ok(()),
        Err(e) if e.code() == ErrorCode::NotFound => r
            .reference_symbolic("HEAD", UNBORN, true, "deploy: baseline commit is gone")
            .map(drop)
            .doing(|| format!("reset the checkout state in `{}`", r.path().display())),
        Err(e) => Err(e).doing(|| format!("read the checkout state in `{}`", r.path().display())),
    }
}

/// Collects paths where the work tree holds something untracked that checking out `tree`
/// would overwrite or delete. `rel` is `tree`'s path from the work tree's root.
fn scan(
    r: &Repository,
    tree: &Tree<'_>,
    rel: &Path,
    index: &Index,
    work_tree: &Path,
    found: &mut Vec<PathBuf>,
) -> Result<(), GitError> {
    for entry in tree.iter() {
        let rel = rel.join(OsStr::from_bytes(entry.name_bytes()));
        let full = work_tree.join(&rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            // NotADirectory: a parent is a tracked file that the checkout will replace.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                continue;
            }
            Err(e) => return Err(e).doing(|| format!("inspect `{}`", full.display())),
        };
        let tracked = index.get_path(&rel, 0).is_some();
        let in_the_way = match entry.kind() {
            Some(ObjectType::Tree) if meta.is_dir() => {
                let subtree = r
                    .find_tree(entry.id())
                    .doing(|| format!("read tree `{}`", rel.display()))?;
                scan(r, &subtree, &rel, index, work_tree, found)?;
                false
            }
            // A file where the revision has a directory: fine if the last checkout wrote it.
            Some(ObjectType::Tree) => !tracked,
            Some(ObjectType::Blob) if tracked => false,
            Some(ObjectType::Blob) if meta.is_dir() => has_untracked(index, work_tree, &rel)?,
            Some(ObjectType::Blob) => !same_content(r, &entry, &full, &meta)?,
            // A submodule: libgit2 only creates an empty directory for it.
            _ => false,
        };
        if in_the_way {
            found.push(rel);
        }
    }
    Ok(())
}

/// Whether the directory `rel` holds anything the index does not know, which replacing the
/// directory with a file would destroy.
fn has_untracked(index: &Index, work_tree: &Path, rel: &Path) -> Result<bool, GitError> {
    let dir = work_tree.join(rel);
    let entries = fs::read_dir(&dir).doing(|| format!("read `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.doing(|| format!("read `{}`", dir.display()))?;
        let rel = rel.join(entry.file_name());
        let kind = entry
            .file_type()
            .doing(|| format!("inspect `{}`", entry.path().display()))?;
        let untracked = if kind.is_dir() {
            has_untracked(index, work_tree, &rel)?
        } else {
            index.get_path(&rel, 0).is_none()
        };
        if untracked {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An untracked file that already holds exactly what the revision would write loses nothing
/// when overwritten (a work tree copied by hand before the first deploy, say).
fn same_content(
    r: &Repository,
    entry: &TreeEntry<'_>,
    full: &Path,
    meta: &fs::Metadata,
) -> Result<bool, GitError> {
    let mode = entry.filemode();
    if mode == i32::from(FileMode::Link) {
        if !meta.file_type().is_symlink() {
            return Ok(false);
        }
        let target = fs::read_link(full).doing(|| format!("read link `{}`", full.display()))?;
        let blob = r
            .find_blob(entry.id())
            .doing(|| format!("read blob {}", entry.id()))?;
        return Ok(target.as_os_str().as_bytes() == blob.content());
    }
    if !meta.is_file() {
        return Ok(false);
    }
    let oid =
        Oid::hash_file(ObjectType::Blob, full).doing(|| format!("hash `{}`", full.display()))?;
    Ok(oid == entry.id())
}
