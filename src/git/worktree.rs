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
//!
//! libgit2's checkout holds each blob it writes in memory, whole, next to its compressed form.
//! A revision may track files of hundreds of megabytes (a model, a data set), so new blobs above
//! `STREAM_ABOVE` bytes are left out of libgit2's checkout and written here, with their index
//! entries: inflated a chunk at a time when they are loose objects (as pushes of fewer than
//! 100 objects are stored), read whole through libgit2 when they are packed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flate2::read::ZlibDecoder;
use git2::build::CheckoutBuilder;
use git2::{
    ErrorCode, FileMode, Index, IndexEntry, IndexTime, ObjectType, Oid, Repository, Tree,
    TreeEntry, TreeWalkMode, TreeWalkResult,
};

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

/// Blobs larger than this are streamed into the work tree rather than checked out by libgit2.
const STREAM_ABOVE: u64 = 8 << 20;

pub(super) fn checkout(
    repo: &Path,
    work_tree: &Path,
    rev: &Revision,
    blob_limit: u64,
) -> Result<(), GitError> {
    checkout_streaming_above(repo, work_tree, rev, STREAM_ABOVE, blob_limit)
}

pub(super) fn checkout_streaming_above(
    repo: &Path,
    work_tree: &Path,
    rev: &Revision,
    stream_above: u64,
    blob_limit: u64,
) -> Result<(), GitError> {
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
    refuse_untracked_in_the_way(&r, &tree, &index, work_tree, rev)?;
    let files = files(&tree).doing(|| format!("list the files of {rev}"))?;
    let large = large_blobs(&r, &files, &index, stream_above, blob_limit, rev)?;
    write_tree(&r, &tree, &files, &index, &large, work_tree, rev)?;
    // Only now, so a checkout that failed halfway is redone against the old baseline.
    r.set_head_detached(commit.id())
        .doing(|| format!("record {rev} as checked out in `{}`", r.path().display()))?;
    Ok(())
}

fn refuse_untracked_in_the_way(
    r: &Repository,
    tree: &Tree<'_>,
    index: &Index,
    work_tree: &Path,
    rev: &Revision,
) -> Result<(), GitError> {
    let mut in_the_way = Vec::new();
    scan(r, tree, Path::new(""), index, work_tree, &mut in_the_way)?;
    if in_the_way.is_empty() {
        return Ok(());
    }
    Err(GitError::UntrackedInTheWay {
        rev: rev.to_string(),
        work_tree: work_tree.to_owned(),
        paths: in_the_way
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    })
}

/// Writes the tree: libgit2 does every path but the `large` blobs, which are streamed here.
fn write_tree(
    r: &Repository,
    tree: &Tree<'_>,
    files: &[TreeFile],
    index: &Index,
    large: &[&TreeFile],
    work_tree: &Path,
    rev: &Revision,
) -> Result<(), GitError> {
    // Force: files an operator edited by hand are put back to what the revision says. The
    // scan before guarantees force never overwrites an untracked file; untracked and ignored
    // files that the revision does not name are never removed.
    let mut opts = CheckoutBuilder::new();
    opts.force()
        .recreate_missing(true)
        .remove_untracked(false)
        .remove_ignored(false);
    let doing = || format!("check out {rev} into `{}`", work_tree.display());
    if large.is_empty() {
        return r
            .checkout_tree(tree.as_object(), Some(&mut opts))
            .doing(doing);
    }
    // libgit2 does every other path, the ones removed included: what the revision tracks and
    // what the last checkout wrote.
    let mut paths: BTreeSet<Vec<u8>> = files
        .iter()
        .map(|f| f.path.as_os_str().as_bytes().to_vec())
        .collect();
    paths.extend(index.iter().map(|e| e.path));
    for blob in large {
        paths.remove(blob.path.as_os_str().as_bytes());
    }
    if !paths.is_empty() {
        opts.disable_pathspec_match(true);
        for path in &paths {
            opts.path(path.as_slice());
        }
        r.checkout_tree(tree.as_object(), Some(&mut opts))
            .doing(doing)?;
    }
    let mut index = r.index().doing(doing)?;
    for blob in large {
        let entry = stream_blob(r, work_tree, blob)?;
        index.add(&entry).doing(doing)?;
    }
    index.write().doing(doing)
}

/// A non-directory entry of a revision's tree: a file, a symlink or a submodule.
struct TreeFile {
    path: PathBuf,
    id: Oid,
    mode: i32,
}

/// Every non-directory entry of `tree`, with its path from the root.
fn files(tree: &Tree<'_>) -> Result<Vec<TreeFile>, git2::Error> {
    let mut files = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Tree) {
            let path = [dir.as_bytes(), entry.name_bytes()].concat();
            files.push(TreeFile {
                path: PathBuf::from(OsStr::from_bytes(&path)),
                id: entry.id(),
                mode: entry.filemode(),
            });
        }
        TreeWalkResult::Ok
    })?;
    Ok(files)
}

