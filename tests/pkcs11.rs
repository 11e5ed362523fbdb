//! The issuer's signing key in a PKCS#11 token (SoftHSM2): a restore
//! authorization and a value load signed inside the token are accepted by
//! the cards, and a wrong token PIN signs and writes nothing.
//!
//! Each test makes its own SoftHSM2 token in a temporary directory
//! (`SOFTHSM2_CONF` pointing at a private configuration) and imports the
//! test issuer's key into it, so the built-in profiles' cards trust it.
//! Without SoftHSM2 the tests fail; `CARDVAULT_SKIP_PKCS11=1` skips them,
//! except under CI (any value of `CI`), where they always run.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "cv-issuer";
const OBJECT: &str = "issuer-sign";
const TOKEN_PIN: &str = "token-pin-4711";
const WRONG_PIN: &str = "wrong-pin-0000";

/// A private SoftHSM2 token holding the test issuer's key.
struct Token {
    dir: TempDir,
    module: PathBuf,
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    o
}

impl Token {
    /// Initialize a token and import the issuer key; `None` when SoftHSM2 is
    /// missing and skipping is allowed (never under CI).
    fn new(test: &str) -> Option<Token> {
        let t = Token::empty(test)?;
        t.import_issuer_key();
        Some(t)
    }

    /// Initialize an empty token.
    fn empty(test: &str) -> Option<Token> {
        let module = std::env::var_os(cardvault::signer::MODULE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(cardvault::signer::DEFAULT_MODULE));
        let tool = Command::new("softhsm2-util").arg("--version").output();
        if !module.exists() || !tool.is_ok_and(|o| o.status.success()) {
            let why = format!(
                "SoftHSM2 is not installed ({} or softhsm2-util missing; Debian package softhsm2)",
                module.display()
            );
            let opt_out = std::env::var("CARDVAULT_SKIP_PKCS11").is_ok_and(|v| !v.is_empty() && v != "0");
            if opt_out && std::env::var_os("CI").is_none() {
                eprintln!("{test}: skipped: {why}");
                return None;
            }
            panic!("{test}: {why}; CARDVAULT_SKIP_PKCS11=1 skips outside CI");
        }
        let dir = temp_dir(test);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let t = Token { dir, module };
        t.util(&[
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            TOKEN_PIN,
            "--so-pin",
            "so-pin-12345678",
        ]);
        Some(t)
    }

    fn util(&self, args: &[&str]) {
        let o = self
            .env(&mut Command::new("softhsm2-util"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Import the test issuer's key.
    fn import_issuer_key(&self) {
        let t = self;
        // The test issuer's key (the one the built-in profiles trust), as
        // PKCS#8 for the import; the file goes once the token holds the key.
        let key = cardvault_proto::crypto::KeyPair::from_private(&issuer_key()).unwrap();
        let pem = t.dir.join("issuer.p8");
        std::fs::write(&pem, key.to_pem().unwrap()).unwrap();
        t.util(&[
            "--import",
            pem.to_str().unwrap(),
            "--token",
            TOKEN,
            "--label",
            OBJECT,
            "--id",
            "0a01",
            "--pin",
            TOKEN_PIN,
        ]);
        std::fs::remove_file(&pem).unwrap();
    }

    /// Point a command at this token's SoftHSM2 configuration.
    fn env<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env("SOFTHSM2_CONF", self.dir.join("softhsm2.conf"))
            .env(cardvault::signer::MODULE_ENV, &self.module)
            .env_remove(cardvault::signer::PIN_ENV)
    }

    /// The key's URI, its PIN read from `pin_file`.
    fn uri(&self, pin_file: &Path) -> String {
        format!(
            "pkcs11:token={TOKEN};object={OBJECT}?pin-source=file:{}",
            pin_file.display()
        )
    }

    /// A file holding `pin`.
    fn pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("{pin}\n")).unwrap();
        p
    }
}

