//! After a successful deploy: keep what rollback needs, remove the rest (images, ledger
//! rows, build logs, file copies no container mounts). A failure here is a warning; the deploy already succeeded.

use std::collections::BTreeSet;

use crate::docker::{self, Docker};
use crate::ids::{ProjectName, Revision};
use crate::ledger::Ledger;
use crate::report::Reporter;
use crate::root::Root;

/// Deploys whose rows and logs are kept whatever their revision.
const KEEP_DEPLOYS: u32 = 100;

/// Keeps the images of the last `retention` successful revisions plus the live one, the
/// ledger rows and logs of those revisions and of the last 100 deploys, and the build cache
/// within `build_cache`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument a setting or an edge"
)]
pub(crate) async fn apply(
    root: &Root,
    docker: &Docker,
    ledger: &Ledger,
    project: &ProjectName,
    live: &Revision,
    retention: usize,
    build_cache: u64,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    prune_cache(docker, build_cache, reporter).await?;
    let count = u32::try_from(retention).unwrap_or(u32::MAX);
    let mut keep: BTreeSet<Revision> = ledger
        .succeeded_revisions(count)
        .await?
        .into_iter()
        .collect();
    keep.insert(live.clone());

    let removed = docker::prune::images(docker, project, &keep, reporter).await?;
    if !removed.is_empty() {
        reporter.info(format!(
            "retention: kept the images of {} revisions; removed {}",
            keep.len(),
            removed.join(", ")
        ));
    }

    prune_mounts(root, docker, reporter).await?;

    let keep: Vec<Revision> = keep.into_iter().collect();
    for log in ledger.prune(KEEP_DEPLOYS, &keep).await? {
        // Only our own build logs, never a path a corrupted row might point elsewhere.
        if log.parent() == Some(root.build_logs().as_path())
            && let Err(e) = std::fs::remove_file(&log)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            reporter.warn(format!(
                "could not remove old build log `{}`: {e}",
                log.display()
            ));
        }
    }
    Ok(())
}

/// Removes the files of `ROOT/mounts/` (copies of secrets and configs the preflight wrote)
/// that no container mounts any more: a rollback writes the copies it needs again.
async fn prune_mounts(root: &Root, docker: &Docker, reporter: &Reporter) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(root.mounts()) else {
        return Ok(());
    };
    // Compared by real path, so a ROOT reached through a symlink cannot make a mounted
    // file look unused.
    let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let mounted: BTreeSet<_> = (docker::observe::bind_sources(docker).await?.iter())
        .map(|s| real(std::path::Path::new(s)))
        .collect();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && !mounted.contains(&real(&path))
            && let Err(e) = std::fs::remove_file(&path)
        {
            reporter.warn(format!("could not remove `{}`: {e}", path.display()));
        }
    }
    Ok(())
}

/// Prunes BuildKit's cache (cache mounts included) down to `limit`.
pub(crate) async fn prune_cache(
    docker: &Docker,
    limit: u64,
    reporter: &Reporter,
) -> anyhow::Result<u64> {
    let reclaimed = docker::cache::prune(docker, limit).await?;
    if reclaimed > 0 {
        reporter.info(format!(
            "build cache: removed {} of least recently used records, to hold at most {} (`build_cache` in deploy.yml)",
            crate::compose::bytes::human(reclaimed),
            crate::compose::bytes::human(limit)
        ));
    }
    Ok(reclaimed)
}
