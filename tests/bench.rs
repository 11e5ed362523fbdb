//! `cardvault bench` in a tiny configuration (its report's structure, never
//! its timings), and issuance and duplication on several stations at once.

mod common;

use common::*;

#[test]
fn a_quick_bench_reports_apdu_counts_and_vault_lookups() {
    let home = temp_dir("bench");
    let o = run(cardvault(&home)
        .args([
            "--json",
            "bench",
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
    let o = run(cardvault(&home).args(["bench", "--only", "vault", "--vault-rows", "1000", "--rounds", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("1. Vault at scale") && text.contains("goals:"), "{text}");
}

#[test]
fn bench_options_are_checked() {
    let home = temp_dir("bench-args");
    let o = run(cardvault(&home).args(["bench", "--only", "nothing"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(cardvault(&home).args(["bench", "--file-size", "1 PiB"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("size unit"), "{}", stderr(&o));
}

#[test]
fn two_stations_issue_and_duplicate_a_batch_in_parallel() {
    let home = temp_dir("stations");
    let csv = home.join("h.csv");
    let mut rows = String::from("holder,pin,member_number,expiry\n");
    for i in 0..6 {
        rows.push_str(&format!("h{i},2468,M-{i},2030-01\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let stations = [
        "--main", "sim:d", "--backup", "sim:d", "--main", "sim:d", "--backup", "sim:d",
    ];
    let o = run(cardvault(&home)
        .env("ADMIN", ADMIN_KEY)
        .args([
            "--json",
            "issue",
            "--profile",
            "pair",
            "--admin-key",
            "env:ADMIN",
            "--holders",
        ])
        .arg(&csv)
        .args(stations));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["issued"], 12);
    // The report lists the holders in file order, main before backup.
    let cards = v["cards"].as_array().unwrap();
    for (i, c) in cards.iter().enumerate() {
        assert_eq!(c["holder"], format!("h{}", i / 2));
        assert_eq!(c["role"], if i % 2 == 0 { "main" } else { "backup" });
    }
    let o = run(cardvault(&home)
        .args(["--json", "duplicate", "--elements", "generate", "--holders"])
        .arg(&csv)
        .args(stations));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["duplicated"], 6);
    for (i, h) in v["holders"].as_array().unwrap().iter().enumerate() {
        assert_eq!(h["holder"], format!("h{i}"));
        assert_eq!(h["end_to_end_check"], true);
        assert_eq!(h["generated_elements"].as_array().unwrap().len(), 2);
    }
    // One hash-chained audit trail, written by both stations.
    let o = run(cardvault(&home).args(["audit", "--verify"]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Holders whose cards were never issued are reported, not skipped.
    let o = run(cardvault(&home)
        .args(["--json", "duplicate", "--elements", "generate", "--holders"])
        .arg(&csv)
        .args(["--main", "sim:none", "--backup", "sim:none"]));
    assert_eq!(o.status.code(), Some(4));
    let v = json(&o);
    assert_eq!(v["failed"], 6);
    assert!(v["holders"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("issue the holder's cards first"));
    // Several stations without a holder file, and unpaired readers, are refused.
    let o = run(cardvault(&home)
        .args(["duplicate", "--elements", "generate"])
        .args(stations));
    assert_eq!(o.status.code(), Some(2));
    let o = run(cardvault(&home).args(["duplicate", "--main", "sim:a", "--main", "sim:b", "--backup", "sim:c"]));
    assert_eq!(o.status.code(), Some(2));
}

/// The APDU table of BENCHMARKS.md: (measure, APDUs, minimum).
fn benchmarks_md_apdu_rows() -> Vec<(String, u64, u64)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md")).unwrap();
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
    // --chain 10 as in the documented run; the APDU part does not depend on the other sizes.
    let o = run(cardvault(&home)
        .args([
            "--json", "bench", "--only", "apdus", "--quick", "--chain", "10", "--dir",
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
    let documented = benchmarks_md_apdu_rows();
    assert_eq!(documented.len(), 12, "{documented:?}");
    assert_eq!(measured, documented, "BENCHMARKS.md's APDU table differs from a run");
}
