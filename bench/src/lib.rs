//! Benchmarks behind `cardvault-bench` (issue 6; results in BENCHMARKS.md).
//!
//! One run measures every part the caller selects and returns a [`Report`]:
//!
//! 1. [`apdus`]: APDUs and bytes on the wire per workflow, against the
//!    minimum the data needs (embedded cards; the count does not depend on
//!    the transport);
//! 2. [`roundtrip`]: per-APDU cost through pcscd + vpcd + applet-sim, against
//!    a bare `pcsc` loop, `scriptor`, and a minimal vpcd responder;
//! 3. [`files`]: streamed file encryption and decryption by the real CLI
//!    against `openssl enc -aes-256-ctr`, with peak RSS;
//! 4. [`backup`]: backup and restore throughput (64 KiB and 1 MiB cards), a
//!    chain restore of many differentials, the vault's size overhead;
//! 5. [`batch`]: batch issuance plus duplication with 2 reader pairs against 1;
//! 6. [`vault`]: backup listing and latest-chain lookups at 1k and 100k rows;
//! 7. [`secure`]: the secure channel's handshake and its cost per APDU;
//! 8. [`wallet`]: the wallet, safe, storing and replacement exchanges' APDUs
//!    against their minimum, and deposits per second into one safe from 1
//!    and 4 terminals.
//!
//! These machines are noisy, so side-by-side comparisons run interleaved in
//! one process and the report gives medians. Nothing here asserts a timing.

pub mod apdus;
pub mod backup;
pub mod batch;
pub mod cards;
pub mod files;
pub mod proc;
pub mod report;
pub mod responder;
pub mod robot;
pub mod roundtrip;
pub mod secure;
pub mod stack;
pub mod vault;
pub mod wallet;

pub use report::{Goal, Machine, Op, Part, Report, Row, Section, Unit};

use cardvault::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Config {
    pub parts: Vec<Part>,
    /// Size of the file that is encrypted and decrypted.
    pub file_size: u64,
    /// Holders in the batch issuance and duplication.
    pub pairs: usize,
    /// APDUs per round trip measurement (and in the script).
    pub apdus: usize,
    /// Measured rounds of every side-by-side comparison (after one warm-up).
    pub rounds: usize,
    /// Differentials in the chain restore.
    pub chain: usize,
    /// Backup rows of the large vault (the small one has 1% of them, at least 1000).
    pub vault_rows: u64,
    /// Start a private pcscd with eight vpcd readers (root; see [`stack`]).
    pub setup_readers: bool,
    /// Scratch directory (removed afterwards unless `keep`).
    pub dir: PathBuf,
    pub keep: bool,
    /// The cardvault binary whose CLI is measured.
    pub exe: PathBuf,
}

impl Config {
    /// The settings as JSON, for the report.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "parts": self.parts,
            "file_size": self.file_size,
            "pairs": self.pairs,
            "apdus": self.apdus,
            "rounds": self.rounds,
            "chain": self.chain,
            "vault_rows": self.vault_rows,
            "setup_readers": self.setup_readers,
        })
    }

    /// A fresh sub-directory of the scratch directory for one part.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        Ok(d)
    }
}

/// Parse a size such as `1GiB`, `64MiB`, `512k`, `4096` (binary multiples).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 1GiB, 64MiB, 4096)"))?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("'{s}': unknown size unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// Run the selected parts. `progress` gets one line per step (for stderr).
pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Report> {
    let load = report::load_average();
    std::fs::create_dir_all(&cfg.dir).map_err(|e| Error::io(format!("creating {}", cfg.dir.display()), e))?;
    // A private pcscd, when asked for, serves every PC/SC part of this run.
    let stack = if cfg.setup_readers && cfg.parts.iter().any(|p| matches!(p, Part::Roundtrip | Part::Batch)) {
        progress("starting a private pcscd with eight vpcd readers");
        Some(stack::PrivatePcscd::start(&cfg.dir.join("pcscd"))?)
    } else {
        None
    };
    let mut sections = Vec::new();
    for part in &cfg.parts {
        progress(&format!("part {part:?}"));
        let s = match part {
            Part::Apdus => apdus::run(cfg, progress),
            Part::Roundtrip => roundtrip::run(cfg, stack.as_ref(), progress),
            Part::Files => files::run(cfg, progress),
            Part::Backup => backup::run(cfg, progress),
            Part::Batch => batch::run(cfg, stack.as_ref(), progress),
            Part::Vault => vault::run(cfg, progress),
            Part::Secure => secure::run(cfg, progress),
            Part::Wallet => wallet::run(cfg, progress),
        };
        sections.push(s.unwrap_or_else(|e| {
            let mut s = Section::skipped(*part, format!("{part:?}"), format!("failed: {e}"));
            s.note("the other parts ran; this failure is an error of the benchmark or its environment");
            s
        }));
    }
    drop(stack);
    Ok(Report::new(Machine::detect(load), cfg.settings(), sections))
}

/// Write `data` to `path`, naming the file on failure.
pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Round to a readable number of significant digits for details.
pub(crate) fn human_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1 PiB").is_err());
        assert!(parse_size("GiB").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(human_count(100000), "100,000");
        assert_eq!(human_count(999), "999");
    }
}
