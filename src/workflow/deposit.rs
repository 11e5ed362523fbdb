//! Deposit into and withdrawal from an electronic safe (Matsushita claims
//! 1-3, 9), exactly once under every fault.
//!
//! **Deposit**, in this order:
//! 1. DEPOSIT P1 = 00: the card seals the item under its wallet key, signs
//!    it and marks it pending (not spendable). A pending item answers the
//!    same deposit again.
//! 2. The safe stores it and answers its registration certificate; the same
//!    deposit again gets the same certificate (the safe finds it by card,
//!    item and hash).
//! 3. The vault keeps a copy of the certificate.
//! 4. DEPOSIT P1 = 01: the card checks the certificate against the pending
//!    item, keeps it and deletes the item, in one state write.
//!
//! Cut anywhere, the item is on the card (held or pending) or in the safe
//! with its certificate on the card, never both spendable; `resolve`
//! repeats steps 1-4 for every pending item (roll forward: a pending item
//! never goes back to held, since the safe may already hold it).
//!
//! **Withdraw**, in this order:
//! 1. GET WITHDRAW CHALLENGE: a fresh card challenge.
//! 2. The safe checks the certificate (its own signature, not withdrawn, the
//!    requesting card certified under the issuer root, and for another card
//!    than the depositor an issuer authorization naming it), marks the item
//!    `delivering` to that card, and wraps it to the card's certified ECKA
//!    key for that challenge. While delivering, no other card gets it.
//! 3. WITHDRAW: the card checks the delivery, adds the item, forgets the
//!    certificate and remembers the delivery (safe, counter, challenge,
//!    receipt), in one state write; answers its signed receipt. The card
//!    never takes the same deposit twice; the same delivery again answers
//!    the same receipt.
//! 4. The safe marks the item withdrawn on the receipt; then the vault.
//!
//! Cut before 3 took effect, a retry gets a new delivery for a new
//! challenge; cut after, the card holds the item and `resolve` sends its
//! receipts (READ SAFE RECORDS) to the safe.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::safe::{ReceiptRequest, SafeAddress, SafeClient, WithdrawAuthorization, WithdrawRequest};
use crate::vault::{CertificateCopy, Vault};
use crate::workflow::wallet::find_item;
use cardvault_proto::safe::{summary_field, RegistrationCertificate, SummaryFields, WithdrawCommand};
use cardvault_proto::to_hex;
use cardvault_proto::wallet::ItemState;
use serde::Serialize;

/// What a deposit did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DepositReport {
    pub card_number: String,
    pub item: String,
    pub safe: String,
    pub safe_id: String,
    pub counter: u64,
    /// Hex of the registration certificate.
    pub certificate: String,
}

/// Parse a summary field list (`kind,name,validity,amount`) into a mask.
pub fn summary_mask(fields: &str) -> Result<u8> {
    let mut mask = 0;
    for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (_, bit) = summary_field::NAMES.iter().find(|(n, _)| *n == f).ok_or_else(|| {
            Error::Usage(format!(
                "unknown summary field {f:?} (kind, name, validity, amount, place, issuer)"
            ))
        })?;
        mask |= bit;
    }
    if mask == 0 {
        return Err(Error::Usage("the summary needs at least one field".into()));
    }
    Ok(mask)
}

fn refused<T>(r: std::result::Result<T, crate::safe::SafeRefusal>) -> Result<T> {
    r.map_err(Error::SafeRefused)
}

/// Deposit item `id` (hex or a unique prefix) into `safe`; the PIN must be
/// verified by the caller's session or is verified here.
pub fn deposit(
    card: &mut CardClient<'_>,
    pin: &[u8],
    id: &str,
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
    mask: u8,
) -> Result<DepositReport> {
    card.verify_pin(pin)?;
    // A whole id needs no READ WALLET: DEPOSIT itself says when the card
    // holds no such item.
    let full: Option<[u8; 16]> = cardvault_proto::from_hex(id).and_then(|v| v.try_into().ok());
    let item_id = match full {
        Some(i) => i,
        None => find_item(&card.read_wallet()?, id)?.1.id,
    };
    deposit_item(card, &item_id, address, safe, vault, mask)
}

