//! The deploy ledger: one row per deploy in `ROOT/deploy.db` (SQLite through sqlx).
//!
//! Several processes use the file at once (deploys from different pushes, the daemon,
//! `deploy status`): it runs in WAL mode, and every connection waits up to `BUSY_TIMEOUT` for
//! another's write to end instead of failing. Writes are single statements, so none of them
//! holds the write lock across an await.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Connection, Row};

use crate::ids::{DeploymentId, Revision, UserName};

mod backups;
mod notifications;
pub(crate) use backups::{Backup, BackupReason, NewBackup};
pub(crate) use notifications::{Failure, Pending};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Trigger {
    Push,
    Manual,
    Rollback,
    /// `deploy restore-db`: the code stays, a database gets a dump back.
    Restore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Waiting for the lock, or in the daemon's queue.
    Queued,
    Running,
    Succeeded,
    Failed,
    /// The process that ran it is gone (killed); found and marked by a later run.
    Abandoned,
    /// A newer push to the branch arrived while it waited; that one was deployed instead.
    Superseded,
    /// `deploy cancel` stopped it (or a stage outlived its bound); what it replaced was put
    /// back.
    Canceled,
}

/// What is known when a deploy starts.
#[derive(Clone, Debug)]
pub(crate) struct NewDeployment {
    pub(crate) revision: Revision,
    /// The pushed ref (`refs/heads/main`), if any.
    pub(crate) refname: Option<String>,
    pub(crate) user: UserName,
    /// Who asked: the control socket's peer, or the deploying process (see `identity`).
    pub(crate) uid: u32,
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
    /// The uid that asked for the deploy; `None` for rows from before it was recorded.
    pub(crate) uid: Option<u32>,
    pub(crate) trigger: Trigger,
    pub(crate) status: Status,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) images: Vec<String>,
    #[serde(rename = "log")]
    pub(crate) log_path: PathBuf,
    pub(crate) error: Option<String>,
    pub(crate) pid: u32,
    /// The deploy that went out instead of this one, when it was superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) superseded_by: Option<DeploymentId>,
    /// What the release command did, when the compose file declared one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) release: Option<Release>,
    /// The stage a running deploy is in (`build web`, `release`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stage: Option<String>,
}

/// The release command of one deploy, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Release {
    pub(crate) command: Vec<String>,
    /// What it ran in (or, skipped, would have): the digest of the image's content
    /// (`content:…`, `observe::image_content`), so that a rebuild of the same content is
    /// the same image here.
    pub(crate) image: String,
    pub(crate) outcome: ReleaseOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReleaseOutcome {
    /// It ran and exited 0: the database may have changed.
    Done,
    Failed,
    /// Command and image were those of the live deploy: it did not run again.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    /// The cause is in the message, not a `source`, so the error chain prints it once.
    #[error("failed to {action} in the ledger `{path}`: {cause}")]
    Db {
        action: &'static str,
        path: PathBuf,
        cause: sqlx::Error,
    },
    #[error("deploy {id} is not in the ledger `{path}`")]
    NotFound { id: DeploymentId, path: PathBuf },
    /// See `Ledger::finish` for why this is an error and not a silent no-op.
    #[error(
        "deploy {id} is already {status}; only a queued or running deploy can be given an outcome"
    )]
    NotRunning { id: DeploymentId, status: Status },
    #[error(
        "`{0}` is not an outcome; a deploy ends as succeeded, failed, abandoned, superseded or canceled"
    )]
    NotAnOutcome(Status),
    #[error("log path `{0}` is not valid UTF-8, which the ledger cannot store")]
    NonUtf8LogPath(PathBuf),
}

/// The checked-in migrations under `migrations/`, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!();

/// How long a connection waits for another process's write before giving up. Deploy writes
/// are tiny; this only has to outlast a slow disk or a burst of concurrent pushes.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every column of `deployments`, in the order `decode` reads them.
macro_rules! select_deployments {
    ($($rest:literal)*) => {
        concat!(
            r#"SELECT id, revision, "ref", "user", uid, "trigger", status, started_at,
                      finished_at, images, log_path, error, pid, superseded_by,
                      release_command, release_image, release, stage
               FROM deployments "#,
            $($rest, " ",)*
        )
    };
}

