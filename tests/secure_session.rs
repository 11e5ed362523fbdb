//! The terminal's secure channel on embedded cards: who gets a PIN, what a
//! broken MAC does to the session, and the commands that show a card's
//! certificate (`cert show`, `cert export`, `status`, `apdu --secure`).

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::sim::{card_path, SimReader};
use cardvault::transport::{Caps, Reader, Transmit, TransportError};
use cardvault_proto::cert::{ecka_public_key, issue_card_certificate, issue_root, CardSubject};
use cardvault_proto::crypto::KeyPair;
use cardvault_proto::{from_hex, to_hex};
use common::*;
use openssl::x509::X509;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const PIN: &str = "123456";

fn state_json(home: &Path, card: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(card_path(home, card)).unwrap()).unwrap()
}

fn tries_left(home: &Path, card: &str) -> u64 {
    state_json(home, card)["pin"]["tries_left"].as_u64().unwrap()
}

/// Re-certify an embedded card's key by another issuer (a root made here):
/// the card is genuine and holds its key, but not under the test issuer.
/// Returns the other root's PEM.
fn recertify_by_another_issuer(home: &Path, card: &str) -> Vec<u8> {
    let mut v = state_json(home, card);
    let der = from_hex(v["certificate"].as_str().unwrap()).unwrap();
    let pk = ecka_public_key(&X509::from_der(&der).unwrap()).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let other = issue_root(&other_key, "another issuer", "20250101000000Z", "20450101000000Z").unwrap();
    let subject = CardSubject {
        card_number: v["card_number"].as_str().unwrap().to_string(),
        role: "main".into(),
        member_number: None,
    };
    let cert = issue_card_certificate(&other_key, &other, &pk, &subject, 365).unwrap();
    v["certificate"] = to_hex(&cert.to_der().unwrap()).into();
    std::fs::write(card_path(home, card), serde_json::to_vec(&v).unwrap()).unwrap();
    other.to_pem().unwrap()
}