fn deposit_item(
    card: &mut CardClient<'_>,
    id: &[u8; 16],
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
    mask: u8,
) -> Result<DepositReport> {
    let info = refused(safe.info()?)?;
    let safe_id: [u8; 16] = cardvault_proto::from_hex(&info.safe_id)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::Data("the safe's id is not 16 bytes of hex".into()))?;
    let signed = card.deposit_begin(id, mask, &safe_id)?;
    let answer = refused(safe.deposit(&signed.encode())?)?;
    let bad = |what: &str| Error::Data(format!("the safe's answer: {what}"));
    let cert = cardvault_proto::from_hex(&answer.certificate)
        .and_then(|c| RegistrationCertificate::parse(&c))
        .ok_or_else(|| bad("the certificate does not parse"))?;
    let safe_cert = cardvault_proto::from_hex(&answer.safe_certificate).ok_or_else(|| bad("not hex"))?;
    let deposit = cardvault_proto::safe::Deposit::parse(&signed.deposit).ok_or_else(|| bad("deposit"))?;
    let fields = SummaryFields::parse(&deposit.summary).unwrap_or_default();
    vault.record_wallet_certificate(&CertificateCopy {
        card_number: cert.card_number.clone(),
        safe_id: to_hex(&cert.safe_id),
        safe_counter: cert.counter,
        safe_address: address.to_string(),
        item_id: to_hex(&cert.item_id),
        kind: fields.kind.map(|k| k.to_string()),
        name: fields.name,
        amount: fields.amount,
        certificate: answer.certificate.clone(),
        deposited_at: String::new(),
        withdrawn_at: None,
        withdrawn_to: None,
    })?;
    card.deposit_complete(&cert, &safe_cert)?;
    Ok(DepositReport {
        card_number: cert.card_number.clone(),
        item: to_hex(&cert.item_id),
        safe: address.to_string(),
        safe_id: to_hex(&cert.safe_id),
        counter: cert.counter,
        certificate: answer.certificate,
    })
}

/// Which certificate to withdraw by.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// From the card in the reader, by item id (hex prefix).
    Card(String),
    /// From the vault's copy, by item id (hex prefix), when the card that
    /// deposited it is lost.
    Vault(String),
}

/// An issuer authorization to withdraw onto another card than the depositor.
pub struct IssuerWithdrawal<'a> {
    pub signer: &'a crate::issuer::IssuerSigner,
}

/// What a withdrawal did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WithdrawReport {
    pub card_number: String,
    pub item: String,
    pub safe_id: String,
    pub counter: u64,
    /// The safe accepted the card's receipt (false: it was unreachable after
    /// the card took the item; `wallet resolve` sends the receipt).
    pub settled: bool,
}

fn certificate_from(
    card: &mut CardClient<'_>,
    vault: &Vault,
    source: &CertificateSource,
) -> Result<RegistrationCertificate> {
    let pick = |certs: Vec<RegistrationCertificate>, id: &str| -> Result<RegistrationCertificate> {
        let id = id.to_ascii_lowercase();
        let mut hits = certs.into_iter().filter(|c| to_hex(&c.item_id).starts_with(&id));
        match (hits.next(), hits.next()) {
            (Some(c), None) if !id.is_empty() => Ok(c),
            (Some(_), Some(_)) => Err(Error::Usage(format!(
                "item id {id:?} matches more than one certificate"
            ))),
            _ => Err(Error::Usage(format!("no registration certificate for item {id:?}"))),
        }
    };
    match source {
        CertificateSource::Card(id) => pick(card.safe_certificates()?, id),
        CertificateSource::Vault(id) => {
            let certs = vault
                .wallet_certificates(None)?
                .into_iter()
                .filter(|c| c.withdrawn_at.is_none())
                .filter_map(|c| {
                    cardvault_proto::from_hex(&c.certificate).and_then(|b| RegistrationCertificate::parse(&b))
                })
                .collect();
            pick(certs, id)
        }
    }
}

