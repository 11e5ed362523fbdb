//! The terminal against a hostile card, in process: a reader whose card
//! turns hostile at a chosen APDU (`transport::hostile::HostileReader`) and
//! then answers with one class of bad answer to everything. Every workflow
//! (status, issue, duplicate, encrypt, decrypt, recover, backup, restore,
//! load, destroy, release, store) is
//! run with every class from every APDU on; each run must end without a
//! panic, with a one-line error of a documented exit code (or succeed where
//! the bad answer is harmless), within bounded APDUs and bytes. The issue's
//! own cases are tests of their own below.

mod common;

use cardvault::apdu::{Command, MAX_GET_RESPONSE_ROUNDS, MAX_RESPONSE};
use cardvault::card::CardClient;
use cardvault::transport::hostile::{answers, Answer, HostileReader, Seen};
use cardvault::transport::sim::SimReader;
use cardvault::transport::Reader;
use cardvault::vault::Vault;
use cardvault::workflow::{backup as wb, duplicate, files, issue, keygroup, purse};
use cardvault_proto::ins;
use common::claims::{
    HOSTILE_BYTES_PER_COMMAND, HOSTILE_CLASSES, HOSTILE_MAX_APDUS_OVER_CLEAN, HOSTILE_RUNS, HOSTILE_WORKFLOWS,
};
use common::*;
use std::path::Path;
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

fn client(r: &mut dyn Reader) -> cardvault::Result<CardClient<'_>> {
    CardClient::open(r, cardvault::card::SessionOptions::default())
}

/// A class of bad answers: what a hostile card says to every command once
/// it turned hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `9000` and no data.
    EmptyOk,
    /// `61 10` and no data, for ever (GET RESPONSE included).
    MoreDataForever,
    /// One byte and `61 01`, for ever.
    DripForever,
    /// `6C 10`, for ever.
    WrongLeForever,
    /// 64 KiB of nested constructed data objects and `9000`.
    NestedTemplates,
    /// 65 536 bytes of junk and `9000`.
    Junk64K,
    /// Fewer than two bytes: no status word.
    NoStatusWord,
    /// 300 bytes of junk and `6310` (more backup blocks), for ever.
    MoreBlocksForever,
}

const CLASSES: [Class; 8] = [
    Class::EmptyOk,
    Class::MoreDataForever,
    Class::DripForever,
    Class::WrongLeForever,
    Class::NestedTemplates,
    Class::Junk64K,
    Class::NoStatusWord,
    Class::MoreBlocksForever,
];

impl Class {
    fn answer(self) -> Vec<u8> {
        match self {
            Class::EmptyOk => vec![0x90, 0x00],
            Class::MoreDataForever => vec![0x61, 0x10],
            Class::DripForever => vec![0xAA, 0x61, 0x01],
            Class::WrongLeForever => vec![0x6C, 0x10],
            Class::NestedTemplates => answers::with_sw(&answers::nested_templates(16000), 0x9000),
            Class::Junk64K => answers::with_sw(&vec![0x5A; MAX_RESPONSE], 0x9000),
            Class::NoStatusWord => vec![0x90],
            Class::MoreBlocksForever => answers::with_sw(&[0x33; 300], 0x6310),
        }
    }
}

/// One run: the card named `hostile` turns `class` at its `from`-th APDU.
struct Run<'a> {
    dir: &'a Path,
    hostile: &'a str,
    class: Class,
    from: u64,
    seen: Arc<Seen>,
}

impl Run<'_> {
    fn reader(&self, name: &str, profile: &str) -> Box<dyn Reader + 'static> {
        let inner = sim(self.dir, name, profile);
        if name != self.hostile {
            return Box::new(inner);
        }
        let (class, from) = (self.class, self.from);
        let mut n = 0u64;
        Box::new(HostileReader::new(inner, self.seen.clone(), move |_cmd: &[u8]| {
            n += 1;
            if n >= from {
                Answer::Reply(class.answer())
            } else {
                Answer::Genuine
            }
        }))
    }
}