#[test]
fn a_card_from_another_issuer_gets_no_pin() {
    let home = temp_dir("alien");
    assert!(run(cardvault(&home).args(["-r", "sim:alien", "status"]))
        .status
        .success());
    let other_root = recertify_by_another_issuer(&home, "alien");
    let before = tries_left(&home, "alien");

    let o = run(cardvault(&home)
        .env("P", PIN)
        .args(["--trace", "-r", "sim:alien", "pin", "verify", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not certified by a trusted issuer"), "{err}");
    assert!(err.contains("no PIN or secret was sent"), "{err}");
    // The certificate was read, and nothing after it: no handshake, no VERIFY.
    assert!(err.contains("> 00CABF21"), "{err}");
    for line in err.lines().filter(|l| l.starts_with("> ")) {
        assert!(!line.contains("[SCP11]"), "{line}");
        let head = from_hex(&line[2..line.len().min(6)]).unwrap_or_default();
        assert!(head.len() < 2 || head[1] != 0x20, "VERIFY was sent: {line}");
        assert!(head.len() < 2 || head[1] != 0x88, "the handshake was sent: {line}");
    }
    assert_eq!(tries_left(&home, "alien"), before, "the PIN try counter moved");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:alien", "cert", "show"]));
    let v = json(&o);
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("does not verify"), "{v}");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:alien", "status"]));
    assert_eq!(json(&o)["certificate"]["verified"], false);

    // Control: trusting the other issuer too, the same card gets its PIN.
    let root_file = home.join("other-root.pem");
    std::fs::write(&root_file, &other_root).unwrap();
    let o = run(cardvault(&home).env("P", PIN).arg("--trust").arg(&root_file).args([
        "-r",
        "sim:alien",
        "pin",
        "verify",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    // And through CARDVAULT_TRUST.
    let o = run(cardvault(&home).env("P", PIN).env("CARDVAULT_TRUST", &root_file).args([
        "-r",
        "sim:alien",
        "pin",
        "verify",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn sensitive_commands_sent_plain_get_6982_and_apdu_secure_sends_them_protected() {
    let home = temp_dir("plain");
    let select = "00A4040006F043564C5401";
    let verify = "0020008106313233343536";
    let o = run(cardvault(&home).args(["--json", "-r", "sim:p", "apdu", select, verify]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["exchanges"][1]["sw"], "6982", "{v}");
    assert_eq!(tries_left(&home, "p"), 3);
    // Wrong PIN, protected: the card counts it.
    let o = run(cardvault(&home).args([
        "--json",
        "-r",
        "sim:p",
        "apdu",
        "--secure",
        select,
        "0020008106303030303030",
    ]));
    let v = json(&o);
    assert_eq!(v["secure"], true);
    assert_eq!(v["exchanges"][1]["sw"], "63C2", "{v}");
    assert_eq!(tries_left(&home, "p"), 2);
    // Right PIN then a PIN-protected read, from a script, with the plaintext shown.
    let script = home.join("s.apdu");
    std::fs::write(&script, format!("{verify}  # VERIFY\n80B0000002001000\n")).unwrap();
    let o = run(cardvault(&home)
        .args(["--trace", "-r", "sim:p", "apdu", "--secure", "--strict", "--script"])
        .arg(&script));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("> 0020008106 <6 secret bytes masked>"), "{out}");
    assert!(
        out.contains(&format!("< {} 9000", "00".repeat(16).to_uppercase())),
        "{out}"
    );
    let trace = stderr(&o);
    assert!(
        trace.contains("> [SCP11] 0020008106 <6 secret bytes masked>"),
        "{trace}"
    );
    assert!(!trace.contains("313233343536"), "{trace}");
    assert_eq!(tries_left(&home, "p"), 3);
}

#[test]
fn cert_show_export_and_status_report_the_chain() {
    let home = temp_dir("certcli");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:c", "cert", "show"]));
    let v = json(&o);
    assert_eq!(v["verified"], true, "{v}");
    let leaf = &v["chain"][0];
    let number = leaf["card_number"].as_str().unwrap().to_string();
    assert_eq!(leaf["role"], "main");
    assert!(leaf["issuer"].as_str().unwrap().contains("TEST issuer root"), "{v}");
    assert_eq!(v["trusted_roots"][0], "built-in test issuer");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:c", "status"]));
    let s = json(&o);
    assert_eq!(s["certificate"]["verified"], true, "{s}");
    assert_eq!(s["certificate"]["card_number"], number.as_str());

    let out = home.join("card.pem");
    let o = run(cardvault(&home).args(["-r", "sim:c", "cert", "export", "-o"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let pem = std::fs::read(&out).unwrap();
    let certs = X509::stack_from_pem(&pem).unwrap();
    assert_eq!(certs.len(), 1);
    assert!(cardvault_proto::cert::verify_ecka_chain(
        &[X509::from_pem(&std::fs::read(test_root()).unwrap()).unwrap()],
        &certs
    )
    .is_ok());
    // An existing file is refused (exit 2) and left alone, unless --force.
    std::fs::write(&out, b"keep").unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:c", "cert", "export", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let o = run(cardvault(&home)
        .args(["-r", "sim:c", "cert", "export", "--force", "-o"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), pem);
}

/// A reader that flips one bit of the `n`-th protected exchange (CLA bit 04):
/// in the command's MAC, or in the answer's R-MAC.
struct Tamper<R: Reader> {
    inner: R,
    target: u32,
    answer: bool,
    seen: Arc<AtomicU32>,
}

struct TamperTx<'a> {
    tx: Box<dyn Transmit + 'a>,
    target: u32,
    answer: bool,
    seen: Arc<AtomicU32>,
}

impl<R: Reader> Reader for Tamper<R> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atr(&self) -> &[u8] {
        self.inner.atr()
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn built_in_root(&self) -> Option<&'static [u8]> {
        self.inner.built_in_root()
    }
    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        Ok(Box::new(TamperTx {
            tx: self.inner.transaction()?,
            target: self.target,
            answer: self.answer,
            seen: self.seen.clone(),
        }))
    }
}

impl Transmit for TamperTx<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        let protected = cmd[0] & 0x04 != 0;
        let hit = protected && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.target;
        let mut cmd = cmd.to_vec();
        if hit && !self.answer {
            // The last MAC byte (Le follows it in a case 4 short command).
            let i = cmd.len() - 2;
            cmd[i] ^= 0x01;
        }
        self.tx.transmit(&cmd, resp)?;
        if hit && self.answer && resp.len() > 2 {
            let i = resp.len() - 3;
            resp[i] ^= 0x01;
        }
        Ok(())
    }
}

fn tampered_client_run(home: &Path, answer: bool) -> (cardvault::Error, StatusWord) {
    let sim = SimReader::open(home, "t", "main", None).unwrap();
    let mut r = Tamper {
        inner: sim,
        target: 2, // VERIFY is the first protected command, READ MEMORY the second
        answer,
        seen: Arc::new(AtomicU32::new(0)),
    };
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    assert!(c.is_secure());
    let e = c.read_memory(0, 16).unwrap_err();
    assert!(!c.is_secure(), "the session must be closed after {e}");
    // Plain again: the card's session is gone too (protected commands 6982,
    // the PIN no longer verified for this session).
    let sw = c.channel().transmit(&Command::read_memory(0, 16)).unwrap().sw;
    (e, sw)
}

#[test]
fn a_flipped_mac_byte_ends_the_session() {
    let home = temp_dir("flip");
    // C-MAC flipped on the way to the card: 6988, and the card ends the session.
    let (e, sw) = tampered_client_run(&home, false);
    assert!(
        matches!(
            e,
            cardvault::Error::Card {
                sw: StatusWord::Other(0x6988),
                ..
            }
        ) || e.to_string().contains("6988"),
        "{e}"
    );
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "PIN must be forgotten");
    // R-MAC flipped on the way back: the terminal refuses the answer (exit 6
    // kind) and closes its side; the card, which answered, still has a
    // session the terminal no longer uses.
    let (e, _) = tampered_client_run(&home, true);
    assert!(matches!(e, cardvault::Error::SecureChannel { .. }), "{e}");
    assert_eq!(e.exit_code(), 6);
    assert!(e.to_string().contains("MAC"), "{e}");
    // A new session opens by itself for the next sensitive command.
    let mut r = SimReader::open(&home, "t", "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    assert_eq!(tries_left(&home, "t"), 3);
}

/// SCP11a: the issuer's operator (certified under the root installed on the
/// card) unblocks a PIN and issues a blank card without the shared admin
/// key; an operator of a new issuer (`issuer init`) is refused.
#[test]
fn the_issuer_operator_works_without_the_admin_key_and_another_issuer_is_refused() {
    let home = temp_dir("issuer");
    for _ in 0..3 {
        let o = run(cardvault(&home)
            .env("P", "000000")
            .args(["-r", "sim:u", "pin", "verify", "--pin", "env:P"]));
        assert_eq!(o.status.code(), Some(5));
    }
    assert_eq!(tries_left(&home, "u"), 0);
    let fixtures = repo_path("fixtures/issuer");
    let o = run(cardvault(&home)
        .args(["--trace", "-r", "sim:u", "pin", "unblock", "--issuer"])
        .arg(&fixtures));
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = stderr(&o);
    assert!(
        trace.contains("> 802A0190") && trace.contains("> 802A0110"),
        "OCE chain: {trace}"
    );
    assert!(trace.contains("> 8082011153"), "MUTUAL AUTHENTICATE: {trace}");
    assert!(trace.contains("> [SCP11] 002C0381"), "{trace}");
    for plain_admin in ["> 0084", "> 0484", "> 0082", "> 0482", "[SCP11] 0084", "[SCP11] 0082"] {
        assert!(!trace.contains(plain_admin), "admin key authentication used: {trace}");
    }
    assert_eq!(tries_left(&home, "u"), 3);

    // Issue a blank card with the operator, no admin key anywhere.
    let csv = home.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\nbob,86420975,M-5,2031-01\n").unwrap();
    let o = run(cardvault(&home)
        .args(["--json", "issue", "--profile", "main", "--no-domain", "--holders"])
        .arg(&csv)
        .arg("--issuer")
        .arg(&fixtures)
        .args(["--main", "sim:st"]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["issued"], 1);

    // A new issuer's operator: the card's installed root is not its root.
    let other = home.join("other-issuer");
    let o = run(cardvault(&home).args(["issuer", "init", "-o"]).arg(&other));
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    for key in ["root-key.pem", "oce-key.pem"] {
        let mode = std::fs::metadata(other.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let o = run(cardvault(&home).args(["issuer", "init", "-o"]).arg(&other));
    assert_eq!(
        o.status.code(),
        Some(2),
        "existing issuer files are not replaced without --force"
    );
    for _ in 0..3 {
        run(cardvault(&home)
            .env("P", "000000")
            .args(["-r", "sim:u", "pin", "verify", "--pin", "env:P"]));
    }
    let o = run(cardvault(&home)
        .args(["--json", "-r", "sim:u", "pin", "unblock", "--issuer"])
        .arg(&other));
    assert_eq!(o.status.code(), Some(5), "{}", stdout(&o));
    assert_eq!(json(&o)["error"]["kind"], "issuer_refused");
    assert_eq!(tries_left(&home, "u"), 0, "still blocked");
}

/// The issuer's other admin commands take the operator too: releasing a
/// duplicate (up to the card's own rule for it), and the rollback override of a restore (where the
/// PIN is verified again in the SCP11a session, which forgot the first).
#[test]
fn keygroup_release_and_the_rollback_override_take_the_issuer_operator() {
    let home = temp_dir("issuer-admin");
    let fixtures = repo_path("fixtures/issuer");
    {
        let mut r = SimReader::open(&home, "m", "main", None).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.write_key_element(2, &[0x22; 32]).unwrap();
        c.write_key_element(3, &[0x33; 32]).unwrap();
        c.generate_key_pair().unwrap();
        // A backup card certified by the test issuer (its key is not needed here).
        let backup_key = cardvault_proto::crypto::KeyPair::generate().unwrap();
        let subject = cardvault_proto::cert::CardSubject {
            card_number: "1234567890123456".into(),
            role: "backup".into(),
            member_number: None,
        };
        c.take_out_key(&applet_sim::test_issuer::certify_card(
            &backup_key.public_bytes(),
            &subject,
        ))
        .unwrap();
    }
    assert_eq!(state_json(&home, "m")["export"]["target"], "1234567890123456");
    // The operator's SCP11a session is an admin session: the card goes on to
    // RELEASE DUPLICATE's own rule (a take-out left the card, so the backup
    // card's DESTROY KEY receipt is needed: 6985, exit 4), where a refused
    // operator would have stopped at the handshake (exit 5, issuer_refused).
    let o = run(cardvault(&home)
        .args(["--json", "-r", "sim:m", "keygroup", "release", "--issuer"])
        .arg(&fixtures));
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(
        json(&o)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signed receipt that it destroyed the key is needed"),
        "{}",
        stdout(&o)
    );
    assert_eq!(state_json(&home, "m")["export"]["target"], "1234567890123456");

    // Rollback override: back up twice, then restore the first backup.
    let backup = |fill: u8| {
        {
            let mut r = SimReader::open(&home, "m", "main", None).unwrap();
            let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
            c.verify_pin(PIN.as_bytes()).unwrap();
            c.write_memory(FIRST_DATA_PAGE, &[fill; 256]).unwrap();
        }
        let o = run(cardvault(&home)
            .env("P", PIN)
            .args(["--json", "-r", "sim:m", "backup", "--full", "--pin", "env:P"]));
        assert!(o.status.success(), "{}", stderr(&o));
        json(&o)["backup_id"].as_i64().unwrap().to_string()
    };
    let first = backup(1);
    backup(2);
    let restore = |extra: &[&str]| {
        let mut c = cardvault(&home);
        c.env("P", PIN)
            .args(["-r", "sim:m", "restore", "--backup", &first, "--pin", "env:P"])
            .args(extra);
        run(&mut c)
    };
    let o = restore(&["--allow-rollback"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = restore(&["--allow-rollback", "--issuer", fixtures.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The memory is in the card's page file; read the card as a whole.
    let mem = state(&home, "m").memory.clone();
    assert_eq!(
        mem[1024..1024 + 256],
        [1; 256],
        "page {FIRST_DATA_PAGE} is the first backup's"
    );
}
