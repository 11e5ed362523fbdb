//! Part 8: the electronic wallet and safe. Deposit and withdraw APDUs on
//! the wire against their minimum (embedded card and safe, counted by
//! `Channel::stats`), and deposits per second into one `cardvault safe
//! serve` process from 4 terminals side by side (each its own embedded card,
//! each deposit a full exchange: card session, DEPOSIT, two HTTP requests,
//! the vault's copy, DEPOSIT complete).

use super::proc::cardvault;
use super::{Config, Part, Row, Section, Unit};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::safe::{SafeAddress, SafeClient};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::deposit::{self as wd, CertificateSource};
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
        "Electronic wallet and safe: APDUs per exchange, deposits per second",
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

    progress("wallet: deposits per second from 4 terminals into one safe serve");
    let ids: Vec<Vec<String>> = (0..TERMINALS)
        .map(|t| load(&dir, &format!("terminal-{t}"), DEPOSITS_EACH, &signer))
        .collect::<Result<_>>()?;
    let mut child = cardvault(&cfg.exe, &dir)
        .args(["safe", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&safe_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting safe serve", e))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| Error::io("reading safe serve", e))?;
    let url = line.trim().strip_prefix("listening on ").map(|a| format!("http://{a}"));
    let result = match url {
        Some(url) => {
            let started = Instant::now();
            let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
                let handles: Vec<_> = ids
                    .iter()
                    .enumerate()
                    .map(|(t, items)| {
                        let (dir, url) = (&dir, &url);
                        scope.spawn(move || -> Result<()> {
                            let addr = SafeAddress::Http(url.clone());
                            let mut safe = SafeClient::connect(&addr)?;
                            let mut vault = Vault::open(&dir.join(format!("vault-{t}.sqlite")))?;
                            for id in items {
                                let mut r = SimReader::open(dir, &format!("terminal-{t}"), "main", None)?;
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
            let secs = started.elapsed().as_secs_f64();
            outcomes.into_iter().collect::<Result<Vec<()>>>().map(|_| secs)
        }
        None => Err(Error::Data(format!("safe serve said {line:?}"))),
    };
    let _ = child.kill();
    let _ = child.wait();
    let secs = result?;
    let n = TERMINALS * DEPOSITS_EACH;
    s.row(
        Row::new("deposits into one safe from 4 terminals", n as f64 / secs, Unit::PerSec).detail(format!(
            "{n} deposits in {secs:.2} s; each a card session (SCP11b, VERIFY, 2 DEPOSIT), 2 HTTP requests to \
             one `safe serve` (SQLite WAL, synchronous FULL, a signed checkpoint per deposit) and the vault's copy"
        )),
    );
    s.note("the safe serves one request at a time: the 4 terminals' card work runs in parallel, the ledger's commits in turn");
    Ok(s)
}
