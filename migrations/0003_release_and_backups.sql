-- The release phase and database dumps (issue 10).
--
-- deployments: a restore of a dump is recorded as a row too (trigger 'restore'), which the
-- CHECK on "trigger" must allow; SQLite cannot change a CHECK in place, so the table is
-- rebuilt with the same rows and ids. New columns say what the release command did:
--   release_command  the command, as a JSON array, when the compose file declared one;
--   release_image    the image id it ran in (or would have: 'skipped' keeps it too);
--   release          'done' (exited 0), 'failed', or 'skipped' (command and image unchanged
--                    since the live deploy).

-- The copy refers to itself under its new name (which the rename below follows), so that
-- dropping the old table sets no link to NULL; the links are checked at commit.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE deployments_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    revision      TEXT    NOT NULL CHECK (length(revision) = 40),
    "ref"         TEXT,
    "user"        TEXT    NOT NULL,
    "trigger"     TEXT    NOT NULL
                  CHECK ("trigger" IN ('push', 'manual', 'rollback', 'restore')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'superseded')),
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
    CHECK ((status = 'running') = (finished_at IS NULL))
);

INSERT INTO deployments_new
    (id, revision, "ref", "user", "trigger", status, started_at, finished_at, images,
     log_path, error, pid, superseded_by, uid)
SELECT id, revision, "ref", "user", "trigger", status, started_at, finished_at, images,
       log_path, error, pid, superseded_by, uid
FROM deployments;

DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_by_status ON deployments (status, finished_at);

-- One row per dump in ROOT/backups. `file` is its name in that directory.
CREATE TABLE backups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    file            TEXT    NOT NULL UNIQUE,
    service         TEXT    NOT NULL,
    "database"      TEXT    NOT NULL,
    size            INTEGER NOT NULL CHECK (size >= 0),
    sha256          TEXT    NOT NULL CHECK (length(sha256) = 64),
    taken_at        TEXT    NOT NULL,
    -- Why it was taken: before a release, before any deploy (`backups: always`), by
    -- `deploy backup`, on `backup_schedule`, or for `deploy export`.
    reason          TEXT    NOT NULL
                    CHECK (reason IN ('release', 'deploy', 'manual', 'schedule', 'export')),
    -- The revision that was live when it was taken (NULL before the first deploy).
    live_revision   TEXT    CHECK (live_revision IS NULL OR length(live_revision) = 40),
    -- The revision about to be deployed after it (NULL when no deploy followed).
    before_revision TEXT    CHECK (before_revision IS NULL OR length(before_revision) = 40),
    -- The deploy it was taken for.
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    -- Set when retention removed the file; the row stays as history.
    removed_at      TEXT
);

CREATE INDEX backups_by_service ON backups (service, taken_at);
