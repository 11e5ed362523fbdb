-- Version 3: a MAC per audit entry, HMAC-SHA256 under a key derived from the
-- operator key (which is not in the vault), over the bytes the entry's hash
-- covers. Entries written before this version keep a NULL mac ("legacy":
-- hash chained and anchored, not authenticated one by one); every entry
-- from the first one with a MAC on must have one (docs/FORMATS.md).
ALTER TABLE audit ADD COLUMN mac BLOB;
