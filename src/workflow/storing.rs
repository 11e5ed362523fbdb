//! Storing authorization (NTT 004, steps 21-24 via the issuer and 31-34 via
//! the provider; SPEC 3.4): data is stored on or deleted from a card's
//! `authorized` application only with the issuer's and the provider's
//! signatures for this card, this data and the card's challenge.
//!
//! Four steps, each reading the file the step before wrote
//! ([`StoringFile`], docs/FORMATS.md "Storing files"):
//!
//! 1. [`request`]: the holder's card signs a storing request (STORING
//!    REQUEST) with a fresh challenge;
//! 2. [`countersign`]: the first party (issuer or provider) checks the card's
//!    certificate and signature and countersigns: the SAR;
//! 3. [`authorize`]: the other party checks the SAR and signs: the SA;
//! 4. [`apply`]: the card checks everything again and writes (STORE DATA
//!    UNDER AUTHORIZATION). An SAR alone is applied where the application lets
//!    its provider authorize alone.
//!
//! Commit order of [`apply`]: the card first, then the vault record. The card
//! writes the whole application in one state commit, so a card pulled at any
//! point holds the old data or the new; the record is written only after the
//! card answered 9000. A card pulled after it wrote but before its answer
//! arrived holds the new data with no record: the help desk sees it in
//! `status`, and a retry (a fresh request: the challenge was used) records it.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::vault::{StoringRecord, Vault};
use cardvault_proto::crypto::{sha256, KeyPair};
use cardvault_proto::storing::{
    self, Authorization, DataCertificate, Operation, Party, RegistrarRoots, Sa, Sar, StoringDataInfo, StoringRequest,
};
use cardvault_proto::{from_hex, to_hex};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the storing files.
pub const FILE_VERSION: u32 = 1;

/// Which step wrote a storing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The card's storing request (`store request`).
    Request,
    /// The storing authorization request (`store countersign`).
    Sar,
    /// The storing authorization (`store authorize`).
    Sa,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Request => "a card's storing request (step 1)",
            Step::Sar => "a storing authorization request, SAR (step 2: countersigned)",
            Step::Sa => "a storing authorization, SA (step 3: signed by both parties)",
        })
    }
}

/// A party that signed, as the file shows it (the blob is the authority).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerInfo {
    pub party: String,
    pub name: String,
}

/// The file each step writes: a readable summary and the signed blob.
/// Every summary field is checked against the blob when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoringFile {
    pub version: u32,
    pub step: Step,
    pub card_number: String,
    /// The card's storing key certificate, DER, hex.
    pub card_certificate: String,
    pub application: u8,
    pub operation: String,
    pub data_size: u32,
    /// SHA-256 of the data, hex.
    pub data_hash: String,
    pub data_cert_id: Option<String>,
    /// The parties that signed so far, in order.
    pub signers: Vec<SignerInfo>,
    /// Hex: the request (step request), the SAR (step sar) or the SA (step sa).
    pub blob: String,
}

/// A party's signing key and registration certificate (IRC or DPR).
pub struct PartyCredentials {
    pub party: Party,
    pub name: String,
    pub key: KeyPair,
    /// DER X.509.
    pub certificate: Vec<u8>,
}

impl PartyCredentials {
    /// A key and its certificate (PEM); the certificate must certify the key
    /// and be of `party`'s kind.
    pub fn from_pem(party: Party, key_pem: &[u8], cert_pem: &[u8]) -> Result<PartyCredentials> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Usage(format!("not a P-256 private key: {e}")))?;
        let cert = X509::from_pem(cert_pem).map_err(|e| Error::Usage(format!("not a PEM certificate: {e}")))?;
        let public = cardvault_proto::cert::ecka_public_key(&cert).map_err(|e| Error::Usage(e.to_string()))?;
        if public != key.public_bytes() {
            return Err(Error::Usage("the certificate does not certify this key".into()));
        }
        let unit = cardvault_proto::cert::name_entry(cert.subject_name(), openssl::nid::Nid::ORGANIZATIONALUNITNAME);
        if unit.as_deref() != Some(party.unit()) {
            return Err(Error::Usage(format!(
                "the certificate is not a {} registration certificate (its OU is {:?}), so it cannot sign as the {party}",
                party.unit(),
                unit.unwrap_or_default()
            )));
        }
        Ok(PartyCredentials {
            party,
            name: storing::common_name(&cert).unwrap_or_default(),
            key,
            certificate: cert.to_der().map_err(|e| Error::Usage(e.to_string()))?,
        })
    }
}

