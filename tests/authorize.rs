//! The issuer checks before it signs an other-card restore authorization:
//! the newest complete backup, a revoked source card, a target card whose
//! certificate verifies and names it.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    o
}

fn request(home: &Path, extra: &[&str]) -> PathBuf {
    let source = state(home, "src").card_number.clone();
    let req = home.join("req.json");
    let _ = std::fs::remove_file(&req);
    ok(run(cv(home)
        .args([
            "-r",
            "sim:repl",
            "restore",
            "--from-card",
            &source,
            "--pin",
            "env:P",
            "--request",
        ])
        .arg(&req)
        .args(extra)));
    req
}

fn authorize(home: &Path, req: &Path) -> (std::process::Output, PathBuf) {
    let auth = home.join("auth.json");
    let _ = std::fs::remove_file(&auth);
    let o = run(cv(home)
        .env("ISSUER", ISSUER_KEY_HEX.trim())
        .args(["authorize-restore", "--issuer-key", "env:ISSUER", "--request"])
        .arg(req)
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(&auth));
    (o, auth)
}

#[test]
fn the_issuer_signs_only_after_its_checks() {
    let home = temp_dir("authorize");
    for full in [true, false] {
        let mut c = cv(&home);
        c.args(["-r", "sim:src", "backup", "--pin", "env:P"]);
        if full {
            c.arg("--full");
        }
        ok(run(&mut c));
    }
    let source = state(&home, "src").card_number.clone();
    ok(run(cv(&home).args(["-r", "sim:repl", "status"])));
    // The source card is not reported lost: refused, nothing signed.
    let req = request(&home, &[]);
    let (o, auth) = authorize(&home, &req);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not revoked"), "{}", stderr(&o));
    assert!(!auth.exists());
    ok(run(cv(&home).args([
        "card",
        "revoke",
        &source,
        "--reason",
        "lost on a train",
    ])));
    // An older backup than the newest complete one: refused.
    let v = json(&run(cv(&home).args(["--json", "vault", "list"])));
    let oldest = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .min()
        .unwrap();
    let older = request(&home, &["--backup", &oldest.to_string()]);
    let (o, auth) = authorize(&home, &older);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("newest complete backup"), "{}", stderr(&o));
    assert!(!auth.exists());
    // The target certificate missing, or another card's (the source's own,
    // which verifies under the root but names the source): refused.
    let req = request(&home, &[]);
    let text = std::fs::read_to_string(&req).unwrap();
    let mut r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let source_cert = cardvault_proto::to_hex(&state(&home, "src").certificate);
    for (what, cert) in [
        ("no certificate", String::new()),
        ("names card", source_cert),
        ("not a DER", "00".into()),
    ] {
        r["target_certificate"] = cert.into();
        let bad = home.join("bad.json");
        std::fs::write(&bad, r.to_string()).unwrap();
        let (o, auth) = authorize(&home, &bad);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(what), "{what}: {}", stderr(&o));
        assert!(!auth.exists());
    }
    // A chain hash other than the vault's chain: refused by the issuer.
    let mut r: serde_json::Value = serde_json::from_str(&text).unwrap();
    r["chain_hash"] = "00".repeat(32).into();
    let bad = home.join("bad.json");
    std::fs::write(&bad, r.to_string()).unwrap();
    let (o, auth) = authorize(&home, &bad);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("chain hash"), "{}", stderr(&o));
    assert!(!auth.exists());
    // Signed over another chain all the same (a careless signer): the card
    // checks the chain it received against the signed hash and writes nothing.
    let req_v: cardvault::workflow::backup::RestoreRequest = serde_json::from_value(r).unwrap();
    let forged = cardvault::workflow::backup::sign_authorization(&req_v, &issuer_signer()).unwrap();
    let forged_path = home.join("forged-auth.json");
    std::fs::write(&forged_path, serde_json::to_string(&forged).unwrap()).unwrap();
    let before = state(&home, "repl");
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:repl",
            "restore",
            "--from-card",
            &source,
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&forged_path));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, "repl").memory, before.memory);
    // All checks pass: signed, and the restore goes through.
    let req = request(&home, &[]);
    let (o, auth) = authorize(&home, &req);
    ok(o);
    ok(run(cv(&home)
        .args([
            "-r",
            "sim:repl",
            "restore",
            "--from-card",
            &source,
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&auth)));
    let audit = json(&run(cv(&home).args(["--json", "audit"])));
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "card-revoked" && e["card"] == source.as_str()));
}
