//! Key groups and duplicate cards on embedded cards: the operator's story,
//! and every refusal the card must make without changing anything.

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::transport::sim::SimReader;
use cardvault_proto::{from_hex, to_hex};
use common::*;
use openssl::x509::X509;
use std::path::Path;

const PIN: &str = "2468";
const E2: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const E3: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const OTHER_KEY1: &str = "9999999999999999999999999999999999999999999999999999999999999999";

/// The common `cv` with this file's PIN and key group elements 2 and 3 in `E`.
fn cv(home: &Path) -> std::process::Command {
    let mut c = common::cv(home);
    c.env("P", PIN).env("E", format!("{E2}\n{E3}"));
    c
}

/// Issue cards for holders (CSV rows after the header) with a profile.
fn issue(home: &Path, prefix: &str, profile: &str, rows: &str) {
    let csv = home.join(format!("{prefix}-{profile}.csv"));
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(&csv, format!("holder,pin,member_number,expiry,key1\n{rows}")).unwrap();
    let o = run(cv(home)
        .args([
            "-r",
            &format!("sim:{prefix}"),
            "issue",
            "--profile",
            profile,
            "--holders",
        ])
        .arg(&csv)
        .arg("--no-domain"));
    assert!(o.status.success(), "issue failed: {}{}", stdout(&o), stderr(&o));
}

fn duplicate(home: &Path, main: &str, backup: &str) -> std::process::Output {
    run(cv(home).args([
        "--json",
        "duplicate",
        "--main",
        &format!("sim:{main}"),
        "--backup",
        &format!("sim:{backup}"),
        "--pin",
        "env:P",
        "--backup-pin",
        "env:P",
        "--elements",
        "env:E",
    ]))
}

/// Open an embedded card, verify the PIN, and send one command.
fn send(home: &Path, name: &str, verify: bool, cmd: &Command) -> (Vec<u8>, StatusWord) {
    let mut r = SimReader::open(home, name, "blank", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    if verify {
        c.verify_pin(PIN.as_bytes()).unwrap();
    }
    let resp = c.transmit(cmd).unwrap();
    (resp.data, resp.sw)
}

/// The card's certificate chain as GET DATA `BF21` returns it (TAKE OUT KEY data).
fn chain(home: &Path, name: &str) -> Vec<u8> {
    state(home, name).certificate.clone()
}

fn card_number(home: &Path, name: &str) -> String {
    state(home, name).card_number.clone()
}

#[test]
fn operator_story_issue_duplicate_encrypt_break_recover_decrypt() {
    let home = temp_dir("story");
    issue(&home, "desk", "pair", "alice,2468,M-1,2030-01,\n");
    let o = duplicate(&home, "desk-alice-main", "desk-alice-backup");
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = json(&o);
    assert_eq!(rep["end_to_end_check"], true);
    assert_eq!(rep["key_generated_now"], true);
    // The main key never left in the clear: the backup holds the same private
    // key, and neither the vault nor the output contains it.
    let (main, backup) = (state(&home, "desk-alice-main"), state(&home, "desk-alice-backup"));
    let mk = main.main_key.as_ref().unwrap();
    assert_eq!(backup.main_key.as_ref().unwrap().private, mk.private);
    let secret_hex = to_hex(&mk.private);
    assert!(!stdout(&o).contains(&secret_hex));
    let vault_bytes = std::fs::read(home.join("vault.sqlite")).unwrap();
    assert!(!vault_bytes.windows(32).any(|w| w == &mk.private[..]));

    // Three files, one of them 100 MiB.
    let files = home.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut rng = Rng::new(7);
    let small: Vec<u8> = (0..10_000).map(|_| rng.next() as u8).collect();
    std::fs::write(files.join("a.txt"), b"meeting notes\n").unwrap();
    std::fs::write(files.join("b.bin"), &small).unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(files.join("c.big")).unwrap());
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        for i in 0..100u32 {
            f.write_all(&i.to_be_bytes()).unwrap();
            f.write_all(&block[4..]).unwrap();
        }
    }
    let names = ["a.txt", "b.bin", "c.big"];
    for n in names {
        let o = run(cv(&home)
            .args(["encrypt", "--to", "sim:desk-alice-main"])
            .arg(files.join(n))
            .arg("-o")
            .arg(files.join(format!("{n}.cve"))));
        assert!(o.status.success(), "{}", stderr(&o));
    }

    // The main card breaks.
    std::fs::remove_file(card_path(&home, "desk-alice-main")).unwrap();
    // A new main card for alice, and recovery from the backup card.
    issue(&home, "new", "main", "alice,2468,M-1,2030-01,\n");
    let mut cmd = cv(&home);
    cmd.args([
        "recover",
        "--backup",
        "sim:desk-alice-backup",
        "--new",
        "sim:new-alice-main",
        "--backup-pin",
        "env:P",
        "--new-pin",
        "env:P",
        "--elements",
        "env:E",
    ]);
    for n in names {
        cmd.arg(files.join(format!("{n}.cve")));
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));

    // A rerun with a missing file among them: refused before any card is
    // touched (exit 2, the file named), nothing changed.
    let foreign = files.join("foreign.cve");
    std::fs::write(&foreign, "not an encrypted file").unwrap();
    let audit_before = stdout(&run(cv(&home).args(["--json", "audit"])));
    let contents: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(files.join(format!("{n}.cve"))).unwrap())
        .collect();
    let backup_before = std::fs::read(card_path(&home, "desk-alice-backup")).unwrap();
    let mut cmd = cv(&home);
    cmd.args([
        "--json",
        "recover",
        "--backup",
        "sim:desk-alice-backup",
        "--new",
        "sim:new-alice-main",
        "--backup-pin",
        "env:P",
        "--new-pin",
        "env:P",
    ]);
    cmd.arg(files.join("missing.cve"));
    for n in names {
        cmd.arg(files.join(format!("{n}.cve")));
    }
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("missing.cve"), "{v}");
    assert_eq!(stdout(&run(cv(&home).args(["--json", "audit"]))), audit_before);
    for (n, c) in names.iter().zip(&contents) {
        assert_eq!(&std::fs::read(files.join(format!("{n}.cve"))).unwrap(), c);
    }
    assert_eq!(
        std::fs::read(card_path(&home, "desk-alice-backup")).unwrap(),
        backup_before
    );

    // A rerun with a foreign file among them: every file is tried and named,
    // the done ones say so (no "0 bytes"), exit code 8, and the report
    // carries the run's error object.
    let mut cmd = cv(&home);
    cmd.args([
        "--json",
        "recover",
        "--backup",
        "sim:desk-alice-backup",
        "--new",
        "sim:new-alice-main",
        "--backup-pin",
        "env:P",
        "--new-pin",
        "env:P",
    ]);
    for n in names {
        cmd.arg(files.join(format!("{n}.cve")));
    }
    cmd.arg(&foreign);
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    let v = json(&o);
    let rows = v["files"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v}");
    assert_eq!(v["failed"], 1);
    assert_eq!(v["error"]["kind"], "some_failed", "{v}");
    assert_eq!(v["error"]["exit_code"], 8, "{v}");
    for r in &rows[..3] {
        assert_eq!(r["result"], "already_recovered", "{r}");
    }
    assert_eq!(rows[3]["result"], "failed");
    assert!(rows[3]["path"].as_str().unwrap().ends_with("foreign.cve"));
    assert!(rows[3]["error"]["message"].as_str().is_some(), "{v}");
    let mut cmd = cv(&home);
    cmd.args([
        "recover",
        "--backup",
        "sim:desk-alice-backup",
        "--new",
        "sim:new-alice-main",
        "--backup-pin",
        "env:P",
        "--new-pin",
        "env:P",
    ]);
    cmd.arg(&foreign).arg(files.join("a.txt.cve"));
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(8));
    let out = stdout(&o);
    assert!(out.contains("foreign.cve") && out.contains("a.txt.cve"), "{out}");
    assert!(!out.contains("0 bytes"), "{out}");

    // Every file decrypts with the new card and equals the original.
    for n in names {
        let out = files.join(format!("{n}.out"));
        let o = run(cv(&home)
            .args(["-r", "sim:new-alice-main", "decrypt", "--pin", "env:P"])
            .arg(files.join(format!("{n}.cve")))
            .arg("-o")
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            std::fs::read(files.join(n)).unwrap() == std::fs::read(&out).unwrap(),
            "{n} differs"
        );
    }
    // No temporary files are left beside them.
    let leftovers: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The audit trail holds take-out, import and confirmation, and verifies.
    let o = run(cv(&home).args(["--json", "audit"]));
    let events: Vec<String> = json(&o)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    for want in ["issue", "take-out", "import", "confirm-duplicate", "recover-file"] {
        assert!(events.iter().any(|e| e == want), "{want} missing from {events:?}");
    }
    assert!(run(cv(&home).args(["audit", "--verify"])).status.success());
}

