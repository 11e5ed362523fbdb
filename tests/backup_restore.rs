//! Encrypted page backup into the vault, and restore onto the same card or a
//! replacement card, on embedded cards. Every refusal leaves the card unchanged.

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault_proto::backup as bk;
use common::*;
use std::path::{Path, PathBuf};

fn memory(home: &Path, name: &str) -> Vec<u8> {
    applet_sim::state::Store::peek(&card_path(home, name))
        .unwrap()
        .memory
        .clone()
}

fn ok(o: std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    json(&o)
}

/// Write `data` at `page` of an embedded card (creating it from `profile`).
fn write(home: &Path, name: &str, page: u16, data: &[u8]) {
    let mut r = SimReader::open(home, name, "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    // One APDU carries at most 65535 bytes: write in 32 KiB (128-page) pieces.
    for (i, chunk) in data.chunks(32768).enumerate() {
        c.write_memory(page + (i * 128) as u16, chunk).unwrap();
    }
}

fn backup(home: &Path, name: &str, full: bool) -> serde_json::Value {
    let mut c = cv(home);
    c.args(["--json", "-r", &format!("sim:{name}"), "backup", "--pin", "env:P"]);
    if full {
        c.arg("--full");
    }
    ok(run(&mut c))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

#[test]
fn full_backup_then_changes_then_restore_gives_back_the_application_area() {
    let home = temp_dir("same");
    write(&home, "c", 10, &pattern(1, 8192));
    let b = backup(&home, "c", false);
    assert_eq!(b["kind"], "full");
    let at_backup = memory(&home, "c");
    write(&home, "c", 10, &pattern(2, 4096));
    write(&home, "c", 200, &pattern(3, 512));
    assert_ne!(memory(&home, "c"), at_backup);
    let r =
        ok(run(cv(&home).args([
            "--json", "-r", "sim:c", "restore", "--latest", "--pin", "env:P",
        ])));
    assert_eq!(r["mode"], "same-card");
    assert_eq!(memory(&home, "c"), at_backup, "application area differs after restore");
    // The vault holds no plaintext: the written pattern appears nowhere in it.
    let vault = std::fs::read(home.join("vault.sqlite")).unwrap();
    let needle = &pattern(1, 8192)[100..164];
    assert!(
        !vault.windows(needle.len()).any(|w| w == needle),
        "plaintext page data in the vault"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("vault.sqlite"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

fn request_and_authorize(home: &Path, target: &str, source_number: &str, extra: &[&str]) -> PathBuf {
    let req = home.join(format!("req-{target}.json"));
    let auth = home.join(format!("auth-{target}.json"));
    let _ = std::fs::remove_file(&auth);
    let mut c = cv(home);
    c.args([
        "-r",
        &format!("sim:{target}"),
        "restore",
        "--from-card",
        source_number,
        "--pin",
        "env:P",
        "--request",
    ])
    .arg(&req)
    .args(extra);
    ok_plain(run(&mut c));
    // The issuer signs only for a source card reported lost.
    ok_plain(run(cv(home).args(["card", "revoke", source_number])));
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/issuer/issuer-private.hex");
    let o = run(cv(home)
        .args(["authorize-restore", "--request"])
        .arg(&req)
        .arg("--issuer-key")
        .arg(format!("file:{}", key.display()))
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(&auth));
    ok_plain(o);
    auth
}

fn ok_plain(o: std::process::Output) {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_chain_of_a_full_and_five_differentials_restores_onto_a_replacement_card() {
    let home = temp_dir("chain");
    write(&home, "src", FIRST_DATA_PAGE, &pattern(10, 65536 - 1024));
    assert_eq!(backup(&home, "src", false)["kind"], "full");
    for i in 0..5u64 {
        write(
            &home,
            "src",
            FIRST_DATA_PAGE + (i * 37 % 240) as u16,
            &pattern(20 + i, 700),
        );
        let b = backup(&home, "src", false);
        assert_eq!(b["kind"], "differential");
        assert!(b["pages"].as_u64().unwrap() >= 3);
    }
    let source = memory(&home, "src");
    let number = state(&home, "src").card_number.clone();
    // A blank-state replacement card of the same issuer domain.
    ok_plain(run(cv(&home).args(["-r", "sim:repl", "status"])));
    let before = memory(&home, "repl");
    // Without an authorization: refused, nothing written.
    let o = run(cv(&home).args(["-r", "sim:repl", "restore", "--from-card", &number, "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(memory(&home, "repl"), before);
    let auth = request_and_authorize(&home, "repl", &number, &[]);
    let r = ok(run(cv(&home)
        .args([
            "--json",
            "-r",
            "sim:repl",
            "restore",
            "--from-card",
            &number,
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&auth)));
    assert_eq!(r["chain"].as_array().unwrap().len(), 6);
    assert_eq!(r["mode"], "other-card");
    assert_eq!(
        memory(&home, "repl"),
        source,
        "replacement card differs from the source"
    );
    // The authorization was for one use: replaying it is refused.
    let again = memory(&home, "repl");
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:repl",
            "restore",
            "--from-card",
            &number,
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&auth));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(memory(&home, "repl"), again);
}

/// Send a backup's APDUs by hand (to tamper below the vault's checks).
fn send_restore(home: &Path, card: &str, p1: u8, header: &[u8], records: &[Vec<u8>], trailer: &[u8]) -> StatusWord {
    let mut r = SimReader::open(home, card, "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    let sw = c.transmit(&Command::restore(p1, false, header)).unwrap().sw;
    if !sw.is_ok() {
        return sw;
    }
    for rec in records {
        let sw = c.transmit(&Command::restore_record(rec)).unwrap().sw;
        if !sw.is_ok() {
            return sw;
        }
    }
    let sw = c.transmit(&Command::restore_trailer(trailer)).unwrap().sw;
    if !sw.is_ok() {
        return sw;
    }
    c.transmit(&Command::restore_complete()).unwrap().sw
}

/// (what, header, records, trailer) of one tampered restore.
type Case = (&'static str, Vec<u8>, Vec<Vec<u8>>, Vec<u8>);

#[test]
fn tampered_reordered_truncated_or_foreign_records_are_refused_and_nothing_is_written() {
    let home = temp_dir("tamper");
    write(&home, "t", FIRST_DATA_PAGE, &pattern(5, 65536 - 1024));
    backup(&home, "t", true); // id 1: two records
    write(&home, "t", 7, &pattern(6, 300));
    backup(&home, "t", true); // id 2: another full backup
    write(&home, "t", 50, &pattern(7, 300));
    let vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    let a = vault.load_backup(1).unwrap();
    let b = vault.load_backup(2).unwrap();
    assert!(a.records.len() >= 2);
    let before = state(&home, "t");
    let mut cases: Vec<Case> = Vec::new();
    let mut flipped = a.records.clone();
    flipped[0][100] ^= 1;
    cases.push(("tampered record", a.header.clone(), flipped, a.trailer.clone()));
    let mut swapped = a.records.clone();
    swapped.swap(0, 1);
    cases.push(("reordered records", a.header.clone(), swapped, a.trailer.clone()));
    cases.push((
        "truncated backup",
        a.header.clone(),
        a.records[..1].to_vec(),
        a.trailer.clone(),
    ));
    let mut foreign = a.records.clone();
    foreign[0] = b.records[0].clone();
    cases.push((
        "record from another backup",
        a.header.clone(),
        foreign,
        a.trailer.clone(),
    ));
    let mut bad_trailer = a.trailer.clone();
    bad_trailer[10] ^= 1;
    cases.push(("forged trailer", a.header.clone(), a.records.clone(), bad_trailer));
    let mut bad_header = a.header.clone();
    let n = bad_header.len();
    bad_header[n - 5] ^= 1;
    cases.push((
        "tampered control information",
        bad_header,
        a.records.clone(),
        a.trailer.clone(),
    ));
    for (what, h, recs, tr) in cases {
        let sw = send_restore(&home, "t", bk::RESTORE_SAME_CARD, &h, &recs, &tr);
        assert!(!sw.is_ok(), "{what}: accepted");
        assert_eq!(state(&home, "t"), before, "{what}: the card changed");
    }
    // Another card's backup presented as a same-card restore.
    write(&home, "other", FIRST_DATA_PAGE, &[1; 256]);
    backup(&home, "other", true);
    let o = vault
        .list_backups(None)
        .unwrap()
        .into_iter()
        .find(|r| r.card_number != before.card_number)
        .unwrap();
    let ob = vault.load_backup(o.id).unwrap();
    let sw = send_restore(&home, "t", bk::RESTORE_SAME_CARD, &ob.header, &ob.records, &ob.trailer);
    assert_eq!(sw, StatusWord::WrongData);
    assert_eq!(state(&home, "t"), before);
    // The intact backup restores (a control that the harness itself works).
    let sw = send_restore(&home, "t", bk::RESTORE_SAME_CARD, &b.header, &b.records, &b.trailer);
    assert!(sw.is_ok(), "{sw}");
}

#[test]
fn a_tampered_vault_is_named_by_verify() {
    let home = temp_dir("vault");
    write(&home, "v", FIRST_DATA_PAGE, &pattern(8, 4096));
    backup(&home, "v", true);
    zero_record(&home, 1);
    let o = run(cv(&home).args(["vault", "verify"]));
    assert_eq!(o.status.code(), Some(6));
    assert!(
        stdout(&o).contains("backup 1") && stdout(&o).contains("digest"),
        "{}",
        stdout(&o)
    );
}

/// Overwrite the first record of vault backup `id` with zeros (still a BLOB).
fn zero_record(home: &Path, id: i64) {
    let conn = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
    let n = conn
        .execute(
            "UPDATE records SET data = zeroblob(length(data)) WHERE backup_id = ?1 AND idx = 0",
            [id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// The vault's backups and records, row by row (restore attempts and the
/// audit trail are meant to grow with each attempt; these are not).
fn backup_rows(home: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
    let mut rows = Vec::new();
    for table in ["backups", "records"] {
        let mut q = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2")).unwrap();
        let n = q.column_count();
        let mut r = q.query([]).unwrap();
        while let Some(row) = r.next().unwrap() {
            let values: Vec<rusqlite::types::Value> = (0..n).map(|k| row.get(k).unwrap()).collect();
            rows.push(format!("{table} {values:?}"));
        }
    }
    rows
}

/// A card `s` with two full backups (older, newer) in the vault, and a
/// blank replacement card `t` of the same issuer domain.
struct RestoreScene {
    home: TempDir,
    source: String,
    older_id: i64,
    newer_counter: u32,
}

impl RestoreScene {
    fn new(tag: &str) -> RestoreScene {
        let home = temp_dir(tag);
        write(&home, "s", FIRST_DATA_PAGE, &[1; 2048]);
        let older = backup(&home, "s", true);
        write(&home, "s", FIRST_DATA_PAGE, &[2; 2048]);
        let newer = backup(&home, "s", true);
        ok_plain(run(cv(&home).args(["-r", "sim:t", "status"])));
        RestoreScene {
            source: state(&home, "s").card_number.clone(),
            older_id: older["backup_id"].as_i64().unwrap(),
            newer_counter: newer["counter"].as_u64().unwrap() as u32,
            home,
        }
    }

    /// `restore --from-card s --pin env:P` for card `t`, with more arguments.
    fn onto_t(&self, more: &[&str]) -> (&'static str, Vec<String>) {
        let mut args = vec![
            "--from-card".to_string(),
            self.source.clone(),
            "--pin".into(),
            "env:P".into(),
        ];
        args.extend(more.iter().map(|a| a.to_string()));
        ("t", args)
    }

    /// An authorization made for card `target`, edited by `edit`, saved as a
    /// new file whose path is returned. Leaves `t` with an outstanding challenge.
    fn authorization(&self, target: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        if target != "t" {
            ok_plain(run(cv(&self.home).args(["-r", &format!("sim:{target}"), "status"])));
        }
        let auth = request_and_authorize(&self.home, target, &self.source, &[]);
        if target != "t" {
            request_and_authorize(&self.home, "t", &self.source, &[]);
        }
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
        edit(&mut v);
        let edited = self.home.join(format!("edited-{target}.json"));
        std::fs::write(&edited, v.to_string()).unwrap();
        edited.display().to_string()
    }
}

/// One refused restore: how to set it up (the card to restore and the
/// arguments after `restore`), and what the refusal must be.
struct RefusedRestore {
    case: &'static str,
    setup: fn(&RestoreScene) -> (&'static str, Vec<String>),
    exit_code: i32,
    message: &'static str,
}

const REFUSED_RESTORES: &[RefusedRestore] = &[
    RefusedRestore {
        case: "a record of the backup altered in the vault",
        setup: |s| {
            let id = s.older_id + 1;
            zero_record(&s.home, id);
            ("s", vec!["--latest".into(), "--pin".into(), "env:P".into()])
        },
        exit_code: 6,
        message: "backup 2",
    },
    RefusedRestore {
        case: "an older backup without the issuer's override (rollback)",
        setup: |s| {
            let id = s.older_id.to_string();
            ("s", vec!["--backup".into(), id, "--pin".into(), "env:P".into()])
        },
        exit_code: 4,
        message: "rollback",
    },
    RefusedRestore {
        case: "a wrong PIN",
        setup: |s| {
            let pin = s.home.join("wrong-pin");
            std::fs::write(&pin, "999999").unwrap();
            (
                "s",
                vec!["--latest".into(), "--pin".into(), format!("file:{}", pin.display())],
            )
        },
        exit_code: 5,
        message: "wrong PIN",
    },
    RefusedRestore {
        case: "another card's backup without an authorization",
        setup: |s| s.onto_t(&[]),
        exit_code: 2,
        message: "needs an issuer authorization",
    },
    RefusedRestore {
        case: "an authorization for another target card",
        setup: |s| {
            let auth = s.authorization("x", |_| {});
            s.onto_t(&["--authorization", &auth])
        },
        exit_code: 4,
        message: "authorization is for",
    },
    RefusedRestore {
        case: "an authorization whose target was edited (it still names the other card's certificate: wrong target)",
        setup: |s| {
            let t = state(&s.home, "t").card_number.clone();
            let auth = s.authorization("x", |v| v["target_card"] = t.into());
            s.onto_t(&["--authorization", &auth])
        },
        exit_code: 4,
        message: "wrong target: the authorization names another certificate",
    },
    RefusedRestore {
        case: "an authorization signed by a key whose certificate is not under the card's root (signer not trusted)",
        setup: |s| {
            let req = s.home.join("req-rogue.json");
            let mut c = cv(&s.home);
            c.args([
                "-r",
                "sim:t",
                "restore",
                "--from-card",
                &s.source,
                "--pin",
                "env:P",
                "--request",
            ])
            .arg(&req);
            ok_plain(run(&mut c));
            // Another issuer (`issuer init`): its signer is certified by its
            // own root, which the card does not have installed.
            let rogue = s.home.join("rogue-issuer");
            ok_plain(run(cv(&s.home).args(["issuer", "init", "-o"]).arg(&rogue)));
            let auth = s.home.join("rogue-auth.json");
            ok_plain(run(cv(&s.home).args(["card", "revoke", &s.source])));
            ok_plain(run(cv(&s.home)
                .args(["authorize-restore", "--request"])
                .arg(&req)
                .arg("--issuer-key")
                .arg(format!("file:{}", rogue.join("signer-key.hex").display()))
                .arg("--signer-cert")
                .arg(rogue.join("signer.pem"))
                .arg("--issuer-root")
                .arg(test_root())
                .arg("-o")
                .arg(&auth)));
            s.onto_t(&["--authorization", &auth.display().to_string()])
        },
        exit_code: 4,
        message: "signer not trusted",
    },
    RefusedRestore {
        case: "an authorization signed for another certificate of the target card number (wrong target)",
        setup: |s| {
            let req = s.home.join("req-othercert.json");
            let mut c = cv(&s.home);
            c.args([
                "-r",
                "sim:t",
                "restore",
                "--from-card",
                &s.source,
                "--pin",
                "env:P",
                "--request",
            ])
            .arg(&req);
            ok_plain(run(&mut c));
            // The issuer signs for the same number but another registration
            // certificate (a genuine one under its root, for a card that is not
            // this one): signed here directly, the card's check is the subject.
            let mut req: cardvault::workflow::backup::RestoreRequest =
                serde_json::from_str(&std::fs::read_to_string(&req).unwrap()).unwrap();
            let other = cardvault_proto::crypto::KeyPair::generate().unwrap();
            let subject = cardvault_proto::cert::CardSubject {
                card_number: state(&s.home, "t").card_number.clone(),
                role: "replacement".into(),
                member_number: None,
            };
            req.target_certificate =
                cardvault_proto::to_hex(&applet_sim::test_issuer::certify_card(&other.public_bytes(), &subject));
            let signed = cardvault::workflow::backup::sign_authorization(&req, &issuer_signer()).unwrap();
            let auth = s.home.join("othercert-auth.json");
            std::fs::write(&auth, serde_json::to_string(&signed).unwrap()).unwrap();
            s.onto_t(&["--authorization", &auth.display().to_string()])
        },
        exit_code: 4,
        message: "wrong target: the authorization names another certificate",
    },
    RefusedRestore {
        case: "an authorization for the newest backup, presented with an older chain",
        setup: |s| {
            let auth = s.authorization("t", |_| {});
            let id = s.older_id.to_string();
            s.onto_t(&["--authorization", &auth, "--backup", &id])
        },
        exit_code: 4,
        message: "authorization is for",
    },
    RefusedRestore {
        case: "an authorization whose counter was edited to an older backup (its chain hash is another chain's)",
        setup: |s| {
            let older = s.newer_counter - 1;
            let auth = s.authorization("t", |v| v["counter"] = older.into());
            s.onto_t(&["--authorization", &auth])
        },
        exit_code: 4,
        message: "counter mismatch",
    },
    RefusedRestore {
        case: "an authorization whose counter names no backup in the vault",
        setup: |s| {
            let auth = s.authorization("t", |v| v["counter"] = 99.into());
            s.onto_t(&["--authorization", &auth])
        },
        exit_code: 2,
        message: "has no backup #99",
    },
];

/// Every refused restore exits with its code, says why, and leaves every card
/// and the vault's backups as they were.
#[test]
fn refused_restores_change_nothing() {
    for (k, r) in REFUSED_RESTORES.iter().enumerate() {
        let scene = RestoreScene::new(&format!("refused{k}"));
        let (card, args) = (r.setup)(&scene);
        let home = &scene.home;
        let cards: Vec<(String, applet_sim::CardState)> = cardvault::transport::sim::list(home)
            .into_iter()
            .map(|n| {
                let st = state(home, &n);
                (n, st)
            })
            .collect();
        let rows = backup_rows(home);
        let o = run(cv(home).args(["-r", &format!("sim:{card}"), "restore"]).args(&args));
        assert_eq!(o.status.code(), Some(r.exit_code), "{}: {}", r.case, stderr(&o));
        assert!(
            stderr(&o).contains(r.message),
            "{}: '{}' not in: {}",
            r.case,
            r.message,
            stderr(&o)
        );
        for (name, before) in &cards {
            let mut expected = before.clone();
            let after = state(home, name);
            if name == card {
                // A wrong PIN counts down its retry counter; a card that looked
                // at an authorization has spent its one-use challenge.
                if r.exit_code == 5 {
                    expected.pin.tries_left -= 1;
                }
                if after.restore_challenge.is_empty() {
                    expected.restore_challenge.clear();
                }
            }
            assert!(after == expected, "{}: card {name} changed", r.case);
        }
        assert_eq!(backup_rows(home), rows, "{}: the vault's backups changed", r.case);
    }
}

#[test]
fn rollback_is_allowed_when_the_issuer_overrides_and_the_override_is_audited() {
    let home = temp_dir("rollback");
    write(&home, "r", FIRST_DATA_PAGE, &[1; 256]);
    let first = backup(&home, "r", true);
    write(&home, "r", FIRST_DATA_PAGE, &[2; 256]);
    backup(&home, "r", true);
    let id = first["backup_id"].as_i64().unwrap().to_string();
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:r",
            "restore",
            "--backup",
            &id,
            "--pin",
            "env:P",
            "--allow-rollback",
            "--issuer",
        ])
        .arg(test_issuer_dir()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(memory(&home, "r")[1024..1280], [1; 256]);
    let o = run(cv(&home).args(["--json", "audit"]));
    let entries = json(&o)["entries"].as_array().unwrap().clone();
    assert!(entries
        .iter()
        .any(|e| e["event"] == "restore-with-rollback-override" && e["result"] == "ok"));
}

#[test]
fn a_card_pulled_mid_restore_is_unchanged_and_the_purse_resets_after_a_restore() {
    let home = temp_dir("pulled");
    {
        let mut r = SimReader::open(&home, "p", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        cardvault::workflow::purse::credit_with_issuer_key(&mut c, PIN.as_bytes(), 1, 1000, &issuer_signer()).unwrap();
        c.write_memory(100, &pattern(11, 4096)).unwrap();
    }
    backup(&home, "p", true);
    write(&home, "p", 100, &pattern(12, 4096));
    let vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    let b = vault.load_backup(1).unwrap();
    let before = state(&home, "p");
    {
        // RESTORE and one record, then the card leaves the reader.
        let mut r = SimReader::open(&home, "p", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        assert!(c.transmit(&Command::restore(0, false, &b.header)).unwrap().sw.is_ok());
        assert!(c.transmit(&Command::restore_record(&b.records[0])).unwrap().sw.is_ok());
    }
    assert_eq!(state(&home, "p"), before, "a pulled card changed");
    // The whole restore then works, and the restored purse value is reset before use.
    ok_plain(run(
        cv(&home).args(["-r", "sim:p", "restore", "--latest", "--pin", "env:P"])
    ));
    assert!(state(&home, "p").applications.iter().any(|a| a.value && a.restored));
    let o = ok(run(cv(&home).args(["--json", "-r", "sim:p", "purse", "balance"])));
    assert_eq!(o["balance"], 0, "restored value must not be spendable");
    assert!(state(&home, "p").applications.iter().all(|a| !a.restored));
}

#[test]
fn a_crash_between_vault_commit_and_complete_keeps_the_pages_for_the_next_differential() {
    let home = temp_dir("crash");
    write(&home, "k", FIRST_DATA_PAGE, &pattern(13, 1024));
    backup(&home, "k", true);
    write(&home, "k", 40, &pattern(14, 512)); // pages 40, 41
    {
        // Read the differential and store it, but never send BACKUP COMPLETE.
        let mut r = SimReader::open(&home, "k", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        let resp = c
            .transmit(&Command::backup(bk::BACKUP_AUTO, bk::MAX_BLOCK as u16, 0))
            .unwrap();
        assert!(resp.sw.is_ok());
        let hlen = u16::from_be_bytes([resp.data[0], resp.data[1]]) as usize;
        let header = resp.data[2..2 + hlen].to_vec();
        let body = &resp.data[2 + hlen..];
        let (rec, trailer) = body.split_at(body.len() - bk::TRAILER_LEN);
        let number = cardvault_proto::backup::parse_header(&header).unwrap().card_number;
        let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
        vault
            .store_backup(&cardvault::vault::NewBackup {
                card_number: &number,
                header: &header,
                records: &[rec.to_vec()],
                trailer,
            })
            .unwrap();
    }
    write(&home, "k", 90, &pattern(15, 256)); // page 90
    let next = backup(&home, "k", false);
    assert_eq!(next["kind"], "differential");
    assert_eq!(
        next["pages"], 3,
        "pages 40, 41 and 90 must all be in the next differential"
    );
    // And the chain restores the latest state onto the card.
    let latest = memory(&home, "k");
    write(&home, "k", 40, &[0; 512]);
    ok_plain(run(
        cv(&home).args(["-r", "sim:k", "restore", "--latest", "--pin", "env:P"])
    ));
    assert_eq!(memory(&home, "k"), latest);
    assert!(run(cv(&home).args(["vault", "verify"])).status.success());
}

#[test]
fn a_full_backup_of_64k_takes_the_minimum_apdus() {
    let home = temp_dir("apdus");
    write(&home, "m", FIRST_DATA_PAGE, &pattern(16, 65536 - 1024));
    let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    let mut r = SimReader::open(&home, "m", "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    let rep = cardvault::workflow::backup::backup(&mut c, &mut vault, true, &|_, _| {}).unwrap();
    // SELECT, the SCP11b handshake (GET DATA BF21, INTERNAL AUTHENTICATE),
    // VERIFY, and the backup itself (BACKUP, BACKUP DATA..., BACKUP COMPLETE).
    let total = c.channel().stats().apdus;
    let minimum = 65536usize.div_ceil(bk::MAX_BLOCK) as u64 + 5;
    println!(
        "full backup of 64 KiB: {total} APDUs (bound {minimum}), {} bytes in",
        rep.bytes_in
    );
    assert!(total <= minimum, "{total} APDUs, bound {minimum}");
}

#[test]
fn export_and_import_move_backups_between_vaults() {
    let home = temp_dir("export");
    write(&home, "e", FIRST_DATA_PAGE, &pattern(17, 1000));
    backup(&home, "e", true);
    write(&home, "e", 9, &pattern(18, 300));
    backup(&home, "e", false);
    let file = home.join("export.cvv");
    ok_plain(run(cv(&home).args(["vault", "export", "-o"]).arg(&file)));
    let other = home.join("other-vault.sqlite");
    let v = ok(run(cv(&home)
        .arg("--vault")
        .arg(&other)
        .args(["--json", "vault", "import"])
        .arg(&file)));
    assert_eq!(v["imported"], 2);
    let v = ok(run(cv(&home)
        .arg("--vault")
        .arg(&other)
        .args(["--json", "vault", "import"])
        .arg(&file)));
    assert_eq!(
        (v["imported"].as_u64(), v["already_present"].as_u64()),
        (Some(0), Some(2))
    );
    let l = ok(run(cv(&home)
        .arg("--vault")
        .arg(&other)
        .args(["--json", "vault", "list"])));
    assert_eq!(l["backups"].as_array().unwrap().len(), 2);
    // A damaged export is refused whole.
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute("UPDATE backups SET trailer = zeroblob(36) WHERE counter = 2", [])
            .unwrap();
    }
    let third = home.join("third.sqlite");
    let o = run(cv(&home)
        .arg("--vault")
        .arg(&third)
        .args(["vault", "import"])
        .arg(&file));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let l = ok(run(cv(&home)
        .arg("--vault")
        .arg(&third)
        .args(["--json", "vault", "list"])));
    assert!(l["backups"].as_array().unwrap().is_empty());
}

#[test]
fn application_writes_are_refused_while_a_backup_is_in_progress() {
    let home = temp_dir("busy");
    write(&home, "b", FIRST_DATA_PAGE, &[1u8; 1024]);
    let mut r = SimReader::open(&home, "b", "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    // A tiny block size keeps the backup open after its first answer.
    let resp = c.transmit(&Command::backup(bk::TYPE_FULL, 1024, 0)).unwrap();
    assert_eq!(resp.sw, StatusWord::MoreBlocks);
    let before = state(&home, "b");
    let sw = c
        .transmit(&Command::write_memory(FIRST_DATA_PAGE, &[9u8; 16]))
        .unwrap()
        .sw;
    assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    let auth = cardvault_proto::load::LoadAuthorization {
        amount: 10,
        signature: [0; 64],
        signer_certificate: issuer_signer().certificate_der().to_vec(),
    };
    let sw = c.transmit(&Command::credit(1, &auth)).unwrap().sw;
    assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    assert_eq!(state(&home, "b").memory, before.memory);
}

/// Open a card session on `r` (SELECT included).
fn client(r: &mut dyn cardvault::transport::Reader, trace: bool) -> cardvault::Result<cardvault::card::CardClient<'_>> {
    cardvault::card::CardClient::open(
        r,
        cardvault::card::SessionOptions {
            trace,
            ..Default::default()
        },
    )
}

/// The terminal checks an authorization before RESTORE (`restore` names the
/// check that fails); the card checks it again whatever the terminal does:
/// forged authorizations sent straight to the card (no terminal checks)
/// are refused and change nothing but the spent challenge.
#[test]
fn the_card_refuses_forged_authorizations_the_terminal_would_have_stopped() {
    use cardvault::workflow::backup as wb;
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 3] = [
        ("signature", |v| {
            let s = v["signature"].as_str().unwrap().to_string();
            v["signature"] = format!("{}{}", if &s[..2] == "00" { "01" } else { "00" }, &s[2..]).into();
        }),
        ("counter", |v| {
            v["counter"] = (v["counter"].as_u64().unwrap() - 1).into()
        }),
        ("chain hash", |v| v["chain_hash"] = "00".repeat(32).into()),
    ];
    for (what, edit) in edits {
        let scene = RestoreScene::new(&format!("card-checks-{}", what.replace(' ', "-")));
        let home = &scene.home;
        let path = scene.authorization("t", edit);
        let auth: wb::RestoreAuthorization = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
        let last = vault
            .list_backups(Some(&scene.source))
            .unwrap()
            .into_iter()
            .find(|b| b.counter == auth.request.counter)
            .unwrap();
        let plan = wb::RestorePlan {
            chain: vault.chain_to(&last).unwrap(),
            authorization: Some(&auth),
            override_rollback: false,
            agreements: &[],
        };
        let before = state(home, "t");
        let mut r = SimReader::open(home, "t", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        let e = wb::restore(&mut c, &mut vault, &plan, &|_, _| {}).expect_err(what);
        assert!(
            matches!(
                e,
                cardvault::Error::Restore(
                    wb::RestoreRefusal::ChallengeNotOutstanding { .. } | wb::RestoreRefusal::ChainNotAuthorized { .. }
                )
            ),
            "{what}: {e}"
        );
        drop(c);
        drop(r);
        let mut after = state(home, "t");
        after.restore_challenge = before.restore_challenge.clone();
        assert!(after == before, "{what}: card t changed");
    }
}

/// `restore --dry-run` names the chain and the refusals it foresees, sends
/// nothing but reads (no PIN, the card unchanged); a real restore announces
/// the value the card resets, with the amount.
#[test]
fn a_dry_run_refuses_a_rollback_before_sending_and_a_restore_announces_the_value_reset() {
    let home = temp_dir("dry-run");
    {
        let mut r = SimReader::open(&home, "d", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        cardvault::workflow::purse::credit_with_issuer_key(&mut c, PIN.as_bytes(), 1, 500, &issuer_signer()).unwrap();
    }
    write(&home, "d", FIRST_DATA_PAGE, &[1; 512]);
    let older = backup(&home, "d", true);
    write(&home, "d", FIRST_DATA_PAGE, &[2; 512]);
    backup(&home, "d", true);
    let before = state(&home, "d");
    let older_id = older["backup_id"].as_i64().unwrap().to_string();

    // The older backup: a rollback, refused with nothing sent.
    let o = run(cardvault(&home).args(["-r", "sim:d", "restore", "--dry-run", "--backup", &older_id]));
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("REFUSED: rollback: backup #1 is older than #2"),
        "{}",
        stdout(&o)
    );
    // The newest: accepted, with the chain and the value it would reset.
    let o = run(cardvault(&home).args(["--json", "-r", "sim:d", "restore", "--dry-run"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = json(&o);
    assert_eq!(p["refusals"].as_array().unwrap().len(), 0, "{p}");
    assert_eq!(p["chain"][0]["counter"], 2, "{p}");
    assert_eq!(p["mode"], "same-card");
    assert_eq!(p["value_reset"][0]["balance"], 500, "{p}");
    // No PIN was asked (stdin is closed) and the card is as it was.
    assert!(state(&home, "d") == before, "a dry run changed the card");

    // A wallet item of the card deposited into a safe: no backup holds it.
    let safe = init_safe(&home, "safe1");
    let o = run(cv(&home)
        .env("ISSUER", ISSUER_KEY_HEX.trim())
        .args(["--json", "-r", "sim:d", "wallet", "load", "--pin", "env:P"])
        .args(["--issuer-key", "env:ISSUER", "--signer-cert"])
        .arg(test_signer_cert())
        .args(["--kind", "ticket", "--name", "Museum day pass", "--unit-price", "1200"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let item = json(&o)["item"]["id"].as_str().unwrap().to_string();
    let o = run(cv(&home)
        .args(["-r", "sim:d", "wallet", "deposit", &item, "--pin", "env:P", "--safe"])
        .arg(&safe));
    assert!(o.status.success(), "{}", stderr(&o));

    // The real restore: the purse's 500 are announced as reset, and the
    // withdrawal of the item in the safe is offered.
    let o = run(cv(&home).args(["-r", "sim:d", "restore", "--latest", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("value reset: e-money purse (application 1) is never restored from a backup; the card reset it from 500 to 0"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("come back by `cardvault wallet withdraw ITEM --safe S`"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!("  item {item} in safe {}", safe.display())),
        "{}",
        stdout(&o)
    );
    let o = run(cardvault(&home).args(["--json", "-r", "sim:d", "purse", "balance"]));
    assert_eq!(json(&o)["balance"], 0, "{}", stdout(&o));
}
