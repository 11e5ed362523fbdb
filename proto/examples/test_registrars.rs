//! Regenerate the **test-only** registrars and parties of the storing
//! authorization under fixtures/registrars/:
//!
//! ```text
//! cargo run -p cardvault-proto --example test_registrars -- fixtures/registrars
//! ```
//!
//! Writes the issuer registrar root and the data registrar root (self-signed,
//! P-256), the test issuer's storing key with its issuer registration
//! certificate (IRC, named after the test issuer root, so that it is the
//! issuer of the simulator's cards) and the test data provider's key with its
//! data provider registration certificate (DPR). The keys are derived from
//! fixed labels, so a rerun gives the same keys. Never use them for real cards.

use cardvault_proto::crypto::{sha256, KeyPair};
use cardvault_proto::storing::{issue_party_certificate, issue_registrar_root, Party};
use openssl::asn1::Asn1Time;
use std::path::PathBuf;

/// The test issuer's name: the CN of fixtures/issuer/test-root.pem.
const TEST_ISSUER: &str = "cardvault TEST issuer root - NOT FOR PRODUCTION";
/// The test data provider, owner of the `services` profile's provider applications.
const TEST_PROVIDER: &str = "cardvault TEST provider";

fn key(label: &str) -> KeyPair {
    KeyPair::from_private(&sha256(label.as_bytes())).expect("label hashes to a valid scalar")
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fixtures/registrars".into()));
    std::fs::create_dir_all(&dir).expect("create output directory");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        println!("wrote {}", p.display());
    };
    let from = Asn1Time::from_str("20250101000000Z").unwrap();
    for (kind, party, party_name, file) in [
        ("issuer", Party::Issuer, TEST_ISSUER, "test-issuer"),
        ("data", Party::Provider, TEST_PROVIDER, "test-provider"),
    ] {
        let rk = key(&format!("cardvault TEST {kind} registrar key v1"));
        let root = issue_registrar_root(
            &rk,
            &format!("cardvault TEST {kind} registrar - NOT FOR PRODUCTION"),
            "20250101000000Z",
            "20500101000000Z",
        )
        .expect("registrar root");
        write(&format!("test-{kind}-registrar.pem"), &root.to_pem().unwrap());
        write(&format!("test-{kind}-registrar-key.pem"), &rk.to_pem().unwrap());
        let pk = key(&format!("cardvault TEST {} storing key v1", party.as_str()));
        let c = issue_party_certificate(&rk, &root, &pk.public_bytes(), party, party_name, &from, 365 * 25)
            .expect("registration certificate");
        write(&format!("{file}.pem"), &c.to_pem().unwrap());
        write(&format!("{file}-key.pem"), &pk.to_pem().unwrap());
    }
}
