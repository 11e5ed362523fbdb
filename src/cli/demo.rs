//! `cardvault demo`: the product end to end on embedded simulated cards.

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::transport::sim::SimReader;
use crate::transport::Reader;
use crate::workflow::issue::Role;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the demo's cards (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct Report {
    steps: Vec<Step>,
}

#[derive(Serialize)]
struct Step {
    step: String,
    result: String,
}

struct Demo {
    json: bool,
    report: Report,
}

impl Demo {
    fn step(&mut self, step: &str, result: impl Into<String>) {
        let result = result.into();
        if !self.json {
            println!("  {step:<58} {result}");
        }
        self.report.steps.push(Step {
            step: step.into(),
            result,
        });
    }

    fn heading(&self, h: &str) {
        if !self.json {
            println!("\n{h}");
        }
    }
}

const DEMO_PIN: &[u8] = b"123456"; // the built-in profiles' demo PIN

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let (dir, temporary) = match a.dir {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir().join(format!("cardvault-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            (d, true)
        }
    };
    let result = run_in(ctx, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(ctx: &Ctx, dir: &std::path::Path) -> Result<()> {
    let mut d = Demo {
        json: ctx.json,
        report: Report::default(),
    };
    if !d.json {
        println!("cardvault demo: embedded simulated cards in {}", dir.display());
    }

    d.heading("1. Two new cards");
    let mut main = SimReader::open(dir, "demo-main", "main", None)?;
    let mut backup = SimReader::open(dir, "demo-backup", "backup", Some(false))?;
    for r in [&mut main as &mut dyn Reader, &mut backup] {
        let name = r.name().to_string();
        let st = CardClient::open(r, ctx.session())?.status()?;
        d.step(
            &format!("status of {name}"),
            format!(
                "card {} role {} applet {} PIN {}/{}",
                st.card_number, st.role, st.applet_version, st.pin_tries_left, st.pin_max_tries
            ),
        );
    }

    d.heading("2. PIN handling (data of VERIFY is masked in --trace)");
    let wrong = match CardClient::open(&mut main, ctx.session())?.verify_pin(b"000000") {
        Err(Error::WrongPin { tries_left }) => Ok(tries_left),
        Err(e) => Err(e),
        Ok(()) => Err(Error::Usage("the demo card accepted a wrong PIN".into())),
    }?;
    d.step("wrong PIN on sim:demo-main", format!("refused, {wrong} tries left"));
    CardClient::open(&mut main, ctx.session())?.verify_pin(DEMO_PIN)?;
    d.step("right PIN on sim:demo-main", "verified, counter reset");

    d.heading("3. A 4 KiB write and read-back, extended and short APDUs");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    for r in [&mut main as &mut dyn Reader, &mut backup] {
        let name = r.name().to_string();
        let ext = r.caps().extended;
        let (back, stats_w, stats_r) = {
            let c = &mut CardClient::open(r, ctx.session())?;
            c.verify_pin(DEMO_PIN)?;
            let before = c.stats();
            // Page 4: the first page after the purse, whose pages no
            // holder command writes.
            c.write_memory(4, &pattern)?;
            let mid = c.stats();
            let back = c.read_memory(4, pattern.len())?;
            let after = c.stats();
            (back, mid.apdus - before.apdus, after.apdus - mid.apdus)
        };
        if back != pattern {
            return Err(Error::Malformed {
                command: "READ MEMORY",
                reason: "read-back differs from what was written".into(),
            });
        }
        let how = if ext {
            "extended length"
        } else {
            "chaining + GET RESPONSE"
        };
        d.step(
            &format!("{name} ({how})"),
            format!("write {stats_w} APDU(s), read {stats_r} APDU(s), data identical"),
        );
    }

    d.heading("4. Raw APDUs (what `cardvault apdu` sends)");
    let card_number = {
        let c = &mut CardClient::open(&mut main, ctx.session())?;
        let r = c.send_raw(&[0x00, 0xCA, 0xDF, 0x01, 0x00], true)?;
        let unknown = c.send_raw(&[0x00, 0x99, 0x00, 0x00], true)?;
        (r, unknown)
    };
    d.step(
        "00 CA DF 01 00 (GET DATA card number)",
        format!(
            "{} {}",
            cardvault_proto::to_hex(&card_number.0.data).to_uppercase(),
            card_number.0.sw
        ),
    );
    d.step("00 99 00 00 (unknown instruction)", card_number.1.sw.to_string());

    let issue_opts = duplication_story(ctx, &mut d, dir)?;
    backup_story(ctx, &mut d, dir, &mut main)?;
    storing_story(ctx, &mut d, dir)?;
    wallet_story(ctx, &mut d, dir)?;
    helpdesk_story(ctx, &mut d, dir, &issue_opts)?;

    if d.json {
        print_json(&d.report);
    } else {
        println!("\ndemo complete");
    }
    Ok(())
}

/// The issuer domain's key ceremony as an issuer runs it (`domain init`,
/// then K custodians at `issue --domain`), with passphrases generated for
/// the demo: test passphrases, said so in the output, never for real use.
fn key_ceremony(d: &mut Demo, dir: &std::path::Path) -> Result<crate::domain::DomainKey> {
    use zeroize::Zeroizing;
    d.heading("5. Issuer domain key ceremony (3 of 5 custodians; TEST passphrases generated by the demo)");
    let passphrases: Vec<crate::secret::Secret> = (1..=5)
        .map(|_| Zeroizing::new(cardvault_proto::to_hex(&cardvault_proto::crypto::random::<12>()).into_bytes()))
        .collect();
    let domain_dir = dir.join("domain");
    let info = crate::domain::init(&domain_dir, 3, &passphrases)?;
    d.step(
        "domain init: card-common key split 3-of-5",
        format!(
            "domain {} generation {}, 5 encrypted shares, key not written (test passphrases)",
            &info.domain_id[..8],
            info.generation
        ),
    );
    let two: Vec<(u8, crate::secret::Secret)> = [1u8, 4]
        .iter()
        .map(|i| (*i, passphrases[*i as usize - 1].clone()))
        .collect();
    let refused = crate::domain::rebuild_key(&domain_dir, &two).is_err();
    d.step(
        "two custodians present",
        if refused {
            "refused: 3 needed"
        } else {
            "ACCEPTED (wrong)"
        },
    );
    let three: Vec<(u8, crate::secret::Secret)> = [1u8, 3, 5]
        .iter()
        .map(|i| (*i, passphrases[*i as usize - 1].clone()))
        .collect();
    let key = crate::domain::rebuild_key(&domain_dir, &three)?;
    d.step(
        "custodians 1, 3 and 5 present",
        format!("key rebuilt in memory, check value {}", info.check_value),
    );
    Ok(key)
}

/// Issue a main/backup pair, duplicate, encrypt files, break the main card,
/// recover onto a new main card, decrypt with it (FIG. 11, 15, 19).
fn duplication_story(ctx: &Ctx, d: &mut Demo, dir: &std::path::Path) -> Result<crate::workflow::issue::IssueOptions> {
    use crate::workflow::{duplicate, files, issue};
    use zeroize::Zeroizing;

    let mut vault = crate::vault::Vault::open(&dir.join("vault.sqlite"))?;
    let holder = issue::Holder {
        id: "alice".into(),
        pin: Zeroizing::new(b"2468".to_vec()),
        member_number: Some("M-0001".into()),
        expiry: Some("2030-12".into()),
        key1: None,
    };
    let domain = key_ceremony(d, dir)?;
    let opts = issue::IssueOptions {
        // The built-in test issuer: its operator opens the SCP11a session on
        // the embedded blank cards and its root signs their registration
        // certificates.
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: Some(std::sync::Arc::new(domain)),
        registrars: None,
    };
    let key1 = Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec());

    d.heading("6. Issue a main and a backup card (key 1 generated, domain key loaded under SCP11a)");
    let mut cards = Vec::new();
    for role in [Role::Main, Role::Backup] {
        let mut r = SimReader::open(dir, &format!("alice-{role}"), "blank", None)?;
        let n = issue::personalize(
            &mut CardClient::open(&mut r, ctx.session())?,
            &holder,
            role,
            &key1,
            &opts,
        )?;
        d.step(
            &format!("issue {role} card"),
            format!(
                "card {n} issued, domain key generation {}",
                opts.domain.as_ref().expect("set").info.generation
            ),
        );
        cards.push(r);
    }
    let mut backup_r = cards.pop().expect("backup");
    let mut main_r = cards.pop().expect("main");

    d.heading("7. Duplicate the main card's keys onto the backup card");
    let elements: Vec<crate::secret::Secret> = (0..2)
        .map(|_| Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()))
        .collect();
    let rep = {
        let mut main = CardClient::open(&mut main_r, ctx.session())?;
        let mut backup = CardClient::open(&mut backup_r, ctx.session())?;
        let dopts = duplicate::DuplicateOptions {
            main_pin: holder.pin.clone(),
            backup_pin: holder.pin.clone(),
            elements: elements.clone(),
            backup_gets_public_key: false,
        };
        duplicate::duplicate(&mut main, &mut backup, &dopts, &mut vault)?
    };
    d.step("key groups equal (check value)", rep.check_value.clone());
    d.step("key pair generated on the main card", rep.key_generated_now.to_string());
    d.step(
        "take-out imported on the backup card",
        format!("take-out #{}, receipt confirmed", rep.take_out_counter),
    );
    d.step(
        "end-to-end check",
        "backup card opens what is encrypted to the main card",
    );

    d.heading("8. Encrypt files to the main card, break it, recover onto a new card");
    let public = cardvault_proto::from_hex(&rep.public_key).expect("hex");
    let docs = dir.join("files");
    std::fs::create_dir_all(&docs).map_err(|e| Error::io("creating the demo files", e))?;
    let mut paths = Vec::new();
    for (name, size) in [
        ("letter.txt", 2_000usize),
        ("ledger.csv", 70_000),
        ("scan.bin", 1_500_000),
    ] {
        let plain = docs.join(name);
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&plain, &data).map_err(|e| Error::io("writing a demo file", e))?;
        let enc = docs.join(format!("{name}.cve"));
        crate::fileenc::encrypt_file(&plain, &enc, &public, true).map_err(|e| files::file_error(&enc, e))?;
        paths.push((plain, enc));
    }
    d.step("encrypt 3 files to the main card", "letter.txt, ledger.csv, scan.bin");
    let main_path = crate::transport::sim::card_path(dir, "alice-main");
    drop(main_r);
    std::fs::remove_file(&main_path).map_err(|e| Error::io("breaking the demo main card", e))?;
    d.step("the main card breaks", "its state is gone");
    let mut new_r = SimReader::open(dir, "alice-new-main", "blank", None)?;
    let new_number = issue::personalize(
        &mut CardClient::open(&mut new_r, ctx.session())?,
        &holder,
        Role::Main,
        &key1,
        &opts,
    )?;
    d.step("issue a new main card", format!("card {new_number}"));
    {
        let mut backup = CardClient::open(&mut backup_r, ctx.session())?;
        let mut new_main = CardClient::open(&mut new_r, ctx.session())?;
        backup.verify_pin(&holder.pin)?;
        new_main.verify_pin(&holder.pin)?;
        let fresh: Vec<crate::secret::Secret> = (0..2)
            .map(|_| Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()))
            .collect();
        for (i, e) in fresh.iter().enumerate() {
            new_main.write_key_element(i as u8 + 2, e)?;
        }
        let new_public = new_main.generate_key_pair()?;
        for (_, enc) in &paths {
            files::recover_file(&mut backup, &mut new_main, &new_public, enc)?;
        }
        d.step(
            "recover: backup card decrypts, new card's key re-encrypts",
            format!("{} files", paths.len()),
        );
        for (plain, enc) in &paths {
            let out = enc.with_extension("check");
            crate::fileenc::decrypt_file(enc, &out, true, None, files::card_unwrapper(&mut new_main))
                .map_err(|e| files::file_error(enc, e))?;
            let same = std::fs::read(plain).ok() == std::fs::read(&out).ok();
            if !same {
                return Err(Error::Data(format!("{} did not survive recovery", plain.display())));
            }
        }
        d.step("decrypt all files with the new main card", "identical to the originals");
    }
    let problems = vault.verify_audit()?;
    d.step(
        "audit trail (take-out, import, confirm)",
        if problems.is_empty() {
            "intact".to_string()
        } else {
            problems.join("; ")
        },
    );
    Ok(opts)
}