/// Withdraw a deposited item onto the card in the reader.
pub fn withdraw(
    card: &mut CardClient<'_>,
    pin: &[u8],
    source: &CertificateSource,
    safe: &mut SafeClient,
    vault: &mut Vault,
    issuer: Option<IssuerWithdrawal<'_>>,
) -> Result<WithdrawReport> {
    card.verify_pin(pin)?;
    let cert = certificate_from(card, vault, source)?;
    withdraw_certificate(card, &cert, safe, vault, issuer, None, &mut None)
}

/// Withdraw the item of `cert` (PIN verified): onto another card than the
/// depositor with the issuer's signer, or with the owner's escrow proof for
/// this safe. `signing` keeps the card's signing certificate for the
/// receipts of the workflow's later items ([`signing_certificate`]).
pub(crate) fn withdraw_certificate(
    card: &mut CardClient<'_>,
    cert: &RegistrationCertificate,
    safe: &mut SafeClient,
    vault: &mut Vault,
    issuer: Option<IssuerWithdrawal<'_>>,
    owner: Option<(&crate::workflow::escrow::OwnerSecret, &str)>,
    signing: &mut Option<Vec<u8>>,
) -> Result<WithdrawReport> {
    // The session's verified identity names the card (no GET DATA needed).
    let number = match card.identity() {
        Some(id) => id.subject.card_number.clone(),
        None => card.card_number()?,
    };
    let chain = card.certified_chain()?;
    let leaf = cardvault_proto::cert::split_certificates(&chain)
        .ok()
        .and_then(|mut v| v.pop())
        .and_then(|c| c.to_der().ok())
        .ok_or_else(|| Error::Data("the card's certificate chain is empty".into()))?;
    let authorization = match (&issuer, number != cert.card_number) {
        (Some(i), true) => {
            let msg = cardvault_proto::safe::withdraw_authorization_message(&number, &cert.hash());
            Some((
                <[u8; 64]>::try_from(i.signer.sign(&msg)?)
                    .map_err(|_| Error::Internal("an issuer signature is not 64 bytes".into()))?,
                i.signer.certificate_der().to_vec(),
            ))
        }
        _ => None,
    };
    let challenge = card.withdraw_challenge()?;
    let (certificate, card_certificate, challenge_hex) = (to_hex(&cert.encode()), to_hex(&leaf), to_hex(&challenge));
    // The owner answers the safe's fresh challenge for exactly this request.
    let owner_proof = match owner {
        Some((o, safe_id)) if authorization.is_none() => Some(o.prove(
            safe,
            safe_id,
            &cert.card_number,
            &crate::safe::owner_withdraw_request(&certificate, &card_certificate, &challenge_hex),
        )?),
        _ => None,
    };
    let answer = refused(safe.withdraw(&WithdrawRequest {
        certificate,
        card_certificate,
        challenge: challenge_hex,
        authorization: authorization.as_ref().map(|(s, c)| WithdrawAuthorization {
            signature: to_hex(s),
            signer_certificate: to_hex(c),
        }),
        owner_proof,
    })?)?;
    let bad = || Error::Data("the safe's delivery is not hex".into());
    let cmd = WithdrawCommand {
        delivery: cardvault_proto::from_hex(&answer.delivery).ok_or_else(bad)?,
        safe_certificate: cardvault_proto::from_hex(&answer.safe_certificate).ok_or_else(bad)?,
        authorization,
    };
    let receipt = card.withdraw(&cmd)?;
    let settled = send_receipt(card, safe, vault, &receipt, signing)?;
    Ok(WithdrawReport {
        card_number: number,
        item: to_hex(&cert.item_id),
        safe_id: to_hex(&cert.safe_id),
        counter: cert.counter,
        settled,
    })
}

/// The card's signing certificate (GET DATA `DF35`), read once per
/// workflow: `known` keeps it for the next receipt of the same session.
pub(crate) fn signing_certificate<'k>(card: &mut CardClient<'_>, known: &'k mut Option<Vec<u8>>) -> Result<&'k [u8]> {
    if known.is_none() {
        *known = Some(
            card.storing_certificate()?
                .ok_or_else(|| Error::Data("the card has no signing certificate (GET DATA DF35)".into()))?,
        );
    }
    Ok(known.as_deref().expect("read above"))
}

