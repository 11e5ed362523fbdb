//! Card identity: the X.509 certificates of the SCP11 key agreement keys.
//!
//! - The **issuer root** (self-signed, P-256) is the trust anchor: installed
//!   on every card at manufacture, and configured in the terminal.
//! - A **card certificate** (the registration certificate) certifies the
//!   card's ECKA key, PK.SD.ECKA; the card returns it with GET DATA `BF21`
//!   and the terminal checks it before it opens SCP11 and sends a PIN.
//! - An **OCE certificate** certifies the issuer operator's ECKA key for
//!   SCP11a; the card checks it against its installed root.
//!
//! The profile of each is in docs/FORMATS.md ("Certificates").

use crate::crypto::{CryptoError, KeyPair, PUBLIC_KEY_LEN};
use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::PointConversionForm;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Builder, X509Extension, X509KeyUsage, X509NameBuilder, X509StoreContext, X509};

/// Tag of the certificate store data object (GET DATA P1P2, GlobalPlatform).
/// PUT DATA `BF21` (issuer session, before END PERSONALIZATION) stores the
/// registration certificate over the key of GENERATE ECKA KEY.
pub const TAG_CERTIFICATE_STORE: u16 = 0xBF21;
/// Tag of the installed trust anchor (PUT DATA P1P2, issuer session, before
/// END PERSONALIZATION): the issuer root the card checks OCE chains,
/// registration certificates and authorizations under.
pub const TAG_TRUST_ANCHOR: u16 = 0xBF22;

/// Role a factory certificate names: the card is blank, not yet issued.
pub const FACTORY_ROLE: &str = "blank";

/// OID of the card profile extension of a registration certificate (under
/// the UUID arc 2.25, which needs no registration): a non-critical extension
/// whose value is a UTF8String `key=value;key=value` (docs/FORMATS.md).
pub const PROFILE_EXTENSION_OID: &str = "2.25.216883449611302883395364040451931633930";

/// Why a certificate or chain was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("malformed certificate data: {0}")]
    Malformed(&'static str),
    #[error("certificate chain does not verify against the trusted root: {0}")]
    Untrusted(String),
}

impl From<openssl::error::ErrorStack> for CertError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        CertError::Crypto(CryptoError::Openssl(e))
    }
}

pub type Result<T> = std::result::Result<T, CertError>;

/// Who a card certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSubject {
    pub card_number: String,
    /// main, backup, replacement, blank...
    pub role: String,
    /// Member number, when the card has one.
    pub member_number: Option<String>,
}

fn random_serial() -> Result<Asn1Integer> {
    let mut b = crate::crypto::random::<16>();
    b[0] &= 0x7F;
    b[0] |= 0x01; // positive, and 16 bytes long
    Ok(BigNum::from_slice(&b)?.to_asn1_integer()?)
}

fn name(entries: &[(Nid, &str)]) -> Result<openssl::x509::X509Name> {
    let mut n = X509NameBuilder::new()?;
    for (nid, v) in entries {
        n.append_entry_by_nid(*nid, v)?;
    }
    Ok(n.build())
}

