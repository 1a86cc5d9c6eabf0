//! `deploy history`: past deploys, newest first, as a table or JSON.

use crate::ledger::Ledger;
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON (revision, user, uid, status, started_at, finished_at, log, …) for scripts.
    #[arg(long)]
    json: bool,
    /// How many deploys to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: u32,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    super::settle(&root).await;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let rows = ledger.history(args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(super::exit::SUCCESS);
    }
    println!(
        "{:<6} {:<12} {:<10} {:<9} {:<16} {:<20} {:<8} WHY",
        "ID", "REVISION", "STATUS", "TRIGGER", "USER", "STARTED", "TOOK"
    );
    for d in rows {
        let took = d
            .finished_at
            .map(|f| {
                format!(
                    "{:.1}s",
                    (f - d.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        // Why it did not go live: the error's first line, or what superseded it.
        let why = match (&d.error, d.superseded_by) {
            (Some(e), _) => e.lines().next().unwrap_or_default().to_owned(),
            (None, Some(by)) => format!("superseded by {by}"),
            (None, None) => String::new(),
        };
        println!(
            "{:<6} {:<12} {:<10} {:<9} {:<16} {:<20} {:<8} {}",
            d.id.0,
            d.revision.short(),
            serde_json::to_value(d.status)?.as_str().unwrap_or_default(),
            serde_json::to_value(d.trigger)?
                .as_str()
                .unwrap_or_default(),
            d.user,
            d.started_at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            took,
            why
        );
    }
    Ok(super::exit::SUCCESS)
}
