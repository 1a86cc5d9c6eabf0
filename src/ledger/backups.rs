//! The ledger's record of database dumps (`ROOT/backups`): one row per dump, kept after
//! retention removes the file (`removed_at`), so history still says what existed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Ledger, LedgerError, column, parse_time, timestamp};
use crate::ids::{DeploymentId, Revision};

/// Why a dump was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackupReason {
    /// Before a release command ran.
    Release,
    /// Before a deploy without a release (`backups: always`).
    Deploy,
    /// `deploy backup`.
    Manual,
    /// `backup_schedule`, by `deploy serve`.
    Schedule,
    /// For `deploy export`.
    Export,
}

/// A dump, as recorded.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct NewBackup {
    /// The file's name in `ROOT/backups`.
    pub(crate) file: String,
    pub(crate) service: String,
    pub(crate) database: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) taken_at: DateTime<Utc>,
    pub(crate) reason: BackupReason,
    /// What was live when it was taken.
    pub(crate) live_revision: Option<Revision>,
    /// What was deployed right after it, if a deploy followed.
    pub(crate) before_revision: Option<Revision>,
    pub(crate) deployment: Option<DeploymentId>,
}

/// A recorded dump: its row id and what was recorded (reached through `Deref`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Backup {
    pub(crate) id: i64,
    #[serde(flatten)]
    pub(crate) dump: NewBackup,
}

impl std::ops::Deref for Backup {
    type Target = NewBackup;

    fn deref(&self) -> &NewBackup {
        &self.dump
    }
}

/// Every column of `backups`, as `decode` reads them.
macro_rules! select_backups {
    ($rest:literal) => {
        concat!(
            r#"SELECT id, file, service, "database", size, sha256, taken_at, reason,
                      live_revision, before_revision, deployment_id FROM backups "#,
            $rest
        )
    };
}

impl Ledger {
    pub(crate) async fn record_backup(&self, new: &NewBackup) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            r#"INSERT INTO backups (file, service, "database", size, sha256, taken_at, reason,
                                    live_revision, before_revision, deployment_id)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"#,
        )
        .bind(&new.file)
        .bind(&new.service)
        .bind(&new.database)
        .bind(i64::try_from(new.size).unwrap_or(i64::MAX))
        .bind(&new.sha256)
        .bind(timestamp(new.taken_at))
        .bind(new.reason.as_str())
        .bind(new.live_revision.as_ref().map(Revision::as_str))
        .bind(new.before_revision.as_ref().map(Revision::as_str))
        .bind(new.deployment.map(|d| d.0))
        .fetch_one(&self.pool)
        .await
        .map_err(self.db("record a database dump"))
    }

    /// The dumps whose files retention has not removed, newest first.
    pub(crate) async fn backups(&self) -> Result<Vec<Backup>, LedgerError> {
        sqlx::query(select_backups!(
            "WHERE removed_at IS NULL ORDER BY taken_at DESC, id DESC"
        ))
        .try_map(|row: SqliteRow| decode(&row))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read the database dumps"))
    }

    /// The dump in `ROOT/backups` named `file`, if the ledger recorded it.
    pub(crate) async fn backup_named(&self, file: &str) -> Result<Option<Backup>, LedgerError> {
        sqlx::query(select_backups!("WHERE file = ?"))
            .bind(file)
            .try_map(|row: SqliteRow| decode(&row))
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db("read a database dump"))
    }

    /// Writes a consistent copy of the whole ledger to `to` (a new file), while others may
    /// be writing: `VACUUM INTO`.
    pub(crate) async fn copy_to(&self, to: &std::path::Path) -> Result<(), LedgerError> {
        sqlx::query("VACUUM INTO ?")
            .bind(to.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await
            .map_err(self.db("copy the ledger"))?;
        Ok(())
    }

    /// Records that retention removed a dump's file.
    pub(crate) async fn backup_removed(&self, id: i64) -> Result<(), LedgerError> {
        sqlx::query("UPDATE backups SET removed_at = ? WHERE id = ?")
            .bind(timestamp(Utc::now()))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.db("record a removed dump"))?;
        Ok(())
    }
}

fn decode(row: &SqliteRow) -> Result<Backup, sqlx::Error> {
    let revision = |name: &str| -> Result<Option<Revision>, sqlx::Error> {
        let text: Option<String> = row.try_get(name)?;
        text.map(|t| column(name, Revision::parse(&t))).transpose()
    };
    let size: i64 = row.try_get("size")?;
    let reason: String = row.try_get("reason")?;
    let dump = NewBackup {
        file: row.try_get("file")?,
        service: row.try_get("service")?,
        database: row.try_get("database")?,
        size: column("size", u64::try_from(size))?,
        sha256: row.try_get("sha256")?,
        taken_at: column(
            "taken_at",
            parse_time(&row.try_get::<String, _>("taken_at")?),
        )?,
        reason: column("reason", reason.parse())?,
        live_revision: revision("live_revision")?,
        before_revision: revision("before_revision")?,
        deployment: row
            .try_get::<Option<i64>, _>("deployment_id")?
            .map(DeploymentId),
    };
    Ok(Backup {
        id: row.try_get("id")?,
        dump,
    })
}

impl BackupReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Deploy => "deploy",
            Self::Manual => "manual",
            Self::Schedule => "schedule",
            Self::Export => "export",
        }
    }
}

impl std::str::FromStr for BackupReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Release,
            Self::Deploy,
            Self::Manual,
            Self::Schedule,
            Self::Export,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown backup reason `{}`", s.escape_debug()))
    }
}
