//! Audit you can't rewrite: with write access to the vault file alone, an
//! attacker who drops the triggers and rewrites, deletes or cuts off audit
//! entries (rehashing the chain so that it is consistent again) is caught by
//! `audit --verify`, because the head is anchored in a checkpoint file
//! outside the vault, MACed with the operator key, and each entry carries
//! its own MAC under a key derived from it, which names the first entry
//! that was rewritten.

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
    // (attack, SQL, what the anchor says, the first entry whose MAC fails)
    let cases = [
        (
            "rewrite",
            "UPDATE audit SET card = '9999' WHERE id = 2",
            "rewritten",
            Some(2),
        ),
        (
            "delete",
            "DELETE FROM audit WHERE id = 2",
            "deleted or cut off",
            Some(2),
        ),
        ("truncate", "DELETE FROM audit WHERE id = 4", "deleted or cut off", None),
        (
            "rewrite the newest",
            "UPDATE audit SET details = '{}' WHERE id = 4",
            "rewritten",
            Some(4),
        ),
    ];
    for (what, edit, words, bad_mac) in cases {
        let home = vault_with_entries(&format!("anchor-{}", what.replace(' ', "-")));
        let vault = home.join("vault.sqlite");
        tamper(&vault, edit);
        // The chain inside the vault is consistent again: the anchor and the
        // entry MACs tell.
        let o = verify(&home);
        assert_eq!(o.status.code(), Some(6), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(words), "{what}: {}", stdout(&o));
        let v = json(&run(cv(&home).args(["--json", "audit", "--verify"])));
        assert_eq!(v["first_bad_mac"].as_i64(), bad_mac, "{what}: {v}");
    }
}

#[test]
fn an_entry_rewritten_and_rehashed_is_named_by_its_mac() {
    let home = vault_with_entries("anchor-entry-mac");
    let vault = home.join("vault.sqlite");
    // The attacker changes why card 2222 was revoked and makes the hash
    // chain consistent again; the MACs (and the checkpoint) are out of reach.
    tamper(
        &vault,
        "UPDATE audit SET details = '{\"reason\":\"found again\"}' WHERE id = 2",
    );
    let o = verify(&home);
    assert_eq!(o.status.code(), Some(6), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let first = out.lines().find(|l| l.contains("MAC")).unwrap_or_default();
    assert!(first.contains("entry 2 fails its MAC"), "{out}");
    // Entries 3 and 4 cover the rewritten entry's hash: they fail too, and
    // are counted, not named as the rewritten one.
    assert!(out.contains("2 later entries fail their MAC too"), "{out}");
    // The hash chain alone no longer tells (it was rehashed).
    assert!(!out.contains("hash mismatch") && !out.contains("chain broken"), "{out}");
    let v = json(&run(cv(&home).args(["--json", "audit", "--verify"])));
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad_mac"], 2);
    assert!(v["legacy_entries"].is_null(), "{v}");
}

#[test]
fn an_intact_trail_verifies_with_every_entry_authenticated() {
    let home = vault_with_entries("anchor-intact");
    let v = json(&run(cv(&home).args(["--json", "audit", "--verify"])));
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["first_bad_mac"].is_null() && v["legacy_entries"].is_null(), "{v}");
    // Every entry has a 32-byte MAC, and none of them is the operator key.
    let c = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
    let macs: Vec<Option<Vec<u8>>> = c
        .prepare("SELECT mac FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(macs.len(), 4);
    assert!(macs.iter().all(|m| m.as_ref().is_some_and(|m| m.len() == 32)));
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
