//! The issuer's checks before it signs an other-card restore authorization
//! (`authorize-restore`): the request names the newest complete backup of
//! the source card in the issuer's vault, the source card was reported lost
//! (a `card revoke` record in the vault's audit trail), and the target
//! card's certificate verifies under the issuer root and names the target,
//! and the chain hash is that of the issuer's own chain to that backup.
//! Only then does [`super::backup::sign_authorization`] sign.

use super::backup::{RestoreRefusal, RestoreRequest};
use crate::error::Result;
use crate::vault::{AuditEvent, BackupState, Vault};
use openssl::nid::Nid;
use openssl::x509::X509;

/// The audit event of `card revoke`.
pub const CARD_REVOKED: &str = "card-revoked";

/// Record that `card` is lost or withdrawn (the issuer's `card revoke`).
pub fn revoke_card(vault: &mut Vault, card: &str, reason: &str) -> Result<i64> {
    vault.audit(AuditEvent {
        event: CARD_REVOKED,
        card,
        peer: None,
        result: "ok",
        details: serde_json::json!({ "reason": reason }),
    })
}

/// Whether the vault holds a revocation of `card`.
pub fn is_revoked(vault: &Vault, card: &str) -> Result<bool> {
    Ok(vault
        .audit_entries(Some(card))?
        .iter()
        .any(|e| e.event == CARD_REVOKED && e.card == card && e.result == "ok"))
}

/// Every check the issuer makes before signing `req`; `roots` are the
/// issuer roots the target card's certificate must verify under.
pub fn check_restore_request(vault: &Vault, req: &RestoreRequest, roots: &[X509]) -> Result<()> {
    let newest = vault
        .list_backups(Some(&req.source_card))?
        .into_iter()
        .filter(|b| b.state == BackupState::Completed && b.card_number == req.source_card)
        .max_by_key(|b| b.counter);
    match &newest {
        Some(b) if b.counter == req.counter => {
            // The whole chain must be in the vault, and be the one the
            // request names (the signature covers its hash).
            let chain = super::backup::chain_hash_of(vault, &vault.chain_to(b)?)?;
            if cardvault_proto::to_hex(&chain) != req.chain_hash.to_ascii_lowercase() {
                return Err(RestoreRefusal::ChainMismatch {
                    card: req.source_card.clone(),
                    counter: req.counter,
                }
                .into());
            }
        }
        _ => {
            return Err(RestoreRefusal::NotNewestComplete {
                card: req.source_card.clone(),
                counter: req.counter,
                newest: newest.map(|b| b.counter),
            }
            .into())
        }
    }
    if !is_revoked(vault, &req.source_card)? {
        return Err(RestoreRefusal::SourceNotRevoked(req.source_card.clone()).into());
    }
    check_target_certificate(req, roots)
}

/// The request's target certificate verifies under `roots` and names the
/// target card (the issuer's check, and a provider's before it agrees).
pub fn check_target_certificate(req: &RestoreRequest, roots: &[X509]) -> Result<()> {
    let bad = |why: String| RestoreRefusal::TargetCertificate {
        target: req.target_card.clone(),
        why,
    };
    let der = cardvault_proto::from_hex(&req.target_certificate)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("the request carries no certificate".into()))?;
    let cert = X509::from_der(&der).map_err(|_| bad("not a DER X.509 certificate".into()))?;
    cardvault_proto::cert::verify_chain(roots, std::slice::from_ref(&cert)).map_err(|e| bad(e.to_string()))?;
    let named = cert
        .subject_name()
        .entries_by_nid(Nid::SERIALNUMBER)
        .next()
        .and_then(|e| e.data().to_string().ok());
    if named.as_deref() != Some(req.target_card.as_str()) {
        return Err(bad(format!("it names card {}", named.unwrap_or_else(|| "(none)".into()))).into());
    }
    Ok(())
}