type Workflow = fn(&Run<'_>) -> cardvault::Result<()>;

fn holder() -> issue::Holder {
    issue::Holder {
        id: "alice".into(),
        pin: Zeroizing::new(PIN.to_vec()),
        member_number: Some("M-1".into()),
        expiry: Some("2030-01".into()),
        key1: None,
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

fn dup_opts() -> duplicate::DuplicateOptions {
    duplicate::DuplicateOptions {
        main_pin: Zeroizing::new(PIN.to_vec()),
        backup_pin: Zeroizing::new(PIN.to_vec()),
        elements: vec![Zeroizing::new(vec![2u8; 32]), Zeroizing::new(vec![3u8; 32])],
        backup_gets_public_key: false,
    }
}

fn vault(dir: &Path) -> Vault {
    Vault::open(&dir.join("vault.sqlite")).unwrap()
}

fn run_status(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("main", "main");
    let mut c = client(rd.as_mut())?;
    c.overview().map(|_| ())
}

fn run_issue(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("blank", "blank");
    let mut c = client(rd.as_mut())?;
    issue::personalize(&mut c, &holder(), issue::Role::Main, &[7u8; 32], &issue_opts()).map(|_| ())
}

fn run_duplicate(r: &Run<'_>) -> cardvault::Result<()> {
    let (mut m, mut b) = (r.reader("dm", "main"), r.reader("db", "main"));
    let mut v = vault(r.dir);
    let (mut m, mut b) = (client(m.as_mut())?, client(b.as_mut())?);
    duplicate::duplicate(&mut m, &mut b, &dup_opts(), &mut v).map(|_| ())
}

fn run_encrypt(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("main", "main");
    let public = client(rd.as_mut())?
        .public_key()?
        .ok_or_else(|| cardvault::Error::Usage("no key".into()))?;
    let (plain, enc) = (r.dir.join("plain"), r.dir.join("out.cve"));
    std::fs::write(&plain, b"hostile").unwrap();
    cardvault::fileenc::encrypt_file(&plain, &enc, &public, true)
        .map(|_| ())
        .map_err(|e| files::file_error(&enc, e))
}

fn run_decrypt(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("main", "main");
    let mut c = client(rd.as_mut())?;
    c.verify_pin(PIN)?;
    let f = std::fs::File::open(r.dir.join("f.cve")).unwrap();
    let mut out = Vec::new();
    cardvault::fileenc::decrypt(f, &mut out, None, files::card_unwrapper(&mut c))
        .map_err(|e| files::file_error(&r.dir.join("f.cve"), e))?;
    assert_eq!(out, b"a file for the main card", "decrypted wrongly without an error");
    Ok(())
}

fn run_recover(r: &Run<'_>) -> cardvault::Result<()> {
    let (mut b, mut n) = (r.reader("backup", "main"), r.reader("new", "main"));
    let (mut b, mut n) = (client(b.as_mut())?, client(n.as_mut())?);
    b.verify_pin(PIN)?;
    n.verify_pin(PIN)?;
    let public = n
        .public_key()?
        .ok_or_else(|| cardvault::Error::Usage("no key".into()))?;
    files::recover_file(&mut b, &mut n, &public, &r.dir.join("f.cve")).map(|_| ())
}

fn run_backup(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("main", "main");
    let mut c = client(rd.as_mut())?;
    c.verify_pin(PIN)?;
    wb::backup(&mut c, &mut vault(r.dir), true, &|_, _| {}).map(|_| ())
}

fn run_restore(r: &Run<'_>) -> cardvault::Result<()> {
    let mut v = vault(r.dir);
    let number = applet_sim::state::Store::peek(&cardvault::transport::sim::card_path(r.dir, "main"))
        .unwrap()
        .card_number
        .clone();
    let last = v.latest_backup(&number)?.expect("a backup");
    let chain = v.chain_to(&last)?;
    let mut rd = r.reader("main", "main");
    let mut c = client(rd.as_mut())?;
    c.verify_pin(PIN)?;
    let plan = wb::RestorePlan {
        chain,
        authorization: None,
        override_rollback: false,
    };
    wb::restore(&mut c, &mut v, &plan, &|_, _| {}).map(|_| ())
}

/// A value load: GET LOAD CHALLENGE, then CREDIT signed with the issuer key.
fn run_load(r: &Run<'_>) -> cardvault::Result<()> {
    let mut rd = r.reader("main", "main");
    let mut c = client(rd.as_mut())?;
    purse::credit_with_issuer_key(&mut c, PIN, 1, 700, &issuer_signer()).map(|_| ())
}

/// DESTROY KEY on the backup card that imported the main card's key: the
/// source card and the take-out counter from the cards' state.
fn run_destroy(r: &Run<'_>) -> cardvault::Result<()> {
    let peek = |name: &str| applet_sim::state::Store::peek(&cardvault::transport::sim::card_path(r.dir, name)).unwrap();
    let source = peek("backup")
        .main_key
        .as_ref()
        .expect("an imported key")
        .source_card
        .clone();
    let counter = peek("main").export.counter;
    let mut v = vault(r.dir);
    let mut rd = r.reader("backup", "main");
    let mut c = client(rd.as_mut())?;
    keygroup::destroy(&mut c, &mut v, PIN, &source, counter).map(|_| ())
}

/// RELEASE DUPLICATE on the main card "rm" with the signed receipt its
/// backup card "rb" answered to DESTROY KEY (made with the template).
fn run_release(r: &Run<'_>) -> cardvault::Result<()> {
    let proof = release_proof(r.dir);
    let mut v = vault(r.dir);
    let mut rd = r.reader("rm", "main");
    let mut c = client(rd.as_mut())?;
    keygroup::release(&mut c, &mut v, &test_operator(), Some(&proof)).map(|_| ())
}

/// The receipt file of the template's DESTROY KEY on "rb".
fn release_proof(dir: &Path) -> keygroup::DestroyReceipt {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("rb-receipt.json")).unwrap()).unwrap();
    let hex = |k: &str| cardvault_proto::from_hex(v[k].as_str().unwrap()).unwrap();
    keygroup::DestroyReceipt {
        backup_card: v["backup_card"].as_str().unwrap().into(),
        source_card: v["source_card"].as_str().unwrap().into(),
        receipt: cardvault_proto::takeout::DestroyReceipt::parse(&hex("receipt")).unwrap(),
        certificate: hex("certificate"),
    }
}

/// The storing exchange on the services card "svc": STORING REQUEST, the
/// test issuer and provider sign, STORE DATA UNDER AUTHORIZATION.
fn run_store(r: &Run<'_>) -> cardvault::Result<()> {
    use applet_sim::test_registrars as reg;
    use cardvault::workflow::storing::{self, PartyCredentials};
    use cardvault_proto::storing::{Party, RegistrarRoots};
    let data = b"a record for the medical application";
    let sdi = storing::store_info(4, data, None)?;
    let mut v = vault(r.dir);
    let mut rd = r.reader("svc", "services");
    let mut c = client(rd.as_mut())?;
    let req = storing::request(&mut c, PIN, &sdi)?;
    let issuer = PartyCredentials::from_pem(Party::Issuer, reg::ISSUER_KEY_PEM, reg::ISSUER_PEM)?;
    let provider = PartyCredentials::from_pem(Party::Provider, reg::PROVIDER_KEY_PEM, reg::PROVIDER_PEM)?;
    let issuer_roots = [applet_sim::test_issuer::root()];
    let roots = RegistrarRoots {
        issuer_registrar: openssl::x509::X509::from_pem(reg::ISSUER_REGISTRAR_PEM).unwrap(),
        data_registrar: openssl::x509::X509::from_pem(reg::DATA_REGISTRAR_PEM).unwrap(),
    };
    let sar = storing::countersign(&req, &issuer, &issuer_roots)?;
    let sa = storing::authorize(&sar, &provider, &roots, &issuer_roots)?;
    storing::apply(&mut c, PIN, &sa, Some(data), &mut v).map(|_| ())
}

const WORKFLOWS: [(&str, Workflow); 12] = [
    ("status", run_status),
    ("issue", run_issue),
    ("duplicate", run_duplicate),
    ("encrypt", run_encrypt),
    ("decrypt", run_decrypt),
    ("recover", run_recover),
    ("backup", run_backup),
    ("restore", run_restore),
    ("load", run_load),
    ("destroy", run_destroy),
    ("release", run_release),
    ("store", run_store),
];

/// Cards for every workflow: "main" (issued, duplicated onto "backup", with a
/// file encrypted to it and a backup in the vault), "new" (a replacement
/// main card with its own key), "blank", "dm"/"db" (issued, not yet
/// duplicated), "rm"/"rb" (a take-out from "rm" imported by "rb", which then
/// destroyed it and signed the receipt), "svc" (a services card).
fn template() -> TempDir {
    let t = temp_dir("hostile-template");
    let plain = |name: &str, profile: &str| sim(&t, name, profile);
    let domain = test_domain_key();
    for (name, role) in [
        ("main", issue::Role::Main),
        ("backup", issue::Role::Backup),
        ("new", issue::Role::Main),
        ("dm", issue::Role::Main),
        ("db", issue::Role::Backup),
        ("rm", issue::Role::Main),
        ("rb", issue::Role::Backup),
    ] {
        let mut r = SimReader::open(&t, name, "blank", None).unwrap();
        // In the issuer's SCP11a session, with a domain key: "main" makes backups.
        let opts = issue::IssueOptions {
            issuer: Some(test_operator()),
            domain: Some(domain.clone()),
            ..issue_opts()
        };
        issue::personalize(&mut client(&mut r).unwrap(), &holder(), role, &[7u8; 32], &opts).unwrap();
    }
    plain("blank", "blank");
    {
        let (mut m, mut b) = (plain("main", "main"), plain("backup", "main"));
        duplicate::duplicate(
            &mut client(&mut m).unwrap(),
            &mut client(&mut b).unwrap(),
            &dup_opts(),
            &mut vault(&t),
        )
        .unwrap();
        let public = client(&mut m).unwrap().public_key().unwrap().unwrap();
        std::fs::write(t.join("plain"), b"a file for the main card").unwrap();
        cardvault::fileenc::encrypt_file(&t.join("plain"), &t.join("f.cve"), &public, false).unwrap();
        let mut c = client(&mut m).unwrap();
        c.verify_pin(PIN).unwrap();
        wb::backup(&mut c, &mut vault(&t), true, &|_, _| {}).unwrap();
    }
    {
        let (mut m, mut b) = (plain("rm", "main"), plain("rb", "main"));
        let (mut m, mut b) = (client(&mut m).unwrap(), client(&mut b).unwrap());
        for c in [&mut m, &mut b] {
            c.verify_pin(PIN).unwrap();
            c.write_key_element(2, &[2u8; 32]).unwrap();
            c.write_key_element(3, &[3u8; 32]).unwrap();
        }
        m.generate_key_pair().unwrap();
        let blob = m.take_out_key(&state(&t, "rb").certificate).unwrap();
        b.import_key(&blob, false).unwrap();
        let source = m.card_number().unwrap();
        let counter = state(&t, "rm").export.counter;
        let p = keygroup::destroy(&mut b, &mut vault(&t), PIN, &source, counter).unwrap();
        let v = serde_json::json!({
            "backup_card": p.backup_card,
            "source_card": p.source_card,
            "receipt": cardvault_proto::to_hex(&p.receipt.encode()),
            "certificate": cardvault_proto::to_hex(&p.certificate),
        });
        std::fs::write(t.join("rb-receipt.json"), v.to_string()).unwrap();
    }
    plain("svc", "services");
    {
        let mut n = plain("new", "main");
        let mut c = client(&mut n).unwrap();
        c.verify_pin(PIN).unwrap();
        c.write_key_element(2, &[4u8; 32]).unwrap();
        c.write_key_element(3, &[5u8; 32]).unwrap();
        c.generate_key_pair().unwrap();
    }
    t
}

/// The card each workflow's hostile runs make hostile.
fn hostile_card(workflow: &str) -> &'static str {
    match workflow {
        "issue" => "blank",
        "duplicate" => "dm",
        "recover" | "destroy" => "backup",
        "release" => "rm",
        "store" => "svc",
        _ => "main",
    }
}

