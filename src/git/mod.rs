//! git2: the push target repo, hook input, revision lookup and checkout of the work tree.

pub(crate) mod hook;

use std::path::Path;

use crate::ids::Revision;

/// A git failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("unknown revision `{0}`: no commit, branch or tag by that name in the pushed repo")]
    UnknownRevision(String),
    #[error("failed to {action}: {source}")]
    Git { action: String, source: git2::Error },
    #[error("failed to {action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
}

/// Creates the bare push target (idempotent) with HEAD on `branch`.
pub(crate) fn init_bare(repo: &Path, branch: &str) -> Result<(), GitError> {
    let _ = (repo, branch);
    todo!()
}

/// Resolves a full or short sha, a branch, a tag or an expression like `main~1`.
pub(crate) fn resolve(repo: &Path, rev: &str) -> Result<Revision, GitError> {
    let _ = (repo, rev);
    todo!()
}

/// The commit the branch points at now, if the branch exists.
pub(crate) fn branch_tip(repo: &Path, branch: &str) -> Result<Option<Revision>, GitError> {
    let _ = (repo, branch);
    todo!()
}

/// Writes `rev`'s tree into `work_tree`: files from the previous checkout that `rev` lacks
/// are removed, untracked files (`.secrets/`, an operator's `.env`) are left alone.
pub(crate) fn checkout(repo: &Path, work_tree: &Path, rev: &Revision) -> Result<(), GitError> {
    let _ = (repo, work_tree, rev);
    todo!()
}
