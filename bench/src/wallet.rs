//! Part 8: the electronic wallet and safe, and the other exchanges of the
//! terminal with parties beyond the card. APDUs on the wire against their
//! minimum (embedded cards, counted by `Channel::stats`; the minimum counts
//! the SCP11b handshake of every card session): deposit, withdraw, escrow
//! recover (`wallet recover`), storing under authorization in both orders
//! and its delete, and the guided replacement (`replace --holder H --new R`)
//! per card and in total. Then deposits per second into one `cardvault safe
//! serve` process from 1 terminal and from 4 side by side, in interleaved
//! rounds (each terminal its own embedded card and vault, each deposit a
//! full exchange: card session, DEPOSIT, two HTTP requests, the vault's
//! copy, DEPOSIT complete), with the CPU each side spends per deposit.

use super::apdus::{self, Minimum, HANDSHAKE};
use super::proc::{cardvault, interleave, Samples};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::apdu::Stats;
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::safe::{SafeAddress, SafeClient};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::deposit::{self as wd, CertificateSource};
use cardvault::workflow::escrow;
use cardvault::workflow::wallet::{self as ww, ItemSpec};
use cardvault_proto::safe::summary_field;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

const PIN: &[u8] = b"123456";
/// Terminals side by side, and deposits each makes.
const TERMINALS: usize = 4;
const DEPOSITS_EACH: usize = 6;

fn cash(amount: u32) -> ItemSpec {
    ItemSpec {
        kind: "cash".into(),
        name: format!("bench cash {amount}"),
        unit_price: amount,
        quantity: 1,
        place: String::new(),
        valid_from: None,
        valid_until: None,
        remarks: String::new(),
    }
}

/// A value issuer under the test root, made for this run.
fn signer() -> Result<cardvault::issuer::IssuerSigner> {
    use applet_sim::test_issuer as t;
    let root_key =
        cardvault_proto::crypto::KeyPair::from_pem(t::ROOT_KEY_PEM).map_err(|e| Error::Data(e.to_string()))?;
    let key = cardvault_proto::crypto::KeyPair::generate().map_err(|e| Error::Data(e.to_string()))?;
    let cert = cardvault_proto::cert::issue_signer_certificate(
        &root_key,
        &t::root(),
        &key.public_bytes(),
        "bench value issuer",
        2,
    )
    .and_then(|c| Ok(c.to_pem()?))
    .map_err(|e| Error::Data(e.to_string()))?;
    cardvault::issuer::IssuerSigner::new(&key.private_bytes(), &cert)
}

