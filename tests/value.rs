//! Value comes only from its issuer: no WRITE MEMORY, restore or CREDIT
//! without an issuer load authorization creates value, and a load
//! authorization is good for one CREDIT on one card.

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::sim::SimReader;
use cardvault::workflow::purse;
use cardvault_proto::load::LoadAuthorization;
use common::*;
use std::path::Path;

fn with_card<T>(home: &Path, name: &str, f: impl FnOnce(&mut CardClient<'_>) -> T) -> T {
    let mut r = SimReader::open(home, name, "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    // Every refusal below comes from inside the secure session, where the
    // holder is verified: not from a plain command's 6982.
    assert!(c.is_secure());
    f(&mut c)
}

fn balance(home: &Path, name: &str) -> u32 {
    with_card(home, name, |c| c.balance(1).unwrap())
}

fn load(home: &Path, name: &str, amount: u32) -> u32 {
    with_card(home, name, |c| {
        purse::credit_with_issuer_key(c, PIN.as_bytes(), 1, amount, &issuer_signer()).unwrap()
    })
}

#[test]
fn write_memory_over_the_purse_is_refused_and_mints_nothing() {
    let home = temp_dir("mint-write");
    load(&home, "w", 10);
    let before = state(&home, "w");
    with_card(&home, "w", |c| {
        // The auditor's APDU: 80 D6 00 00 04 3B 9A CA 00.
        for (page, data) in [
            (0u16, vec![0x3B, 0x9A, 0xCA, 0x00]),
            (3, vec![1; 256]),
            (2, vec![7; 1024]),
        ] {
            let sw = c.transmit(&Command::write_memory(page, &data)).unwrap().sw;
            assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "page {page}");
        }
    });
    assert_eq!(state(&home, "w").memory, before.memory);
    assert_eq!(balance(&home, "w"), 10);
    // Other applications are written as before.
    with_card(&home, "w", |c| c.write_memory(FIRST_DATA_PAGE, &[5; 300]).unwrap());
}

#[test]
fn restore_then_rewrite_mints_nothing() {
    let home = temp_dir("mint-restore");
    load(&home, "r", 1000);
    let o = run(cv(&home).args(["-r", "sim:r", "backup", "--full", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Spend it all, then bring the backup (taken with 1000 on the card) back.
    with_card(&home, "r", |c| assert_eq!(c.debit(1, 1000).unwrap(), 0));
    let o = run(cv(&home).args(["-r", "sim:r", "restore", "--latest", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // The restore did not write the purse: its value stays reset.
    let st = state(&home, "r");
    assert_eq!(st.memory[..4], [0; 4], "restore wrote the purse value");
    // And before first use, the holder cannot write it either.
    with_card(&home, "r", |c| {
        let sw = c.transmit(&Command::write_memory(0, &[0, 0, 3, 0xE8])).unwrap().sw;
        assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
    });
    assert_eq!(balance(&home, "r"), 0);
}

#[test]
fn credit_without_an_issuer_authorization_is_refused_and_changes_nothing() {
    let home = temp_dir("mint-credit");
    load(&home, "c", 5);
    let before = state(&home, "c");
    with_card(&home, "c", |c| {
        // The amount alone (the old CREDIT): no authorization.
        let sw = c.transmit(&Command::credit_unauthorized(1, 1_000_000)).unwrap().sw;
        assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
        // A signature by a key the card does not trust, over a real challenge.
        let ch = c.load_challenge(1).unwrap();
        let number = c.card_number().unwrap();
        let forger = cardvault_proto::crypto::KeyPair::generate().unwrap();
        let msg = cardvault_proto::load::load_message(&number, 1, 1_000_000, &ch);
        let sig = cardvault_proto::crypto::sign_p256(&forger, &msg).unwrap();
        let auth = LoadAuthorization {
            amount: 1_000_000,
            signature: sig.clone().try_into().unwrap(),
            signer_certificate: issuer_signer().certificate_der().to_vec(),
        };
        let sw = c.transmit(&Command::credit(1, &auth)).unwrap().sw;
        assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
        // The same forger with a signer certificate of its own root (not the
        // card's): the card checks the certificate under its root first.
        let ch = c.load_challenge(1).unwrap();
        let msg = cardvault_proto::load::load_message(&number, 1, 1_000_000, &ch);
        let sig = cardvault_proto::crypto::sign_p256(&forger, &msg).unwrap();
        let rogue_root =
            cardvault_proto::cert::issue_root(&forger, "rogue", "20250101000000Z", "20500101000000Z").unwrap();
        let rogue_signer =
            cardvault_proto::cert::issue_signer_certificate(&forger, &rogue_root, &forger.public_bytes(), "rogue", 30)
                .unwrap();
        let auth = LoadAuthorization {
            amount: 1_000_000,
            signature: sig.try_into().unwrap(),
            signer_certificate: rogue_signer.to_der().unwrap(),
        };
        let sw = c.transmit(&Command::credit(1, &auth)).unwrap().sw;
        assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
        // The issuer's signature over a different amount than the one sent.
        let ch = c.load_challenge(1).unwrap();
        let key = cardvault_proto::crypto::KeyPair::from_private(&issuer_key()).unwrap();
        let msg = cardvault_proto::load::load_message(&number, 1, 1, &ch);
        let sig = cardvault_proto::crypto::sign_p256(&key, &msg).unwrap();
        let auth = LoadAuthorization {
            amount: 1_000_000,
            signature: sig.try_into().unwrap(),
            signer_certificate: issuer_signer().certificate_der().to_vec(),
        };
        let sw = c.transmit(&Command::credit(1, &auth)).unwrap().sw;
        assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
    });
    assert_eq!(state(&home, "c").memory, before.memory);
    assert_eq!(balance(&home, "c"), 5);
}

#[test]
fn a_load_authorization_is_good_for_one_credit_on_one_card() {
    let home = temp_dir("mint-replay");
    let issuer = ("ISSUER", ISSUER_KEY_HEX.trim());
    // Two-party flow: the holder's card hands out a challenge, the issuer signs.
    let req = home.join("load.json");
    let o = run(cv(&home)
        .arg("-r")
        .arg("sim:a")
        .args(["purse", "challenge", "250", "--pin", "env:P", "-o"])
        .arg(&req));
    assert!(o.status.success(), "{}", stderr(&o));
    let auth = home.join("auth.json");
    let o = run(cv(&home)
        .env(issuer.0, issuer.1)
        .args(["authorize-load", "--issuer-key", "env:ISSUER", "--request"])
        .arg(&req)
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("-o")
        .arg(&auth));
    assert!(o.status.success(), "{}", stderr(&o));
    let credit = |card: &str| {
        run(cv(&home)
            .args([
                "--json",
                "-r",
                card,
                "purse",
                "credit",
                "--pin",
                "env:P",
                "--authorization",
            ])
            .arg(&auth))
    };
    // Onto another card: the terminal names the mismatch, the card is untouched.
    let _ = balance(&home, "b");
    let other = state(&home, "b");
    let o = credit("sim:b");
    assert!(!o.status.success());
    assert_eq!(state(&home, "b").memory, other.memory);
    let o = credit("sim:a");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["balance"], 250);
    // Replayed: the challenge was used once.
    let before = state(&home, "a");
    let o = credit("sim:a");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("6982"), "{}", stderr(&o));
    assert_eq!(state(&home, "a").memory, before.memory);
    assert_eq!(balance(&home, "a"), 250);
    // A fresh challenge does not revive the old authorization either.
    with_card(&home, "a", |c| c.load_challenge(1).unwrap());
    let o = credit("sim:a");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(balance(&home, "a"), 250);
}
