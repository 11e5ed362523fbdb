//! Part 5: batch issuance plus duplication of N holder pairs, with 2 reader
//! pairs (stations) working in parallel against 1, through the real CLI
//! (`cardvault issue --profile pair` then `cardvault duplicate --holders`,
//! each with one `--main/--backup` per station).
//!
//! The stations are embedded-card feeders (sim:PREFIX), so the figure is
//! cardvault's own throughput (card crypto, state files, the vault's audit
//! trail) with no card handling in between. With `--setup-readers` the same
//! batch also runs through pcscd on eight virtual readers, with 1, 2 and 4
//! stations (see [`super::robot`]). Goal: 2 pairs give ≥ 1.8x the
//! throughput of 1; 4 pairs are reported.

use super::proc::{cardvault, interleave, run_child, Samples};
use super::stack::PrivatePcscd;
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::error::{Error, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

const TITLE: &str = "Batch issuance + duplication of holder pairs, 2 reader pairs against 1";
/// A holder file of `n` holders (PIN 2468, member numbers M-h0001...).
pub fn holder_file(dir: &Path, n: usize) -> Result<PathBuf> {
    let mut text = String::from("holder,pin,member_number,expiry\n");
    for i in 1..=n {
        text.push_str(&format!("h{i:04},{},M-h{i:04},2030-12\n", super::cards::HOLDER_PIN));
    }
    let path = dir.join(format!("holders-{n}.csv"));
    super::write_file(&path, text.as_bytes())?;
    Ok(path)
}

/// The summary of a batch command's `--json` output: the whole output when it
/// is one JSON document (`issue`), else its last line (`duplicate --holders`
/// reports each holder on a line of its own as it finishes, then the totals).
pub fn last_json_line(stdout: &[u8]) -> Result<serde_json::Value> {
    if let Ok(v) = serde_json::from_slice(stdout) {
        return Ok(v);
    }
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(last).map_err(|e| Error::Data(format!("batch report is not JSON: {e}")))
}

/// One configuration's run: wall seconds and CPU seconds of issue and duplicate.
#[derive(Default, Clone, Copy)]
pub struct BatchRun {
    pub issue: f64,
    pub duplicate: f64,
    pub cpu: f64,
}

/// `cardvault issue` then `cardvault duplicate --holders` with `stations`
/// (main, backup) reader specs, in a fresh data directory `home` (the
/// embedded cards' state files are in `home/cards`); the vault is in `home`
/// too, or in the fresh directory `vault_dir`.
pub fn issue_and_duplicate(
    cfg: &Config,
    home: &Path,
    vault_dir: Option<&Path>,
    holders: &Path,
    n: usize,
    stations: &[(String, String)],
) -> Result<BatchRun> {
    let _ = std::fs::remove_dir_all(home);
    if let Some(v) = vault_dir {
        let _ = std::fs::remove_dir_all(v);
        std::fs::create_dir_all(v).map_err(|e| Error::io(format!("creating {}", v.display()), e))?;
    }
    let with_vault = |mut c: std::process::Command| {
        if let Some(v) = vault_dir {
            c.env("CARDVAULT_VAULT", v.join("vault.sqlite"));
        }
        c
    };
    let station_args: Vec<String> = stations
        .iter()
        .flat_map(|(m, b)| ["--main".to_string(), m.clone(), "--backup".to_string(), b.clone()])
        .collect();
    let json = |r: &super::proc::ChildRun| last_json_line(&r.stdout);
    let issue = run_child(
        with_vault(cardvault(&cfg.exe, home))
            .args(["--json", "issue", "--profile", "pair", "--no-domain", "--issuer"])
            .arg(super::proc::test_issuer_dir(home)?)
            .arg("--holders")
            .arg(holders)
            .args(&station_args),
    )?;
    if json(&issue)?["issued"] != 2 * n {
        return Err(Error::Data(format!("issue did not issue {} cards", 2 * n)));
    }
    let dup = run_child(
        with_vault(cardvault(&cfg.exe, home))
            .args(["--json", "duplicate", "--elements", "generate", "--holders"])
            .arg(holders)
            .arg("--elements-out")
            .arg(home.join("elements.txt"))
            .args(&station_args),
    )?;
    if json(&dup)?["duplicated"] != n {
        return Err(Error::Data(format!("duplicate did not duplicate {n} holders")));
    }
    Ok(BatchRun {
        issue: issue.wall.as_secs_f64(),
        duplicate: dup.wall.as_secs_f64(),
        cpu: issue.cpu + dup.cpu,
    })
}

/// Rows comparing 2 stations with 1 from per-round runs; `goal`: whether
/// the 1.8x goal applies to this configuration (else the row is reported).
pub fn rows(s: &mut Section, label: &str, n: usize, one: &[BatchRun], two: &[BatchRun], goal: bool) {
    let total = |r: &[BatchRun]| Samples(r.iter().map(|x| x.issue + x.duplicate).collect());
    let part = |r: &[BatchRun], f: fn(&BatchRun) -> f64| Samples(r.iter().map(f).collect()).median();
    let cores = |r: &[BatchRun]| Samples(r.iter().map(|x| x.cpu / (x.issue + x.duplicate)).collect()).median();
    let (t1, t2) = (total(one), total(two));
    let (thr1, thr2) = (n as f64 / t1.median(), n as f64 / t2.median());
    let row = Row::new(format!("{label}: {n} holders, 2 pairs"), thr2, Unit::PerSec).against("1 pair", thr1);
    let row = if goal { row.goal(Goal::ratio(Op::Ge, 1.8)) } else { row };
    s.row(row.detail(format!(
        "holders per second; 2 pairs: issue {:.2} s + duplicate {:.2} s using {:.2} cores; \
                 1 pair: issue {:.2} s + duplicate {:.2} s using {:.2} cores",
        part(two, |x| x.issue),
        part(two, |x| x.duplicate),
        cores(two),
        part(one, |x| x.issue),
        part(one, |x| x.duplicate),
        cores(one),
    )));
    for (what, f) in [
        ("issue", (|x: &BatchRun| x.issue) as fn(&BatchRun) -> f64),
        ("duplicate", |x: &BatchRun| x.duplicate),
    ] {
        let (a, b) = (part(one, f), part(two, f));
        s.row(Row::new(format!("  {what} only, 2 pairs"), n as f64 / b, Unit::PerSec).against("1 pair", n as f64 / a));
    }
}

/// A row for `k` stations against 1 (no goal: reported).
pub fn rows_k(s: &mut Section, label: &str, n: usize, one: &[BatchRun], many: &[BatchRun], k: usize) {
    let total = |r: &[BatchRun]| Samples(r.iter().map(|x| x.issue + x.duplicate).collect()).median();
    let part = |r: &[BatchRun], f: fn(&BatchRun) -> f64| Samples(r.iter().map(f).collect()).median();
    let cores = |r: &[BatchRun]| Samples(r.iter().map(|x| x.cpu / (x.issue + x.duplicate)).collect()).median();
    s.row(
        Row::new(
            format!("{label}: {n} holders, {k} pairs"),
            n as f64 / total(many),
            Unit::PerSec,
        )
        .against("1 pair", n as f64 / total(one))
        .detail(format!(
            "holders per second; {k} pairs: issue {:.2} s + duplicate {:.2} s using {:.2} cores",
            part(many, |x| x.issue),
            part(many, |x| x.duplicate),
            cores(many),
        )),
    );
}

/// Removes a scratch directory outside the benchmark's own when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs scratch directory (fsync costs nothing there), if the machine has one.
pub fn tmpfs_dir() -> Option<PathBuf> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new("/dev/shm");
    let c = std::ffi::CString::new("/dev/shm").ok()?;
    // SAFETY: an all-zero statfs is valid; statfs fills it for a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    (ok && st.f_type as i64 == TMPFS_MAGIC).then(|| shm.join(format!("cardvault-bench-{}", std::process::id())))
}

