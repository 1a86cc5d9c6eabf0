//! `deploy restore-db [DUMP… | --before REV]`: put databases back as a dump has them, under
//! the code that runs; and the dumps `deploy --revision REV --restore-db` restores.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

use crate::ids::Revision;
use crate::ledger::{Backup, Ledger, Trigger};
use crate::pipeline::{self, Request, Target, backups};
use crate::report::Reporter;
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Dumps to restore: names in ROOT/backups (`deploy backups` lists them), or paths of dump
    /// files, copied into ROOT/backups first. Without any: the newest dump of each database.
    #[arg(value_name = "DUMP", conflicts_with = "before")]
    dumps: Vec<String>,
    /// Restore the dumps taken right before REV was deployed.
    #[arg(long, value_name = "REV")]
    before: Option<String>,
    /// The database service a dump given by path is for, when the file's name does not end
    /// in `<service>.dump`.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let reporter = Reporter::new().with_terminal().with_tracing();
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let Some(live) = ledger.last_succeeded().await? else {
        bail!("nothing is deployed yet: deploy first, then restore");
    };
    let all = ledger.backups().await?;
    let restore = match (&args.before, args.dumps.is_empty()) {
        (Some(expr), _) => {
            let rev = resolve(&root, expr).await?;
            let found = backups::taken_before(&all, &rev);
            if found.is_empty() {
                bail!(
                    "no dump was taken right before {} was deployed (`deploy backups` lists the dumps)",
                    rev.short()
                );
            }
            found
        }
        (None, true) => newest_per_service(&all)?,
        (None, false) => named(&root, &ledger, &args).await?,
    };
    let pusher = super::pusher(&root);
    let request = Request {
        target: Target::Expression(Some(live.revision.to_string())),
        user: pusher.name,
        uid: pusher.uid,
        trigger: Trigger::Restore,
        restore,
        queued: None,
        env: root.env().clone(),
    };
    super::run_deploy(&root, request, &reporter).await?;
    Ok(super::exit::SUCCESS)
}

/// The dumps `deploy --revision REV --restore-db` restores: those taken right before the
/// release that followed REV's last deploy.
pub(crate) async fn for_revision(
    root: &Root,
    expr: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let rev = resolve(root, expr).await?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let found = backups::taken_while_live(&ledger.backups().await?, &rev);
    if found.is_empty() {
        bail!(
            "no dump was taken while {} was live before a release or deploy replaced it, so there is no data to return to (`deploy backups` lists the dumps)",
            rev.short()
        );
    }
    Ok(found)
}

async fn resolve(root: &Root, expr: &str) -> anyhow::Result<Revision> {
    let settings = crate::settings::Settings::load(root)?;
    let (repo, expr) = (root.repo(), expr.to_owned());
    Ok(pipeline::blocking(move || crate::git::resolve(&repo, &expr, &settings.branch)).await??)
}

fn newest_per_service(all: &[Backup]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    // Newest first: the first of each service wins.
    for b in all {
        out.entry(b.service.clone())
            .or_insert_with(|| b.file.clone());
    }
    if out.is_empty() {
        bail!("there is no dump to restore (`deploy backup` takes one)");
    }
    Ok(out)
}

/// The dumps named on the command line, by service: the ledger says whose a recorded dump
/// is; otherwise `--service`, or the last word of the file name (`… db.dump`).
async fn named(
    root: &Root,
    ledger: &Ledger,
    args: &Args,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for given in &args.dumps {
        let name = if given.contains('/') {
            copy_in(root, Path::new(given))?
        } else {
            given.clone()
        };
        backups::path_of(root, &name)?;
        let service = match ledger.backup_named(&name).await? {
            Some(b) => b.dump.service,
            None => match &args.service {
                Some(s) => s.clone(),
                None => service_in_name(&name).with_context(|| {
                    format!("cannot tell which database `{name}` is for: name it with --service")
                })?,
            },
        };
        if out.insert(service.clone(), name).is_some() {
            bail!("two dumps for `{service}`: name one per database");
        }
    }
    Ok(out)
}

fn service_in_name(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".dump")?;
    let last = stem.rsplit(' ').next()?;
    (!last.is_empty()).then(|| last.to_owned())
}

/// Copies a dump file from elsewhere into ROOT/backups, under its own name.
fn copy_in(root: &Root, path: &Path) -> anyhow::Result<String> {
    let base = path
        .file_name()
        .with_context(|| format!("`{}` names no file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let name = if base.ends_with(".dump") {
        base
    } else {
        format!("{base}.dump")
    };
    let dir = backups::ensure_dir(root)?;
    let to = dir.join(&name);
    if to.exists() {
        bail!(
            "`{}` already exists; restore it by its name `{name}`, or rename the file",
            to.display()
        );
    }
    std::fs::copy(path, &to)
        .with_context(|| format!("failed to copy `{}` to `{}`", path.display(), to.display()))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_the_last_word_of_a_dump_name() {
        let sha = "a".repeat(40);
        assert_eq!(
            service_in_name(&format!("2026-01-02 03:04:05 {sha} db.dump")).as_deref(),
            Some("db")
        );
        assert_eq!(service_in_name("shop-db.dump").as_deref(), Some("shop-db"));
        assert_eq!(service_in_name("notes.txt"), None);
    }
}
