//! docs/JSON.md against real output: for every section marked "(checked)",
//! the command runs and the top-level fields of its JSON are exactly the
//! documented ones (documented and present, present and documented).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// The documented top-level fields of the section whose heading names `command`.
fn documented(command: &str) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo_path("docs/JSON.md")).unwrap();
    let heading = format!("### `cardvault {command}` (checked)");
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/JSON.md has no section '{heading}'"));
    let rest = &doc[start + heading.len()..];
    let section = &rest[..rest.find("\n#").unwrap_or(rest.len())];
    let mut keys = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.trim_start_matches('|').split('|').next().unwrap();
        for k in first.split(',') {
            keys.insert(k.trim().trim_matches('`').to_string());
        }
    }
    assert!(!keys.is_empty(), "section '{heading}' documents no field");
    keys
}

fn fields(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn check(command: &str, home: &Path, args: &[&str]) -> serde_json::Value {
    let o = run(cv(home).arg("--json").args(args));
    assert!(o.status.success(), "{command}: {}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(
        fields(&v),
        documented(command),
        "{command}: output fields vs docs/JSON.md\n{v}"
    );
    v
}

#[test]
fn the_documented_json_fields_are_the_fields_of_real_output() {
    let home = temp_dir("json");
    let dir = home.join("domain");
    let pass = domain_init(&home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    let csv = home.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\nalice,123456,M-1001,2030-01\n").unwrap();
    for (prefix, profile) in [("h", "pair"), ("r", "main")] {
        let o = run(cv(&home)
            .args([
                "-r",
                &format!("sim:{prefix}"),
                "issue",
                "--profile",
                profile,
                "--holders",
            ])
            .arg(&csv)
            .args(&domain));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    check("status", &home, &["-r", "sim:h-alice-main", "status"]);
    check("backup", &home, &["-r", "sim:h-alice-main", "backup", "--pin", "env:P"]);
    check(
        "restore --dry-run",
        &home,
        &["-r", "sim:h-alice-main", "restore", "--dry-run"],
    );
    let list = check("holder list", &home, &["holder", "list"]);
    assert_eq!(list["holders"][0]["member_number"], "M-1001");
    let r = check(
        "replace",
        &home,
        &[
            "replace",
            "--holder",
            "M-1001",
            "--new",
            "sim:r-alice-main",
            "--pin",
            "env:P",
        ],
    );
    assert_eq!(r["waiting"], true, "{r}");
}
