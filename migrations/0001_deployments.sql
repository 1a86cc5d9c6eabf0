-- The deploy ledger: one row per deploy, written when it starts and again when it ends.
-- Times are RFC 3339 UTC text with a fixed width (microseconds, `Z`), so they sort as text.

CREATE TABLE deployments (
    -- AUTOINCREMENT: ids of pruned rows are never handed out again, so an id in an old log
    -- line can never name a different deploy.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    revision      TEXT    NOT NULL CHECK (length(revision) = 40),
    "ref"         TEXT,
    "user"        TEXT    NOT NULL,
    "trigger"     TEXT    NOT NULL CHECK ("trigger" IN ('push', 'manual', 'rollback')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'superseded')),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    images        TEXT    NOT NULL DEFAULT '[]'
                  CHECK (json_valid(images) AND json_type(images) = 'array'),
    log_path      TEXT    NOT NULL,
    error         TEXT,
    pid           INTEGER NOT NULL CHECK (pid >= 0),
    superseded_by INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    CHECK ((status = 'running') = (finished_at IS NULL))
);

-- The live row (newest success), the running rows, and the distinct successful revisions.
CREATE INDEX deployments_by_status ON deployments (status, finished_at);