/// The test issuer's authorization key (fixtures/issuer) and its signer
/// certificate under the test root, which the simulator's cards have
/// installed. Demo and tests only.
const DEMO_ISSUER_KEY: &str = include_str!("../../fixtures/issuer/issuer-private.hex");
const DEMO_SIGNER_CERT: &[u8] = include_bytes!("../../fixtures/issuer/test-signer.pem");

/// The demo's authorization signer (the test issuer's).
fn demo_signer() -> Result<crate::issuer::IssuerSigner> {
    let key = cardvault_proto::from_hex(DEMO_ISSUER_KEY.trim())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| Error::Data("demo issuer key".into()))?;
    crate::issuer::IssuerSigner::new(&key, DEMO_SIGNER_CERT)
}
/// The test issuer root that certifies the simulator's cards. Demo only.
const DEMO_ISSUER_ROOT: &[u8] = include_bytes!("../../fixtures/issuer/test-root.pem");

/// Back up a card into the vault (full, then differential), and restore the
/// chain onto a replacement card with an issuer authorization (Hitachi flow).
fn backup_story(ctx: &Ctx, d: &mut Demo, dir: &std::path::Path, src: &mut SimReader) -> Result<()> {
    use crate::workflow::backup as wb;
    let mut vault = crate::vault::Vault::open(&dir.join("vault.sqlite"))?;
    let mut repl = SimReader::open(dir, "demo-replacement", "replacement", None)?;

    d.heading("9. Encrypted page backup into the vault");
    let (full, diff, number) = {
        let mut c = CardClient::open(src, ctx.session())?;
        c.verify_pin(DEMO_PIN)?;
        crate::workflow::purse::credit_with_issuer_key(&mut c, DEMO_PIN, 1, 5000, &demo_signer()?)?;
        let full = wb::backup(&mut c, &mut vault, true, &|_, _| {})?;
        c.write_memory(40, &[0x42; 600])?;
        let diff = wb::backup(&mut c, &mut vault, false, &|_, _| {})?;
        (full, diff, c.card_number()?)
    };
    d.step(
        "full backup (encrypted inside the card)",
        format!("#{}: {} pages in {} APDUs", full.counter, full.pages, full.apdus),
    );
    d.step(
        "differential backup after a change",
        format!(
            "#{}: {} changed pages since #{}",
            diff.counter, diff.pages, diff.base_counter
        ),
    );
    d.step(
        "vault verify",
        if vault.verify()?.is_empty() { "ok" } else { "PROBLEMS" },
    );

    d.heading("10. Restore onto a replacement card (same test domain, issuer authorization)");
    let mut target = CardClient::open(&mut repl, ctx.session())?;
    target.verify_pin(DEMO_PIN)?;
    let target_number = target.card_number()?;
    let challenge = target.restore_challenge()?;
    let last = vault
        .latest_backup(&number)?
        .ok_or_else(|| Error::Data("the demo backup is missing from the vault".into()))?;
    let req = wb::RestoreRequest {
        version: wb::REQUEST_VERSION,
        source_card: number.clone(),
        counter: diff.counter,
        target_card: target_number.clone(),
        challenge: cardvault_proto::to_hex(&challenge),
        target_certificate: cardvault_proto::to_hex(&target.card_certificate()?.unwrap_or_default()),
        chain_hash: cardvault_proto::to_hex(&wb::chain_hash_of(&vault, &vault.chain_to(&last)?)?),
        authorized_applications: Vec::new(),
    };
    // The issuer signs only for a source card reported lost, the newest
    // complete backup, and a target whose certificate verifies.
    crate::workflow::authorize::revoke_card(&mut vault, &number, "demo: the card is reported broken")?;
    let root = openssl::x509::X509::from_pem(DEMO_ISSUER_ROOT).map_err(|e| Error::Data(e.to_string()))?;
    crate::workflow::authorize::check_restore_request(&vault, &req, &[root])?;
    let auth = wb::sign_authorization(&req, &demo_signer()?)?;
    d.step(
        "issuer checks and signs the request",
        format!(
            "card {number} revoked, #{} its newest backup, card {target_number}'s certificate verifies",
            diff.counter
        ),
    );
    let plan = wb::RestorePlan {
        chain: vault.chain_to(&last)?,
        authorization: Some(&auth),
        override_rollback: false,
        agreements: &[],
    };
    let rep = wb::restore(&mut target, &mut vault, &plan, &|_, _| {})?;
    d.step(
        "restore the chain onto the replacement",
        format!(
            "chain {:?}: {} pages in {} APDUs",
            rep.chain, rep.pages_written, rep.apdus
        ),
    );
    let balance = target.balance(1)?;
    d.step(
        "purse on the replacement after restore",
        format!("{} (value reset, FIG. 20: restored value is never spendable)", balance),
    );
    Ok(())
}

