//! The audit trail: append-only (triggers refuse UPDATE and DELETE) and hash
//! chained, so an edited, removed or reordered row shows up in verification.
//! It records what happened to which card; it never holds key material.
//!
//! Each entry also carries a MAC under a key derived from the operator key
//! ([`super::anchor::Anchor::entry_key`]), which is not in the vault: whoever
//! can write the vault file alone can rehash the chain, but cannot make an
//! edited entry's MAC verify, so `audit --verify` names the first entry
//! that was rewritten. Entries from before the MACs (schema version < 3)
//! are "legacy": accepted, and reported, only before the first entry with a
//! MAC and before the checkpoint's `macs_from`; never after them.

use super::Vault;
use crate::error::Result;
use rusqlite::OptionalExtension;
use serde::Serialize;

/// What is being recorded.
pub struct AuditEvent<'a> {
    pub event: &'a str,
    pub card: &'a str,
    pub peer: Option<&'a str>,
    pub result: &'a str,
    pub details: serde_json::Value,
}

/// One row of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub event: String,
    pub card: String,
    pub peer: Option<String>,
    pub result: String,
    pub details: serde_json::Value,
}

/// An entry's canonical bytes: prev_hash || id || each field as u32 length +
/// bytes. Fields: at, event, card, peer (NUL when absent), result, details.
/// The hash is SHA-256 of them, the MAC HMAC-SHA256 under the entry key.
fn entry_bytes(prev: &[u8], id: i64, fields: [&str; 6]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(prev);
    buf.extend_from_slice(&id.to_be_bytes());
    for f in fields {
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(f.as_bytes());
    }
    buf
}

fn entry_mac(key: &[u8; 32], bytes: &[u8]) -> Result<[u8; 32]> {
    cardvault_proto::crypto::hmac_sha256(key, &[bytes]).map_err(|e| crate::error::Error::Data(e.to_string()))
}

/// Why an entry's MAC does not verify.
const REWRITTEN: &str =
    "fails its MAC under the operator key (rewritten, forged or renumbered by someone without the key)";

/// What `audit --verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditVerification {
    /// Every problem, one line each; empty when the trail is intact.
    pub problems: Vec<String>,
    /// The first entry whose MAC does not verify, or that lost its MAC.
    pub first_bad_mac: Option<i64>,
    /// Entries written before entry MACs existed (first, last): hash
    /// chained and anchored, not authenticated one by one.
    pub legacy: Option<(i64, i64)>,
}

impl Vault {
    /// Append one audit entry (its own transaction).
    pub fn audit(&mut self, e: AuditEvent<'_>) -> Result<i64> {
        self.audit_noting(e, None)
    }