#[test]
fn a_backup_card_with_another_key_group_is_refused_and_stores_nothing() {
    let home = temp_dir("othergroup");
    issue(&home, "a", "main", &format!("alice,2468,M-1,2030-01,{E2}\n"));
    issue(&home, "m", "backup", &format!("mallory,2468,,,{OTHER_KEY1}\n"));
    let backup_before = state(&home, "m-mallory-backup");
    let o = duplicate(&home, "a-alice-main", "m-mallory-backup");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("different key groups"), "{}", stderr(&o));
    // No key was generated on the main card, none stored on the backup card.
    assert!(state(&home, "a-alice-main").main_key.is_none());
    let after = state(&home, "m-mallory-backup");
    assert!(after.main_key.is_none());
    assert_eq!(after.export, backup_before.export);

    // The card refuses on its own too: a take-out sealed under alice's group,
    // addressed to mallory's card, is not imported.
    let (pubkey, sw) = send(&home, "a-alice-main", true, &Command::generate_key_pair());
    assert!(sw.is_ok() && pubkey.len() == 65);
    let (blob, sw) = send(
        &home,
        "a-alice-main",
        true,
        &Command::take_out_key(&chain(&home, "m-mallory-backup")),
    );
    assert!(sw.is_ok());
    let before = state(&home, "m-mallory-backup");
    let (_, sw) = send(&home, "m-mallory-backup", true, &Command::import_key(&blob, false));
    assert_eq!(sw, StatusWord::ReferenceDataNotUsable);
    assert_eq!(state(&home, "m-mallory-backup"), before);
}

#[test]
fn one_duplicate_only_backup_never_exports_and_blobs_are_bound() {
    let home = temp_dir("oneonly");
    // Same key group for every card: only the one-duplicate rule can refuse.
    issue(&home, "d", "pair", &format!("alice,2468,M-1,2030-01,{E2}\n"));
    issue(&home, "x", "backup", &format!("bob,2468,,,{E2}\n"));
    assert!(duplicate(&home, "d-alice-main", "d-alice-backup").status.success());

    // A second take-out towards a different card is refused and changes nothing.
    let main_before = state(&home, "d-alice-main");
    let (_, sw) = send(
        &home,
        "d-alice-main",
        true,
        &Command::take_out_key(&chain(&home, "x-bob-backup")),
    );
    assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    assert_eq!(state(&home, "d-alice-main"), main_before);
    let o = duplicate(&home, "d-alice-main", "x-bob-backup");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = &json(&o)["error"];
    assert_eq!(err["kind"], "refused", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("one duplicate only"),
        "refused for another reason than the one-duplicate rule: {err}"
    );
    assert_eq!(state(&home, "d-alice-main").export, main_before.export);

    // A backup card never exports.
    let backup_before = state(&home, "d-alice-backup");
    let (_, sw) = send(
        &home,
        "d-alice-backup",
        true,
        &Command::take_out_key(&chain(&home, "d-alice-main")),
    );
    assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    assert_eq!(state(&home, "d-alice-backup"), backup_before);

    // Before the PIN: 6982, nothing changes.
    let (_, sw) = send(
        &home,
        "d-alice-main",
        false,
        &Command::take_out_key(&chain(&home, "x-bob-backup")),
    );
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
    let (_, sw) = send(&home, "d-alice-main", false, &Command::generate_key_pair());
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
    assert_eq!(state(&home, "d-alice-main"), main_before);
}

