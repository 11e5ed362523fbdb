//! Part 6: the vault at scale. Synthetic backup rows (100 per card, a full
//! backup every 10th, differentials standing on the one before) are
//! inserted with SQL into a fresh vault of 1% of the rows and one of all of
//! them; then, through the vault API, one card's backup listing and the
//! latest-chain lookup (`latest_backup` + `chain_to`, the restore path) are
//! timed at both sizes.
//!
//! Wall time grows once the large vault outgrows SQLite's page cache, so
//! the goal is checked on the work instead: the statements' own counters of
//! SQLite VM steps, which stay flat for an index search (logarithmic in the
//! table) and grow with the row count for a scan, and the query plans show
//! which one SQLite chose.

use super::proc::Samples;
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::error::{Error, Result};
use cardvault::vault::Vault;
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

/// The columns every lookup of src/vault/backups.rs reads.
const COLUMNS: &str =
    "id, card_number, counter, created_at, kind, base_counter, pages, page_size, page_count, record_count, state";

/// The statements of src/vault/backups.rs (kept in step with it) whose plans
/// and VM steps are shown: one card's listing, the newest backup, one backup
/// by counter (`chain_to` makes one such lookup per backup of the chain).
const QUERIES: [(&str, &str); 3] = [
    (
        "list_backups(Some(card))",
        "FROM backups WHERE card_number = ?1 ORDER BY counter",
    ),
    (
        "latest_backup(card)",
        "FROM backups WHERE card_number = ?1 ORDER BY counter DESC LIMIT 1",
    ),
    (
        "chain_to: backup by counter",
        "FROM backups WHERE card_number = ?1 AND counter = ?2",
    ),
];

fn sql(i: usize) -> String {
    format!("SELECT {COLUMNS} {}", QUERIES[i].1)
}

fn insert(path: &Path, rows: u64) -> Result<()> {
    let err = |e: rusqlite::Error| Error::vault(path, e);
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

/// The query plan of each statement, as notes.
fn plans(path: &Path) -> Result<Vec<String>> {
    let err = |e: rusqlite::Error| Error::vault(path, e);
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    let mut out = Vec::new();
    for (i, (what, _)) in QUERIES.iter().enumerate() {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", sql(i))).map_err(err)?;
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

/// SQLite virtual-machine steps of one card's listing and of one
/// latest-chain lookup, from the statements' own counters: machine
/// independent, flat with the table size for an index search, proportional
/// to it for a scan.
fn vm_steps(path: &Path) -> Result<[u64; 2]> {
    let err = |e: rusqlite::Error| Error::vault(path, e);
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    let card = card_number(0);
    let steps = |i: usize, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
        let mut st = conn.prepare(&sql(i))?;
        st.query_map(params, |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(st.get_status(rusqlite::StatementStatus::VmStep) as u64)
    };
    let list = steps(0, &[&card]).map_err(err)?;
    // latest_backup, then chain_to: one lookup by counter per older backup of the chain.
    let mut chain = steps(1, &[&card]).map_err(err)?;
    let latest = PER_CARD;
    let first = latest - (latest - 1) % FULL_EVERY;
    for counter in (first..latest).rev() {
        chain += steps(2, &[&card, &counter]).map_err(err)?;
    }
    Ok([list, chain])
}

/// Samples (µs) of one card's listing and of one latest-chain lookup, over
/// random cards.
fn measure(vault: &Vault, cards: u64) -> Result<[Samples; 2]> {
    let mut out = [Samples::default(), Samples::default()];
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
        if rows.len() as u64 != PER_CARD || c.len() as u64 != FULL_EVERY {
            return Err(Error::Data("synthetic lookups found the wrong rows".into()));
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
        let samples = measure(&vault, rows.div_ceil(PER_CARD))?;
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