/// A self-signed issuer root: CA, may sign certificates, valid between the
/// two `YYYYMMDDHHMMSSZ` times.
pub fn issue_root(key: &KeyPair, common_name: &str, not_before: &str, not_after: &str) -> Result<X509> {
    let pkey = key.pkey()?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    let subject = name(&[(Nid::ORGANIZATIONNAME, "cardvault"), (Nid::COMMONNAME, common_name)])?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&pkey)?;
    let (not_before, not_after) = (Asn1Time::from_str(not_before)?, Asn1Time::from_str(not_after)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(&pkey, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A leaf certificate for an ECKA (key agreement) key, signed by `issuer`:
/// not before now, valid `days` days but never beyond the issuer.
fn issue_ecka_leaf(
    issuer_key: &KeyPair,
    issuer: &X509,
    public: &[u8],
    subject: &[(Nid, &str)],
    days: u32,
) -> Result<X509> {
    issue_leaf(issuer_key, issuer, public, subject, days, LeafUse::KeyAgreement, None)
}

/// What a leaf key is for.
#[derive(Clone, Copy)]
enum LeafUse {
    /// SCP11 ECKA keys (cards, operators).
    KeyAgreement,
    /// Issuer signers of restore and load authorizations.
    Signature,
}

/// A leaf certificate signed by `issuer`, with the key usage of `usage` and
/// optionally a card profile extension.
fn issue_leaf(
    issuer_key: &KeyPair,
    issuer: &X509,
    public: &[u8],
    subject: &[(Nid, &str)],
    days: u32,
    usage: LeafUse,
    profile: Option<&str>,
) -> Result<X509> {
    let pk = crate::crypto::public_key(public)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    let subject = name(subject)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(issuer.subject_name())?;
    b.set_pubkey(&pk)?;
    let now = Asn1Time::days_from_now(0)?;
    b.set_not_before(&now)?;
    let after = Asn1Time::days_from_now(days)?;
    if after > issuer.not_after() {
        b.set_not_after(issuer.not_after())?;
    } else {
        b.set_not_after(&after)?;
    }
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    let ku = match usage {
        LeafUse::KeyAgreement => KeyUsage::new().critical().key_agreement().build()?,
        LeafUse::Signature => KeyUsage::new().critical().digital_signature().build()?,
    };
    b.append_extension(ku)?;
    if let Some(text) = profile {
        b.append_extension(profile_extension(text)?)?;
    }
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

/// The card profile extension: a UTF8String in a non-critical extension.
fn profile_extension(text: &str) -> Result<X509Extension> {
    if text.len() > 127 {
        return Err(CertError::Malformed("card profile text over 127 bytes"));
    }
    let mut der = vec![0x0C, text.len() as u8];
    der.extend_from_slice(text.as_bytes());
    let oid = Asn1Object::from_str(PROFILE_EXTENSION_OID)?;
    let value = Asn1OctetString::new_from_bytes(&der)?;
    Ok(X509Extension::new_from_der(&oid, false, &value)?)
}

/// The card profile a registration certificate carries (the text of its
/// profile extension), if any. Read from the DER: the extension is the OID
/// followed by the OCTET STRING that wraps a short UTF8String.
pub fn card_profile(cert: &X509) -> Option<String> {
    let der = cert.to_der().ok()?;
    let oid = Asn1Object::from_str(PROFILE_EXTENSION_OID).ok()?;
    let body = oid.as_slice();
    let mut needle = vec![0x06, body.len() as u8];
    needle.extend_from_slice(body);
    let at = der.windows(needle.len()).position(|w| w == needle)? + needle.len();
    match der.get(at..)? {
        [0x04, n, 0x0C, m, rest @ ..] if *n as usize == *m as usize + 2 && rest.len() >= *m as usize => {
            String::from_utf8(rest[..*m as usize].to_vec()).ok()
        }
        _ => None,
    }
}

/// The card's registration certificate over its ECKA public key (65 bytes,
/// uncompressed P-256). Subject: CN and serialNumber = card number, OU = role,
/// UID = member number. No profile extension (see
/// [`issue_registration_certificate`]).
pub fn issue_card_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    card_public: &[u8],
    subject: &CardSubject,
    days: u32,
) -> Result<X509> {
    issue_registration_certificate(issuer_key, issuer, card_public, subject, None, days)
}

/// A card certificate as [`issue_card_certificate`] makes it, with the card
/// profile extension when `profile` is given (issuance: `role=main;...`).
pub fn issue_registration_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    card_public: &[u8],
    subject: &CardSubject,
    profile: Option<&str>,
    days: u32,
) -> Result<X509> {
    let mut entries = vec![
        (Nid::ORGANIZATIONNAME, "cardvault"),
        (Nid::ORGANIZATIONALUNITNAME, subject.role.as_str()),
        (Nid::SERIALNUMBER, subject.card_number.as_str()),
        (Nid::COMMONNAME, subject.card_number.as_str()),
    ];
    if let Some(m) = subject.member_number.as_deref().filter(|m| !m.is_empty()) {
        entries.push((Nid::USERID, m));
    }
    issue_leaf(
        issuer_key,
        issuer,
        card_public,
        &entries,
        days,
        LeafUse::KeyAgreement,
        profile,
    )
}

/// An issuer signer certificate: certifies the key that signs restore and
/// load authorizations (keyUsage digitalSignature), under the issuer root.
pub fn issue_signer_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    signer_public: &[u8],
    common_name: &str,
    days: u32,
) -> Result<X509> {
    let entries = [(Nid::ORGANIZATIONNAME, "cardvault"), (Nid::COMMONNAME, common_name)];
    issue_leaf(
        issuer_key,
        issuer,
        signer_public,
        &entries,
        days,
        LeafUse::Signature,
        None,
    )
}

/// Verify an issuer signer's chain (an authorization's certificates, leaf
/// last) under `trusted`: the chain verifies and the leaf is an end entity
/// for digitalSignature on a P-256 key. Returns the signer's public key.
pub fn verify_signer_chain(trusted: &[X509], chain: &[X509]) -> Result<Vec<u8>> {
    let leaf = verify_chain(trusted, chain)?;
    match leaf.key_usage() {
        Some(ku) if ku.contains(X509KeyUsage::DIGITAL_SIGNATURE) => {}
        _ => {
            return Err(CertError::Untrusted(
                "the signer certificate is not for signatures".into(),
            ))
        }
    }
    ecka_public_key(&leaf)
}

