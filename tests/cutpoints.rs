//! The card pulled at every APDU of every workflow. For each workflow the
//! uninterrupted run is counted, then for every k the card is pulled at the
//! k-th APDU (once with the APDU processed and its answer lost, once with it
//! never delivered); the invariants are checked; the workflow is run again
//! to completion and must end where an uninterrupted run ends.

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::card::CardClient;
use cardvault::transport::fault::{FaultyReader, PullMode, PullSchedule};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::{backup as wb, duplicate, files, issue};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

const PIN: &[u8] = b"123456";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(&name));
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

fn sim(dir: &Path, name: &str, profile: &str) -> SimReader {
    SimReader::open(dir, name, profile, None).unwrap()
}

fn vault(dir: &Path) -> Vault {
    Vault::open(&dir.join("vault.sqlite")).unwrap()
}

fn assert_vault_ok(dir: &Path, what: &str) {
    let problems = vault(dir).verify().unwrap();
    assert!(problems.is_empty(), "{what}: vault verify: {problems:?}");
}

/// Open two clients on faulty readers sharing one schedule and run `f`.
fn with_two<T>(
    dir: &Path,
    a: &str,
    b: &str,
    sched: &Arc<PullSchedule>,
    f: impl FnOnce(&mut CardClient<'_>, &mut CardClient<'_>) -> cardvault::Result<T>,
) -> cardvault::Result<T> {
    let mut ra = FaultyReader::new(sim(dir, a, "main"), sched.clone());
    let mut rb = FaultyReader::new(sim(dir, b, "main"), sched.clone());
    let mut ca = client(&mut ra, false)?;
    let mut cb = client(&mut rb, false)?;
    f(&mut ca, &mut cb)
}

fn with_one<T>(
    dir: &Path,
    a: &str,
    sched: &Arc<PullSchedule>,
    f: impl FnOnce(&mut CardClient<'_>) -> cardvault::Result<T>,
) -> cardvault::Result<T> {
    let mut ra = FaultyReader::new(sim(dir, a, "main"), sched.clone());
    let mut ca = client(&mut ra, false)?;
    f(&mut ca)
}

/// Run the cut-point loop: `run` executes the workflow under a schedule,
/// `check_cut` checks the invariants after a pull, `retry_and_check` runs it
/// again and checks the end state. Returns (tried, passed).
fn cut_points(
    name: &str,
    claimed: &str,
    template: &Path,
    run: &dyn Fn(&Path, &Arc<PullSchedule>) -> cardvault::Result<()>,
    check_cut: &dyn Fn(&Path, u64, PullMode),
    retry_and_check: &dyn Fn(&Path),
) -> (u64, u64) {
    // The uninterrupted run: how many APDUs, and a control that it passes.
    let base = temp_dir(&format!("{name}-count"));
    copy_dir(template, &base);
    let counting = PullSchedule::counting();
    run(&base, &counting).unwrap_or_else(|e| panic!("{name}: uninterrupted run failed: {e}"));
    let n = counting.delivered();
    assert_eq!(
        n,
        claims::cut_point_apdus(claimed),
        "{name}: the uninterrupted run took {n} APDUs; RELIABILITY.md says otherwise for '{claimed}'"
    );
    let (mut tried, mut passed) = (0, 0);
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            tried += 1;
            let dir = temp_dir(&format!("{name}-{k}"));
            copy_dir(template, &dir);
            let sched = PullSchedule::new(k, mode);
            let r = run(&dir, &sched);
            assert!(sched.pulled(), "{name} k={k}: the schedule never fired");
            match r {
                Err(cardvault::Error::CardRemoved(_)) => {}
                Err(e) => panic!("{name} k={k} {mode:?}: the pull was reported as '{e}', not as a removed card"),
                Ok(()) => panic!("{name} k={k} {mode:?}: the workflow claimed success with the card pulled"),
            }
            check_cut(&dir, k, mode);
            retry_and_check(&dir);
            passed += 1;
        }
    }
    assert_eq!((tried, passed), (2 * n, 2 * n));
    println!("cut points {name}: tried {tried}, passed {passed} ({n} APDUs x 2 pull modes)");
    (tried, passed)
}