#[test]
fn every_workflow_against_every_class_of_bad_answer_from_every_apdu() {
    let template = template();
    let (mut runs, mut worst_extra, mut worst_bytes) = (0u64, 0u64, 0u64);
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    for (name, workflow) in WORKFLOWS {
        // The clean run: how many APDUs the hostile card gets.
        let dir = temp_dir(&format!("hostile-{name}-clean"));
        copy_dir(&template, &dir);
        let clean = Run {
            dir: &dir,
            hostile: hostile_card(name),
            class: Class::EmptyOk,
            from: u64::MAX,
            seen: Seen::new(),
        };
        workflow(&clean).unwrap_or_else(|e| panic!("{name}: the clean run failed: {e}"));
        let n = clean.seen.apdus();
        assert!(n > 0, "{name}: the hostile card got no APDU");
        for class in CLASSES {
            for from in 1..=n {
                let dir = temp_dir(&format!("hostile-{name}-{from}"));
                copy_dir(&template, &dir);
                let run = Run {
                    dir: &dir,
                    hostile: hostile_card(name),
                    class,
                    from,
                    seen: Seen::new(),
                };
                let what = format!("{name}, {class:?} from APDU {from} of {n}");
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| workflow(&run)))
                    .unwrap_or_else(|_| panic!("{what}: panicked"));
                runs += 1;
                let outcome = match &r {
                    Ok(()) => {
                        println!("ok: {what}");
                        "ok".to_string()
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(
                            [4, 5, 6].contains(&e.exit_code()),
                            "{what}: exit code {} for '{msg}'",
                            e.exit_code()
                        );
                        assert!(!msg.contains('\n') && !msg.is_empty(), "{what}: '{msg}'");
                        format!("exit {}", e.exit_code())
                    }
                };
                *outcomes.entry(outcome).or_default() += 1;
                let extra = run.seen.apdus().saturating_sub(n);
                assert!(
                    extra <= HOSTILE_MAX_APDUS_OVER_CLEAN,
                    "{what}: {} APDUs, {extra} more than the clean run",
                    run.seen.apdus()
                );
                // Per command of the clean run: at most one whole answer.
                let per_command = run.seen.bytes_in() / n;
                assert!(
                    per_command <= HOSTILE_BYTES_PER_COMMAND,
                    "{what}: {} bytes received over {n} commands",
                    run.seen.bytes_in()
                );
                worst_extra = worst_extra.max(extra);
                worst_bytes = worst_bytes.max(per_command);
            }
        }
    }
    println!(
        "hostile card: {} workflows x {} classes, {runs} runs, outcomes {outcomes:?}, at most {worst_extra} APDUs over \
         the clean run and {worst_bytes} bytes received per command of the clean run",
        WORKFLOWS.len(),
        CLASSES.len()
    );
    assert_eq!(
        (WORKFLOWS.len(), CLASSES.len(), runs),
        (HOSTILE_WORKFLOWS, HOSTILE_CLASSES, HOSTILE_RUNS)
    );
}

