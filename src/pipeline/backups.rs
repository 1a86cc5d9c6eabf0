//! Database dumps in `ROOT/backups`: taken (streamed from `pg_dump -Fc` in the database's
//! container, checked with `pg_restore --list`, recorded in the ledger), checked again before
//! a restore, found for a rollback, and pruned by `backup_retention`.
//!
//! A dump is named like a build log: `<YYYY-MM-DD> <HH:MM:SS> <sha> <service>.dump`, where
//! the sha is the revision about to be deployed (or the live one, for a dump no deploy
//! follows). It is written under a hidden name and renamed once it checks out, so a file
//! with a dump's name is always a whole dump.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, bail};
use chrono::{Local, Utc};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::blocking;
use crate::docker::{Docker, postgres};
use crate::ids::{DeploymentId, Revision, ServiceName};
use crate::ledger::{Backup, BackupReason, Ledger, NewBackup};
use crate::report::{Reporter, StepKind};
use crate::root::Root;

/// Why and around which deploy a dump is taken.
#[derive(Clone, Debug)]
pub(crate) struct Occasion {
    pub(crate) reason: BackupReason,
    /// What is live now.
    pub(crate) live: Option<Revision>,
    /// What is about to be deployed, if a deploy follows.
    pub(crate) before: Option<Revision>,
    pub(crate) deployment: Option<DeploymentId>,
}

impl Occasion {
    /// The revision the dump's file is named after.
    fn named_after(&self) -> Option<&Revision> {
        self.before.as_ref().or(self.live.as_ref())
    }
}

/// Dumps the database of `service` (running in `container`) into `ROOT/backups`, checks
/// the dump, and records it. Refuses before dumping when the disk cannot hold the database.
/// The caller holds the ROOT lock, so the hidden files of a dump a killed process left
/// behind are nobody's and go first.
pub(crate) async fn take(
    root: &Root,
    docker: &Docker,
    ledger: &Ledger,
    reporter: &Reporter,
    service: &ServiceName,
    container: &str,
    occasion: &Occasion,
) -> anyhow::Result<Backup> {
    let step = reporter.step(StepKind::Dump {
        service: service.to_string(),
    });
    let context = || format!("could not dump the database of `{service}`");
    let database = postgres::database(docker, container)
        .await
        .with_context(context)?;
    let dir = ensure_dir(root)?;
    remove_partials(&dir);
    check_free_space(&dir, database.size)?;

    let taken_at = Utc::now();
    let name = file_name(&dir, taken_at, occasion.named_after(), service);
    let partial = dir.join(format!(".{name}.partial"));
    let written = write_dump(docker, container, &partial)
        .await
        .with_context(context);
    let (size, sha256) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let entries = match postgres::check(docker, container, open_async(&partial)?, false).await {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(anyhow::Error::new(e)
                .context(format!("the dump of `{service}` does not check out")));
        }
    };
    let path = dir.join(&name);
    std::fs::rename(&partial, &path)
        .with_context(|| format!("failed to move the dump to `{}`", path.display()))?;
    let new = NewBackup {
        file: name.clone(),
        service: service.to_string(),
        database: database.name,
        size,
        sha256,
        taken_at,
        reason: occasion.reason,
        live_revision: occasion.live.clone(),
        before_revision: occasion.before.clone(),
        deployment: occasion.deployment,
    };
    let id = ledger.record_backup(&new).await?;
    step.output(format!(
        "`{name}`: {}, {entries} entries, checked with pg_restore --list",
        crate::compose::bytes::human(size)
    ));
    step.finish();
    Ok(Backup { id, dump: new })
}

/// `ROOT/backups`, made private to its owner when it does not exist.
pub(crate) fn ensure_dir(root: &Root) -> anyhow::Result<PathBuf> {
    let dir = root.backups();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    Ok(dir)
}

fn remove_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".partial") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The database's size on disk is what its dump can take at most (a dump is compressed).
fn check_free_space(dir: &Path, needed: u64) -> anyhow::Result<()> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("failed to read the free space of `{}`", dir.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < needed {
        bail!(
            "only {} free in `{}`, and the database takes {}: free some space or move old dumps away",
            crate::compose::bytes::human(free),
            dir.display(),
            crate::compose::bytes::human(needed)
        );
    }
    Ok(())
}

