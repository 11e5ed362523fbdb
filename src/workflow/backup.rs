//! Page backup into the vault and restore onto the same or another card.
//!
//! Backup: BACKUP → BACKUP DATA until the card says the last block came (9000
//! instead of 6310) → store everything in the vault in one transaction →
//! only then BACKUP COMPLETE, which lets the card clear its change flags. A
//! crash between the two leaves the flags set, so the next differential still
//! carries those pages.
//!
//! Restore: RESTORE (header; for another card also the issuer's authorization)
//! → RESTORE DATA per record → the trailer → the next backup of the chain →
//! RESTORE COMPLETE. The card stages everything and writes nothing before
//! RESTORE COMPLETE.

use crate::apdu::StatusWord;
use crate::card::{BackupRequest, CardClient, Completion, Refusal};
use crate::error::{Error, Result};
use crate::vault::{AuditEvent, BackupRow, NewBackup, Vault};
use cardvault_proto::backup as bk;
use cardvault_proto::backup::BackupKind;
use cardvault_proto::tag;
use serde::{Deserialize, Serialize};

/// Backup counters as the card reports them (GET DATA DF31).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counters {
    pub issued: u32,
    pub base: u32,
    pub newest_seen: u32,
    pub changed_pages: u16,
}

pub fn counters(card: &mut CardClient<'_>) -> Result<Counters> {
    let v = card
        .data_object(tag::BACKUP_COUNTERS)?
        .filter(|v| v.len() == 14)
        .ok_or_else(|| Error::Malformed {
            command: "GET DATA",
            reason: "backup counters missing".into(),
        })?;
    let u = |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    Ok(Counters {
        issued: u(0),
        base: u(4),
        newest_seen: u(8),
        changed_pages: u16::from_be_bytes([v[12], v[13]]),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: i64,
    pub card_number: String,
    pub counter: u32,
    #[serde(serialize_with = "crate::util::serialize_display")]
    pub kind: BackupKind,
    pub base_counter: u32,
    pub pages: u16,
    pub records: usize,
    pub apdus: u64,
    pub bytes_in: u64,
    pub completed: bool,
}

/// Read a backup out of the card and store it. `progress` gets (pages so far, pages).
pub fn backup(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    force_full: bool,
    progress: &dyn Fn(u64, u64),
) -> Result<BackupReport> {
    // No status round trip: the header names the card and says which kind the
    // card chose, so a full 64 KiB backup stays at SELECT + VERIFY + 3 APDUs.
    let before = card.stats();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let request = if force_full {
        BackupRequest::Full
    } else {
        BackupRequest::Auto
    };
    let r = card.backup(request, now)?;
    let malformed = |why: &str| Error::Malformed {
        command: "BACKUP",
        reason: why.into(),
    };
    let hlen = u16::from_be_bytes(
        r.data
            .get(..2)
            .ok_or_else(|| malformed("short answer"))?
            .try_into()
            .expect("2"),
    ) as usize;
    let header = r
        .data
        .get(2..2 + hlen)
        .ok_or_else(|| malformed("header cut short"))?
        .to_vec();
    let h = cardvault_proto::backup::parse_header(&header).ok_or_else(|| malformed("header does not parse"))?;
    let bounds = RecordBounds::announced(&h).map_err(|why| malformed(&why))?;
    crate::card::card_number_text(h.card_number.as_bytes()).map_err(|why| malformed(&why))?;
    let kind = h.backup_kind();
    let card_number = h.card_number.clone();
    let total_pages = h.pages as u64;
    let mut records = Vec::new();
    let mut body = r.data[2 + hlen..].to_vec();
    let mut received = body.len();
    let mut more = r.more;
    let mut pages_seen = 0u64;
    loop {
        if !more {
            if body.len() < bk::TRAILER_LEN {
                return Err(malformed("last block has no trailer"));
            }
            let trailer = body.split_off(body.len() - bk::TRAILER_LEN);
            records.push(body);
            progress(total_pages, total_pages);
            let report_pages = h.pages;
            // Durably store everything before the card may clear its flags.
            let id = vault.store_backup(&NewBackup {
                card_number: &card_number,
                header: &header,
                records: &records,
                trailer: &trailer,
            })?;
            let done = card.backup_complete(h.counter)?;
            let completed = matches!(done, Completion::Done);
            if completed {
                vault.mark_completed(id)?;
            }
            vault.audit(AuditEvent {
                event: "backup",
                card: &card_number,
                peer: None,
                result: if completed { "ok" } else { "stored; BACKUP COMPLETE refused" },
                details: serde_json::json!({ "backup_id": id, "counter": h.counter, "kind": kind.as_str(), "pages": report_pages }),
            })?;
            if let Completion::Refused(e) = done {
                return Err(e);
            }
            let after = card.stats();
            return Ok(BackupReport {
                backup_id: id,
                card_number,
                counter: h.counter,
                kind,
                base_counter: h.base,
                pages: h.pages,
                records: records.len(),
                apdus: after.apdus - before.apdus,
                bytes_in: after.bytes_in - before.bytes_in,
                completed,
            });
        }
        if body.len() < bounds.min_record {
            return Err(malformed(&format!(
                "record {} of {} bytes carries no page, yet the card announces more",
                records.len(),
                body.len()
            )));
        }
        records.push(std::mem::take(&mut body));
        if records.len() >= bounds.max_records {
            return Err(malformed(&format!(
                "the card offers more than the {} records its header announces ({} pages)",
                bounds.max_records, h.pages
            )));
        }
        pages_seen = (pages_seen + (records.last().map(|r| r.len()).unwrap_or(0) / h.page_size.max(1) as usize) as u64)
            .min(total_pages);
        progress(pages_seen, total_pages);
        let r = card.backup_data(records.len() as u16)?;
        received += r.data.len();
        if received > bounds.max_bytes {
            return Err(malformed(&format!(
                "the card sent more than the {} bytes its header announces",
                bounds.max_bytes
            )));
        }
        body = r.data;
        more = r.more;
    }
}

/// What a backup's header lets the card send: records never split pages,
/// so a backup of `pages` pages has at most `pages` records (one, empty,
/// when no page changed), each record before the last carries at least one
/// page, and the whole is at most its pages, their run headers, the record
/// overheads and the trailer (docs/FORMATS.md, "Records").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBounds {
    pub max_records: usize,
    pub min_record: usize,
    pub max_bytes: usize,
}

/// Bytes of a record around its runs: run count (2) and the GCM tag (16).
const RECORD_OVERHEAD: usize = 18;
/// Bytes of a run header: first page (2) and page count (2).
const RUN_HEADER: usize = 4;

impl RecordBounds {
    /// The bounds of the backup `h` announces; a header whose numbers are
    /// outside their documented ranges is refused.
    pub fn announced(h: &cardvault_proto::backup::HeaderInfo) -> std::result::Result<RecordBounds, String> {
        if !(16..=4096).contains(&h.page_size) || h.page_count == 0 || h.pages > h.page_count {
            return Err(format!(
                "header announces {} pages of {} bytes out of {} (page size 16 to 4096, pages at most the page count)",
                h.pages, h.page_size, h.page_count
            ));
        }
        let (pages, page) = (h.pages as usize, h.page_size as usize);
        let max_records = pages.max(1);
        Ok(RecordBounds {
            max_records,
            min_record: RECORD_OVERHEAD + RUN_HEADER + page,
            max_bytes: max_records * RECORD_OVERHEAD + pages * (RUN_HEADER + page) + bk::TRAILER_LEN,
        })
    }
}

/// Version of [`RestoreRequest`]: 2 names the target's certificate.
pub const REQUEST_VERSION: u32 = 2;

/// A request for an other-card restore authorization (help desk → issuer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreRequest {
    pub version: u32,
    pub source_card: String,
    pub counter: u32,
    pub target_card: String,
    /// Hex, from the target card's GET RESTORE CHALLENGE.
    pub challenge: String,
    /// Hex DER, the target card's certificate chain (GET DATA `BF21`), which
    /// the issuer verifies before it signs; the signature names its
    /// registration certificate (the last one) by SHA-256.
    pub target_certificate: String,
    /// Hex, [`cardvault_proto::backup::chain_hash`] of the chain to restore
    /// (its headers, full backup first); the signature covers it and the
    /// card checks it at RESTORE COMPLETE.
    #[serde(default)]
    pub chain_hash: String,
    /// The `authorized` applications of data providers on the target card,
    /// which the chain carries pages of: the restore writes each only with
    /// its provider's agreement ([`RestoreAgreement`]), else leaves it out.
    #[serde(default)]
    pub authorized_applications: Vec<ProviderApplication>,
}