    /// Append one audit entry and, in the same transaction (one commit),
    /// record that the card `(card_number, role)` was seen, as
    /// [`Vault::note_card`] does.
    pub fn audit_noting(&mut self, e: AuditEvent<'_>, card: Option<(&str, &str)>) -> Result<i64> {
        let at = crate::util::now_utc();
        let details = e.details.to_string();
        let path = self.path.clone();
        let verr = super::vault_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(verr)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(verr)?;
        let (id, prev) = match last {
            Some((id, h)) => (id + 1, h),
            None => (1, vec![0u8; 32]),
        };
        let bytes = entry_bytes(
            &prev,
            id,
            [&at, e.event, e.card, e.peer.unwrap_or("\u{0}"), e.result, &details],
        );
        let hash = openssl::sha::sha256(&bytes);
        let entry_key = self.anchor.entry_key(true)?;
        let mac = entry_mac(&entry_key, &bytes)?;
        // The first entry with a MAC: as the checkpoint recorded it, else
        // as the vault shows it, else this one.
        let macs_from = match self.anchor.read() {
            Ok(Some(c)) if c.macs_from.is_some() => c.macs_from,
            _ => tx
                .query_row("SELECT min(id) FROM audit WHERE mac IS NOT NULL", [], |r| r.get(0))
                .map_err(verr)?,
        }
        .unwrap_or(id);
        tx.execute(
            "INSERT INTO audit (id, at, event, card, peer, result, details, prev_hash, hash, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                id,
                at,
                e.event,
                e.card,
                e.peer,
                e.result,
                details,
                prev,
                hash.to_vec(),
                mac.to_vec()
            ],
        )
        .map_err(verr)?;
        if let Some((number, role)) = card {
            tx.execute(super::NOTE_CARD_SQL, rusqlite::params![number, role, at])
                .map_err(verr)?;
        }
        // The checkpoint moves while this transaction holds the vault's write
        // lock, so terminals side by side advance it in entry order. A crash
        // before the commit leaves it one entry ahead: `audit --verify` then
        // reports a truncation (an alarm, never silence).
        self.anchor.write(id, &hash, macs_from)?;
        if let Err(err) = tx.commit() {
            if id > 1 {
                let _ = self.anchor.write(id - 1, &prev, macs_from);
            }
            return Err(verr(err));
        }
        Ok(id)
    }

    /// Audit entries, oldest first; `card` filters on either side.
    pub fn audit_entries(&self, card: Option<&str>) -> Result<Vec<AuditEntry>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, at, event, card, peer, result, details FROM audit
                 WHERE ?1 IS NULL OR card = ?1 OR peer = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([card], |r| {
                let details: String = r.get(6)?;
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    event: r.get(2)?,
                    card: r.get(3)?,
                    peer: r.get(4)?,
                    result: r.get(5)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Check the hash chain and its checkpoint outside the vault (see
    /// [`super::anchor`]); returns a description of every problem found.
    pub fn verify_audit(&self) -> Result<Vec<String>> {
        Ok(self.verify_audit_report()?.problems)
    }

    /// Check the hash chain, each entry's MAC and the checkpoint outside the
    /// vault.
    pub fn verify_audit_report(&self) -> Result<AuditVerification> {
        let mut st = self
            .conn
            .prepare("SELECT id, at, event, card, peer, result, details, prev_hash, hash, mac FROM audit ORDER BY id")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let checkpoint = self.anchor.read();
        let macs_from = checkpoint
            .as_ref()
            .ok()
            .and_then(|c| c.as_ref())
            .and_then(|c| c.macs_from);
        let entry_key = self.anchor.entry_key(false);
        let mut report = AuditVerification::default();
        let mut problems = Vec::new();
        let mut prev = vec![0u8; 32];
        let mut expected_id = 1i64;
        let mut heads: Vec<(i64, Vec<u8>)> = Vec::new();
        // MAC failures after the first one (reported as a count).
        let mut later_bad_macs = 0usize;
        let mut seen_mac = false;
        let mut key_problem = None;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let get = |i| r.get::<_, String>(i);
            let (at, event, card, result, details) = (get(1), get(2), get(3), get(5), get(6));
            let peer: Option<String> = r.get(4).map_err(|e| self.err(e))?;
            let prev_hash: Vec<u8> = r.get(7).map_err(|e| self.err(e))?;
            let hash: Vec<u8> = r.get(8).map_err(|e| self.err(e))?;
            let mac: Option<Vec<u8>> = r.get(9).unwrap_or(Some(Vec::new()));
            if id != expected_id {
                problems.push(format!("audit: entry {expected_id} is missing (next is {id})"));
            }
            if prev_hash != prev {
                problems.push(format!(
                    "audit: entry {id} does not follow the entry before it (chain broken)"
                ));
            }
            let bytes = match (at, event, card, result, details) {
                (Ok(at), Ok(event), Ok(card), Ok(result), Ok(details)) => Some(entry_bytes(
                    &prev_hash,
                    id,
                    [
                        &at,
                        &event,
                        &card,
                        peer.as_deref().unwrap_or("\u{0}"),
                        &result,
                        &details,
                    ],
                )),
                _ => None,
            };
            match &bytes {
                Some(b) if openssl::sha::sha256(b).as_slice() != hash.as_slice() => {
                    problems.push(format!("audit: entry {id} was altered (hash mismatch)"))
                }
                Some(_) => {}
                None => problems.push(format!("audit: entry {id} has fields of the wrong type")),
            }
            // The entry's MAC: present and verifying, or legacy (no MAC)
            // only before the first entry with one.
            let mac_failure = match (&mac, &bytes) {
                (None, _) if seen_mac || macs_from.is_some_and(|m| id >= m) => Some(
                    "carries no MAC, but an entry before it or the checkpoint has MACs from there on \
                     (its MAC was removed)",
                ),
                (None, _) => {
                    let (first, _) = report.legacy.unwrap_or((id, id));
                    report.legacy = Some((first, id));
                    None
                }
                (Some(m), b) => {
                    seen_mac = true;
                    match (&entry_key, b) {
                        (Err(e), _) => {
                            key_problem.get_or_insert_with(|| e.to_string());
                            None
                        }
                        (Ok(k), Some(b)) => {
                            let expected = entry_mac(k, b)?;
                            (m.len() != expected.len() || !openssl::memcmp::eq(m, &expected)).then_some(REWRITTEN)
                        }
                        (Ok(_), None) => Some(REWRITTEN),
                    }
                }
            };
            if let Some(why) = mac_failure {
                match report.first_bad_mac {
                    None => {
                        report.first_bad_mac = Some(id);
                        problems.push(format!("audit: entry {id} {why}"));
                    }
                    Some(_) => later_bad_macs += 1,
                }
            }
            heads.push((id, hash.clone()));
            prev = hash;
            expected_id = id + 1;
        }
        if later_bad_macs > 0 {
            problems.push(if later_bad_macs == 1 {
                "audit: 1 later entry fails its MAC too (each MAC covers the entry before it)".to_string()
            } else {
                format!(
                    "audit: {later_bad_macs} later entries fail their MAC too (each MAC covers the entry before it)"
                )
            });
        }
        if let Some(e) = key_problem {
            problems.push(format!("audit: entry MACs not checked: {e}"));
        }
        let name = self.anchor.checkpoint_path().display().to_string();
        match (checkpoint, heads.last()) {
            (Err(e), _) => problems.push(format!("audit: {e}")),
            (Ok(None), None) => {}
            (Ok(None), Some((last, _))) => problems.push(format!(
                "audit: no checkpoint ({name}) anchors the {last} entries; they may have been rewritten"
            )),
            (Ok(Some(c)), last) => {
                let last_id = last.map_or(0, |(i, _)| *i);
                match heads.iter().find(|(i, _)| *i == c.id) {
                    None => problems.push(format!(
                        "audit: the checkpoint names entry {} but the trail ends at {last_id} (entries deleted or cut off)",
                        c.id
                    )),
                    Some((_, h)) if *h != c.head => problems.push(format!(
                        "audit: entry {} is not the one the checkpoint recorded (the trail was rewritten)",
                        c.id
                    )),
                    Some(_) if last_id > c.id => problems.push(format!(
                        "audit: entries {} to {last_id} come after the checkpoint (entry {}) and are not anchored",
                        c.id + 1,
                        c.id
                    )),
                    Some(_) => {}
                }
            }
        }
        report.problems = problems;
        Ok(report)
    }
}