#[derive(Clone)]
pub(crate) struct Ledger {
    pool: SqlitePool,
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating if needed) the ledger and applies the checked-in migrations.
    pub(crate) async fn open(path: &Path) -> Result<Self, LedgerError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = connect(options).await.map_err(|cause| LedgerError::Db {
            action: "open the database",
            path: path.to_owned(),
            cause,
        })?;
        let ledger = Self {
            pool,
            path: path.to_owned(),
        };
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// sqlx takes no lock around SQLite migrations, so two processes opening a new ledger at
    /// once would both find it empty and both create the table. Holding the write lock
    /// (`BEGIN IMMEDIATE`) across the whole run makes the second wait, then find nothing to do.
    async fn migrate(&self) -> Result<(), LedgerError> {
        let action = "apply the schema migrations";
        let mut conn = self.pool.acquire().await.map_err(self.db(action))?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.db(action))?;
        MIGRATOR
            .run(&mut *tx)
            .await
            .map_err(|e| self.db(action)(e.into()))?;
        tx.commit().await.map_err(self.db(action))
    }

    /// A ledger on a pool made elsewhere (by `#[sqlx::test]`, which has already migrated it).
    #[cfg(test)]
    fn from_pool(pool: SqlitePool) -> Self {
        let path = pool.connect_options().get_filename().to_owned();
        Self { pool, path }
    }

    fn db(&self, action: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError + '_ {
        move |cause| LedgerError::Db {
            action,
            path: self.path.clone(),
            cause,
        }
    }

    /// Records that the environment of this ledger was torn down: its rows stay.
    pub(crate) async fn record_teardown(&self, by: &str, why: &str) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO teardowns (at, by_whom, why) VALUES (?, ?, ?)")
            .bind(timestamp(Utc::now()))
            .bind(by)
            .bind(why)
            .execute(&self.pool)
            .await
            .map_err(self.db("record a teardown"))?;
        Ok(())
    }

    /// When, by whom and why the environment was torn down, if it was and was not made
    /// again since.
    pub(crate) async fn torn_down(
        &self,
    ) -> Result<Option<(DateTime<Utc>, String, String)>, LedgerError> {
        let row = sqlx::query("SELECT at, by_whom, why FROM teardowns ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db("read the teardowns"))?;
        let Some(row) = row else { return Ok(None) };
        let decoded = (|| {
            let at: String = row.try_get("at")?;
            Ok::<_, sqlx::Error>((
                column("at", parse_time(&at))?,
                row.try_get("by_whom")?,
                row.try_get("why")?,
            ))
        })();
        decoded.map(Some).map_err(self.db("read the teardowns"))
    }

    /// The environment is made again: it is no longer torn down.
    pub(crate) async fn clear_teardown(&self) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM teardowns")
            .execute(&self.pool)
            .await
            .map_err(self.db("clear the teardowns"))?;
        Ok(())
    }

    /// Records a deploy as `running` and returns its id.
    pub(crate) async fn start(&self, new: &NewDeployment) -> Result<DeploymentId, LedgerError> {
        self.insert(new, Status::Running).await
    }

    async fn insert(
        &self,
        new: &NewDeployment,
        status: Status,
    ) -> Result<DeploymentId, LedgerError> {
        let log_path = new
            .log_path
            .to_str()
            .ok_or_else(|| LedgerError::NonUtf8LogPath(new.log_path.clone()))?;
        let id: i64 = sqlx::query_scalar(
            r#"INSERT INTO deployments
                   (revision, "ref", "user", uid, "trigger", status, started_at, log_path, pid)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               RETURNING id"#,
        )
        .bind(new.revision.as_str())
        .bind(new.refname.as_deref())
        .bind(new.user.as_str())
        .bind(i64::from(new.uid))
        .bind(new.trigger.as_str())
        .bind(status.as_str())
        .bind(timestamp(Utc::now()))
        .bind(log_path)
        .bind(i64::from(new.pid))
        .fetch_one(&self.pool)
        .await
        .map_err(self.db("record the start of a deploy"))?;
        Ok(DeploymentId(id))
    }

    /// Records a deploy as `queued`: its process waits for the lock, or the daemon's queue
    /// holds it. `begin` makes it `running`.
    pub(crate) async fn queue(&self, new: &NewDeployment) -> Result<DeploymentId, LedgerError> {
        self.insert(new, Status::Queued).await
    }

    /// Starts the queued deploy `id` of `revision` (what its request names now), logged to
    /// `log_path`; `NotRunning` if it is no longer queued (canceled meanwhile).
    pub(crate) async fn begin(
        &self,
        id: DeploymentId,
        revision: &Revision,
        log_path: &Path,
    ) -> Result<(), LedgerError> {
        let log = log_path
            .to_str()
            .ok_or_else(|| LedgerError::NonUtf8LogPath(log_path.to_owned()))?;
        let done = sqlx::query(
            "UPDATE deployments SET status = 'running', started_at = ?, log_path = ?, revision = ?
             WHERE id = ? AND status = 'queued'",
        )
        .bind(timestamp(Utc::now()))
        .bind(log)
        .bind(revision.as_str())
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(self.db("start a queued deploy"))?;
        self.changed_or_why(id, done.rows_affected()).await
    }

    /// Records the stage a running deploy has reached.
    pub(crate) async fn set_stage(&self, id: DeploymentId, stage: &str) -> Result<(), LedgerError> {
        sqlx::query("UPDATE deployments SET stage = ? WHERE id = ?")
            .bind(stage)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(self.db("record the stage of a deploy"))?;
        Ok(())
    }

    /// Queued rows, oldest first.
    pub(crate) async fn queued(&self) -> Result<Vec<Deployment>, LedgerError> {
        sqlx::query(select_deployments!("WHERE status = 'queued' ORDER BY id"))
            .try_map(|row: SqliteRow| decode(&row))
            .fetch_all(&self.pool)
            .await
            .map_err(self.db("read the queued deploys"))
    }

    /// Records how a running deploy ended, with the images it built or used.
    ///
    /// Only a `running` row can be finished; any other is left as it is and the call fails
    /// with `NotRunning`. Someone else already gave it an outcome (a later run that believed
    /// this process dead marked it abandoned, say), so the ledger and what actually runs may
    /// disagree: that must be seen, not silently papered over. The caller decides whether it
    /// is worth more than a warning.
    pub(crate) async fn finish(
        &self,
        id: DeploymentId,
        status: Status,
        images: &[String],
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let images = serde_json::to_string(images).expect("a list of strings is valid JSON");
        self.close(id, status, Some(&images), error).await
    }

    /// Gives a running deploy an outcome without images: `Abandoned` for one whose process is
    /// gone, `Superseded` for one a newer push overtook. Same rules as `finish`.
    pub(crate) async fn mark(
        &self,
        id: DeploymentId,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.close(id, status, None, error).await
    }

    async fn close(
        &self,
        id: DeploymentId,
        status: Status,
        images_json: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        if matches!(status, Status::Running | Status::Queued) {
            return Err(LedgerError::NotAnOutcome(status));
        }
        let action = "record the outcome of a deploy";
        let done = sqlx::query(
            "UPDATE deployments
             SET status = ?, finished_at = ?, images = coalesce(?, images), error = ?
             WHERE id = ? AND status IN ('queued', 'running')",
        )
        .bind(status.as_str())
        .bind(timestamp(Utc::now()))
        .bind(images_json)
        .bind(error)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(self.db(action))?;
        self.changed_or_why(id, done.rows_affected()).await
    }

    /// The newest deploy whose release command ran (and so may have changed the database)
    /// after `revision` was last live.
    pub(crate) async fn released_since(
        &self,
        revision: &Revision,
    ) -> Result<Option<Deployment>, LedgerError> {
        sqlx::query(select_deployments!(
            "WHERE release = 'done' AND id > (SELECT max(id) FROM deployments
                                             WHERE revision = ? AND status = 'succeeded')
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(revision.as_str())
        .try_map(|row: SqliteRow| decode(&row))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("read the releases since a revision"))
    }

    /// Records what the release command of deploy `id` did.
    pub(crate) async fn set_release(
        &self,
        id: DeploymentId,
        release: &Release,
    ) -> Result<(), LedgerError> {
        let command =
            serde_json::to_string(&release.command).expect("a list of strings is valid JSON");
        let done = sqlx::query(
            "UPDATE deployments SET release_command = ?, release_image = ?, release = ?
             WHERE id = ?",
        )
        .bind(command)
        .bind(&release.image)
        .bind(release.outcome.as_str())
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(self.db("record the release command"))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(self.not_found(id))
        }
    }

    /// Asks the queued or running deploy `id` to stop, on behalf of `by`: its process reads
    /// this when `deploy cancel` signals it. Another can not be asked (`NotRunning`).
    pub(crate) async fn request_cancel(
        &self,
        id: DeploymentId,
        by: &str,
    ) -> Result<(), LedgerError> {
        let done = sqlx::query(
            "UPDATE deployments SET cancel_requested_by = ?
             WHERE id = ? AND status IN ('queued', 'running')",
        )
        .bind(by)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(self.db("record a request to cancel a deploy"))?;
        self.changed_or_why(id, done.rows_affected()).await
    }

    /// Who asked to cancel deploy `id`, if anyone did.
    pub(crate) async fn cancel_requested(
        &self,
        id: DeploymentId,
    ) -> Result<Option<String>, LedgerError> {
        sqlx::query_scalar("SELECT cancel_requested_by FROM deployments WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
            .map_err(self.db("read a request to cancel a deploy"))
    }

    /// Records that `id` was overtaken by the deploy `by` (give it its status with `mark`).
    pub(crate) async fn set_superseded(
        &self,
        id: DeploymentId,
        by: DeploymentId,
    ) -> Result<(), LedgerError> {
        let done = sqlx::query("UPDATE deployments SET superseded_by = ? WHERE id = ?")
            .bind(by.0)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(self.db("record which deploy superseded another"))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(self.not_found(id))
        }
    }

    /// `Ok` when an update limited to queued or running rows changed deploy `id`; otherwise
    /// why not: it has ended (`NotRunning`), or it does not exist.
    async fn changed_or_why(&self, id: DeploymentId, changed: u64) -> Result<(), LedgerError> {
        if changed == 1 {
            return Ok(());
        }
        match self.get(id).await? {
            Some(row) => Err(LedgerError::NotRunning {
                id,
                status: row.status,
            }),
            None => Err(self.not_found(id)),
        }
    }

    fn not_found(&self, id: DeploymentId) -> LedgerError {
        LedgerError::NotFound {
            id,
            path: self.path.clone(),
        }
    }

    pub(crate) async fn get(&self, id: DeploymentId) -> Result<Option<Deployment>, LedgerError> {
        sqlx::query(select_deployments!("WHERE id = ?"))
            .bind(id.0)
            .try_map(|row: SqliteRow| decode(&row))
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db("read a deploy"))
    }

    /// Newest first.
    pub(crate) async fn history(&self, limit: u32) -> Result<Vec<Deployment>, LedgerError> {
        sqlx::query(select_deployments!("ORDER BY id DESC LIMIT ?"))
            .bind(i64::from(limit))
            .try_map(|row: SqliteRow| decode(&row))
            .fetch_all(&self.pool)
            .await
            .map_err(self.db("read the deploy history"))
    }

    /// The row of what is live now: the success that finished last.
    pub(crate) async fn last_succeeded(&self) -> Result<Option<Deployment>, LedgerError> {
        sqlx::query(select_deployments!(
            "WHERE status = 'succeeded' ORDER BY finished_at DESC, id DESC LIMIT 1"
        ))
        .try_map(|row: SqliteRow| decode(&row))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("read the live deploy"))
    }

    /// Rows still `running`, newest first: under the deploy lock, their processes are gone.
    pub(crate) async fn running(&self) -> Result<Vec<Deployment>, LedgerError> {
        sqlx::query(select_deployments!(
            "WHERE status = 'running' ORDER BY id DESC"
        ))
        .try_map(|row: SqliteRow| decode(&row))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read the running deploys"))
    }

    /// Distinct revisions that deployed successfully, the most recent success first: the
    /// rollback targets, and the images worth keeping.
    pub(crate) async fn succeeded_revisions(
        &self,
        limit: u32,
    ) -> Result<Vec<Revision>, LedgerError> {
        sqlx::query(
            "SELECT revision FROM deployments WHERE status = 'succeeded'
             GROUP BY revision ORDER BY max(finished_at) DESC, max(id) DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .try_map(|row: SqliteRow| {
            let revision: String = row.try_get("revision")?;
            column("revision", Revision::parse(&revision))
        })
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read the deployed revisions"))
    }

    /// Deletes finished rows beyond the newest `keep_last` finished ones, except rows whose
    /// revision is in `keep_revisions`, and returns the deleted rows' log paths for the caller
    /// to delete. Never deletes a `running` row, nor the live row (`last_succeeded`), whatever
    /// the arguments: `deploy status` and rollbacks depend on it.
    pub(crate) async fn prune(
        &self,
        keep_last: u32,
        keep_revisions: &[Revision],
    ) -> Result<Vec<PathBuf>, LedgerError> {
        let keep_revisions =
            serde_json::to_string(keep_revisions).expect("a list of revisions is valid JSON");
        // One statement, so it is atomic without a transaction.
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM deployments
             WHERE status <> 'running'
               AND id NOT IN (SELECT id FROM deployments WHERE status <> 'running'
                              ORDER BY id DESC LIMIT ?)
               AND revision NOT IN (SELECT value FROM json_each(?))
               AND id IS NOT (SELECT id FROM deployments WHERE status = 'succeeded'
                              ORDER BY finished_at DESC, id DESC LIMIT 1)
             RETURNING log_path",
        )
        .bind(i64::from(keep_last))
        .bind(keep_revisions)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("prune old deploys"))?;
        Ok(deleted.into_iter().map(PathBuf::from).collect())
    }
}