/// Whether `cert` can be installed as a card's trust anchor: a self-signed
/// CA certificate (P-256) whose signature verifies with its own key.
pub fn is_root(cert: &X509) -> bool {
    let self_issued = cert.subject_name().to_der().ok() == cert.issuer_name().to_der().ok();
    let signed = cert.public_key().and_then(|k| cert.verify(&k)).unwrap_or(false);
    self_issued
        && signed
        && ecka_public_key(cert).is_ok()
        && verify_chain(std::slice::from_ref(cert), std::slice::from_ref(cert)).is_ok()
}

/// An off-card entity (issuer operator) certificate for SCP11a.
pub fn issue_oce_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    oce_public: &[u8],
    common_name: &str,
    days: u32,
) -> Result<X509> {
    let entries = [(Nid::ORGANIZATIONNAME, "cardvault"), (Nid::COMMONNAME, common_name)];
    issue_ecka_leaf(issuer_key, issuer, oce_public, &entries, days)
}

/// The uncompressed P-256 public key a certificate certifies.
pub fn ecka_public_key(cert: &X509) -> Result<Vec<u8>> {
    let pk = cert.public_key()?;
    let ec = pk.ec_key().map_err(|_| CertError::Malformed("not an EC public key"))?;
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(CertError::Malformed("not a P-256 key"));
    }
    let mut ctx = BigNumContext::new()?;
    let bytes = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    debug_assert_eq!(bytes.len(), PUBLIC_KEY_LEN);
    Ok(bytes)
}

/// Split a certificate store answer (DER certificates one after the other,
/// leaf last) into certificates.
pub fn split_certificates(mut data: &[u8]) -> Result<Vec<X509>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // A DER certificate is a SEQUENCE: 30, then a definite length.
        let len = match data {
            [0x30, l, ..] if *l < 0x80 => 2 + *l as usize,
            [0x30, 0x81, l, ..] => 3 + *l as usize,
            [0x30, 0x82, h, l, ..] => 4 + u16::from_be_bytes([*h, *l]) as usize,
            _ => return Err(CertError::Malformed("not a DER certificate")),
        };
        if len > data.len() {
            return Err(CertError::Malformed("truncated certificate"));
        }
        out.push(X509::from_der(&data[..len]).map_err(|_| CertError::Malformed("not a DER certificate"))?);
        data = &data[len..];
    }
    Ok(out)
}

/// Verify a chain (root side first, leaf last; the root itself may be left
/// out) against trusted roots, at the current time. Returns the leaf.
pub fn verify_chain(trusted: &[X509], chain: &[X509]) -> Result<X509> {
    let leaf = chain.last().ok_or(CertError::Malformed("empty certificate chain"))?;
    let mut store = X509StoreBuilder::new()?;
    for root in trusted {
        store.add_cert(root.clone())?;
    }
    let store = store.build();
    let mut untrusted = Stack::new()?;
    for c in &chain[..chain.len() - 1] {
        untrusted.push(c.clone())?;
    }
    let mut ctx = X509StoreContext::new()?;
    let (ok, why) = ctx.init(&store, leaf, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error().error_string().to_string()))
    })?;
    if !ok {
        return Err(CertError::Untrusted(why));
    }
    Ok(leaf.clone())
}

/// Verify a card's (or an OCE's) certificate chain for key agreement: the
/// chain under one of `trusted` at the current time ([`verify_chain`]), and a
/// leaf that is an end entity whose key usage is keyAgreement on a P-256 key.
/// Returns the leaf and the ECKA public key it certifies.
pub fn verify_ecka_chain(trusted: &[X509], chain: &[X509]) -> Result<(X509, Vec<u8>)> {
    let leaf = verify_chain(trusted, chain)?;
    match leaf.key_usage() {
        Some(ku) if ku.contains(X509KeyUsage::KEY_AGREEMENT) => {}
        _ => {
            return Err(CertError::Untrusted(
                "the card certificate is not for key agreement".into(),
            ))
        }
    }
    let key = ecka_public_key(&leaf)?;
    Ok((leaf, key))
}

/// The text of the first entry of `nid` in a name, if any.
pub fn name_entry(name: &openssl::x509::X509NameRef, nid: Nid) -> Option<String> {
    name.entries_by_nid(nid).next().and_then(|e| e.data().to_string().ok())
}

