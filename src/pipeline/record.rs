//! The ledger's side of a deploy, in one place: the row opened once the lock is held (an
//! overtaken push recorded as superseded), and closed with the outcome, whichever stage
//! failed. The daemon's queue records the pushes it
//! replaces through the same `superseded`.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Local};

use super::{Request, Target, blocking};
use crate::cancel::Cancel;
use crate::git;
use crate::ids::{DeploymentId, Revision};
use crate::ledger::{Ledger, NewDeployment, Status, Trigger};
use crate::notify;
use crate::report::{self, Reporter};
use crate::root::Root;

/// An open ledger row: the deploy of `revision`, logged to `log`.
pub(crate) struct Record {
    pub(crate) root: Root,
    pub(crate) ledger: Ledger,
    pub(crate) id: DeploymentId,
    pub(crate) revision: Revision,
    pub(crate) log: PathBuf,
    pub(crate) started: DateTime<Local>,
    /// The revision serving before this deploy, to put the work tree back to on failure.
    pub(crate) live: Option<Revision>,
    /// What the release command of the live deploy was and ran in, if it had one.
    pub(crate) live_release: Option<crate::ledger::Release>,
}

/// Opens the row for `revision` (the lock is held, and `reconcile` has settled what a dead
/// process left). A push overtaken by a newer one of its branch while it waited deploys the
/// branch's tip, and its own revision is recorded as superseded by this row.
pub(crate) async fn open(
    root: &Root,
    request: &Request,
    queued: Option<DeploymentId>,
    mut revision: Revision,
    branch: &str,
    reporter: &Reporter,
) -> anyhow::Result<Record> {
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let mut overtaken = None;
    if let Target::Pushed { .. } = &request.target {
        let (repo, branch) = (root.repo(), branch.to_owned());
        if let Some(tip) = blocking(move || git::branch_tip(&repo, &branch)).await??
            && tip != revision
        {
            reporter.info(format!(
                "{} was superseded by a newer push; deploying {}",
                revision.short(),
                tip.short()
            ));
            overtaken = Some(std::mem::replace(&mut revision, tip));
        }
    }
    let started = Local::now();
    let log_name = report::build_log_name(started, &revision, &request.user);
    let log = reporter.add_build_log(&root.build_logs(), &log_name)?;
    let (live, live_release) = match ledger.last_succeeded().await? {
        Some(d) => (Some(d.revision), d.release),
        None => (None, None),
    };
    // The row it waited under becomes this deploy's, unless a newer push overtook it.
    let id = match queued {
        Some(id) if overtaken.is_none() => {
            ledger.begin(id, &revision, &log).await?;
            id
        }
        _ => {
            let id = ledger
                .start(&new_row(request, &revision, log.clone()))
                .await?;
            match (overtaken, queued) {
                (Some(_), Some(own)) => {
                    ledger.mark(own, Status::Superseded, None).await?;
                    ledger.set_superseded(own, id).await?;
                }
                (Some(own), None) => superseded(&ledger, request, &own, Some(id)).await?,
                (None, _) => {}
            }
            id
        }
    };
    Ok(Record {
        root: root.clone(),
        ledger,
        id,
        revision,
        log,
        started,
        live,
        live_release,
    })
}

pub(crate) fn new_row(request: &Request, revision: &Revision, log_path: PathBuf) -> NewDeployment {
    let refname = match &request.target {
        Target::Pushed { refname, .. } => Some(refname.clone()),
        Target::Expression(_) => None,
    };
    NewDeployment {
        revision: revision.clone(),
        refname,
        user: request.user.clone(),
        uid: request.uid,
        trigger: request.trigger,
        log_path,
        pid: std::process::id(),
    }
}

/// Records that the push of `own` was not deployed because a newer push of its branch
/// replaced it: by the deploy `by` (in-process, after the lock wait), or in the daemon's
/// queue before it ran.
pub(crate) async fn superseded(
    ledger: &Ledger,
    request: &Request,
    own: &Revision,
    by: Option<DeploymentId>,
) -> anyhow::Result<()> {
    let id = ledger.start(&new_row(request, own, PathBuf::new())).await?;
    let why = by
        .is_none()
        .then_some("a newer push of the branch arrived while it was queued");
    ledger.mark(id, Status::Superseded, why).await?;
    if let Some(by) = by {
        ledger.set_superseded(id, by).await?;
    }
    Ok(())
}

/// The subject line of `revision`'s commit; empty if it cannot be read (it only labels).
pub(crate) async fn commit_subject(root: &Root, revision: &Revision) -> String {
    let (repo, rev) = (root.repo(), revision.clone());
    match blocking(move || git::commit_info(&repo, &rev)).await {
        Ok(Ok(commit)) => commit.subject,
        _ => String::new(),
    }
}

impl Record {
    /// Closes the row with the outcome of the stages. A failure is reported once, the work
    /// tree goes back to the live revision, and the error returned only says where the log
    /// is. A deploy that went live stays a success even if its row cannot be written.
    pub(crate) async fn close(
        &self,
        outcome: anyhow::Result<Vec<String>>,
        cancel: &Cancel,
        reporter: &Reporter,
    ) -> anyhow::Result<()> {
        // The log is on disk before the row says the deploy is over: `deploy logs --follow`
        // stops reading when the row does.
        match outcome {
            Ok(images) => {
                let secs = (Local::now() - self.started).num_milliseconds() as f64 / 1000.0;
                reporter.info(format!("deployed {} in {secs:.1}s", self.revision.short()));
                reporter.flush().await;
                if let Err(e) = self
                    .ledger
                    .finish(self.id, Status::Succeeded, &images, None)
                    .await
                {
                    reporter.warn(format!("the deploy went live, but {e:#}"));
                }
                Ok(())
            }
            Err(e) => {
                // A cancel ends whatever the stage was doing, with whatever error that gave.
                let (status, message) = match cancel.check() {
                    Err(canceled) => (Status::Canceled, canceled.to_string()),
                    Ok(()) => (Status::Failed, format!("{e:#}")),
                };
                reporter.error(format!("deploy {status}: {message}"));
                super::stages::restore_work_tree(self, reporter).await;
                reporter.flush().await;
                if let Err(e) = self
                    .ledger
                    .finish(self.id, status, &[], Some(&message))
                    .await
                {
                    reporter.warn(format!("{e:#}"));
                }
                // The reason was just reported; the last line only says where to read more.
                Err(anyhow::anyhow!(
                    "deploy of {} {status}; see `{}`",
                    self.revision.short(),
                    self.log.display()
                ))
            }
        }
    }

