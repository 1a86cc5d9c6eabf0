//! git2: the push target repo, hook input, revision lookup and checkout of the work tree.
//!
//! Everything here is synchronous and may touch the disk for a while (a checkout writes the
//! whole tree): async callers go through `tokio::task::spawn_blocking`.

pub(crate) mod hook;
mod worktree;

use std::path::{Component, Path, PathBuf};

use git2::{ErrorCode, ObjectType, Oid, Reference, Repository, RepositoryInitOptions};

use crate::ids::Revision;

/// A git failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("unknown revision `{0}`: no commit, branch or tag by that name in the pushed repo")]
    UnknownRevision(String),
    #[error(
        "ambiguous revision `{0}`: more than one object id starts with it; give more characters"
    )]
    AmbiguousRevision(String),
    #[error("invalid revision `{rev}`: {reason}")]
    InvalidRevision { rev: String, reason: &'static str },
    #[error("invalid branch name `{0}`: git does not accept `refs/heads/{0}` as a ref name")]
    InvalidBranch(String),
    #[error(
        "`{0}` exists but is not a bare git repository; move it away or point the deploy root elsewhere"
    )]
    NotBare(PathBuf),
    #[error(
        "`{0}` exists and is neither a git repository nor empty; move it away or point the deploy root elsewhere"
    )]
    NotEmpty(PathBuf),
    #[error("object id `{0}` is not a sha1; repositories using sha256 are not supported")]
    UnsupportedObjectId(String),
    #[error(
        "revision {rev} tracks `{path}`, {size} bytes, above the {limit} bytes a pushed file may have (`blob_size_limit` in deploy.yml); keep it out of the repository or raise the limit"
    )]
    BlobTooLarge {
        rev: String,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("path `{0}` must be relative and stay inside the repository")]
    PathOutsideRepo(PathBuf),
    #[error(
        "revision {rev} tracks `{path}`, which is reserved for the operator's files on the host; remove it from the repository"
    )]
    ReservedPath { rev: String, path: String },
    #[error(
        "checking out {rev} would overwrite untracked files in `{}`: {}; move them away or stop tracking them in the repository",
        work_tree.display(),
        list_paths(paths)
    )]
    UntrackedInTheWay {
        rev: String,
        work_tree: PathBuf,
        paths: Vec<String>,
    },
    // The cause is in the message and deliberately not a `source`: the printed error
    // chain then shows the library's text once.
    #[error("failed to {action}: {cause}")]
    Git { action: String, cause: git2::Error },
    #[error("failed to {action}: {cause}")]
    Io {
        action: String,
        cause: std::io::Error,
    },
}

fn list_paths(paths: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = paths.iter().take(SHOWN).map(|p| format!("`{p}`")).collect();
    if paths.len() > SHOWN {
        out.push(format!("and {} more", paths.len() - SHOWN));
    }
    out.join(", ")
}

/// Attaches what we were doing to a git2 or I/O error, so the raw message is never alone.
trait Doing<T> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, GitError>;
}

impl<T> Doing<T> for Result<T, git2::Error> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|cause| GitError::Git {
            action: action(),
            cause,
        })
    }
}

impl<T> Doing<T> for Result<T, std::io::Error> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|cause| GitError::Io {
            action: action(),
            cause,
        })
    }
}

/// The author and subject of a commit, for log lines. Both come from the pusher, so control
/// characters are already replaced and the text is safe to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitInfo {
    pub(crate) revision: Revision,
    pub(crate) author: String,
    pub(crate) subject: String,
}

/// Creates the bare push target (idempotent) with HEAD on `branch`.
///
/// Running it again on an existing repo keeps every ref and object; it only points HEAD at
/// `branch` (so a changed `branch` setting takes effect) and re-applies the config.
pub(crate) fn init_bare(repo: &Path, branch: &str) -> Result<(), GitError> {
    let head = branch_ref(branch)?;
    let no_ceiling = std::iter::empty::<&std::ffi::OsStr>();
    let r = match Repository::open_ext(repo, git2::RepositoryOpenFlags::NO_SEARCH, no_ceiling) {
        Ok(r) if r.is_bare() => r,
        Ok(_) => return Err(GitError::NotBare(repo.to_owned())),
        Err(e) if e.code() == ErrorCode::NotFound => create_bare(repo, &head)?,
        Err(e) => return Err(e).doing(|| format!("open the repository `{}`", repo.display())),
    };
    let current = r.find_reference("HEAD").ok();
    if current.as_ref().and_then(Reference::symbolic_target_bytes) != Some(head.as_bytes()) {
        r.set_head(&head)
            .doing(|| format!("point HEAD of `{}` at `{head}`", repo.display()))?;
    }
    let mut config = r
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .doing(|| format!("open the config of `{}`", repo.display()))?;
    // `core.bare` is what lets `git push` update the checked-out branch without complaint;
    // the reflog lets an operator find a commit that a force push replaced.
    for (key, value) in [("core.bare", true), ("core.logAllRefUpdates", true)] {
        config
            .set_bool(key, value)
            .doing(|| format!("set `{key}` in the config of `{}`", repo.display()))?;
    }
    let hooks = repo.join("hooks");
    std::fs::create_dir_all(&hooks).doing(|| format!("create `{}`", hooks.display()))?;
    Ok(())
}

