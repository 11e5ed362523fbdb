//! `cardvault-bench` in a tiny configuration: its report's structure, never
//! its timings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cvbench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cardvault-bench` with an isolated home and no user configuration (the
/// cardvault CLI it runs inherits them).
fn bench(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cardvault-bench"));
    c.env("CARDVAULT_HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("CARDVAULT_READER")
        .env_remove("CARDVAULT_CONFIG")
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run cardvault-bench")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn a_quick_bench_reports_apdu_counts_and_vault_lookups() {
    let home = temp_dir("bench");
    let o = run(bench(&home)
        .args([
            "--json",
            "--only",
            "apdus,vault",
            "--quick",
            "--vault-rows",
            "2000",
            "--chain",
            "2",
            "--dir",
        ])
        .arg(home.join("scratch")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1, "{v}");
    let sections = v["sections"].as_array().unwrap();
    let parts: Vec<&str> = sections.iter().map(|s| s["part"].as_str().unwrap()).collect();
    assert_eq!(parts, ["apdus", "vault"]);
    for s in sections {
        assert!(s["skipped"].is_null(), "{s}");
        for r in s["rows"].as_array().unwrap() {
            assert!(
                r["measure"].is_string() && r["value"].is_number() && r["unit"].is_string(),
                "{r}"
            );
        }
    }
    // Every workflow's APDU count comes with its minimum, the ratio and the goal.
    let apdus = sections[0]["rows"].as_array().unwrap();
    for want in [
        "duplicate",
        "full backup",
        "differential backup",
        "restore",
        "chain restore",
        "recover",
    ] {
        assert!(
            apdus.iter().any(|r| r["measure"].as_str().unwrap().contains(want)),
            "no row for {want}: {apdus:?}"
        );
    }
    for r in apdus {
        assert_eq!(r["unit"], "apdus");
        assert_eq!(r["reference"]["unit"], "apdus");
        assert!(r["ratio"].is_number(), "{r}");
        assert_eq!(r["met"], true, "an APDU goal was missed: {r}");
        assert_eq!(r["goal"]["op"], "<=");
    }
    // Vault: both sizes, with the query plans.
    let vault = &sections[1];
    assert!(vault["rows"].as_array().unwrap().len() >= 4, "{vault}");
    assert!(
        vault["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("query plan")),
        "{vault}"
    );
    let met = v["goals_met"].as_u64().unwrap() + v["goals_missed"].as_u64().unwrap();
    assert!(met >= apdus.len() as u64, "{v}");
    // --dir is kept; the text report has one table per part.
    assert!(home.join("scratch").join("apdus").exists());
    let o = run(bench(&home).args(["--only", "vault", "--vault-rows", "1000", "--rounds", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("1. Vault at scale") && text.contains("goals:"), "{text}");
}

#[test]
fn bench_options_are_checked() {
    let home = temp_dir("bench-args");
    let o = run(bench(&home).args(["--only", "nothing"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(bench(&home).args(["--file-size", "1 PiB"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("size unit"), "{}", stderr(&o));
}

/// The APDU table of BENCHMARKS.md: (measure, APDUs, minimum).
fn benchmarks_md_apdu_rows() -> Vec<(String, u64, u64)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md")).unwrap();
    let start = doc
        .find("1. APDUs on the wire")
        .expect("BENCHMARKS.md has no APDU table");
    let end = doc[start..].find("\n2. ").map(|e| start + e).unwrap();
    doc[start..end]
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" APDUs  min ")?;
            let (measure, value) = left.trim().rsplit_once(' ')?;
            let min = right.split_whitespace().next()?;
            Some((measure.trim().to_string(), value.parse().ok()?, min.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_apdu_count_in_benchmarks_md_is_what_the_workflows_take() {
    let home = temp_dir("bench-counts");
    let documented = benchmarks_md_apdu_rows();
    // The chain length of the documented run (its chain restore row); the
    // APDU part does not depend on the other sizes.
    let chain = documented
        .iter()
        .find_map(|(m, ..)| {
            m.strip_prefix("chain restore, full + ")?
                .strip_suffix(" differentials")?
                .parse::<u32>()
                .ok()
        })
        .expect("BENCHMARKS.md's APDU table has no chain restore row");
    let o = run(bench(&home)
        .args([
            "--json",
            "--only",
            "apdus",
            "--quick",
            "--chain",
            &chain.to_string(),
            "--dir",
        ])
        .arg(home.join("scratch")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let rows = v["sections"][0]["rows"].as_array().unwrap();
    let measured: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["met"], true, "goal missed: {r}");
            (
                r["measure"].as_str().unwrap().to_string(),
                r["value"].as_f64().unwrap() as u64,
                r["reference"]["value"].as_f64().unwrap() as u64,
            )
        })
        .collect();
    assert_eq!(documented.len(), 12, "{documented:?}");
    assert_eq!(measured, documented, "BENCHMARKS.md's APDU table differs from a run");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn the_secure_part_reports_the_handshake_and_the_cost_per_apdu() {
    let home = temp_dir("bench-secure");
    let o = run(bench(&home)
        .args([
            "--json", "--only", "secure", "--quick", "--rounds", "1", "--apdus", "50", "--dir",
        ])
        .arg(home.join("scratch")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let rows = v["sections"][0]["rows"].as_array().unwrap();
    let apdus = |name: &str| {
        let r = rows
            .iter()
            .find(|r| r["measure"] == name)
            .unwrap_or_else(|| panic!("no {name}: {rows:?}"));
        assert_eq!(r["met"], true, "{r}");
        r["value"].as_f64().unwrap() as u64
    };
    assert_eq!(apdus("SCP11b handshake, extended APDUs"), 2);
    assert_eq!(apdus("SCP11b handshake, short APDUs only"), 4);
    for name in ["GET DATA card number, protected", "READ MEMORY 1 KiB, protected"] {
        let r = rows.iter().find(|r| r["measure"] == name).unwrap();
        assert_eq!(r["unit"], "micros", "{r}");
        assert!(r["reference"]["value"].is_number(), "{r}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn the_wallet_part_counts_every_exchange_against_its_minimum_and_compares_1_and_4_terminals() {
    let home = temp_dir("bench-wallet");
    let o = run(bench(&home)
        .args(["--json", "--only", "wallet", "--quick", "--rounds", "1", "--dir"])
        .arg(home.join("scratch")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let s = &v["sections"][0];
    assert!(s["skipped"].is_null(), "{s}");
    let rows = s["rows"].as_array().unwrap();
    let row = |prefix: &str| {
        rows.iter()
            .find(|r| r["measure"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {rows:?}"))
    };
    // Every exchange: its count, the minimum and what the minimum is made of.
    for prefix in [
        "deposit one item",
        "withdraw one item",
        "escrow recover",
        "store 30 B, issuer first",
        "store 785 B, provider first",
        "delete",
        "replace: new card",
        "replace: old backup card",
        "replace: new backup card",
        "replace: all three cards",
    ] {
        let r = row(prefix);
        assert_eq!(r["unit"], "apdus", "{r}");
        assert_eq!(r["reference"]["label"], "min", "{r}");
        assert!(r["ratio"].is_number() && r["goal"].is_object(), "{r}");
        assert!(r["detail"].as_str().unwrap().starts_with("minimum: "), "{r}");
    }
    // The rate from 4 terminals, against 1 terminal in the same run.
    let r = row("deposits into one safe, 4 terminals");
    assert_eq!(r["unit"], "per_sec", "{r}");
    assert_eq!(r["reference"]["label"], "1 terminal", "{r}");
    assert!(r["ratio"].is_number() && r["goal"].is_object(), "{r}");
    let _ = std::fs::remove_dir_all(&home);
}
