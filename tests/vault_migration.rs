//! Vault schema migrations: a version 1 vault (audit trail only) is upgraded
//! to the current version in place, keeping its audit trail; a version 2
//! vault's audit entries, written before entry MACs, stay verifiable as
//! legacy entries, but never after the first entry with a MAC; a vault from
//! a newer cardvault is refused and left exactly as it was.

mod common;

use cardvault::vault::{AuditEvent, Vault};
use cardvault::Error;
use common::temp_dir;

const V1: &str = include_str!("../migrations/0001_audit.sql");
const V2: &str = include_str!("../migrations/0002_backups.sql");
/// The schema version this cardvault writes.
const CURRENT: i64 = 5;

#[test]
fn a_version_1_vault_is_upgraded_to_the_current_version_and_keeps_its_audit_trail() {
    let dir = temp_dir("migrate-v1");
    let path = dir.join("v1.sqlite");
    // A vault as a schema 1 cardvault left it: the audit tables only.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
    }
    {
        let v = Vault::open(&path).unwrap();
        assert_eq!(v.schema_version().unwrap(), CURRENT);
    }
    // The upgrade added the backup tables and the MAC column; the audit trail still verifies
    // and takes new entries.
    let mut v = Vault::open(&path).unwrap();
    assert_eq!(v.schema_version().unwrap(), CURRENT);
    assert!(v.list_backups(None).unwrap().is_empty());
    assert!(v.list_storing(None).unwrap().is_empty());
    assert!(v.wallet_certificates(None).unwrap().is_empty());
    v.audit(AuditEvent {
        event: "test",
        card: "0000000000000001",
        peer: None,
        result: "ok",
        details: serde_json::json!({}),
    })
    .unwrap();
    assert_eq!(v.audit_entries(None).unwrap().len(), 1);
    assert!(v.verify_audit().unwrap().is_empty(), "{:?}", v.verify_audit());
}

#[test]
fn a_vault_with_a_newer_schema_is_refused_and_left_unchanged() {
    let dir = temp_dir("migrate-newer");
    let path = dir.join("newer.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = match Vault::open(&path) {
        Err(e) => e,
        Ok(_) => panic!("a schema 99 vault was opened"),
    };
    assert!(matches!(e, Error::Vault { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 7);
    assert!(e.to_string().contains("schema version 99 is newer"), "{e}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 99);
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 1, "the refused open created tables");
    drop(conn);
    // Same bytes, except what WAL mode switching may leave in the header.
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before.len(), after.len());
}

/// An audit entry as a schema 2 cardvault wrote it (no MAC): its hash over
/// prev_hash || id || the fields (docs/FORMATS.md, "Hash chain").
fn legacy_entry(conn: &rusqlite::Connection, id: i64, prev: &[u8], card: &str) -> Vec<u8> {
    let fields = ["2024-01-01T00:00:00Z", "card-revoked", card, "\u{0}", "ok", "{}"];
    let mut buf = prev.to_vec();
    buf.extend_from_slice(&id.to_be_bytes());
    for f in fields {
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(f.as_bytes());
    }
    let hash = openssl::sha::sha256(&buf).to_vec();
    conn.execute(
        "INSERT INTO audit (id, at, event, card, peer, result, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8)",
        rusqlite::params![id, fields[0], fields[1], card, fields[4], fields[5], prev, hash],
    )
    .unwrap();
    hash
}

#[test]
fn legacy_audit_entries_verify_before_the_first_entry_mac_and_never_after_it() {
    let dir = temp_dir("migrate-v2-audit");
    let path = dir.join("vault.sqlite");
    // A schema 2 vault with three entries and the checkpoint (version 1)
    // that cardvault wrote for them, under its operator key.
    let key = [0x42u8; 32];
    std::fs::write(dir.join("operator.key"), cardvault_proto::to_hex(&key)).unwrap();
    let mut head = vec![0u8; 32];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.execute_batch("PRAGMA user_version = 2").unwrap();
        for (id, card) in [(1, "1111"), (2, "2222"), (3, "3333")] {
            head = legacy_entry(&conn, id, &head, card);
        }
    }
    let mac =
        cardvault_proto::crypto::hmac_sha256(&key, &[b"cardvault audit checkpoint v1", &3i64.to_be_bytes(), &head])
            .unwrap();
    let checkpoint = dir.join("vault.sqlite.audit-checkpoint");
    std::fs::write(
        &checkpoint,
        serde_json::json!({ "version": 1, "id": 3, "head": cardvault_proto::to_hex(&head),
                            "mac": cardvault_proto::to_hex(&mac) })
        .to_string(),
    )
    .unwrap();

    // Upgraded: the old entries are legacy, reported as such, not as problems.
    let mut v = Vault::open(&path).unwrap();
    assert_eq!(v.schema_version().unwrap(), CURRENT);
    let r = v.verify_audit_report().unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.legacy, Some((1, 3)));
    // New entries carry a MAC; the checkpoint now says so (macs_from 4).
    for card in ["4444", "5555"] {
        v.audit(AuditEvent {
            event: "card-revoked",
            card,
            peer: None,
            result: "ok",
            details: serde_json::json!({}),
        })
        .unwrap();
    }
    let r = v.verify_audit_report().unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.legacy, Some((1, 3)));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(c["version"], 2);
    assert_eq!(c["macs_from"], 4);
    drop(v);

    // With write access to the vault alone, removing the MAC of an entry
    // after the first MAC'd one (or of every one of them) does not make it
    // legacy: it is named.
    let strip = |sql: &str| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TRIGGER IF EXISTS audit_append_only_update")
            .unwrap();
        conn.execute_batch(sql).unwrap();
    };
    strip("UPDATE audit SET mac = NULL WHERE id = 5");
    let r = Vault::open(&path).unwrap().verify_audit_report().unwrap();
    assert_eq!(r.first_bad_mac, Some(5), "{:?}", r.problems);
    assert!(r.problems[0].contains("entry 5 carries no MAC"), "{:?}", r.problems);
    strip("UPDATE audit SET mac = NULL WHERE id >= 4");
    let r = Vault::open(&path).unwrap().verify_audit_report().unwrap();
    assert_eq!(r.first_bad_mac, Some(4), "{:?}", r.problems);
    assert!(r.problems[0].contains("entry 4 carries no MAC"), "{:?}", r.problems);
}
