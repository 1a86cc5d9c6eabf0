//! `deploy logs [REV] [--follow]`: print a deploy's build log, or follow one as it runs.

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use anyhow::{Context, bail};

use crate::ledger::{Ledger, Status};
use crate::pipeline::blocking;
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Whose deploy: a revision (sha, tag, `main~1`). Defaults to the newest deploy.
    revision: Option<String>,
    /// Keep printing until that deploy finishes.
    #[arg(long, short = 'f')]
    follow: bool,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let rows = ledger.history(u32::MAX).await?;
    let row = match &args.revision {
        None => rows.into_iter().next(),
        Some(expr) => {
            let (repo, e) = (root.repo(), expr.clone());
            let branch = crate::settings::Settings::load(&root)?.branch;
            let rev = blocking(move || crate::git::resolve(&repo, &e, &branch)).await??;
            rows.into_iter().find(|d| d.revision == rev)
        }
    };
    let Some(row) = row else {
        bail!(
            "no deploy found{}",
            args.revision
                .map(|r| format!(" for `{r}`"))
                .unwrap_or_default()
        );
    };
    print_log(&ledger, row.id, row.log_path, args.follow).await?;
    Ok(super::exit::SUCCESS)
}

/// Copies the log to stdout; when following, keeps reading until the ledger says the
/// deploy is over and nothing more arrives.
async fn print_log(
    ledger: &Ledger,
    id: crate::ids::DeploymentId,
    path: PathBuf,
    follow: bool,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("failed to open `{}`", path.display()))?;
    let mut out = tokio::io::stdout();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf)
            .await
            .with_context(|| format!("failed to read `{}`", path.display()))?;
        out.write_all(&buf).await?;
        out.flush().await?;
        if !follow {
            return Ok(());
        }
        let running = ledger
            .get(id)
            .await?
            .is_some_and(|d| d.status == Status::Running);
        if !running && buf.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