/// The SDI of storing `data` in `app`; with its data certificate, the data
/// is checked against it (under the data registrar root) first.
pub fn store_info(app: u8, data: &[u8], cert: Option<(&DataCertificate, &X509)>) -> Result<StoringDataInfo> {
    let size = u32::try_from(data.len()).map_err(|_| Error::Usage("the data is over 4 GiB".into()))?;
    let mut id = String::new();
    if let Some((c, registrar)) = cert {
        if !c.verify(registrar, data) {
            return Err(Error::Data(format!(
                "the data does not match its data certificate '{}' (size {} and SHA-256 {} certified by the data registrar; the data is {} bytes, SHA-256 {}), or the certificate is not the data registrar's",
                c.id,
                c.size,
                to_hex(&c.hash),
                data.len(),
                to_hex(&sha256(data))
            )));
        }
        id = c.id.clone();
    }
    Ok(StoringDataInfo {
        app,
        op: Operation::Store,
        size,
        hash: sha256(data),
        data_cert_id: id,
    })
}

/// The SDI of deleting what the vault says `app` of `card` holds.
pub fn delete_info(vault: &Vault, card: &str, app: u8) -> Result<StoringDataInfo> {
    match vault.latest_storing(card, app)? {
        Some(r) if r.operation == "store" => Ok(StoringDataInfo {
            app,
            op: Operation::Delete,
            size: r.data_size,
            hash: from_hex(&r.data_hash)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| Error::Data(format!("vault storing record {} has a bad data hash", r.id)))?,
            data_cert_id: r.data_cert_id.unwrap_or_default(),
        }),
        _ => Err(Error::Usage(format!(
            "the vault records no data stored in application {app} of card {card}: nothing to delete unless the data to delete is given"
        ))),
    }
}

/// The SDI of deleting `data` from `app` (the card checks it holds it).
pub fn delete_info_for(app: u8, data: &[u8]) -> Result<StoringDataInfo> {
    Ok(StoringDataInfo {
        op: Operation::Delete,
        ..store_info(app, data, None)?
    })
}

/// The card's number: from the secure session's verified identity (no GET
/// DATA needed), else read.
fn session_card_number(card: &mut CardClient<'_>) -> Result<String> {
    match card.identity() {
        Some(id) => Ok(id.subject.card_number.clone()),
        None => card.card_number(),
    }
}

/// Step 1: verify the PIN and have the card sign its storing request.
pub fn request(card: &mut CardClient<'_>, pin: &[u8], sdi: &StoringDataInfo) -> Result<StoringFile> {
    if !sdi.valid() {
        return Err(Error::Usage("the data certificate id is over 64 bytes".into()));
    }
    card.verify_pin(pin)?;
    let r = card.storing_request(sdi)?;
    let card_number = session_card_number(card)?;
    Ok(StoringFile {
        version: FILE_VERSION,
        step: Step::Request,
        card_number,
        card_certificate: to_hex(&r.certificate),
        application: sdi.app,
        operation: sdi.op.to_string(),
        data_size: sdi.size,
        data_hash: to_hex(&sdi.hash),
        data_cert_id: Some(sdi.data_cert_id.clone()).filter(|s| !s.is_empty()),
        signers: Vec::new(),
        blob: to_hex(&r.request.encode()),
    })
}

/// What a storing file holds, checked: the summary matches the blob.
struct Checked {
    request: StoringRequest,
    card_certificate: Vec<u8>,
    sar: Option<Sar>,
    sa: Option<Sa>,
}

impl StoringFile {
    /// The file's blob parsed for `step` (a file of another step is refused,
    /// naming both), and the summary checked against it.
    fn checked(&self, want: &[Step], doing: &str) -> Result<Checked> {
        if self.version != FILE_VERSION {
            return Err(Error::Usage(format!(
                "storing file version {} is not supported (this cardvault reads version {FILE_VERSION})",
                self.version
            )));
        }
        if !want.contains(&self.step) {
            let wanted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            return Err(Error::Usage(format!(
                "{doing} takes {}; this file is {}",
                wanted.join(" or "),
                self.step
            )));
        }
        let bad = |what: &str| {
            Error::Data(format!(
                "the storing file's {what} is damaged (not what its step writes)"
            ))
        };
        let blob = from_hex(&self.blob).ok_or_else(|| bad("blob"))?;
        let card_certificate = from_hex(&self.card_certificate).ok_or_else(|| bad("card certificate"))?;
        let (request, sar, sa) = match self.step {
            Step::Request => (StoringRequest::parse(&blob).ok_or_else(|| bad("request"))?, None, None),
            Step::Sar => {
                let s = Sar::parse(&blob).ok_or_else(|| bad("SAR"))?;
                (s.request.clone(), Some(s), None)
            }
            Step::Sa => match Authorization::parse(&blob) {
                Some(Authorization::Sa(s)) => (s.sar.request.clone(), None, Some(s)),
                _ => return Err(bad("SA")),
            },
        };
        let sdi = &request.sdi;
        let mismatch = |field: &str, file: String, signed: String| {
            Error::Data(format!(
                "the storing file says {field} {file} but the signed request says {signed}: the file was edited"
            ))
        };
        if sdi.app != self.application {
            return Err(mismatch(
                "application",
                self.application.to_string(),
                sdi.app.to_string(),
            ));
        }
        if sdi.op.as_str() != self.operation {
            return Err(mismatch("operation", self.operation.clone(), sdi.op.to_string()));
        }
        if sdi.size != self.data_size || to_hex(&sdi.hash) != self.data_hash.to_ascii_lowercase() {
            return Err(mismatch(
                "data",
                format!("{} bytes {}", self.data_size, self.data_hash),
                format!("{} bytes {}", sdi.size, to_hex(&sdi.hash)),
            ));
        }
        if sha256(&card_certificate) != request.card_cert_hash {
            return Err(Error::Data(
                "the storing file's card certificate is not the one the card's request names".into(),
            ));
        }
        Ok(Checked {
            request,
            card_certificate,
            sar,
            sa,
        })
    }

