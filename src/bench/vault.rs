//! Part 6: the vault at scale. Synthetic backup rows (100 per card, a full
//! backup every 10th, differentials standing on the one before) are
//! inserted with SQL into a fresh vault of 1% of the rows and one of all of
//! them; then, through the vault API, one card's backup listing and the
//! latest-chain lookup (`latest_backup` + `chain_to`, the restore path) are
//! timed at both sizes. An indexed lookup grows with the depth of the
//! B-tree (logarithmic), a scan with the row count (100x here). The query
//! plans show which one SQLite chose.

use super::proc::Samples;
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use crate::error::{Error, Result};
use crate::vault::Vault;
use std::path::Path;
use std::time::Instant;

/// Backups per synthetic card.
const PER_CARD: u64 = 100;
/// A full backup every this many.
const FULL_EVERY: u64 = 10;
/// Lookups timed per size.
const LOOKUPS: usize = 300;

fn card_number(i: u64) -> String {
    format!("{:016}", 4_000_000_000_000_000u64 + i * 7919)
}

/// The statements of src/vault/backups.rs whose plans matter here.
const QUERIES: &[(&str, &str)] = &[
    (
        "list_backups(card)",
        "SELECT id, card_number, counter, created_at, kind, base_counter, pages, page_size, page_count, \
         record_count, state FROM backups WHERE ?1 IS NULL OR card_number = ?1 ORDER BY card_number, counter",
    ),
    (
        "latest_backup(card)",
        "SELECT id, card_number, counter, created_at, kind, base_counter, pages, page_size, page_count, \
         record_count, state FROM backups WHERE card_number = ?1 ORDER BY counter DESC LIMIT 1",
    ),
    (
        "chain_to: backup by counter",
        "SELECT id, card_number, counter, created_at, kind, base_counter, pages, page_size, page_count, \
         record_count, state FROM backups WHERE card_number = ?1 AND counter = ?2",
    ),
    ("the listing with the card bound (proposed)", PROPOSED_LIST),
];

/// One card's listing as an index search: what list_backups(Some(card)) needs.
const PROPOSED_LIST: &str = "SELECT id, card_number, counter, created_at, kind, base_counter, pages, page_size, \
                             page_count, record_count, state FROM backups WHERE card_number = ?1 ORDER BY counter";

fn insert(path: &Path, rows: u64) -> Result<()> {
    let err = |e: rusqlite::Error| Error::Vault {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut conn = rusqlite::Connection::open(path).map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    {
        let mut st = tx
            .prepare(
                "INSERT INTO backups (card_number, counter, created_at, kind, base_counter, page_size, page_count,
                                      pages, header, wrapped_key, control_info, trailer, record_count, digest, state)
                 VALUES (?1, ?2, '2026-01-01T00:00:00Z', ?3, ?4, 256, 256, 8, zeroblob(120), zeroblob(60),
                         zeroblob(60), zeroblob(36), 1, zeroblob(32), 'completed')",
            )
            .map_err(err)?;
        let cards = rows.div_ceil(PER_CARD);
        // Counter-major order: a card's backups are spread over the table, as
        // when many cards are backed up over time.
        let mut n = 0;
        'all: for counter in 1..=PER_CARD {
            for c in 0..cards {
                if n == rows {
                    break 'all;
                }
                let full = counter % FULL_EVERY == 1;
                let (kind, base) = if full {
                    ("full", 0)
                } else {
                    ("differential", counter - 1)
                };
                st.execute(rusqlite::params![card_number(c), counter, kind, base])
                    .map_err(err)?;
                n += 1;
            }
        }
    }
    tx.commit().map_err(err)
}