/// Who a card certificate names (subject CN/serialNumber, OU, UID).
pub fn card_subject(cert: &X509) -> Option<CardSubject> {
    let n = cert.subject_name();
    let card_number = name_entry(n, Nid::SERIALNUMBER).or_else(|| name_entry(n, Nid::COMMONNAME))?;
    Some(CardSubject {
        card_number,
        role: name_entry(n, Nid::ORGANIZATIONALUNITNAME).unwrap_or_default(),
        member_number: name_entry(n, Nid::USERID),
    })
}

/// The `A6 { 83 KID KVN }` query of GET DATA `BF21` for one key's certificates.
pub fn certificate_store_query(kid: u8, kvn: u8) -> Vec<u8> {
    vec![0xA6, 0x04, 0x83, 0x02, kid, kvn]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (KeyPair, X509) {
        let k = KeyPair::generate().unwrap();
        let c = issue_root(&k, "test root", "20250101000000Z", "20500101000000Z").unwrap();
        (k, c)
    }

    #[test]
    fn card_certificate_verifies_under_its_root_only() {
        let (rk, rc) = root();
        let card = KeyPair::generate().unwrap();
        let subject = CardSubject {
            card_number: "1234567890123456".into(),
            role: "main".into(),
            member_number: Some("M-1".into()),
        };
        let cert = issue_card_certificate(&rk, &rc, &card.public_bytes(), &subject, 3650).unwrap();
        let der = cert.to_der().unwrap();
        let chain = split_certificates(&der).unwrap();
        let leaf = verify_chain(std::slice::from_ref(&rc), &chain).unwrap();
        assert_eq!(ecka_public_key(&leaf).unwrap(), card.public_bytes());
        let cn = leaf.subject_name().entries_by_nid(Nid::COMMONNAME).next().unwrap();
        assert_eq!(cn.data().to_string().unwrap(), "1234567890123456");

        let (key, subject_back) = (
            verify_ecka_chain(std::slice::from_ref(&rc), &chain).unwrap().1,
            card_subject(&leaf).unwrap(),
        );
        assert_eq!(key, card.public_bytes());
        assert_eq!(subject_back, subject);

        let (_, other) = root();
        assert!(matches!(verify_chain(&[other], &chain), Err(CertError::Untrusted(_))));
        // A CA certificate (no keyAgreement) is no card certificate.
        assert!(verify_ecka_chain(std::slice::from_ref(&rc), std::slice::from_ref(&rc)).is_err());
    }

    #[test]
    fn registration_certificate_carries_the_profile_and_signers_sign_only() {
        let (rk, rc) = root();
        let card = KeyPair::generate().unwrap();
        let subject = CardSubject {
            card_number: "42".into(),
            role: "backup".into(),
            member_number: None,
        };
        let text = "role=backup;key_group_size=3";
        let cert = issue_registration_certificate(&rk, &rc, &card.public_bytes(), &subject, Some(text), 30).unwrap();
        assert_eq!(card_profile(&cert).as_deref(), Some(text));
        let back = X509::from_der(&cert.to_der().unwrap()).unwrap();
        verify_ecka_chain(std::slice::from_ref(&rc), &[back]).unwrap();
        let plain = issue_card_certificate(&rk, &rc, &card.public_bytes(), &subject, 30).unwrap();
        assert_eq!(card_profile(&plain), None);

        let signer = KeyPair::generate().unwrap();
        let sc = issue_signer_certificate(&rk, &rc, &signer.public_bytes(), "signer", 30).unwrap();
        assert_eq!(
            verify_signer_chain(std::slice::from_ref(&rc), std::slice::from_ref(&sc)).unwrap(),
            signer.public_bytes()
        );
        // A card (key agreement) certificate signs nothing; a signer is no card.
        assert!(verify_signer_chain(std::slice::from_ref(&rc), std::slice::from_ref(&cert)).is_err());
        assert!(verify_ecka_chain(std::slice::from_ref(&rc), std::slice::from_ref(&sc)).is_err());
        assert!(is_root(&rc));
        assert!(!is_root(&sc));
    }

    #[test]
    fn store_answer_splits_into_certificates() {
        let (rk, rc) = root();
        let oce = KeyPair::generate().unwrap();
        let oc = issue_oce_certificate(&rk, &rc, &oce.public_bytes(), "operator", 365).unwrap();
        let mut both = rc.to_der().unwrap();
        both.extend_from_slice(&oc.to_der().unwrap());
        let certs = split_certificates(&both).unwrap();
        assert_eq!(certs.len(), 2);
        verify_chain(std::slice::from_ref(&rc), &certs).unwrap();
        assert!(split_certificates(&both[..both.len() - 1]).is_err());
        assert!(split_certificates(&[0x04, 0x00]).is_err());
    }
}