/// Send one receipt to the safe; an unreachable safe leaves it for
/// `resolve` (false). `signing` is the card's signing certificate when the
/// workflow has read it already (see [`signing_certificate`]).
pub(crate) fn send_receipt(
    card: &mut CardClient<'_>,
    safe: &mut SafeClient,
    vault: &mut Vault,
    receipt: &cardvault_proto::safe::Receipt,
    signing: &mut Option<Vec<u8>>,
) -> Result<bool> {
    let signing = signing_certificate(card, signing)?;
    let req = ReceiptRequest {
        receipt: to_hex(&receipt.encode()),
        card_certificate: to_hex(signing),
    };
    match safe.receipt(&req) {
        Ok(r) => {
            refused(r)?;
            vault.mark_wallet_withdrawn(&to_hex(&receipt.safe_id), receipt.counter, &receipt.card_number)?;
            Ok(true)
        }
        Err(Error::SafeUnreachable { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `resolve` settled.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ResolveReport {
    /// Pending deposits completed.
    pub deposits: Vec<DepositReport>,
    /// Receipts the safe accepted (counters).
    pub receipts: Vec<u64>,
}

/// Settle what is pending between the card and `safe`: complete every
/// pending deposit (roll forward), and send the safe every receipt the card
/// holds for it.
pub fn resolve(
    card: &mut CardClient<'_>,
    pin: &[u8],
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
) -> Result<ResolveReport> {
    card.verify_pin(pin)?;
    let mut report = ResolveReport::default();
    let listing = card.read_wallet()?;
    for (state, item) in &listing.items {
        if *state == ItemState::DepositPending {
            report.deposits.push(deposit_item(
                card,
                &item.id,
                address,
                safe,
                vault,
                summary_field::DEFAULT,
            )?);
        }
    }
    let info = refused(safe.info()?)?;
    let mut signing = None;
    for r in card.safe_receipts()? {
        if to_hex(&r.safe_id) == info.safe_id && send_receipt(card, safe, vault, &r, &mut signing)? {
            report.receipts.push(r.counter);
        }
    }
    Ok(report)
}

/// What a backup by conditions did (or, dry, would do).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConditionsReport {
    /// The matching items (hex ids), in holding order.
    pub matched: Vec<String>,
    /// Their deposits (empty on a dry run).
    pub deposited: Vec<DepositReport>,
}

/// Backup by conditions (FIG. 19/20): list the held items that match
/// `conditions` and, unless `dry_run`, deposit each into `safe`.
pub fn backup_by_conditions(
    card: &mut CardClient<'_>,
    pin: &[u8],
    conditions: &crate::workflow::wallet::BackupConditions,
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
    dry_run: bool,
) -> Result<ConditionsReport> {
    let listing = card.read_wallet()?;
    let matched = conditions.select(&listing, false)?;
    let mut report = ConditionsReport {
        matched: matched.iter().map(|i| to_hex(&i.id)).collect(),
        deposited: Vec::new(),
    };
    if dry_run || matched.is_empty() {
        return Ok(report);
    }
    card.verify_pin(pin)?;
    for item in &matched {
        report.deposited.push(deposit_item(
            card,
            &item.id,
            address,
            safe,
            vault,
            summary_field::DEFAULT,
        )?);
    }
    Ok(report)
}

/// Before a load: when the wallet is full, deposit the first item the
/// conditions select (the free-slot condition aside); a full wallet with no
/// matching item is refused, and nothing is loaded.
pub fn make_room(
    card: &mut CardClient<'_>,
    pin: &[u8],
    conditions: &crate::workflow::wallet::BackupConditions,
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
) -> Result<Option<DepositReport>> {
    let listing = card.read_wallet()?;
    if listing.items.len() < listing.capacity as usize {
        return Ok(None);
    }
    let Some(item) = conditions.select(&listing, true)?.into_iter().next() else {
        return Err(Error::Refused(format!(
            "the wallet is full ({} items) and no item matches the backup conditions to deposit first; nothing was loaded",
            listing.capacity
        )));
    };
    card.verify_pin(pin)?;
    deposit_item(card, &item.id, address, safe, vault, summary_field::DEFAULT).map(Some)
}