#[test]
fn tampered_truncated_or_misaddressed_take_outs_are_refused() {
    let home = temp_dir("tamper");
    issue(&home, "t", "pair", "alice,2468,M-1,2030-01,\n");
    // Write elements 2..3 and generate on the main card, as duplicate would.
    for card in ["t-alice-main", "t-alice-backup"] {
        for (i, e) in [E2, E3].iter().enumerate() {
            let (_, sw) = send(
                &home,
                card,
                true,
                &Command::write_key_element(i as u8 + 2, &from_hex(e).unwrap()),
            );
            assert!(sw.is_ok());
        }
    }
    send(&home, "t-alice-main", true, &Command::generate_key_pair());
    let (blob, sw) = send(
        &home,
        "t-alice-main",
        true,
        &Command::take_out_key(&chain(&home, "t-alice-backup")),
    );
    assert!(sw.is_ok());
    let before = state(&home, "t-alice-backup");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for i in [0, 5, blob.len() / 2, blob.len() - 1] {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        cases.push((format!("byte {i} flipped"), b));
    }
    cases.push(("truncated".into(), blob[..blob.len() - 10].to_vec()));
    cases.push(("extended".into(), [blob.clone(), vec![0]].concat()));
    for (what, b) in cases {
        let (_, sw) = send(&home, "t-alice-backup", true, &Command::import_key(&b, false));
        assert!(!sw.is_ok(), "{what}: accepted");
        assert_eq!(state(&home, "t-alice-backup"), before, "{what}: card changed");
    }
    // The intact blob is accepted.
    let (receipt, sw) = send(&home, "t-alice-backup", true, &Command::import_key(&blob, false));
    assert!(sw.is_ok() && receipt.len() == 36);
}

#[test]
fn an_interrupted_import_is_retried_onto_the_same_backup_card() {
    let home = temp_dir("retry");
    issue(&home, "r", "pair", "alice,2468,M-1,2030-01,\nbob,2468,M-2,2030-02,\n");
    // Alice: the take-out happened, then the backup card was pulled before IMPORT.
    for card in ["r-alice-main", "r-alice-backup"] {
        for (i, e) in [E2, E3].iter().enumerate() {
            send(
                &home,
                card,
                true,
                &Command::write_key_element(i as u8 + 2, &from_hex(e).unwrap()),
            );
        }
    }
    send(&home, "r-alice-main", true, &Command::generate_key_pair());
    let (_, sw) = send(
        &home,
        "r-alice-main",
        true,
        &Command::take_out_key(&chain(&home, "r-alice-backup")),
    );
    assert!(sw.is_ok());
    let o = duplicate(&home, "r-alice-main", "r-alice-backup");
    assert!(o.status.success(), "retry after a lost import: {}", stderr(&o));
    assert_eq!(json(&o)["take_out_counter"], 2);

    // Bob: IMPORT ran but its answer (the receipt) was lost before CONFIRM.
    for card in ["r-bob-main", "r-bob-backup"] {
        for (i, e) in [E2, E3].iter().enumerate() {
            send(
                &home,
                card,
                true,
                &Command::write_key_element(i as u8 + 2, &from_hex(e).unwrap()),
            );
        }
    }
    send(&home, "r-bob-main", true, &Command::generate_key_pair());
    let (blob, _) = send(
        &home,
        "r-bob-main",
        true,
        &Command::take_out_key(&chain(&home, "r-bob-backup")),
    );
    let (_, sw) = send(&home, "r-bob-backup", true, &Command::import_key(&blob, false));
    assert!(sw.is_ok());
    assert!(!state(&home, "r-bob-main").export.confirmed);
    let o = duplicate(&home, "r-bob-main", "r-bob-backup");
    assert!(o.status.success(), "retry after a lost receipt: {}", stderr(&o));
    assert!(state(&home, "r-bob-main").export.confirmed);
}

