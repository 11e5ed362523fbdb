//! Part 4: backup and restore throughput on embedded cards, end to end
//! through the workflow (card crypto, APDUs, the vault in WAL mode with
//! synchronous=FULL, the simulator's state writes), for a 64 KiB and a 1 MiB
//! card, with the card state in version 2 files against version 1; a chain restore of many differentials; and the vault's
//! size against the raw ciphertext it holds.

use super::cards::{self, PROFILE_PIN};
use super::proc::{interleave, Samples};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use applet_sim::state::Layout;
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::backup as wb;
use std::path::Path;
use std::time::Instant;

const TITLE: &str = "Backup and restore throughput (embedded cards, through the vault)";

fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One backup; returns seconds and APDUs.
fn backup(r: &mut SimReader, vault: &mut Vault, full: bool) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    wb::backup(&mut c, vault, full, &|_, _| {})?;
    Ok((secs_since(t), c.stats().apdus))
}

/// Restore the newest backup's chain onto the same card; returns seconds and APDUs.
fn restore(r: &mut SimReader, vault: &mut Vault) -> Result<(f64, u64)> {
    let t = Instant::now();
    let number = r.card().state().card_number.clone();
    let last = vault
        .latest_backup(&number)?
        .ok_or_else(|| Error::Data("the benchmark backup is missing".into()))?;
    let plan = wb::RestorePlan {
        chain: vault.chain_to(&last)?,
        authorization: None,
        override_rollback: false,
        agreements: &[],
    };
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    wb::restore(&mut c, vault, &plan, &|_, _| {})?;
    Ok((secs_since(t), c.stats().apdus))
}

/// Median time of a one-page WRITE MEMORY (one simulator state write:
/// the page and the card's change flag) over `n` writes.
fn one_page_write(r: &mut SimReader, n: usize) -> Result<Samples> {
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    let mut write = Samples::default();
    for i in 0..n + 1 {
        let t = Instant::now();
        c.write_memory(255, &[i as u8 ^ 0x5A; 256])?;
        if i > 0 {
            write.push(secs_since(t));
        }
    }
    Ok(write)
}

/// (vault bytes on disk after a checkpoint, raw ciphertext bytes it holds).
fn vault_sizes(path: &Path) -> Result<(u64, u64)> {
    let err = |e: rusqlite::Error| Error::vault(path, e);
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(err)?;
    let blobs: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(length(header) + length(trailer)), 0) FROM backups",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let records: i64 = conn
        .query_row("SELECT COALESCE(SUM(length(data)), 0) FROM records", [], |r| r.get(0))
        .map_err(err)?;
    drop(conn);
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok((len(path) + len(Path::new(&wal)), (blobs + records) as u64))
}

fn overhead_row(s: &mut Section, what: &str, path: &Path) -> Result<()> {
    let (disk, raw) = vault_sizes(path)?;
    s.row(
        Row::new(format!("vault size, {what}"), disk as f64, Unit::Bytes)
            .against("raw ciphertext", raw as f64)
            .detail("database + WAL after a checkpoint, audit trail included; ratio = overhead factor"),
    );
    Ok(())
}

/// One card of the comparison: its reader, its vault, its state file.
struct Bench {
    r: SimReader,
    vault: Vault,
    vault_path: std::path::PathBuf,
    state_path: std::path::PathBuf,
}

fn open_card(dir: &Path, name: &str, profile: &str, bytes: usize, layout: Layout) -> Result<Bench> {
    let vault_path = dir.join(format!("{name}.sqlite"));
    let vault = Vault::open(&vault_path)?;
    // The layout is chosen when the card is opened; later cards are paged again.
    applet_sim::state::set_layout(layout);
    let r = cards::open(dir, name, profile);
    applet_sim::state::set_layout(Layout::Paged);
    let mut r = r?;
    cards::fill_reader(&mut r, bytes)?;
    Ok(Bench {
        r,
        vault,
        vault_path,
        state_path: cardvault::transport::sim::card_path(dir, name),
    })
}