/// The test registrars' parties (fixtures/registrars/, test-only keys).
const DEMO_IRC: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer.pem");
const DEMO_IRC_KEY: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer-key.pem");
const DEMO_DPR: &[u8] = include_bytes!("../../fixtures/registrars/test-provider.pem");
const DEMO_DPR_KEY: &[u8] = include_bytes!("../../fixtures/registrars/test-provider-key.pem");
const DEMO_ISSUER_REGISTRAR: &[u8] = include_bytes!("../../fixtures/registrars/test-issuer-registrar.pem");
const DEMO_DATA_REGISTRAR: &[u8] = include_bytes!("../../fixtures/registrars/test-data-registrar.pem");

/// A provider's medical record stored with both signatures (SPEC 3.4), and
/// the holder's PIN alone refused.
fn storing_story(ctx: &Ctx, d: &mut Demo, dir: &std::path::Path) -> Result<()> {
    use crate::workflow::storing::{self, PartyCredentials};
    use cardvault_proto::storing::{Party, RegistrarRoots};
    use openssl::x509::X509;
    let pem = |b: &[u8]| X509::from_pem(b).map_err(|e| Error::Data(e.to_string()));
    let mut vault = crate::vault::Vault::open(&dir.join("vault.sqlite"))?;
    let mut card = SimReader::open(dir, "demo-services", "services", None)?;
    let mut c = CardClient::open(&mut card, ctx.session())?;

    d.heading("11. Storing authorization: a provider's medical record");
    let record = b"blood type 0+; allergies: none (demo record)".to_vec();
    let sdi = storing::store_info(4, &record, None)?;
    let req = storing::request(&mut c, DEMO_PIN, &sdi)?;
    d.step(
        "the card signs a storing request (application 4)",
        format!("card {}, fresh challenge", req.card_number),
    );
    let provider = PartyCredentials::from_pem(Party::Provider, DEMO_DPR_KEY, DEMO_DPR)?;
    let issuer = PartyCredentials::from_pem(Party::Issuer, DEMO_IRC_KEY, DEMO_IRC)?;
    let roots = RegistrarRoots {
        issuer_registrar: pem(DEMO_ISSUER_REGISTRAR)?,
        data_registrar: pem(DEMO_DATA_REGISTRAR)?,
    };
    let trusted = [pem(DEMO_ISSUER_ROOT)?];
    let sar = storing::countersign(&req, &provider, &trusted)?;
    let sa = storing::authorize(&sar, &issuer, &roots, &trusted)?;
    d.step(
        "the provider countersigns (SAR), the issuer signs (SA)",
        "both under their registrars",
    );
    let rep = storing::apply(&mut c, DEMO_PIN, &sa, Some(&record), &mut vault)?;
    d.step(
        "the card checks the chain and stores the record",
        format!("{} bytes, recorded as storing {}", rep.data_size, rep.record.id),
    );
    let sw = c
        .transmit(&crate::apdu::Command::write_memory(68, &[0xDE, 0xAD, 0xBE, 0xEF]))?
        .sw;
    d.step(
        "80 D6 00 44 04 DE AD BE EF (holder PIN, no authorization)",
        sw.to_string(),
    );
    Ok(())
}

