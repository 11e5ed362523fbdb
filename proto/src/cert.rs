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
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::PointConversionForm;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Builder, X509KeyUsage, X509NameBuilder, X509StoreContext, X509};

/// Tag of the certificate store data object (GET DATA P1P2, GlobalPlatform).
pub const TAG_CERTIFICATE_STORE: u16 = 0xBF21;

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
    b.append_extension(KeyUsage::new().critical().key_agreement().build()?)?;
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

/// The card's registration certificate over its ECKA public key (65 bytes,
/// uncompressed P-256). Subject: CN and serialNumber = card number, OU = role,
/// UID = member number.
pub fn issue_card_certificate(
    issuer_key: &KeyPair,
    issuer: &X509,
    card_public: &[u8],
    subject: &CardSubject,
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
    issue_ecka_leaf(issuer_key, issuer, card_public, &entries, days)
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