/// An `authorized` application owned by a data provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderApplication {
    pub application: u8,
    pub name: String,
    /// The owner: the CN of the provider's registration certificate (DPR).
    pub provider: String,
}

/// An application a restore left out, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeftOutApplication {
    pub application: u8,
    pub name: String,
    pub provider: String,
    pub reason: String,
}

/// A data provider's agreement to a restore: the request it signed for, its
/// registration certificate (hex DER) and, per application of its own that
/// the request lists, its signature (hex r || s) over
/// [`cardvault_proto::backup::agreement_message`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreAgreement {
    #[serde(flatten)]
    pub request: RestoreRequest,
    pub provider: String,
    pub provider_certificate: String,
    pub agreements: Vec<AgreedApplication>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgreedApplication {
    pub application: u8,
    pub signature: String,
}

/// The restore a request names, as the message an issuer and each provider sign.
fn restore_message(req: &RestoreRequest) -> Result<Vec<u8>> {
    let challenge = cardvault_proto::from_hex(&req.challenge)
        .filter(|c| c.len() == 16)
        .ok_or_else(|| Error::Usage("the request's challenge is not 16 bytes of hex".into()))?;
    let chain = cardvault_proto::from_hex(&req.chain_hash)
        .filter(|c| c.len() == bk::CHAIN_HASH_LEN)
        .ok_or_else(|| Error::Usage("the request's chain hash is not 32 bytes of hex".into()))?;
    if req.version != REQUEST_VERSION {
        return Err(Error::Usage(format!(
            "restore request version {} (this cardvault signs version {REQUEST_VERSION})",
            req.version
        )));
    }
    let target_certificate = leaf_certificate_sha256(&req.target_certificate)
        .ok_or_else(|| Error::Usage("the request's target_certificate is not a certificate chain in hex".into()))?;
    Ok(cardvault_proto::backup::authorization_message(
        &req.source_card,
        req.counter,
        &req.target_card,
        &target_certificate,
        &challenge,
        &chain,
    ))
}

