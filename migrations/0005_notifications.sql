-- Notifications of deploy events (issue 13): one row per event and receiver, written by the
-- deploy and worked off by `deploy deliver-notifications`, so that deliveries survive the
-- process that queued them.
--   receiver         the `notify:` entry it goes to, as JSON (a URL and its secret file's
--                    path, or a command); never a secret itself
--   body             the JSON sent
--   next_attempt_at  when the deliverer tries again
--   delivered_at     set once the receiver accepted it
--   given_up_at      set when it was still failing `GIVE_UP_AFTER` after it was queued
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    receiver        TEXT    NOT NULL CHECK (json_valid(receiver)),
    event           TEXT    NOT NULL
                    CHECK (event IN ('started', 'succeeded', 'failed', 'canceled')),
    body            TEXT    NOT NULL CHECK (json_valid(body)),
    queued_at       TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    given_up_at     TEXT,
    last_error      TEXT,
    last_attempt_at TEXT
);

CREATE INDEX notifications_pending ON notifications (delivered_at, given_up_at, next_attempt_at);