fn file_len(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len() as f64).unwrap_or(f64::NAN)
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("backup")?;
    let mut s = Section::new(
        Part::Backup,
        format!(
            "{TITLE}, median of {} rounds; the card state in version 2 files (JSON state + page file under a \
             journal) against version 1 (one JSON file, memory in hex, written whole), interleaved",
            cfg.rounds
        ),
    );
    let big_profile = cards::large_profile(&dir, 4096)?;
    let big = big_profile.to_str().expect("utf-8 path").to_string();
    // (paged, whole file) one-page write samples per card size.
    let mut writes = Vec::new();
    for (label, name, profile, bytes) in [
        ("64 KiB card", "card64k", "main", 65536usize),
        ("1 MiB card", "card1m", big.as_str(), 1 << 20),
    ] {
        progress(&format!("backup: {label}"));
        let new = std::cell::RefCell::new(open_card(&dir, name, profile, bytes, Layout::Paged)?);
        let old = std::cell::RefCell::new(open_card(
            &dir,
            &format!("{name}-v1"),
            profile,
            bytes,
            Layout::WholeFile,
        )?);
        let apdus = std::cell::Cell::new((0, 0));
        let run_backup = |b: &std::cell::RefCell<Bench>| -> Result<f64> {
            let b = &mut *b.borrow_mut();
            let (t, n) = backup(&mut b.r, &mut b.vault, true)?;
            apdus.set((n, apdus.get().1));
            Ok(t)
        };
        let run_restore = |b: &std::cell::RefCell<Bench>| -> Result<f64> {
            let b = &mut *b.borrow_mut();
            let (t, n) = restore(&mut b.r, &mut b.vault)?;
            apdus.set((apdus.get().0, n));
            Ok(t)
        };
        let samples = interleave(
            cfg.rounds,
            &mut [
                &mut || run_backup(&new),
                &mut || run_restore(&new),
                &mut || run_backup(&old),
                &mut || run_restore(&old),
            ],
        )?;
        let (mut new, mut old) = (new.into_inner(), old.into_inner());
        // One-page writes, interleaved in blocks of 5.
        let (mut w_new, mut w_old) = (Samples::default(), Samples::default());
        for _ in 0..4 {
            w_new.0.extend(one_page_write(&mut new.r, 5)?.0);
            w_old.0.extend(one_page_write(&mut old.r, 5)?.0);
        }
        let mib = bytes as f64 / (1024.0 * 1024.0);
        for (i, what) in ["full backup", "restore"].into_iter().enumerate() {
            let n = if i == 0 { apdus.get().0 } else { apdus.get().1 };
            let (t_new, t_old) = (samples[i].median(), samples[i + 2].median());
            let mut row = Row::new(format!("{what}, {label}"), mib / t_new, Unit::MibPerSec)
                .against("version 1 file", mib / t_old)
                .detail(format!(
                    "{} per {what} ({n} APDUs) against {}; {} against {}",
                    Unit::Millis.format(t_new * 1e3),
                    Unit::Millis.format(t_old * 1e3),
                    samples[i].scaled(1e3).spread(Unit::Millis),
                    samples[i + 2].scaled(1e3).spread(Unit::Millis)
                ));
            if i == 0 && bytes == 1 << 20 {
                row = row.goal(Goal::ratio(Op::Ge, 2.0));
            }
            s.row(row);
        }
        s.note(format!(
            "{label}: a one-page WRITE MEMORY (one state write) takes {} with version 2 files (one journal \
             record: the {} JSON state and the page, fdatasync; then the page in place) and {} with a version 1 \
             file (the whole {} rewritten, fsync, rename, directory fsync); a backup makes 2 state writes (BACKUP \
             counter, BACKUP COMPLETE: records without pages), a restore 1 (every page in the record)",
            Unit::Millis.format(w_new.median() * 1e3),
            Unit::Bytes.format(file_len(&new.state_path)),
            Unit::Millis.format(w_old.median() * 1e3),
            Unit::Bytes.format(file_len(&old.state_path)),
        ));
        writes.push((w_new, w_old));
        drop((new.r, old.r, old.vault));
        drop(new.vault);
        overhead_row(
            &mut s,
            &format!("{label} ({} full backups)", cfg.rounds + 1),
            &new.vault_path,
        )?;
        let _ = old.vault_path;
    }
    let (small, large) = (&writes[0], &writes[1]);
    s.row(
        Row::new("one-page write, 1 MiB card", large.0.median() * 1e3, Unit::Millis)
            .against("64 KiB card", small.0.median() * 1e3)
            .goal(Goal::ratio(Op::Le, 1.5))
            .detail(format!(
                "WRITE MEMORY of 256 bytes through CardClient, median of {}; version 1 files: {} against {} ({:.2}x)",
                large.0 .0.len(),
                Unit::Millis.format(large.1.median() * 1e3),
                Unit::Millis.format(small.1.median() * 1e3),
                large.1.median() / small.1.median()
            )),
    );
    chain(cfg, &dir, &mut s, progress)?;
    Ok(s)
}

/// A full backup, `cfg.chain` differentials of two changed pages each, then
/// the whole chain restored.
fn chain(cfg: &Config, dir: &Path, s: &mut Section, progress: &dyn Fn(&str)) -> Result<()> {
    let n = cfg.chain.max(1);
    progress(&format!("backup: chain of {n} differentials"));
    let vault_path = dir.join("chain.sqlite");
    let mut vault = Vault::open(&vault_path)?;
    let mut r = cards::open(dir, "chain", "main")?;
    cards::fill_reader(&mut r, 65536)?;
    backup(&mut r, &mut vault, true)?;
    let mut diffs = Samples::default();
    for i in 0..n {
        {
            let mut c = CardClient::open(&mut r, SessionOptions::default())?;
            c.verify_pin(PROFILE_PIN)?;
            let data = cardvault_proto::crypto::random::<32>().repeat(8);
            c.write_memory(4 + (i * 2 % 252) as u16, &data)?;
            c.write_memory(4 + ((i * 2 + 101) % 252) as u16, &data)?;
        }
        diffs.push(backup(&mut r, &mut vault, false)?.0);
    }
    s.row(
        Row::new(
            "differential backup, 2 changed pages",
            diffs.median() * 1e3,
            Unit::Millis,
        )
        .detail(format!("median of the {n} differentials of the chain")),
    );
    let mut restores = Samples::default();
    let mut apdus = 0;
    for _ in 0..cfg.rounds.max(1) {
        let (t, a) = restore(&mut r, &mut vault)?;
        restores.push(t);
        apdus = a;
    }
    s.row(
        Row::new(
            format!("chain restore, full + {n} differentials"),
            restores.median() * 1e3,
            Unit::Millis,
        )
        .detail(format!(
            "{apdus} APDUs; {} per backup of the chain; {}",
            Unit::Millis.format(restores.median() * 1e3 / (n + 1) as f64),
            restores.scaled(1e3).spread(Unit::Millis)
        )),
    );
    drop(vault);
    overhead_row(s, &format!("chain of 1 full + {n} differentials"), &vault_path)
}