fn load(dir: &Path, card: &str, n: usize, signer: &cardvault::issuer::IssuerSigner) -> Result<Vec<String>> {
    let mut r = SimReader::open(dir, card, "main", None)?;
    let mut c = CardClient::open(&mut r, SessionOptions::default())?;
    (0..n)
        .map(|i| ww::load_with_signer(&mut c, PIN, &cash(10 + i as u32), signer).map(|r| r.item.id))
        .collect()
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("wallet")?;
    let mut s = Section::new(
        Part::Wallet,
        "Electronic wallet and safe, storing, replacement: APDUs per exchange, deposits per second",
    );
    let issuer_dir = super::proc::test_issuer_dir(&dir)?;
    let safe_dir = dir.join("safe");
    cardvault::safe::init(&safe_dir, &issuer_dir)?;
    let signer = signer()?;
    let addr = SafeAddress::Dir(safe_dir.clone());
    let mut vault = Vault::open(&dir.join("vault.sqlite"))?;

    progress("wallet: deposit and withdraw APDUs");
    let id = load(&dir, "apdus", 1, &signer)?.remove(0);
    let mut safe = SafeClient::connect(&addr)?;
    let deposit = {
        let mut r = SimReader::open(&dir, "apdus", "main", None)?;
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        wd::deposit(&mut c, PIN, &id, &addr, &mut safe, &mut vault, summary_field::DEFAULT)?;
        c.stats()
    };
    // SELECT, the SCP11b handshake (GET DATA BF21, INTERNAL AUTHENTICATE),
    // VERIFY, DEPOSIT (the sealed item, signed), DEPOSIT (the certificate).
    s.row(
        Row::new("deposit one item", deposit.apdus as f64, Unit::Apdus)
            .against("min", 6.0)
            .goal(super::Goal::ratio(super::Op::Le, 1.1))
            .detail(format!(
                "minimum: 1 SELECT + 2 SCP11b handshake + 1 VERIFY + 2 DEPOSIT; {} B out + {} B in",
                deposit.bytes_out, deposit.bytes_in
            )),
    );
    let withdraw = {
        let mut r = SimReader::open(&dir, "apdus", "main", None)?;
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        wd::withdraw(
            &mut c,
            PIN,
            &CertificateSource::Card(id.clone()),
            &mut safe,
            &mut vault,
            None,
        )?;
        c.stats()
    };
    // SELECT, handshake, VERIFY, the certificate (READ SAFE RECORDS), GET
    // WITHDRAW CHALLENGE, WITHDRAW, the signing certificate for the receipt
    // (GET DATA DF35).
    s.row(
        Row::new("withdraw one item", withdraw.apdus as f64, Unit::Apdus)
            .against("min", 8.0)
            .goal(super::Goal::ratio(super::Op::Le, 1.1))
            .detail(format!(
                "minimum: 1 SELECT + 2 SCP11b handshake + 1 VERIFY + 1 READ SAFE RECORDS + 1 GET WITHDRAW \
                 CHALLENGE + 1 WITHDRAW + 1 GET DATA DF35; {} B out + {} B in",
                withdraw.bytes_out, withdraw.bytes_in
            )),
    );

    progress("wallet: escrow recover");
    recover_row(&dir, &addr, &signer, &mut vault, &mut s)?;
    progress("wallet: storing under authorization, both orders, and delete");
    storing_rows(&dir, &mut vault, &mut s)?;
    progress("wallet: the guided replacement");
    replacement_rows(&dir, &addr, &signer, &mut vault, &mut s)?;
    progress("wallet: deposits per second into one safe serve, 1 and 4 terminals (interleaved)");
    throughput(cfg, &dir, &safe_dir, &signer, &mut s)?;
    Ok(s)
}

/// Card sessions of the benchmark; `CARDVAULT_BENCH_TRACE=1` prints their
/// APDUs (to find what a count above the minimum is made of).
fn options() -> SessionOptions {
    SessionOptions {
        trace: std::env::var_os("CARDVAULT_BENCH_TRACE").is_some(),
        ..SessionOptions::default()
    }
}

/// Items the lost card had deposited, recovered onto its replacement.
const RECOVERED_ITEMS: usize = 2;

/// `wallet recover`: a card deposits items and escrows its wallet key in
/// the safe, is lost, and a new card rebuilds the key from the escrow and
/// withdraws every item.
fn recover_row(
    dir: &Path,
    addr: &SafeAddress,
    signer: &cardvault::issuer::IssuerSigner,
    vault: &mut Vault,
    s: &mut Section,
) -> Result<()> {
    const OWNER: &[u8] = b"bench owner password";
    let ids = load(dir, "escrow-lost", RECOVERED_ITEMS, signer)?;
    let mut safe = SafeClient::connect(addr)?;
    let lost = {
        let mut r = SimReader::open(dir, "escrow-lost", "main", None)?;
        let mut c = CardClient::open(&mut r, options())?;
        for id in &ids {
            wd::deposit(&mut c, PIN, id, addr, &mut safe, vault, summary_field::DEFAULT)?;
        }
        escrow::escrow(&mut c, PIN, OWNER, std::slice::from_mut(&mut safe))?.card_number
    };
    let (stats, report) = {
        let mut r = SimReader::open(dir, "escrow-new", "main", None)?;
        let mut c = CardClient::open(&mut r, options())?;
        let mut safes = [(addr.clone(), SafeClient::connect(addr)?)];
        let report = escrow::recover(&mut c, PIN, OWNER, &lost, &mut safes, vault)?;
        (c.stats(), report)
    };
    if report.withdrawn.len() != RECOVERED_ITEMS {
        return Err(Error::Data(format!(
            "recover withdrew {} items, not {RECOVERED_ITEMS}",
            report.withdrawn.len()
        )));
    }
    let k = RECOVERED_ITEMS as u64;
    // The new card's session: SELECT, handshake, VERIFY, ESCROW import; what
    // the card already holds (READ SAFE RECORDS for receipts of a recovery
    // cut short, READ WALLET for items already withdrawn); per item GET
    // WITHDRAW CHALLENGE and WITHDRAW; the card's signing certificate once
    // for the receipts.
    let min = Minimum::default()
        .add(1, "SELECT")
        .add(HANDSHAKE, "SCP11b handshake")
        .add(1, "VERIFY")
        .add(1, "ESCROW import")
        .add(1, "READ SAFE RECORDS")
        .add(1, "READ WALLET")
        .add(k, "GET WITHDRAW CHALLENGE")
        .add(k, "WITHDRAW")
        .add(1, "GET DATA DF35 (signing certificate, for the receipts)");
    s.row(apdus::row(
        &format!("escrow recover ({RECOVERED_ITEMS} items, 1 safe)"),
        stats,
        &min,
        None,
    ));
    Ok(())
}