// The issue's cases, one test each.

fn status_against(answer: impl FnMut(&[u8]) -> Answer) -> (cardvault::Error, Arc<Seen>) {
    let dir = temp_dir("hostile-case");
    let seen = Seen::new();
    let mut r = HostileReader::new(sim(&dir, "c", "main"), seen.clone(), answer);
    let e = client(&mut r).and_then(|mut c| c.overview().map(|_| ())).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    (e, seen)
}

fn genuine_select(cmd: &[u8]) -> bool {
    cmd.get(1) == Some(&ins::SELECT)
}

#[test]
fn a_card_answering_61_10_without_data_to_every_get_response_is_refused_after_one_round() {
    let (e, seen) = status_against(|cmd| {
        if genuine_select(cmd) {
            Answer::Genuine
        } else {
            Answer::Reply(vec![0x61, 0x10])
        }
    });
    assert_eq!(e.exit_code(), 6, "{e}");
    assert!(e.to_string().contains("GET RESPONSE with no data"), "{e}");
    // SELECT, GET DATA, one GET RESPONSE.
    assert_eq!(seen.apdus(), 3);
    // Data a byte at a time: refused after the round limit.
    let (e, seen) = status_against(|cmd| {
        if genuine_select(cmd) {
            Answer::Genuine
        } else {
            Answer::Reply(vec![0xAA, 0x61, 0x01])
        }
    });
    assert_eq!(e.exit_code(), 6, "{e}");
    assert_eq!(seen.apdus(), 2 + MAX_GET_RESPONSE_ROUNDS as u64);
}