#[test]
fn a_group_reset_destroys_the_main_keys() {
    let home = temp_dir("reset");
    issue(&home, "g", "pair", "alice,2468,M-1,2030-01,\n");
    assert!(duplicate(&home, "g-alice-main", "g-alice-backup").status.success());
    assert!(state(&home, "g-alice-main").main_key.is_some());
    // Without --yes: refused, nothing changes.
    let before = state(&home, "g-alice-main");
    let o = run(cv(&home).args(["-r", "sim:g-alice-main", "keygroup", "reset", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(state(&home, "g-alice-main"), before);
    let o = run(cv(&home).args(["-r", "sim:g-alice-main", "keygroup", "reset", "--pin", "env:P", "--yes"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let after = state(&home, "g-alice-main");
    assert!(after.main_key.is_none());
    assert!(after.key_group.elements[1].0.is_empty() && after.key_group.elements[2].0.is_empty());
    assert!(!after.key_group.elements[0].0.is_empty(), "element 1 (issuer) stays");
    let o = run(cv(&home).args(["--json", "-r", "sim:g-alice-main", "keygroup", "status"]));
    let v = json(&o);
    assert_eq!(v["key_origin"], serde_json::Value::Null);
    assert_eq!(v["group_complete"], false);
}

#[test]
fn a_blocked_pin_stops_duplication_and_changes_nothing() {
    let home = temp_dir("blocked");
    issue(&home, "b", "pair", "alice,2468,M-1,2030-01,\n");
    for _ in 0..3 {
        run(cardvault(&home)
            .env("X", "0000")
            .args(["-r", "sim:b-alice-main", "pin", "verify", "--pin", "env:X"]));
    }
    let (m, b) = (state(&home, "b-alice-main"), state(&home, "b-alice-backup"));
    let o = duplicate(&home, "b-alice-main", "b-alice-backup");
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("blocked"), "{}", stderr(&o));
    assert_eq!(state(&home, "b-alice-main"), m);
    assert_eq!(state(&home, "b-alice-backup"), b);
}

#[test]
fn backup_card_can_receive_the_encryption_key_variant() {
    let home = temp_dir("variant");
    issue(&home, "v", "pair", "alice,2468,M-1,2030-01,\n");
    let o = run(cv(&home).args([
        "--json",
        "duplicate",
        "--main",
        "sim:v-alice-main",
        "--backup",
        "sim:v-alice-backup",
        "--pin",
        "env:P",
        "--backup-pin",
        "env:P",
        "--elements",
        "env:E",
        "--backup-gets-public-key",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["backup_has_public_key"], true);
    // Without the variant the backup card does not hand out the key.
    issue(&home, "w", "pair", "bob,2468,M-2,2030-01,\n");
    let o = duplicate(&home, "w-bob-main", "w-bob-backup");
    assert_eq!(json(&o)["backup_has_public_key"], false);
}

#[test]
fn bad_holder_files_are_refused_before_any_card_is_touched() {
    let home = temp_dir("csv");
    let csv = home.join("bad.csv");
    std::fs::write(
        &csv,
        "holder,pin,member_number,expiry\nalice,12,M-1,2030-01\nbob,1234,M-2,2030-13\nalice,1234,M-3,2030-01\n",
    )
    .unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:z", "issue", "--profile", "main", "--holders"])
        .arg(&csv)
        .arg("--no-domain"));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("line 2") && e.contains("line 3") && e.contains("line 4"),
        "{e}"
    );
    assert!(!home.join("cards").exists(), "cards were created");
    // An issuer whose root the blank cards do not have (nor the factory
    // issuer named) rejects the card with the reason, and the card stays
    // blank; the batch stops there instead of trying every other card.
    let (other, other_factory) = (new_issuer(&home, "other"), new_issuer(&home, "other-factory"));
    let csv = home.join("good.csv");
    std::fs::write(
        &csv,
        "holder,pin,member_number,expiry\ncarol,1234,M-1,2030-01\ndave,1234,M-2,2030-01\nerin,1234,M-3,2030-01\n",
    )
    .unwrap();
    let o = run(cardvault(&home)
        .args(["--json", "-r", "sim:z", "issue", "--profile", "pair", "--holders"])
        .arg(&csv)
        .arg("--no-domain")
        .arg("--issuer")
        .arg(&other)
        .arg("--factory-issuer")
        .arg(&other_factory));
    assert_eq!(o.status.code(), Some(4));
    // One JSON document: the report (the error is not printed a second time).
    let v = json(&o);
    assert_eq!(v["rejected"], 1);
    assert!(
        v["cards"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("operator certificate"),
        "{v}"
    );
    assert!(
        v["cards"][0]["reason"].as_str().unwrap().contains("batch stopped"),
        "{v}"
    );
    assert_eq!(v["cards"].as_array().unwrap().len(), 1, "{v}");
    let st = state(&home, "z-carol-main");
    assert!(!st.issued && st.role == "blank");
    let factory = X509::from_der(&st.certificate).unwrap();
    assert_eq!(cardvault_proto::cert::card_subject(&factory).unwrap().role, "blank");
    for untouched in ["z-carol-backup", "z-dave-main", "z-erin-main"] {
        assert!(!card_path(&home, untouched).exists(), "{untouched} was tried");
    }
}

#[test]
fn key_service_sets_main_keys_wrapped_never_in_the_clear() {
    let home = temp_dir("keyservice");
    issue(&home, "k", "main", &format!("alice,2468,M-1,2030-01,{E2}\n"));
    let d = "1f".repeat(32);
    let keyfile = home.join("service.hex");
    std::fs::write(&keyfile, &d).unwrap();
    let before = state(&home, "k-alice-main");
    // Another issuer's operator: refused, nothing changes.
    let other = new_issuer(&home, "other");
    let o = run(cardvault(&home)
        .args(["--trace", "-r", "sim:k-alice-main", "keygroup", "set-key", "--issuer"])
        .arg(&other)
        .arg("--key")
        .arg(format!("file:{}", keyfile.display())));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(state(&home, "k-alice-main"), before);
    let o = run(cv(&home)
        .args(["--trace", "-r", "sim:k-alice-main", "keygroup", "set-key", "--issuer"])
        .arg(test_issuer_dir())
        .arg("--key")
        .arg(format!("file:{}", keyfile.display())));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).to_lowercase().contains(&d),
        "the private key crossed the wire in the clear"
    );
    let k = state(&home, "k-alice-main").main_key.clone().unwrap();
    assert_eq!(to_hex(&k.private), d);
    assert_eq!(k.origin, applet_sim::state::KeyOrigin::KeyService);
}

#[test]
fn a_state_changing_command_is_never_answered_with_6cxx() {
    let home = temp_dir("sixc");
    issue(&home, "s", "pair", "alice,2468,M-1,2030-01,\n");
    for (i, e) in [E2, E3].iter().enumerate() {
        send(
            &home,
            "s-alice-main",
            true,
            &Command::write_key_element(i as u8 + 2, &from_hex(e).unwrap()),
        );
    }
    // GENERATE KEY PAIR with Le = 01: the key is generated, so the answer comes
    // whole through GET RESPONSE rather than as 6C41 (which would invite a repeat).
    let (data, sw) = send(&home, "s-alice-main", true, &Command::generate_key_pair().expect(1));
    assert!(sw.is_ok(), "{sw}");
    assert_eq!(data.len(), 65);
    assert_eq!(state(&home, "s-alice-main").main_key.as_ref().unwrap().public, data);
}

#[test]
fn the_card_re_encrypts_a_file_key_to_its_peer_fig5() {
    let home = temp_dir("peer");
    issue(&home, "p", "pair", "alice,2468,M-1,2030-01,\nbob,2468,M-2,2030-01,\n");
    assert!(duplicate(&home, "p-alice-main", "p-alice-backup").status.success());
    assert!(duplicate(&home, "p-bob-main", "p-bob-backup").status.success());
    let alice = state(&home, "p-alice-main").main_key.as_ref().unwrap().public.clone();
    let bob = state(&home, "p-bob-main").main_key.as_ref().unwrap().public.clone();
    let file_key = [0x5Au8; 32];
    let aad = b"mail header";
    let wrapped = cardvault_proto::crypto::wrap_key(&alice, &file_key, aad).unwrap();
    // Without a peer key the card refuses, and nothing changes.
    let before = state(&home, "p-alice-main");
    let (_, sw) = send(&home, "p-alice-main", true, &Command::rewrap_to_peer(aad, &wrapped));
    assert_eq!(sw, StatusWord::ReferenceDataNotFound);
    assert_eq!(state(&home, "p-alice-main"), before);
    let (_, sw) = send(&home, "p-alice-main", true, &Command::set_peer_key(&bob));
    assert!(sw.is_ok());
    let (for_bob, sw) = send(&home, "p-alice-main", true, &Command::rewrap_to_peer(aad, &wrapped));
    assert!(sw.is_ok() && for_bob.len() == cardvault_proto::crypto::WRAPPED_KEY_LEN);
    let (opened, sw) = send(&home, "p-bob-main", true, &Command::unwrap_file_key(aad, &for_bob));
    assert!(sw.is_ok());
    assert_eq!(opened, file_key);
    // Alice's card cannot open what it re-encrypted for Bob.
    let (_, sw) = send(&home, "p-alice-main", true, &Command::unwrap_file_key(aad, &for_bob));
    assert_eq!(sw, StatusWord::WrongData);
}

#[test]
fn an_unwrapped_file_key_is_masked_in_traces_and_apdu_output_even_in_pieces() {
    let home = temp_dir("maskkey");
    issue(&home, "m", "pair", "alice,2468,M-1,2030-01,\n");
    assert!(duplicate(&home, "m-alice-main", "m-alice-backup").status.success());
    let public = state(&home, "m-alice-main").main_key.as_ref().unwrap().public.clone();
    let file_key = [0xC3u8; 32];
    let aad = b"x";
    let wrapped = cardvault_proto::crypto::wrap_key(&public, &file_key, aad).unwrap();
    // UNWRAP FILE KEY with Le = 10: the key comes in two parts through GET RESPONSE.
    let mut data = vec![aad.len() as u8];
    data.extend_from_slice(aad);
    data.extend_from_slice(&wrapped);
    let mut apdu = vec![0x80, 0xE8, 0, 0, data.len() as u8];
    apdu.extend_from_slice(&data);
    apdu.push(0x10);
    let o = run(cardvault(&home).args([
        "--trace",
        "-r",
        "sim:m-alice-main",
        "apdu",
        "00A4040006F043564C5401",
        "0020008104 32343638",
        &to_hex(&apdu),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let all = (stdout(&o) + &stderr(&o)).to_lowercase();
    assert!(all.contains("secret bytes masked"), "{all}");
    assert!(!all.contains("c3c3c3c3"), "the file key leaked: {all}");
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

/// Write elements 2 and 3 on a card (PIN verified).
fn write_elements(home: &Path, name: &str) {
    for (i, e) in [E2, E3].iter().enumerate() {
        let element = from_hex(e).unwrap();
        send(home, name, true, &Command::write_key_element(i as u8 + 2, &element));
    }
}

fn release(home: &Path, card: &str, receipt: Option<&Path>) -> std::process::Output {
    let mut c = cv(home);
    c.args(["-r", &format!("sim:{card}"), "keygroup", "release", "--issuer"]);
    c.arg(test_issuer_dir());
    if let Some(r) = receipt {
        c.arg("--receipt").arg(r);
    }
    run(&mut c)
}

fn destroy(home: &Path, backup: &str, source: &str, counter: u32, out: &Path) -> std::process::Output {
    run(cv(home)
        .args([
            "-r",
            &format!("sim:{backup}"),
            "keygroup",
            "destroy",
            "--pin",
            "env:P",
            "--source",
            source,
        ])
        .args(["--counter", &counter.to_string(), "-o"])
        .arg(out))
}

/// A take-out left the main card for a backup card that was then lost
/// before IMPORT: the issuer cannot release it (the card cannot prove it
/// holds nothing); the holder rotates the main key, and the next duplicate
/// goes to another backup card. (Before, RELEASE DUPLICATE forgot any
/// unconfirmed target; see the next test for why that made two copies.)
#[test]
fn a_lost_backup_card_is_replaced_by_rotating_the_main_key_never_by_a_bare_release() {
    let home = temp_dir("release");
    // Both holders' cards share key 1, so that Bob's backup card can take Alice's keys.
    let key1 = "33".repeat(32);
    issue(
        &home,
        "l",
        "pair",
        &format!("alice,2468,M-1,2030-01,{key1}\nbob,2468,M-2,2030-02,{key1}\n"),
    );
    write_elements(&home, "l-alice-main");
    send(&home, "l-alice-main", true, &Command::generate_key_pair());
    let lost = card_number(&home, "l-alice-backup");
    let (_, sw) = send(
        &home,
        "l-alice-main",
        true,
        &Command::take_out_key(&chain(&home, "l-alice-backup")),
    );
    assert!(sw.is_ok());
    // One duplicate only: another backup card is refused while the take-out is pending.
    let before = state(&home, "l-bob-backup");
    let o = duplicate(&home, "l-alice-main", "l-bob-backup");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, "l-bob-backup").main_key, before.main_key);
    // Without the issuer's operator nothing is released.
    let other = new_issuer(&home, "other");
    let o = run(cv(&home)
        .args(["-r", "sim:l-alice-main", "keygroup", "release", "--issuer"])
        .arg(&other));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(state(&home, "l-alice-main").export.target, lost);
    // With it, but without the backup card's receipt: refused, nothing changes.
    let main = state(&home, "l-alice-main");
    let o = release(&home, "l-alice-main", None);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("signed receipt that it destroyed the key is needed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(state(&home, "l-alice-main"), main);
    // The holder rotates the main key (the old one goes with the group).
    let o = run(cv(&home).args(["-r", "sim:l-alice-main", "keygroup", "reset", "--pin", "env:P", "--yes"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&home, "l-alice-main").export.target, "");
    // Now the duplicate of the new key goes to the other backup card, and is confirmed.
    let o = duplicate(&home, "l-alice-main", "l-bob-backup");
    assert!(o.status.success(), "{}", stderr(&o));
    let main = state(&home, "l-alice-main");
    assert!(main.export.confirmed);
    assert_eq!(main.export.target, card_number(&home, "l-bob-backup"));
    // A confirmed duplicate is not released without a receipt either: refused
    // after the issuer session opened, exit 4, the card keeps its confirmation.
    let o = release(&home, "l-alice-main", None);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, "l-alice-main"), main);
}

/// The auditor's attack: take-out to card B imported but unconfirmed,
/// RELEASE, duplicate to card C, and both B and C held the holder's key.
/// Now the release needs B's DESTROY KEY receipt, B's copy is gone with it,
/// and B never takes that take-out again.
#[test]
fn b_imported_then_released_leaves_one_duplicate() {
    let home = temp_dir("release-b");
    let key1 = "44".repeat(32);
    issue(
        &home,
        "r",
        "pair",
        &format!("alice,2468,M-1,2030-01,{key1}\nbob,2468,M-2,2030-02,{key1}\n"),
    );
    let (main, b, c) = ("r-alice-main", "r-alice-backup", "r-bob-backup");
    write_elements(&home, main);
    write_elements(&home, b);
    send(&home, main, true, &Command::generate_key_pair());
    let main_number = card_number(&home, main);
    let (blob, sw) = send(&home, main, true, &Command::take_out_key(&chain(&home, b)));
    assert!(sw.is_ok());
    // B imports; the receipt never reaches the main card.
    let (_, sw) = send(&home, b, true, &Command::import_key(&blob, false));
    assert!(sw.is_ok(), "{sw:?}");
    assert!(state(&home, b).main_key.is_some());
    // The bare release of the attack: refused, nothing changes, C gets nothing.
    let before = state(&home, main);
    let o = release(&home, main, None);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, main), before);
    let o = duplicate(&home, main, c);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(state(&home, c).main_key.is_none());
    // B destroys its copy and answers a receipt for take-out #1; a forged
    // receipt is refused.
    let stale = home.join("receipt.json");
    let o = destroy(&home, b, &main_number, 1, &stale);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(state(&home, b).main_key.is_none(), "DESTROY KEY left B's copy");
    let mut forged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stale).unwrap()).unwrap();
    forged["receipt"] = format!("00000001{}", "ab".repeat(64)).into();
    let forged_path = home.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let o = release(&home, main, Some(&forged_path));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, main), before);
    // B's own receipt for the latest take-out (#1) releases the main card.
    let o = release(&home, main, Some(&stale));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&home, main).export.target, "");
    // B never takes the destroyed take-out back.
    let (_, sw) = send(&home, b, true, &Command::import_key(&blob, false));
    assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    assert!(state(&home, b).main_key.is_none());
    // The duplicate goes to C: one copy, on C.
    let o = duplicate(&home, main, c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(state(&home, c).main_key.is_some());
    assert!(state(&home, b).main_key.is_none());
    // And B's receipt does not release C's duplicate (it names B, take-out #1).
    let confirmed = state(&home, main);
    let o = release(&home, main, Some(&stale));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(state(&home, main), confirmed);
    let audit = json(&run(cv(&home).args(["--json", "audit"])));
    let events: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        events.contains(&"duplicate-key-destroyed") && events.contains(&"duplicate-released"),
        "{audit}"
    );
}

