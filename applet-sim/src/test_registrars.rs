//! The **test-only** registrars and parties of the storing authorization
//! (fixtures/registrars/, made by
//! `cargo run -p cardvault-proto --example test_registrars`). Cards created
//! from the built-in profiles trust the two test registrar roots, so that
//! tests and the demo can authorize storing with the test issuer's and the
//! test provider's keys. Never use them for real cards: the private keys are
//! public.

use openssl::x509::X509;

/// The issuer registrar root (PEM): certifies issuers (IRC).
pub const ISSUER_REGISTRAR_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer-registrar.pem");
/// The data registrar root (PEM): certifies data providers (DPR) and data (SDCI).
pub const DATA_REGISTRAR_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-data-registrar.pem");
/// The data registrar's private key (PEM), for test data certificates.
pub const DATA_REGISTRAR_KEY_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-data-registrar-key.pem");
/// The issuer registrar's private key (PEM).
pub const ISSUER_REGISTRAR_KEY_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer-registrar-key.pem");
/// The test issuer's IRC (PEM) and storing key (PEM).
pub const ISSUER_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer.pem");
pub const ISSUER_KEY_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer-key.pem");
/// The test provider's DPR (PEM) and storing key (PEM).
pub const PROVIDER_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-provider.pem");
pub const PROVIDER_KEY_PEM: &[u8] = include_bytes!("../../fixtures/registrars/test-provider-key.pem");
/// The test provider's name (the CN of its DPR).
pub const PROVIDER_NAME: &str = "cardvault TEST provider";

/// The issuer registrar root, DER.
pub fn issuer_registrar_der() -> Vec<u8> {
    X509::from_pem(ISSUER_REGISTRAR_PEM)
        .and_then(|c| c.to_der())
        .expect("fixtures/registrars/test-issuer-registrar.pem")
}

/// The data registrar root, DER.
pub fn data_registrar_der() -> Vec<u8> {
    X509::from_pem(DATA_REGISTRAR_PEM)
        .and_then(|c| c.to_der())
        .expect("fixtures/registrars/test-data-registrar.pem")
}
