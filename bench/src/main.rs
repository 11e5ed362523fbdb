//! `cardvault-bench`: measured figures and ratios (see BENCHMARKS.md).

use cardvault::error::{Error, Result};
use cardvault_bench::{self as bench, stack, Part};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure APDU counts against the minimum, per-APDU cost through pcscd against
/// a bare PC/SC loop, scriptor and a minimal vpcd card, file encryption against
/// openssl, backup and restore throughput, batch issuance and duplication with
/// 2 reader pairs against 1, and vault lookups at scale. Side-by-side
/// comparisons run interleaved and report medians. Parts that need pcscd with
/// the vpcd driver, openssl or scriptor say so and are skipped without them.
#[derive(Parser, Debug)]
#[command(name = "cardvault-bench", version)]
struct Args {
    /// The JSON report on stdout instead of the text tables.
    #[arg(long)]
    json: bool,
    /// Parts to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PART,...")]
    only: Vec<Part>,
    /// Small sizes for a fast check (8 MiB file, 4 holder pairs, 200 APDUs, 3
    /// rounds, a chain of 10, 10k vault rows); explicit sizes below still win.
    #[arg(long)]
    quick: bool,
    /// Size of the file encrypted and decrypted [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = bench::parse_size)]
    file_size: Option<u64>,
    /// Holder pairs issued and duplicated per configuration [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pairs: Option<u64>,
    /// APDUs in the script for cardvault and scriptor; the round-trip loops send 4x
    /// as many per side and round, in interleaved slices of 100 [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    apdus: Option<u64>,
    /// Measured rounds of each side-by-side comparison, after a warm-up [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    /// Differential backups in the chain restore [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    chain: Option<u64>,
    /// Backup rows of the large vault; the small one has 1% (at least 1000) [default: 100000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    vault_rows: Option<u64>,
    /// Root: run the PC/SC parts on a private pcscd with eight vpcd readers
    /// (ports 35965-35968) instead of the system's two; the system's pcscd and
    /// /etc/reader.conf.d are not touched. Adds the 4-reader batch measurement.
    #[arg(long)]
    setup_readers: bool,
    /// Scratch directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the scratch directory.
    #[arg(long)]
    keep: bool,
    /// The cardvault binary whose CLI is measured (default: the one next to
    /// this binary, built from the source tree when missing).
    #[arg(long, value_name = "PATH")]
    cardvault: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardvault-bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(a: Args) -> Result<()> {
    let exe = match &a.cardvault {
        Some(p) => p.clone(),
        None => {
            let me = std::env::current_exe().map_err(|e| Error::io("locating the cardvault-bench binary", e))?;
            let dir = me.parent().unwrap_or(std::path::Path::new("."));
            stack::workspace_bin(dir, "cardvault", "cardvault")
                .map_err(|why| Error::Usage(format!("the cardvault binary: {why}")))?
        }
    };
    let (dir, temporary) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("cardvault-bench-{}", std::process::id())),
            true,
        ),
    };
    let q = a.quick;
    let cfg = bench::Config {
        parts: if a.only.is_empty() { Part::all() } else { dedup(a.only) },
        file_size: a.file_size.unwrap_or(if q { 8 << 20 } else { 1 << 30 }),
        pairs: a.pairs.unwrap_or(if q { 4 } else { 100 }) as usize,
        apdus: a.apdus.unwrap_or(if q { 200 } else { 1000 }) as usize,
        rounds: a.rounds.unwrap_or(if q { 3 } else { 5 }) as usize,
        chain: a.chain.unwrap_or(if q { 10 } else { 100 }) as usize,
        vault_rows: a.vault_rows.unwrap_or(if q { 10_000 } else { 100_000 }),
        setup_readers: a.setup_readers,
        dir: dir.clone(),
        keep: a.keep,
        exe,
    };
    let result = bench::run(&cfg, &|m| eprintln!("bench: {m}"));
    if temporary && !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("bench: scratch directory kept: {}", dir.display());
    }
    let report = result?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable report")
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn dedup(mut parts: Vec<Part>) -> Vec<Part> {
    parts.sort();
    parts.dedup();
    parts
}
