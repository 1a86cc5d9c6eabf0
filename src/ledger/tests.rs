//! Tests of the ledger: queries on `#[sqlx::test]` databases, and the file-level behaviour
//! of `open` (WAL, busy timeout, migrations) on temp files with `#[tokio::test]`.

use std::time::Instant;

use sqlx::SqlitePool;

use super::*;

fn rev(c: char) -> Revision {
    Revision::parse(&c.to_string().repeat(40)).unwrap()
}

fn deploy(c: char) -> NewDeployment {
    NewDeployment {
        revision: rev(c),
        refname: Some("refs/heads/main".to_owned()),
        user: UserName::sanitize("alice"),
        uid: 1000,
        trigger: Trigger::Push,
        log_path: PathBuf::from(format!("/root/build-logs/{c}.log")),
        pid: 4242,
    }
}

/// Starts a deploy of revision `c` and finishes it with `status`.
async fn deployed(ledger: &Ledger, c: char, status: Status) -> DeploymentId {
    let id = ledger.start(&deploy(c)).await.unwrap();
    ledger.finish(id, status, &[], None).await.unwrap();
    id
}

fn ids(rows: &[Deployment]) -> Vec<i64> {
    rows.iter().map(|d| d.id.0).collect()
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn a_deploy_round_trips(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let before = Utc::now();
    let id = ledger.start(&deploy('a')).await.unwrap();

    let row = ledger.get(id).await.unwrap().unwrap();
    assert_eq!(row.id, id);
    assert_eq!(row.revision, rev('a'));
    assert_eq!(row.refname.as_deref(), Some("refs/heads/main"));
    assert_eq!(row.user, "alice");
    assert_eq!(row.uid, Some(1000));
    assert_eq!(row.trigger, Trigger::Push);
    assert_eq!(row.status, Status::Running);
    assert!(row.started_at >= before - chrono::Duration::milliseconds(1));
    assert_eq!(row.finished_at, None);
    assert!(row.images.is_empty());
    assert_eq!(row.log_path, PathBuf::from("/root/build-logs/a.log"));
    assert_eq!(row.error, None);
    assert_eq!(row.pid, 4242);
    assert_eq!(row.superseded_by, None);

    let images = vec!["app-web:aaaa".to_owned(), "postgres:15".to_owned()];
    ledger
        .finish(id, Status::Succeeded, &images, None)
        .await
        .unwrap();
    let row = ledger.get(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Succeeded);
    assert_eq!(row.images, images);
    assert!(row.finished_at.unwrap() >= row.started_at);

    let manual = NewDeployment {
        refname: None,
        trigger: Trigger::Rollback,
        ..deploy('b')
    };
    let id = ledger.start(&manual).await.unwrap();
    let row = ledger.get(id).await.unwrap().unwrap();
    assert_eq!((row.refname, row.trigger), (None, Trigger::Rollback));
    assert!(ledger.get(DeploymentId(999)).await.unwrap().is_none());
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn rows_serialize_for_json_output(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let id = deployed(&ledger, 'a', Status::Failed).await;
    let json = serde_json::to_value(ledger.get(id).await.unwrap().unwrap()).unwrap();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["trigger"], "push");
    assert_eq!(json["ref"], "refs/heads/main");
    assert_eq!(json["log"], "/root/build-logs/a.log");
    assert_eq!(json["uid"], 1000);
    assert!(json.get("superseded_by").is_none());
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn rows_from_before_the_uid_was_recorded_have_none(pool: SqlitePool) {
    // What a row written before migration 0002 holds: no uid.
    let id: i64 = sqlx::query_scalar(
        r#"INSERT INTO deployments
               (revision, "user", "trigger", status, started_at, log_path, pid)
           VALUES (?, 'alice', 'push', 'running', '2024-01-01T00:00:00.000000Z', '/l', 1)
           RETURNING id"#,
    )
    .bind(rev('a').as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    let ledger = Ledger::from_pool(pool);
    let row = ledger.get(DeploymentId(id)).await.unwrap().unwrap();
    assert_eq!(row.uid, None);
    assert!(serde_json::to_value(row).unwrap()["uid"].is_null());
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn history_is_newest_first_and_limited(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let mut started = Vec::new();
    for c in ['a', 'b', 'c', 'd', 'e'] {
        started.push(deployed(&ledger, c, Status::Succeeded).await.0);
    }
    started.reverse();
    assert_eq!(ids(&ledger.history(3).await.unwrap()), started[..3]);
    assert_eq!(ids(&ledger.history(u32::MAX).await.unwrap()), started);
    assert!(ledger.history(0).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn only_a_running_deploy_can_be_finished(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let id = ledger.start(&deploy('a')).await.unwrap();
    ledger
        .finish(id, Status::Failed, &[], Some("build of `web` failed"))
        .await
        .unwrap();
    let row = ledger.get(id).await.unwrap().unwrap();
    assert_eq!(row.error.as_deref(), Some("build of `web` failed"));

    let again = ledger
        .finish(id, Status::Succeeded, &[], None)
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        LedgerError::NotRunning {
            status: Status::Failed,
            ..
        }
    ));
    assert_eq!(
        again.to_string(),
        format!(
            "deploy {id} is already failed; only a queued or running deploy can be given an outcome"
        )
    );
    assert_eq!(
        ledger.get(id).await.unwrap().unwrap().status,
        Status::Failed,
        "left as it was"
    );

    let other = ledger.start(&deploy('b')).await.unwrap();
    let running = ledger
        .finish(other, Status::Running, &[], None)
        .await
        .unwrap_err();
    assert!(matches!(
        running,
        LedgerError::NotAnOutcome(Status::Running)
    ));

    let missing = ledger
        .finish(DeploymentId(99), Status::Succeeded, &[], None)
        .await
        .unwrap_err();
    assert!(matches!(missing, LedgerError::NotFound { .. }), "{missing}");
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn running_rows_can_be_marked_abandoned(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let done = deployed(&ledger, 'a', Status::Succeeded).await;
    let first = ledger.start(&deploy('b')).await.unwrap();
    let second = ledger.start(&deploy('c')).await.unwrap();
    assert_eq!(ids(&ledger.running().await.unwrap()), [second.0, first.0]);

    ledger
        .mark(first, Status::Abandoned, Some("the deploying process died"))
        .await
        .unwrap();
    assert_eq!(ids(&ledger.running().await.unwrap()), [second.0]);
    let row = ledger.get(first).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Abandoned);
    assert_eq!(row.error.as_deref(), Some("the deploying process died"));
    assert!(row.finished_at.is_some());

    let err = ledger
        .mark(done, Status::Abandoned, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LedgerError::NotRunning {
            status: Status::Succeeded,
            ..
        }
    ));
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn superseded_deploys_point_at_their_replacement(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let old = ledger.start(&deploy('a')).await.unwrap();
    ledger.mark(old, Status::Superseded, None).await.unwrap();
    let new = ledger.start(&deploy('b')).await.unwrap();
    ledger.set_superseded(old, new).await.unwrap();

    let row = ledger.get(old).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.superseded_by),
        (Status::Superseded, Some(new))
    );
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(json["superseded_by"], new.0);

    let err = ledger
        .set_superseded(DeploymentId(99), new)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }));
    // The replacement must exist too.
    let err = ledger
        .set_superseded(old, DeploymentId(99))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Db { .. }), "{err}");
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn last_succeeded_is_the_success_that_finished_last(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    assert!(ledger.last_succeeded().await.unwrap().is_none());
    deployed(&ledger, 'a', Status::Succeeded).await;
    let b = deployed(&ledger, 'b', Status::Succeeded).await;
    deployed(&ledger, 'c', Status::Failed).await;
    ledger.start(&deploy('d')).await.unwrap();
    assert_eq!(ledger.last_succeeded().await.unwrap().unwrap().id, b);

    // Started earlier but finished later: that one is what runs now.
    let early = ledger.start(&deploy('e')).await.unwrap();
    let late = ledger.start(&deploy('f')).await.unwrap();
    ledger
        .finish(late, Status::Succeeded, &[], None)
        .await
        .unwrap();
    ledger
        .finish(early, Status::Succeeded, &[], None)
        .await
        .unwrap();
    let live = ledger.last_succeeded().await.unwrap().unwrap();
    assert_eq!((live.id, live.revision), (early, rev('e')));
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn succeeded_revisions_are_distinct_and_most_recent_first(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    assert!(ledger.succeeded_revisions(10).await.unwrap().is_empty());
    deployed(&ledger, 'a', Status::Succeeded).await;
    deployed(&ledger, 'b', Status::Succeeded).await;
    deployed(&ledger, 'a', Status::Succeeded).await;
    deployed(&ledger, 'c', Status::Failed).await;
    deployed(&ledger, 'd', Status::Abandoned).await;
    assert_eq!(
        ledger.succeeded_revisions(10).await.unwrap(),
        [rev('a'), rev('b')]
    );
    assert_eq!(ledger.succeeded_revisions(1).await.unwrap(), [rev('a')]);

    deployed(&ledger, 'b', Status::Succeeded).await;
    assert_eq!(
        ledger.succeeded_revisions(10).await.unwrap(),
        [rev('b'), rev('a')]
    );
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn prune_keeps_the_newest_the_named_the_live_and_the_running(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let r1 = deployed(&ledger, 'a', Status::Succeeded).await;
    let r2 = deployed(&ledger, 'b', Status::Failed).await;
    let r3 = deployed(&ledger, 'c', Status::Succeeded).await; // the live one
    let r4 = deployed(&ledger, 'd', Status::Failed).await;
    let r5 = deployed(&ledger, 'e', Status::Abandoned).await;
    let r6 = ledger.start(&deploy('f')).await.unwrap();
    ledger.set_superseded(r1, r2).await.unwrap();

    // The newest two finished rows are r5 and r4; `a` is named; r3 is live; r6 runs.
    let deleted = ledger.prune(2, &[rev('a')]).await.unwrap();
    assert_eq!(deleted, [PathBuf::from("/root/build-logs/b.log")]);
    let left = ids(&ledger.history(u32::MAX).await.unwrap());
    assert_eq!(left, [r6.0, r5.0, r4.0, r3.0, r1.0]);
    let r1_row = ledger.get(r1).await.unwrap().unwrap();
    assert_eq!(
        r1_row.superseded_by, None,
        "a deleted replacement leaves no dangling id"
    );

    let mut deleted = ledger.prune(0, &[]).await.unwrap();
    deleted.sort();
    let want: Vec<PathBuf> = ['a', 'd', 'e']
        .iter()
        .map(|c| PathBuf::from(format!("/root/build-logs/{c}.log")))
        .collect();
    assert_eq!(deleted, want);
    assert_eq!(ids(&ledger.history(u32::MAX).await.unwrap()), [r6.0, r3.0]);
    assert!(ledger.prune(0, &[]).await.unwrap().is_empty());

    // Ids are never reused after pruning.
    let next = ledger.start(&deploy('1')).await.unwrap();
    assert!(next > r6);
}

// ---- the database file: `open` itself ----

async fn pragma(ledger: &Ledger, name: &'static str) -> String {
    let sql = match name {
        "journal_mode" => "PRAGMA journal_mode",
        "foreign_keys" => "PRAGMA foreign_keys",
        "busy_timeout" => "PRAGMA busy_timeout",
        _ => unreachable!(),
    };
    let row = sqlx::query(sql).fetch_one(&ledger.pool).await.unwrap();
    row.try_get::<String, _>(0)
        .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
        .unwrap()
}

#[tokio::test]
async fn open_creates_the_file_with_wal_busy_timeout_and_foreign_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deploy.db");
    let ledger = Ledger::open(&path).await.unwrap();
    assert!(path.is_file());
    assert_eq!(pragma(&ledger, "journal_mode").await, "wal");
    assert_eq!(pragma(&ledger, "foreign_keys").await, "1");
    assert_eq!(pragma(&ledger, "busy_timeout").await, "30000");
}

#[tokio::test]
async fn open_names_the_file_it_could_not_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing-dir/deploy.db");
    let Err(err) = Ledger::open(&path).await else {
        panic!("opened {}", path.display())
    };
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "failed to open the database in the ledger `{}`: ",
            path.display()
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn reopening_keeps_rows_and_runs_no_migration_again() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deploy.db");
    let ledger = Ledger::open(&path).await.unwrap();
    let id = deployed(&ledger, 'a', Status::Succeeded).await;
    let applied = || async {
        let ledger = Ledger::open(&path).await.unwrap();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&ledger.pool)
                .await
                .unwrap();
        (ledger, rows)
    };
    ledger.pool.close().await;

    let (first, before) = applied().await;
    assert_eq!(before.len(), MIGRATOR.iter().count());
    first.pool.close().await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // `installed_on` has 1 s resolution
    let (second, after) = applied().await;
    assert_eq!(before, after, "no migration ran twice");
    assert_eq!(
        second.get(id).await.unwrap().unwrap().status,
        Status::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_waits_for_the_first_instead_of_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deploy.db");
    let a = Ledger::open(&path).await.unwrap();
    let b = Ledger::open(&path).await.unwrap();

    // `a` holds the write lock for a while, as a slow writer in another process would.
    let mut conn = a.pool.acquire().await.unwrap();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE deployments SET error = NULL")
        .execute(&mut *tx)
        .await
        .unwrap();
    let held = Instant::now();
    let writer = tokio::spawn(async move { b.start(&deploy('b')).await.map(|id| (b, id)) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !writer.is_finished(),
        "the second writer waits for the lock"
    );
    tx.commit().await.unwrap();
    let (b, id) = writer.await.unwrap().unwrap();
    assert!(held.elapsed() >= Duration::from_millis(500));
    assert_eq!(a.get(id).await.unwrap().unwrap().revision, rev('b'));

    // And many interleaved writes from both sides all land.
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { deployed(&ledger, 'c', Status::Succeeded).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(a.history(u32::MAX).await.unwrap().len(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_the_ledger_at_once_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let path = tmp.path().join(format!("deploy-{i}.db"));
        if i % 2 == 1 {
            // Already WAL but still empty, so both opens get to the migrations together.
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            sqlx::SqlitePool::connect_with(options)
                .await
                .unwrap()
                .close()
                .await;
        }
        let (a, b) = tokio::join!(Ledger::open(&path), Ledger::open(&path));
        let (a, b) = (a.unwrap(), b.unwrap());
        deployed(&a, 'a', Status::Succeeded).await;
        assert_eq!(b.history(10).await.unwrap().len(), 1);
    }
}

/// A ledger file at `path` with only the first `n` migrations applied: what an older
/// version of `deploy` left.
async fn migrated_up_to(path: &Path, n: usize) -> SqlitePool {
    let mut old = sqlx::migrate!();
    old.migrations = std::borrow::Cow::Owned(old.migrations[..n].to_vec());
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    old.run(&pool).await.unwrap();
    pool
}

/// A ledger written before migration 0003 (rows, a supersede link) keeps every row and id
/// once `open` applies it, and takes the new trigger, release and dump columns.
#[tokio::test]
async fn release_migration_keeps_the_rows_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.db");
    {
        let pool = migrated_up_to(&path, 2).await;
        let early = Ledger::from_pool(pool.clone());
        let a = early.start(&deploy('a')).await.unwrap();
        early.finish(a, Status::Succeeded, &[], None).await.unwrap();
        let b = early.start(&deploy('b')).await.unwrap();
        early.mark(b, Status::Superseded, None).await.unwrap();
        early.set_superseded(b, a).await.unwrap();
        pool.close().await;
    }
    let ledger = Ledger::open(&path).await.unwrap();
    let rows = ledger.history(10).await.unwrap();
    assert_eq!(ids(&rows), [2, 1]);
    assert_eq!(rows[0].superseded_by, Some(DeploymentId(1)));
    assert_eq!(rows[1].release, None);

    let mut restore = deploy('a');
    restore.trigger = Trigger::Restore;
    let id = ledger.start(&restore).await.unwrap();
    let release = Release {
        command: vec!["migrate".to_owned()],
        image: "sha256:1".to_owned(),
        outcome: ReleaseOutcome::Done,
    };
    ledger.set_release(id, &release).await.unwrap();
    let row = ledger.get(id).await.unwrap().unwrap();
    assert_eq!((row.id.0, row.trigger), (3, Trigger::Restore));
    assert_eq!(row.release, Some(release));
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn dumps_round_trip_and_retention_marks_them_removed(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let id = deployed(&ledger, 'a', Status::Succeeded).await;
    let new = NewBackup {
        file: "2026-01-02 03:04:05 bbbb db.dump".to_owned(),
        service: "db".to_owned(),
        database: "shop".to_owned(),
        size: 872,
        sha256: "0".repeat(64),
        taken_at: Utc::now(),
        reason: BackupReason::Release,
        live_revision: Some(rev('a')),
        before_revision: Some(rev('b')),
        deployment: Some(id),
    };
    let backup = ledger.record_backup(&new).await.unwrap();
    let listed = ledger.backups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].size, listed[0].reason, listed[0].deployment),
        (872, BackupReason::Release, Some(id))
    );
    assert!(ledger.backup_named(&new.file).await.unwrap().is_some());
    ledger.backup_removed(backup).await.unwrap();
    assert!(ledger.backups().await.unwrap().is_empty());
    assert!(
        ledger.backup_named(&new.file).await.unwrap().is_some(),
        "history stays"
    );
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn released_since_finds_a_release_after_the_revision_was_live(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    deployed(&ledger, 'a', Status::Succeeded).await;
    assert!(ledger.released_since(&rev('a')).await.unwrap().is_none());
    let b = ledger.start(&deploy('b')).await.unwrap();
    let release = Release {
        command: vec!["migrate".to_owned()],
        image: "sha256:2".to_owned(),
        outcome: ReleaseOutcome::Done,
    };
    ledger.set_release(b, &release).await.unwrap();
    // It failed its health check after the release ran: the database changed all the same.
    ledger.finish(b, Status::Failed, &[], None).await.unwrap();
    assert_eq!(
        ledger
            .released_since(&rev('a'))
            .await
            .unwrap()
            .map(|d| d.id),
        Some(b)
    );
    assert!(ledger.released_since(&rev('c')).await.unwrap().is_none());
}

/// A ledger written before migration 0004 keeps its rows, the dumps' links to their deploys
/// (dropping a parent table would set them to NULL) and the ids already handed out, and
/// takes `canceled`.
#[tokio::test]
async fn cancel_migration_keeps_rows_links_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.db");
    let linked;
    {
        let pool = migrated_up_to(&path, 3).await;
        let early = Ledger::from_pool(pool.clone());
        linked = deployed(&early, 'a', Status::Succeeded).await;
        let gone = deployed(&early, 'b', Status::Failed).await;
        let new = NewBackup {
            file: "dump".to_owned(),
            service: "db".to_owned(),
            database: "shop".to_owned(),
            size: 1,
            sha256: "0".repeat(64),
            taken_at: Utc::now(),
            reason: BackupReason::Release,
            live_revision: None,
            before_revision: Some(rev('a')),
            deployment: Some(linked),
        };
        early.record_backup(&new).await.unwrap();
        // The newest row is gone: its id must still never come back.
        sqlx::query("DELETE FROM deployments WHERE id = ?")
            .bind(gone.0)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let ledger = Ledger::open(&path).await.unwrap();
    assert_eq!(ids(&ledger.history(10).await.unwrap()), [1]);
    let dumps = ledger.backups().await.unwrap();
    assert_eq!(dumps[0].deployment, Some(linked));
    let next = ledger.start(&deploy('c')).await.unwrap();
    assert_eq!(next.0, 3, "id 2 was handed out before");
    ledger.request_cancel(next, "olga").await.unwrap();
    assert_eq!(
        ledger.cancel_requested(next).await.unwrap().as_deref(),
        Some("olga")
    );
    ledger
        .finish(next, Status::Canceled, &[], Some("canceled by olga"))
        .await
        .unwrap();
    assert_eq!(
        ledger.get(next).await.unwrap().unwrap().status,
        Status::Canceled
    );
}

#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn only_a_running_deploy_can_be_asked_to_cancel(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let done = deployed(&ledger, 'a', Status::Succeeded).await;
    assert!(matches!(
        ledger.request_cancel(done, "olga").await,
        Err(LedgerError::NotRunning {
            status: Status::Succeeded,
            ..
        })
    ));
    assert!(matches!(
        ledger.request_cancel(DeploymentId(99), "olga").await,
        Err(LedgerError::NotFound { .. })
    ));
    let running = ledger.start(&deploy('b')).await.unwrap();
    assert_eq!(ledger.cancel_requested(running).await.unwrap(), None);
}

