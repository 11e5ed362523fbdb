//! Audit you can't rewrite: with write access to the vault file alone, an
//! attacker who drops the triggers and rewrites, deletes or cuts off audit
//! entries (rehashing the chain so that it is consistent again) is caught by
//! `audit --verify`, because the head is anchored in a checkpoint file
//! outside the vault, MACed with the operator key.

mod common;

use common::*;
use std::path::Path;

/// The vault's own chain hash (src/vault/audit.rs), recomputed by the attacker.
fn entry_hash(prev: &[u8], id: i64, fields: [&str; 6]) -> Vec<u8> {
    let mut buf = prev.to_vec();
    buf.extend_from_slice(&id.to_be_bytes());
    for f in fields {
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(f.as_bytes());
    }
    openssl::sha::sha256(&buf).to_vec()
}

/// Drop the append-only triggers, apply `edit`, then rehash every entry so
/// that the chain inside the vault is consistent again.
fn tamper(vault: &Path, edit: &str) {
    let c = rusqlite::Connection::open(vault).unwrap();
    let triggers: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in triggers {
        c.execute_batch(&format!("DROP TRIGGER \"{t}\"")).unwrap();
    }
    c.execute_batch(edit).unwrap();
    type Row = (i64, String, String, String, Option<String>, String, String);
    let rows: Vec<Row> = c
        .prepare("SELECT id, at, event, card, peer, result, details FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut prev = vec![0u8; 32];
    for (new_id, (id, at, event, card, peer, result, details)) in rows.into_iter().enumerate() {
        let new_id = new_id as i64 + 1;
        let h = entry_hash(
            &prev,
            new_id,
            [
                &at,
                &event,
                &card,
                peer.as_deref().unwrap_or("\u{0}"),
                &result,
                &details,
            ],
        );
        c.execute(
            "UPDATE audit SET id = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4",
            rusqlite::params![new_id, prev, h, id],
        )
        .unwrap();
        prev = h;
    }
}

fn verify(home: &Path) -> std::process::Output {
    run(cv(home).args(["audit", "--verify"]))
}

fn vault_with_entries(tag: &str) -> common::TempDir {
    let home = temp_dir(tag);
    for n in ["1111", "2222", "3333", "4444"] {
        let o = run(cv(&home).args(["card", "revoke", n]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = verify(&home);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home
}

#[test]
fn rewriting_deleting_or_cutting_audit_entries_is_detected() {
    let cases = [
        ("rewrite", "UPDATE audit SET card = '9999' WHERE id = 2", "rewritten"),
        ("delete", "DELETE FROM audit WHERE id = 2", "deleted or cut off"),
        ("truncate", "DELETE FROM audit WHERE id = 4", "deleted or cut off"),
        (
            "rewrite the newest",
            "UPDATE audit SET details = '{}' WHERE id = 4",
            "rewritten",
        ),
    ];
    for (what, edit, words) in cases {
        let home = vault_with_entries(&format!("anchor-{}", what.replace(' ', "-")));
        let vault = home.join("vault.sqlite");
        tamper(&vault, edit);
        // The chain inside the vault is consistent again: only the anchor tells.
        let o = verify(&home);
        assert_eq!(o.status.code(), Some(6), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(words), "{what}: {}", stdout(&o));
    }
}

#[test]
fn a_forged_checkpoint_or_a_missing_one_is_detected() {
    let home = vault_with_entries("anchor-forged");
    let vault = home.join("vault.sqlite");
    let checkpoint = home.join("vault.sqlite.audit-checkpoint");
    tamper(&vault, "DELETE FROM audit WHERE id = 4");
    // Moving the checkpoint back needs the operator key: a MAC made without it fails.
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    c["id"] = 3.into();
    std::fs::write(&checkpoint, c.to_string()).unwrap();
    let o = verify(&home);
    assert_eq!(o.status.code(), Some(6), "{}", stdout(&o));
    assert!(stdout(&o).contains("MAC does not verify"), "{}", stdout(&o));
    std::fs::remove_file(&checkpoint).unwrap();
    let o = verify(&home);
    assert_eq!(o.status.code(), Some(6), "{}", stdout(&o));
    assert!(stdout(&o).contains("no checkpoint"), "{}", stdout(&o));
    // The operator key is not in the vault.
    let key = std::fs::read_to_string(home.join("operator.key")).unwrap();
    let bytes = std::fs::read(&vault).unwrap();
    assert!(!bytes.windows(key.trim().len()).any(|w| w == key.trim().as_bytes()));
}
