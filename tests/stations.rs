//! Issuance and duplication on several stations at once.

mod common;

use common::*;

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