/// A `keygroup destroy` receipt file, to edit.
fn receipt_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_json(home: &Path, name: &str, v: &serde_json::Value) -> std::path::PathBuf {
    let p = home.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// RELEASE DUPLICATE takes only the bound backup card's signature, under a
/// signing certificate from the main card's issuer root, over the latest
/// take-out: each other proof is refused by the main card (exit 4, its
/// reason on stderr) and the main card's state stays as it was; then B's
/// own receipt releases it and C gets the one duplicate.
#[test]
fn release_refuses_every_proof_but_the_bound_backup_cards_signature_and_changes_nothing() {
    let home = temp_dir("release-proofs");
    let key1 = "55".repeat(32);
    issue(
        &home,
        "s",
        "pair",
        &format!("alice,2468,M-1,2030-01,{key1}\nbob,2468,M-2,2030-02,{key1}\n"),
    );
    let (main, b, c) = ("s-alice-main", "s-alice-backup", "s-bob-backup");
    for card in [main, b, c] {
        write_elements(&home, card);
    }
    send(&home, main, true, &Command::generate_key_pair());
    let main_number = card_number(&home, main);
    // Two take-outs to B (the counter is 2); B imports the second.
    send(&home, main, true, &Command::take_out_key(&chain(&home, b)));
    let (blob, sw) = send(&home, main, true, &Command::take_out_key(&chain(&home, b)));
    assert!(sw.is_ok());
    let (_, sw) = send(&home, b, true, &Command::import_key(&blob, false));
    assert!(sw.is_ok(), "{sw:?}");
    let before = state(&home, main);
    assert_eq!(before.export.counter, 2);
    let refused = |proof: Option<&Path>, why: &str| {
        let o = release(&home, main, proof);
        assert_eq!(o.status.code(), Some(4), "{why}: {}", stderr(&o));
        assert_eq!(state(&home, main), before, "{why}: the main card changed");
        stderr(&o)
    };
    // No receipt.
    let e = refused(None, "no receipt");
    assert!(e.contains("signed receipt that it destroyed the key is needed"), "{e}");
    // B's genuine receipt for take-out 1, not the latest.
    let old = home.join("b-1.json");
    assert!(destroy(&home, b, &main_number, 1, &old).status.success());
    let e = refused(Some(&old), "a receipt for another take-out");
    assert!(e.contains("not the bound backup card's signature"), "{e}");
    // B's genuine receipt for another main card's take-out 2, relabelled.
    let elsewhere = home.join("b-other.json");
    assert!(destroy(&home, b, &card_number(&home, "s-bob-main"), 2, &elsewhere)
        .status
        .success());
    let mut v = receipt_json(&elsewhere);
    v["source_card"] = main_number.clone().into();
    let e = refused(
        Some(&write_json(&home, "b-other-relabelled.json", &v)),
        "another main card's take-out",
    );
    assert!(e.contains("not the bound backup card's signature"), "{e}");
    // The terminal itself refuses a file naming another main card, before the card.
    let o = release(&home, main, Some(&elsewhere));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("the receipt is for main card"), "{}", stderr(&o));
    assert_eq!(state(&home, main), before);
    // C (same key group) signs a receipt for this main card's take-out 2:
    // under its own certificate it names C, not the bound target; under B's
    // certificate its signature does not verify.
    let by_c = home.join("c-2.json");
    assert!(destroy(&home, c, &main_number, 2, &by_c).status.success());
    let e = refused(Some(&by_c), "a receipt signed by another card");
    assert!(e.contains("not the bound backup card's signature"), "{e}");
    let b_cert = to_hex(&state(&home, b).storing.certificate);
    let mut v = receipt_json(&by_c);
    v["certificate"] = b_cert.clone().into();
    v["backup_card"] = card_number(&home, b).into();
    let e = refused(
        Some(&write_json(&home, "c-as-b.json", &v)),
        "another card's signature under B's certificate",
    );
    assert!(e.contains("not the bound backup card's signature"), "{e}");
    // B's genuine receipt for take-out 2, and two alterations of it.
    let good = home.join("b-2.json");
    assert!(destroy(&home, b, &main_number, 2, &good).status.success());
    assert!(state(&home, b).main_key.is_none(), "DESTROY KEY left B's copy");
    let mut v = receipt_json(&good);
    v["receipt"] = format!("00000002{}", "ab".repeat(64)).into();
    let e = refused(Some(&write_json(&home, "forged.json", &v)), "a forged signature");
    assert!(e.contains("not the bound backup card's signature"), "{e}");
    // B's own signing key, certified by a root that is not the main card's.
    let b_key = cardvault_proto::storing::verify_card_signing_key(
        &[applet_sim::test_issuer::root()],
        &state(&home, b).storing.certificate,
    )
    .unwrap();
    assert_eq!(
        (b_key.card_number.as_str(), b_key.role.as_str()),
        (card_number(&home, b).as_str(), "backup")
    );
    let rogue_key = cardvault_proto::crypto::KeyPair::generate().unwrap();
    let rogue_root =
        cardvault_proto::cert::issue_root(&rogue_key, "rogue root", "20250101000000Z", "20500101000000Z").unwrap();
    let rogue_cert = cardvault_proto::storing::issue_card_signing_certificate(
        &rogue_key,
        &rogue_root,
        &b_key.public_key,
        &cardvault_proto::cert::CardSubject {
            card_number: b_key.card_number.clone(),
            role: "backup".into(),
            member_number: None,
        },
        365,
    )
    .unwrap();
    let mut v = receipt_json(&good);
    v["certificate"] = to_hex(&rogue_cert.to_der().unwrap()).into();
    let e = refused(
        Some(&write_json(&home, "rogue.json", &v)),
        "a certificate not under the root",
    );
    assert!(e.contains("does not chain to the issuer root"), "{e}");
    // B's receipt for take-out 2 releases the main card; C takes the duplicate.
    let o = release(&home, main, Some(&good));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&home, main).export.target, "");
    let o = duplicate(&home, main, c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(state(&home, c).main_key.is_some());
    assert!(state(&home, b).main_key.is_none());
}

