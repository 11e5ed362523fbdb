//! Storing authorization (NTT, 004's FIG. 1; SPEC 3.4): data lands in or is
//! deleted from a card's application only when the card's issuer and the
//! data's provider both signed for this card, this data and this moment.
//!
//! The parties and what certifies them:
//!
//! - an **issuer registrar** (a root) certifies issuers: the issuer
//!   registration certificate, **IRC** ([`Party::Issuer`]);
//! - a **data registrar** (a root) certifies data providers: the data provider
//!   registration certificate, **DPR** ([`Party::Provider`]), and the data they
//!   offer: the data certificate, **SDCI** ([`DataCertificate`]);
//! - the **card** signs its storing request with its storing key, certified by
//!   the card's issuer like its registration certificate
//!   ([`issue_card_signing_certificate`]). The SCP11 key is for key agreement
//!   only (its certificate says so), so the card has a second key for
//!   signatures rather than use one key for both.
//!
//! The exchange (steps 21-24 via the issuer, 31-34 via the provider):
//! the card makes a [`StoringRequest`] (its certificate's hash, the
//! [`StoringDataInfo`] and a fresh challenge, signed); the first party
//! countersigns it into a [`Sar`]; the second signs the [`Sa`]. The card
//! checks the whole chain ([`Authorization::verify`]) and its own names
//! before it writes. Every signed message starts with its own label, so no
//! signature of one step is one of another.
//!
//! docs/FORMATS.md ("Storing authorization") gives every layout below.

use crate::cert::{self, CardSubject, CertError};
use crate::crypto::{self, KeyPair};
use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509KeyUsage, X509NameBuilder, X509};
use std::fmt;
use std::str::FromStr;

/// Label of the card's signature over its storing request.
pub const REQUEST_LABEL: &[u8] = b"cardvault storing request v1";
/// Label of the first party's signature (SAR).
pub const SAR_LABEL: &[u8] = b"cardvault storing authorization request v1";
/// Label of the second party's signature (SA).
pub const SA_LABEL: &[u8] = b"cardvault storing authorization v1";
/// Label of the data registrar's signature over a data item (SDCI).
pub const DATA_CERTIFICATE_LABEL: &[u8] = b"cardvault data certificate v1";
/// Length of the card's storing challenge.
pub const CHALLENGE_LEN: usize = 16;
/// Length of an ECDSA P-256 signature (r || s).
pub const SIGNATURE_LEN: usize = 64;
/// Longest data certificate id and party name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest party certificate (DER) an authorization may carry.
pub const MAX_CERTIFICATE_LEN: usize = 2048;
/// Subject OU of an issuer registration certificate (IRC).
pub const OU_ISSUER: &str = "issuer";
/// Subject OU of a data provider registration certificate (DPR).
pub const OU_PROVIDER: &str = "data provider";
/// Subject OU of a card's storing (signing) key certificate.
pub const OU_CARD_SIGNING: &str = "card storing key";

/// Store or delete: what the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Store = 1,
    Delete = 2,
}

impl Operation {
    pub fn from_byte(b: u8) -> Option<Operation> {
        match b {
            1 => Some(Operation::Store),
            2 => Some(Operation::Delete),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Store => "store",
            Operation::Delete => "delete",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "store" => Ok(Operation::Store),
            "delete" => Ok(Operation::Delete),
            _ => Err(format!("'{s}' is not an operation (store or delete)")),
        }
    }
}

/// A party that signs a storing authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The card's issuer, certified by the issuer registrar (IRC).
    Issuer = 1,
    /// A data provider, certified by the data registrar (DPR).
    Provider = 2,
}

impl Party {
    pub fn from_byte(b: u8) -> Option<Party> {
        match b {
            1 => Some(Party::Issuer),
            2 => Some(Party::Provider),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Issuer => "issuer",
            Party::Provider => "provider",
        }
    }
    /// The subject OU of this party's registration certificate.
    pub fn unit(self) -> &'static str {
        match self {
            Party::Issuer => OU_ISSUER,
            Party::Provider => OU_PROVIDER,
        }
    }
    pub fn other(self) -> Party {
        match self {
            Party::Issuer => Party::Provider,
            Party::Provider => Party::Issuer,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Party {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "issuer" => Ok(Party::Issuer),
            "provider" => Ok(Party::Provider),
            _ => Err(format!("'{s}' is not a party (issuer or provider)")),
        }
    }
}