#[test]
fn a_64k_answer_of_nested_templates_is_refused_without_recursion() {
    // A small stack, as a worker thread might have: the depth limit, not the stack, ends it.
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            status_against(|cmd| {
                if genuine_select(cmd) {
                    Answer::Genuine
                } else {
                    Answer::Reply(answers::with_sw(&answers::nested_templates(16000), 0x9000))
                }
            })
        })
        .unwrap();
    let (e, seen) = t.join().expect("no stack overflow");
    assert_eq!(e.exit_code(), 6, "{e}");
    assert!(e.to_string().contains("nested deeper than 4 levels"), "{e}");
    assert_eq!(seen.apdus(), 2);
}

#[test]
fn a_key_group_size_of_9_is_malformed_not_a_shift_overflow() {
    let dir = temp_dir("hostile-kg");
    let genuine = {
        let mut r = sim(&dir, "c", "main");
        let mut c = client(&mut r).unwrap();
        c.channel().exec(&Command::card_status()).unwrap()
    };
    let at = genuine
        .windows(3)
        .position(|w| w == [0xDF, 0x10, 0x02])
        .expect("key group status in the template");
    let mut forged = genuine.clone();
    forged[at + 3] = 9;
    forged[at + 4] = 0xFF;
    let (e, seen) = status_against(move |cmd| {
        if cmd.get(1) == Some(&ins::GET_DATA) {
            Answer::Reply(answers::with_sw(&forged, 0x9000))
        } else {
            Answer::Genuine
        }
    });
    assert_eq!(e.exit_code(), 6, "{e}");
    assert!(e.to_string().contains("key group size 9 is not 1 to 8"), "{e}");
    assert_eq!(seen.apdus(), 2);
}