/// Connects, retrying while the file is busy. Turning a new file to WAL needs an exclusive
/// lock, and SQLite refuses a second process that wants it at once (`SQLITE_BUSY`) instead of
/// waiting through the busy timeout, so two processes creating the ledger together would fail.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        // One connection would do for the pipeline; the second lets `deploy logs --follow`
        // poll while something else writes.
        let attempt = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match attempt {
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    let code = e.as_database_error().and_then(|d| d.code());
    // Extended codes (`SQLITE_BUSY_RECOVERY`, …) keep the primary code in their low byte.
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == SQLITE_BUSY)
}

/// Fixed width (microseconds, `Z`) so that times compare correctly as text in SQL.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// A value the ledger holds but cannot read: named by its column, so the message says where.
fn column<T, E>(name: &str, value: Result<T, E>) -> Result<T, sqlx::Error>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    value.map_err(|e| sqlx::Error::ColumnDecode {
        index: format!("`{name}`"),
        source: e.into(),
    })
}

fn decode(row: &SqliteRow) -> Result<Deployment, sqlx::Error> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let finished_at: Option<String> = row.try_get("finished_at")?;
    let pid: i64 = row.try_get("pid")?;
    let uid: Option<i64> = row.try_get("uid")?;
    Ok(Deployment {
        id: DeploymentId(row.try_get("id")?),
        revision: column("revision", Revision::parse(&text("revision")?))?,
        refname: row.try_get("ref")?,
        user: text("user")?,
        uid: uid.map(|u| column("uid", u32::try_from(u))).transpose()?,
        trigger: column("trigger", text("trigger")?.parse())?,
        status: column("status", text("status")?.parse())?,
        started_at: column("started_at", parse_time(&text("started_at")?))?,
        finished_at: finished_at
            .map(|t| column("finished_at", parse_time(&t)))
            .transpose()?,
        images: column("images", serde_json::from_str(&text("images")?))?,
        log_path: PathBuf::from(text("log_path")?),
        error: row.try_get("error")?,
        pid: column("pid", u32::try_from(pid))?,
        superseded_by: row
            .try_get::<Option<i64>, _>("superseded_by")?
            .map(DeploymentId),
        release: decode_release(row)?,
        stage: row.try_get("stage")?,
    })
}

