//! Backups in the vault: one row per backup (the card's header, wrapped
//! card-unique key and encrypted control information, the trailer), its
//! encrypted records, and the restores made from it. The vault never holds
//! plaintext card data or keys: everything here is as the card sealed it.

use super::Vault;
use crate::error::{Error, Result};
use cardvault_proto::backup::BackupKind;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// A backup as read from the card, ready to store.
pub struct NewBackup<'a> {
    pub card_number: &'a str,
    pub header: &'a [u8],
    pub records: &'a [Vec<u8>],
    pub trailer: &'a [u8],
}

/// Listing row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackupRow {
    pub id: i64,
    pub card_number: String,
    pub counter: u32,
    pub created_at: String,
    #[serde(serialize_with = "crate::util::serialize_display")]
    pub kind: BackupKind,
    pub base_counter: u32,
    pub pages: u32,
    pub page_size: u32,
    pub page_count: u32,
    pub record_count: u32,
    pub state: BackupState,
}

/// Where a stored backup stands: stored in the vault, or also acknowledged
/// by the card (BACKUP COMPLETE answered 9000), after which the card has
/// cleared its change flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    Stored,
    Completed,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Stored => "stored",
            BackupState::Completed => "completed",
        }
    }
}

impl std::fmt::Display for BackupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for BackupState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<BackupState, String> {
        match s {
            "stored" => Ok(BackupState::Stored),
            "completed" => Ok(BackupState::Completed),
            other => Err(format!("unknown backup state '{other}'")),
        }
    }
}

/// A TEXT column that holds one of an enum's strings.
fn parsed<T: std::str::FromStr<Err = String>>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into()))
}

/// A whole backup, for restoring.
pub struct StoredBackup {
    pub row: BackupRow,
    pub header: Vec<u8>,
    pub records: Vec<Vec<u8>>,
    pub trailer: Vec<u8>,
}

/// SHA-256 over header, records and trailer, each length-prefixed.
pub fn backup_digest(header: &[u8], records: &[Vec<u8>], trailer: &[u8]) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    for part in std::iter::once(header)
        .chain(records.iter().map(|r| r.as_slice()))
        .chain(std::iter::once(trailer))
    {
        h.update(&(part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finish()
}

const ROW_COLUMNS: &str =
    "id, card_number, counter, created_at, kind, base_counter, pages, page_size, page_count, record_count, state";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        card_number: r.get(1)?,
        counter: r.get(2)?,
        created_at: r.get(3)?,
        kind: parsed(r, 4)?,
        base_counter: r.get(5)?,
        pages: r.get(6)?,
        page_size: r.get(7)?,
        page_count: r.get(8)?,
        record_count: r.get(9)?,
        state: parsed(r, 10)?,
    })
}