/// Who may write an application's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageRule {
    /// The holder, with the PIN (WRITE MEMORY), as for holder-managed data.
    #[default]
    Holder,
    /// Only under a storing authorization of the issuer and the owner.
    Authorized,
    /// Only under a storing authorization the issuer signed.
    IssuerOnly,
}

impl StorageRule {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageRule::Holder => "holder",
            StorageRule::Authorized => "authorized",
            StorageRule::IssuerOnly => "issuer-only",
        }
    }
    /// The rule's code in the card's application table (GET DATA).
    pub fn code(self) -> u8 {
        match self {
            StorageRule::Holder => 0,
            StorageRule::Authorized => 1,
            StorageRule::IssuerOnly => 2,
        }
    }
    pub fn from_code(b: u8) -> Option<StorageRule> {
        match b {
            0 => Some(StorageRule::Holder),
            1 => Some(StorageRule::Authorized),
            2 => Some(StorageRule::IssuerOnly),
            _ => None,
        }
    }
}

impl fmt::Display for StorageRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "holder" => Ok(StorageRule::Holder),
            "authorized" => Ok(StorageRule::Authorized),
            "issuer-only" => Ok(StorageRule::IssuerOnly),
            _ => Err(format!(
                "'{s}' is not a storage rule (holder, authorized or issuer-only)"
            )),
        }
    }
}

/// A byte reader that refuses to run past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn lv2(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_be_bytes(self.array::<2>()?) as usize;
        self.take(n)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn push_lv2(v: &mut Vec<u8>, data: &[u8]) {
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
}

/// The storing data information (SDI): which application, which operation,
/// and the data (size, SHA-256, data certificate id). For a delete, size and
/// hash name the data the application holds (the card checks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoringDataInfo {
    pub app: u8,
    pub op: Operation,
    pub size: u32,
    pub hash: [u8; 32],
    /// The SDCI id of the data (empty when the data has none).
    pub data_cert_id: String,
}

impl StoringDataInfo {
    /// app (1) || op (1) || size (4) || hash (32) || len (1) || data certificate id.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.app, self.op as u8];
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v.push(self.data_cert_id.len() as u8);
        v.extend_from_slice(self.data_cert_id.as_bytes());
        v
    }

    fn read(r: &mut Reader<'_>) -> Option<StoringDataInfo> {
        let app = r.byte()?;
        let op = Operation::from_byte(r.byte()?)?;
        let size = u32::from_be_bytes(r.array()?);
        let hash = r.array()?;
        let n = r.byte()? as usize;
        if n > MAX_NAME_LEN {
            return None;
        }
        let id = String::from_utf8(r.take(n)?.to_vec()).ok()?;
        Some(StoringDataInfo {
            app,
            op,
            size,
            hash,
            data_cert_id: id,
        })
    }

    /// Parse exactly one SDI (the STORING REQUEST command data).
    pub fn parse(data: &[u8]) -> Option<StoringDataInfo> {
        let mut r = Reader(data);
        let s = Self::read(&mut r)?;
        r.done().then_some(s)
    }

    /// Whether the id fits its length byte.
    pub fn valid(&self) -> bool {
        self.data_cert_id.len() <= MAX_NAME_LEN
    }
}

/// The card's storing request (step 21/31): the SHA-256 of the card's
/// storing key certificate, the SDI and a fresh card challenge, signed by the
/// card's storing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoringRequest {
    pub card_cert_hash: [u8; 32],
    pub sdi: StoringDataInfo,
    pub challenge: [u8; CHALLENGE_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

impl StoringRequest {
    /// cert hash (32) || SDI || challenge (16): what the card signs after
    /// [`REQUEST_LABEL`].
    pub fn body(&self) -> Vec<u8> {
        let mut v = self.card_cert_hash.to_vec();
        v.extend_from_slice(&self.sdi.encode());
        v.extend_from_slice(&self.challenge);
        v
    }

    /// The message the card signs.
    pub fn message(card_cert_hash: &[u8; 32], sdi: &StoringDataInfo, challenge: &[u8; CHALLENGE_LEN]) -> Vec<u8> {
        let mut m = REQUEST_LABEL.to_vec();
        m.extend_from_slice(card_cert_hash);
        m.extend_from_slice(&sdi.encode());
        m.extend_from_slice(challenge);
        m
    }

    /// body || signature (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    fn read(r: &mut Reader<'_>) -> Option<StoringRequest> {
        Some(StoringRequest {
            card_cert_hash: r.array()?,
            sdi: StoringDataInfo::read(r)?,
            challenge: r.array()?,
            signature: r.array()?,
        })
    }

    pub fn parse(data: &[u8]) -> Option<StoringRequest> {
        let mut r = Reader(data);
        let s = Self::read(&mut r)?;
        r.done().then_some(s)
    }

    /// Check the card's signature under the card's storing key certificate
    /// (DER), and that the request names that certificate.
    pub fn verify_card_signature(&self, card_cert_der: &[u8]) -> bool {
        if crypto::sha256(card_cert_der) != self.card_cert_hash {
            return false;
        }
        let Ok(cert) = X509::from_der(card_cert_der) else {
            return false;
        };
        let Ok(key) = cert::ecka_public_key(&cert) else {
            return false;
        };
        let m = Self::message(&self.card_cert_hash, &self.sdi, &self.challenge);
        crypto::verify_p256(&key, &m, &self.signature).unwrap_or(false)
    }
}

