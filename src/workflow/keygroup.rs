//! The key group's life after issuance: rotating it (reset), releasing a
//! main card's duplicate, destroying an imported key on a backup card, and
//! the key-service variant's main key. Each is a few card commands and one
//! audit entry; the CLI reads the secrets and files before calling these.

use crate::card::{CardClient, IssuerAuth};
use crate::error::{Error, Result};
use crate::vault::{AuditEvent, Vault};
use cardvault_proto::takeout;

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
/// (SCP11a operator), then RELEASE DUPLICATE with the backup card's signed
/// DESTROY KEY receipt and its signing certificate once a take-out has left
/// the card. A receipt for another main card is refused before the card is
/// asked. Returns the card number.
pub fn release(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    issuer: &IssuerAuth,
    proof: Option<&DestroyReceipt>,
) -> Result<String> {
    let number = card.card_number()?;
    if let Some(p) = proof.filter(|p| p.source_card != number) {
        return Err(Error::Refused(format!(
            "the receipt is for main card {}'s key, this is card {number}; nothing changed",
            p.source_card
        )));
    }
    card.issuer_authenticate(issuer, &number)?;
    card.release_duplicate(proof.map(|p| (&p.receipt, &p.certificate[..])))?;
    let details = match proof {
        Some(p) => serde_json::json!({ "backup_card": p.backup_card, "counter": p.receipt.counter }),
        None => serde_json::json!({}),
    };
    audit(vault, "duplicate-released", &number, details)?;
    Ok(number)
}

/// A backup card's proof that it destroyed a main card's key: what DESTROY
/// KEY answered, signed by the backup card's signing key, and that key's
/// certificate (GET DATA `DF35`), for the main card's RELEASE DUPLICATE.
#[derive(Debug, Clone)]
pub struct DestroyReceipt {
    /// The backup card that destroyed its copy.
    pub backup_card: String,
    /// The main card whose key it destroyed.
    pub source_card: String,
    /// Counter (4) ‖ signature (64).
    pub receipt: takeout::DestroyReceipt,
    /// The backup card's signing key certificate (DER).
    pub certificate: Vec<u8>,
}

/// On a backup card, under the PIN: destroy the key imported from `source`
/// (take-outs up to `counter`) and return the signed receipt with the
/// card's signing certificate (read first: a card that cannot prove the
/// destruction is not asked to destroy). The receipt is checked against the
/// certificate's key and the group's check value (GET DATA `DF11`) before
/// it is returned; whether the certificate is from the issuer is for the
/// main card to decide.
pub fn destroy(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    pin: &[u8],
    source: &str,
    counter: u32,
) -> Result<DestroyReceipt> {
    card.verify_pin(pin)?;
    let number = card.card_number()?;
    let certificate = card.storing_certificate()?.ok_or_else(|| {
        Error::Refused(format!(
            "card {number} has no signing key certificate (GET DATA DF35), so it cannot sign a destroy receipt; \
             nothing was destroyed"
        ))
    })?;
    let receipt = card.destroy_key(source, counter)?;
    // The card is untrusted: the receipt must be its signature, under the
    // certificate it presented, over this destruction, or the file would
    // release nothing.
    let kcv = card.key_group_kcv()?.unwrap_or_default();
    let msg = takeout::destroy_message(source, &number, counter, &kcv);
    let signed = cardvault_proto::storing::card_signing_key_unchecked(&certificate)
        .filter(|k| k.card_number == number)
        .is_some_and(|k| {
            cardvault_proto::crypto::verify_p256(&k.public_key, &msg, &receipt.signature).unwrap_or(false)
        });
    if !signed {
        return Err(Error::Malformed {
            command: "DESTROY KEY",
            reason: format!(
                "the receipt is not card {number}'s signature under its certificate (DF35) over this destruction"
            ),
        });
    }
    audit(
        vault,
        "duplicate-key-destroyed",
        &number,
        serde_json::json!({ "source_card": source, "counter": counter }),
    )?;
    Ok(DestroyReceipt {
        backup_card: number,
        source_card: source.to_string(),
        receipt,
        certificate,
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