fn issue_pair(dir: &Path) {
    let holder = issue::Holder {
        id: "alice".into(),
        pin: Zeroizing::new(PIN.to_vec()),
        member_number: Some("M-1".into()),
        expiry: Some("2030-01".into()),
        key1: None,
    };
    let opts = issue::IssueOptions {
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: None,
        registrars: None,
    };
    let key1 = [7u8; 32];
    for (name, role) in [
        ("main", issue::Role::Main),
        ("backup", issue::Role::Backup),
        ("third", issue::Role::Backup),
    ] {
        let mut r = SimReader::open(dir, name, "blank", None).unwrap();
        issue::personalize(&mut client(&mut r, false).unwrap(), &holder, role, &key1, &opts).unwrap();
    }
}

fn issue_opts() -> issue::IssueOptions {
    issue::IssueOptions {
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: None,
        registrars: None,
    }
}

fn alice() -> issue::Holder {
    issue::Holder {
        id: "alice".into(),
        pin: Zeroizing::new(PIN.to_vec()),
        member_number: Some("M-1".into()),
        expiry: Some("2030-01".into()),
        key1: None,
    }
}

/// Issue the blank card "blank" as alice's main card.
fn run_issue(dir: &Path, s: &Arc<PullSchedule>) -> cardvault::Result<()> {
    let mut r = FaultyReader::new(sim(dir, "blank", "blank"), s.clone());
    let mut c = client(&mut r, false)?;
    issue::personalize(&mut c, &alice(), issue::Role::Main, &[7u8; 32], &issue_opts()).map(|_| ())
}

/// Whether the card's certificate is a registration certificate for its
/// own key (not the factory certificate).
fn registered(st: &applet_sim::CardState) -> bool {
    let cert = openssl::x509::X509::from_der(&st.certificate).unwrap();
    let subject = cardvault_proto::cert::card_subject(&cert).unwrap();
    let key = cardvault_proto::crypto::KeyPair::from_private(&st.ecka_private).unwrap();
    assert_eq!(
        cardvault_proto::cert::ecka_public_key(&cert).unwrap(),
        key.public_bytes(),
        "the certificate and the key the card holds always go together"
    );
    subject.role != "blank"
}

/// Whether the card has a certified signing key: the certificate (under the
/// test issuer root, for this card and role) and the key it holds always go
/// together.
fn can_sign(st: &applet_sim::CardState) -> bool {
    if st.storing.certificate.is_empty() {
        assert!(
            st.storing.private_key.is_empty(),
            "a signing key without its certificate"
        );
        return false;
    }
    let signer =
        cardvault_proto::storing::verify_card_signing_key(&[applet_sim::test_issuer::root()], &st.storing.certificate)
            .unwrap();
    assert_eq!(
        signer.public_key,
        cardvault_proto::crypto::KeyPair::from_private(&st.storing.private_key)
            .unwrap()
            .public_bytes(),
        "the signing certificate and the key the card holds always go together"
    );
    assert_eq!(
        (signer.card_number.as_str(), signer.role.as_str()),
        (st.card_number.as_str(), st.role.as_str())
    );
    true
}

/// Issuance under SCP11a with the registration certificate: a card pulled
/// at any APDU is either still blank (factory certificate, or already its
/// registration certificate) or issued with its registration certificate,
/// never issued with a factory certificate; issuing it again finishes it.
#[test]
fn issuance_survives_a_pull_at_every_apdu() {
    let template = temp_dir("issue-template");
    drop(sim(&template, "blank", "blank"));
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        let st = state(dir, "blank");
        let reg = registered(&st);
        assert!(
            !st.issued || reg,
            "issue k={k} {mode:?}: issued with the factory certificate"
        );
        let signs = can_sign(&st);
        assert!(
            !st.issued || signs,
            "issue k={k} {mode:?}: issued without a signing key"
        );
    };
    let retry = |dir: &Path| {
        if !state(dir, "blank").issued {
            run_issue(dir, &PullSchedule::counting()).expect("retried issuance");
        }
        let st = state(dir, "blank");
        assert!(st.issued && registered(&st) && can_sign(&st));
        let cert = openssl::x509::X509::from_der(&st.certificate).unwrap();
        let subject = cardvault_proto::cert::card_subject(&cert).unwrap();
        assert_eq!(
            (subject.role.as_str(), subject.member_number.as_deref()),
            ("main", Some("M-1"))
        );
    };
    cut_points(
        "issue",
        "issue (one blank card)",
        &template,
        &run_issue,
        &check_cut,
        &retry,
    );
}

