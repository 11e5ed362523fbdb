//! What a restore would do, and which of the card's checks it would fail,
//! found on the terminal before any record is sent (`restore --dry-run`,
//! and the checks `run_restore` makes before RESTORE).
//!
//! The card stays the authority: these checks predict its refusals from
//! what the terminal can see (the vault, the card's public data objects and
//! certificate, the authorization) so that a clerk reads which check failed
//! instead of a bare `6982`. Nothing here changes the card or the vault.

use super::backup::{chain_hash_of, leaf_certificate_sha256, RestoreAuthorization, RestoreMode, RestoreRefusal};
use crate::card::CardClient;
use crate::error::Result;
use crate::vault::{BackupRow, Vault};
use cardvault_proto::backup as bk;
use serde::Serialize;

/// The audit detail of a restore that names the challenge of the
/// authorization it sent (so a reused authorization is recognized).
pub const CHALLENGE_DETAIL: &str = "challenge";

/// Every check of an other-card restore authorization the terminal can make:
/// the target card, its certificate, the backup and chain, the challenge not
/// already sent, the signer's certificate under the card's issuer root and
/// the signature. The first failure is returned, named.
pub fn check_authorization(
    card: &mut CardClient<'_>,
    vault: &Vault,
    target: &str,
    chain: &[BackupRow],
    auth: &RestoreAuthorization,
) -> Result<()> {
    check_authorization_with(card, &mut super::CardFacts::none(), vault, target, chain, auth)
}

/// [`check_authorization`] with what the job already established on the
/// card (the certificate store its secure session verified).
pub fn check_authorization_with(
    card: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    vault: &Vault,
    target: &str,
    chain: &[BackupRow],
    auth: &RestoreAuthorization,
) -> Result<()> {
    let r = &auth.request;
    let last = chain.last().ok_or(RestoreRefusal::NothingToRestore)?;
    let source = &chain[0].card_number;
    if r.target_card != target || &r.source_card != source || r.counter != last.counter {
        return Err(RestoreRefusal::AuthorizationMismatch {
            auth_source: r.source_card.clone(),
            auth_counter: r.counter,
            auth_target: r.target_card.clone(),
            source_card: source.clone(),
            counter: last.counter,
            target: target.to_string(),
        }
        .into());
    }
    // One read of the card's certificate store: its registration
    // certificate (the last) and the issuer root it holds (self-signed).
    let store = facts.certificates(card)?;
    let own = store
        .last()
        .and_then(|c| c.to_der().ok())
        .map(|d| cardvault_proto::crypto::sha256(&d))
        .ok_or_else(|| RestoreRefusal::TargetCertificate {
            target: target.to_string(),
            why: "the card has no certificate".into(),
        })?;
    if leaf_certificate_sha256(&r.target_certificate) != Some(own) {
        return Err(RestoreRefusal::OtherCertificate {
            target: target.to_string(),
        }
        .into());
    }
    let chain_hash = chain_hash_of(vault, chain)?;
    if cardvault_proto::to_hex(&chain_hash) != r.chain_hash.to_ascii_lowercase() {
        return Err(RestoreRefusal::AuthorizedChainDiffers {
            card: source.clone(),
            counter: last.counter,
        }
        .into());
    }
    if let Some(at) = challenge_sent(vault, target, &r.challenge)? {
        return Err(RestoreRefusal::ChallengeUsed {
            target: target.to_string(),
            at,
        }
        .into());
    }
    // The signer's certificate under the issuer root the card's own
    // certificate chains to (the root installed on the card), then the
    // signature over the message the card will build.
    let roots: Vec<openssl::x509::X509> = card
        .trusted_roots()
        .iter()
        .filter(|r| cardvault_proto::cert::verify_chain(std::slice::from_ref(*r), &store).is_ok())
        .cloned()
        .collect();
    if roots.is_empty() {
        return Ok(());
    }
    let untrusted = |why: String| RestoreRefusal::SignerNotTrusted { why };
    let signer = cardvault_proto::from_hex(&auth.signer_certificate)
        .and_then(|d| openssl::x509::X509::from_der(&d).ok())
        .ok_or_else(|| untrusted("the signer certificate is not DER".into()))?;
    let key = match cardvault_proto::cert::verify_signer_chain(&roots, std::slice::from_ref(&signer)) {
        Ok(key) => key,
        // The issuer's registration certificate (IRC): its chain goes to the
        // issuer registrar root installed on the card, which the card does
        // not answer; the terminal checks that it names the card's issuer
        // and that its key made the signature, and the card checks the chain.
        Err(e) => irc_key(&signer, &roots).ok_or_else(|| untrusted(e.to_string()))?,
    };
    let challenge = cardvault_proto::from_hex(&r.challenge).unwrap_or_default();
    let msg = bk::authorization_message(source, r.counter, target, &own, &challenge, &chain_hash);
    let sig = cardvault_proto::from_hex(&auth.signature).unwrap_or_default();
    if !cardvault_proto::crypto::verify_p256(&key, &msg, &sig).unwrap_or(false) {
        return Err(RestoreRefusal::SignatureInvalid.into());
    }
    Ok(())
}