/// The electronic wallet and safe (Matsushita): items loaded under the
/// issuer's signature, a deposit by registration certificate, the wallet key
/// escrowed across two safes, the card lost, its items back on a
/// replacement card through the escrow split.
fn wallet_story(ctx: &Ctx, d: &mut Demo, dir: &std::path::Path) -> Result<()> {
    use crate::safe::{SafeAddress, SafeClient};
    use crate::workflow::{deposit as wd, escrow, wallet as ww};
    d.heading("12. Electronic wallet and safe: deposit, the card lost, withdrawal onto a replacement");
    let issuer = dir.join("demo-issuer");
    std::fs::create_dir_all(&issuer).map_err(|e| Error::io(format!("creating {}", issuer.display()), e))?;
    for (name, pem) in [
        ("test-root.pem", DEMO_ISSUER_ROOT),
        (
            "test-root-key.pem",
            &include_bytes!("../../fixtures/issuer/test-root-key.pem")[..],
        ),
        (
            "test-oce.pem",
            &include_bytes!("../../fixtures/issuer/test-oce.pem")[..],
        ),
        (
            "test-oce-key.pem",
            &include_bytes!("../../fixtures/issuer/test-oce-key.pem")[..],
        ),
    ] {
        std::fs::write(issuer.join(name), pem).map_err(|e| Error::io(format!("writing {name}"), e))?;
    }
    let addrs = [
        SafeAddress::Dir(dir.join("demo-safe-1")),
        SafeAddress::Dir(dir.join("demo-safe-2")),
    ];
    for a in &addrs {
        if let SafeAddress::Dir(p) = a {
            crate::safe::init(p, &issuer)?;
        }
    }
    d.step("two safes, certified by the (test) issuer", "demo-safe-1, demo-safe-2");
    let mut vault = crate::vault::Vault::open(&dir.join("vault.sqlite"))?;
    let password = b"demo owner password (test only)";
    let (lost, ticket) = {
        let mut r = SimReader::open(dir, "demo-wallet", "main", None)?;
        let mut c = CardClient::open(&mut r, ctx.session())?;
        let spec = ww::ItemSpec {
            kind: "ticket".into(),
            name: "Museum day pass".into(),
            unit_price: 1200,
            quantity: 2,
            place: "City museum".into(),
            valid_from: None,
            valid_until: Some("2030-12-31".into()),
            remarks: String::new(),
        };
        let loaded = ww::load_with_signer(&mut c, DEMO_PIN, &spec, &demo_signer()?)?;
        d.step(
            "load a ticket (issuer-signed for this card and challenge)",
            format!(
                "item {}, {} of {}",
                &loaded.item.id[..8],
                loaded.item.balance,
                loaded.item.total
            ),
        );
        let mut s1 = SafeClient::connect(&addrs[0])?;
        let dep = wd::deposit(
            &mut c,
            DEMO_PIN,
            &loaded.item.id,
            &addrs[0],
            &mut s1,
            &mut vault,
            cardvault_proto::safe::summary_field::DEFAULT,
        )?;
        d.step(
            "deposit it into demo-safe-1",
            format!(
                "registration certificate, safe counter {}; the item left the card",
                dep.counter
            ),
        );
        let mut both = vec![SafeClient::connect(&addrs[0])?, SafeClient::connect(&addrs[1])?];
        escrow::escrow(&mut c, DEMO_PIN, password, &mut both)?;
        d.step(
            "escrow the wallet key, split across both safes",
            "one part each; neither alone opens it",
        );
        (c.card_number()?, loaded.item.id)
    };
    std::fs::remove_file(crate::transport::sim::card_path(dir, "demo-wallet"))
        .map_err(|e| Error::io("removing the demo wallet card", e))?;
    d.step("the card is lost", format!("card {lost} is gone"));
    let mut r = SimReader::open(dir, "demo-wallet-new", "replacement", None)?;
    let mut c = CardClient::open(&mut r, ctx.session())?;
    let mut both = addrs
        .iter()
        .map(|a| SafeClient::connect(a).map(|c| (a.clone(), c)))
        .collect::<Result<Vec<_>>>()?;
    let rec = escrow::recover(&mut c, DEMO_PIN, password, &lost, &mut both, &mut vault)?;
    d.step(
        "recover onto a replacement card (owner password, both safes)",
        format!("{} item withdrawn onto card {}", rec.withdrawn.len(), rec.new_card),
    );
    let back = ww::list(&mut c)?;
    let ok = back
        .items
        .iter()
        .any(|(_, i)| cardvault_proto::to_hex(&i.id) == ticket && i.balance == 2400);
    d.step(
        "the ticket is on the replacement card",
        if ok { "once, balance 2400 of 2400" } else { "MISSING" },
    );
    if !ok {
        return Err(Error::Internal(
            "the demo's withdrawal did not bring the ticket back".into(),
        ));
    }
    Ok(())
}