/// One party's countersignature: who (party), under which registration
/// certificate (DER, IRC or DPR), and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Countersignature {
    pub party: Party,
    pub certificate: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Countersignature {
    fn encode_into(&self, v: &mut Vec<u8>) {
        v.push(self.party as u8);
        push_lv2(v, &self.certificate);
        v.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Option<Countersignature> {
        let party = Party::from_byte(r.byte()?)?;
        let certificate = r.lv2()?;
        if certificate.len() > MAX_CERTIFICATE_LEN {
            return None;
        }
        Some(Countersignature {
            party,
            certificate: certificate.to_vec(),
            signature: r.array()?,
        })
    }
}

/// What a countersignature signs: label || len (2) || signed || party (1) ||
/// SHA-256 of the signer's certificate.
fn countersign_message(label: &[u8], signed: &[u8], party: Party, certificate: &[u8]) -> Vec<u8> {
    let mut m = label.to_vec();
    push_lv2(&mut m, signed);
    m.push(party as u8);
    m.extend_from_slice(&crypto::sha256(certificate));
    m
}

/// The storing authorization request (SAR, step 22/32): the card's request
/// countersigned by the first party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sar {
    pub request: StoringRequest,
    pub first: Countersignature,
}

impl Sar {
    /// The message the first party signs.
    pub fn message(request: &StoringRequest, party: Party, certificate: &[u8]) -> Vec<u8> {
        countersign_message(SAR_LABEL, &request.encode(), party, certificate)
    }

    /// Countersign `request` as `party` under `certificate` (DER) with `key`.
    pub fn sign(request: StoringRequest, party: Party, certificate: Vec<u8>, key: &KeyPair) -> cert::Result<Sar> {
        let sig = crypto::sign_p256(key, &Self::message(&request, party, &certificate))?;
        Ok(Sar {
            request,
            first: Countersignature {
                party,
                certificate,
                signature: sig.try_into().map_err(|_| CertError::Malformed("signature length"))?,
            },
        })
    }

    /// len (2) || request || first party (1) || len (2) || certificate || signature (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        push_lv2(&mut v, &self.request.encode());
        self.first.encode_into(&mut v);
        v
    }

    fn read(r: &mut Reader<'_>) -> Option<Sar> {
        let request = StoringRequest::parse(r.lv2()?)?;
        Some(Sar {
            request,
            first: Countersignature::read(r)?,
        })
    }

    pub fn parse(data: &[u8]) -> Option<Sar> {
        let mut r = Reader(data);
        let s = Self::read(&mut r)?;
        r.done().then_some(s)
    }
}

/// The storing authorization (SA, step 23/33): the SAR signed by the other party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sa {
    pub sar: Sar,
    pub second: Countersignature,
}

impl Sa {
    /// The message the second party signs.
    pub fn message(sar: &Sar, party: Party, certificate: &[u8]) -> Vec<u8> {
        countersign_message(SA_LABEL, &sar.encode(), party, certificate)
    }

    pub fn sign(sar: Sar, party: Party, certificate: Vec<u8>, key: &KeyPair) -> cert::Result<Sa> {
        let sig = crypto::sign_p256(key, &Self::message(&sar, party, &certificate))?;
        Ok(Sa {
            sar,
            second: Countersignature {
                party,
                certificate,
                signature: sig.try_into().map_err(|_| CertError::Malformed("signature length"))?,
            },
        })
    }

