//! Card identity at issuance (issue 10, NTT's registration certificate): a
//! blank card leaves the factory with a factory certificate, issuance under
//! SCP11a replaces it by the issuer's registration certificate over a key
//! the card generated, and only a card certified as a backup card receives
//! a take-out.

mod common;

use cardvault::card::{CardClient, Refusal, SessionOptions};
use cardvault::transport::sim::{card_path, SimReader};
use cardvault_proto::cert::{card_profile, card_subject, ecka_public_key, issue_card_certificate, issue_root};
use cardvault_proto::crypto::KeyPair;
use cardvault_proto::{from_hex, to_hex};
use common::*;
use openssl::x509::X509;
use std::path::Path;

fn certificate(home: &Path, card: &str) -> X509 {
    X509::from_der(&state(home, card).certificate).unwrap()
}

fn test_root_cert() -> X509 {
    X509::from_pem(&std::fs::read(test_root()).unwrap()).unwrap()
}

fn issue(home: &Path, prefix: &str, profile: &str, rows: &str, extra: &[&str]) -> std::process::Output {
    let csv = home.join(format!("{prefix}.csv"));
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(&csv, format!("holder,pin,member_number,expiry\n{rows}")).unwrap();
    run(cardvault(home)
        .args([
            "--json",
            "-r",
            &format!("sim:{prefix}"),
            "issue",
            "--profile",
            profile,
            "--no-domain",
            "--holders",
        ])
        .arg(&csv)
        .args(extra))
}

/// The operator's story: blank cards arrive with factory certificates;
/// after issuance each carries a registration certificate from the issuer,
/// over a new key generated on the card, naming its card number, role and
/// (main card) member number, with the card profile extension.
#[test]
fn issuance_replaces_the_factory_certificate_by_a_registration_certificate() {
    let home = temp_dir("registration");
    // What the factory delivers (the cards the batch will take from the
    // feeder): role blank, under the factory CA, not under the issuer root.
    let factory_ca = X509::from_pem(applet_sim::test_issuer::FACTORY_CA_PEM).unwrap();
    let mut factory_keys = Vec::new();
    for card in ["r-alice-main", "r-alice-backup"] {
        drop(SimReader::open(&home, card, "blank", None).unwrap());
        let cert = certificate(&home, card);
        assert_eq!(card_subject(&cert).unwrap().role, "blank");
        cardvault_proto::cert::verify_chain(std::slice::from_ref(&factory_ca), std::slice::from_ref(&cert)).unwrap();
        assert!(cardvault_proto::cert::verify_chain(&[test_root_cert()], std::slice::from_ref(&cert)).is_err());
        factory_keys.push(state(&home, card).ecka_private.clone());
    }
    // `cert show` says what the blank card carries: not an issuer's
    // certificate (no holder session), a factory certificate for issuance.
    let o = run(cardvault(&home).args(["--json", "-r", "sim:r-alice-main", "cert", "show"]));
    let v = json(&o);
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("factory certificate"), "{v}");
    assert_eq!(v["chain"][0]["role"], "blank");
    let o = issue(&home, "r", "pair", "alice,2468,M-77,2031-01\n", &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["issued"], 2);
    for (card, role, member) in [
        ("r-alice-main", "main", Some("M-77")),
        ("r-alice-backup", "backup", None),
    ] {
        let st = state(&home, card);
        let cert = certificate(&home, card);
        let subject = card_subject(&cert).unwrap();
        assert_eq!(subject.card_number, st.card_number, "{card}");
        assert_eq!(subject.role, role, "{card}");
        assert_eq!(subject.member_number.as_deref(), member, "{card}");
        // Under the issuer root (the test issuer: no --issuer on embedded cards).
        cardvault_proto::cert::verify_ecka_chain(&[test_root_cert()], std::slice::from_ref(&cert)).unwrap();
        // Over the key the card holds now, which it generated at issuance.
        let key = KeyPair::from_private(&st.ecka_private).unwrap();
        assert_eq!(ecka_public_key(&cert).unwrap(), key.public_bytes(), "{card}");
        let profile = card_profile(&cert).unwrap();
        assert!(
            profile.starts_with(&format!("profile={role};key_group_size=3")),
            "{profile}"
        );
        if role == "main" {
            assert!(profile.contains("expiry=2031-01"), "{profile}");
        }
        assert!(st.issued);
        assert!(!factory_keys.contains(&st.ecka_private), "{card} kept its factory key");
    }
    // `cert show` reports the registration certificate, verified.
    let o = run(cardvault(&home).args(["--json", "-r", "sim:r-alice-main", "cert", "show"]));
    let v = json(&o);
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["chain"][0]["role"], "main");
    assert_eq!(v["chain"][0]["member_number"], "M-77");
    assert!(
        v["chain"][0]["profile"].as_str().unwrap().starts_with("profile=main;"),
        "{v}"
    );
}

