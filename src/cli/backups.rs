//! `deploy backups`: the dumps in `ROOT/backups`; `deploy backup [SERVICE]`: take one now.

use crate::ledger::{BackupReason, Ledger};
use crate::pipeline::backups;
use crate::report::Reporter;
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Print JSON (file, service, database, size, sha256, taken_at, reason, live_revision,
    /// before_revision, deployment) for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TakeArgs {
    /// The database service to dump; every PostgreSQL service of the live stack when not
    /// given.
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
}

pub(crate) async fn list(root: Root, args: ListArgs) -> anyhow::Result<u8> {
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let rows = ledger.backups().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(super::exit::SUCCESS);
    }
    println!(
        "{:<20} {:<12} {:>10} {:<9} {:<12} {:<12} FILE",
        "TAKEN", "SERVICE", "SIZE", "REASON", "LIVE", "BEFORE"
    );
    let short = |r: &Option<crate::ids::Revision>| {
        r.as_ref()
            .map_or_else(|| "-".to_owned(), |r| r.short().to_owned())
    };
    for b in rows {
        println!(
            "{:<20} {:<12} {:>10} {:<9} {:<12} {:<12} {}",
            b.taken_at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            b.service,
            crate::compose::bytes::human(b.size),
            b.reason.as_str(),
            short(&b.live_revision),
            short(&b.before_revision),
            b.file
        );
    }
    Ok(super::exit::SUCCESS)
}

pub(crate) async fn take(root: Root, args: TakeArgs) -> anyhow::Result<u8> {
    let reporter = Reporter::new().with_terminal().with_tracing();
    let taken = backups::take_now(
        &root,
        BackupReason::Manual,
        args.service.as_deref(),
        &reporter,
    )
    .await?;
    for b in taken {
        println!("{}", root.backups().join(&b.file).display());
    }
    Ok(super::exit::SUCCESS)
}