    /// len (2) || SAR || second party (1) || len (2) || certificate || signature (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        push_lv2(&mut v, &self.sar.encode());
        self.second.encode_into(&mut v);
        v
    }

    fn read(r: &mut Reader<'_>) -> Option<Sa> {
        let sar = Sar::parse(r.lv2()?)?;
        Some(Sa {
            sar,
            second: Countersignature::read(r)?,
        })
    }
}

/// What STORE DATA UNDER AUTHORIZATION presents: an SA (both parties), or an
/// SAR alone (one party; the provider alone, where the application allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Sar(Sar),
    Sa(Sa),
}

/// Kind byte of an [`Authorization`].
pub const KIND_SAR: u8 = 1;
pub const KIND_SA: u8 = 2;

/// Who signed a verified authorization, by the CN of their registration certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signers {
    pub issuer: Option<String>,
    pub provider: Option<String>,
}

/// The trust anchors a storing authorization is checked against.
#[derive(Debug, Clone)]
pub struct RegistrarRoots {
    pub issuer_registrar: X509,
    pub data_registrar: X509,
}

impl RegistrarRoots {
    pub fn root(&self, party: Party) -> &X509 {
        match party {
            Party::Issuer => &self.issuer_registrar,
            Party::Provider => &self.data_registrar,
        }
    }
}

/// Why an authorization does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("the {0}'s certificate does not verify under the {1} registrar root: {2}")]
    Certificate(Party, &'static str, String),
    #[error("the {0}'s signature does not verify")]
    Signature(Party),
    #[error("the card's signature over the request does not verify")]
    CardSignature,
    #[error("both signatures are the {0}'s: the other party must sign too")]
    SameParty(Party),
}

impl Authorization {
    /// kind (1) || SAR or SA.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Authorization::Sar(s) => [&[KIND_SAR][..], &s.encode()].concat(),
            Authorization::Sa(s) => [&[KIND_SA][..], &s.encode()].concat(),
        }
    }

    pub fn parse(data: &[u8]) -> Option<Authorization> {
        let (&kind, rest) = data.split_first()?;
        let mut r = Reader(rest);
        let a = match kind {
            KIND_SAR => Authorization::Sar(Sar::read(&mut r)?),
            KIND_SA => Authorization::Sa(Sa::read(&mut r)?),
            _ => return None,
        };
        r.done().then_some(a)
    }

    pub fn request(&self) -> &StoringRequest {
        match self {
            Authorization::Sar(s) => &s.request,
            Authorization::Sa(s) => &s.sar.request,
        }
    }

    /// Check every signature and certificate: the card's signature under
    /// `card_cert_der` (the card knows its own; a party takes it from the
    /// request file), each party's registration certificate under its
    /// registrar root at the current time, each countersignature, and that
    /// the two parties differ. Names (this card, this application, which
    /// issuer, which provider) are the caller's to check.
    pub fn verify(&self, roots: &RegistrarRoots, card_cert_der: &[u8]) -> Result<Signers, AuthorizationError> {
        if !self.request().verify_card_signature(card_cert_der) {
            return Err(AuthorizationError::CardSignature);
        }
        let mut signers = Signers::default();
        let mut check = |c: &Countersignature, message: Vec<u8>| -> Result<(), AuthorizationError> {
            let name = verify_party_certificate(roots.root(c.party), &c.certificate, c.party)?;
            let key = X509::from_der(&c.certificate)
                .ok()
                .and_then(|x| cert::ecka_public_key(&x).ok())
                .ok_or(AuthorizationError::Signature(c.party))?;
            if !crypto::verify_p256(&key, &message, &c.signature).unwrap_or(false) {
                return Err(AuthorizationError::Signature(c.party));
            }
            let slot = match c.party {
                Party::Issuer => &mut signers.issuer,
                Party::Provider => &mut signers.provider,
            };
            if slot.is_some() {
                return Err(AuthorizationError::SameParty(c.party));
            }
            *slot = Some(name);
            Ok(())
        };
        match self {
            Authorization::Sar(s) => check(&s.first, Sar::message(&s.request, s.first.party, &s.first.certificate))?,
            Authorization::Sa(s) => {
                check(
                    &s.sar.first,
                    Sar::message(&s.sar.request, s.sar.first.party, &s.sar.first.certificate),
                )?;
                check(&s.second, Sa::message(&s.sar, s.second.party, &s.second.certificate))?;
            }
        }
        Ok(signers)
    }
}