/// Writes of 4 KiB, each followed by an fsync, per second: by one writer,
/// and by two writers at once (two files). The storage's own parallel
/// scaling bounds a batch whose cards and vault sync every change.
fn fsync_scaling(dir: &Path, per_writer: usize) -> Result<(f64, f64)> {
    use std::io::Write;
    let writer = |name: &str| -> Result<()> {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let block = [0x5Au8; 4096];
        for _ in 0..per_writer {
            f.write_all(&block)
                .and_then(|_| f.sync_data())
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        let _ = std::fs::remove_file(&path);
        Ok(())
    };
    let t = std::time::Instant::now();
    writer("fsync-1")?;
    let one = per_writer as f64 / t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        let a = s.spawn(|| writer("fsync-2a"));
        let b = s.spawn(|| writer("fsync-2b"));
        a.join()
            .unwrap_or_else(|_| Err(Error::Data("writer panicked".into())))?;
        b.join().unwrap_or_else(|_| Err(Error::Data("writer panicked".into())))
    })?;
    let two = 2.0 * per_writer as f64 / t.elapsed().as_secs_f64();
    Ok((one, two))
}

pub fn run(cfg: &Config, private: Option<&PrivatePcscd>, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("batch")?;
    let n = cfg.pairs.max(2);
    let holders = holder_file(&dir, n)?;
    let mut s = Section::new(
        Part::Batch,
        format!(
            "{TITLE} (median of {} rounds; CLI, one process per command)",
            cfg.rounds
        ),
    );
    let one = [("sim:s".to_string(), "sim:s".to_string())];
    let two = [one[0].clone(), one[0].clone()];
    let tmpfs = tmpfs_dir();
    let _cleanup = tmpfs.clone().map(RemoveOnDrop);
    // (label, data directory with the cards, vault directory, goal). A
    // card's EEPROM writes happen on the card: with the cards' state files
    // on tmpfs and the vault on disk, the terminal's storage carries what it
    // would with real cards (as in the batch through pcscd below), and the
    // 1.8x goal applies. All on disk, the simulated cards' synced writes
    // share the terminal's disk; all on tmpfs, only CPU is left. Both are
    // reported.
    let mut variants: Vec<(&str, PathBuf, Option<PathBuf>, bool)> = Vec::new();
    if let Some(t) = &tmpfs {
        variants.push((
            "embedded cards on tmpfs, vault on disk",
            t.join("cards-only"),
            Some(dir.join("vault-only")),
            true,
        ));
    }
    variants.push(("embedded cards and vault on disk", dir.clone(), None, tmpfs.is_none()));
    if let Some(t) = &tmpfs {
        variants.push(("embedded cards and vault on tmpfs", t.clone(), None, false));
    }
    for (label, base, vault, goal) in variants {
        let runs = RefCell::new((Vec::new(), Vec::new()));
        progress(&format!("batch: {n} holders, {label}, 1 and 2 stations (interleaved)"));
        let vault_of = |which: &str| vault.as_ref().map(|v| v.join(which));
        let result = interleave(
            cfg.rounds,
            &mut [
                &mut || {
                    let r = issue_and_duplicate(cfg, &base.join("one"), vault_of("one").as_deref(), &holders, n, &one)?;
                    runs.borrow_mut().0.push(r);
                    Ok(r.issue + r.duplicate)
                },
                &mut || {
                    let r = issue_and_duplicate(cfg, &base.join("two"), vault_of("two").as_deref(), &holders, n, &two)?;
                    runs.borrow_mut().1.push(r);
                    Ok(r.issue + r.duplicate)
                },
            ],
        );
        result?;
        let (one_runs, two_runs) = runs.into_inner();
        // The warm-up pass is the first entry of each.
        rows(&mut s, label, n, &one_runs[1..], &two_runs[1..], goal);
    }
    let (w1, w2) = fsync_scaling(&dir, 500)?;
    s.row(
        Row::new("storage: 4 KiB write + fsync, 2 writers", w2, Unit::PerSec)
            .against("1 writer", w1)
            .detail("the scratch directory's file system; the ceiling for a batch that syncs every card change"),
    );
    s.note(
        "every card change is one synced journal record of the card's state (its files are brought up to date \
         when the card is closed) and every audit row a synchronous vault commit under the vault's write lock, \
         so with everything on disk the batch is bound by how well the storage overlaps two writers' syncs \
         (the simulated cards' and the vault's alike); with the cards on tmpfs and the vault on disk the \
         terminal's disk carries what it would with real cards, whose EEPROM writes happen on the cards; on \
         tmpfs the same batch shows how the terminal's own work scales",
    );
    let pcsc = match private {
        Some(p) => super::robot::pcsc_batch(cfg, p, &dir, &mut s, progress),
        None => {
            s.note("through pcscd: needs eight virtual readers, run with --setup-readers (root) for a private pcscd");
            Ok(())
        }
    };
    pcsc?;
    Ok(s)
}