#[test]
fn encrypt_to_a_public_key_file_needs_no_card_and_the_card_decrypts() {
    let home = temp_dir("recipient");
    issue(&home, "k", "pair", "alice,2468,M-1,2030-01,\n");
    assert!(duplicate(&home, "k-alice-main", "k-alice-backup").status.success());
    let public = home.join("alice.pub");
    let o = run(cv(&home)
        .args(["-r", "sim:k-alice-main", "keygroup", "public-key", "-o"])
        .arg(&public));
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = home.join("letter.txt");
    std::fs::write(&plain, b"to alice, by key file").unwrap();
    // No reader at all: the cards directory is moved away while encrypting.
    std::fs::rename(home.join("cards"), home.join("cards.away")).unwrap();
    let sealed = home.join("letter.cve");
    let o = run(cv(&home)
        .arg("encrypt")
        .arg("--recipient")
        .arg(&public)
        .arg(&plain)
        .arg("-o")
        .arg(&sealed));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!home.join("cards").exists(), "encrypt --recipient opened a card");
    std::fs::rename(home.join("cards.away"), home.join("cards")).unwrap();
    for card in ["k-alice-main", "k-alice-backup"] {
        let out = home.join(format!("letter-{card}.txt"));
        let o = run(cv(&home)
            .args(["-r", &format!("sim:{card}"), "decrypt", "--pin", "env:P"])
            .arg(&sealed)
            .arg("-o")
            .arg(&out));
        assert!(o.status.success(), "{card}: {}", stderr(&o));
        assert_eq!(std::fs::read(&out).unwrap(), b"to alice, by key file");
    }
    // A key file that holds no P-256 point is refused, and writes nothing.
    let bad = home.join("bad.pub");
    std::fs::write(&bad, format!("04{}\n", "00".repeat(64))).unwrap();
    let out = home.join("bad.cve");
    let o = run(cv(&home)
        .arg("encrypt")
        .arg("--recipient")
        .arg(&bad)
        .arg(&plain)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
}