/// A data provider agrees that the restore `req` names writes its
/// applications (`only`: these of them; default: all the request lists as
/// its own). The provider's own checks of the request (the target card's
/// certificate) come first.
pub fn sign_agreement(
    req: &RestoreRequest,
    me: &crate::workflow::storing::PartyCredentials,
    only: &[u8],
) -> Result<RestoreAgreement> {
    if me.party != cardvault_proto::storing::Party::Provider {
        return Err(Error::Usage(
            "a restore agreement is a data provider's; this key is the issuer's".into(),
        ));
    }
    let restore = restore_message(req)?;
    let mine: Vec<&ProviderApplication> = req
        .authorized_applications
        .iter()
        .filter(|a| a.provider == me.name)
        .collect();
    for app in only {
        if !mine.iter().any(|a| a.application == *app) {
            return Err(Error::Usage(format!(
                "the request lists no application {app} of provider {}",
                me.name
            )));
        }
    }
    let chosen: Vec<&&ProviderApplication> = mine
        .iter()
        .filter(|a| only.is_empty() || only.contains(&a.application))
        .collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "the request lists no application of provider {} (it lists: {})",
            me.name,
            if req.authorized_applications.is_empty() {
                "none".to_string()
            } else {
                req.authorized_applications
                    .iter()
                    .map(|a| format!("{} of {}", a.application, a.provider))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    let mut agreements = Vec::new();
    for a in chosen {
        let msg = bk::agreement_message(a.application, &me.name, &restore);
        let sig = cardvault_proto::crypto::sign_p256(&me.key, &msg).map_err(|e| Error::Data(e.to_string()))?;
        agreements.push(AgreedApplication {
            application: a.application,
            signature: cardvault_proto::to_hex(&sig),
        });
    }
    Ok(RestoreAgreement {
        request: req.clone(),
        provider: me.name.clone(),
        provider_certificate: cardvault_proto::to_hex(&me.certificate),
        agreements,
    })
}

/// SHA-256 of the registration certificate (the last DER certificate) of a
/// hex certificate store, as the card hashes its own.
pub fn leaf_certificate_sha256(store_hex: &str) -> Option<[u8; 32]> {
    let store = cardvault_proto::from_hex(store_hex)?;
    let certs = cardvault_proto::cert::split_certificates(&store).ok()?;
    let leaf = certs.last()?.to_der().ok()?;
    Some(cardvault_proto::crypto::sha256(&leaf))
}

/// The chain hash of `chain` (rows of the vault, full backup first).
pub fn chain_hash_of(vault: &Vault, chain: &[BackupRow]) -> Result<[u8; 32]> {
    let mut headers = Vec::with_capacity(chain.len());
    for row in chain {
        headers.push(vault.load_backup(row.id)?.header);
    }
    Ok(bk::chain_hash(headers.iter().map(|h| &h[..])))
}

/// The issuer's authorization: the request plus an ECDSA P-256 signature (hex
/// r||s) and the signer's certificate (hex DER) under the issuer root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreAuthorization {
    #[serde(flatten)]
    pub request: RestoreRequest,
    pub signature: String,
    pub signer_certificate: String,
}