/// Verify a party's registration certificate (IRC or DPR, DER) under its
/// registrar root, at the current time: a leaf of the party's OU with key
/// usage digitalSignature on a P-256 key. Returns the party's name (CN).
pub fn verify_party_certificate(root: &X509, der: &[u8], party: Party) -> Result<String, AuthorizationError> {
    let registrar = match party {
        Party::Issuer => "issuer",
        Party::Provider => "data",
    };
    let fail = |why: String| AuthorizationError::Certificate(party, registrar, why);
    let c = X509::from_der(der).map_err(|_| fail("not a DER certificate".into()))?;
    cert::verify_chain(std::slice::from_ref(root), std::slice::from_ref(&c)).map_err(|e| fail(e.to_string()))?;
    match c.key_usage() {
        Some(ku) if ku.contains(X509KeyUsage::DIGITAL_SIGNATURE) => {}
        _ => return Err(fail("not a signing certificate".into())),
    }
    let n = c.subject_name();
    if cert::name_entry(n, Nid::ORGANIZATIONALUNITNAME).as_deref() != Some(party.unit()) {
        return Err(fail(format!("not a {} registration certificate", party)));
    }
    cert::ecka_public_key(&c).map_err(|e| fail(e.to_string()))?;
    cert::name_entry(n, Nid::COMMONNAME).ok_or_else(|| fail("no common name".into()))
}

/// The data certificate (SDCI): the data registrar's signature over a data
/// item: its id, its provider, its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCertificate {
    pub id: String,
    pub provider: String,
    pub size: u32,
    pub hash: [u8; 32],
    pub signature: [u8; SIGNATURE_LEN],
}

impl DataCertificate {
    /// label || len (1) || id || len (1) || provider || size (4) || hash (32).
    pub fn message(id: &str, provider: &str, size: u32, hash: &[u8; 32]) -> Vec<u8> {
        let mut m = DATA_CERTIFICATE_LABEL.to_vec();
        m.extend_from_slice(&crate::backup::lv(id));
        m.extend_from_slice(&crate::backup::lv(provider));
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(hash);
        m
    }