/// The key of an issuer registration certificate that names the issuer of
/// one of `roots` (by common name, as the card compares them).
fn irc_key(signer: &openssl::x509::X509, roots: &[openssl::x509::X509]) -> Option<Vec<u8>> {
    use cardvault_proto::storing::{common_name, Party};
    let unit = cardvault_proto::cert::name_entry(signer.subject_name(), openssl::nid::Nid::ORGANIZATIONALUNITNAME);
    if unit.as_deref() != Some(Party::Issuer.unit()) {
        return None;
    }
    let cn = common_name(signer)?;
    if !roots.iter().any(|r| common_name(r).as_deref() == Some(cn.as_str())) {
        return None;
    }
    cardvault_proto::cert::ecka_public_key(signer).ok()
}

/// When an earlier restore onto `target` sent an authorization with this
/// challenge (the card used it then, whatever the outcome).
fn challenge_sent(vault: &Vault, target: &str, challenge: &str) -> Result<Option<String>> {
    Ok(vault
        .audit_entries(Some(target))?
        .iter()
        .find(|e| {
            e.card == target
                && e.event.starts_with("restore")
                && e.details[CHALLENGE_DETAIL]
                    .as_str()
                    .is_some_and(|c| c.eq_ignore_ascii_case(challenge))
        })
        .map(|e| e.at.clone()))
}

/// One backup of the chain a restore would send.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewBackup {
    pub id: i64,
    pub counter: u32,
    pub kind: String,
    pub pages: u32,
    pub created_at: String,
}

/// A value application whose value the restore would reset.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewValue {
    pub app: u8,
    pub name: String,
    pub balance: u32,
}

/// What `restore --dry-run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePreview {
    pub source_card: String,
    pub target_card: String,
    pub mode: RestoreMode,
    pub chain: Vec<PreviewBackup>,
    /// Pages the chain carries (a page in several backups counts once each).
    pub pages: u64,
    /// The card's newest seen backup counter (anti-rollback).
    pub newest_seen: u32,
    /// Value applications the card would reset, with their balance now.
    pub value_reset: Vec<PreviewValue>,
    /// Why the card would refuse the restore; empty when it would not.
    pub refusals: Vec<String>,
}

/// What restoring `chain` onto the card would do, with every refusal the
/// terminal can foresee. No PIN, no change.
pub fn preview(
    card: &mut CardClient<'_>,
    vault: &Vault,
    chain: &[BackupRow],
    authorization: Option<&RestoreAuthorization>,
    override_rollback: bool,
) -> Result<RestorePreview> {
    let target = card.card_number()?;
    let last = chain.last().ok_or(RestoreRefusal::NothingToRestore)?;
    let source = chain[0].card_number.clone();
    let other = source != target;
    let counters = super::backup::counters(card)?;
    let mut refusals = Vec::new();
    if other {
        let card_domain = card.domain()?;
        for row in chain {
            let h = bk::parse_header(&vault.backup_header(row.id)?);
            if h.as_ref().map(|h| Some(h.domain)) != Some(card_domain) {
                refusals.push(format!(
                    "backup #{} is of {}, card {target} holds {}: only a card of the same issuer domain generation opens it",
                    row.counter,
                    h.map_or("an unreadable header".to_string(), |h| h.domain.to_string()),
                    card_domain.map_or("no domain key".to_string(), |d| d.to_string())
                ));
            }
        }
        match authorization {
            None => refusals.push(
                RestoreRefusal::NeedsAuthorization {
                    source_card: source.clone(),
                    target: target.clone(),
                }
                .to_string(),
            ),
            Some(a) => {
                if let Err(e) = check_authorization(card, vault, &target, chain, a) {
                    refusals.push(e.to_string());
                }
            }
        }
    } else if last.counter < counters.newest_seen && !override_rollback {
        refusals.push(
            RestoreRefusal::Rollback {
                card: target.clone(),
                counter: last.counter,
                newest_seen: counters.newest_seen,
            }
            .to_string(),
        );
    }
    let mut value_reset = Vec::new();
    for a in card.applications()?.into_iter().filter(|a| a.value) {
        // A restored value is reset at its next use (GET BALANCE included):
        // read it as 0 without using it.
        let balance = if a.restored { 0 } else { card.balance(a.id)? };
        value_reset.push(PreviewValue {
            app: a.id,
            balance,
            name: a.name,
        });
    }
    Ok(RestorePreview {
        source_card: source,
        target_card: target,
        mode: if other {
            RestoreMode::OtherCard
        } else {
            RestoreMode::SameCard
        },
        chain: chain
            .iter()
            .map(|b| PreviewBackup {
                id: b.id,
                counter: b.counter,
                kind: b.kind.to_string(),
                pages: b.pages,
                created_at: b.created_at.clone(),
            })
            .collect(),
        pages: chain.iter().map(|b| b.pages as u64).sum(),
        newest_seen: counters.newest_seen,
        value_reset,
        refusals,
    })
}