    /// Queues the notification of where the deploy is, as its row says: `started` while it
    /// runs, then how it ended. Never fails the deploy (`notify::queue`).
    pub(crate) async fn notify(
        &self,
        targets: &[notify::Target],
        project: &crate::ids::ProjectName,
        reporter: &Reporter,
    ) {
        if targets.is_empty() {
            return;
        }
        let row = match self.ledger.get(self.id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => return reporter.warn(format!("notify: {e:#}")),
        };
        let event = match row.status {
            Status::Running => notify::Event::Started,
            Status::Succeeded => notify::Event::Succeeded,
            Status::Failed => notify::Event::Failed,
            Status::Canceled => notify::Event::Canceled,
            _ => return,
        };
        let message = commit_subject(&self.root, &self.revision).await;
        let payload = notify::Payload {
            event,
            project: project.to_string(),
            environment: self.root.env().to_string(),
            revision: row.revision.to_string(),
            message,
            user: row.user,
            deployment_id: row.id.0,
            started_at: row.started_at,
            finished_at: row.finished_at,
            log: row.log_path,
            error: row.error,
            url: crate::settings::Settings::load(&self.root)
                .map(|s| crate::serve::urls(&self.root, &s.hostnames))
                .unwrap_or_default()
                .into_iter()
                .next(),
        };
        notify::queue(&self.root, &self.ledger, targets, &payload, reporter).await;
    }

    /// The line that opens the deploy's log: what, by whom, for whom, why.
    pub(crate) async fn describe(
        &self,
        root: &Root,
        project: &crate::ids::ProjectName,
        request: &Request,
        reporter: &Reporter,
    ) -> anyhow::Result<()> {
        let (repo, rev) = (root.repo(), self.revision.clone());
        let commit = blocking(move || git::commit_info(&repo, &rev))
            .await?
            .context("failed to read the commit being deployed")?;
        reporter.info(format!(
            "deploying {} \"{}\" by {} to `{project}` (environment {}) for {} ({})",
            self.revision,
            commit.subject,
            commit.author,
            root.env(),
            request.user,
            request.trigger
        ));
        if !request.restore.is_empty() {
            return Ok(());
        }
        if let Some(later) = self.ledger.released_since(&self.revision).await? {
            reporter.warn(format!(
                "this rolls back the code only: the release of {} (deploy {}) changed the database after {} was live; `deploy --revision {} --restore-db` returns the data too",
                later.revision.short(),
                later.id,
                self.revision.short(),
                self.revision.short()
            ));
        } else if request.trigger == Trigger::Rollback {
            reporter.warn("rolling back the code only: the database keeps its data, and its schema is not rolled back");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserName;
    use crate::ledger::Trigger;
    use crate::pipeline::traffic::Traffic;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("app"));
        git::init_bare(&root.repo(), "main").unwrap();
        (dir, root)
    }

    fn request(revision: Revision) -> Request {
        Request {
            target: Target::Pushed {
                revision,
                refname: "refs/heads/main".to_owned(),
            },
            user: UserName::sanitize("alice"),
            uid: 0,
            trigger: Trigger::Push,
            restore: Default::default(),
            queued: None,
            env: crate::ids::EnvName::production(),
        }
    }

    /// Issue 15: a deploy that fails after its row is open (here, reading the commit) closes
    /// the row as failed; it was left `running`.
    #[tokio::test]
    async fn issue15_a_failure_after_the_row_is_open_closes_it() {
        let (_dir, root) = root();
        let missing = Revision::parse(&"ab".repeat(20)).unwrap();
        let result =
            crate::pipeline::deploy(&root, request(missing), Traffic::Direct, &Reporter::new())
                .await;
        assert!(result.is_err());
        let ledger = Ledger::open(&root.ledger_file()).await.unwrap();
        let rows = ledger.history(10).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].status, Status::Failed, "{rows:?}");
        assert!(
            rows[0].error.as_deref().unwrap_or("").contains("commit"),
            "{rows:?}"
        );
    }

    /// Issue 15: a deploy that went live stays a success when its row was closed meanwhile
    /// (another process marked it abandoned, say); the ledger's refusal is only a warning.
    #[tokio::test]
    async fn issue15_a_live_deploy_is_a_success_even_if_its_row_was_closed() {
        let (_dir, root) = root();
        let (reporter, captured) = Reporter::capture();
        let revision = Revision::parse(&"cd".repeat(20)).unwrap();
        let record = open(
            &root,
            &request(revision.clone()),
            None,
            revision,
            "main",
            &reporter,
        )
        .await
        .unwrap();
        record
            .ledger
            .mark(record.id, Status::Abandoned, Some("test"))
            .await
            .unwrap();
        record
            .close(Ok(Vec::new()), &Cancel::never(), &reporter)
            .await
            .unwrap();
        let lines = captured.lines().join("\n");
        assert!(lines.contains("the deploy went live, but"), "{lines}");
    }
}