    /// The data registrar certifies `data` as item `id` of `provider`.
    pub fn sign(registrar_key: &KeyPair, id: &str, provider: &str, data: &[u8]) -> cert::Result<DataCertificate> {
        if id.is_empty() || id.len() > MAX_NAME_LEN || provider.len() > MAX_NAME_LEN {
            return Err(CertError::Malformed(
                "data certificate id or provider name is not 1 to 64 bytes",
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| CertError::Malformed("data over 4 GiB"))?;
        let hash = crypto::sha256(data);
        let sig = crypto::sign_p256(registrar_key, &Self::message(id, provider, size, &hash))?;
        Ok(DataCertificate {
            id: id.into(),
            provider: provider.into(),
            size,
            hash,
            signature: sig.try_into().map_err(|_| CertError::Malformed("signature length"))?,
        })
    }

    /// Whether the data registrar (root certificate) signed this, and `data`
    /// is the data it names.
    pub fn verify(&self, data_registrar: &X509, data: &[u8]) -> bool {
        let Ok(key) = cert::ecka_public_key(data_registrar) else {
            return false;
        };
        let m = Self::message(&self.id, &self.provider, self.size, &self.hash);
        crypto::verify_p256(&key, &m, &self.signature).unwrap_or(false)
            && data.len() as u64 == self.size as u64
            && crypto::sha256(data) == self.hash
    }
}

fn random_serial() -> cert::Result<Asn1Integer> {
    let mut b = crypto::random::<16>();
    b[0] &= 0x7F;
    b[0] |= 0x01;
    Ok(BigNum::from_slice(&b)?.to_asn1_integer()?)
}

/// A signing leaf under `issuer`: subject O=cardvault, OU, CN (and more),
/// key usage digitalSignature, valid between the two times (never beyond the issuer).
fn issue_signing_leaf(
    issuer_key: &KeyPair,
    issuer: &X509,
    public: &[u8],
    subject: &[(Nid, &str)],
    not_before: &Asn1TimeRef,
    not_after: &Asn1TimeRef,
) -> cert::Result<X509> {
    let pk = crypto::public_key(public)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    let mut n = X509NameBuilder::new()?;
    for (nid, v) in subject {
        n.append_entry_by_nid(*nid, v)?;
    }
    let n = n.build();
    b.set_subject_name(&n)?;
    b.set_issuer_name(issuer.subject_name())?;
    b.set_pubkey(&pk)?;
    b.set_not_before(not_before)?;
    if not_after > issuer.not_after() {
        b.set_not_after(issuer.not_after())?;
    } else {
        b.set_not_after(not_after)?;
    }
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(issuer), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(issuer), None))?;
    b.append_extension(aki)?;
    let signer = issuer_key.pkey()?;
    b.sign(&signer, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A registrar root (issuer registrar or data registrar): self-signed CA,
/// the same profile as the issuer root ([`cert::issue_root`]).
pub fn issue_registrar_root(key: &KeyPair, common_name: &str, not_before: &str, not_after: &str) -> cert::Result<X509> {
    cert::issue_root(key, common_name, not_before, not_after)
}

/// A party's registration certificate (IRC for an issuer, DPR for a data
/// provider) over its signing key, from its registrar: subject O=cardvault,
/// OU = [`Party::unit`], CN = `name`; valid from `not_before` for `days` days.
pub fn issue_party_certificate(
    registrar_key: &KeyPair,
    registrar: &X509,
    public: &[u8],
    party: Party,
    name: &str,
    not_before: &Asn1TimeRef,
    days: u32,
) -> cert::Result<X509> {
    let entries = [
        (Nid::ORGANIZATIONNAME, "cardvault"),
        (Nid::ORGANIZATIONALUNITNAME, party.unit()),
        (Nid::COMMONNAME, name),
    ];
    let not_after = Asn1Time::from_unix(
        asn1_unix(not_before)?
            .checked_add(days as i64 * 86_400)
            .ok_or(CertError::Malformed("validity"))?,
    )?;
    issue_signing_leaf(registrar_key, registrar, public, &entries, not_before, &not_after)
}

/// Seconds since the epoch of an ASN.1 time.
fn asn1_unix(t: &Asn1TimeRef) -> cert::Result<i64> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(d.days as i64 * 86_400 + d.secs as i64)
}

/// The card's storing key certificate, from the card's issuer: the same
/// subject as the registration certificate but OU = [`OU_CARD_SIGNING`] and
/// key usage digitalSignature.
pub fn issue_card_signing_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    card_public: &[u8],
    subject: &CardSubject,
    days: u32,
) -> cert::Result<X509> {
    let mut entries = vec![
        (Nid::ORGANIZATIONNAME, "cardvault"),
        (Nid::ORGANIZATIONALUNITNAME, OU_CARD_SIGNING),
        (Nid::SERIALNUMBER, subject.card_number.as_str()),
        (Nid::COMMONNAME, subject.card_number.as_str()),
    ];
    if !subject.role.is_empty() {
        entries.push((Nid::TITLE, subject.role.as_str()));
    }
    if let Some(m) = subject.member_number.as_deref().filter(|m| !m.is_empty()) {
        entries.push((Nid::USERID, m));
    }
    let now = Asn1Time::days_from_now(0)?;
    let after = Asn1Time::days_from_now(days)?;
    issue_signing_leaf(issuer_key, issuer, card_public, &entries, &now, &after)
}

/// A card's signing key as its certificate states it (the card's storing
/// key: it signs storing requests and DESTROY KEY receipts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSigningKey {
    /// The card number (serialNumber).
    pub card_number: String,
    /// The card's role (title; empty in a certificate without one).
    pub role: String,
    /// The certified P-256 public key (65 bytes).
    pub public_key: Vec<u8>,
}

/// Verify a card's signing key certificate (one DER certificate) under
/// `trusted` issuer roots: chain and validity, OU [`OU_CARD_SIGNING`], key
/// usage digitalSignature, a card number. Returns what it certifies.
pub fn verify_card_signing_key(trusted: &[X509], der: &[u8]) -> cert::Result<CardSigningKey> {
    let c = match cert::split_certificates(der) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        _ => return Err(CertError::Malformed("not one DER certificate")),
    };
    cert::verify_chain(trusted, std::slice::from_ref(&c))?;
    let n = c.subject_name();
    if cert::name_entry(n, Nid::ORGANIZATIONALUNITNAME).as_deref() != Some(OU_CARD_SIGNING) {
        return Err(CertError::Untrusted("not a card signing key certificate".into()));
    }
    match c.key_usage() {
        Some(ku) if ku.contains(X509KeyUsage::DIGITAL_SIGNATURE) => {}
        _ => return Err(CertError::Untrusted("not a signing certificate".into())),
    }
    Ok(CardSigningKey {
        card_number: cert::name_entry(n, Nid::SERIALNUMBER).ok_or(CertError::Malformed("no card number"))?,
        role: cert::name_entry(n, Nid::TITLE).unwrap_or_default(),
        public_key: cert::ecka_public_key(&c)?,
    })
}

