-- The deploy lifecycle (issue 13): queued, running, canceled.
--
-- deployments.status may say 'queued' (waiting for the lock or in the daemon's queue) and
-- 'canceled'. The statuses now live in a table of their own, so that a later status is one
-- INSERT, not another rebuild of `deployments` (SQLite cannot change a CHECK in place).
-- New columns:
--   cancel_requested_by  written by `deploy cancel`: who asked, read by the deploy's process
--                        when the signal that follows wakes it;
--   stage                the stage a running deploy is in, for `deploy status`.
--
-- Rebuilding `deployments` means dropping it, and dropping a parent table runs its
-- foreign keys' ON DELETE actions: `backups.deployment_id` would be set to NULL. So
-- `backups` is set aside first and put back unchanged, with its ids.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE deployment_statuses (name TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO deployment_statuses (name)
VALUES ('queued'), ('running'), ('succeeded'), ('failed'), ('abandoned'), ('superseded'),
       ('canceled');

-- AUTOINCREMENT's counters go with their tables; kept, so no id is ever handed out twice.
CREATE TEMPORARY TABLE sequences_kept AS
    SELECT name, seq FROM sqlite_sequence WHERE name IN ('deployments', 'backups');
CREATE TEMPORARY TABLE backups_kept AS SELECT * FROM backups;
DROP TABLE backups;

CREATE TABLE deployments_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    revision      TEXT    NOT NULL CHECK (length(revision) = 40),
    "ref"         TEXT,
    "user"        TEXT    NOT NULL,
    "trigger"     TEXT    NOT NULL
                  CHECK ("trigger" IN ('push', 'manual', 'rollback', 'restore')),
    status        TEXT    NOT NULL REFERENCES deployment_statuses (name),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    images        TEXT    NOT NULL DEFAULT '[]'
                  CHECK (json_valid(images) AND json_type(images) = 'array'),
    log_path      TEXT    NOT NULL,
    error         TEXT,
    pid           INTEGER NOT NULL CHECK (pid >= 0),
    superseded_by INTEGER REFERENCES deployments_new (id) ON DELETE SET NULL,
    uid           INTEGER CHECK (uid >= 0),
    release_command TEXT  CHECK (release_command IS NULL OR json_valid(release_command)),
    release_image TEXT,
    release       TEXT    CHECK (release IN ('done', 'failed', 'skipped')),
    cancel_requested_by TEXT,
    stage         TEXT,
    CHECK ((status IN ('queued', 'running')) = (finished_at IS NULL))
);

INSERT INTO deployments_new
    (id, revision, "ref", "user", "trigger", status, started_at, finished_at, images,
     log_path, error, pid, superseded_by, uid, release_command, release_image, release)
SELECT id, revision, "ref", "user", "trigger", status, started_at, finished_at, images,
       log_path, error, pid, superseded_by, uid, release_command, release_image, release
FROM deployments;

DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_by_status ON deployments (status, finished_at);

CREATE TABLE backups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    file            TEXT    NOT NULL UNIQUE,
    service         TEXT    NOT NULL,
    "database"      TEXT    NOT NULL,
    size            INTEGER NOT NULL CHECK (size >= 0),
    sha256          TEXT    NOT NULL CHECK (length(sha256) = 64),
    taken_at        TEXT    NOT NULL,
    reason          TEXT    NOT NULL
                    CHECK (reason IN ('release', 'deploy', 'manual', 'schedule', 'export')),
    live_revision   TEXT    CHECK (live_revision IS NULL OR length(live_revision) = 40),
    before_revision TEXT    CHECK (before_revision IS NULL OR length(before_revision) = 40),
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    removed_at      TEXT
);
INSERT INTO backups SELECT * FROM backups_kept;
DROP TABLE backups_kept;
CREATE INDEX backups_by_service ON backups (service, taken_at);

DELETE FROM sqlite_sequence WHERE name IN ('deployments', 'deployments_new', 'backups');
INSERT INTO sqlite_sequence (name, seq) SELECT name, seq FROM sequences_kept;
DROP TABLE sequences_kept;