fn dup_opts() -> duplicate::DuplicateOptions {
    duplicate::DuplicateOptions {
        main_pin: Zeroizing::new(PIN.to_vec()),
        backup_pin: Zeroizing::new(PIN.to_vec()),
        elements: vec![Zeroizing::new(vec![2u8; 32]), Zeroizing::new(vec![3u8; 32])],
        backup_gets_public_key: false,
    }
}

fn run_duplicate(dir: &Path, s: &Arc<PullSchedule>) -> cardvault::Result<()> {
    let mut v = vault(dir);
    with_two(dir, "main", "backup", s, |m, b| {
        duplicate::duplicate(m, b, &dup_opts(), &mut v).map(|_| ())
    })
}

#[test]
fn duplicate_survives_a_pull_at_every_apdu() {
    let template = temp_dir("dup-template");
    issue_pair(&template);
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        assert_vault_ok(dir, &format!("duplicate k={k} {mode:?}"));
        // Whatever happened, the one duplicate can only ever go to "backup".
        let m = state(dir, "main");
        assert!(m.export.target.is_empty() || m.export.target == state(dir, "backup").card_number);
        state(dir, "backup");
    };
    let retry = |dir: &Path| {
        run_duplicate(dir, &PullSchedule::counting()).expect("retried duplicate");
        let (m, b) = (state(dir, "main"), state(dir, "backup"));
        assert_eq!(
            m.main_key.as_ref().unwrap().private,
            b.main_key.as_ref().unwrap().private
        );
        assert!(m.export.confirmed);
        // No second duplicate towards another card.
        let third = state(dir, "third").certificate.clone();
        let sw = with_one(dir, "main", &PullSchedule::counting(), |c| {
            c.verify_pin(PIN)?;
            Ok(c.transmit(&Command::take_out_key(&third))?.sw)
        })
        .unwrap();
        assert_eq!(sw, StatusWord::ConditionsNotSatisfied);
    };
    cut_points(
        "duplicate",
        "duplicate (two cards)",
        &template,
        &run_duplicate,
        &check_cut,
        &retry,
    );
}

fn fill(dir: &Path, name: &str, page: u16, byte: u8, len: usize) {
    with_one(dir, name, &PullSchedule::counting(), |c| {
        c.verify_pin(PIN)?;
        c.write_memory(page, &vec![byte; len])
    })
    .unwrap();
}

fn run_backup(full: bool) -> impl Fn(&Path, &Arc<PullSchedule>) -> cardvault::Result<()> {
    move |dir, s| {
        let mut v = vault(dir);
        with_one(dir, "card", s, |c| {
            c.verify_pin(PIN)?;
            wb::backup(c, &mut v, full, &|_, _| {}).map(|_| ())
        })
    }
}

/// The vault's newest chain restores exactly the card's current memory.
fn vault_restores_current_memory(dir: &Path) {
    let expected = state(dir, "card").memory.clone();
    fill(dir, "card", 5, 0xAB, 700);
    let mut v = vault(dir);
    let number = state(dir, "card").card_number.clone();
    let last = v.latest_backup(&number).unwrap().unwrap();
    let chain = v.chain_to(&last).unwrap();
    with_one(dir, "card", &PullSchedule::counting(), |c| {
        c.verify_pin(PIN)?;
        let plan = wb::RestorePlan {
            chain,
            authorization: None,
            override_rollback: false,
        };
        wb::restore(c, &mut v, &plan, &|_, _| {})
    })
    .expect("restore of the newest chain");
    assert_eq!(
        state(dir, "card").memory,
        expected,
        "the vault's newest chain does not restore the card"
    );
}

#[test]
fn full_and_differential_backups_survive_a_pull_at_every_apdu() {
    let template = temp_dir("bk-template");
    sim(&template, "card", "main");
    fill(&template, "card", FIRST_DATA_PAGE, 0x11, 8192);
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        assert_vault_ok(dir, &format!("backup k={k} {mode:?}"));
        state(dir, "card");
    };
    let retry_full = |dir: &Path| {
        run_backup(false)(dir, &PullSchedule::counting()).expect("retried backup");
        assert_vault_ok(dir, "after retry");
        vault_restores_current_memory(dir);
    };
    cut_points(
        "backup-full",
        "backup, full",
        &template,
        &run_backup(true),
        &check_cut,
        &retry_full,
    );

    // Differential: a full backup exists, then pages change.
    run_backup(true)(&template, &PullSchedule::counting()).unwrap();
    fill(&template, "card", 20, 0x22, 1000);
    fill(&template, "card", 100, 0x33, 300);
    cut_points(
        "backup-differential",
        "backup, differential",
        &template,
        &run_backup(false),
        &check_cut,
        &retry_full,
    );
}

