//! The vault: one SQLite file (WAL mode, mode 0600) holding the audit trail,
//! and the card backups once they land. Schema changes are migration files
//! (migrations/NNNN_*.sql) applied in one transaction at open; the schema
//! version is `PRAGMA user_version`. docs/FORMATS.md documents every table.

pub mod anchor;
mod audit;
mod backups;
mod storing;
mod wallet;

pub use audit::{AuditEntry, AuditEvent, AuditVerification};
pub use backups::{BackupRow, BackupState, NewBackup, StoredBackup};
pub use storing::StoringRecord;
pub use wallet::CertificateCopy;

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migrations in order; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_audit.sql"),
    include_str!("../../migrations/0002_backups.sql"),
    include_str!("../../migrations/0003_audit_mac.sql"),
    include_str!("../../migrations/0004_storing.sql"),
    include_str!("../../migrations/0005_wallet.sql"),
];

/// Maps SQLite errors of the vault at `path` to [`Error::Vault`]; usable while
/// a transaction borrows the connection.
pub(crate) fn vault_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |e| Error::vault(path, e)
}

/// An open vault.
pub struct Vault {
    conn: Connection,
    path: PathBuf,
    /// The audit trail's checkpoint outside the vault file.
    anchor: anchor::Anchor,
}

/// Insert or refresh a card in `cards`: ?1 card number, ?2 role, ?3 now.
pub(crate) const NOTE_CARD_SQL: &str = "INSERT INTO cards (card_number, role, first_seen, last_seen) \
     VALUES (?1, ?2, ?3, ?3) ON CONFLICT(card_number) DO UPDATE SET role = ?2, last_seen = ?3";

/// How long a statement waits for another connection's lock before it
/// fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite busy handler: called with the number of times it was called for
/// this lock; sleep 50 µs, doubling up to 1 ms, for [`BUSY_TIMEOUT`] in all.
fn busy_wait(attempt: i32) -> bool {
    let step = |n: i32| Duration::from_micros(50u64 << n.clamp(0, 4)).min(Duration::from_millis(1));
    // Time slept before this call: 50+100+200+400+800 µs, then 1 ms each.
    let slept = if attempt <= 5 {
        (0..attempt).map(step).sum()
    } else {
        Duration::from_micros(1550) + Duration::from_millis(attempt as u64 - 5)
    };
    if slept >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(step(attempt));
    true
}

impl Vault {
    /// Open (creating if needed) the vault at `path`, apply migrations.
    pub fn open(path: &Path) -> Result<Vault> {
        let err = |reason: String| Error::vault_msg(path, reason);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        let existed = path.exists();
        if !existed {
            // Create it 0600 before SQLite touches it.
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                // Another terminal created it a moment ago: fine.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let conn = Connection::open(path).map_err(|e| Error::vault(path, e))?;
        // Terminals side by side (batch stations) meet on the write lock for
        // the length of one commit: wait in short steps, so the lock is taken
        // soon after it is released, rather than SQLite's default 1, 2, 5,
        // 10 ms sleeps.
        conn.busy_handler(Some(busy_wait)).map_err(|e| Error::vault(path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| err(format!("not a vault (or damaged): {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err(format!("could not switch to WAL mode (got {mode})")));
        }
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;")
            .map_err(|e| Error::vault(path, e))?;
        let mut v = Vault {
            conn,
            path: path.to_path_buf(),
            anchor: anchor::Anchor::for_vault(path),
        };
        v.migrate()?;
        Ok(v)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> Error {
        Error::vault(&self.path, e)
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let verr = vault_error(&path);
        // IMMEDIATE: two terminals opening a new vault at once migrate it once.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(verr)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(verr)?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::vault_msg(
                &path,
                format!(
                    "schema version {version} is newer than this cardvault understands ({}); upgrade cardvault",
                    MIGRATIONS.len()
                ),
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)))
                .map_err(|e| Error::Vault {
                    path: path.clone(),
                    reason: format!("migration {}: {e}", i + 1),
                    source: Some(e),
                })?;
        }
        tx.commit().map_err(verr)
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Record that a card was seen with a role.
    pub fn note_card(&self, card_number: &str, role: &str) -> Result<()> {
        self.note_cards(&[(card_number, role)])
    }

    /// Record that cards were seen with their roles, in one transaction.
    pub fn note_cards(&self, cards: &[(&str, &str)]) -> Result<()> {
        let now = crate::util::now_utc();
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        for (card_number, role) in cards {
            tx.execute(NOTE_CARD_SQL, rusqlite::params![card_number, role, now])
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}