/// Sign `req` with the issuer's authorization signer (its key in a file or in
/// a PKCS#11 token, and its certificate). The request is checked for form
/// here; the issuer's checks against its vault come first
/// (`workflow::authorize::check_restore_request`).
pub fn sign_authorization(req: &RestoreRequest, signer: &crate::issuer::IssuerSigner) -> Result<RestoreAuthorization> {
    let msg = restore_message(req)?;
    let sig = signer.sign(&msg)?;
    Ok(RestoreAuthorization {
        request: req.clone(),
        signature: cardvault_proto::to_hex(&sig),
        signer_certificate: cardvault_proto::to_hex(signer.certificate_der()),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target_card: String,
    pub source_card: String,
    pub mode: RestoreMode,
    pub chain: Vec<u32>,
    pub pages_written: u16,
    pub apdus: u64,
    pub rollback_override: bool,
    /// Providers' applications written with their provider's agreement.
    pub agreed: Vec<ProviderApplication>,
    /// Providers' applications left out (not written), and why.
    pub left_out: Vec<LeftOutApplication>,
}

/// Onto which card a restore goes: the card the backup came from, or a
/// replacement card (with the issuer's authorization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMode {
    SameCard,
    OtherCard,
}

impl RestoreMode {
    /// As the vault's restores table and the JSON output say it.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreMode::SameCard => "same-card",
            RestoreMode::OtherCard => "other-card",
        }
    }
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RestoreMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<RestoreMode, String> {
        match s {
            "same-card" => Ok(RestoreMode::SameCard),
            "other-card" => Ok(RestoreMode::OtherCard),
            other => Err(format!("unknown restore mode '{other}'")),
        }
    }
}

/// How to restore.
pub struct RestorePlan<'a> {
    pub chain: Vec<BackupRow>,
    /// For another card: the issuer's authorization.
    pub authorization: Option<&'a RestoreAuthorization>,
    /// Issuer override of the anti-rollback check (admin session already open).
    pub override_rollback: bool,
    /// Data providers' agreements for their `authorized` applications.
    pub agreements: &'a [RestoreAgreement],
}

fn restore_err(command: &'static str, sw: StatusWord) -> Error {
    match sw {
        StatusWord::WrongData => Refusal::BackupNotAuthentic(command).into(),
        StatusWord::ConditionsNotSatisfied => Refusal::Rollback(command).into(),
        StatusWord::SecurityStatusNotSatisfied => Refusal::RestoreNotAuthorized(command).into(),
        StatusWord::ReferenceDataNotFound => Refusal::OtherDomain(command).into(),
        sw => Error::Card { command, sw },
    }
}

/// Another card's backups open only on a card of the same issuer domain
/// generation (the card-common key that wrapped their unique key): checked
/// before anything is asked of the card or written to the vault. The card
/// checks it again (RESTORE `6A88`).
fn check_domain(
    card: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    vault: &Vault,
    chain: &[BackupRow],
    target: &str,
) -> Result<()> {
    let card_domain = facts.domain(card)?;
    for row in chain {
        let header = vault.backup_header(row.id)?;
        let h = bk::parse_header(&header)
            .ok_or_else(|| Error::Data(format!("backup {}: the header does not parse", row.id)))?;
        if card_domain != Some(h.domain) {
            return Err(RestoreRefusal::OtherDomain {
                source_card: row.card_number.clone(),
                counter: row.counter,
                backup_domain: h.domain.to_string(),
                target: target.to_string(),
                card_domain: card_domain.map_or("no domain key".to_string(), |d| d.to_string()),
            }
            .into());
        }
    }
    Ok(())
}