fn run_restore_latest(dir: &Path, s: &Arc<PullSchedule>) -> cardvault::Result<()> {
    let mut v = vault(dir);
    let number = state(dir, "card").card_number.clone();
    let last = v.latest_backup(&number)?.expect("a backup");
    let chain = v.chain_to(&last)?;
    with_one(dir, "card", s, |c| {
        c.verify_pin(PIN)?;
        let plan = wb::RestorePlan {
            chain,
            authorization: None,
            override_rollback: false,
        };
        wb::restore(c, &mut v, &plan, &|_, _| {}).map(|_| ())
    })
}

fn restore_template(name: &str, diffs: usize) -> (TempDir, Vec<u8>, Vec<u8>) {
    let t = temp_dir(name);
    sim(&t, "card", "main");
    with_one(&t, "card", &PullSchedule::counting(), |c| {
        cardvault::workflow::purse::credit_with_issuer_key(c, PIN, 1, 700, &issuer_signer()).map(|_| ())
    })
    .unwrap();
    fill(&t, "card", 10, 0x44, 4096);
    run_backup(true)(&t, &PullSchedule::counting()).unwrap();
    for i in 0..diffs {
        fill(&t, "card", 30 + i as u16 * 5, 0x50 + i as u8, 600);
        run_backup(false)(&t, &PullSchedule::counting()).unwrap();
    }
    let expected = state(&t, "card").memory.clone();
    fill(&t, "card", 10, 0x99, 2048);
    let before = state(&t, "card").memory.clone();
    (t, expected, before)
}

fn balance(dir: &Path, name: &str) -> u32 {
    with_one(dir, name, &PullSchedule::counting(), |c| {
        let b = c.exec(&Command::get_balance(1))?;
        Ok(u32::from_be_bytes(b.try_into().unwrap()))
    })
    .unwrap()
}

fn restore_cut_points(name: &str, claimed: &str, diffs: usize) {
    let (template, expected, before) = restore_template(name, diffs);
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        assert_vault_ok(dir, &format!("{name} k={k} {mode:?}"));
        let m = state(dir, "card").memory.clone();
        // Staged pages never reach the card before RESTORE COMPLETE: the
        // application area is either untouched or completely restored.
        // (A completed restore leaves the purse's value at 0: RESTORE
        // COMPLETE does not write a value application's pages.)
        assert!(
            m == before || (m[4..] == expected[4..] && m[..4] == [0; 4]),
            "{name} k={k} {mode:?}: a half-restored card"
        );
    };
    let retry = |dir: &Path| {
        run_restore_latest(dir, &PullSchedule::counting()).expect("retried restore");
        let m = state(dir, "card").memory.clone();
        // Compare all but the purse's value bytes, which the next use resets.
        assert_eq!(m[4..], expected[4..]);
        assert_eq!(balance(dir, "card"), 0, "restored value must be reset, never doubled");
    };
    cut_points(name, claimed, &template, &run_restore_latest, &check_cut, &retry);
}

#[test]
fn same_card_restore_survives_a_pull_at_every_apdu() {
    restore_cut_points("restore-same-card", "restore, same card", 0);
}

#[test]
fn chain_restore_survives_a_pull_at_every_apdu() {
    restore_cut_points("restore-chain", "restore, chain (full + 3 differentials)", 3);
}

fn authorize(dir: &Path, source: &str, counter: u32) -> wb::RestoreAuthorization {
    let target = state(dir, "repl").card_number.clone();
    let ch = with_one(dir, "repl", &PullSchedule::counting(), |c| {
        c.verify_pin(PIN)?;
        c.exec(&Command::get_restore_challenge())
    })
    .unwrap();
    let req = wb::RestoreRequest {
        version: wb::REQUEST_VERSION,
        source_card: source.into(),
        counter,
        target_card: target,
        challenge: cardvault_proto::to_hex(&ch),
        target_certificate: cardvault_proto::to_hex(&state(dir, "repl").certificate),
        chain_hash: {
            let v = vault(dir);
            let last = v.latest_backup(source).unwrap().unwrap();
            cardvault_proto::to_hex(&wb::chain_hash_of(&v, &v.chain_to(&last).unwrap()).unwrap())
        },
    };
    wb::sign_authorization(&req, &issuer_signer()).unwrap()
}