fn authorize_restore(
    home: &Path,
    token: &Token,
    key: &str,
    req: &Path,
    pin_env: Option<&str>,
) -> (std::process::Output, PathBuf) {
    let auth = home.join("auth.json");
    let _ = std::fs::remove_file(&auth);
    let mut c = cv(home);
    token.env(&mut c);
    if let Some(pin) = pin_env {
        c.env(cardvault::signer::PIN_ENV, pin);
    }
    let o = run(c
        .args(["authorize-restore", "--issuer-key", key, "--request"])
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
fn a_restore_authorized_with_a_token_key_is_accepted_and_a_wrong_token_pin_signs_nothing() {
    let Some(token) = Token::new("pkcs11-restore") else {
        return;
    };
    let home = temp_dir("pkcs11-restore-home");
    ok(run(
        cv(&home).args(["-r", "sim:src", "backup", "--full", "--pin", "env:P"])
    ));
    let source = state(&home, "src").card_number.clone();
    ok(run(cv(&home).args(["-r", "sim:repl", "status"])));
    ok(run(cv(&home).args(["card", "revoke", &source, "--reason", "lost"])));
    let req = home.join("req.json");
    ok(run(cv(&home)
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
        .arg(&req)));

    // A wrong token PIN (from CARDVAULT_PKCS11_PIN, then from pin-source=):
    // exit 5, named as the token's refusal, no authorization written.
    let bare = format!("pkcs11:token={TOKEN};object={OBJECT}");
    let (o, auth) = authorize_restore(&home, &token, &bare, &req, Some(WRONG_PIN));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused the user PIN"), "{}", stderr(&o));
    assert!(!auth.exists());
    let wrong = token.pin_file("wrong-pin", WRONG_PIN);
    let o = run(token
        .env(&mut cv(&home))
        .args([
            "--json",
            "authorize-restore",
            "--issuer-key",
            &token.uri(&wrong),
            "--request",
        ])
        .arg(&req)
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(home.join("auth.json")));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(json(&o)["error"]["kind"], "token_pin");
    assert!(!home.join("auth.json").exists());

    // No such token, no such key, no such module: clear usage errors.
    let right = token.pin_file("pin", TOKEN_PIN);
    for (uri, what) in [
        (
            format!("pkcs11:token=nope;object={OBJECT}?pin-source=file:{}", right.display()),
            "no PKCS#11 token matches",
        ),
        (
            format!("pkcs11:token={TOKEN};object=nope?pin-source=file:{}", right.display()),
            "no EC private key",
        ),
        (
            format!(
                "pkcs11:token={TOKEN};object={OBJECT}?module-path=/nonexistent/p11.so&pin-source=file:{}",
                right.display()
            ),
            "PKCS#11 module /nonexistent/p11.so",
        ),
    ] {
        let (o, auth) = authorize_restore(&home, &token, &uri, &req, None);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(what), "{what}: {}", stderr(&o));
        assert!(!auth.exists());
    }
    // The card never saw any of that.
    let before = state(&home, "repl");

    // The right PIN: signed inside the token, accepted by the card.
    let (o, auth) = authorize_restore(&home, &token, &token.uri(&right), &req, None);
    ok(o);
    assert_eq!(state(&home, "repl").memory, before.memory);
    let signed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    assert_eq!(signed["signature"].as_str().unwrap().len(), 128, "raw r || s, hex");
    let o = ok(run(cv(&home)
        .args([
            "--json",
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
    let rep = json(&o);
    assert_eq!(rep["source_card"], source.as_str());
    assert_eq!(rep["mode"], "other-card");
}

fn balance(home: &Path, card: &str) -> u64 {
    let o = ok(run(cv(home).args(["--json", "-r", card, "purse", "balance"])));
    json(&o)["balance"].as_u64().unwrap()
}

#[test]
fn a_value_load_signed_in_the_token_is_credited_and_a_wrong_pin_signs_nothing() {
    let Some(token) = Token::new("pkcs11-load") else {
        return;
    };
    let home = temp_dir("pkcs11-load-home");
    let start = balance(&home, "sim:a");
    let req = home.join("load.json");
    ok(run(cv(&home)
        .args(["-r", "sim:a", "purse", "challenge", "250", "--pin", "env:P", "-o"])
        .arg(&req)));
    let auth = home.join("load-auth.json");
    let authorize = |pin: &Path| {
        run(token
            .env(&mut cv(&home))
            .args(["authorize-load", "--issuer-key", &token.uri(pin), "--request"])
            .arg(&req)
            .arg("--signer-cert")
            .arg(test_signer_cert())
            .arg("-o")
            .arg(&auth))
    };
    let o = authorize(&token.pin_file("wrong-pin", WRONG_PIN));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(!auth.exists());
    ok(authorize(&token.pin_file("pin", TOKEN_PIN)));
    ok(run(cv(&home)
        .args(["-r", "sim:a", "purse", "credit", "--pin", "env:P", "--authorization"])
        .arg(&auth)));
    assert_eq!(balance(&home, "sim:a"), start + 250);

    // One step, the token at hand (its PIN from CARDVAULT_PKCS11_PIN); a
    // wrong one is refused before the card is touched.
    let one_step = |pin: &str| {
        run(token
            .env(&mut cv(&home))
            .env(cardvault::signer::PIN_ENV, pin)
            .args([
                "-r",
                "sim:a",
                "purse",
                "credit",
                "100",
                "--pin",
                "env:P",
                "--issuer-key",
            ])
            .arg(format!("pkcs11:token={TOKEN};object={OBJECT}"))
            .arg("--signer-cert")
            .arg(test_signer_cert()))
    };
    let before = state(&home, "a");
    let o = one_step(WRONG_PIN);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let after = state(&home, "a");
    assert_eq!(after.memory, before.memory);
    ok(one_step(TOKEN_PIN));
    assert_eq!(balance(&home, "sim:a"), start + 350);
}

#[test]
fn a_key_generated_in_the_token_signs_only_under_a_certificate_the_card_trusts() {
    let Some(token) = Token::empty("pkcs11-keygen") else {
        return;
    };
    let home = temp_dir("pkcs11-keygen-home");
    let pin = token.pin_file("pin", TOKEN_PIN);
    let uri = token.uri(&pin);
    let o = ok(run(token.env(&mut cv(&home)).args([
        "--json",
        "issuer",
        "token-keygen",
        "--key",
        &uri,
    ])));
    let public = json(&o)["public_key"].as_str().unwrap().to_string();
    assert_eq!(public.len(), 130, "{public}");
    assert_ne!(public, include_str!("../fixtures/issuer/issuer-public.hex").trim());
    // A second key under the same label is refused.
    let o = run(token
        .env(&mut cv(&home))
        .args(["issuer", "token-keygen", "--key", &uri]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already there"), "{}", stderr(&o));

    // The token key signs for a card only under a signer certificate that
    // chains to the card's installed issuer root: certified by the test
    // issuer's root, the load is credited; certified by another root, the
    // card refuses it and no value appears.
    use cardvault_proto::crypto::KeyPair;
    let public = cardvault_proto::from_hex(&public).unwrap();
    let certify = |root_key: &KeyPair, root: &openssl::x509::X509, name: &str| {
        let cert =
            cardvault_proto::cert::issue_signer_certificate(root_key, root, &public, "token signer", 30).unwrap();
        let path = home.join(format!("{name}-signer.pem"));
        std::fs::write(&path, cert.to_pem().unwrap()).unwrap();
        path
    };
    let test_root_key =
        KeyPair::from_pem(&std::fs::read(repo_path("fixtures/issuer/test-root-key.pem")).unwrap()).unwrap();
    let test_root_cert = openssl::x509::X509::from_pem(&std::fs::read(test_root()).unwrap()).unwrap();
    let trusted = certify(&test_root_key, &test_root_cert, "trusted");
    let other_key = KeyPair::generate().unwrap();
    let other_root =
        cardvault_proto::cert::issue_root(&other_key, "other issuer", "20250101000000Z", "20500101000000Z").unwrap();
    let foreign = certify(&other_key, &other_root, "foreign");
    let credit = |card: &str, cert: &Path| {
        let mut c = cv(&home);
        token.env(&mut c).env(cardvault::signer::PIN_ENV, TOKEN_PIN);
        run(c
            .args(["-r", card, "purse", "credit", "40", "--pin", "env:P", "--issuer-key"])
            .arg(format!("pkcs11:token={TOKEN};object={OBJECT}"))
            .arg("--signer-cert")
            .arg(cert))
    };
    ok(credit("sim:trusts-token", &trusted));
    assert_eq!(balance(&home, "sim:trusts-token"), 40);
    let before = state(&home, "trusts-token");
    let o = credit("sim:trusts-token", &foreign);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(balance(&home, "sim:trusts-token"), 40);
    assert_eq!(state(&home, "trusts-token").memory, before.memory);
}