#[test]
fn a_card_answering_9000_without_data_to_everything_is_not_a_cardvault_card() {
    let (e, seen) = status_against(|_| Answer::Reply(vec![0x90, 0x00]));
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(e.kind(), "not_cardvault");
    assert!(
        e.to_string().contains("is not a cardvault card") && e.to_string().contains("9000 with no data"),
        "{e}"
    );
    // Nothing after SELECT.
    assert_eq!(seen.apdus(), 1);
    // Another applet's FCI, a bare 6D00, a malformed answer: the same.
    for answer in [
        answers::with_sw(&[0x6F, 0x08, 0x84, 0x06, 0xA0, 0, 0, 0, 0x03, 0x08], 0x9000),
        vec![0x6D, 0x00],
        vec![0x61, 0x10],
    ] {
        let (e, seen) = status_against(move |_| Answer::Reply(answer.clone()));
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("is not a cardvault card"), "{e}");
        assert!(seen.apdus() <= 2);
    }
}

#[test]
fn backup_data_answering_6310_for_ever_stops_at_what_the_header_announced() {
    let dir = temp_dir("hostile-bk");
    drop(sim(&dir, "c", "main"));
    for (junk, limit) in [(300usize, 42u64), (0, 6)] {
        let seen = Seen::new();
        // The card itself is hostile: its applet answers BACKUP DATA with
        // 6310 for ever, inside a secure channel it runs correctly.
        let mut card = sim(&dir, "c", "main");
        card.card_mut().set_hostile(Some(Box::new(move |cmd| {
            (cmd.ins == ins::BACKUP_DATA).then(|| (vec![0x33; junk], 0x6310))
        })));
        let mut r = HostileReader::new(card, seen.clone(), |_: &[u8]| Answer::Genuine);
        let mut c = client(&mut r).unwrap();
        c.verify_pin(PIN).unwrap();
        let mut v = vault(&dir);
        let e = wb::backup(&mut c, &mut v, true, &|_, _| {}).unwrap_err();
        assert_eq!(e.exit_code(), 6, "{e}");
        assert!(!e.to_string().contains('\n'));
        // SELECT, GET DATA and INTERNAL AUTHENTICATE (the secure channel),
        // VERIFY, BACKUP and the BACKUP DATAs the header's 256 pages allow.
        assert!(seen.apdus() <= limit, "{} APDUs: {e}", seen.apdus());
        assert!(seen.bytes_in() < 2 * 65536, "{} bytes", seen.bytes_in());
        assert!(v.list_backups(None).unwrap().is_empty(), "a bad backup was stored");
    }
}