fn run_other_card(dir: &Path, s: &Arc<PullSchedule>) -> cardvault::Result<()> {
    let mut v = vault(dir);
    let source = state(dir, "card").card_number.clone();
    let last = v.latest_backup(&source)?.expect("a backup");
    let auth: wb::RestoreAuthorization =
        serde_json::from_str(&std::fs::read_to_string(dir.join("auth.json")).unwrap()).unwrap();
    let chain = v.chain_to(&last)?;
    let mut r = FaultyReader::new(sim(dir, "repl", "replacement"), s.clone());
    let mut c = client(&mut r, false)?;
    c.verify_pin(PIN)?;
    let plan = wb::RestorePlan {
        chain,
        authorization: Some(&auth),
        override_rollback: false,
    };
    wb::restore(&mut c, &mut v, &plan, &|_, _| {}).map(|_| ())
}

#[test]
fn other_card_restore_survives_a_pull_at_every_apdu() {
    let (template, expected, _) = restore_template("restore-other-template", 1);
    sim(&template, "repl", "replacement");
    let before = state(&template, "repl").memory.clone();
    let source = state(&template, "card").card_number.clone();
    let counter = vault(&template).latest_backup(&source).unwrap().unwrap().counter;
    let auth = authorize(&template, &source, counter);
    std::fs::write(template.join("auth.json"), serde_json::to_string(&auth).unwrap()).unwrap();
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        assert_vault_ok(dir, &format!("other-card k={k} {mode:?}"));
        let m = state(dir, "repl").memory.clone();
        assert!(
            m == before || (m[4..] == expected[4..] && m[..4] == [0; 4]),
            "other-card k={k} {mode:?}: a half-restored card"
        );
    };
    let retry = |dir: &Path| {
        // The authorization is single-use: the help desk asks the issuer again.
        let a = authorize(dir, &source, counter);
        std::fs::write(dir.join("auth.json"), serde_json::to_string(&a).unwrap()).unwrap();
        run_other_card(dir, &PullSchedule::counting()).expect("retried other-card restore");
        assert_eq!(state(dir, "repl").memory[4..], expected[4..]);
        assert_eq!(balance(dir, "repl"), 0);
    };
    cut_points(
        "restore-other-card",
        "restore, other card (issuer-authorized)",
        &template,
        &run_other_card,
        &check_cut,
        &retry,
    );
}

