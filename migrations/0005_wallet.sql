-- Version 5: copies of the electronic safe's registration certificates
-- (SPEC 3.3), so that a deposited item can be withdrawn when the card that
-- deposited it is lost. One row per certificate; `withdrawn_at` is set once
-- a card's receipt for it was accepted by the safe.
CREATE TABLE wallet_certificates (
    id            INTEGER PRIMARY KEY,
    card_number   TEXT    NOT NULL,
    safe_id       TEXT    NOT NULL,
    safe_counter  INTEGER NOT NULL,
    safe_address  TEXT    NOT NULL,
    item_id       TEXT    NOT NULL,
    kind          TEXT,
    name          TEXT,
    amount        INTEGER,
    certificate   TEXT    NOT NULL,
    deposited_at  TEXT    NOT NULL,
    withdrawn_at  TEXT,
    withdrawn_to  TEXT,
    UNIQUE (safe_id, safe_counter)
);
CREATE INDEX wallet_certificates_by_card ON wallet_certificates (card_number, id);