/// The storing application the rows write (an `authorized` application of
/// the `services` profile).
const MEDICAL: u8 = 4;

/// Storing under authorization, issuer first and provider first, and the
/// delete: the card's request session and its apply session.
fn storing_rows(dir: &Path, vault: &mut Vault, s: &mut Section) -> Result<()> {
    use applet_sim::test_registrars as reg;
    use cardvault::workflow::storing::{self, PartyCredentials};
    use cardvault_proto::storing::{Party, RegistrarRoots};
    let x509 = |pem: &[u8]| openssl::x509::X509::from_pem(pem).map_err(|e| Error::Data(e.to_string()));
    let issuer = PartyCredentials::from_pem(Party::Issuer, reg::ISSUER_KEY_PEM, reg::ISSUER_PEM)?;
    let provider = PartyCredentials::from_pem(Party::Provider, reg::PROVIDER_KEY_PEM, reg::PROVIDER_PEM)?;
    let roots = RegistrarRoots {
        issuer_registrar: x509(reg::ISSUER_REGISTRAR_PEM)?,
        data_registrar: x509(reg::DATA_REGISTRAR_PEM)?,
    };
    let issuer_roots = vec![applet_sim::test_issuer::root()];
    let exchange = |vault: &mut Vault,
                    sdi: &cardvault_proto::storing::StoringDataInfo,
                    first: Party,
                    data: Option<&[u8]>|
     -> Result<(Stats, String)> {
        let (req, asked) = {
            let mut r = SimReader::open(dir, "storing", "services", None)?;
            let mut c = CardClient::open(&mut r, options())?;
            (storing::request(&mut c, PIN, sdi)?, c.stats())
        };
        let (a, b) = match first {
            Party::Issuer => (&issuer, &provider),
            Party::Provider => (&provider, &issuer),
        };
        let sar = storing::countersign(&req, a, &issuer_roots)?;
        let sa = storing::authorize(&sar, b, &roots, &issuer_roots)?;
        let mut r = SimReader::open(dir, "storing", "services", None)?;
        let mut c = CardClient::open(&mut r, options())?;
        storing::apply(&mut c, PIN, &sa, data, vault)?;
        Ok((apdus::add(asked, c.stats()), req.card_number))
    };
    // Per session SELECT, the handshake and VERIFY; then STORING REQUEST in
    // the first and STORE DATA UNDER AUTHORIZATION (the authorization and
    // the data in one extended command) in the second.
    let minimum = |data: u64| {
        Minimum::default()
            .add(2, "SELECT")
            .add(2 * HANDSHAKE, "SCP11b handshake")
            .add(2, "VERIFY")
            .add(1, "STORING REQUEST")
            .data(data + 2048, apdus::MAX_COMMAND_DATA, "STORE DATA UNDER AUTHORIZATION")
    };
    let above = "; above it: GET DATA DF35 in the apply session, the terminal's check that the \
                 authorization names this card's storing certificate before anything is sent";
    let mut number = String::new();
    for (first, data) in [
        (Party::Issuer, b"blood type 0+, allergies: none".to_vec()),
        (Party::Provider, vec![0x5A; 3 * 256 + 17]),
    ] {
        let sdi = storing::store_info(MEDICAL, &data, None)?;
        let (stats, card) = exchange(vault, &sdi, first, Some(&data))?;
        number = card;
        let r = apdus::row(
            &format!("store {} B, {first} first", data.len()),
            stats,
            &minimum(data.len() as u64),
            None,
        );
        let detail = r.detail.clone().unwrap_or_default();
        s.row(r.detail(format!("{detail}{above}")));
    }
    let del = storing::delete_info(vault, &number, MEDICAL)?;
    let (stats, _) = exchange(vault, &del, Party::Provider, None)?;
    let r = apdus::row("delete (provider first)", stats, &minimum(0), None);
    let detail = r.detail.clone().unwrap_or_default();
    s.row(r.detail(format!("{detail}{above}")));
    Ok(())
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_of(pid: &str) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (in parentheses): utime is the
            // 12th, stime the 13th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(f64::NAN)
}