/// Write elements 2 and 3 on both cards and generate the main key, as
/// duplicate does before its take-out.
fn ready_pair(home: &Path, main: &str, backup: &str) {
    for card in [main, backup] {
        for (i, e) in [E2, E3].iter().enumerate() {
            let element = from_hex(e).unwrap();
            let (_, sw) = send(home, card, true, &Command::write_key_element(i as u8 + 2, &element));
            assert!(sw.is_ok());
        }
    }
    let (_, sw) = send(home, main, true, &Command::generate_key_pair());
    assert!(sw.is_ok());
}

/// A certificate for `public` naming `number` and `role`, from the test issuer.
fn test_issuer_certificate(public: &[u8], number: &str, role: &str) -> Vec<u8> {
    applet_sim::test_issuer::certify_card(
        public,
        &cardvault_proto::cert::CardSubject {
            card_number: number.into(),
            role: role.into(),
            member_number: None,
        },
    )
}

#[test]
fn a_take_out_goes_only_to_a_card_certified_under_the_installed_root() {
    use cardvault_proto::cert::{issue_card_certificate, issue_root, CardSubject};
    use cardvault_proto::crypto::KeyPair;
    let home = temp_dir("certified-target");
    issue(&home, "c", "pair", "alice,2468,M-1,2030-01,\n");
    let (main, backup) = ("c-alice-main", "c-alice-backup");
    ready_pair(&home, main, backup);
    let number = card_number(&home, backup);
    let before = state(&home, main);

    // A second issuer, with a root the main card does not have installed,
    // certifying a key under the backup card's own number and role.
    let other_root_key = KeyPair::generate().unwrap();
    let other_root = issue_root(&other_root_key, "other issuer", "20250101000000Z", "20500101000000Z").unwrap();
    let software = KeyPair::generate().unwrap();
    let subject = CardSubject {
        card_number: number.clone(),
        role: "backup".into(),
        member_number: None,
    };
    let foreign = issue_card_certificate(&other_root_key, &other_root, &software.public_bytes(), &subject, 365)
        .unwrap()
        .to_der()
        .unwrap();
    let foreign_chain = [other_root.to_der().unwrap(), foreign.clone()].concat();
    let refused: Vec<(&str, Vec<u8>, StatusWord)> = vec![
        ("no certificate", vec![], StatusWord::WrongLength),
        ("not a certificate", number.as_bytes().to_vec(), StatusWord::WrongData),
        (
            "a chain under another root",
            foreign_chain,
            StatusWord::ReferenceDataNotUsable,
        ),
        ("a leaf under another root", foreign, StatusWord::ReferenceDataNotUsable),
        (
            "a main card's certificate",
            test_issuer_certificate(&software.public_bytes(), &number, "main"),
            StatusWord::ReferenceDataNotUsable,
        ),
        (
            "the issuer root itself",
            applet_sim::test_issuer::root_der(),
            StatusWord::ReferenceDataNotUsable,
        ),
    ];
    for (what, data, want) in refused {
        let (blob, sw) = send(&home, main, true, &Command::take_out_key(&data));
        assert_eq!(sw, want, "{what}");
        assert!(blob.is_empty(), "{what}: a blob left the card");
        assert_eq!(state(&home, main), before, "{what}: the main card changed");
    }

    // The genuine backup card's certificate: the blob is wrapped to its key.
    let (blob, sw) = send(&home, main, true, &Command::take_out_key(&chain(&home, backup)));
    assert!(sw.is_ok());
    let genuine = state(&home, backup);

    // A card that knows everything but the certified key the blob was
    // wrapped to (same number, role, key group, PIN; its own key, even
    // certified, in place of the card's) cannot open the blob, and stores
    // nothing.
    let card_file = card_path(&home, backup);
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&card_file).unwrap()).unwrap();
    doc["ecka_private"] = serde_json::Value::String(to_hex(&software.private_bytes()));
    let software_cert = test_issuer_certificate(&software.public_bytes(), &number, "backup");
    doc["certificate"] = serde_json::Value::String(to_hex(&software_cert));
    std::fs::write(&card_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let impostor = state(&home, backup);
    let (_, sw) = send(&home, backup, true, &Command::import_key(&blob, false));
    assert_eq!(sw, StatusWord::WrongData);
    assert_eq!(state(&home, backup), impostor);
    // Nor does the key group alone open it, whatever ECDH secret is guessed.
    let t = cardvault_proto::takeout::parse_takeout(&blob).unwrap();
    let group = genuine.key_group.secret().unwrap();
    for z in [vec![], vec![0u8; 32], software.ecdh(t.ephemeral).unwrap().to_vec()] {
        let kek = cardvault_proto::takeout::export_kek(&group[..], &z, t.aad).unwrap();
        assert!(cardvault_proto::crypto::open(&kek, t.nonce, t.aad, t.sealed).is_err());
    }

    // The genuine card, with its certified key back, imports (the file as
    // the card left it: its journal records are newer than the copy above).
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&card_file).unwrap()).unwrap();
    doc["ecka_private"] = serde_json::Value::String(to_hex(&genuine.ecka_private));
    doc["certificate"] = serde_json::Value::String(to_hex(&genuine.certificate));
    std::fs::write(&card_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (receipt, sw) = send(&home, backup, true, &Command::import_key(&blob, false));
    assert!(sw.is_ok() && receipt.len() == 36);
}