/// Send a chain of backups to the card and commit it.
pub fn restore(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    plan: &RestorePlan<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<RestoreReport> {
    restore_with(card, &mut super::CardFacts::none(), vault, plan, progress)
}

/// [`restore`] with what the job already established on the card.
pub fn restore_with(
    card: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    vault: &mut Vault,
    plan: &RestorePlan<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<RestoreReport> {
    let target_card = facts.card_number(card)?;
    let first = plan.chain.first().ok_or(RestoreRefusal::NothingToRestore)?;
    let other = first.card_number != target_card;
    if other && plan.authorization.is_none() {
        return Err(RestoreRefusal::NeedsAuthorization {
            source_card: first.card_number.clone(),
            target: target_card,
        }
        .into());
    }
    let mode = if other {
        RestoreMode::OtherCard
    } else {
        RestoreMode::SameCard
    };
    if other {
        check_domain(card, facts, vault, &plan.chain, &target_card)?;
    }
    let last = plan.chain.last().expect("non-empty");
    // Each agreement must be for this restore (the card checks the
    // signature, the challenge and the provider).
    let chain_hash = if plan.agreements.is_empty() {
        String::new()
    } else {
        cardvault_proto::to_hex(&chain_hash_of(vault, &plan.chain)?)
    };
    for a in plan.agreements {
        let r = &a.request;
        let what = if r.source_card != first.card_number || r.target_card != target_card || r.counter != last.counter {
            Some(format!(
                "card {} backup #{} onto card {}, not card {} #{} onto {target_card}",
                r.source_card, r.counter, r.target_card, first.card_number, last.counter
            ))
        } else if r.chain_hash.to_ascii_lowercase() != chain_hash {
            Some("another chain of backups".to_string())
        } else {
            None
        };
        if let Some(what) = what {
            return Err(RestoreRefusal::AgreementMismatch {
                provider: a.provider.clone(),
                what,
            }
            .into());
        }
    }
    // The providers' applications: which the restore may write (their
    // names only when there are some).
    let rules = facts.application_rules(card)?;
    let table = if rules.iter().any(is_provider_application) {
        card.application_table()?
    } else {
        Vec::new()
    };
    let provider_apps: Vec<ProviderApplication> = provider_applications(&rules, &table);
    let restore_id = vault.start_restore(last.id, &target_card, mode.as_str())?;
    let before = card.stats();
    let total: u64 = plan.chain.iter().map(|b| b.record_count as u64 + 1).sum();
    let mut done = 0u64;
    // Whether the authorization went out (the card spends its challenge on it).
    let mut authorization_sent = false;
    let mut agreed: Vec<u8> = Vec::new();
    let mut refused: Vec<(u8, StatusWord)> = Vec::new();
    let result = (|| -> Result<u16> {
        for (i, row) in plan.chain.iter().enumerate() {
            let b = vault.load_backup(row.id)?;
            let (p1, mut data) = match (i, plan.authorization) {
                (0, Some(a)) => {
                    let sig = cardvault_proto::from_hex(&a.signature)
                        .filter(|s| s.len() == bk::AUTHORIZATION_SIGNATURE_LEN)
                        .ok_or_else(|| Error::Data("the authorization's signature is not 64 bytes of hex".into()))?;
                    let chain_hash = cardvault_proto::from_hex(&a.request.chain_hash)
                        .filter(|c| c.len() == bk::CHAIN_HASH_LEN)
                        .ok_or_else(|| Error::Data("the authorization's chain hash is not 32 bytes of hex".into()))?;
                    let signer = cardvault_proto::from_hex(&a.signer_certificate)
                        .filter(|c| !c.is_empty() && c.len() <= u16::MAX as usize)
                        .ok_or_else(|| Error::Data("the authorization's signer certificate is not hex DER".into()))?;
                    let d = bk::AuthorizedRestore {
                        header: &b.header,
                        counter: a.request.counter,
                        chain_hash: &chain_hash,
                        signature: &sig,
                        signer_certificate: &signer,
                    }
                    .encode();
                    (bk::RESTORE_OTHER_CARD, d)
                }
                (0, None) => (bk::RESTORE_SAME_CARD, b.header.clone()),
                _ => (bk::RESTORE_NEXT_IN_CHAIN, b.header.clone()),
            };
            authorization_sent |= p1 == bk::RESTORE_OTHER_CARD;
            let sw = card.restore_begin(p1, plan.override_rollback && i == 0, &data)?;
            data.clear();
            if p1 == bk::RESTORE_OTHER_CARD && sw == StatusWord::SecurityStatusNotSatisfied {
                // The terminal checked target, certificate, chain, signer and
                // signature before: what is left is the card's challenge.
                return Err(RestoreRefusal::ChallengeNotOutstanding {
                    target: target_card.clone(),
                }
                .into());
            }
            if !sw.is_ok() {
                return Err(restore_err("RESTORE", sw));
            }
            // Records in order; the last one travels with the trailer, when the
            // two fit one APDU.
            let n = b.records.len();
            let fits = b
                .records
                .last()
                .map(|r| r.len() + b.trailer.len() <= 65535)
                .unwrap_or(false);
            for (k, rec) in b.records.iter().enumerate() {
                let trailer = (k + 1 == n && fits).then_some(&b.trailer[..]);
                let sw = card.restore_record(rec, trailer)?;
                if !sw.is_ok() {
                    return Err(restore_err("RESTORE DATA", sw));
                }
                done += 1;
                progress(done, total);
            }
            if !fits {
                let sw = card.restore_trailer(&b.trailer)?;
                if !sw.is_ok() {
                    return Err(restore_err("RESTORE DATA (trailer)", sw));
                }
            }
            done += 1;
            progress(done, total);
        }
        // The providers' agreements, once the whole chain is in.
        for a in plan.agreements {
            let cert = cardvault_proto::from_hex(&a.provider_certificate)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::Data(format!("{}'s agreement: the certificate is not hex DER", a.provider)))?;
            for g in &a.agreements {
                let sig = cardvault_proto::from_hex(&g.signature)
                    .filter(|s| s.len() == bk::AUTHORIZATION_SIGNATURE_LEN)
                    .ok_or_else(|| {
                        Error::Data(format!(
                            "{}'s agreement: a signature is not 64 bytes of hex",
                            a.provider
                        ))
                    })?;
                let data = bk::RestoreAgreement {
                    app: g.application,
                    signature: &sig,
                    certificate: &cert,
                }
                .encode();
                match card.restore_agreement(&data)? {
                    StatusWord::Ok => agreed.push(g.application),
                    sw => refused.push((g.application, sw)),
                }
            }
        }
        let r = card.restore_complete()?;
        if other && r.sw == StatusWord::SecurityStatusNotSatisfied {
            return Err(RestoreRefusal::ChainNotAuthorized {
                target: target_card.clone(),
            }
            .into());
        }
        if !r.sw.is_ok() || r.data.len() != 2 {
            return Err(restore_err("RESTORE COMPLETE", r.sw));
        }
        Ok(u16::from_be_bytes([r.data[0], r.data[1]]))
    })();
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    vault.finish_restore(restore_id, &outcome)?;
    let agreed_apps: Vec<ProviderApplication> = provider_apps
        .iter()
        .filter(|a| agreed.contains(&a.application))
        .cloned()
        .collect();
    let left_out: Vec<LeftOutApplication> = provider_apps
        .iter()
        .filter(|a| !agreed.contains(&a.application))
        .map(|a| LeftOutApplication {
            application: a.application,
            name: a.name.clone(),
            provider: a.provider.clone(),
            reason: match refused.iter().find(|(id, _)| *id == a.application) {
                Some((_, sw)) => format!("the card refused its provider's agreement ({sw})"),
                None => "no agreement from its provider".into(),
            },
        })
        .collect();
    if result.is_ok() {
        // What a provider's agreement wrote is recorded like a storing.
        let issuer = plan.authorization.and_then(|a| {
            let der = cardvault_proto::from_hex(&a.signer_certificate)?;
            cardvault_proto::storing::common_name(&openssl::x509::X509::from_der(&der).ok()?)
        });
        let page_size = if agreed_apps.is_empty() {
            0
        } else {
            card.status()?.page_size as usize
        };
        for app in &agreed_apps {
            let Some(t) = table.iter().find(|t| t.id == app.application) else {
                continue;
            };
            let bytes = card.read_memory(t.first_page, t.page_count as usize * page_size)?;
            let size = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let agreement = plan
                .agreements
                .iter()
                .flat_map(|a| a.agreements.iter())
                .find(|g| g.application == app.application)
                .and_then(|g| cardvault_proto::from_hex(&g.signature))
                .unwrap_or_default();
            let id = cardvault_proto::to_hex(&cardvault_proto::crypto::sha256(&agreement));
            vault.record_storing(&crate::vault::StoringRecord {
                id: 0,
                card_number: target_card.clone(),
                application: app.application,
                operation: if size == 0 { "delete" } else { "store" }.into(),
                data_size: size as u32,
                data_hash: cardvault_proto::to_hex(&cardvault_proto::crypto::sha256(&bytes[..size])),
                data_cert_id: None,
                request_id: format!("restore-{restore_id}-{}", app.application),
                sar_id: id,
                sa_id: None,
                first_party: "provider".into(),
                issuer: issuer.clone(),
                provider: Some(app.provider.clone()),
                applied_at: String::new(),
            })?;
        }
    }
    vault.audit(AuditEvent {
        event: if plan.override_rollback {
            "restore-with-rollback-override"
        } else {
            "restore"
        },
        card: &target_card,
        peer: Some(&first.card_number),
        result: &outcome,
        details: {
            let mut d = serde_json::json!({
                "mode": mode.as_str(),
                "chain": plan.chain.iter().map(|b| b.counter).collect::<Vec<_>>(),
                "backup_id": last.id,
                "agreed": agreed_apps.iter().map(|a| a.application).collect::<Vec<_>>(),
                "left_out": left_out.iter().map(|a| a.application).collect::<Vec<_>>(),
            });
            // The challenge the card spent, so that the authorization is
            // recognized if it comes again.
            if let Some(a) = plan.authorization.filter(|_| authorization_sent) {
                d[super::restore_check::CHALLENGE_DETAIL] = a.request.challenge.to_ascii_lowercase().into();
            }
            d
        },
    })?;
    let written = result?;
    let after = card.stats();
    Ok(RestoreReport {
        target_card,
        source_card: first.card_number.clone(),
        mode,
        chain: plan.chain.iter().map(|b| b.counter).collect(),
        pages_written: written,
        apdus: after.apdus - before.apdus,
        rollback_override: plan.override_rollback,
        agreed: agreed_apps,
        left_out,
    })
}

/// Whether a rule is that of an `authorized` application owned by a data
/// provider (not the issuer).
fn is_provider_application(r: &crate::card::ApplicationRule) -> bool {
    r.rule == cardvault_proto::storing::StorageRule::Authorized && r.owner != "issuer"
}

/// The `authorized` applications owned by a data provider.
fn provider_applications(
    rules: &[crate::card::ApplicationRule],
    table: &[crate::card::ApplicationEntry],
) -> Vec<ProviderApplication> {
    rules
        .iter()
        .filter(|r| is_provider_application(r))
        .map(|r| ProviderApplication {
            application: r.id,
            name: table
                .iter()
                .find(|t| t.id == r.id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            provider: r.owner.clone(),
        })
        .collect()
}

/// A restore as the holder or the help desk asks for it.
pub struct RestoreJob<'a> {
    /// Restore another card's backup onto this one (replacement card).
    pub from_card: Option<&'a str>,
    /// The chain ending at this vault backup id (default: the newest, or the
    /// one the authorization names).
    pub backup_id: Option<i64>,
    /// The issuer's authorization, for another card's backup.
    pub authorization: Option<&'a RestoreAuthorization>,
    /// Data providers' agreements for their `authorized` applications.
    pub agreements: &'a [RestoreAgreement],
    /// Only make the authorization request (with a fresh card challenge).
    pub request_only: bool,
    /// The holder PIN of the target card.
    pub pin: &'a [u8],
    /// The issuer's authentication, for an override of the rollback check.
    pub rollback_issuer: Option<&'a crate::card::IssuerAuth>,
}

/// What a restore job ended with.
#[derive(Debug)]
pub enum RestoreOutcome {
    /// The request for the issuer, to be signed with `authorize-restore`.
    Requested(RestoreRequest),
    Restored(RestoreReport),
}

/// Why a restore job cannot start, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreRefusal {
    /// An empty chain.
    #[error("nothing to restore")]
    NothingToRestore,
    #[error("the source card named is this very card; a same-card restore names no source card")]
    SourceIsTarget,
    #[error("no backup {0} in the vault")]
    NoSuchBackup(i64),
    #[error("the vault has no backup #{counter} of card {card}")]
    NoSuchCounter { card: String, counter: u32 },
    #[error("the vault has no backup of card {0}")]
    NoBackupOf(String),
    #[error("backup {id} belongs to card {owner}, not {wanted}")]
    OtherOwner { id: i64, owner: String, wanted: String },
    #[error(
        "the authorization is for card {auth_source} backup #{auth_counter} onto card {auth_target}, \
         not card {source_card} #{counter} onto {target}"
    )]
    AuthorizationMismatch {
        auth_source: String,
        auth_counter: u32,
        auth_target: String,
        source_card: String,
        counter: u32,
        target: String,
    },
    #[error("restoring card {source_card}'s backup onto card {target} needs an issuer authorization")]
    NeedsAuthorization { source_card: String, target: String },
    #[error("the request names backup #{counter} of card {card}, but the newest complete backup in the vault is {}", newest.map_or("none".to_string(), |n| format!("#{n}")))]
    NotNewestComplete {
        card: String,
        counter: u32,
        newest: Option<u32>,
    },
    #[error("the request's chain hash is not that of the vault's chain to backup #{counter} of card {card}")]
    ChainMismatch { card: String, counter: u32 },
    #[error("card {0} is not revoked; the issuer authorizes a restore from a card only once it is reported lost")]
    SourceNotRevoked(String),
    #[error(
        "card {source_card}'s backup #{counter} is of {backup_domain}, but card {target} holds {card_domain}: \
         only a card of the same issuer domain generation opens it; nothing was changed"
    )]
    OtherDomain {
        source_card: String,
        counter: u32,
        backup_domain: String,
        target: String,
        card_domain: String,
    },
    #[error("the target card {target}'s certificate does not verify: {why}")]
    TargetCertificate { target: String, why: String },
    #[error(
        "wrong target: the authorization names another certificate of card {target} (the card's certificate \
         changed since the request); nothing was sent"
    )]
    OtherCertificate { target: String },
    #[error(
        "used challenge: an authorization with this challenge was sent to card {target} at {at}, and the card \
         spends its challenge on first use; make a new request (--request) for the issuer; nothing was sent"
    )]
    ChallengeUsed { target: String, at: String },
    #[error(
        "counter mismatch: the authorization covers another chain than the vault's chain to backup #{counter} of \
         card {card} (its counter or chain was changed); nothing was sent"
    )]
    AuthorizedChainDiffers { card: String, counter: u32 },
    #[error("signer not trusted: the authorization's signer certificate does not verify under the card's issuer root ({why}); nothing was sent")]
    SignerNotTrusted { why: String },
    #[error("the authorization's signature does not verify for this card, backup and challenge; nothing was sent")]
    SignatureInvalid,
    #[error(
        "used or replaced challenge: card {target} refused the authorization (RESTORE 6982): its challenge was \
         spent or replaced by a later request, or, for a signer under an issuer registration certificate (IRC), \
         the IRC is not from the card's issuer registrar (a chain only the card can check; the terminal's checks of \
         target, certificate, chain, signer and signature come first); make a new request (--request) for the \
         issuer; nothing was written"
    )]
    ChallengeNotOutstanding { target: String },
    #[error(
        "counter mismatch: card {target} refused the chain at RESTORE COMPLETE (6982): it does not end at the \
         authorized backup or is not the chain the issuer signed; nothing was written"
    )]
    ChainNotAuthorized { target: String },
    #[error(
        "rollback: backup #{counter} is older than #{newest_seen}, the newest backup card {card} has made or \
         restored; the card refuses it unless the issuer overrides; nothing was sent"
    )]
    Rollback {
        card: String,
        counter: u32,
        newest_seen: u32,
    },
    #[error("{provider}'s restore agreement is for {what}")]
    AgreementMismatch { provider: String, what: String },
}

