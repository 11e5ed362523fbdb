//! Part 1: APDUs on the wire per workflow, against the minimum its data needs.
//!
//! Each workflow runs on embedded cards (the count does not depend on the
//! transport) and is counted by [`Channel::stats`](cardvault::apdu::Channel::stats),
//! SELECT included. The minimum is the data divided by the largest APDU data
//! field (65535 bytes of command data, 65533 bytes of response data: a vpcd
//! frame is 65535 bytes with the status word) plus the fixed commands the
//! protocol defines for the job: per card one SELECT, one status read and the
//! PIN (or issuer authentication), then the job's own commands. Every card
//! session that sends a PIN or a secret opens SCP11b first: GET DATA `BF21`
//! (the card's certificate, one answer with extended length, three short
//! ones) and INTERNAL AUTHENTICATE are part of the minimum. A read of
//! something the card already reported (in its status template, or in an
//! earlier answer) is not part of the minimum; that is what this part exists
//! to find. Goal: within 1.1x of the minimum.

use super::cards::{self, PROFILE_PIN};
use super::proc::{cardvault, run_child};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::apdu::Stats;
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::issue::Role;
use cardvault::workflow::{backup as wb, duplicate, files as wf, issue};
use cardvault_proto::backup as bk;
use std::path::Path;

/// The SCP11b handshake of a card session: GET DATA `BF21` (the card
/// certificate in one extended answer) and INTERNAL AUTHENTICATE.
pub(crate) const HANDSHAKE: u64 = 2;
/// The same with short APDUs only: the certificate (about 550 bytes) comes in
/// three answers (GET DATA and two GET RESPONSE).
const HANDSHAKE_SHORT: u64 = 4;

/// Largest command data field (extended Lc).
pub(crate) const MAX_COMMAND_DATA: u64 = 65535;
/// Largest response data field: a vpcd frame (65535 bytes) minus the status word.
const MAX_RESPONSE_DATA: u64 = bk::MAX_BLOCK as u64;

/// The fixed commands and data APDUs a workflow cannot do without.
#[derive(Default)]
pub(crate) struct Minimum(Vec<(u64, String)>);

impl Minimum {
    pub(crate) fn add(mut self, n: u64, what: &str) -> Minimum {
        if n > 0 {
            self.0.push((n, what.to_string()));
        }
        self
    }

    /// `bytes` of data in APDUs of at most `max` bytes each.
    pub(crate) fn data(self, bytes: u64, max: u64, what: &str) -> Minimum {
        self.add(bytes.div_ceil(max).max(1), what)
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.iter().map(|(n, _)| n).sum()
    }

