//! The help desk's guided replacement: a holder is issued a pair of cards,
//! backs up, loses the main card; `replace --holder M-... --new R` marks it
//! lost, restores its pages onto the new card, recovers the holder's files
//! with the backup card and reports what was and was not restored. The same
//! story stopped at every step (waiting for the issuer, the card pulled at
//! every APDU) and resumed ends the same way.

mod common;

use cardvault::card::CardClient;
use cardvault::transport::fault::{FaultyReader, PullMode, PullSchedule};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::replace::{self, IssuerRights, ReplaceJob, StateFile, Step, StepState};
use common::*;
use std::path::{Path, PathBuf};

fn memory(home: &Path, name: &str) -> Vec<u8> {
    state(home, name).memory.clone()
}

/// The holder data pages (after the purse) of an embedded card.
fn data_pages(home: &Path, name: &str) -> Vec<u8> {
    let st = state(home, name);
    st.memory[FIRST_DATA_PAGE as usize * st.page_size as usize..].to_vec()
}

fn write(home: &Path, name: &str, page: u16, data: &[u8]) {
    let mut r = SimReader::open(home, name, "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    c.write_memory(page, data).unwrap();
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Alice (M-1001) with a main and a backup card, a backup of her main card
/// with data in it, an encrypted file of hers, and a replacement pair
/// `r-alice-main`, `r-alice-backup` issued after she reported the loss.
/// Returns (lost card number, the file, its plaintext).
fn story(home: &Path) -> (String, PathBuf, Vec<u8>) {
    let dir = home.join("domain");
    let pass = domain_init(home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    issue_holders(home, "h", "pair", "alice,123456,M-1001,2030-01\n", &domain);
    // Duplicate so that the backup card holds alice's key, and encrypt a file to it.
    let o = run(cv(home)
        .env("E", "11".repeat(32) + " " + &"22".repeat(32))
        .args([
            "duplicate",
            "--main",
            "sim:h-alice-main",
            "--backup",
            "sim:h-alice-backup",
        ])
        .args(["--pin", "env:P", "--backup-pin", "env:P", "--elements", "env:E"]));
    assert!(o.status.success(), "duplicate: {}{}", stdout(&o), stderr(&o));
    write(home, "h-alice-main", 10, &pattern(3000));
    let o = run(cv(home).args(["--json", "-r", "sim:h-alice-main", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "backup: {}", stderr(&o));
    let plain = b"alice's medical record, encrypted to her card".to_vec();
    std::fs::write(home.join("record.txt"), &plain).unwrap();
    let file = home.join("record.cve");
    let o = run(cv(home)
        .args(["encrypt", "--to", "sim:h-alice-main"])
        .arg(home.join("record.txt"))
        .arg("-o")
        .arg(&file));
    assert!(o.status.success(), "encrypt: {}", stderr(&o));
    issue_holders(home, "r", "pair", "alice,123456,M-1001,2030-01\n", &domain);
    (state(home, "h-alice-main").card_number.clone(), file, plain)
}

fn issuer_args() -> Vec<String> {
    vec![
        "--issuer-key".into(),
        format!("file:{}", repo_path("fixtures/issuer/issuer-private.hex").display()),
        "--issuer".into(),
        test_issuer_dir().display().to_string(),
    ]
}

fn audit_count(home: &Path, event: &str) -> usize {
    let o = run(cv(home).args(["--json", "audit"]));
    let v = json(&o);
    v.as_array()
        .or_else(|| v["entries"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .count()
}

#[test]
fn a_lost_card_is_replaced_from_the_holder_alone_waiting_for_the_issuer_in_between() {
    let home = temp_dir("replace");
    let (lost, file, plain) = story(&home);
    let at_backup = data_pages(&home, "h-alice-main");
    assert_ne!(data_pages(&home, "r-alice-main"), at_backup);
    // Card triage: status shows the backup counters and the application table.
    let st = json(&run(cv(&home).args(["--json", "-r", "sim:h-alice-main", "status"])));
    assert_eq!(st["backup_counters"]["issued"], 1, "{st}");
    assert_eq!(st["backup_counters"]["changed_pages"], 0, "{st}");
    assert_eq!(st["applications"][0]["value"], true, "{st}");
    assert_eq!(st["applications"][0]["name"], "e-money purse", "{st}");
    assert_eq!(st["applications"][1]["first_page"], FIRST_DATA_PAGE, "{st}");
    let text = stdout(&run(cv(&home).args(["-r", "sim:h-alice-main", "status"])));
    assert!(text.contains("backups      last counter issued #1"), "{text}");
    assert!(
        text.contains("application  1 e-money purse    pages 0-3, value"),
        "{text}"
    );

    // The clerk has no issuer rights: the job stops at the authorization,
    // the request written for the issuer.
    let o = run(cv(&home).args([
        "--json",
        "replace",
        "--holder",
        "M-1001",
        "--new",
        "sim:r-alice-main",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r = json(&o);
    assert_eq!(r["waiting"], true, "{r}");
    assert_eq!(r["lost_card"], lost.as_str());
    assert_eq!(r["finished"], false);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step"], "mark-lost");
    assert_eq!(steps[0]["state"], "done");
    assert_eq!(steps[2]["step"], "wallet");
    assert_eq!(steps[2]["state"], "skipped");
    assert!(
        steps[2]["detail"].as_str().unwrap().contains("no safe configured"),
        "{r}"
    );
    assert_eq!(steps[4]["state"], "waiting");
    let req = PathBuf::from(r["request_file"].as_str().unwrap());
    let state_file = PathBuf::from(r["state_file"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Nothing restored yet; the lost card is revoked once.
    assert_ne!(data_pages(&home, "r-alice-main"), at_backup);
    assert_eq!(audit_count(&home, "card-revoked"), 1);
    let h = run(cv(&home).args(["--json", "holder", "show", "M-1001"]));
    assert_eq!(json(&h)["holder"]["state"], "replaced");

    // Run again without the authorization: still waiting, nothing repeated.
    let o = run(cv(&home).args([
        "--json",
        "replace",
        "--resume",
        "--new",
        "sim:r-alice-main",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["waiting"], true);
    assert_eq!(audit_count(&home, "card-revoked"), 1);

    // The issuer signs the request; the clerk resumes with it and the backup card.
    let auth = home.join("auth.json");
    let o = run(cv(&home)
        .args(["authorize-restore", "--request"])
        .arg(&req)
        .arg("--issuer-key")
        .arg(format!(
            "file:{}",
            repo_path("fixtures/issuer/issuer-private.hex").display()
        ))
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(&auth));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv(&home)
        .args([
            "--json",
            "replace",
            "--resume",
            "--new",
            "sim:r-alice-main",
            "--pin",
            "env:P",
        ])
        .args(["--backup", "sim:h-alice-backup", "--backup-pin", "env:P", "--files"])
        .arg(&file)
        .env("E", "33".repeat(32) + " " + &"44".repeat(32))
        .args([
            "--elements",
            "env:E",
            "--new-backup",
            "sim:r-alice-backup",
            "--new-backup-pin",
            "env:P",
        ])
        .arg("--authorization")
        .arg(&auth));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r = json(&o);
    assert_eq!(r["finished"], true, "{r}");
    assert_eq!(r["waiting"], false);
    assert!(r["restored"]["pages_written"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["files"][0]["result"], "ok", "{r}");
    assert_eq!(
        r["new_backup"],
        state(&home, "r-alice-backup").card_number.as_str(),
        "{r}"
    );
    // The new card holds the pages; the purse is announced as not restored.
    assert_eq!(data_pages(&home, "r-alice-main"), at_backup);
    let not = r["not_restored"].as_array().unwrap();
    assert!(
        not.iter().any(|l| l.as_str().unwrap().contains("e-money purse")
            && l.as_str().unwrap().contains("balance on the new card 0")),
        "{r}"
    );
    assert!(not.iter().any(|l| l.as_str().unwrap().starts_with("wallet: ")), "{r}");
    // The file now opens with the new card.
    let out = home.join("record.out");
    let o = run(cv(&home)
        .args(["-r", "sim:r-alice-main", "decrypt", "--pin", "env:P"])
        .arg(&file)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), plain);
    // And so does the fresh backup card: a working pair again.
    let o = run(cv(&home)
        .args(["-r", "sim:r-alice-backup", "decrypt", "--pin", "env:P"])
        .arg(&file)
        .arg("-o")
        .arg(home.join("record.backup.out")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(home.join("record.backup.out")).unwrap(), plain);

    // The authorization again, by hand: its challenge is spent, and the
    // terminal says so before the card sees it.
    let before = memory(&home, "r-alice-main");
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:r-alice-main",
            "restore",
            "--holder",
            "M-1001",
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&auth));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("used challenge: an authorization with this challenge was sent"),
        "{}",
        stderr(&o)
    );
    assert_eq!(memory(&home, "r-alice-main"), before);

    // Once more: the same report, no card or vault change.
    let memory_before = memory(&home, "r-alice-main");
    let trail = stdout(&run(cv(&home).args(["--json", "audit"])));
    let o = run(cv(&home).args([
        "replace",
        "--holder",
        "alice",
        "--new",
        "sim:r-alice-main",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("restored:"), "{}", stdout(&o));
    assert_eq!(memory(&home, "r-alice-main"), memory_before);
    assert_eq!(stdout(&run(cv(&home).args(["--json", "audit"]))), trail);
    // --resume with nothing in progress is a clear error.
    let o = run(cv(&home).args(["replace", "--resume", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no replacement in progress"), "{}", stderr(&o));
}

#[test]
fn an_authorization_for_an_earlier_request_is_refused_before_the_card_sees_it() {
    let home = temp_dir("replace-stale");
    let (_lost, _file, _plain) = story(&home);
    let o = run(cv(&home).args([
        "--json",
        "replace",
        "--holder",
        "M-1001",
        "--new",
        "sim:r-alice-main",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let req = PathBuf::from(json(&o)["request_file"].as_str().unwrap());
    let auth = home.join("auth.json");
    let o = run(cv(&home)
        .args(["authorize-restore", "--request"])
        .arg(&req)
        .args(&issuer_args()[..2])
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(&auth));
    assert!(o.status.success(), "{}", stderr(&o));
    // A later request replaces the card's challenge: the authorization is stale.
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:r-alice-main",
            "restore",
            "--holder",
            "M-1001",
            "--pin",
            "env:P",
            "--request",
        ])
        .arg(home.join("other.json")));
    assert!(o.status.success(), "{}", stderr(&o));
    // Make the replacement's own request the stale one: resume with an authorization
    // for a different challenge (edit the request the issuer signed).
    let mut a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    a["challenge"] = serde_json::Value::String("00".repeat(16));
    std::fs::write(&auth, a.to_string()).unwrap();
    let before = memory(&home, "r-alice-main");
    let o = run(cv(&home)
        .args([
            "replace",
            "--resume",
            "--new",
            "sim:r-alice-main",
            "--pin",
            "env:P",
            "--authorization",
        ])
        .arg(&auth));
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("an earlier request"), "{}", stderr(&o));
    assert!(stderr(&o).contains("replace --resume"), "{}", stderr(&o));
    assert_eq!(memory(&home, "r-alice-main"), before);
}

/// The safe of [`deposit_story`], when the story has one.
fn wallet_safes(home: &Path) -> Vec<cardvault::safe::SafeAddress> {
    let dir = home.join("safe1");
    if dir.exists() {
        vec![cardvault::safe::SafeAddress::Dir(dir)]
    } else {
        Vec::new()
    }
}

/// The story, and a wallet item of the lost card deposited into the
/// embedded safe `safe1`; returns the item's id.
fn deposit_story(home: &Path) -> String {
    let safe = init_safe(home, "safe1");
    deposit_item(
        home,
        "sim:h-alice-main",
        "Museum day pass",
        1200,
        safe.to_str().unwrap(),
    )
}

/// The item `item` is on the new card once, and the safe's ledger and the
/// vault's copy record its withdrawal onto it.
fn check_withdrawn(home: &Path, item: &str, what: &str) {
    let st = StateFile(home.join("replace-state.json")).load().unwrap();
    let held: Vec<String> = state(home, "r-alice-main")
        .wallet
        .items
        .iter()
        .map(|h| cardvault_proto::to_hex(&cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap().id))
        .collect();
    assert_eq!(held, [item.to_string()], "{what}: the new card's wallet");
    assert_eq!(st.wallet.len(), 1, "{what}: {:?}", st.wallet);
    assert_ne!(st.wallet[0].result, "not_withdrawn", "{what}: {:?}", st.wallet);
    assert_eq!(
        ledger(&home.join("safe1")),
        [(item.to_string(), "withdrawn".to_string(), Some(st.new_card.clone()))],
        "{what}: the safe's ledger"
    );
    let v = Vault::open(&home.join("vault.sqlite")).unwrap();
    assert_eq!(
        v.wallet_certificates(Some(&st.lost_card)).unwrap()[0]
            .withdrawn_to
            .as_deref(),
        Some(st.new_card.as_str()),
        "{what}: the vault's copy"
    );
}

/// The replacement in-process, with the issuer's signer at hand, on cards
/// behind readers that share `sched`.
fn replace_once(home: &Path, sched: &std::sync::Arc<PullSchedule>) -> cardvault::Result<()> {
    replace_in(home, sched, &|_| {})
}

/// As [`replace_once`] with no card pulled, `events` seeing each step as it
/// starts.
fn replace_with_events(home: &Path, events: &dyn Fn(replace::Event<'_>)) -> cardvault::Result<()> {
    replace_in(home, &PullSchedule::counting(), events)
}

fn replace_in(
    home: &Path,
    sched: &std::sync::Arc<PullSchedule>,
    events: &dyn Fn(replace::Event<'_>),
) -> cardvault::Result<()> {
    let mut vault = Vault::open(&home.join("vault.sqlite"))?;
    let file = StateFile(home.join("replace-state.json"));
    let mut nbr = FaultyReader::new(SimReader::open(home, "r-alice-backup", "backup", None)?, sched.clone());
    let mut nr = FaultyReader::new(SimReader::open(home, "r-alice-main", "main", None)?, sched.clone());
    let mut br = FaultyReader::new(SimReader::open(home, "h-alice-backup", "backup", None)?, sched.clone());
    let mut new = client(&mut nr, false)?;
    let mut backup = client(&mut br, false)?;
    let mut new_backup = client(&mut nbr, false)?;
    let st = if file.path().exists() {
        file.load()?
    } else {
        let number = new.card_number()?;
        replace::start(&vault, "M-1001", &number, "lost")?
    };
    let signer = issuer_signer();
    let roots = openssl::x509::X509::stack_from_pem(&std::fs::read(test_root()).unwrap()).unwrap();
    let files = [home.join("record.cve")];
    let elements = vec![
        zeroize::Zeroizing::new(vec![0x33; 32]),
        zeroize::Zeroizing::new(vec![0x44; 32]),
    ];
    let job = ReplaceJob {
        pin: PIN.as_bytes(),
        issuer: Some(IssuerRights {
            signer: &signer,
            roots: &roots,
        }),
        authorization: None,
        files: Some(replace::FileRecovery {
            backup_pin: PIN.as_bytes(),
            files: &files,
            elements: Some(&elements),
        }),
        new_backup: Some(replace::NewBackup {
            backup_pin: PIN.as_bytes(),
            elements: &elements,
        }),
        safes: &wallet_safes(home),
    };
    let mut r = replace::Replacement { state: st, file };
    replace::run(
        &mut new,
        Some(&mut backup),
        Some(&mut new_backup),
        &mut vault,
        &mut r,
        &job,
        events,
    )
}

/// The job stopped at the start of each step (the process dies there: the
/// state file says every step before it is done) and run again: it resumes
/// at that step and ends as an uninterrupted run.
#[test]
fn the_replacement_stopped_at_each_step_and_resumed_ends_the_same() {
    let template = temp_dir("replace-steps");
    let (lost, _file, _plain) = story(&template);
    let at_backup = data_pages(&template, "h-alice-main");
    let item = deposit_story(&template);
    for stop in Step::ALL {
        let home = temp_dir(&format!("replace-step-{stop}"));
        copy_dir(&template, &home);
        // The stop: the run ends where step `stop` would begin.
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replace_with_events(&home, &|e| {
                if let replace::Event::Step(s, _) = e {
                    if s == stop {
                        std::panic::panic_any("stopped");
                    }
                }
            })
        }));
        assert!(stopped.is_err(), "{stop}: the run did not reach the step");
        let st = StateFile(home.join("replace-state.json")).load().unwrap();
        let at = Step::ALL.iter().position(|s| *s == stop).unwrap();
        for s in &Step::ALL[..at] {
            assert_ne!(
                st.step(*s).state,
                StepState::Pending,
                "{stop}: step {s} is not recorded as done"
            );
        }
        assert!(!st.finished);
        // Resumed: every step after the stop runs, and it ends the same.
        let seen = std::sync::Mutex::new(Vec::new());
        replace_with_events(&home, &|e| {
            if let replace::Event::Step(s, _) = e {
                seen.lock().unwrap().push(s);
            }
        })
        .unwrap_or_else(|e| panic!("{stop}: resume: {e}"));
        assert_eq!(
            seen.lock().unwrap().first(),
            Some(&stop),
            "{stop}: the resume began elsewhere"
        );
        let st = StateFile(home.join("replace-state.json")).load().unwrap();
        assert!(st.finished, "{stop}");
        assert_eq!(data_pages(&home, "r-alice-main"), at_backup, "{stop}: pages");
        assert_eq!(st.files[0].result, "ok", "{stop}: {:?}", st.files);
        assert!(st.new_backup.is_some(), "{stop}");
        check_withdrawn(&home, &item, &stop.to_string());
        let v = Vault::open(&home.join("vault.sqlite")).unwrap();
        let revoked = v
            .audit_entries(Some(&lost))
            .unwrap()
            .iter()
            .filter(|e| e.event == "card-revoked")
            .count();
        assert_eq!(revoked, 1, "{stop}");
        let replaced = v
            .audit_entries(Some(&lost))
            .unwrap()
            .iter()
            .filter(|e| e.event == "replace")
            .count();
        assert_eq!(replaced, 1, "{stop}");
    }
}

fn client(r: &mut dyn cardvault::transport::Reader, trace: bool) -> cardvault::Result<CardClient<'_>> {
    CardClient::open(
        r,
        cardvault::card::SessionOptions {
            trace,
            ..Default::default()
        },
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (p, name) = (e.path(), e.file_name());
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

#[test]
fn the_replacement_pulled_at_every_apdu_and_resumed_ends_the_same() {
    let template = temp_dir("replace-template");
    let (_lost, _file, plain) = story(&template);
    let at_backup = data_pages(&template, "h-alice-main");
    let item = deposit_story(&template);

    // The uninterrupted run: the pages, the file, every step done.
    let base = temp_dir("replace-count");
    copy_dir(&template, &base);
    let counting = PullSchedule::counting();
    replace_once(&base, &counting).unwrap();
    let n = counting.delivered();
    let end = StateFile(base.join("replace-state.json")).load().unwrap();
    assert!(end.finished);
    for s in [
        Step::MarkLost,
        Step::Backups,
        Step::Request,
        Step::Authorize,
        Step::Restore,
        Step::Value,
        Step::Files,
        Step::Wallet,
    ] {
        assert_eq!(end.step(s).state, StepState::Done, "{s}: {:?}", end.step(s));
    }
    assert_eq!(end.step(Step::NewBackup).state, StepState::Done);
    let check_end = |dir: &Path, what: &str| {
        let st = StateFile(dir.join("replace-state.json")).load().unwrap();
        assert!(st.finished, "{what}: {st:?}");
        assert!(st.restored.is_some(), "{what}");
        assert_eq!(data_pages(dir, "r-alice-main"), at_backup, "{what}: pages");
        assert_eq!(st.files.len(), 1, "{what}");
        assert_ne!(st.files[0].result, "failed", "{what}: {:?}", st.files[0]);
        assert_eq!(
            st.new_backup.as_deref(),
            Some(state(dir, "r-alice-backup").card_number.as_str()),
            "{what}"
        );
        let v = Vault::open(&dir.join("vault.sqlite")).unwrap();
        let revoked = v
            .audit_entries(Some(&st.lost_card))
            .unwrap()
            .iter()
            .filter(|e| e.event == "card-revoked")
            .count();
        assert_eq!(revoked, 1, "{what}: the lost card is revoked once");
        assert!(v.verify().unwrap().is_empty(), "{what}: vault verify");
        // The file opens with the new card.
        let mut r = SimReader::open(dir, "r-alice-main", "main", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        let mut out = Vec::new();
        let src = std::fs::File::open(dir.join("record.cve")).unwrap();
        let key_id = c.public_key().unwrap().map(|p| cardvault_proto::crypto::key_id(&p));
        cardvault::fileenc::decrypt(
            src,
            &mut out,
            key_id,
            cardvault::workflow::files::card_unwrapper(&mut c),
        )
        .unwrap();
        assert_eq!(out, plain, "{what}: file");
        drop(c);
        check_withdrawn(dir, &item, what);
    };
    check_end(&base, "uninterrupted");
    // Every APDU, both ways of pulling: the run fails as a removed card, and
    // the resumed run ends where the uninterrupted one did.
    let mut tried = 0;
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            let dir = temp_dir(&format!("replace-cut-{k}"));
            copy_dir(&template, &dir);
            let sched = PullSchedule::new(k, mode);
            match replace_once(&dir, &sched) {
                Err(cardvault::Error::CardRemoved(_)) => {}
                Err(e) => panic!("k={k} {mode:?}: the pull was reported as '{e}'"),
                Ok(()) => panic!("k={k} {mode:?}: success with the card pulled"),
            }
            replace_once(&dir, &PullSchedule::counting()).unwrap_or_else(|e| panic!("k={k} {mode:?}: resume: {e}"));
            check_end(&dir, &format!("k={k} {mode:?}"));
            tried += 1;
        }
    }
    assert_eq!(tried, 2 * n);
    println!("replace cut points: {tried} ({n} APDUs x 2 pull modes)");
}

/// `replace` through pcscd + vpcd for the story of `template`: the
/// replacement card in reader 0, the backup card in reader 1, the issuer's
/// signer at hand, the lost card's wallet item in the safe served at `safe`.
fn replace_pcsc(home: &Path, safe: &str, resume: bool, trace: bool) -> std::process::Command {
    use common::stack::{READER0, READER1};
    let mut c = cv(home);
    c.arg("--trust").arg(test_root());
    if trace {
        c.arg("--trace");
    }
    c.args([
        "replace",
        "--new",
        READER0,
        "--backup",
        READER1,
        "--pin",
        "env:P",
        "--backup-pin",
        "env:P",
    ])
    .arg("--files")
    .arg(home.join("record.cve"))
    .env("E", "33".repeat(32) + " " + &"44".repeat(32))
    .args(["--elements", "env:E", "--safe", safe])
    .args(issuer_args());
    if resume {
        c.arg("--resume");
    } else {
        c.args(["--holder", "M-1001"]);
    }
    c
}

#[test]
fn the_story_through_pcscd_and_the_simulator_killed_during_the_replacement_then_resumed() {
    use common::stack::PcscStack;
    use std::io::BufRead;
    let Some(stack) =
        PcscStack::start("the_story_through_pcscd_and_the_simulator_killed_during_the_replacement_then_resumed")
    else {
        return;
    };
    // Issued, duplicated, backed up and encrypted on embedded cards; the
    // replacement and the backup card are then served by applet-sim.
    let template = temp_dir("replace-pcsc");
    let (lost, _file, plain) = story(&template);
    let at_backup = data_pages(&template, "h-alice-main");
    // A wallet item of the lost card, deposited into a safe served on loopback.
    let safe_dir = init_safe(&template, "safe1");
    let item = {
        let server = SafeServer::start(&template, &safe_dir);
        deposit_item(&template, "sim:h-alice-main", "Museum day pass", 1200, &server.url)
    };
    let serve_safe = |home: &Path| SafeServer::start(home, &home.join("safe1"));
    let serve = |home: &Path| {
        stack.sim(&[
            (0, &card_path(home, "r-alice-main"), "main"),
            (1, &card_path(home, "h-alice-backup"), "backup"),
        ])
    };
    let check_end = |home: &Path, what: &str| {
        assert_eq!(data_pages(home, "r-alice-main"), at_backup, "{what}: pages");
        let v = Vault::open(&home.join("vault.sqlite")).unwrap();
        let revoked = v
            .audit_entries(Some(&lost))
            .unwrap()
            .iter()
            .filter(|e| e.event == "card-revoked")
            .count();
        assert_eq!(revoked, 1, "{what}");
        assert!(v.verify().unwrap().is_empty(), "{what}: vault verify");
        let st = StateFile(home.join("replace/M-1001.json")).load().unwrap();
        assert!(st.finished, "{what}");
        assert_ne!(st.files[0].result, "failed", "{what}: {:?}", st.files);
        // The item is on the new card, once, and nowhere else.
        let held: Vec<String> = state(home, "r-alice-main")
            .wallet
            .items
            .iter()
            .map(|h| cardvault_proto::to_hex(&cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap().id))
            .collect();
        assert_eq!(held, std::slice::from_ref(&item), "{what}: the new card's wallet");
        assert_eq!(st.wallet.len(), 1, "{what}: {:?}", st.wallet);
        assert_ne!(st.wallet[0].result, "not_withdrawn", "{what}: {:?}", st.wallet);
        assert_eq!(
            v.wallet_certificates(Some(&lost)).unwrap()[0].withdrawn_to.as_deref(),
            Some(st.new_card.as_str()),
            "{what}: the vault's copy"
        );
        assert_eq!(
            ledger(&home.join("safe1")),
            [(item.clone(), "withdrawn".to_string(), Some(st.new_card.clone()))],
            "{what}: the safe's ledger"
        );
    };

    // Uninterrupted, counting its APDUs.
    let home = temp_dir("replace-pcsc-whole");
    copy_dir(&template, &home);
    let apdus = {
        let _sim = serve(&home);
        let safe = serve_safe(&home);
        let o = run(replace_pcsc(&home, &safe.url, false, true).arg("--json"));
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let r = json(&o);
        assert_eq!(r["finished"], true, "{r}");
        assert_eq!(r["files"][0]["result"], "ok", "{r}");
        assert_eq!(r["wallet"][0]["result"], "withdrawn", "{r}");
        // The file opens with the new card, through pcscd.
        let out = home.join("record.out");
        let d = run(cv(&home)
            .arg("--trust")
            .arg(test_root())
            .args(["-r", common::stack::READER0, "decrypt", "--pin", "env:P"])
            .arg(home.join("record.cve"))
            .arg("-o")
            .arg(&out));
        assert!(d.status.success(), "{}", stderr(&d));
        assert_eq!(std::fs::read(&out).unwrap(), plain);
        stderr(&o).lines().filter(|l| l.starts_with("> ")).count()
    };
    check_end(&home, "uninterrupted");
    assert!(apdus >= 20, "the replacement took {apdus} APDUs");

    // The simulator killed when the k-th APDU goes out, at points spread
    // over the whole job; the resumed job ends the same.
    let mut interrupted = 0;
    for part in 1..=5 {
        let k = part * apdus / 6;
        let home = temp_dir(&format!("replace-pcsc-{k}"));
        copy_dir(&template, &home);
        let mut sim = serve(&home);
        let safe = serve_safe(&home);
        let mut child = replace_pcsc(&home, &safe.url, false, true)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut sent = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            sent += line.starts_with("> ") as usize;
            err.push_str(&line);
            err.push('\n');
            if sent == k {
                break;
            }
        }
        assert_eq!(sent, k, "the replacement ended before its APDU {k}: {err}");
        sim.kill();
        for line in lines {
            err.push_str(&line.unwrap());
            err.push('\n');
        }
        let status = child.wait().unwrap();
        assert_no_panic(err.as_bytes());
        if !status.success() {
            interrupted += 1;
            assert_eq!(status.code(), Some(3), "killed at APDU {k}: {err}");
            assert!(err.contains("replace --resume"), "killed at APDU {k}: {err}");
        }
        let _sim = serve(&home);
        let o = run(replace_pcsc(&home, &safe.url, true, false).arg("--json"));
        assert!(
            o.status.success(),
            "resumed after APDU {k}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert_eq!(json(&o)["finished"], true);
        check_end(&home, &format!("killed at APDU {k}"));
    }
    assert!(interrupted >= 4, "only {interrupted} of 5 runs were interrupted");
}

/// Issue holder file `rows` with a key1 column (cards `sim:PREFIX-HOLDER-ROLE`).
fn issue_with_key1(home: &Path, prefix: &str, profile: &str, rows: &str, domain: &[String]) {
    let csv = home.join(format!("{prefix}.csv"));
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
        .args(domain));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// Alice's pair duplicated (elements [`ELEMENTS`]), her backup card lost,
/// a new backup card `nb-alice-backup` issued with her key 1.
fn lost_backup_story(home: &Path) {
    let dir = home.join("domain");
    let pass = domain_init(home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    let key1 = "5a".repeat(32);
    issue_with_key1(
        home,
        "h",
        "pair",
        &format!("alice,123456,M-1001,2030-01,{key1}\n"),
        &domain,
    );
    let o = run(cv(home)
        .env("E", "11".repeat(32) + " " + &"22".repeat(32))
        .args([
            "duplicate",
            "--main",
            "sim:h-alice-main",
            "--backup",
            "sim:h-alice-backup",
        ])
        .args(["--pin", "env:P", "--backup-pin", "env:P", "--elements", "env:E"]));
    assert!(o.status.success(), "{}", stderr(&o));
    issue_with_key1(
        home,
        "nb",
        "backup",
        &format!("alice,123456,M-1001,2030-01,{key1}\n"),
        &domain,
    );
}

#[test]
fn a_lost_backup_card_replacement_pulled_at_every_apdu_and_run_again_ends_the_same() {
    use cardvault::workflow::duplicate;
    let template = temp_dir("replace-backup-template");
    lost_backup_story(&template);
    let lost = state(&template, "h-alice-backup").card_number.clone();
    let old_key = main_public(&template);
    let once = |home: &Path, sched: &std::sync::Arc<PullSchedule>| -> cardvault::Result<()> {
        let mut vault = Vault::open(&home.join("vault.sqlite"))?;
        let mut mr = FaultyReader::new(SimReader::open(home, "h-alice-main", "main", None)?, sched.clone());
        let mut br = FaultyReader::new(SimReader::open(home, "nb-alice-backup", "backup", None)?, sched.clone());
        let mut main = client(&mut mr, false)?;
        let mut backup = client(&mut br, false)?;
        let opts = duplicate::DuplicateOptions {
            main_pin: zeroize::Zeroizing::new(PIN.as_bytes().to_vec()),
            backup_pin: zeroize::Zeroizing::new(PIN.as_bytes().to_vec()),
            elements: vec![
                zeroize::Zeroizing::new(vec![0x11; 32]),
                zeroize::Zeroizing::new(vec![0x22; 32]),
            ],
            backup_gets_public_key: false,
        };
        duplicate::replace_backup(&mut main, &mut backup, &lost, &test_operator(), &opts, &mut vault).map(|_| ())
    };
    let check = |home: &Path, what: &str| {
        let key = main_public(home);
        assert_ne!(key, old_key, "{what}: not rotated");
        let v = Vault::open(&home.join("vault.sqlite")).unwrap();
        let revoked = v
            .audit_entries(Some(&lost))
            .unwrap()
            .iter()
            .filter(|e| e.event == "card-revoked")
            .count();
        assert_eq!(revoked, 1, "{what}");
        assert!(v.verify().unwrap().is_empty(), "{what}: vault verify");
        // The new backup card opens what is encrypted to the main card's key.
        let probe = [7u8; 32];
        let wrapped = cardvault_proto::crypto::wrap_key(&key, &probe, b"probe").unwrap();
        let mut r = SimReader::open(home, "nb-alice-backup", "backup", None).unwrap();
        let mut c = client(&mut r, false).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        assert_eq!(
            &c.unwrap_file_key(b"probe", &wrapped).unwrap()[..],
            &probe[..],
            "{what}"
        );
    };
    let base = temp_dir("replace-backup-count");
    copy_dir(&template, &base);
    let counting = PullSchedule::counting();
    once(&base, &counting).unwrap();
    check(&base, "uninterrupted");
    let n = counting.delivered();
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            let dir = temp_dir(&format!("replace-backup-cut-{k}"));
            copy_dir(&template, &dir);
            let sched = PullSchedule::new(k, mode);
            match once(&dir, &sched) {
                Err(cardvault::Error::CardRemoved(_)) => {}
                Err(e) => panic!("k={k} {mode:?}: the pull was reported as '{e}'"),
                Ok(()) => panic!("k={k} {mode:?}: success with the card pulled"),
            }
            once(&dir, &PullSchedule::counting()).unwrap_or_else(|e| panic!("k={k} {mode:?}: run again: {e}"));
            check(&dir, &format!("k={k} {mode:?}"));
        }
    }
    println!("replace-backup cut points: {} ({n} APDUs x 2 pull modes)", 2 * n);
}

#[test]
fn a_lost_backup_card_is_revoked_the_main_key_rotated_and_a_new_backup_card_duplicated() {
    let home = temp_dir("replace-backup");
    lost_backup_story(&home);
    let elements = "11".repeat(32) + " " + &"22".repeat(32);
    let dup = |backup: &str, extra: &[&str]| {
        run(cv(&home)
            .env("E", &elements)
            .args(["--json", "duplicate", "--main", "sim:h-alice-main", "--backup", backup])
            .args(["--pin", "env:P", "--backup-pin", "env:P", "--elements", "env:E"])
            .args(extra))
    };
    let lost = state(&home, "h-alice-backup").card_number.clone();
    let old_key = main_public(&home);
    // The old rule stands: a plain duplicate onto the new card is refused.
    let o = dup("sim:nb-alice-backup", &[]);
    assert!(!o.status.success(), "{}", stdout(&o));

    // Wrong lost card named: refused, nothing changed on the card or in the trail.
    let trail = stdout(&run(cv(&home).args(["--json", "audit"])));
    let issuer = test_issuer_dir();
    let o = dup(
        "sim:nb-alice-backup",
        &[
            "--replace-backup",
            "9999000011112222",
            "--issuer",
            issuer.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("duplicated onto card {lost}, not card 9999000011112222")),
        "{}",
        stderr(&o)
    );
    assert_eq!(main_public(&home), old_key);
    assert_eq!(stdout(&run(cv(&home).args(["--json", "audit"]))), trail);
    // Without the issuer: refused by the command line.
    let o = dup("sim:nb-alice-backup", &["--replace-backup", &lost]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(main_public(&home), old_key);

    // The lost card named, with the issuer: revoked, rotated, duplicated.
    let o = dup(
        "sim:nb-alice-backup",
        &["--replace-backup", &lost, "--issuer", issuer.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r = json(&o);
    assert_eq!(r["main_key_rotated"], true, "{r}");
    assert_eq!(r["lost_backup"], lost.as_str());
    assert_eq!(
        r["duplicate"]["backup_card"],
        state(&home, "nb-alice-backup").card_number.as_str()
    );
    let new_key = main_public(&home);
    assert_ne!(new_key, old_key, "the main key was not rotated");
    let o = run(cv(&home).args(["--json", "audit", "--card", &lost]));
    assert!(stdout(&o).contains("card-revoked"), "{}", stdout(&o));
    assert_eq!(
        json(&run(cv(&home).args(["--json", "holder", "show", "M-1001"])))["holder"]["cards"][1]["state"],
        "lost"
    );
    // What is encrypted to the main card now opens with the new backup card
    // and not with the lost one.
    std::fs::write(home.join("new.txt"), b"after the rotation").unwrap();
    let o = run(cv(&home)
        .args(["encrypt", "--to", "sim:h-alice-main"])
        .arg(home.join("new.txt"))
        .arg("-o")
        .arg(home.join("new.cve")));
    assert!(o.status.success(), "{}", stderr(&o));
    let decrypt = |card: &str, out: &str| {
        run(cv(&home)
            .args(["-r", card, "decrypt", "--pin", "env:P"])
            .arg(home.join("new.cve"))
            .arg("-o")
            .arg(home.join(out)))
    };
    assert!(decrypt("sim:nb-alice-backup", "by-new.txt").status.success());
    assert_eq!(std::fs::read(home.join("by-new.txt")).unwrap(), b"after the rotation");
    assert!(!decrypt("sim:h-alice-backup", "by-lost.txt").status.success());

    // Again: nothing to rotate, the duplicate stands, the key stays.
    let o = dup(
        "sim:nb-alice-backup",
        &["--replace-backup", &lost, "--issuer", issuer.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["main_key_rotated"], false);
    assert_eq!(main_public(&home), new_key);
}

/// The public main key of alice's main card.
fn main_public(home: &Path) -> Vec<u8> {
    state(home, "h-alice-main").main_key.as_ref().unwrap().public.clone()
}

#[test]
fn a_holder_without_a_backup_is_told_that_no_page_could_be_restored() {
    let home = temp_dir("replace-nobackup");
    let dir = home.join("domain");
    let pass = domain_init(&home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    issue_holders(&home, "h", "main", "bob,123456,M-2002,2030-01\n", &domain);
    issue_holders(&home, "r", "main", "bob,123456,M-2002,2030-01\n", &domain);
    let before = memory(&home, "r-bob-main");
    let o = run(cv(&home)
        .args([
            "--json",
            "replace",
            "--holder",
            "bob",
            "--new",
            "sim:r-bob-main",
            "--pin",
            "env:P",
        ])
        .args(issuer_args()));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r = json(&o);
    assert_eq!(r["finished"], true, "{r}");
    assert_eq!(r["restored"], serde_json::Value::Null);
    for s in ["request", "authorize", "restore", "value"] {
        let step = r["steps"].as_array().unwrap().iter().find(|x| x["step"] == s).unwrap();
        assert_eq!(step["state"], "skipped", "{s}: {r}");
    }
    let not = r["not_restored"].as_array().unwrap();
    assert!(
        not.iter()
            .any(|l| l.as_str().unwrap().contains("the vault has no complete backup of card")),
        "{r}"
    );
    assert_eq!(
        memory(&home, "r-bob-main"),
        before,
        "nothing was written to the new card"
    );
    let text = stdout(&run(cv(&home).args([
        "replace",
        "--holder",
        "M-2002",
        "--new",
        "sim:r-bob-main",
        "--pin",
        "env:P",
    ])));
    assert!(text.contains("restored:\n  nothing"), "{text}");
}

/// Load an item of `name` worth `price` onto the card at `reader` (the
/// issuer's signer at hand) and deposit it into `safe`; returns its id.
fn deposit_item(home: &Path, reader: &str, name: &str, price: u32, safe: &str) -> String {
    let o = run(cv(home)
        .env("ISSUER", ISSUER_KEY_HEX.trim())
        .args(["--json", "-r", reader, "wallet", "load", "--pin", "env:P"])
        .args(["--issuer-key", "env:ISSUER", "--signer-cert"])
        .arg(test_signer_cert())
        .args(["--kind", "ticket", "--name", name, "--unit-price", &price.to_string()]));
    assert!(o.status.success(), "load: {}", stderr(&o));
    let id = json(&o)["item"]["id"].as_str().unwrap().to_string();
    let o = run(cv(home).args(["-r", reader, "wallet", "deposit", &id, "--pin", "env:P", "--safe", safe]));
    assert!(o.status.success(), "deposit: {}", stderr(&o));
    id
}

/// The ids of the items in the wallet of the card at `reader`.
fn wallet_ids(home: &Path, reader: &str) -> Vec<String> {
    let o = run(cv(home).args(["--json", "-r", reader, "wallet", "list"]));
    assert!(o.status.success(), "wallet list: {}", stderr(&o));
    json(&o)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn ledger(safe: &Path) -> Vec<(String, String, Option<String>)> {
    cardvault::safe::Safe::open(safe)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|e| (e.item_id, e.state, e.target_card))
        .collect()
}

#[test]
fn the_replacement_withdraws_the_lost_card_s_wallet_items_from_its_safes_once() {
    let home = temp_dir("replace-wallet");
    let (lost, _file, _plain) = story(&home);
    let at_backup = data_pages(&home, "h-alice-main");
    let safe1 = init_safe(&home, "safe1");
    let safe2 = init_safe(&home, "safe2");
    let s1 = safe1.to_str().unwrap();
    let ticket = deposit_item(&home, "sim:h-alice-main", "Museum day pass", 1200, s1);
    let other = deposit_item(&home, "sim:h-alice-main", "Concert", 3000, safe2.to_str().unwrap());
    assert!(wallet_ids(&home, "sim:h-alice-main").is_empty());
    assert!(wallet_ids(&home, "sim:r-alice-main").is_empty());
    let replace = || {
        run(cv(&home)
            .args(["--json", "replace", "--holder", "M-1001", "--new", "sim:r-alice-main"])
            .args(["--pin", "env:P", "--safe", s1])
            .args(issuer_args()))
    };
    let o = replace();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r = json(&o);
    assert_eq!(r["finished"], true, "{r}");
    assert_eq!(r["steps"][2]["step"], "wallet");
    assert_eq!(r["steps"][2]["state"], "done", "{r}");
    assert_eq!(data_pages(&home, "r-alice-main"), at_backup);
    // The item of the safe given is on the new card, withdrawn in the
    // safe's ledger to it; the other safe's item is reported, with why.
    let new_card = r["new_card"].as_str().unwrap().to_string();
    assert_eq!(wallet_ids(&home, "sim:r-alice-main"), std::slice::from_ref(&ticket));
    assert_eq!(
        ledger(&safe1),
        [(ticket.clone(), "withdrawn".to_string(), Some(new_card.clone()))]
    );
    assert_eq!(ledger(&safe2)[0].1, "stored");
    let w = r["wallet"].as_array().unwrap();
    assert_eq!(w.len(), 2, "{r}");
    assert_eq!(
        (w[0]["item"].as_str(), w[0]["result"].as_str()),
        (Some(ticket.as_str()), Some("withdrawn"))
    );
    assert_eq!(
        (w[1]["item"].as_str(), w[1]["result"].as_str()),
        (Some(other.as_str()), Some("not_withdrawn"))
    );
    assert!(
        w[1]["reason"].as_str().unwrap().contains("was not given (--safe)"),
        "{r}"
    );
    let said = |key: &str, what: &str| {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("wallet: ") && l.as_str().unwrap().contains(what))
    };
    assert!(said("restored_summary", &ticket), "{r}");
    assert!(said("not_restored", &other), "{r}");
    let v = Vault::open(&home.join("vault.sqlite")).unwrap();
    let copies = v.wallet_certificates(Some(&lost)).unwrap();
    assert_eq!(copies[0].withdrawn_to.as_deref(), Some(new_card.as_str()));
    assert_eq!(copies[1].withdrawn_to, None);
    drop(v);

    // Run again: nothing changes (card, safes, vault), the same report.
    let card_before = state(&home, "r-alice-main");
    let (l1, l2) = (ledger(&safe1), ledger(&safe2));
    let o = replace();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["wallet"], r["wallet"]);
    assert_eq!(state(&home, "r-alice-main").memory, card_before.memory);
    assert_eq!(state(&home, "r-alice-main").wallet.items, card_before.wallet.items);
    assert_eq!((ledger(&safe1), ledger(&safe2)), (l1, l2));
    assert_eq!(wallet_ids(&home, "sim:r-alice-main"), [ticket]);
}

/// What a job keeps between its steps on one card: a PIN verified in the
/// open secure session is not sent again, a new session (the card's new
/// session forgot it) verifies again, and facts that keep nothing send
/// every VERIFY, as a standalone command does.
#[test]
fn a_verified_pin_is_kept_only_in_the_secure_session_it_was_verified_in() {
    use cardvault::workflow::CardFacts;
    let home = temp_dir("replace-facts");
    let mut r = SimReader::open(&home, "facts", "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    let pin = PIN.as_bytes();
    let mut facts = CardFacts::kept();
    facts.verify_pin(&mut c, pin).unwrap();
    let after_first = c.stats().apdus;
    facts.verify_pin(&mut c, pin).unwrap();
    assert_eq!(c.stats().apdus, after_first, "no second VERIFY in the same session");
    c.write_memory(FIRST_DATA_PAGE, b"kept").unwrap();
    // A new secure session: the card forgot the PIN, and so do the facts.
    c.open_secure_session().unwrap();
    let opened = c.stats().apdus;
    facts.verify_pin(&mut c, pin).unwrap();
    assert_eq!(c.stats().apdus, opened + 1, "VERIFY again in the new session");
    c.write_memory(FIRST_DATA_PAGE, b"again").unwrap();
    // Nothing kept: every VERIFY goes to the card.
    let mut none = CardFacts::none();
    let before = c.stats().apdus;
    none.verify_pin(&mut c, pin).unwrap();
    none.verify_pin(&mut c, pin).unwrap();
    assert_eq!(c.stats().apdus, before + 2);
    // A wrong PIN is never taken as verified.
    let mut fresh = CardFacts::kept();
    assert!(fresh.verify_pin(&mut c, b"999999").is_err());
    let before = c.stats().apdus;
    assert!(fresh.verify_pin(&mut c, b"999999").is_err());
    assert_eq!(
        c.stats().apdus,
        before + 1,
        "a refused PIN is sent again, not remembered"
    );
    fresh.verify_pin(&mut c, pin).unwrap();
}
