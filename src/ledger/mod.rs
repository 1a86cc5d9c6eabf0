//! The deploy ledger: one row per deploy in `ROOT/deploy.db` (SQLite through sqlx).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{DeploymentId, Revision, UserName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Trigger {
    Push,
    Manual,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Running,
    Succeeded,
    Failed,
    /// The process that ran it is gone (killed); found and marked by a later run.
    Abandoned,
    /// A newer push to the branch arrived while it waited; that one was deployed instead.
    Superseded,
}

/// What is known when a deploy starts.
#[derive(Clone, Debug)]
pub(crate) struct NewDeployment {
    pub(crate) revision: Revision,
    /// The pushed ref (`refs/heads/main`), if any.
    pub(crate) refname: Option<String>,
    pub(crate) user: UserName,
    pub(crate) trigger: Trigger,
    pub(crate) log_path: PathBuf,
    /// The deploying process, so a later run can tell whether it is gone.
    pub(crate) pid: u32,
}

/// One ledger row.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Deployment {
    pub(crate) id: DeploymentId,
    pub(crate) revision: Revision,
    #[serde(rename = "ref")]
    pub(crate) refname: Option<String>,
    pub(crate) user: String,
    pub(crate) trigger: Trigger,
    pub(crate) status: Status,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) images: Vec<String>,
    #[serde(rename = "log")]
    pub(crate) log_path: PathBuf,
    pub(crate) error: Option<String>,
    pub(crate) pid: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} in the ledger `{path}`: {source}")]
pub(crate) struct LedgerError {
    action: &'static str,
    path: PathBuf,
    source: sqlx::Error,
}

pub(crate) struct Ledger {}

impl Ledger {
    /// Opens (creating if needed) the ledger and applies the checked-in migrations.
    pub(crate) async fn open(path: &Path) -> Result<Self, LedgerError> {
        let _ = path;
        todo!()
    }

    pub(crate) async fn start(&self, new: &NewDeployment) -> Result<DeploymentId, LedgerError> {
        let _ = new;
        todo!()
    }

    pub(crate) async fn finish(
        &self,
        id: DeploymentId,
        status: Status,
        images: &[String],
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let _ = (id, status, images, error);
        todo!()
    }

    /// Newest first.
    pub(crate) async fn history(&self, limit: u32) -> Result<Vec<Deployment>, LedgerError> {
        let _ = limit;
        todo!()
    }
}