/// The help desk: a holder walks in and says "I lost my card"; from the
/// member number alone, `replace` marks the card lost, restores its newest
/// backup onto a new card with the issuer's authorization (this terminal
/// holds the test issuer's signer), withdraws his deposited voucher from the
/// wallet story's safe and reports what was and was not restored.
fn helpdesk_story(
    ctx: &Ctx,
    d: &mut Demo,
    dir: &std::path::Path,
    opts: &crate::workflow::issue::IssueOptions,
) -> Result<()> {
    use crate::workflow::{issue, replace};
    use zeroize::Zeroizing;
    let mut vault = crate::vault::Vault::open(&dir.join("vault.sqlite"))?;
    // The safes of the wallet story (section 12).
    let safes = [crate::safe::SafeAddress::Dir(dir.join("demo-safe-1"))];
    d.heading("13. The help desk: bob (M-0002) lost his card; cardvault replace --holder M-0002");
    let bob = issue::Holder {
        id: "bob".into(),
        pin: Zeroizing::new(DEMO_PIN.to_vec()),
        member_number: Some("M-0002".into()),
        expiry: Some("2031-06".into()),
        key1: None,
    };
    let key1 = Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec());
    let mut issued = Vec::new();
    for name in ["bob-main", "bob-new-main"] {
        let mut r = SimReader::open(dir, name, "blank", None)?;
        let n = issue::personalize(
            &mut CardClient::open(&mut r, ctx.session())?,
            &bob,
            Role::Main,
            &key1,
            opts,
        )?;
        // The issuance record the holder lookup reads (as `issue` writes it).
        vault.audit(crate::vault::AuditEvent {
            event: "issue",
            card: &n,
            peer: None,
            result: "issued",
            details: serde_json::json!({
                "holder": bob.id, "role": Role::Main, "member_number": bob.member_number, "expiry": bob.expiry,
            }),
        })?;
        issued.push((r, n));
    }
    let (mut new_r, new_number) = issued.pop().expect("two cards");
    let (mut old_r, old_number) = issued.pop().expect("two cards");
    let record: Vec<u8> = (0..2048u32).map(|i| (i * 11 % 253) as u8).collect();
    {
        let mut c = CardClient::open(&mut old_r, ctx.session())?;
        c.verify_pin(DEMO_PIN)?;
        c.write_memory(36, &record)?;
        let b = crate::workflow::backup::backup(&mut c, &mut vault, true, &|_, _| {})?;
        d.step(
            "bob's card is backed up",
            format!("card {old_number}, backup #{} ({} pages)", b.counter, b.pages),
        );
        let spec = crate::workflow::wallet::ItemSpec {
            kind: "coupon".into(),
            name: "Bookshop voucher".into(),
            unit_price: 500,
            quantity: 1,
            place: String::new(),
            valid_from: None,
            valid_until: None,
            remarks: String::new(),
        };
        let loaded = crate::workflow::wallet::load_with_signer(&mut c, DEMO_PIN, &spec, &demo_signer()?)?;
        let dep = crate::workflow::deposit::deposit(
            &mut c,
            DEMO_PIN,
            &loaded.item.id,
            &safes[0],
            &mut crate::safe::SafeClient::connect(&safes[0])?,
            &mut vault,
            cardvault_proto::safe::summary_field::DEFAULT,
        )?;
        d.step(
            "bob deposits a voucher into demo-safe-1, then loses his card",
            format!("item {}, safe counter {}", &dep.item[..8], dep.counter),
        );
    }
    drop(old_r);
    d.step("the issuer issues bob a new main card", format!("card {new_number}"));
    let mut r = replace::Replacement {
        state: replace::start(&vault, "M-0002", &new_number, "lost (demo)")?,
        file: replace::StateFile(dir.join("replace").join("M-0002.json")),
    };
    let signer = demo_signer()?;
    let roots = [openssl::x509::X509::from_pem(DEMO_ISSUER_ROOT).map_err(|e| Error::Data(e.to_string()))?];
    let job = replace::ReplaceJob {
        pin: DEMO_PIN,
        issuer: Some(replace::IssuerRights {
            signer: &signer,
            roots: &roots,
        }),
        authorization: None,
        files: None,
        new_backup: None,
        safes: &safes,
    };
    {
        let mut new = CardClient::open(&mut new_r, ctx.session())?;
        replace::run(&mut new, None, None, &mut vault, &mut r, &job, &|_| {})?;
        new.verify_pin(DEMO_PIN)?;
        if new.read_memory(36, record.len())? != record {
            return Err(Error::Data("the replacement card does not hold bob's pages".into()));
        }
        if new.read_wallet()?.items.len() != 1 {
            return Err(Error::Data("the replacement card does not hold bob's voucher".into()));
        }
    }
    let state = &r.state;
    for r in &state.steps {
        let s = match r.state {
            replace::StepState::Done => "done",
            replace::StepState::Skipped => "skipped",
            replace::StepState::Waiting => "waiting",
            replace::StepState::Pending => "pending",
        };
        d.step(&format!("replace: {}", r.step), format!("{s}: {}", r.detail));
    }
    for l in state.restored_summary() {
        d.step("restored", l);
    }
    for l in state.not_restored() {
        d.step("not restored", l);
    }
    Ok(())
}