/// The last backup of the chain a restore of `source`'s backups sends: the
/// one named by id, else the one the authorization names, else the newest.
pub fn choose_backup(
    vault: &Vault,
    source: &str,
    backup_id: Option<i64>,
    authorization: Option<&RestoreAuthorization>,
) -> Result<BackupRow> {
    let last = match (backup_id, authorization) {
        (Some(id), _) => vault.backup_row(id)?.ok_or(RestoreRefusal::NoSuchBackup(id))?,
        (None, Some(au)) => vault
            .list_backups(Some(source))?
            .into_iter()
            .find(|b| b.counter == au.request.counter)
            .ok_or_else(|| RestoreRefusal::NoSuchCounter {
                card: source.to_string(),
                counter: au.request.counter,
            })?,
        (None, None) => vault
            .latest_backup(source)?
            .ok_or_else(|| RestoreRefusal::NoBackupOf(source.to_string()))?,
    };
    if last.card_number != source {
        return Err(RestoreRefusal::OtherOwner {
            id: last.id,
            owner: last.card_number,
            wanted: source.to_string(),
        }
        .into());
    }
    Ok(last)
}

/// Choose the backup chain, check the authorization against the card and
/// the vault, then either make the issuer's request or restore.
pub fn run_restore(
    card: &mut CardClient<'_>,
    vault: &mut Vault,
    job: &RestoreJob<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<RestoreOutcome> {
    run_restore_with(card, &mut super::CardFacts::none(), vault, job, progress)
}

/// [`run_restore`] with what the job already established on the card (a
/// PIN verified in the open session, data read before): nothing of it is
/// asked again.
pub fn run_restore_with(
    card: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    vault: &mut Vault,
    job: &RestoreJob<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<RestoreOutcome> {
    // In an open secure session its verified identity names the card.
    let target = match card.identity() {
        Some(id) => id.subject.card_number.clone(),
        None => facts.card_number(card)?,
    };
    let source = job.from_card.unwrap_or(&target).to_string();
    if job.from_card == Some(target.as_str()) {
        return Err(RestoreRefusal::SourceIsTarget.into());
    }
    if job.from_card.is_some() && job.authorization.is_none() && !job.request_only {
        return Err(RestoreRefusal::NeedsAuthorization {
            source_card: source,
            target,
        }
        .into());
    }
    facts.verify_pin(card, job.pin)?;
    let last = choose_backup(vault, &source, job.backup_id, job.authorization)?;
    if job.request_only {
        if source != target {
            check_domain(card, facts, vault, &vault.chain_to(&last)?, &target)?;
        }
        let ch = card.restore_challenge()?;
        // The chain the session verified (GET DATA BF21 at its start).
        let certificate = match card.identity() {
            Some(id) => id.chain_der.clone(),
            None => card.card_certificate()?.unwrap_or_default(),
        };
        let chain = chain_hash_of(vault, &vault.chain_to(&last)?)?;
        let rules = facts.application_rules(card)?;
        let table = if rules.iter().any(is_provider_application) {
            card.application_table()?
        } else {
            Vec::new()
        };
        return Ok(RestoreOutcome::Requested(RestoreRequest {
            authorized_applications: provider_applications(&rules, &table),
            version: REQUEST_VERSION,
            source_card: source,
            counter: last.counter,
            target_card: target,
            challenge: cardvault_proto::to_hex(&ch),
            target_certificate: cardvault_proto::to_hex(&certificate),
            chain_hash: cardvault_proto::to_hex(&chain),
        }));
    }
    if let Some(au) = job.authorization {
        // Each check the card makes that the terminal can foresee, named.
        super::restore_check::check_authorization_with(card, facts, vault, &target, &vault.chain_to(&last)?, au)?;
    }
    if let Some(auth) = job.rollback_issuer {
        card.issuer_authenticate(auth, &target)?;
        // The SCP11a handshake started a new card session: the PIN
        // verified before it is forgotten, so verify it in this one.
        facts.verify_pin(card, job.pin)?;
    }
    let plan = RestorePlan {
        chain: vault.chain_to(&last)?,
        authorization: job.authorization,
        override_rollback: job.rollback_issuer.is_some(),
        agreements: job.agreements,
    };
    restore_with(card, facts, vault, &plan, progress).map(RestoreOutcome::Restored)
}

#[cfg(test)]
mod mode_tests {
    use super::RestoreMode;

    #[test]
    fn restore_modes_keep_the_vault_and_json_strings() {
        for m in [RestoreMode::SameCard, RestoreMode::OtherCard] {
            assert_eq!(m.to_string().parse::<RestoreMode>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(RestoreMode::OtherCard.as_str(), "other-card");
    }
}
