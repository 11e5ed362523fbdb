//! Regenerate the **test-only** issuer and factory under fixtures/:
//!
//! ```text
//! cargo run -p cardvault-proto --example test_issuer -- fixtures/issuer fixtures/factory
//! ```
//!
//! Writes the issuer root (self-signed, P-256), an operator (OCE) key with a
//! certificate signed by the root, for SCP11a, and a signer certificate for
//! the issuer's authorization key (`issuer-private.hex`, restore and load
//! authorizations); and the factory CA that certifies blank cards' ECKA keys
//! before issuance. The keys are derived from fixed labels (the signer's is
//! read from `issuer-private.hex`), so a rerun gives the same keys
//! (certificates differ only in serial numbers and signatures). Never use
//! them for real cards.

use cardvault_proto::cert::{issue_oce_certificate, issue_root, issue_signer_certificate};
use cardvault_proto::crypto::{sha256, KeyPair};
use std::path::{Path, PathBuf};

fn key(label: &str) -> KeyPair {
    KeyPair::from_private(&sha256(label.as_bytes())).expect("label hashes to a valid scalar")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create output directory");
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    println!("wrote {}", p.display());
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fixtures/issuer".into()));
    let factory_dir = PathBuf::from(std::env::args().nth(2).unwrap_or_else(|| "fixtures/factory".into()));

    let root_key = key("cardvault TEST issuer root key v1");
    let root = issue_root(
        &root_key,
        "cardvault TEST issuer root - NOT FOR PRODUCTION",
        "20250101000000Z",
        "20500101000000Z",
    )
    .expect("root certificate");
    write(&dir, "test-root.pem", &root.to_pem().unwrap());
    write(&dir, "test-root-key.pem", &root_key.to_pem().unwrap());

    let oce_key = key("cardvault TEST issuer operator (OCE) key v1");
    let oce = issue_oce_certificate(
        &root_key,
        &root,
        &oce_key.public_bytes(),
        "cardvault TEST issuer operator (OCE) - NOT FOR PRODUCTION",
        365 * 20,
    )
    .expect("OCE certificate");
    write(&dir, "test-oce.pem", &oce.to_pem().unwrap());
    write(&dir, "test-oce-key.pem", &oce_key.to_pem().unwrap());

    // The authorization signer: the key of issuer-private.hex, certified by the root.
    let signer_hex = std::fs::read_to_string(dir.join("issuer-private.hex")).expect("issuer-private.hex");
    let signer_key = cardvault_proto::from_hex(signer_hex.trim())
        .and_then(|d| KeyPair::from_private(&d).ok())
        .expect("issuer-private.hex is a P-256 private scalar in hex");
    let signer = issue_signer_certificate(
        &root_key,
        &root,
        &signer_key.public_bytes(),
        "cardvault TEST issuer authorization signer - NOT FOR PRODUCTION",
        365 * 20,
    )
    .expect("signer certificate");
    write(&dir, "test-signer.pem", &signer.to_pem().unwrap());

    let factory_key = key("cardvault TEST factory CA key v1");
    let factory = issue_root(
        &factory_key,
        "cardvault TEST factory CA - NOT FOR PRODUCTION",
        "20250101000000Z",
        "20500101000000Z",
    )
    .expect("factory CA certificate");
    write(&factory_dir, "test-factory-ca.pem", &factory.to_pem().unwrap());
    write(&factory_dir, "test-factory-ca-key.pem", &factory_key.to_pem().unwrap());
}