    pub(crate) fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(n, w)| format!("{n} {w}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

pub(crate) fn add(a: Stats, b: Stats) -> Stats {
    Stats {
        apdus: a.apdus + b.apdus,
        bytes_out: a.bytes_out + b.bytes_out,
        bytes_in: a.bytes_in + b.bytes_in,
    }
}

pub(crate) fn row(name: &str, actual: Stats, min: &Minimum, payload: Option<u64>) -> Row {
    let bytes = match payload {
        Some(p) => format!(
            "; {} B out + {} B in for {} B of data",
            super::human_count(actual.bytes_out),
            super::human_count(actual.bytes_in),
            super::human_count(p)
        ),
        None => format!(
            "; {} B out + {} B in",
            super::human_count(actual.bytes_out),
            super::human_count(actual.bytes_in)
        ),
    };
    Row::new(name, actual.apdus as f64, Unit::Apdus)
        .against("min", min.total() as f64)
        .goal(Goal::ratio(Op::Le, 1.1))
        .detail(format!("minimum: {}{bytes}", min.describe()))
}

fn stats(c: &mut CardClient<'_>) -> Stats {
    c.stats()
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("apdus")?;
    let mut vault = Vault::open(&dir.join("vault.sqlite"))?;
    let mut s = Section::new(
        Part::Apdus,
        "APDUs on the wire per workflow (embedded cards, counted by Channel::stats)",
    );
    progress("apdus: issue and duplicate");
    issue_pair(&dir, &mut s)?;
    duplicate_pair(&dir, &mut vault, &mut s)?;
    progress("apdus: backup and restore");
    backups(cfg, &dir, &mut vault, &mut s)?;
    progress("apdus: recover");
    recover(&dir, &mut vault, &mut s)?;
    progress("apdus: the CLI, counted from --trace");
    cli_counts(cfg, &dir, &mut s)?;
    s.note(
        "the minimum counts one status read per card: the card status template carries the key group, the \
         main key and the export state, so any further read of them is above the minimum",
    );
    Ok(s)
}

/// Issuance of a main and a backup card from blank cards.
fn issue_pair(dir: &Path, s: &mut Section) -> Result<()> {
    let h = cards::holder("issue");
    let key1 = cardvault_proto::crypto::random::<32>();
    let opts = cards::issue_options()?;
    let mut total = Stats::default();
    for role in [Role::Main, Role::Backup] {
        let mut r = cards::open(dir, &format!("issue-{role}"), "blank")?;
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        issue::personalize(&mut c, &h, role, &key1, &opts)?;
        total = add(total, stats(&mut c));
    }
    // Per card: the issuer's SCP11a session (GET DATA BF21, the operator's
    // root and certificate, MUTUAL AUTHENTICATE), the registration
    // certificate, a second SCP11a session with the card's new key, which
    // proves the card holds it and accepts the issuer under its root, the
    // signing key and its certificate, and the registrar roots. (The
    // terminal also reads the signing certificate back: not in the minimum.)
    let min = Minimum::default()
        .add(2, "SELECT")
        .add(2, "status")
        .add(8, "SCP11a session")
        .add(2, "RESET RETRY COUNTER")
        .add(7, "PUT DATA (5 main, 2 backup)")
        .add(2, "WRITE KEY ELEMENT 1")
        .add(4, "GENERATE ECKA KEY + PUT DATA BF21 (registration certificate)")
        .add(8, "SCP11a session with the new key")
        .add(4, "GENERATE SIGNING KEY + PUT DATA DF35 (signing key certificate)")
        .add(4, "PUT DATA BF23 + BF24 (registrar roots)")
        .add(2, "END PERSONALIZATION")
        .add(2, "read-back status");
    s.row(row("issue a main + backup card", total, &min, None));
    Ok(())
}

/// Duplication of a freshly issued pair (key group of 3, key generated now).
fn duplicate_pair(dir: &Path, vault: &mut Vault, s: &mut Section) -> Result<()> {
    let h = cards::holder("dup");
    let key1 = cardvault_proto::crypto::random::<32>();
    let mut m = cards::issue_card(dir, "dup-main", &h, Role::Main, &key1)?;
    let mut b = cards::issue_card(dir, "dup-backup", &h, Role::Backup, &key1)?;
    let mut mc = CardClient::open(&mut m, SessionOptions::default())?;
    let mut bc = CardClient::open(&mut b, SessionOptions::default())?;
    let opts = duplicate::DuplicateOptions {
        main_pin: h.pin.clone(),
        backup_pin: h.pin.clone(),
        elements: cards::elements(2),
        backup_gets_public_key: false,
    };
    duplicate::duplicate(&mut mc, &mut bc, &opts, vault)?;
    let total = add(stats(&mut mc), stats(&mut bc));
    s.row(row("duplicate (workflow)", total, &duplicate_minimum(), None));
    Ok(())
}

fn duplicate_minimum() -> Minimum {
    Minimum::default()
        .add(2, "SELECT")
        .add(2, "status")
        .add(HANDSHAKE * 2, "SCP11b handshake")
        .add(2, "VERIFY")
        .add(4, "WRITE KEY ELEMENT 2..3 (the last answers the check value)")
        .add(1, "GENERATE KEY PAIR")
        .add(1, "TAKE OUT KEY")
        .add(1, "IMPORT KEY")
        .add(1, "CONFIRM DUPLICATE")
        .add(1, "UNWRAP FILE KEY (end-to-end check)")
}

/// Bytes of the backups in `chain` as stored (records and trailers), and
/// their minimum: per backup its header, then records and trailer packed
/// into as few RESTORE DATA commands as the command data field allows.
fn restore_minimum(vault: &Vault, chain: &[cardvault::vault::BackupRow]) -> Result<(Minimum, u64)> {
    let mut payload = 0;
    let mut data_apdus = 0;
    for row in chain {
        let b = vault.load_backup(row.id)?;
        let bytes = b.records.iter().map(|r| r.len() as u64).sum::<u64>() + b.trailer.len() as u64;
        data_apdus += bytes.div_ceil(MAX_COMMAND_DATA);
        payload += bytes;
    }
    let min = Minimum::default()
        .add(1, "SELECT")
        .add(1, "status")
        .add(HANDSHAKE, "SCP11b handshake")
        .add(1, "VERIFY")
        .add(1, "GET DATA DF34 (storage rules)")
        .add(chain.len() as u64, "RESTORE (header)")
        .add(data_apdus, "RESTORE DATA (records + trailer)")
        .add(1, "RESTORE COMPLETE");
    Ok((min, payload))
}

/// Restore the newest backup of the card in `r` (its whole chain) onto it:
/// SELECT + VERIFY + the workflow.
fn restore_latest(r: &mut SimReader, vault: &mut Vault) -> Result<(Stats, Vec<cardvault::vault::BackupRow>)> {
    let number = r.card().state().card_number.clone();
    let last = vault
        .latest_backup(&number)?
        .ok_or_else(|| Error::Data("the benchmark backup is missing".into()))?;
    let chain = vault.chain_to(&last)?;
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    let plan = wb::RestorePlan {
        chain: chain.clone(),
        authorization: None,
        override_rollback: false,
        agreements: &[],
    };
    wb::restore(&mut c, vault, &plan, &|_, _| {})?;
    Ok((stats(&mut c), chain))
}

/// One backup of the card in `r`; returns what went over the wire.
fn backup_once(r: &mut SimReader, vault: &mut Vault, full: bool) -> Result<Stats> {
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    wb::backup(&mut c, vault, full, &|_, _| {})?;
    Ok(stats(&mut c))
}

fn backup_minimum(payload: u64, max: u64) -> Minimum {
    let handshake = if max < MAX_RESPONSE_DATA {
        HANDSHAKE_SHORT
    } else {
        HANDSHAKE
    };
    Minimum::default()
        .add(1, "SELECT")
        .add(handshake, "SCP11b handshake")
        .add(1, "VERIFY")
        .data(payload, max, "BACKUP/BACKUP DATA blocks")
        .add(1, "BACKUP COMPLETE")
}

fn write_pages(r: &mut SimReader, pages: &[u16], page_size: usize) -> Result<()> {
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    for p in pages {
        let data = cardvault_proto::crypto::random::<32>().repeat(page_size / 32);
        c.write_memory(*p, &data)?;
    }
    Ok(())
}

fn backups(cfg: &Config, dir: &Path, vault: &mut Vault, s: &mut Section) -> Result<()> {
    // A 64 KiB card: full backup, restore, differential, chain restore.
    let mut r = cards::open(dir, "b64", "main")?;
    cards::fill_reader(&mut r, 65536)?;
    let st = backup_once(&mut r, vault, true)?;
    s.row(row(
        "full backup, 64 KiB card",
        st,
        &backup_minimum(65536, MAX_RESPONSE_DATA),
        Some(65536),
    ));
    let (st, chain) = restore_latest(&mut r, vault)?;
    let (min, payload) = restore_minimum(vault, &chain)?;
    s.row(row("restore, 64 KiB card (same card)", st, &min, Some(payload)));

    let changed: Vec<u16> = (0..8).map(|i| 4 + i * 31).collect();
    write_pages(&mut r, &changed, 256)?;
    let st = backup_once(&mut r, vault, false)?;
    s.row(row(
        "differential backup, 8 changed pages",
        st,
        &backup_minimum(8 * 256, MAX_RESPONSE_DATA),
        Some(8 * 256),
    ));
    let diffs = cfg.chain.clamp(2, 10);
    for i in 1..diffs {
        write_pages(&mut r, &[4 + (i * 7 % 252) as u16, 4 + (i * 13 % 252) as u16], 256)?;
        backup_once(&mut r, vault, false)?;
    }
    let (st, chain) = restore_latest(&mut r, vault)?;
    let (min, payload) = restore_minimum(vault, &chain)?;
    s.row(row(
        &format!("chain restore, full + {diffs} differentials"),
        st,
        &min,
        Some(payload),
    ));

    // The same card behind a reader limited to short APDUs (chaining, GET RESPONSE).
    let mut short = SimReader::open(dir, "b64-short", "main", Some(false))?;
    cards::fill_reader(&mut short, 65536)?;
    let st = backup_once(&mut short, vault, true)?;
    s.row(row(
        "full backup, 64 KiB card, short APDUs only",
        st,
        &backup_minimum(65536, 256),
        Some(65536),
    ));

    // A 1 MiB card.
    let profile = cards::large_profile(dir, 4096)?;
    let mut big = cards::open(dir, "b1m", profile.to_str().expect("utf-8 path"))?;
    cards::fill_reader(&mut big, 1 << 20)?;
    let st = backup_once(&mut big, vault, true)?;
    s.row(row(
        "full backup, 1 MiB card",
        st,
        &backup_minimum(1 << 20, MAX_RESPONSE_DATA),
        Some(1 << 20),
    ));
    let (st, chain) = restore_latest(&mut big, vault)?;
    let (min, payload) = restore_minimum(vault, &chain)?;
    s.row(row("restore, 1 MiB card", st, &min, Some(payload)));
    Ok(())
}

/// Recovery of 3 files from a duplicated backup card onto a new main card that
/// generates its key, as `cardvault recover --elements` does it.
fn recover(dir: &Path, vault: &mut Vault, s: &mut Section) -> Result<()> {
    let pair = cards::duplicated_pair(dir, "rec", vault)?;
    let files = encrypt_files(dir, "rec", &pair.public)?;
    drop(pair.main);
    let mut backup_r = pair.backup;
    let mut new_r = cards::issue_card(dir, "rec-new-main", &pair.holder, Role::Main, &pair.key1)?;
    let mut b = CardClient::open(&mut backup_r, SessionOptions::default())?;
    let mut n = CardClient::open(&mut new_r, SessionOptions::default())?;
    b.status()?;
    let (_, keys) = n.overview()?;
    b.verify_pin(&pair.holder.pin)?;
    n.verify_pin(&pair.holder.pin)?;
    if keys.public_key.is_some() {
        return Err(Error::Data("the new main card already has a key".into()));
    }
    for (i, e) in cards::elements(keys.group_size.saturating_sub(1) as usize)
        .iter()
        .enumerate()
    {
        n.write_key_element(i as u8 + 2, e)?;
    }
    let public = n.generate_key_pair()?;
    for f in &files {
        wf::recover_file(&mut b, &mut n, &public, f)?;
    }
    let total = add(stats(&mut b), stats(&mut n));
    s.row(row("recover 3 files (workflow)", total, &recover_minimum(3), None));
    Ok(())
}

fn recover_minimum(files: u64) -> Minimum {
    Minimum::default()
        .add(2, "SELECT")
        .add(2, "status")
        .add(HANDSHAKE * 2, "SCP11b handshake")
        .add(2, "VERIFY")
        .add(2, "WRITE KEY ELEMENT 2..3")
        .add(1, "GENERATE KEY PAIR")
        .add(files, "UNWRAP FILE KEY (backup card)")
        .add(files, "UNWRAP FILE KEY (new card's check)")
}

/// Three small files encrypted to `public`.
fn encrypt_files(dir: &Path, tag: &str, public: &[u8]) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for (i, size) in [10_000usize, 100_000, 1_000_000].into_iter().enumerate() {
        let plain = dir.join(format!("{tag}-{i}.txt"));
        super::write_file(&plain, &vec![i as u8 + 1; size])?;
        let enc = plain.with_extension("cve");
        cardvault::fileenc::encrypt_file(&plain, &enc, public, true).map_err(|e| wf::file_error(&enc, e))?;
        out.push(enc);
    }
    Ok(out)
}

/// The real CLI: count the APDUs `--trace` prints (one "> " line each on the
/// wire; a protected command's plaintext line, "> [SCP11] ...", is not one).
fn traced_apdus(cfg: &Config, home: &Path, args: &[&str], files: &[std::path::PathBuf]) -> Result<u64> {
    let mut c = cardvault(&cfg.exe, home);
    c.env("CV_PIN", cards::HOLDER_PIN)
        .env("CV_ELEMENTS", format!("{}\n{}", "11".repeat(32), "22".repeat(32)))
        .arg("--trace")
        .args(args)
        .args(files);
    let run = run_child(&mut c)?;
    Ok(String::from_utf8_lossy(&run.stderr)
        .lines()
        .filter(|l| l.starts_with("> ") && !l.starts_with("> [SCP11]"))
        .count() as u64)
}

fn cli_counts(cfg: &Config, dir: &Path, s: &mut Section) -> Result<()> {
    let home = dir.join("cli");
    let h = cards::holder("cli");
    let key1 = cardvault_proto::crypto::random::<32>();
    drop(cards::issue_card(&home, "cli-main", &h, Role::Main, &key1)?);
    drop(cards::issue_card(&home, "cli-backup", &h, Role::Backup, &key1)?);
    let n = traced_apdus(
        cfg,
        &home,
        &[
            "duplicate",
            "--main",
            "sim:cli-main",
            "--backup",
            "sim:cli-backup",
            "--pin",
            "env:CV_PIN",
            "--backup-pin",
            "env:CV_PIN",
            "--elements",
            "generate",
        ],
        &[],
    )?;
    let min = duplicate_minimum();
    s.row(
        Row::new("duplicate (CLI, --elements generate)", n as f64, Unit::Apdus)
            .against("min", min.total() as f64)
            .goal(Goal::ratio(Op::Le, 1.1))
            .detail("counted from --trace; the minimum as for the workflow"),
    );

    let public = {
        let mut m = cards::open(&home, "cli-main", "blank")?;
        let mut c = CardClient::open(&mut m, SessionOptions::default())?;
        c.public_key()?
            .ok_or_else(|| Error::Data("the duplicated card has no key".into()))?
    };
    let files = encrypt_files(&home, "cli", &public)?;
    drop(cards::issue_card(&home, "cli-new-main", &h, Role::Main, &key1)?);
    let n = traced_apdus(
        cfg,
        &home,
        &[
            "recover",
            "--backup",
            "sim:cli-backup",
            "--new",
            "sim:cli-new-main",
            "--backup-pin",
            "env:CV_PIN",
            "--new-pin",
            "env:CV_PIN",
            "--elements",
            "env:CV_ELEMENTS",
        ],
        &files,
    )?;
    let min = recover_minimum(3);
    s.row(
        Row::new("recover 3 files (CLI, --elements)", n as f64, Unit::Apdus)
            .against("min", min.total() as f64)
            .goal(Goal::ratio(Op::Le, 1.1))
            .detail("counted from --trace; the minimum as for the workflow"),
    );
    Ok(())
}
