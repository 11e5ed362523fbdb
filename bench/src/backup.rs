//! Part 4: backup and restore throughput on embedded cards, end to end
//! through the workflow (card crypto, APDUs, the vault in WAL mode with
//! synchronous=FULL, the simulator's atomic state writes), for a 64 KiB and
//! a 1 MiB card; a chain restore of many differentials; and the vault's
//! size against the raw ciphertext it holds.

use super::cards::{self, PROFILE_PIN};
use super::proc::{interleave, Samples};
use super::{Config, Part, Row, Section, Unit};
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

/// Median time of one simulator state write (a 1-page WRITE MEMORY), and of
/// the JSON encoding of the card state that every state write starts with.
fn state_write(r: &mut SimReader) -> Result<(f64, f64)> {
    let mut encode = Samples::default();
    for _ in 0..5 {
        let t = Instant::now();
        let bytes = serde_json::to_vec(r.card().state()).map_err(|e| Error::Data(e.to_string()))?;
        encode.push(secs_since(t));
        drop(bytes);
    }
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    let mut write = Samples::default();
    for i in 0..5u8 {
        let t = Instant::now();
        c.write_memory(255, &[i; 256])?;
        write.push(secs_since(t));
    }
    Ok((write.median(), encode.median()))
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

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("backup")?;
    let mut s = Section::new(Part::Backup, format!("{TITLE}, median of {} rounds", cfg.rounds));
    let big_profile = cards::large_profile(&dir, 4096)?;
    let big = big_profile.to_str().expect("utf-8 path").to_string();
    for (label, name, profile, bytes) in [
        ("64 KiB card", "card64k", "main", 65536usize),
        ("1 MiB card", "card1m", big.as_str(), 1 << 20),
    ] {
        progress(&format!("backup: {label}"));
        let vault_path = dir.join(format!("{name}.sqlite"));
        let mut vault = Vault::open(&vault_path)?;
        let mut r = cards::open(&dir, name, profile)?;
        cards::fill_reader(&mut r, bytes)?;
        let apdus = std::cell::Cell::new((0, 0));
        let (r_cell, v_cell) = (std::cell::RefCell::new(&mut r), std::cell::RefCell::new(&mut vault));
        let samples = interleave(
            cfg.rounds,
            &mut [
                &mut || {
                    let (t, n) = backup(&mut r_cell.borrow_mut(), &mut v_cell.borrow_mut(), true)?;
                    apdus.set((n, apdus.get().1));
                    Ok(t)
                },
                &mut || {
                    let (t, n) = restore(&mut r_cell.borrow_mut(), &mut v_cell.borrow_mut())?;
                    apdus.set((apdus.get().0, n));
                    Ok(t)
                },
            ],
        )?;
        let commit = state_write(&mut r)?;
        let mib = bytes as f64 / (1024.0 * 1024.0);
        for (i, what) in ["full backup", "restore"].into_iter().enumerate() {
            let n = if i == 0 { apdus.get().0 } else { apdus.get().1 };
            s.row(
                Row::new(format!("{what}, {label}"), mib / samples[i].median(), Unit::MibPerSec).detail(format!(
                    "{} per {what} ({n} APDUs); {}",
                    Unit::Millis.format(samples[i].median() * 1e3),
                    samples[i].scaled(1e3).spread(Unit::Millis)
                )),
            );
        }
        let state_len = serde_json::to_vec(r.card().state()).map(|v| v.len()).unwrap_or(0);
        s.note(format!(
            "{label}: one simulator state write (the whole {} state file as JSON with the memory in hex, fsync, \
             rename, directory fsync) takes {}, {} of it the JSON encoding; a backup makes 2 (BACKUP counter, \
             BACKUP COMPLETE), a restore 1",
            Unit::Bytes.format(state_len as f64),
            Unit::Millis.format(commit.0 * 1e3),
            Unit::Millis.format(commit.1 * 1e3)
        ));
        drop(vault);
        overhead_row(
            &mut s,
            &format!("{label} ({} full backups)", cfg.rounds + 1),
            &vault_path,
        )?;
    }
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