/// `<YYYY-MM-DD> <HH:MM:SS> <sha> <service>.dump`, local time as build logs have it; a
/// second dump of the service within the same second gets `-2`, `-3`, … after the service.
fn file_name(
    dir: &Path,
    at: chrono::DateTime<Utc>,
    revision: Option<&Revision>,
    service: &ServiceName,
) -> String {
    let stamp = at.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    let sha = revision.map_or("0".repeat(40), |r| r.to_string());
    let base = format!("{stamp} {sha} {service}");
    let mut name = format!("{base}.dump");
    let mut n = 2;
    while dir.join(&name).exists() {
        name = format!("{base}-{n}.dump");
        n += 1;
    }
    name
}

/// Streams the dump into a new file (mode 0600), hashing it on the way; synced to disk.
async fn write_dump(
    docker: &Docker,
    container: &str,
    path: &Path,
) -> anyhow::Result<(u64, String)> {
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("failed to create `{}`", path.display()))?;
    let mut out = Hashing::new(tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::from_std(file),
    ));
    postgres::dump(docker, container, &mut out).await?;
    let (file, size, sha256) = out.into_parts();
    file.into_inner()
        .sync_all()
        .await
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok((size, sha256))
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn into_parts(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex(&self.hasher.finalize()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.hasher.update(&buf[..n]);
            self.bytes += n as u64;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A dump in `ROOT/backups` opened for reading: a plain file name, a regular file, not
/// followed through a symlink.
fn open_dump(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open the dump `{}`", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("`{}` is not a regular file", path.display());
    }
    Ok(file)
}

fn open_async(path: &Path) -> anyhow::Result<Pin<Box<dyn tokio::io::AsyncRead + Send>>> {
    let file = tokio::fs::File::from_std(open_dump(path)?);
    Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file)))
}

/// Where a dump named on the command line or in a request lives: a plain name in
/// `ROOT/backups` (`deploy backups` lists them).
pub(crate) fn path_of(root: &Root, name: &str) -> anyhow::Result<PathBuf> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && name.ends_with(".dump");
    if !plain {
        bail!(
            "`{}` is not the name of a dump in `{}` (`deploy backups` lists them)",
            name.escape_debug(),
            root.backups().display()
        );
    }
    Ok(root.backups().join(name))
}

/// Checks a dump before it is restored: a dump the ledger recorded must still be the bytes
/// it recorded (so a truncated or edited file is caught before anything stops); any other
/// file must read whole through `pg_restore`.
pub(crate) async fn check_before_restore(
    root: &Root,
    docker: &Docker,
    ledger: &Ledger,
    container: &str,
    name: &str,
) -> anyhow::Result<()> {
    let path = path_of(root, name)?;
    match ledger.backup_named(name).await? {
        Some(recorded) => {
            let file = open_dump(&path)?;
            let (size, sha256) = blocking(move || hash_file(file)).await??;
            if sha256 != recorded.sha256 {
                bail!(
                    "`{name}` is not the dump that was recorded: it has {} where {} were written (truncated or changed since)",
                    crate::compose::bytes::human(size),
                    crate::compose::bytes::human(recorded.size)
                );
            }
        }
        None => {
            postgres::check(docker, container, open_async(&path)?, true)
                .await
                .with_context(|| format!("`{name}` is not a whole PostgreSQL dump"))?;
        }
    }
    Ok(())
}

fn hash_file(mut file: std::fs::File) -> anyhow::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Restores the dump `name` into `service`'s database (running in `container`).
pub(crate) async fn restore(
    root: &Root,
    docker: &Docker,
    reporter: &Reporter,
    service: &ServiceName,
    container: &str,
    name: &str,
) -> anyhow::Result<()> {
    let step = reporter.step(StepKind::Restore {
        service: service.to_string(),
    });
    let path = path_of(root, name)?;
    postgres::restore(docker, container, open_async(&path)?)
        .await
        .with_context(|| {
            format!("could not restore `{name}` into `{service}`; the database is as it was")
        })?;
    step.output(format!("restored `{name}`"));
    step.finish();
    Ok(())
}