#[test]
fn recovery_survives_a_pull_at_every_apdu() {
    let template = temp_dir("recover-template");
    issue_pair(&template);
    run_duplicate(&template, &PullSchedule::counting()).unwrap();
    let public = state(&template, "main").main_key.as_ref().unwrap().public.clone();
    let files_dir = template.join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let originals: Vec<(PathBuf, Vec<u8>)> = (0..3)
        .map(|i| {
            let plain = files_dir.join(format!("f{i}"));
            let data: Vec<u8> = (0..(3000 * (i + 1))).map(|x| (x % 251) as u8 ^ i as u8).collect();
            std::fs::write(&plain, &data).unwrap();
            let enc = files_dir.join(format!("f{i}.cve"));
            cardvault::fileenc::encrypt_file(&plain, &enc, &public, false).unwrap();
            std::fs::remove_file(&plain).unwrap();
            (PathBuf::from(format!("files/f{i}.cve")), data)
        })
        .collect();
    // The main card breaks; "third" is issued as the new main card's stand-in
    // with a fresh key generated on it.
    std::fs::remove_file(cardvault::transport::sim::card_path(&template, "main")).unwrap();
    let holder = issue::Holder {
        id: "alice".into(),
        pin: Zeroizing::new(PIN.to_vec()),
        member_number: Some("M-1".into()),
        expiry: Some("2030-01".into()),
        key1: None,
    };
    let opts = issue::IssueOptions {
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: None,
        registrars: None,
    };
    {
        let mut r = SimReader::open(&template, "new", "blank", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        issue::personalize(&mut c, &holder, issue::Role::Main, &[9u8; 32], &opts).unwrap();
        c.verify_pin(PIN).unwrap();
        c.write_key_element(2, &[4u8; 32]).unwrap();
        c.write_key_element(3, &[5u8; 32]).unwrap();
        c.generate_key_pair().unwrap();
    }
    let run = |dir: &Path, s: &Arc<PullSchedule>| -> cardvault::Result<()> {
        with_two(dir, "backup", "new", s, |b, n| {
            b.verify_pin(PIN)?;
            n.verify_pin(PIN)?;
            let public = n.public_key()?.expect("new card key");
            for (rel, _) in &originals {
                files::recover_file(b, n, &public, &dir.join(rel))?;
            }
            Ok(())
        })
    };
    let decrypts_with = |dir: &Path, card: &str, rel: &Path| -> Option<Vec<u8>> {
        with_one(dir, card, &PullSchedule::counting(), |c| {
            c.verify_pin(PIN)?;
            let mut out = Vec::new();
            let f = std::fs::File::open(dir.join(rel)).unwrap();
            cardvault::fileenc::decrypt(f, &mut out, None, files::card_unwrapper(c))
                .map_err(|e| cardvault::Error::Data(e.to_string()))?;
            Ok(out)
        })
        .ok()
    };
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        for (rel, data) in &originals {
            // Every file is whole, readable with the backup card or the new card.
            let via_backup = decrypts_with(dir, "backup", rel);
            let via_new = decrypts_with(dir, "new", rel);
            assert!(
                via_backup.as_ref() == Some(data) || via_new.as_ref() == Some(data),
                "recover k={k} {mode:?}: {} is lost",
                rel.display()
            );
        }
        let tmp = std::fs::read_dir(dir.join("files"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".tmp"));
        assert!(!tmp, "recover k={k} {mode:?}: a temporary file was left behind");
    };
    let retry = |dir: &Path| {
        run(dir, &PullSchedule::counting()).expect("retried recovery");
        for (rel, data) in &originals {
            assert_eq!(decrypts_with(dir, "new", rel).as_ref(), Some(data));
        }
    };
    cut_points(
        "recover",
        "recover (three files, two cards)",
        &template,
        &run,
        &check_cut,
        &retry,
    );
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

/// Issuance of a blank card with the issuer domain's key, in the issuer's
/// SCP11a session: wherever the card is pulled, it is either not issued or
/// issued with the domain's key, never issued without it or with another;
/// a retried issuance finishes it (LOAD DOMAIN KEY takes the same key again).
#[test]
fn issuance_with_the_domain_key_survives_a_pull_at_every_apdu() {
    let template = temp_dir("issue-domain-template");
    drop(sim(&template, "fresh", "blank"));
    let domain = test_domain_key();
    let want = domain.domain();
    let run = {
        let domain = domain.clone();
        move |dir: &Path, s: &Arc<PullSchedule>| -> cardvault::Result<()> {
            let holder = issue::Holder {
                id: "dora".into(),
                pin: Zeroizing::new(PIN.to_vec()),
                member_number: Some("M-7".into()),
                expiry: Some("2031-01".into()),
                key1: None,
            };
            let opts = issue::IssueOptions {
                issuer: Some(test_operator()),
                factory_issuer: None,
                key_group_size: 3,
                no_export_after_backup: false,
                domain: Some(domain.clone()),
                registrars: None,
            };
            with_one(dir, "fresh", s, |c| {
                issue::personalize(c, &holder, issue::Role::Main, &[7u8; 32], &opts).map(|_| ())
            })
        }
    };
    let check_cut = |dir: &Path, k: u64, mode: PullMode| {
        let s = state(dir, "fresh");
        assert!(
            s.domain() == want || (s.common_key.is_empty() && !s.issued),
            "issue k={k} {mode:?}: issued {} with {}",
            s.issued,
            s.domain()
        );
    };
    let retry = |dir: &Path| {
        match run(dir, &PullSchedule::counting()) {
            Ok(()) => {}
            // Pulled after END PERSONALIZATION took effect: issued already.
            Err(cardvault::Error::Issue(issue::IssueRefusal::AlreadyIssued { .. })) => {}
            Err(e) => panic!("retried issuance: {e}"),
        }
        let s = state(dir, "fresh");
        assert!(s.issued && s.role == "main");
        assert_eq!(s.domain(), want);
    };
    cut_points(
        "issue-domain",
        "issue, main card with the domain key (SCP11a)",
        &template,
        &run,
        &check_cut,
        &retry,
    );
}
