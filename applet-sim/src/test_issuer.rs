//! The **test-only** issuer that certifies the simulator's cards
//! (fixtures/issuer/test-root.pem and its key, made by
//! `cargo run -p cardvault-proto --example test_issuer`). Cards created from
//! the built-in profiles carry a certificate from it, so that embedded cards,
//! the demo and the tests run SCP11 against a known root. Never use it for
//! real cards: its private key is public.
//!
//! The test **factory** CA (fixtures/factory/) stands for the card factory:
//! blank cards carry a factory certificate from it until issuance.

use cardvault_proto::cert::{issue_card_certificate, CardSubject};
use cardvault_proto::crypto::KeyPair;
use openssl::x509::X509;
use std::sync::OnceLock;

/// A fixture key or certificate, parsed once per process (every simulated
/// card made is certified with them).
fn once<T: Clone>(cell: &'static OnceLock<T>, make: impl FnOnce() -> T) -> T {
    cell.get_or_init(make).clone()
}

/// The test issuer root certificate (PEM); the trust anchor of simulated cards.
pub const ROOT_PEM: &[u8] = include_bytes!("../../fixtures/issuer/test-root.pem");
/// The test issuer root's private key (PEM).
pub const ROOT_KEY_PEM: &[u8] = include_bytes!("../../fixtures/issuer/test-root-key.pem");
/// The test operator (OCE) certificate for SCP11a, signed by the root (PEM).
pub const OCE_PEM: &[u8] = include_bytes!("../../fixtures/issuer/test-oce.pem");
/// The test operator's ECKA private key (PEM).
pub const OCE_KEY_PEM: &[u8] = include_bytes!("../../fixtures/issuer/test-oce-key.pem");

/// Validity of a card certificate, in days.
pub const CARD_CERTIFICATE_DAYS: u32 = 3650;

/// The root certificate.
pub fn root() -> X509 {
    static ROOT: OnceLock<X509> = OnceLock::new();
    once(&ROOT, || {
        X509::from_pem(ROOT_PEM).expect("fixtures/issuer/test-root.pem")
    })
}

/// The root certificate, DER.
pub fn root_der() -> Vec<u8> {
    root().to_der().expect("DER")
}

/// Certify a card's ECKA public key: DER X.509 signed by the test root.
pub fn certify_card(card_public: &[u8], subject: &CardSubject) -> Vec<u8> {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    let key = once(&KEY, || {
        KeyPair::from_pem(ROOT_KEY_PEM).expect("fixtures/issuer/test-root-key.pem")
    });
    issue_card_certificate(&key, &root(), card_public, subject, CARD_CERTIFICATE_DAYS)
        .and_then(|c| Ok(c.to_der()?))
        .expect("certify card key")
}

/// The **test** factory CA (PEM): certifies blank cards' ECKA keys before
/// issuance (fixtures/factory/, made by the same example). Never use it for
/// real cards: its private key is public.
pub const FACTORY_CA_PEM: &[u8] = include_bytes!("../../fixtures/factory/test-factory-ca.pem");
/// The test factory CA's private key (PEM).
pub const FACTORY_CA_KEY_PEM: &[u8] = include_bytes!("../../fixtures/factory/test-factory-ca-key.pem");

/// Certify a blank card's ECKA public key at the test factory: DER X.509
/// signed by the test factory CA, naming role `blank`.
pub fn certify_blank_card(card_public: &[u8], card_number: &str) -> Vec<u8> {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    static CA: OnceLock<X509> = OnceLock::new();
    let key = once(&KEY, || {
        KeyPair::from_pem(FACTORY_CA_KEY_PEM).expect("fixtures/factory/test-factory-ca-key.pem")
    });
    let ca = once(&CA, || {
        X509::from_pem(FACTORY_CA_PEM).expect("fixtures/factory/test-factory-ca.pem")
    });
    let subject = CardSubject {
        card_number: card_number.to_string(),
        role: cardvault_proto::cert::FACTORY_ROLE.to_string(),
        member_number: None,
    };
    issue_card_certificate(&key, &ca, card_public, &subject, CARD_CERTIFICATE_DAYS)
        .and_then(|c| Ok(c.to_der()?))
        .expect("certify blank card key")
}
