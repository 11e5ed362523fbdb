//! Copies of the electronic safe's registration certificates (SPEC 3.3):
//! what the vault keeps so that a deposited item can be withdrawn when the
//! card that deposited it is lost.

use super::Vault;
use crate::error::Result;
use rusqlite::params;
use serde::Serialize;

/// One registration certificate the vault keeps.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateCopy {
    pub card_number: String,
    /// Hex, the safe's id.
    pub safe_id: String,
    pub safe_counter: u64,
    /// Where the safe was reached (a directory or an http:// address).
    pub safe_address: String,
    /// Hex.
    pub item_id: String,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub amount: Option<u32>,
    /// Hex of the certificate (proto::safe::RegistrationCertificate).
    pub certificate: String,
    pub deposited_at: String,
    pub withdrawn_at: Option<String>,
    pub withdrawn_to: Option<String>,
}

impl Vault {
    /// Keep a registration certificate (once: the same one again is a no-op).
    pub fn record_wallet_certificate(&mut self, c: &CertificateCopy) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO wallet_certificates (card_number, safe_id, safe_counter, safe_address, item_id,
                    kind, name, amount, certificate, deposited_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(safe_id, safe_counter) DO NOTHING",
                params![
                    c.card_number,
                    c.safe_id,
                    c.safe_counter as i64,
                    c.safe_address,
                    c.item_id,
                    c.kind,
                    c.name,
                    c.amount,
                    c.certificate,
                    crate::util::now_utc(),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Mark a certificate's item withdrawn (onto card `to`).
    pub fn mark_wallet_withdrawn(&mut self, safe_id: &str, counter: u64, to: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE wallet_certificates SET withdrawn_at = ?1, withdrawn_to = ?2
                 WHERE safe_id = ?3 AND safe_counter = ?4 AND withdrawn_at IS NULL",
                params![crate::util::now_utc(), to, safe_id, counter as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The certificates kept, oldest first; of one card when `card` is given.
    pub fn wallet_certificates(&self, card: Option<&str>) -> Result<Vec<CertificateCopy>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT card_number, safe_id, safe_counter, safe_address, item_id, kind, name, amount,
                        certificate, deposited_at, withdrawn_at, withdrawn_to
                 FROM wallet_certificates WHERE ?1 IS NULL OR card_number = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([card], |r| {
                Ok(CertificateCopy {
                    card_number: r.get(0)?,
                    safe_id: r.get(1)?,
                    safe_counter: r.get::<_, i64>(2)? as u64,
                    safe_address: r.get(3)?,
                    item_id: r.get(4)?,
                    kind: r.get(5)?,
                    name: r.get(6)?,
                    amount: r.get(7)?,
                    certificate: r.get(8)?,
                    deposited_at: r.get(9)?,
                    withdrawn_at: r.get(10)?,
                    withdrawn_to: r.get(11)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }
}
