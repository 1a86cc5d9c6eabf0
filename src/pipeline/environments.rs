//! Environments beside `production`: which ones exist, making one (a preview's secrets and
//! seed included), and tearing one down. Which environment a deploy is for is decided before
//! the pipeline runs (`Request::env`, from the pushed branch or `--env`); `Root` then gives
//! its paths and `Settings::load` its settings.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::{Request, Target};
use crate::docker;
use crate::ids::EnvName;
use crate::ledger::Ledger;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// One environment, as `deploy env list` shows it.
#[derive(Clone, Debug)]
pub(crate) struct Environment {
    pub(crate) name: EnvName,
    pub(crate) branch: String,
    pub(crate) preview: bool,
    /// A preview is torn down then, unless a push comes first.
    pub(crate) expires: Option<DateTime<Utc>>,
}

/// Every environment: those `deploy.yml` names (`production` first), then the previews that
/// exist now.
pub(crate) fn all(root: &Root, settings: &Settings) -> Vec<Environment> {
    let mut out: Vec<Environment> = (settings.named_environments().into_iter())
        .map(|(name, branch)| Environment {
            name,
            branch,
            preview: false,
            expires: None,
        })
        .collect();
    let ttl = settings.previews.as_ref().map(|p| p.ttl);
    for name in previews(root, settings) {
        let view = root.with_env(name.clone());
        let expires = ttl.and_then(|ttl| Some(DateTime::<Utc>::from(last_push(&view)? + ttl)));
        out.push(Environment {
            name,
            branch: preview_of(&view).unwrap_or_default(),
            preview: true,
            expires,
        });
    }
    out
}

/// The previews that exist now: folders of `ROOT/envs` that `environments` does not name,
/// made for a branch (a torn-down one keeps its ledger and logs, not its branch).
fn previews(root: &Root, settings: &Settings) -> Vec<EnvName> {
    let Ok(entries) = std::fs::read_dir(root.envs()) else {
        return Vec::new();
    };
    let mut out: Vec<EnvName> = entries
        .filter_map(|e| EnvName::parse(&e.ok()?.file_name().to_string_lossy()).ok())
        .filter(|name| !settings.environments.contains_key(name))
        .filter(|name| root.with_env(name.clone()).preview_branch().is_file())
        .collect();
    out.sort();
    out
}

/// The branch a preview was made for, if it exists.
pub(crate) fn preview_of(preview: &Root) -> Option<String> {
    let branch = std::fs::read_to_string(preview.preview_branch()).ok()?;
    Some(branch.trim().to_owned())
}

/// When a push last reached a preview (its branch file is written by each).
fn last_push(preview: &Root) -> Option<SystemTime> {
    std::fs::metadata(preview.preview_branch())
        .ok()?
        .modified()
        .ok()
}

/// Fails with one line unless `name` is an environment of ROOT: `production`, one that
/// `environments` names, or one with a folder (a preview, or one torn down, whose history
/// stays readable).
pub(crate) fn check_exists(root: &Root, settings: &Settings, name: &EnvName) -> anyhow::Result<()> {
    let named = settings.named_environments();
    if named.iter().any(|(n, _)| n == name) || root.with_env(name.clone()).dir().is_dir() {
        return Ok(());
    }
    let names: Vec<String> = named.iter().map(|(n, _)| format!("`{n}`")).collect();
    bail!(
        "there is no environment `{name}` on this host: deploy.yml names {}, and no preview has that name",
        names.join(", ")
    )
}

/// Makes what is missing of an environment's folder: its work tree with `.secrets/` (mode
/// 0700 when made), its data and build-log folders. `production`'s is ROOT, which `deploy init` made.
pub(crate) fn create(root: &Root) -> anyhow::Result<()> {
    if root.env().is_production() {
        return Ok(());
    }
    for dir in [root.code(), root.build_logs(), root.db_data()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
    }
    // Restricted when made; one that exists keeps the mode the operator gave it (a
    // group-readable one, for hooks run by each developer).
    let secrets = root.secrets();
    if secrets.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(&secrets)
        .and_then(|()| std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("failed to create `{}`", secrets.display()))
}