fn decode_release(row: &SqliteRow) -> Result<Option<Release>, sqlx::Error> {
    let command: Option<String> = row.try_get("release_command")?;
    let image: Option<String> = row.try_get("release_image")?;
    let outcome: Option<String> = row.try_get("release")?;
    let (Some(command), Some(image), Some(outcome)) = (command, image, outcome) else {
        return Ok(None);
    };
    Ok(Some(Release {
        command: column("release_command", serde_json::from_str(&command))?,
        image,
        outcome: column("release", outcome.parse())?,
    }))
}

impl ReleaseOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl FromStr for ReleaseOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Done, Self::Failed, Self::Skipped]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown release outcome `{}`", s.escape_debug()))
    }
}

impl Trigger {
    /// The ledger's spelling, the same as the JSON output's.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Manual => "manual",
            Self::Rollback => "rollback",
            Self::Restore => "restore",
        }
    }
}

impl FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Push, Self::Manual, Self::Rollback, Self::Restore]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown trigger `{}`", s.escape_debug()))
    }
}

impl Status {
    /// The ledger's spelling, the same as the JSON output's.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
            Self::Superseded => "superseded",
            Self::Canceled => "canceled",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Abandoned,
            Self::Superseded,
            Self::Canceled,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("unknown status `{}`", s.escape_debug()))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