fn create_bare(repo: &Path, head: &str) -> Result<Repository, GitError> {
    match std::fs::read_dir(repo) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(GitError::NotEmpty(repo.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(GitError::NotEmpty(repo.to_owned()));
        }
        Err(e) => return Err(e).doing(|| format!("read `{}`", repo.display())),
    }
    Repository::init_opts(
        repo,
        RepositoryInitOptions::new()
            .bare(true)
            .mkpath(true)
            .no_reinit(true)
            .initial_head(head),
    )
    .doing(|| format!("create the bare repository `{}`", repo.display()))
}

/// `refs/heads/<branch>`, if git accepts it as a branch.
fn branch_ref(branch: &str) -> Result<String, GitError> {
    let full = format!("refs/heads/{branch}");
    // git itself refuses `-x` (it would read as an option) and `HEAD` as branch names, even
    // though the ref-name grammar allows them.
    let ok = !branch.is_empty()
        && !branch.starts_with('-')
        && branch != "HEAD"
        && Reference::is_valid_name(&full);
    if ok {
        Ok(full)
    } else {
        Err(GitError::InvalidBranch(branch.escape_debug().to_string()))
    }
}

fn open(repo: &Path) -> Result<Repository, GitError> {
    Repository::open_bare(repo).doing(|| format!("open the push repository `{}`", repo.display()))
}

fn to_revision(oid: Oid) -> Result<Revision, GitError> {
    let hex = oid.to_string();
    Revision::parse(&hex).map_err(|_| GitError::UnsupportedObjectId(hex))
}

fn find_commit<'r>(r: &'r Repository, rev: &Revision) -> Result<git2::Commit<'r>, GitError> {
    let unknown = || GitError::UnknownRevision(rev.to_string());
    let oid = Oid::from_str(rev.as_str()).map_err(|_| unknown())?;
    r.find_commit(oid).map_err(|e| match e.code() {
        ErrorCode::NotFound => unknown(),
        _ => GitError::Git {
            action: format!("read commit {rev}"),
            cause: e,
        },
    })
}

/// Resolves a full or short sha, a branch, a tag or an expression like `main~1`.
///
/// An expression that names the deploy `branch` (`main`, `main~1`, `main^`) means the
/// branch, even where a tag of the same name exists: git would take the tag first, and a
/// pusher who may create tags could make a plain `deploy` run a commit never on the branch.
pub(crate) fn resolve(repo: &Path, rev: &str, branch: &str) -> Result<Revision, GitError> {
    let invalid = |reason| GitError::InvalidRevision {
        rev: rev.escape_debug().to_string(),
        reason,
    };
    if rev.is_empty() {
        return Err(invalid("it is empty"));
    }
    // An operator may paste this from anywhere; a leading `-` would read as an option to any
    // git command it reaches, and control characters would garble the terminal.
    if rev.starts_with('-') {
        return Err(invalid("it starts with `-`"));
    }
    if rev.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    let r = open(repo)?;
    let spec = branch_expression(rev, branch);
    let object = r
        .revparse_single(&spec)
        .and_then(|o| o.peel(ObjectType::Commit));
    match object {
        Ok(commit) => to_revision(commit.id()),
        Err(e) => Err(match e.code() {
            ErrorCode::Ambiguous => GitError::AmbiguousRevision(rev.to_owned()),
            ErrorCode::NotFound | ErrorCode::InvalidSpec | ErrorCode::Peel => {
                GitError::UnknownRevision(rev.to_owned())
            }
            _ => GitError::Git {
                action: format!("resolve revision `{rev}`"),
                cause: e,
            },
        }),
    }
}

/// `rev` with a leading deploy-branch name spelled as its full ref.
fn branch_expression(rev: &str, branch: &str) -> String {
    match rev.strip_prefix(branch) {
        Some(rest) if rest.is_empty() || rest.starts_with(['~', '^', '@', ':']) => {
            format!("refs/heads/{branch}{rest}")
        }
        _ => rev.to_owned(),
    }
}