/// The regular files larger than `stream_above` bytes that the last checkout did not write.
/// Sizes come from object headers, read only for files that changed; one above
/// `blob_limit` fails the checkout before anything is written.
fn large_blobs<'f>(
    r: &Repository,
    files: &'f [TreeFile],
    index: &Index,
    stream_above: u64,
    blob_limit: u64,
    rev: &Revision,
) -> Result<Vec<&'f TreeFile>, GitError> {
    let odb = r.odb().doing(|| "open the object database".to_owned())?;
    let mut large = Vec::new();
    for file in files {
        let regular = file.mode == i32::from(FileMode::Blob)
            || file.mode == i32::from(FileMode::BlobExecutable);
        let unchanged = index
            .get_path(&file.path, 0)
            .is_some_and(|e| e.id == file.id);
        if !regular || unchanged {
            continue;
        }
        let (size, _) = odb
            .read_header(file.id)
            .doing(|| format!("read the size of `{}`", file.path.display()))?;
        let size = size as u64;
        if size > blob_limit {
            return Err(GitError::BlobTooLarge {
                rev: rev.to_string(),
                path: file.path.display().to_string(),
                size,
                limit: blob_limit,
            });
        }
        if size > stream_above {
            large.push(file);
        }
    }
    Ok(large)
}

/// Writes `blob` to its path through a temporary file, a chunk at a time when it is a loose
/// object (libgit2 reads a packed one whole), and returns its index entry.
fn stream_blob(r: &Repository, work_tree: &Path, blob: &TreeFile) -> Result<IndexEntry, GitError> {
    let full = work_tree.join(&blob.path);
    let doing = || format!("write `{}`", full.display());
    // A directory the revision replaces with this file: the scan found nothing untracked in
    // it and libgit2 removed the tracked files, so at most empty directories are left.
    if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(&full).doing(doing)?;
    }
    let dir = full.parent().unwrap_or(work_tree);
    fs::create_dir_all(dir).doing(doing)?;
    let name = blob.path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.deploy-tmp"));
    let executable = blob.mode == i32::from(FileMode::BlobExecutable);
    // A fresh file, never one that is there already: a container that can write to the work
    // tree may have planted a symlink under this name.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(if executable { 0o777 } else { 0o666 })
        .open(&tmp)
        .doing(doing)?;
    let written = match copy_loose_blob(r, blob.id, &mut file) {
        Ok(true) => Ok(()),
        Ok(false) => r
            .find_blob(blob.id)
            .doing(doing)
            .and_then(|b| file.write_all(b.content()).doing(doing)),
        Err(e) => Err(e).doing(doing),
    };
    if let Err(e) = written.and_then(|()| file.sync_all().doing(doing)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &full).doing(doing)?;
    let meta = fs::symlink_metadata(&full).doing(doing)?;
    let time = |secs: i64, nanos: i64| IndexTime::new(secs as i32, nanos as u32);
    Ok(IndexEntry {
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        mode: blob.mode as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        file_size: meta.size() as u32,
        id: blob.id,
        flags: 0,
        flags_extended: 0,
        path: blob.path.as_os_str().as_bytes().to_vec(),
    })
}

/// Copies a blob stored as a loose object to `out`, inflating a chunk at a time; `false` when
/// it is not loose. libgit2's own object stream maps the whole compressed file into memory.
/// Pushes of fewer than 100 objects (`receive.unpackLimit`) are stored loose.
fn copy_loose_blob(r: &Repository, id: Oid, out: &mut impl Write) -> io::Result<bool> {
    let hex = id.to_string();
    let path = r
        .commondir()
        .join("objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // "blob <size>\0<content>", zlib-compressed.
    let mut inflated = io::BufReader::new(ZlibDecoder::new(io::BufReader::new(file)));
    let mut header = Vec::new();
    inflated.read_until(0, &mut header)?;
    let size = header
        .strip_prefix(b"blob ")
        .and_then(|rest| rest.strip_suffix(b"\0"))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
    let invalid =
        |what: &str| io::Error::new(ErrorKind::InvalidData, format!("object {id}: {what}"));
    let size = size.ok_or_else(|| invalid("not a blob"))?;
    let copied = io::copy(&mut inflated, out)?;
    if copied != size {
        return Err(invalid(&format!(
            "{copied} bytes where its header says {size}"
        )));
    }
    Ok(true)
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
            // A symlink where the last checkout wrote a directory: a container that can
            // write to the work tree swapped it. It holds nothing of anyone's; removing the
            // link (never what it points at) lets this checkout, and every later one, go on.
            Some(ObjectType::Tree) if meta.file_type().is_symlink() && wrote_below(index, &rel) => {
                fs::remove_file(&full).doing(|| format!("remove the link `{}`", full.display()))?;
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

/// Whether the last checkout wrote anything below the directory `rel`.
fn wrote_below(index: &Index, rel: &Path) -> bool {
    let mut prefix = rel.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    index.iter().any(|e| e.path.starts_with(&prefix))
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