impl Vault {
    /// Store a whole backup in one transaction (state `stored`). Returns its id.
    pub fn store_backup(&mut self, b: &NewBackup<'_>) -> Result<i64> {
        let h = cardvault_proto::backup::parse_header(b.header)
            .ok_or_else(|| Error::Data("the card's backup header does not parse".into()))?;
        if h.card_number != b.card_number {
            return Err(Error::Data("the backup header names another card".into()));
        }
        let digest = backup_digest(b.header, b.records, b.trailer);
        let now = crate::util::now_utc();
        let path = self.path.clone();
        let verr = super::vault_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(verr)?;
        tx.execute(
            "INSERT INTO backups (card_number, counter, created_at, kind, base_counter, page_size, page_count, pages,
                                  header, wrapped_key, control_info, trailer, record_count, digest, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'stored')",
            params![
                b.card_number,
                h.counter,
                now,
                h.backup_kind().as_str(),
                h.base,
                h.page_size,
                h.page_count,
                h.pages,
                b.header,
                h.wrapped_unique_key,
                h.control,
                b.trailer,
                b.records.len() as u32,
                digest.to_vec(),
            ],
        )
        .map_err(verr)?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx
                .prepare("INSERT INTO records (backup_id, idx, data) VALUES (?1, ?2, ?3)")
                .map_err(verr)?;
            for (i, r) in b.records.iter().enumerate() {
                st.execute(params![id, i as u32, r]).map_err(verr)?;
            }
        }
        tx.commit().map_err(verr)?;
        Ok(id)
    }

    /// Mark a backup as acknowledged by the card (BACKUP COMPLETE answered 9000).
    pub fn mark_completed(&self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE backups SET state = 'completed' WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Backups of one card (an index search) or of all cards.
    pub fn list_backups(&self, card: Option<&str>) -> Result<Vec<BackupRow>> {
        let rows = match card {
            Some(c) => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM backups WHERE card_number = ?1 ORDER BY counter"
                    ))
                    .map_err(|e| self.err(e))?;
                let rows = st.query_map([c], row).map_err(|e| self.err(e))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            }
            None => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM backups ORDER BY card_number, counter"
                    ))
                    .map_err(|e| self.err(e))?;
                let rows = st.query_map([], row).map_err(|e| self.err(e))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        rows.map_err(|e| self.err(e))
    }

    pub fn backup_row(&self, id: i64) -> Result<Option<BackupRow>> {
        self.conn
            .query_row(&format!("SELECT {ROW_COLUMNS} FROM backups WHERE id = ?1"), [id], row)
            .optional()
            .map_err(|e| self.err(e))
    }

    fn backup_by_counter(&self, card: &str, counter: u32) -> Result<Option<BackupRow>> {
        self.conn
            .query_row(
                &format!("SELECT {ROW_COLUMNS} FROM backups WHERE card_number = ?1 AND counter = ?2"),
                params![card, counter],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Load a whole backup, checking its record count and digest.
    /// The raw header of backup `id` (without its records).
    pub fn backup_header(&self, id: i64) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT header FROM backups WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub fn load_backup(&self, id: i64) -> Result<StoredBackup> {
        let row = self
            .backup_row(id)?
            .ok_or_else(|| Error::Usage(format!("no backup {id} in the vault")))?;
        let (header, trailer, digest): (Vec<u8>, Vec<u8>, Vec<u8>) = self
            .conn
            .query_row("SELECT header, trailer, digest FROM backups WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare("SELECT idx, data FROM records WHERE backup_id = ?1 ORDER BY idx")
            .map_err(|e| self.err(e))?;
        let recs = st
            .query_map([id], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut records = Vec::with_capacity(recs.len());
        for (i, (idx, data)) in recs.into_iter().enumerate() {
            if idx as usize != i {
                return Err(Error::Data(format!(
                    "backup {id}: record {i} is missing from the vault"
                )));
            }
            records.push(data);
        }
        if records.len() != row.record_count as usize {
            return Err(Error::Data(format!(
                "backup {id}: the vault holds {} of its {} records",
                records.len(),
                row.record_count
            )));
        }
        if backup_digest(&header, &records, &trailer).as_slice() != digest.as_slice() {
            return Err(Error::Data(format!(
                "backup {id}: its blobs do not match the stored digest (altered)"
            )));
        }
        self.check_columns(&row, &header, &trailer)?;
        Ok(StoredBackup {
            row,
            header,
            records,
            trailer,
        })
    }

    /// The listing columns must say what the card's own header says.
    fn check_columns(&self, b: &BackupRow, header: &[u8], trailer: &[u8]) -> Result<()> {
        let label = format!("backup {} (card {}, #{})", b.id, b.card_number, b.counter);
        let h = cardvault_proto::backup::parse_header(header)
            .ok_or_else(|| Error::Data(format!("{label}: header does not parse")))?;
        if h.counter != b.counter
            || h.card_number != b.card_number
            || h.backup_kind() != b.kind
            || h.base != b.base_counter
            || h.pages as u32 != b.pages
            || h.page_size as u32 != b.page_size
            || h.page_count as u32 != b.page_count
        {
            return Err(Error::Data(format!("{label}: columns disagree with the card's header")));
        }
        let (wk, ci): (Vec<u8>, Vec<u8>) = self
            .conn
            .query_row(
                "SELECT wrapped_key, control_info FROM backups WHERE id = ?1",
                [b.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        if wk != h.wrapped_unique_key || ci != h.control {
            return Err(Error::Data(format!(
                "{label}: wrapped key or control information altered"
            )));
        }
        if cardvault_proto::backup::Trailer::parse(trailer).map(|t| t.record_count) != Some(b.record_count) {
            return Err(Error::Data(format!("{label}: trailer does not match the record count")));
        }
        Ok(())
    }

    /// The chain that restores a card to backup `last`: the full backup it
    /// stands on, then every backup between, in counter order.
    pub fn chain_to(&self, last: &BackupRow) -> Result<Vec<BackupRow>> {
        let mut chain = vec![last.clone()];
        let mut cur = last.clone();
        while cur.kind == BackupKind::Differential {
            let base = self
                .backup_by_counter(&cur.card_number, cur.base_counter)?
                .ok_or_else(|| {
                    Error::Data(format!(
                        "backup {} (card {}, #{}) stands on #{}, which the vault does not have",
                        cur.id, cur.card_number, cur.counter, cur.base_counter
                    ))
                })?;
            cur = base;
            chain.push(cur.clone());
        }
        chain.reverse();
        Ok(chain)
    }

    /// The newest backup of a card (by counter), if any.
    pub fn latest_backup(&self, card: &str) -> Result<Option<BackupRow>> {
        self.conn
            .query_row(
                &format!("SELECT {ROW_COLUMNS} FROM backups WHERE card_number = ?1 ORDER BY counter DESC LIMIT 1"),
                [card],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn start_restore(&self, backup_id: i64, target: &str, mode: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO restores (backup_id, target_card, mode, started) VALUES (?1, ?2, ?3, ?4)",
                params![backup_id, target, mode, crate::util::now_utc()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_restore(&self, id: i64, result: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE restores SET finished = ?2, result = ?3 WHERE id = ?1",
                params![id, crate::util::now_utc(), result],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Check the whole vault; returns every problem found, in words.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let integrity: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if integrity != "ok" {
            problems.push(format!("structure: {integrity}"));
        }
        for b in self.list_backups(None)? {
            let label = format!("backup {} (card {}, #{})", b.id, b.card_number, b.counter);
            if let Err(e) = self.load_backup(b.id) {
                let msg = e.to_string();
                problems.push(if msg.starts_with("backup ") {
                    msg
                } else {
                    format!("{label}: {msg}")
                });
            }
            if b.kind == BackupKind::Differential && self.backup_by_counter(&b.card_number, b.base_counter)?.is_none() {
                problems.push(format!("{label}: its base #{} is missing", b.base_counter));
            }
        }
        let orphans: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM records WHERE backup_id NOT IN (SELECT id FROM backups)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if orphans > 0 {
            problems.push(format!("records: {orphans} record(s) belong to no backup"));
        }
        problems.extend(self.verify_audit()?);
        Ok(problems)
    }

    /// Copy backups (and their records) into a new vault file at `dest`.
    pub fn export(&self, dest: &std::path::Path, ids: &[i64]) -> Result<usize> {
        if dest.exists() {
            return Err(Error::Usage(format!("{} already exists", dest.display())));
        }
        let mut out = Vault::open(dest)?;
        let tx = out.conn.transaction().map_err(|e| Error::vault(dest, e))?;
        for id in ids {
            let b = self.load_backup(*id)?;
            let (created, state, wk, ci, digest): (String, String, Vec<u8>, Vec<u8>, Vec<u8>) = self
                .conn
                .query_row(
                    "SELECT created_at, state, wrapped_key, control_info, digest FROM backups WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .map_err(|e| self.err(e))?;
            copy_backup(&tx, &b, &created, &state, &wk, &ci, &digest).map_err(|e| Error::vault(dest, e))?;
        }
        tx.commit().map_err(|e| Error::vault(dest, e))?;
        Ok(ids.len())
    }

    /// Import every backup of the vault file `src` that this vault lacks.
    /// Returns (imported, already present). Nothing is imported if any backup
    /// in `src` fails its checks.
    pub fn import(&mut self, src: &std::path::Path) -> Result<(usize, usize)> {
        if !src.exists() {
            return Err(Error::Usage(format!("{} does not exist", src.display())));
        }
        let other = Vault::open(src)?;
        let problems: Vec<String> = other
            .verify()?
            .into_iter()
            .filter(|p| !p.starts_with("audit"))
            .collect();
        if !problems.is_empty() {
            return Err(Error::Data(format!(
                "{} fails verification: {}",
                src.display(),
                problems.join("; ")
            )));
        }
        let rows = other.list_backups(None)?;
        let path = self.path.clone();
        let verr = super::vault_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(verr)?;
        let (mut imported, mut present) = (0, 0);
        for r in rows {
            let exists: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT digest FROM backups WHERE card_number = ?1 AND counter = ?2",
                    params![r.card_number, r.counter],
                    |x| x.get(0),
                )
                .optional()
                .map_err(verr)?;
            let b = other.load_backup(r.id)?;
            let (created, state, wk, ci, digest): (String, String, Vec<u8>, Vec<u8>, Vec<u8>) = other
                .conn
                .query_row(
                    "SELECT created_at, state, wrapped_key, control_info, digest FROM backups WHERE id = ?1",
                    [r.id],
                    |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?)),
                )
                .map_err(|e| other.err(e))?;
            match exists {
                Some(d) if d == digest => present += 1,
                Some(_) => {
                    return Err(Error::Data(format!(
                        "card {} backup #{} differs between the two vaults; nothing imported",
                        r.card_number, r.counter
                    )))
                }
                None => {
                    copy_backup(&tx, &b, &created, &state, &wk, &ci, &digest).map_err(verr)?;
                    imported += 1;
                }
            }
        }
        tx.commit().map_err(verr)?;
        Ok((imported, present))
    }
}

fn copy_backup(
    tx: &rusqlite::Transaction<'_>,
    b: &StoredBackup,
    created: &str,
    state: &str,
    wk: &[u8],
    ci: &[u8],
    digest: &[u8],
) -> rusqlite::Result<()> {
    let r = &b.row;
    tx.execute(
        "INSERT INTO backups (card_number, counter, created_at, kind, base_counter, page_size, page_count, pages,
                              header, wrapped_key, control_info, trailer, record_count, digest, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            r.card_number,
            r.counter,
            created,
            r.kind.as_str(),
            r.base_counter,
            r.page_size,
            r.page_count,
            r.pages,
            b.header,
            wk,
            ci,
            b.trailer,
            r.record_count,
            digest,
            state
        ],
    )?;
    let id = tx.last_insert_rowid();
    let mut st = tx.prepare("INSERT INTO records (backup_id, idx, data) VALUES (?1, ?2, ?3)")?;
    for (i, rec) in b.records.iter().enumerate() {
        st.execute(params![id, i as u32, rec])?;
    }
    Ok(())
}