/// A queued row becomes the deploy's when it starts, and can be given an outcome while still
/// queued (canceled, superseded); one no longer queued cannot begin.
#[sqlx::test(migrator = "crate::ledger::MIGRATOR")]
async fn a_queued_row_begins_or_ends_without_running(pool: SqlitePool) {
    let ledger = Ledger::from_pool(pool);
    let waiting = ledger.queue(&deploy('a')).await.unwrap();
    assert_eq!(ids(&ledger.queued().await.unwrap()), [waiting.0]);
    assert!(ledger.running().await.unwrap().is_empty());
    ledger
        .begin(waiting, &rev('a'), Path::new("/root/build-logs/a.log"))
        .await
        .unwrap();
    ledger.set_stage(waiting, "build").await.unwrap();
    let row = ledger.get(waiting).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.stage.as_deref()),
        (Status::Running, Some("build"))
    );
    assert_eq!(row.log_path, Path::new("/root/build-logs/a.log"));

    let canceled = ledger.queue(&deploy('b')).await.unwrap();
    ledger
        .mark(
            canceled,
            Status::Canceled,
            Some("canceled by olga while queued"),
        )
        .await
        .unwrap();
    assert!(matches!(
        ledger.begin(canceled, &rev('b'), Path::new("/x.log")).await,
        Err(LedgerError::NotRunning {
            status: Status::Canceled,
            ..
        })
    ));
    assert!(ledger.queued().await.unwrap().is_empty());
}
