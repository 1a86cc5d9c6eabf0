-- Environments (issue 11): a preview, or an environment destroyed on request, is torn down
-- and its ledger keeps its rows; this table says when, by whom and why. A preview made
-- again for the same branch deletes its row here.
CREATE TABLE teardowns (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT    NOT NULL,
    by_whom TEXT    NOT NULL,
    why     TEXT    NOT NULL
);