/// The dumps taken together right before the newest deploy that left `revision` (the ones
/// `deploy --revision REV --restore-db` restores), by service.
pub(crate) fn taken_while_live(
    backups: &[Backup],
    revision: &Revision,
) -> BTreeMap<String, String> {
    group(backups, |b| {
        b.live_revision.as_ref() == Some(revision)
            && matches!(b.reason, BackupReason::Release | BackupReason::Deploy)
    })
}

/// The dumps taken right before `revision` was (last) deployed, by service.
pub(crate) fn taken_before(backups: &[Backup], revision: &Revision) -> BTreeMap<String, String> {
    group(backups, |b| b.before_revision.as_ref() == Some(revision))
}

/// The newest matching dump's deploy, and every dump of that deploy, by service.
fn group(backups: &[Backup], matches: impl Fn(&Backup) -> bool) -> BTreeMap<String, String> {
    let mut found: Vec<&Backup> = backups.iter().filter(|b| matches(b)).collect();
    found.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then(b.id.cmp(&a.id)));
    let Some(newest) = found.first() else {
        return BTreeMap::new();
    };
    let same = |b: &&&Backup| match newest.deployment {
        Some(d) => b.deployment == Some(d),
        None => b.id == newest.id,
    };
    let mut out = BTreeMap::new();
    for b in found.iter().filter(same) {
        out.entry(b.service.clone())
            .or_insert_with(|| b.file.clone());
    }
    out
}

/// Which dumps `backup_retention` removes: beyond the newest `keep` of each service, except
/// the newest of all, and those a rollback to a `retained` revision would restore.
pub(crate) fn to_remove(backups: &[Backup], keep: usize, retained: &[Revision]) -> Vec<Backup> {
    let needed: BTreeSet<String> = retained
        .iter()
        .flat_map(|r| taken_while_live(backups, r).into_values())
        .collect();
    let mut by_service: BTreeMap<&str, Vec<&Backup>> = BTreeMap::new();
    for b in backups {
        by_service.entry(&b.service).or_default().push(b);
    }
    let mut out = Vec::new();
    for mut list in by_service.into_values() {
        list.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then(b.id.cmp(&a.id)));
        out.extend(
            list.into_iter()
                .skip(keep.max(1))
                .filter(|b| !needed.contains(&b.file))
                .cloned(),
        );
    }
    out
}