/// Before a deploy, under the ROOT lock: makes the environment's folder when it has none.
/// A new preview is refused past `max_previews`, gets its secrets from `secrets_from`, and
/// its databases from `seed_from`'s newest dumps (restored in the release phase). Every
/// push to a preview restarts its time to live.
pub(crate) async fn prepare(
    root: &Root,
    request: &mut Request,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let all = Settings::load_all(root)?;
    let env = root.env();
    if env.is_production() {
        return Ok(());
    }
    let Some(settings) = all
        .previews
        .as_ref()
        .filter(|_| !all.environments.contains_key(env))
    else {
        return create(root);
    };
    let Target::Pushed { refname, .. } = &request.target else {
        return Ok(());
    };
    let branch = refname.strip_prefix("refs/heads/").unwrap_or(refname);
    let made_for = preview_of(root);
    if let Some(other) = made_for.as_deref().filter(|b| *b != branch) {
        bail!(
            "not deployed: `{branch}` would be the preview `{env}`, which is `{other}`'s; rename one of the branches"
        );
    }
    let new = made_for.is_none();
    if new {
        let live = previews(root, &all);
        if live.len() >= settings.max_previews {
            bail!(
                "not deployed: `{branch}` would be preview number {} and `max_previews` is {} ({}); destroy one with `deploy env destroy NAME`",
                live.len() + 1,
                settings.max_previews,
                live.iter()
                    .map(EnvName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        create(root)?;
        if let Some(from) = &settings.secrets_from {
            copy_secrets(&root.path().join(from), &root.secrets())?;
        }
        if let Some(seed) = &settings.seed_from {
            request.restore = seed_dumps(root, &root.with_env(seed.clone()), reporter).await?;
        }
        Ledger::open(&root.ledger_file())
            .await?
            .clear_teardown()
            .await?;
        reporter.info(format!("environment {env}: a new preview of `{branch}`"));
    }
    std::fs::write(root.preview_branch(), format!("{branch}\n"))
        .with_context(|| format!("failed to write `{}`", root.preview_branch().display()))?;
    Ok(())
}

/// Copies the files of `from` (the operator's, regular files only) into a new preview's
/// `.secrets`, mode 0600.
fn copy_secrets(from: &Path, to: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(from).with_context(|| {
        format!(
            "failed to read `{}` (`previews: secrets_from`)",
            from.display()
        )
    })?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target)
            .and_then(|_| std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)))
            .with_context(|| format!("failed to copy `{}`", entry.path().display()))?;
    }
    Ok(())
}

/// The newest dump of each database of `seed`, copied into the preview's `backups/`:
/// service → file name, as a restore asks for them.
async fn seed_dumps(
    preview: &Root,
    seed: &Root,
    reporter: &Reporter,
) -> anyhow::Result<BTreeMap<String, String>> {
    let ledger = Ledger::open(&seed.ledger_file()).await?;
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for backup in ledger.backups().await? {
        let file = seed.backups().join(&backup.file);
        if file.is_file() {
            // Newest first: the first of each service wins.
            newest
                .entry(backup.service.clone())
                .or_insert(backup.file.clone());
        }
    }
    if newest.is_empty() {
        reporter.warn(format!(
            "`seed_from: {}` has no dump yet (`deploy backup --env {}` takes one): the preview's databases start empty",
            seed.env(),
            seed.env()
        ));
        return Ok(newest);
    }
    let dir = super::backups::ensure_dir(preview)?;
    for (service, file) in &newest {
        std::fs::copy(seed.backups().join(file), dir.join(file))
            .with_context(|| format!("failed to copy the dump `{file}` of `{}`", seed.env()))?;
        reporter.info(format!(
            "`{service}` starts from `{file}`, the newest dump of `{}`",
            seed.env()
        ));
    }
    Ok(newest)
}

/// Removes an environment's containers, networks, volumes, images, work tree, data, dumps
/// and secrets; its ledger (marked torn down) and build logs stay. The caller holds the
/// ROOT lock.
pub(crate) async fn teardown(
    root: &Root,
    by: &str,
    why: &str,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    if root.env().is_production() {
        bail!("`production` is never torn down; `deploy down` stops it and keeps its data");
    }
    if !root.dir().is_dir() {
        bail!(
            "environment {} has nothing to tear down (no `{}`)",
            root.env(),
            root.dir().display()
        );
    }
    let settings = Settings::load(root)?;
    let project = settings.project(root)?;
    let engine = docker::connect().await?;
    docker::down::down(&engine, &project, docker::down::Volumes::Delete, reporter).await?;
    docker::down::remove_images(&engine, &project, reporter).await?;
    for dir in [
        root.code(),
        root.db_data(),
        root.configs(),
        root.mounts(),
        root.backups(),
    ] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to remove `{}`", dir.display()));
            }
        }
    }
    for file in [root.preview_branch(), root.notify_lock()] {
        let _ = std::fs::remove_file(file);
    }
    Ledger::open(&root.ledger_file())
        .await?
        .record_teardown(by, why)
        .await?;
    reporter.info(format!(
        "environment {} torn down ({why}); its history and build logs stay in `{}`",
        root.env(),
        root.dir().display()
    ));
    Ok(())
}

/// Tears down every preview no push reached within `ttl` (but those of `pushed`, which a
/// push is about to deploy), when no deploy holds the lock (the next sweep retries
/// otherwise). `deploy serve` runs it every minute, every hook run once. Returns the
/// previews torn down.
pub(crate) async fn sweep(
    root: &Root,
    pushed: &[EnvName],
    reporter: &Reporter,
) -> anyhow::Result<Vec<EnvName>> {
    let all = Settings::load_all(root)?;
    let Some(ttl) = all.previews.as_ref().map(|p| p.ttl) else {
        return Ok(Vec::new());
    };
    let expired: Vec<EnvName> = (previews(root, &all).into_iter())
        .filter(|name| !pushed.contains(name))
        .filter(|name| {
            last_push(&root.with_env(name.clone()))
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|idle| idle >= ttl)
        })
        .collect();
    if expired.is_empty() {
        return Ok(expired);
    }
    let Some(_lock) = super::lock::try_acquire(&root.lock_file(), "the sweep of expired previews")?
    else {
        return Ok(Vec::new());
    };
    for name in &expired {
        let why = format!("no push for {}", crate::compose::duration::format(ttl));
        teardown(&root.with_env(name.clone()), "deploy", &why, reporter).await?;
    }
    Ok(expired)
}

/// How often `deploy serve` looks for expired previews.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);
