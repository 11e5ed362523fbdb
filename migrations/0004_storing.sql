-- Version 4: what was stored on or deleted from which card, by whom, under
-- which storing authorization (SPEC 3.4). Append-only, like the audit trail.
CREATE TABLE storing (
    id            INTEGER PRIMARY KEY,
    card_number   TEXT    NOT NULL,
    application   INTEGER NOT NULL,
    operation     TEXT    NOT NULL CHECK (operation IN ('store', 'delete')),
    data_size     INTEGER NOT NULL,
    data_hash     TEXT    NOT NULL,
    data_cert_id  TEXT,
    request_id    TEXT    NOT NULL,
    sar_id        TEXT    NOT NULL,
    sa_id         TEXT,
    first_party   TEXT    NOT NULL CHECK (first_party IN ('issuer', 'provider')),
    issuer        TEXT,
    provider      TEXT,
    applied_at    TEXT    NOT NULL,
    UNIQUE (request_id)
);
CREATE INDEX storing_by_card ON storing (card_number, application, id);

CREATE TRIGGER storing_no_update BEFORE UPDATE ON storing
BEGIN SELECT RAISE(ABORT, 'storing records are append-only'); END;
CREATE TRIGGER storing_no_delete BEFORE DELETE ON storing
BEGIN SELECT RAISE(ABORT, 'storing records are append-only'); END;
