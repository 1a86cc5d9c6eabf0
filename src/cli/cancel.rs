//! `deploy cancel [ID]`: stops the running deploy, or a queued one, wherever it runs (a
//! hook's process or the daemon); what it replaced is put back, as on any failure. Returns
//! once its row says how it ended.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::ids::DeploymentId;
use crate::ledger::{Deployment, Ledger, Status};
use crate::root::Root;

/// How long the command waits for the deploy to stop: undoing a deploy stops and starts
/// containers, each within its `stop_grace_period`.
const WAIT: Duration = Duration::from_secs(120);

/// How often the row is read again meanwhile.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The ledger id of a running or queued deploy (`deploy status`, `deploy history`); the
    /// running deploy when not given.
    #[arg(value_name = "ID")]
    id: Option<i64>,
}

/// `--env` (global) names the environment whose deploy to cancel.
pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let row = target(&ledger, args.id).await?;
    let (id, pid) = (row.id, row.pid);
    let by = super::pusher(&root).name;
    ledger.request_cancel(id, by.as_str()).await?;
    let pid = Pid::from_raw(i32::try_from(pid).context("the deploy's pid is out of range")?);
    match nix::sys::signal::kill(pid, crate::cancel::SIGNAL) {
        Ok(()) => {}
        Err(Errno::EPERM) => bail!(
            "deploy {id} runs in process {pid}, which only root or its own user may signal; run `deploy cancel {}` as one of them",
            id.0
        ),
        Err(e) => bail!("failed to signal deploy {id}'s process {pid}: {e}"),
    }
    eprintln!(
        "deploy: canceling deploy {id} ({} by {}); waiting for it to put back what it replaced",
        row.revision.short(),
        row.user
    );
    let ended = wait_for_end(&ledger, id).await?;
    match ended.status {
        Status::Canceled if row.status == Status::Queued => {
            eprintln!("deploy: deploy {id} canceled before it started");
            Ok(super::exit::SUCCESS)
        }
        Status::Canceled => {
            eprintln!("deploy: deploy {id} canceled; the version it was replacing still serves");
            Ok(super::exit::SUCCESS)
        }
        status => {
            eprintln!("deploy: deploy {id} ended as {status} before the cancel reached it");
            Ok(super::exit::FAILURE)
        }
    }
}

/// The deploy to cancel: the one named, which must be running, or the running one.
async fn target(ledger: &Ledger, id: Option<i64>) -> anyhow::Result<Deployment> {
    let row = match id {
        Some(id) => ledger.get(DeploymentId(id)).await?.ok_or_else(|| {
            anyhow!("there is no deploy #{id} in the ledger; `deploy history` lists them")
        })?,
        None => ledger
            .running()
            .await?
            .into_iter()
            .find(|d| crate::cancel::runs_deploy(d.pid))
            .ok_or_else(|| anyhow!("no deploy is running"))?,
    };
    if !matches!(row.status, Status::Running | Status::Queued) {
        bail!(
            "deploy {} already ended as {}; only a running or queued deploy can be canceled",
            row.id,
            row.status
        );
    }
    if !crate::cancel::runs_deploy(row.pid) {
        bail!(
            "deploy {}'s process ({}) is gone; the next deploy, or `deploy status`, settles what it left",
            row.id,
            row.pid
        );
    }
    Ok(row)
}

/// The row once it is no longer running.
async fn wait_for_end(ledger: &Ledger, id: DeploymentId) -> anyhow::Result<Deployment> {
    let started = Instant::now();
    loop {
        let row = ledger
            .get(id)
            .await?
            .ok_or_else(|| anyhow!("deploy {id} left the ledger"))?;
        if !matches!(row.status, Status::Running | Status::Queued) {
            return Ok(row);
        }
        if started.elapsed() > WAIT {
            bail!(
                "deploy {id} has not stopped after {}s; `deploy logs --follow` shows where it is",
                WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
