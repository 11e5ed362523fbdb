//! Storing records: every store and delete a card accepted under a storing
//! authorization (SPEC 3.4), append-only. What an application holds is its
//! latest record.

use super::Vault;
use crate::error::Result;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// One store or delete the card accepted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoringRecord {
    pub id: i64,
    pub card_number: String,
    pub application: u8,
    /// `store` or `delete`.
    pub operation: String,
    pub data_size: u32,
    /// SHA-256 of the data, hex.
    pub data_hash: String,
    pub data_cert_id: Option<String>,
    /// SHA-256 (hex) of the card's request, of the SAR and of the SA.
    pub request_id: String,
    pub sar_id: String,
    pub sa_id: Option<String>,
    /// `issuer` or `provider`: who countersigned first.
    pub first_party: String,
    /// The issuer's and the provider's names (CN of their IRC / DPR).
    pub issuer: Option<String>,
    pub provider: Option<String>,
    pub applied_at: String,
}

const COLUMNS: &str = "id, card_number, application, operation, data_size, data_hash, data_cert_id, \
                       request_id, sar_id, sa_id, first_party, issuer, provider, applied_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoringRecord> {
    Ok(StoringRecord {
        id: r.get(0)?,
        card_number: r.get(1)?,
        application: r.get(2)?,
        operation: r.get(3)?,
        data_size: r.get(4)?,
        data_hash: r.get(5)?,
        data_cert_id: r.get(6)?,
        request_id: r.get(7)?,
        sar_id: r.get(8)?,
        sa_id: r.get(9)?,
        first_party: r.get(10)?,
        issuer: r.get(11)?,
        provider: r.get(12)?,
        applied_at: r.get(13)?,
    })
}

impl Vault {
    /// Record a store or delete the card accepted; `id` and `applied_at` of
    /// `rec` are ignored (the vault sets them). A request recorded before is
    /// not recorded twice.
    pub fn record_storing(&mut self, rec: &StoringRecord) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO storing (card_number, application, operation, data_size, data_hash, data_cert_id,
                    request_id, sar_id, sa_id, first_party, issuer, provider, applied_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT(request_id) DO NOTHING",
                params![
                    rec.card_number,
                    rec.application,
                    rec.operation,
                    rec.data_size,
                    rec.data_hash,
                    rec.data_cert_id,
                    rec.request_id,
                    rec.sar_id,
                    rec.sa_id,
                    rec.first_party,
                    rec.issuer,
                    rec.provider,
                    crate::util::now_utc(),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Storing records, oldest first; of one card when `card` is given.
    pub fn list_storing(&self, card: Option<&str>) -> Result<Vec<StoringRecord>> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM storing WHERE ?1 IS NULL OR card_number = ?1 ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([card], row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// The latest record of one application of one card.
    pub fn latest_storing(&self, card: &str, application: u8) -> Result<Option<StoringRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM storing WHERE card_number = ?1 AND application = ?2 ORDER BY id DESC LIMIT 1"
                ),
                params![card, application],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
