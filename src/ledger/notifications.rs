//! The ledger's queue of notifications (`notify.rs`): queued by a deploy, worked off by the
//! deliverer, each attempt recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Ledger, LedgerError, column, parse_time, timestamp};
use crate::ids::DeploymentId;

/// One event for one receiver, still to deliver.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) id: i64,
    /// The receiver, as JSON.
    pub(crate) receiver: String,
    pub(crate) body: String,
    pub(crate) queued_at: DateTime<Utc>,
    pub(crate) attempts: u32,
}

/// The newest delivery that failed, for `deploy status`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Failure {
    pub(crate) event: String,
    pub(crate) receiver: serde_json::Value,
    pub(crate) at: DateTime<Utc>,
    pub(crate) error: String,
    /// No more attempts will be made.
    pub(crate) given_up: bool,
}

impl Ledger {
    /// Queues `event` of deploy `id` for `receiver`, due now.
    pub(crate) async fn queue_notification(
        &self,
        id: DeploymentId,
        receiver: &str,
        event: &str,
        body: &str,
    ) -> Result<(), LedgerError> {
        let now = timestamp(Utc::now());
        sqlx::query(
            "INSERT INTO notifications
                 (deployment_id, receiver, event, body, queued_at, next_attempt_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id.0)
        .bind(receiver)
        .bind(event)
        .bind(body)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await
        .map_err(self.db("queue a notification"))?;
        Ok(())
    }

    /// Notifications neither delivered nor given up that are due now, oldest first.
    pub(crate) async fn due_notifications(&self) -> Result<Vec<Pending>, LedgerError> {
        sqlx::query(
            "SELECT id, receiver, body, queued_at, attempts FROM notifications
             WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= ?
             ORDER BY id",
        )
        .bind(timestamp(Utc::now()))
        .try_map(|row: SqliteRow| {
            Ok(Pending {
                id: row.try_get("id")?,
                receiver: row.try_get("receiver")?,
                body: row.try_get("body")?,
                queued_at: column(
                    "queued_at",
                    parse_time(&row.try_get::<String, _>("queued_at")?),
                )?,
                attempts: column(
                    "attempts",
                    u32::try_from(row.try_get::<i64, _>("attempts")?),
                )?,
            })
        })
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read the pending notifications"))
    }

    /// When the next pending notification is due.
    pub(crate) async fn next_notification_due(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM notifications
             WHERE delivered_at IS NULL AND given_up_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(self.db("read the pending notifications"))?;
        next.map(|t| parse_time(&t))
            .transpose()
            .map_err(|e| self.db("read the pending notifications")(sqlx::Error::Decode(e.into())))
    }

    /// Records that notification `id` was accepted.
    pub(crate) async fn notification_delivered(&self, id: i64) -> Result<(), LedgerError> {
        let now = timestamp(Utc::now());
        sqlx::query(
            "UPDATE notifications SET delivered_at = ?, last_attempt_at = ?, attempts = attempts + 1
             WHERE id = ?",
        )
        .bind(&now)
        .bind(&now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.db("record a delivered notification"))?;
        Ok(())
    }

    /// Records a failed attempt: tried again after `retry`, or given up when `retry` is
    /// `None`.
    pub(crate) async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry: Option<Duration>,
    ) -> Result<(), LedgerError> {
        let now = Utc::now();
        let next = retry.map(|after| now + chrono::TimeDelta::from_std(after).unwrap_or_default());
        sqlx::query(
            "UPDATE notifications
             SET attempts = attempts + 1, last_error = ?, last_attempt_at = ?,
                 next_attempt_at = coalesce(?, next_attempt_at),
                 given_up_at = CASE WHEN ? IS NULL THEN ? END
             WHERE id = ?",
        )
        .bind(error)
        .bind(timestamp(now))
        .bind(next.map(timestamp))
        .bind(next.map(timestamp))
        .bind(timestamp(now))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.db("record a failed notification"))?;
        Ok(())
    }

    /// The newest failed attempt, if the newest attempt of any notification failed.
    pub(crate) async fn last_notification_failure(&self) -> Result<Option<Failure>, LedgerError> {
        sqlx::query(
            "SELECT event, receiver, last_attempt_at, last_error, given_up_at FROM notifications
             WHERE last_error IS NOT NULL AND delivered_at IS NULL
             ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .try_map(|row: SqliteRow| {
            Ok(Failure {
                event: row.try_get("event")?,
                receiver: column(
                    "receiver",
                    serde_json::from_str(&row.try_get::<String, _>("receiver")?),
                )?,
                at: column(
                    "last_attempt_at",
                    parse_time(&row.try_get::<String, _>("last_attempt_at")?),
                )?,
                error: row.try_get("last_error")?,
                given_up: row.try_get::<Option<String>, _>("given_up_at")?.is_some(),
            })
        })
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("read the notifications"))
    }
}