    fn with_step(&self, step: Step, signer: SignerInfo, blob: Vec<u8>) -> StoringFile {
        let mut f = self.clone();
        f.step = step;
        f.signers.push(signer);
        f.blob = to_hex(&blob);
        f
    }

    /// SHA-256 (hex) of the card's request: the id of this storing.
    pub fn request_id(&self) -> Result<String> {
        let c = self.checked(&[Step::Request, Step::Sar, Step::Sa], "reading a storing file")?;
        Ok(to_hex(&sha256(&c.request.encode())))
    }
}

/// Check that the card's storing certificate is under a trusted issuer root
/// and names the file's card, and that the card signed the request.
fn check_card(file: &StoringFile, c: &Checked, issuer_roots: &[X509]) -> Result<()> {
    let number = storing::verify_card_signing_certificate(issuer_roots, &c.card_certificate).map_err(|e| {
        Error::Data(format!(
            "the card's storing certificate is not from a trusted issuer: {e}"
        ))
    })?;
    if number != file.card_number {
        return Err(Error::Data(format!(
            "the file names card {} but the card's certificate is card {number}",
            file.card_number
        )));
    }
    if !c.request.verify_card_signature(&c.card_certificate) {
        return Err(Error::Data(
            "the card's signature over the request does not verify".into(),
        ));
    }
    Ok(())
}

/// Step 2: the first party checks the card's request and countersigns it
/// (the SAR).
pub fn countersign(file: &StoringFile, me: &PartyCredentials, issuer_roots: &[X509]) -> Result<StoringFile> {
    let c = file.checked(&[Step::Request], "countersign")?;
    check_card(file, &c, issuer_roots)?;
    let sar =
        Sar::sign(c.request, me.party, me.certificate.clone(), &me.key).map_err(|e| Error::Data(e.to_string()))?;
    Ok(file.with_step(
        Step::Sar,
        SignerInfo {
            party: me.party.to_string(),
            name: me.name.clone(),
        },
        sar.encode(),
    ))
}

/// Step 3: the other party checks the SAR (card, first party under its
/// registrar) and signs the SA.
pub fn authorize(
    file: &StoringFile,
    me: &PartyCredentials,
    roots: &RegistrarRoots,
    issuer_roots: &[X509],
) -> Result<StoringFile> {
    let c = file.checked(&[Step::Sar], "authorize")?;
    check_card(file, &c, issuer_roots)?;
    let sar = c.sar.expect("step sar");
    if sar.first.party == me.party {
        return Err(Error::Usage(format!(
            "the SAR is already signed by the {}; the SA must be signed by the {}",
            me.party,
            me.party.other()
        )));
    }
    Authorization::Sar(sar.clone())
        .verify(roots, &c.card_certificate)
        .map_err(|e| Error::Data(format!("the SAR does not verify: {e}")))?;
    let sa = Sa::sign(sar, me.party, me.certificate.clone(), &me.key).map_err(|e| Error::Data(e.to_string()))?;
    Ok(file.with_step(
        Step::Sa,
        SignerInfo {
            party: me.party.to_string(),
            name: me.name.clone(),
        },
        Authorization::Sa(sa).encode(),
    ))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub card_number: String,
    pub application: u8,
    pub operation: String,
    pub data_size: u32,
    pub data_hash: String,
    pub record: StoringRecord,
}