/// One timed run of deposits into the safe at `url`: the wall time, and the
/// CPU seconds of the safe process and of this one (the terminals).
#[derive(Debug, Clone, Copy)]
struct DepositRun {
    wall: f64,
    safe_cpu: f64,
    terminal_cpu: f64,
}

/// Terminal `t` of `terminals` deposits every item of its card, each deposit
/// a full exchange (a card session, DEPOSIT, two HTTP requests, the vault's
/// copy, DEPOSIT complete); all terminals side by side.
fn deposit_run(dir: &Path, url: &str, safe_pid: &str, cards: &[(String, Vec<String>)]) -> Result<DepositRun> {
    let (safe0, self0) = (cpu_of(safe_pid), cpu_of("self"));
    let started = Instant::now();
    let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cards
            .iter()
            .enumerate()
            .map(|(t, (card, items))| {
                scope.spawn(move || -> Result<()> {
                    let addr = SafeAddress::Http(url.to_string());
                    let mut safe = SafeClient::connect(&addr)?;
                    let mut vault = Vault::open(&dir.join(format!("vault-{t}.sqlite")))?;
                    for id in items {
                        let mut r = SimReader::open(dir, card, "main", None)?;
                        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
                        wd::deposit(&mut c, PIN, id, &addr, &mut safe, &mut vault, summary_field::DEFAULT)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a terminal panicked".into())))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(DepositRun {
        wall,
        safe_cpu: cpu_of(safe_pid) - safe0,
        terminal_cpu: cpu_of("self") - self0,
    })
}

/// The median of 4 KiB writes each followed by fsync in `dir`, in ms: what
/// one synchronous commit costs on this disk at least.
fn fsync_ms(dir: &Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).map_err(|e| Error::io("creating the fsync probe", e))?;
    let mut samples = Samples::default();
    for _ in 0..20 {
        let t = Instant::now();
        f.write_all(&[0x5A; 4096])
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("writing the fsync probe", e))?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    Ok(samples.median())
}

/// Deposits per second into one `cardvault safe serve` from 1 terminal and
/// from [`TERMINALS`] side by side, interleaved rounds, and where a
/// deposit's time goes.
fn throughput(
    cfg: &Config,
    dir: &Path,
    safe_dir: &Path,
    signer: &cardvault::issuer::IssuerSigner,
    s: &mut Section,
) -> Result<()> {
    // A fresh card per terminal and run (a card holds 8 items), loaded now.
    let mut cards: std::collections::VecDeque<Vec<(String, Vec<String>)>> = Default::default();
    for run in 0..=cfg.rounds {
        for k in [1, TERMINALS] {
            let mut set = Vec::new();
            for t in 0..k {
                let card = format!("deposit-{k}-{run}-{t}");
                let ids = load(dir, &card, DEPOSITS_EACH, signer)?;
                set.push((card, ids));
            }
            cards.push_back(set);
        }
    }
    let fsync = fsync_ms(dir)?;
    let mut child = cardvault(&cfg.exe, dir)
        .args(["safe", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(safe_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting safe serve", e))?;
    let pid = child.id().to_string();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| Error::io("reading safe serve", e))?;
    let url = line.trim().strip_prefix("listening on ").map(|a| format!("http://{a}"));
    let result = match url {
        Some(url) => {
            let (mut one, mut many) = (Vec::new(), Vec::new());
            let queue = std::cell::RefCell::new(&mut cards);
            let next = |k: usize| -> Result<Vec<(String, Vec<String>)>> {
                let mut q = queue.borrow_mut();
                let i = q
                    .iter()
                    .position(|set| set.len() == k)
                    .ok_or_else(|| Error::Internal("no loaded card left".into()))?;
                Ok(q.remove(i).expect("found"))
            };
            let mut run_one = || -> Result<f64> {
                let r = deposit_run(dir, &url, &pid, &next(1)?)?;
                one.push(r);
                Ok(r.wall)
            };
            let mut run_many = || -> Result<f64> {
                let r = deposit_run(dir, &url, &pid, &next(TERMINALS)?)?;
                many.push(r);
                Ok(r.wall)
            };
            interleave(cfg.rounds, &mut [&mut run_one, &mut run_many]).map(|_| (one, many))
        }
        None => Err(Error::Data(format!("safe serve said {line:?}"))),
    };
    let _ = child.kill();
    let _ = child.wait();
    let (mut one, mut many) = result?;
    // The warm-up pass is the first of each.
    one.remove(0);
    many.remove(0);
    let per = |runs: &[DepositRun], k: usize, f: fn(&DepositRun) -> f64| {
        Samples(runs.iter().map(|r| f(r) / (k * DEPOSITS_EACH) as f64).collect()).median()
    };
    let rate = |runs: &[DepositRun], k: usize| {
        Samples(runs.iter().map(|r| (k * DEPOSITS_EACH) as f64 / r.wall).collect()).median()
    };
    let (r1, r4) = (rate(&one, 1), rate(&many, TERMINALS));
    let breakdown = |runs: &[DepositRun], k: usize| {
        format!(
            "per deposit {:.1} ms wall, {:.1} ms safe CPU, {:.1} ms terminal CPU",
            per(runs, k, |r| r.wall) * 1e3,
            per(runs, k, |r| r.safe_cpu) * 1e3,
            per(runs, k, |r| r.terminal_cpu) * 1e3,
        )
    };
    s.row(
        Row::new(
            format!("deposits into one safe, {TERMINALS} terminals"),
            r4,
            Unit::PerSec,
        )
        .against("1 terminal", r1)
        .goal(Goal::ratio(Op::Ge, 2.5))
        .detail(format!(
            "deposits per second, median of {} interleaved rounds of {DEPOSITS_EACH} deposits per terminal; \
                 {TERMINALS} terminals: {}; 1 terminal: {}",
            one.len(),
            breakdown(&many, TERMINALS),
            breakdown(&one, 1),
        )),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu4 = per(&many, TERMINALS, |r| r.safe_cpu) + per(&many, TERMINALS, |r| r.terminal_cpu);
    s.note(format!(
        "{TERMINALS} terminals on {cores:.0} cores cannot go faster than all cores busy: at most {:.2}x one \
         terminal here (1 terminal's wall time per deposit over the CPU time per deposit at {TERMINALS} \
         terminals divided by {cores:.0}); beyond {cores:.0}x only by the share of one terminal's time spent \
         waiting (fsync, HTTP round trips) rather than computing",
        per(&one, 1, |r| r.wall) / (cpu4 / cores)
    ));
    let wall1 = per(&one, 1, |r| r.wall) * 1e3;
    let cpu1 = (per(&one, 1, |r| r.safe_cpu) + per(&one, 1, |r| r.terminal_cpu)) * 1e3;
    s.row(
        Row::new(
            "  1 terminal: time per deposit not on a CPU",
            wall1 - cpu1,
            Unit::Millis,
        )
        .detail(format!(
            "{wall1:.1} ms wall − {cpu1:.1} ms CPU (safe + terminal): waiting on fsync and on the HTTP round \
             trips; one 4 KiB write + fsync on this disk takes {fsync:.2} ms (median of 20)"
        )),
    );
    Ok(())
}

/// Record an issued card in the vault as `cardvault issue` does (the
/// holder list is read from these entries).
fn record_issued(vault: &mut Vault, card: &str, h: &cardvault::workflow::issue::Holder, role: &str) -> Result<()> {
    vault
        .audit(cardvault::vault::AuditEvent {
            event: "issue",
            card,
            peer: None,
            result: "issued",
            details: serde_json::json!({
                "holder": h.id,
                "role": role,
                "member_number": h.member_number,
                "expiry": h.expiry,
            }),
        })
        .map(|_| ())
}

/// Bytes of holder data written on the lost card before its full backup.
const REPLACED_DATA: usize = 16 * 1024;

/// `replace --holder H --new R`: a holder's duplicated pair, data on the
/// main card and a full backup of it, a file encrypted to the holder's key
/// and one wallet item in the safe; the main card is lost, and the job
/// replaces it with a new pair (issuer's rights on this terminal, the old
/// backup card for the file, the new backup card duplicated at the end).
fn replacement_rows(
    dir: &Path,
    addr: &SafeAddress,
    signer: &cardvault::issuer::IssuerSigner,
    vault: &mut Vault,
    s: &mut Section,
) -> Result<()> {
    use super::cards::{self, PROFILE_PIN};
    use cardvault::workflow::replace::{self, FileRecovery, IssuerRights, NewBackup, ReplaceJob, StateFile};
    use cardvault::workflow::{backup as wb, duplicate};
    // Pre-issued cards of the built-in profiles (one issuer domain, so a
    // backup of one restores onto another with the issuer's authorization).
    let pin = PROFILE_PIN;
    let h = cards::holder("repl");
    let number = |r: &SimReader| r.card().state().card_number.clone();
    let mut lost_r = cards::open(dir, "repl-main", "main")?;
    let mut backup_r = cards::open(dir, "repl-backup", "backup")?;
    let mut new_r = cards::open(dir, "repl-new-main", "main")?;
    let mut new_backup_r = cards::open(dir, "repl-new-backup", "backup")?;
    let (lost, new_number) = (number(&lost_r), number(&new_r));
    for (r, role) in [
        (&lost_r, "main"),
        (&backup_r, "backup"),
        (&new_r, "main"),
        (&new_backup_r, "backup"),
    ] {
        record_issued(vault, &number(r), &h, role)?;
    }
    let public = {
        let mut m = CardClient::open(&mut lost_r, SessionOptions::default())?;
        let mut b = CardClient::open(&mut backup_r, SessionOptions::default())?;
        let opts = duplicate::DuplicateOptions {
            main_pin: zeroize::Zeroizing::new(pin.to_vec()),
            backup_pin: zeroize::Zeroizing::new(pin.to_vec()),
            elements: cards::elements(2),
            backup_gets_public_key: false,
        };
        let rep = duplicate::duplicate(&mut m, &mut b, &opts, vault)?;
        cardvault_proto::from_hex(&rep.public_key)
            .ok_or_else(|| Error::Data("duplicate reported a public key that is not hex".into()))?
    };
    let item = {
        let mut c = CardClient::open(&mut lost_r, SessionOptions::default())?;
        c.verify_pin(pin)?;
        c.write_memory(4, &cardvault_proto::crypto::random::<32>().repeat(REPLACED_DATA / 32))?;
        wb::backup(&mut c, vault, true, &|_, _| {})?;
        let item = ww::load_with_signer(&mut c, pin, &cash(25), signer)?.item.id;
        let mut safe = SafeClient::connect(addr)?;
        wd::deposit(&mut c, pin, &item, addr, &mut safe, vault, summary_field::DEFAULT)?;
        item
    };
    let plain = dir.join("replaced-file.txt");
    super::write_file(&plain, &[0x42; 100_000])?;
    let enc = dir.join("replaced-file.cve");
    cardvault::fileenc::encrypt_file(&plain, &enc, &public, true)
        .map_err(|e| cardvault::workflow::files::file_error(&enc, e))?;

    let mut new = CardClient::open(&mut new_r, options())?;
    let mut backup = CardClient::open(&mut backup_r, options())?;
    let mut new_backup = CardClient::open(&mut new_backup_r, options())?;
    let member = h.member_number.clone().unwrap_or_default();
    let state = replace::start(vault, &member, &new_number, "lost")?;
    let mut r = replace::Replacement {
        state,
        file: StateFile(dir.join("replace-state.json")),
    };
    let roots = vec![applet_sim::test_issuer::root()];
    let elements = cards::elements(2);
    let files = [enc];
    let safes = [addr.clone()];
    let job = ReplaceJob {
        pin,
        issuer: Some(IssuerRights { signer, roots: &roots }),
        authorization: None,
        files: Some(FileRecovery {
            backup_pin: pin,
            files: &files,
            elements: Some(&elements),
        }),
        new_backup: Some(NewBackup {
            backup_pin: pin,
            elements: &elements,
        }),
        safes: &safes,
    };
    replace::run(
        &mut new,
        Some(&mut backup),
        Some(&mut new_backup),
        vault,
        &mut r,
        &job,
        &|_| {},
    )?;
    if !r.state.finished || r.state.wallet.iter().all(|w| w.result != "withdrawn") {
        return Err(Error::Data(format!(
            "the replacement did not finish with item {item} withdrawn: {:?}",
            r.state.steps
        )));
    }
    let (sn, sb, snb) = (new.stats(), backup.stats(), new_backup.stats());
    drop((new, backup, new_backup));
    // The restored chain: per backup its header, then records and trailer
    // in as few RESTORE DATA commands as the command data field allows.
    let last = vault
        .latest_backup(&lost)?
        .ok_or_else(|| Error::Data("the replaced card's backup is missing".into()))?;
    let chain = vault.chain_to(&last)?;
    let (mut data, mut payload) = (0, 0);
    for row in &chain {
        let b = vault.load_backup(row.id)?;
        let bytes = b.records.iter().map(|r| r.len() as u64).sum::<u64>() + b.trailer.len() as u64;
        data += bytes.div_ceil(apdus::MAX_COMMAND_DATA);
        payload += bytes;
    }
    let session = |m: Minimum| {
        m.add(1, "SELECT")
            .add(1, "status")
            .add(HANDSHAKE, "SCP11b handshake")
            .add(1, "VERIFY")
    };
    let new_min = session(Minimum::default())
        .add(
            5,
            "wallet (READ SAFE RECORDS, READ WALLET, GET WITHDRAW CHALLENGE, WITHDRAW, GET DATA DF35)",
        )
        .add(2, "restore request (GET DATA DF32, GET RESTORE CHALLENGE)")
        .add(1, "GET DATA DF34 (storage rules)")
        .add(3, "value (GET DATA DF30, GET BALANCE before and after)")
        .add(chain.len() as u64, "RESTORE (header)")
        .add(data, "RESTORE DATA (records + trailer)")
        .add(1, "RESTORE COMPLETE")
        .add(
            4,
            "file (WRITE KEY ELEMENT 2..3, GENERATE KEY PAIR, UNWRAP FILE KEY check)",
        )
        .add(2, "new backup (TAKE OUT KEY, CONFIRM DUPLICATE)");
    let backup_min = session(Minimum::default()).add(files.len() as u64, "UNWRAP FILE KEY");
    let new_backup_min = session(Minimum::default())
        .add(2, "WRITE KEY ELEMENT 2..3")
        .add(1, "IMPORT KEY")
        .add(1, "UNWRAP FILE KEY (end-to-end check)");
    // How the new card stays at its minimum: one card session for the run.
    let why = "; one card session for the whole run: the secure channel opened and the PIN verified once, the \
               card's status, certificate store, domain, storage rules and application table read once and \
               handed from step to step (a key group the file recovery completed is not written again by the \
               duplication); a step resumed in a new process reads again what it needs";
    let r = apdus::row(
        "replace: new card (1 backup, 1 wallet item, 1 file)",
        sn,
        &new_min,
        Some(payload),
    );
    let detail = r.detail.clone().unwrap_or_default();
    s.row(r.detail(format!("{detail}{why}")));
    s.row(apdus::row("replace: old backup card", sb, &backup_min, None));
    s.row(apdus::row("replace: new backup card", snb, &new_backup_min, None));
    let total = apdus::add(apdus::add(sn, sb), snb);
    let total_min = Minimum::default()
        .add(new_min.total(), "new card")
        .add(backup_min.total(), "old backup card")
        .add(new_backup_min.total(), "new backup card");
    s.row(apdus::row("replace: all three cards", total, &total_min, None));
    Ok(())
}