/// A blank card whose factory certificate is under a factory CA the
/// terminal does not trust is rejected before anything is sent to it: no
/// PERFORM SECURITY OPERATION, no PIN, nothing changes on the card.
#[test]
fn a_blank_card_from_an_untrusted_factory_is_refused_before_any_secret() {
    let home = temp_dir("rogue-factory");
    // A blank card in the feeder slot the batch will take, re-certified by
    // another factory (its key stays the card's own).
    drop(SimReader::open(&home, "q-bob-main", "blank", None).unwrap());
    let path = card_path(&home, "q-bob-main");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let der = from_hex(v["certificate"].as_str().unwrap()).unwrap();
    let pk = ecka_public_key(&X509::from_der(&der).unwrap()).unwrap();
    let rogue_key = KeyPair::generate().unwrap();
    let rogue = issue_root(&rogue_key, "rogue factory", "20250101000000Z", "20450101000000Z").unwrap();
    let subject = card_subject(&X509::from_der(&der).unwrap()).unwrap();
    let cert = issue_card_certificate(&rogue_key, &rogue, &pk, &subject, 365).unwrap();
    v["certificate"] = to_hex(&cert.to_der().unwrap()).into();
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let before = state(&home, "q-bob-main");

    let csv = home.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\nbob,86420975,M-5,2031-01\n").unwrap();
    let o = run(cardvault(&home)
        .args([
            "--json",
            "--trace",
            "-r",
            "sim:q",
            "issue",
            "--profile",
            "main",
            "--no-domain",
            "--holders",
        ])
        .arg(&csv));
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["rejected"], 1, "{v}");
    let reason = v["cards"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("factory certificate"), "{reason}");
    let trace = stderr(&o);
    assert!(trace.contains("> 00CABF21"), "the certificate was read: {trace}");
    for sent in ["> 802A", "> 8082", "> 002C", "> 042C", "> 00DA", "> 04DA"] {
        assert!(!trace.contains(sent), "{sent} sent to an untrusted blank card: {trace}");
    }
    assert_eq!(state(&home, "q-bob-main"), before, "the card is unchanged");
    let o = run(cardvault(&home).args(["--json", "audit"]));
    let entries = json(&o)["entries"].as_array().unwrap().clone();
    assert!(
        entries
            .iter()
            .any(|e| e["event"] == "issue" && e["result"].as_str().unwrap().starts_with("rejected")),
        "{entries:?}"
    );
}