#[test]
fn a_take_out_to_another_certified_card_is_not_imported_here() {
    let home = temp_dir("other-target");
    issue(&home, "o", "pair", "alice,2468,M-1,2030-01,\n");
    let (main, backup) = ("o-alice-main", "o-alice-backup");
    ready_pair(&home, main, backup);
    // A genuine certificate for another card number: the take-out goes to that
    // card (and binds it), and the backup card here refuses the blob.
    let elsewhere = cardvault_proto::crypto::KeyPair::generate().unwrap();
    let cert = test_issuer_certificate(&elsewhere.public_bytes(), "9999000011112222", "backup");
    let (blob, sw) = send(&home, main, true, &Command::take_out_key(&cert));
    assert!(sw.is_ok());
    assert_eq!(state(&home, main).export.target, "9999000011112222");
    let before = state(&home, backup);
    let (_, sw) = send(&home, backup, true, &Command::import_key(&blob, false));
    assert_eq!(sw, StatusWord::WrongData);
    assert_eq!(state(&home, backup), before);
    // The duplicate workflow to the card here is refused: another target is bound.
    let o = duplicate(&home, main, backup);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

#[test]
fn a_member_number_given_twice_is_refused_naming_both_lines() {
    let home = temp_dir("members");
    let csv = home.join("h.csv");
    std::fs::write(
        &csv,
        "holder,pin,member_number,expiry\nalice,1234,M-1,2030-01\nbob,1234,M-2,2030-01\ncarol,1234,M-1,2030-01\n",
    )
    .unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:m", "issue", "--profile", "main", "--holders"])
        .arg(&csv)
        .arg("--no-domain"));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("member number 'M-1' is also on line 2 (lines 2 and 4)"),
        "{e}"
    );
    assert!(!home.join("cards").exists(), "cards were created");
}

/// A new issuer (`issuer init`) under `home`: not the one the cards know.
fn new_issuer(home: &Path, name: &str) -> std::path::PathBuf {
    let dir = home.join(name);
    let o = run(cardvault(home).args(["issuer", "init", "-o"]).arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}