/// Removes the dumps `to_remove` picks; a failure is a warning.
pub(crate) async fn retain(
    root: &Root,
    ledger: &Ledger,
    keep: usize,
    retained: &[Revision],
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let backups = ledger.backups().await?;
    for old in to_remove(&backups, keep, retained) {
        let path = path_of(root, &old.file)?;
        match std::fs::remove_file(&path) {
            Ok(()) => reporter.info(format!(
                "removed the dump `{}` (backup_retention)",
                old.file
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                reporter.warn(format!("could not remove `{}`: {e}", path.display()));
                continue;
            }
        }
        ledger.backup_removed(old.id).await?;
    }
    Ok(())
}

/// Dumps every database of the live stack now (or only `only`), under the ROOT lock so no
/// deploy runs meanwhile: `deploy backup`, `backup_schedule`, `deploy export`. The
/// databases are those of the compose file in the work tree (the live revision's).
pub(crate) async fn take_now(
    root: &Root,
    reason: BackupReason,
    only: Option<&str>,
    reporter: &Reporter,
) -> anyhow::Result<Vec<Backup>> {
    let _lock = super::lock::acquire(&root.lock_file(), "a database dump", reporter).await?;
    take_locked(root, reason, only, reporter).await
}

/// `take_now` for a caller that holds the ROOT lock already.
pub(crate) async fn take_locked(
    root: &Root,
    reason: BackupReason,
    only: Option<&str>,
    reporter: &Reporter,
) -> anyhow::Result<Vec<Backup>> {
    let settings = crate::settings::Settings::load(root)?;
    let project = settings.project(root)?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let live = ledger.last_succeeded().await?.map(|d| d.revision);
    if live.is_none() {
        bail!("nothing is deployed yet: there is no database to dump");
    }
    let databases = {
        let (root, settings, project, reporter) = (
            root.clone(),
            settings.clone(),
            project.clone(),
            reporter.clone(),
        );
        blocking(move || {
            let sources = super::work_tree_sources(&root, &settings)?;
            super::load_spec(&root, &settings, &project, &sources, &reporter)
        })
        .await??
        .spec
        .databases()
    };
    let wanted: Vec<&ServiceName> = match only {
        None => databases.iter().collect(),
        Some(name) => match databases.iter().find(|d| d.as_str() == name) {
            Some(d) => vec![d],
            None => bail!(
                "`{name}` is not a PostgreSQL service of the live compose file; its databases: {}",
                names(&databases)
            ),
        },
    };
    if wanted.is_empty() {
        bail!(
            "the live compose file has no PostgreSQL service (an image `postgres`, or one named in `x-deploy.databases`)"
        );
    }
    let docker = crate::docker::connect().await?;
    let running = crate::docker::observe::containers(&docker, &project).await?;
    let occasion = Occasion {
        reason,
        live,
        before: None,
        deployment: None,
    };
    let mut taken = Vec::new();
    for service in wanted {
        let Some(container) = running
            .iter()
            .find(|c| c.running && c.service.as_ref() == Some(service))
        else {
            bail!("`{service}` has no running container to dump");
        };
        taken.push(
            take(
                root,
                &docker,
                &ledger,
                reporter,
                service,
                &container.id,
                &occasion,
            )
            .await?,
        );
    }
    super::retain_dumps(root, &ledger, &settings, reporter).await?;
    Ok(taken)
}

fn names(services: &[ServiceName]) -> String {
    if services.is_empty() {
        return "none".to_owned();
    }
    services
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(c: char) -> Revision {
        Revision::parse(&c.to_string().repeat(40)).unwrap()
    }

    /// A dump of `service` taken `minutes` after the epoch, while `live` was live, before
    /// `before` was deployed by deploy `deployment`.
    fn dump(id: i64, service: &str, minutes: i64, live: char, before: char) -> Backup {
        let dump = NewBackup {
            file: format!("{id} {service}.dump"),
            service: service.to_owned(),
            database: "app".to_owned(),
            size: 1,
            sha256: "0".repeat(64),
            taken_at: chrono::DateTime::from_timestamp(minutes * 60, 0).unwrap(),
            reason: BackupReason::Release,
            live_revision: Some(rev(live)),
            before_revision: Some(rev(before)),
            deployment: Some(DeploymentId(id)),
        };
        Backup { id, dump }
    }

    #[test]
    fn a_rollback_restores_the_dumps_taken_when_its_revision_was_last_left() {
        let mut second_db = dump(2, "store", 1, 'a', 'b');
        second_db.dump.deployment = Some(DeploymentId(1));
        let all = [
            dump(1, "db", 1, 'a', 'b'),
            second_db,
            dump(3, "db", 2, 'b', 'c'),
            dump(4, "db", 3, 'c', 'a'),
            dump(5, "db", 4, 'a', 'd'),
        ];
        // `a` was left twice (for b, then for d): the newest time counts.
        assert_eq!(
            taken_while_live(&all, &rev('a')),
            BTreeMap::from([("db".to_owned(), "5 db.dump".to_owned())])
        );
        assert_eq!(
            taken_while_live(&all[..3], &rev('a')),
            BTreeMap::from([
                ("db".to_owned(), "1 db.dump".to_owned()),
                ("store".to_owned(), "2 store.dump".to_owned())
            ])
        );
        assert_eq!(
            taken_before(&all, &rev('c')),
            BTreeMap::from([("db".to_owned(), "3 db.dump".to_owned())])
        );
        assert!(taken_while_live(&all, &rev('0')).is_empty());
    }

    #[test]
    fn retention_keeps_the_newest_and_what_a_retained_rollback_needs() {
        let all: Vec<Backup> = (1..=5)
            .map(|i| dump(i, "db", i, char::from(b'a' + i as u8), '0'))
            .collect();
        let ids = |v: Vec<Backup>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids(to_remove(&all, 2, &[])), [3, 2, 1]);
        // A rollback to `c` would restore dump 2, taken when `c` was live.
        assert_eq!(ids(to_remove(&all, 2, &[rev('c')])), [3, 1]);
        // Never the newest, whatever the setting says.
        assert_eq!(ids(to_remove(&all, 0, &[])), [4, 3, 2, 1]);
    }
}
