//! `deploy export FILE` and `deploy import FILE ROOT`: move a whole host.

use std::path::PathBuf;

use anyhow::Context;

use crate::ledger::{Ledger, Trigger};
use crate::pipeline::{Request, Target, export};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The archive to write (a tar, mode 0600: it holds the secrets).
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// An archive written by `deploy export`.
    file: PathBuf,
    /// The new deploy root to create (must not exist, or be empty).
    root: PathBuf,
}

pub(crate) async fn run_export(root: Root, args: ExportArgs) -> anyhow::Result<u8> {
    let reporter = Reporter::new().with_terminal().with_tracing();
    let size = export::export(&root, &args.file, &reporter).await?;
    reporter.info(format!(
        "wrote `{}` ({}). It holds the secrets and the env file: it is readable by you alone (mode 0600); keep it that way",
        args.file.display(),
        crate::compose::bytes::human(size)
    ));
    reporter.flush().await;
    Ok(super::exit::SUCCESS)
}

/// Unpacks the archive into a new root, makes it a deploy root for this binary, and deploys
/// the live revision with every database restored from the archive's dumps.
pub(crate) async fn run_import(args: ImportArgs) -> anyhow::Result<u8> {
    let path = std::path::absolute(&args.root)
        .with_context(|| format!("failed to resolve `{}`", args.root.display()))?;
    let root = Root::new(path);
    let manifest = export::unpack(&args.file, &root).await?;
    let settings = Settings::load(&root)?;
    super::init::prepare(&root, &settings.branch).await?;
    // Dumps the archive does not carry are gone here.
    let ledger = Ledger::open(&root.ledger_file()).await?;
    for b in ledger.backups().await? {
        if !root.backups().join(&b.file).is_file() {
            ledger.backup_removed(b.id).await?;
        }
    }
    drop(ledger);
    let reporter = Reporter::new().with_terminal().with_tracing();
    reporter.info(format!(
        "imported into `{}`; deploying {} with its data",
        root.path().display(),
        &manifest.live[..manifest.live.len().min(12)]
    ));
    let pusher = super::pusher(&root);
    let request = Request {
        target: Target::Expression(Some(manifest.live.clone())),
        user: pusher.name,
        uid: pusher.uid,
        trigger: Trigger::Restore,
        restore: manifest.dumps,
        queued: None,
        env: root.env().clone(),
    };
    super::run_deploy(&root, request, &reporter).await?;
    Ok(super::exit::SUCCESS)
}
