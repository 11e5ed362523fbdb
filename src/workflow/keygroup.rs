//! The key group's life after issuance: rotating it (reset), releasing a
//! main card's duplicate, destroying an imported key on a backup card, and
//! the key-service variant's main key. Each is a few card commands and one
//! audit entry; the CLI reads the secrets and files before calling these.

use crate::card::{CardClient, IssuerAuth};
use crate::error::Result;
use crate::vault::{AuditEvent, Vault};

fn audit(vault: &mut Vault, event: &str, card: &str, details: serde_json::Value) -> Result<()> {
    vault
        .audit(AuditEvent {
            event,
            card,
            peer: None,
            result: "ok",
            details,
        })
        .map(|_| ())
}

/// RESET KEY GROUP under the holder's PIN: elements 2..n and the main keys
/// are destroyed (the holder's way to rotate the main key). Returns the card
/// number.
pub fn reset(card: &mut CardClient<'_>, vault: &mut Vault, pin: &[u8]) -> Result<String> {
    card.verify_pin(pin)?;
    card.reset_key_group()?;
    let number = card.card_number()?;
    audit(vault, "key-group-reset", &number, serde_json::json!({}))?;
    Ok(number)
}

/// The issuer releases a main card's duplicate target: issuer session
/// (SCP11a operator), then RELEASE DUPLICATE with the backup
/// card's DESTROY KEY receipt once a take-out has left the card. Returns the
/// card number.
pub fn release(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    issuer: &IssuerAuth,
    receipt: Option<&[u8]>,
) -> Result<String> {
    let number = card.card_number()?;
    card.issuer_authenticate(issuer, &number)?;
    card.release_duplicate(receipt)?;
    audit(vault, "duplicate-released", &number, serde_json::json!({}))?;
    Ok(number)
}

/// What DESTROY KEY answered on a backup card.
#[derive(Debug, Clone)]
pub struct DestroyReceipt {
    /// The backup card that destroyed its copy.
    pub backup_card: String,
    /// Counter (4) ‖ MAC (32), for the main card's RELEASE DUPLICATE.
    pub receipt: Vec<u8>,
}

/// On a backup card, under the PIN: destroy the key imported from `source`
/// (take-outs up to `counter`) and return the receipt.
pub fn destroy(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    pin: &[u8],
    source: &str,
    counter: u32,
) -> Result<DestroyReceipt> {
    card.verify_pin(pin)?;
    let number = card.card_number()?;
    let receipt = card.destroy_key(source, counter)?;
    audit(
        vault,
        "duplicate-key-destroyed",
        &number,
        serde_json::json!({ "source_card": source, "counter": counter }),
    )?;
    Ok(DestroyReceipt {
        backup_card: number,
        receipt,
    })
}

/// Key-service variant: set a main key made outside the card, sent wrapped
/// to the card's transport key, in the issuer's SCP11a session (which
/// authenticates the card and its transport key). Returns the card number
/// and the card's new encryption (public) key.
pub fn set_service_key(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    issuer: &IssuerAuth,
    private: &[u8],
) -> Result<(String, Vec<u8>)> {
    let number = card.card_number()?;
    card.issuer_authenticate(issuer, &number)?;
    let public = card.set_service_key(&number, private)?;
    audit(vault, "key-service-set", &number, serde_json::json!({}))?;
    Ok((number, public))
}
