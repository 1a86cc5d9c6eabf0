//! `backup_schedule`: `deploy serve` dumps every database that often, counted from the
//! newest dump of any kind, under the ROOT lock (so never during a deploy). `deploy.yml` is
//! read again at least once a minute, so a changed schedule applies without a restart.

use std::time::Duration;

use chrono::Utc;

use crate::ledger::{BackupReason, Ledger};
use crate::pipeline::backups;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// How often the schedule is looked at again when nothing is due.
const RECHECK: Duration = Duration::from_secs(60);

/// After a failed dump, how long until the next try.
const RETRY: Duration = Duration::from_secs(15 * 60);

/// Runs the schedule on a thread of its own (the dump's future is not `Send`), for as long
/// as the daemon lives.
pub(crate) fn start(root: Root) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("backups".to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(run(root)),
                Err(e) => tracing::error!(error = %e, "failed to start the backup schedule"),
            }
        })
        .map(|_| ())
}

/// Every environment `deploy.yml` names has its schedule (previews are throwaway).
async fn run(root: Root) {
    loop {
        let mut wait = RECHECK;
        let named = Settings::load_all(&root).map(|s| s.named_environments());
        for (env, _) in named.unwrap_or_default() {
            let view = root.with_env(env);
            if view.ledger_file().is_file() {
                wait = wait.min(tick(&view).await);
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Takes `root`'s environment's dump if it is due; how long until it is due next.
async fn tick(root: &Root) -> Duration {
    match due_in(root).await {
        Ok(Some(wait)) if wait.is_zero() => {
            let reporter = Reporter::new().with_tracing();
            match backups::take_now(root, BackupReason::Schedule, None, &reporter).await {
                Ok(taken) => {
                    tracing::info!(env = %root.env(), dumps = taken.len(), "scheduled backup taken");
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(env = %root.env(), error = format!("{e:#}"), "scheduled backup failed");
                    RETRY
                }
            }
        }
        Ok(Some(wait)) => wait,
        Ok(None) => RECHECK,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "cannot read the backup schedule");
            RECHECK
        }
    }
}

/// How long until the next scheduled dump (zero: now), or `None` without a schedule or
/// before anything is deployed.
async fn due_in(root: &Root) -> anyhow::Result<Option<Duration>> {
    let Some(every) = Settings::load(root)?.backup_schedule else {
        return Ok(None);
    };
    let ledger = Ledger::open(&root.ledger_file()).await?;
    if ledger.last_succeeded().await?.is_none() {
        return Ok(None);
    }
    let Some(newest) = ledger.backups().await?.into_iter().next() else {
        return Ok(Some(Duration::ZERO));
    };
    let age = (Utc::now() - newest.taken_at).to_std().unwrap_or_default();
    Ok(Some(every.saturating_sub(age)))
}
