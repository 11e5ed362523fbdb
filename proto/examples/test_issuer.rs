//! Regenerate the **test-only** issuer under fixtures/issuer/:
//!
//! ```text
//! cargo run -p cardvault-proto --example test_issuer -- fixtures/issuer
//! ```
//!
//! Writes the issuer root (self-signed, P-256) and an operator (OCE) key with
//! a certificate signed by the root, for SCP11a. The keys are derived from
//! fixed labels, so a rerun gives the same keys (certificates differ only in
//! serial numbers and signatures). Never use them for real cards.

use cardvault_proto::cert::{issue_oce_certificate, issue_root};
use cardvault_proto::crypto::{sha256, KeyPair};
use std::path::PathBuf;

fn key(label: &str) -> KeyPair {
    KeyPair::from_private(&sha256(label.as_bytes())).expect("label hashes to a valid scalar")
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fixtures/issuer".into()));
    std::fs::create_dir_all(&dir).expect("create output directory");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        println!("wrote {}", p.display());
    };

    let root_key = key("cardvault TEST issuer root key v1");
    let root = issue_root(
        &root_key,
        "cardvault TEST issuer root - NOT FOR PRODUCTION",
        "20250101000000Z",
        "20500101000000Z",
    )
    .expect("root certificate");
    write("test-root.pem", &root.to_pem().unwrap());
    write("test-root-key.pem", &root_key.to_pem().unwrap());

    let oce_key = key("cardvault TEST issuer operator (OCE) key v1");
    let oce = issue_oce_certificate(
        &root_key,
        &root,
        &oce_key.public_bytes(),
        "cardvault TEST issuer operator (OCE) - NOT FOR PRODUCTION",
        365 * 20,
    )
    .expect("OCE certificate");
    write("test-oce.pem", &oce.to_pem().unwrap());
    write("test-oce-key.pem", &oce_key.to_pem().unwrap());
}
