-- Version 1: cards seen, and the append-only, hash-chained audit trail.
CREATE TABLE cards (
    card_number TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
);

CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    event     TEXT NOT NULL,
    card      TEXT NOT NULL,
    peer      TEXT,
    result    TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);

CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