/// What a card signing key certificate (one DER certificate) says, without
/// checking who signed it: for a terminal that only relays it.
pub fn card_signing_key_unchecked(der: &[u8]) -> Option<CardSigningKey> {
    let c = match cert::split_certificates(der) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        _ => return None,
    };
    let n = c.subject_name();
    if cert::name_entry(n, Nid::ORGANIZATIONALUNITNAME).as_deref() != Some(OU_CARD_SIGNING) {
        return None;
    }
    Some(CardSigningKey {
        card_number: cert::name_entry(n, Nid::SERIALNUMBER)?,
        role: cert::name_entry(n, Nid::TITLE).unwrap_or_default(),
        public_key: cert::ecka_public_key(&c).ok()?,
    })
}

/// Verify a card's storing key certificate (DER) under the issuer roots the
/// terminal trusts; returns the card number it names.
pub fn verify_card_signing_certificate(trusted: &[X509], der: &[u8]) -> cert::Result<String> {
    verify_card_signing_key(trusted, der).map(|k| k.card_number)
}

/// The CN of a certificate's subject (a party's or a root's name).
pub fn common_name(c: &X509) -> Option<String> {
    cert::name_entry(c.subject_name(), Nid::COMMONNAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct World {
        roots: RegistrarRoots,
        issuer_root_key: KeyPair,
        issuer_root: X509,
        irk: KeyPair,
        drk: KeyPair,
    }

    fn world() -> World {
        let irk = KeyPair::generate().unwrap();
        let drk = KeyPair::generate().unwrap();
        let issuer_root_key = KeyPair::generate().unwrap();
        World {
            roots: RegistrarRoots {
                issuer_registrar: issue_registrar_root(&irk, "ir", "20250101000000Z", "20500101000000Z").unwrap(),
                data_registrar: issue_registrar_root(&drk, "dr", "20250101000000Z", "20500101000000Z").unwrap(),
            },
            issuer_root: cert::issue_root(&issuer_root_key, "issuer", "20250101000000Z", "20500101000000Z").unwrap(),
            issuer_root_key,
            irk,
            drk,
        }
    }

    fn party(w: &World, p: Party, name: &str, days: u32) -> (KeyPair, Vec<u8>) {
        let k = KeyPair::generate().unwrap();
        let (rk, root) = match p {
            Party::Issuer => (&w.irk, &w.roots.issuer_registrar),
            Party::Provider => (&w.drk, &w.roots.data_registrar),
        };
        let now = Asn1Time::days_from_now(0).unwrap();
        let c = issue_party_certificate(rk, root, &k.public_bytes(), p, name, &now, days).unwrap();
        (k, c.to_der().unwrap())
    }

    fn request(w: &World) -> (StoringRequest, Vec<u8>) {
        let card = KeyPair::generate().unwrap();
        let subject = CardSubject {
            card_number: "1111222233334444".into(),
            role: "main".into(),
            member_number: None,
        };
        let c = issue_card_signing_certificate(&w.issuer_root_key, &w.issuer_root, &card.public_bytes(), &subject, 30)
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(
            verify_card_signing_certificate(std::slice::from_ref(&w.issuer_root), &c).unwrap(),
            "1111222233334444"
        );
        let sdi = StoringDataInfo {
            app: 4,
            op: Operation::Store,
            size: 3,
            hash: crypto::sha256(b"abc"),
            data_cert_id: "rec-1".into(),
        };
        let h = crypto::sha256(&c);
        let ch = [5u8; CHALLENGE_LEN];
        let sig = crypto::sign_p256(&card, &StoringRequest::message(&h, &sdi, &ch)).unwrap();
        let r = StoringRequest {
            card_cert_hash: h,
            sdi,
            challenge: ch,
            signature: sig.try_into().unwrap(),
        };
        (r, c)
    }

    #[test]
    fn both_orders_verify_and_round_trip() {
        let w = world();
        let (r, card_cert) = request(&w);
        assert_eq!(StoringRequest::parse(&r.encode()), Some(r.clone()));
        let (ik, ic) = party(&w, Party::Issuer, "the issuer", 30);
        let (pk, pc) = party(&w, Party::Provider, "the provider", 30);
        for (first, second) in [
            ((Party::Issuer, &ik, &ic), (Party::Provider, &pk, &pc)),
            ((Party::Provider, &pk, &pc), (Party::Issuer, &ik, &ic)),
        ] {
            let sar = Sar::sign(r.clone(), first.0, first.2.clone(), first.1).unwrap();
            let sa = Sa::sign(sar, second.0, second.2.clone(), second.1).unwrap();
            let a = Authorization::Sa(sa);
            let back = Authorization::parse(&a.encode()).unwrap();
            assert_eq!(back, a);
            let s = back.verify(&w.roots, &card_cert).unwrap();
            assert_eq!(s.issuer.as_deref(), Some("the issuer"));
            assert_eq!(s.provider.as_deref(), Some("the provider"));
        }
    }

    #[test]
    fn forgeries_are_refused() {
        let w = world();
        let (r, card_cert) = request(&w);
        let (ik, ic) = party(&w, Party::Issuer, "i", 30);
        let (pk, pc) = party(&w, Party::Provider, "p", 30);
        // A provider certified by the issuer registrar is no provider.
        let (fk, _) = party(&w, Party::Provider, "p", 30);
        let now = Asn1Time::days_from_now(0).unwrap();
        let wrong = issue_party_certificate(
            &w.irk,
            &w.roots.issuer_registrar,
            &fk.public_bytes(),
            Party::Provider,
            "p",
            &now,
            30,
        )
        .unwrap()
        .to_der()
        .unwrap();
        let sar = Sar::sign(r.clone(), Party::Issuer, ic.clone(), &ik).unwrap();
        let sa = Sa::sign(sar.clone(), Party::Provider, wrong, &fk).unwrap();
        assert!(matches!(
            Authorization::Sa(sa).verify(&w.roots, &card_cert),
            Err(AuthorizationError::Certificate(Party::Provider, ..))
        ));
        // The SAR signed with the provider's key under the issuer's certificate.
        let bad = Sar::sign(r.clone(), Party::Issuer, ic.clone(), &pk).unwrap();
        let sa = Sa::sign(bad, Party::Provider, pc.clone(), &pk).unwrap();
        assert_eq!(
            Authorization::Sa(sa).verify(&w.roots, &card_cert),
            Err(AuthorizationError::Signature(Party::Issuer))
        );
        // Both signatures by the issuer.
        let sa = Sa::sign(sar.clone(), Party::Issuer, ic.clone(), &ik).unwrap();
        assert_eq!(
            Authorization::Sa(sa).verify(&w.roots, &card_cert),
            Err(AuthorizationError::SameParty(Party::Issuer))
        );
        // An expired DPR.
        let old = Asn1Time::from_unix(1_700_000_000).unwrap();
        let expired = issue_party_certificate(
            &w.drk,
            &w.roots.data_registrar,
            &pk.public_bytes(),
            Party::Provider,
            "p",
            &old,
            1,
        )
        .unwrap()
        .to_der()
        .unwrap();
        let sa = Sa::sign(sar.clone(), Party::Provider, expired, &pk).unwrap();
        assert!(matches!(
            Authorization::Sa(sa).verify(&w.roots, &card_cert),
            Err(AuthorizationError::Certificate(Party::Provider, ..))
        ));
        // A changed SDI breaks the card's signature.
        let mut r2 = r.clone();
        r2.sdi.size = 4;
        let sar = Sar::sign(r2, Party::Issuer, ic, &ik).unwrap();
        assert_eq!(
            Authorization::Sar(sar).verify(&w.roots, &card_cert),
            Err(AuthorizationError::CardSignature)
        );
    }

    #[test]
    fn data_certificate_names_its_data() {
        let w = world();
        let d = DataCertificate::sign(&w.drk, "rec-1", "p", b"abc").unwrap();
        assert!(d.verify(&w.roots.data_registrar, b"abc"));
        assert!(!d.verify(&w.roots.data_registrar, b"abd"));
        assert!(!d.verify(&w.roots.issuer_registrar, b"abc"));
    }
}
