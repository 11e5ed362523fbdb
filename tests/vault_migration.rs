//! Vault schema migrations: a version 1 vault (audit trail only) is upgraded
//! to the current version in place, keeping its audit trail; a vault from a newer
//! cardvault is refused and left exactly as it was.

mod common;

use cardvault::vault::{AuditEvent, Vault};
use cardvault::Error;
use common::temp_dir;

const V1: &str = include_str!("../migrations/0001_audit.sql");

#[test]
fn a_version_1_vault_is_upgraded_to_version_3_and_keeps_its_audit_trail() {
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
        assert_eq!(v.schema_version().unwrap(), 3);
    }
    // The upgrade added the backup and storing tables; the audit trail still verifies
    // and takes new entries.
    let mut v = Vault::open(&path).unwrap();
    assert_eq!(v.schema_version().unwrap(), 3);
    assert!(v.list_backups(None).unwrap().is_empty());
    assert!(v.list_storing(None).unwrap().is_empty());
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