/// The commit the branch points at now, if the branch exists.
pub(crate) fn branch_tip(repo: &Path, branch: &str) -> Result<Option<Revision>, GitError> {
    let full = branch_ref(branch)?;
    let r = open(repo)?;
    let reference = match r.find_reference(&full) {
        Ok(reference) => reference,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e).doing(|| format!("read branch `{branch}`")),
    };
    let commit = reference
        .peel_to_commit()
        .doing(|| format!("read the commit of branch `{branch}`"))?;
    to_revision(commit.id()).map(Some)
}

/// Writes `rev`'s tree into `work_tree`: files from the previous checkout that `rev` lacks
/// are removed, untracked files (`.secrets/`, an operator's `.env`) are left alone.
///
/// Refuses (before writing anything) a revision that tracks `.secrets`, or one that would
/// overwrite an untracked file. The bare repo's HEAD and branches are never moved; what the
/// previous checkout wrote is recorded in a private index (see `worktree`).
///
/// A tracked file larger than `blob_limit` bytes fails the checkout before anything is
/// written: libgit2 inflates a packed object whole, in memory.
pub(crate) fn checkout(
    repo: &Path,
    work_tree: &Path,
    rev: &Revision,
    blob_limit: u64,
) -> Result<(), GitError> {
    worktree::checkout(repo, work_tree, rev, blob_limit)
}

/// The tree id of `subdir` (relative to the repo root; empty means the root) at `rev`, or
/// `None` if there is no directory there. Equal ids mean identical contents, so an image
/// built from one can be reused for the other.
pub(crate) fn tree_id(
    repo: &Path,
    rev: &Revision,
    subdir: &Path,
) -> Result<Option<String>, GitError> {
    let subdir = normalize_relative(subdir)?;
    let r = open(repo)?;
    let tree = find_commit(&r, rev)?
        .tree()
        .doing(|| format!("read the tree of {rev}"))?;
    if subdir.as_os_str().is_empty() {
        return Ok(Some(tree.id().to_string()));
    }
    match tree.get_path(&subdir) {
        Ok(entry) if entry.kind() == Some(ObjectType::Tree) => Ok(Some(entry.id().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).doing(|| format!("look up `{}` in {rev}", subdir.display())),
    }
}

/// The contents of the regular file at `path` (relative to the repo root) in `rev`, or
/// `None` when `rev` has no regular file there. A symlink counts as absent: what it points
/// to is on the host, not in the revision.
pub(crate) fn read_file(
    repo: &Path,
    rev: &Revision,
    path: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>, GitError> {
    let path = normalize_relative(path)?;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let r = open(repo)?;
    let tree = find_commit(&r, rev)?
        .tree()
        .doing(|| format!("read the tree of {rev}"))?;
    let entry = match tree.get_path(&path) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e).doing(|| format!("look up `{}` in {rev}", path.display())),
    };
    let is_file = entry.kind() == Some(ObjectType::Blob) && entry.filemode() & 0o170000 == 0o100000;
    if !is_file {
        return Ok(None);
    }
    let odb = r.odb().doing(|| "open the object database".to_owned())?;
    let (size, _) = odb
        .read_header(entry.id())
        .doing(|| format!("read the size of `{}` in {rev}", path.display()))?;
    if size as u64 > limit {
        return Err(GitError::BlobTooLarge {
            rev: rev.to_string(),
            path: path.display().to_string(),
            size: size as u64,
            limit,
        });
    }
    let blob = r
        .find_blob(entry.id())
        .doing(|| format!("read `{}` in {rev}", path.display()))?;
    Ok(Some(blob.content().to_vec()))
}

/// `./app/` → `app`; refuses absolute paths and `..`, which would name something outside
/// the repository's tree.
fn normalize_relative(path: &Path) -> Result<PathBuf, GitError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(GitError::PathOutsideRepo(path.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Author name and subject line of `rev`, for log lines.
pub(crate) fn commit_info(repo: &Path, rev: &Revision) -> Result<CommitInfo, GitError> {
    let r = open(repo)?;
    let commit = find_commit(&r, rev)?;
    let author = commit.author();
    let subject = commit.summary_bytes().unwrap_or_default();
    Ok(CommitInfo {
        revision: rev.clone(),
        author: printable(author.name_bytes()),
        subject: printable(subject),
    })
}

/// Commit metadata is whatever the pusher wrote: invalid UTF-8 is replaced, and control
/// characters (an ESC could recolour or rewrite the pusher's terminal) become `�`.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