/// `issue --issuer DIR` with a new issuer: the sim factory installed the
/// test issuer's root, so the built-in test issuer opens the session and
/// installs DIR's root; the card leaves with DIR's registration
/// certificate, and DIR's operator then unblocks its PIN. The test issuer's
/// operator no longer gets an issuer session on it.
#[test]
fn issue_with_a_new_issuer_then_unblock_with_that_issuer() {
    let home = temp_dir("new-issuer");
    let dir = home.join("issuer");
    let o = run(cardvault(&home).args(["issuer", "init", "-o"]).arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = issue(
        &home,
        "n",
        "main",
        "carl,86420975,M-6,2031-01\n",
        &["--issuer", dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let st = state(&home, "n-carl-main");
    let root = X509::from_pem(&std::fs::read(dir.join("root.pem")).unwrap()).unwrap();
    assert_eq!(st.trust_anchor, root.to_der().unwrap(), "DIR's root is installed");
    let cert = certificate(&home, "n-carl-main");
    cardvault_proto::cert::verify_ecka_chain(std::slice::from_ref(&root), std::slice::from_ref(&cert)).unwrap();
    assert!(cardvault_proto::cert::verify_chain(&[test_root_cert()], std::slice::from_ref(&cert)).is_err());

    // Block the PIN, then unblock with DIR's operator (the card is trusted under DIR's root).
    let trust = dir.join("root.pem");
    for _ in 0..3 {
        run(cardvault(&home).env("P", "000000").arg("--trust").arg(&trust).args([
            "-r",
            "sim:n-carl-main",
            "pin",
            "verify",
            "--pin",
            "env:P",
        ]));
    }
    assert_eq!(state(&home, "n-carl-main").pin.tries_left, 0);
    // The terminal trusts the card (under DIR's root), but the card no
    // longer takes the test issuer's operator.
    let o = run(cardvault(&home)
        .arg("--trust")
        .arg(&trust)
        .args(["--json", "-r", "sim:n-carl-main", "pin", "unblock", "--issuer"])
        .arg(test_issuer_dir()));
    assert_eq!(
        o.status.code(),
        Some(5),
        "the test issuer is no longer this card's issuer"
    );
    assert_eq!(json(&o)["error"]["kind"], "issuer_refused");
    assert_eq!(state(&home, "n-carl-main").pin.tries_left, 0);
    let o = run(cardvault(&home)
        .arg("--trust")
        .arg(&trust)
        .args(["-r", "sim:n-carl-main", "pin", "unblock", "--issuer"])
        .arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&home, "n-carl-main").pin.tries_left, 3);
    let o = run(cardvault(&home).env("P", "86420975").arg("--trust").arg(&trust).args([
        "-r",
        "sim:n-carl-main",
        "pin",
        "verify",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// TAKE OUT KEY goes only to a card certified as a backup card: a
/// certificate under the right root that names role `blank` (a card never
/// issued) is refused, and the main card binds no target.
#[test]
fn a_take_out_to_a_card_certified_as_blank_is_refused() {
    let home = temp_dir("blank-target");
    // A main card with a complete key group and its key.
    let mut r = SimReader::open(&home, "m", "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    c.verify_pin(b"123456").unwrap();
    c.write_key_element(2, &[2; 32]).unwrap();
    c.write_key_element(3, &[3; 32]).unwrap();
    c.generate_key_pair().unwrap();
    let before = state(&home, "m");
    // A blank card's key, certified under the test issuer root with role blank.
    let blank_key = KeyPair::generate().unwrap();
    let subject = cardvault_proto::cert::CardSubject {
        card_number: "5555000011112222".into(),
        role: "blank".into(),
        member_number: None,
    };
    let blank = applet_sim::test_issuer::certify_card(&blank_key.public_bytes(), &subject);
    let e = c.take_out_key(&blank).unwrap_err();
    assert!(
        matches!(e, cardvault::Error::CardRefusal(Refusal::TakeOutTargetNotCertified)),
        "{e}"
    );
    // The same key certified as a backup card is a target.
    let backup = applet_sim::test_issuer::certify_card(
        &blank_key.public_bytes(),
        &cardvault_proto::cert::CardSubject {
            role: "backup".into(),
            ..subject
        },
    );
    drop(c);
    drop(r);
    assert_eq!(state(&home, "m"), before, "the refused take-out bound nothing");
    let mut r = SimReader::open(&home, "m", "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    c.verify_pin(b"123456").unwrap();
    c.take_out_key(&backup).unwrap();
    drop(c);
    drop(r);
    assert_eq!(state(&home, "m").export.target, "5555000011112222");
}
