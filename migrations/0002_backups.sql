-- Version 2: encrypted page backups of cards, their records, and restores.
CREATE TABLE backups (
    id            INTEGER PRIMARY KEY,
    card_number   TEXT    NOT NULL,
    counter       INTEGER NOT NULL CHECK (counter > 0),
    created_at    TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('full', 'differential')),
    base_counter  INTEGER NOT NULL,
    page_size     INTEGER NOT NULL,
    page_count    INTEGER NOT NULL,
    pages         INTEGER NOT NULL,
    header        BLOB    NOT NULL,
    wrapped_key   BLOB    NOT NULL,
    control_info  BLOB    NOT NULL,
    trailer       BLOB    NOT NULL,
    record_count  INTEGER NOT NULL,
    digest        BLOB    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('stored', 'completed')),
    UNIQUE (card_number, counter)
);

CREATE TABLE records (
    backup_id INTEGER NOT NULL REFERENCES backups(id),
    idx       INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (backup_id, idx)
) WITHOUT ROWID;

CREATE TABLE restores (
    id          INTEGER PRIMARY KEY,
    backup_id   INTEGER NOT NULL REFERENCES backups(id),
    target_card TEXT    NOT NULL,
    mode        TEXT    NOT NULL CHECK (mode IN ('same-card', 'other-card')),
    started     TEXT    NOT NULL,
    finished    TEXT,
    result      TEXT
);