fn plans(path: &Path) -> Result<Vec<String>> {
    let err = |e: rusqlite::Error| Error::Vault {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    let mut out = Vec::new();
    for (what, sql) in QUERIES {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(err)?;
        // A card number for ?1, a counter for ?2.
        let params: Vec<rusqlite::types::Value> = (1..=st.parameter_count())
            .map(|i| if i == 1 { card_number(0).into() } else { 1i64.into() })
            .collect();
        let steps: Vec<String> = st
            .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        out.push(format!("query plan of {what}: {}", steps.join("; ")));
    }
    Ok(out)
}

/// SQLite virtual-machine steps of each lookup for one card, from the
/// statements' own counters: machine-independent, and flat with the table
/// size for an index search, proportional to it for a scan.
fn vm_steps(path: &Path) -> Result<[u64; 3]> {
    let err = |e: rusqlite::Error| Error::Vault {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    let card = card_number(0);
    let steps = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<(u64, Vec<i64>)> {
        let mut st = conn.prepare(sql)?;
        let ids: Vec<i64> = st.query_map(params, |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok((st.get_status(rusqlite::StatementStatus::VmStep) as u64, ids))
    };
    let (list, _) = steps(QUERIES[0].1, &[&card]).map_err(err)?;
    // latest_backup, then chain_to: one lookup by counter per backup of the chain.
    let (mut chain, _) = steps(QUERIES[1].1, &[&card]).map_err(err)?;
    let latest = PER_CARD;
    let first = latest - (latest - 1) % FULL_EVERY;
    for counter in (first..latest).rev() {
        chain += steps(QUERIES[2].1, &[&card, &counter]).map_err(err)?.0;
    }
    let (proposed, _) = steps(PROPOSED_LIST, &[&card]).map_err(err)?;
    Ok([list, chain, proposed])
}

/// One card's listing with the proposed statement, prepared per call as the
/// vault does; returns the rows read.
fn proposed_list(conn: &rusqlite::Connection, card: &str) -> rusqlite::Result<usize> {
    let mut st = conn.prepare(PROPOSED_LIST)?;
    let rows = st.query_map([card], |r| {
        (0..11)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map(|v| v.len())
}

/// Samples (µs) of one card's listing, one latest-chain lookup, and the
/// proposed listing, over random cards.
fn measure(vault: &Vault, path: &Path, cards: u64) -> Result<[Samples; 3]> {
    let conn = rusqlite::Connection::open(path).map_err(|e| Error::Vault {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = [Samples::default(), Samples::default(), Samples::default()];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..LOOKUPS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let card = card_number(rng % cards);
        let t = Instant::now();
        let rows = vault.list_backups(Some(&card))?;
        out[0].push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let last = vault
            .latest_backup(&card)?
            .ok_or_else(|| Error::Data("synthetic card without backups".into()))?;
        let c = vault.chain_to(&last)?;
        out[1].push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let n = proposed_list(&conn, &card).map_err(|e| Error::Vault {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        out[2].push(t.elapsed().as_secs_f64() * 1e6);
        if rows.is_empty() || c.is_empty() || n != rows.len() {
            return Err(Error::Data("synthetic lookups disagree".into()));
        }
    }
    Ok(out)
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let dir = cfg.scratch("vault")?;
    let large = cfg.vault_rows.max(1000);
    let small = (large / 100).clamp(1000, large);
    let mut results = Vec::new();
    let mut plan_notes = Vec::new();
    for (rows, name) in [(small, "small"), (large, "large")] {
        progress(&format!("vault: {} rows", super::human_count(rows)));
        let path = dir.join(format!("vault-{name}.sqlite"));
        drop(Vault::open(&path)?);
        let t = Instant::now();
        insert(&path, rows)?;
        let inserted = t.elapsed().as_secs_f64();
        let vault = Vault::open(&path)?;
        let samples = measure(&vault, &path, rows.div_ceil(PER_CARD))?;
        let steps = vm_steps(&path)?;
        if name == "large" {
            plan_notes = plans(&path)?;
        }
        results.push((rows, samples, steps, inserted));
    }
    let mut s = Section::new(
        Part::Vault,
        format!(
            "Vault at scale: {} and {} backup rows ({PER_CARD} per card; median of {LOOKUPS} lookups)",
            super::human_count(small),
            super::human_count(large)
        ),
    );
    let (lo, hi) = (&results[0], &results[1]);
    let what = [
        "list one card's backups (Vault::list_backups)",
        "latest chain (latest_backup + chain_to)",
        "list one card's backups, card bound in SQL (proposed)",
    ];
    let (n_lo, n_hi) = (super::human_count(lo.0), super::human_count(hi.0));
    for (i, what) in what.into_iter().enumerate() {
        let (a, b) = (lo.1[i].median(), hi.1[i].median());
        s.row(
            Row::new(format!("{what}, {n_hi} rows"), b, Unit::Micros)
                .against(format!("{n_lo} rows"), a)
                .detail(format!(
                    "wall time; the large vault no longer fits SQLite's page cache, so time grows more than the work \
                     does; a scan reads {}x the rows",
                    hi.0 / lo.0
                )),
        );
        let (a, b) = (lo.2[i] as f64, hi.2[i] as f64);
        s.row(
            Row::new(format!("  the same, SQLite VM steps, {n_hi} rows"), b, Unit::Count)
                .against(format!("{n_lo} rows"), a)
                .goal(Goal::ratio(Op::Le, 2.0))
                .detail("the statements' own step counters: flat for an index search (logarithmic), 100x for a scan"),
        );
    }
    s.note(format!(
        "inserting the synthetic rows took {:.2} s ({} rows) and {:.2} s ({} rows), one transaction each",
        lo.3,
        super::human_count(lo.0),
        hi.3,
        super::human_count(hi.0)
    ));
    for n in plan_notes {
        s.note(n);
    }
    Ok(s)
}