/// Why the card refused an authorization (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoringRefusal {
    #[error("the authorization is for card {authorized}, not this card ({card}); nothing was written")]
    OtherCard { authorized: String, card: String },
    #[error("the authorization names another storing certificate than this card's; nothing was written")]
    OtherCertificate,
    #[error("the data is not the data the authorization names ({authorized_size} bytes, SHA-256 {authorized_hash}; given {size} bytes, SHA-256 {hash}); nothing was written")]
    OtherData {
        authorized_size: u32,
        authorized_hash: String,
        size: usize,
        hash: String,
    },
    #[error("the card refused the authorization ({0}): it is not for this application, not for the card's outstanding request (used or replaced), not signed by the parties the application requires, or a certificate is not valid; nothing was written, and a new request is needed")]
    Refused(crate::apdu::StatusWord),
}

/// Step 4: check that the authorization is for this card and this data,
/// present it to the card, and record what the card accepted.
pub fn apply(
    card: &mut CardClient<'_>,
    pin: &[u8],
    file: &StoringFile,
    data: Option<&[u8]>,
    vault: &mut Vault,
) -> Result<ApplyReport> {
    let c = file.checked(&[Step::Sa, Step::Sar], "apply")?;
    let auth = match (c.sa, c.sar) {
        (Some(sa), _) => Authorization::Sa(sa),
        (None, Some(sar)) => Authorization::Sar(sar),
        _ => unreachable!("checked for sa or sar"),
    };
    let sdi = c.request.sdi.clone();
    let data = match sdi.op {
        Operation::Store => {
            data.ok_or_else(|| Error::Usage("storing needs the data the authorization names".into()))?
        }
        Operation::Delete => &[][..],
    };
    if sdi.op == Operation::Store && (data.len() as u64 != sdi.size as u64 || sha256(data) != sdi.hash) {
        return Err(Error::Refused(
            StoringRefusal::OtherData {
                authorized_size: sdi.size,
                authorized_hash: to_hex(&sdi.hash),
                size: data.len(),
                hash: to_hex(&sha256(data)),
            }
            .to_string(),
        ));
    }
    card.verify_pin(pin)?;
    let number = session_card_number(card)?;
    if number != file.card_number {
        return Err(Error::Refused(
            StoringRefusal::OtherCard {
                authorized: file.card_number.clone(),
                card: number,
            }
            .to_string(),
        ));
    }
    if card.storing_certificate()?.map(|der| sha256(&der)) != Some(c.request.card_cert_hash) {
        return Err(Error::Refused(StoringRefusal::OtherCertificate.to_string()));
    }
    let sw = card.store_under_authorization(sdi.app, &auth, data)?;
    if !sw.is_ok() {
        return Err(Error::Refused(StoringRefusal::Refused(sw).to_string()));
    }
    let (first, second) = match &auth {
        Authorization::Sa(sa) => (&sa.sar.first, Some(&sa.second)),
        Authorization::Sar(sar) => (&sar.first, None),
    };
    // Names from the certificates the card accepted, not from the summary.
    let name_of = |p: Party| {
        [Some(first), second]
            .into_iter()
            .flatten()
            .find(|s| s.party == p)
            .and_then(|s| X509::from_der(&s.certificate).ok())
            .and_then(|c| storing::common_name(&c))
    };
    let sar_bytes = match &auth {
        Authorization::Sa(sa) => sa.sar.encode(),
        Authorization::Sar(sar) => sar.encode(),
    };
    let mut record = StoringRecord {
        id: 0,
        card_number: number.clone(),
        application: sdi.app,
        operation: sdi.op.to_string(),
        data_size: sdi.size,
        data_hash: to_hex(&sdi.hash),
        data_cert_id: Some(sdi.data_cert_id.clone()).filter(|s| !s.is_empty()),
        request_id: to_hex(&sha256(&c.request.encode())),
        sar_id: to_hex(&sha256(&sar_bytes)),
        sa_id: second.map(|_| to_hex(&sha256(&auth.encode()))),
        first_party: first.party.to_string(),
        issuer: name_of(Party::Issuer),
        provider: name_of(Party::Provider),
        applied_at: String::new(),
    };
    record.id = vault.record_storing(&record)?;
    if let Some(r) = vault.latest_storing(&number, sdi.app)? {
        record = r;
    }
    vault.audit(crate::vault::AuditEvent {
        event: "store",
        card: &number,
        peer: None,
        result: "ok",
        details: serde_json::json!({
            "application": sdi.app,
            "operation": sdi.op.as_str(),
            "data_hash": to_hex(&sdi.hash),
            "request_id": record.request_id,
        }),
    })?;
    Ok(ApplyReport {
        card_number: number,
        application: sdi.app,
        operation: sdi.op.to_string(),
        data_size: sdi.size,
        data_hash: to_hex(&sdi.hash),
        record,
    })
}
