//! The exit codes of the README's table, per command family: every failing
//! case gets the documented code and error kind under `--json`, and changes
//! nothing (card state, vault rows, the files it was given), except the
//! retry counter a wrong PIN is meant to spend.

mod common;

use common::*;
use std::path::Path;

/// One failing command line and what it must end with.
struct Case {
    family: &'static str,
    args: &'static [&'static str],
    /// Extra environment (a wrong PIN in `W`).
    env: &'static [(&'static str, &'static str)],
    code: i32,
    kind: &'static str,
    /// Words the message must contain.
    words: &'static str,
    /// The refusing default: no card or vault made on first use.
    strict: bool,
    /// A wrong PIN: the named card's retry counter goes down by one.
    spends_pin_of: Option<&'static str>,
}

const fn case(
    family: &'static str,
    args: &'static [&'static str],
    code: i32,
    kind: &'static str,
    words: &'static str,
) -> Case {
    Case {
        family,
        args,
        env: &[],
        code,
        kind,
        words,
        strict: true,
        spends_pin_of: None,
    }
}

const WRONG: &[(&str, &str)] = &[("W", "999999")];

const CARDS: &[&str] = &["m", "b", "other"];

fn cases() -> Vec<Case> {
    vec![
        // pin
        case(
            "pin",
            &["-r", "sim:m", "pin", "verify", "--pin", "file:nope.pin"],
            2,
            "input",
            "nope.pin",
        ),
        case(
            "pin",
            &["-r", "sim:mm", "pin", "verify", "--pin", "env:P"],
            3,
            "reader",
            "did you mean",
        ),
        Case {
            env: WRONG,
            spends_pin_of: Some("m"),
            ..case(
                "pin",
                &["-r", "sim:m", "pin", "verify", "--pin", "env:W"],
                5,
                "wrong_pin",
                "tries left",
            )
        },
        // files
        case(
            "files",
            &["encrypt", "--to", "sim:m", "nope.txt", "-o", "x.cve"],
            2,
            "input",
            "nope.txt",
        ),
        case(
            "files",
            &["encrypt", "--to", "sim:nosuch", "plain.txt", "-o", "x.cve"],
            3,
            "reader",
            "nosuch",
        ),
        case(
            "files",
            &["-r", "sim:m", "decrypt", "nope.cve", "-o", "x", "--pin", "env:P"],
            2,
            "input",
            "nope.cve",
        ),
        case(
            "files",
            &["-r", "sim:m", "decrypt", "plain.txt", "-o", "x", "--pin", "env:P"],
            6,
            "data_integrity",
            "plain.txt",
        ),
        Case {
            env: WRONG,
            spends_pin_of: Some("m"),
            ..case(
                "files",
                &["-r", "sim:m", "decrypt", "f.cve", "-o", "x", "--pin", "env:W"],
                5,
                "wrong_pin",
                "tries left",
            )
        },
        case(
            "files",
            &["-r", "sim:m", "decrypt", "bad.cve", "-o", "x", "--pin", "env:P"],
            6,
            "data_integrity",
            "bad.cve",
        ),
        case(
            "files",
            &["-r", "sim:other", "decrypt", "f.cve", "-o", "x", "--pin", "env:P"],
            6,
            "data_integrity",
            "the card holds no decryption key",
        ),
        case(
            "files",
            &[
                "recover",
                "--backup",
                "sim:b",
                "--new",
                "sim:other",
                "--backup-pin",
                "env:P",
                "--new-pin",
                "env:P",
                "f.cve",
                "nope.cve",
            ],
            2,
            "usage",
            "nope.cve",
        ),
        // backup and restore
        case(
            "backup",
            &["-r", "sim:m", "backup", "--pin", "file:nope.pin"],
            2,
            "input",
            "nope.pin",
        ),
        case(
            "backup",
            &[
                "-r",
                "sim:m",
                "restore",
                "--from-card",
                "4711",
                "--authorization",
                "nope.json",
                "--pin",
                "env:P",
            ],
            2,
            "input",
            "nope.json",
        ),
        case(
            "backup",
            &[
                "--vault",
                "nope.sqlite",
                "-r",
                "sim:m",
                "restore",
                "--latest",
                "--pin",
                "env:P",
            ],
            7,
            "vault",
            "nope.sqlite",
        ),
        Case {
            env: WRONG,
            spends_pin_of: Some("m"),
            ..case(
                "backup",
                &["-r", "sim:m", "backup", "--pin", "env:W"],
                5,
                "wrong_pin",
                "tries left",
            )
        },
        // purse
        case(
            "purse",
            &[
                "-r",
                "sim:m",
                "purse",
                "credit",
                "--authorization",
                "nope.json",
                "--pin",
                "env:P",
            ],
            2,
            "input",
            "nope.json",
        ),
        case(
            "purse",
            &["-r", "sim:m", "purse", "debit", "1000000", "--pin", "env:P"],
            4,
            "refused",
            "6A80",
        ),
        // wallet and safe
        case(
            "wallet",
            &[
                "-r",
                "sim:m",
                "wallet",
                "load",
                "--authorization",
                "nope.json",
                "--pin",
                "env:P",
            ],
            2,
            "input",
            "nope.json",
        ),
        case(
            "wallet",
            &["-r", "sim:m", "wallet", "spend", "00ff", "1", "--pin", "env:P"],
            4,
            "refused",
            "holds no item",
        ),
        case(
            "safe",
            &["safe", "list", "--safe", "http://127.0.0.1:9"],
            3,
            "safe_unreachable",
            "did not answer",
        ),
        case(
            "safe",
            &["safe", "verify", "--dir", "nosafe"],
            2,
            "usage",
            "no safe here",
        ),
        // key group
        case(
            "keygroup",
            &["-r", "sim:m", "keygroup", "status", "--pin", "file:nope.pin"],
            2,
            "input",
            "nope.pin",
        ),
        Case {
            env: WRONG,
            spends_pin_of: Some("m"),
            ..case(
                "keygroup",
                &["-r", "sim:m", "keygroup", "status", "--pin", "env:W"],
                5,
                "wrong_pin",
                "tries left",
            )
        },
        // duplicate and issue
        case(
            "duplicate",
            &[
                "duplicate",
                "--holders",
                "nope.csv",
                "--main",
                "sim:d",
                "--backup",
                "sim:d",
            ],
            2,
            "input",
            "nope.csv",
        ),
        case(
            "duplicate",
            &[
                "duplicate",
                "--main",
                "sim:m",
                "--backup",
                "sim:m",
                "--pin",
                "env:P",
                "--backup-pin",
                "env:P",
                "--elements",
                "generate",
            ],
            2,
            "usage",
            "same card",
        ),
        case(
            "duplicate",
            &[
                "duplicate",
                "--main",
                "sim:b",
                "--backup",
                "sim:other",
                "--pin",
                "env:P",
                "--backup-pin",
                "env:P",
                "--elements",
                "generate",
            ],
            4,
            "refused",
            "not an issued main card",
        ),
        case(
            "issue",
            &["-r", "sim:i", "issue", "--profile", "main", "--holders", "nope.csv"],
            2,
            "input",
            "nope.csv",
        ),
        // vault and audit
        case("vault", &["vault", "show", "first"], 2, "usage", "first"),
        case(
            "vault",
            &["--vault", "nope.sqlite", "vault", "list"],
            7,
            "vault",
            "nope.sqlite",
        ),
        case(
            "vault",
            &["--vault", "nope.sqlite", "audit", "--verify"],
            7,
            "vault",
            "nope.sqlite",
        ),
        // apdu
        case(
            "apdu",
            &["-r", "sim:m", "apdu", "--script", "nope.apdu"],
            2,
            "input",
            "nope.apdu",
        ),
        case("apdu", &["-r", "sim:m", "apdu", "00A4040"], 2, "usage", "00A4040"),
    ]
}

/// Everything a failing command must leave as it was: each card's state
/// (its retry counter aside when `spent` names it), each vault table's rows,
/// and the files of the home.
#[derive(PartialEq, Debug)]
struct Snapshot {
    cards: Vec<applet_sim::CardState>,
    vault: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
}

fn snapshot(home: &Path, spent: Option<&str>) -> Snapshot {
    let cards = CARDS
        .iter()
        .map(|name| {
            let mut s = state(home, name);
            if spent == Some(*name) {
                s.pin.tries_left = 0;
            }
            s
        })
        .collect();
    let db =
        rusqlite::Connection::open_with_flags(home.join("vault.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut vault = Vec::new();
    for t in tables {
        let mut st = db.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let rows: Vec<String> = st
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        vault.push(format!("{t}: {}", rows.join("\n")));
    }
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().contains("vault.sqlite"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    Snapshot { cards, vault, files }
}

fn tries(home: &Path, card: &str) -> u8 {
    state(home, card).pin.tries_left
}

/// A home with a main card `m` holding a key, its backup in the vault, a
/// backup card `b`, another main card `other`, a file encrypted to `m`, a
/// damaged copy of it, and a plain file.
fn home() -> TempDir {
    let home = temp_dir("exit-codes");
    for (name, profile) in [("m", "main"), ("b", "backup"), ("other", "main")] {
        let config = home.join(format!("{profile}.toml"));
        std::fs::write(&config, format!("[sim]\nprofile = \"{profile}\"\n")).unwrap();
        let o = run(cv(&home)
            .arg("--config")
            .arg(&config)
            .args(["-r", &format!("sim:{name}"), "status"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    std::fs::write(home.join("plain.txt"), b"a plain file, not encrypted").unwrap();
    let o = run(cv(&home).args([
        "duplicate",
        "--main",
        "sim:m",
        "--backup",
        "sim:b",
        "--pin",
        "env:P",
        "--backup-pin",
        "env:P",
        "--elements",
        "generate",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv(&home)
        .current_dir(&home)
        .args(["encrypt", "--to", "sim:m", "plain.txt", "-o", "f.cve"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut bad = std::fs::read(home.join("f.cve")).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(home.join("bad.cve"), bad).unwrap();
    let o = run(cv(&home).args(["-r", "sim:m", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    home
}

#[test]
fn every_failure_of_every_command_family_has_its_documented_exit_code_and_changes_nothing() {
    let home = home();
    let mut families = std::collections::BTreeMap::<&str, Vec<i32>>::new();
    for c in cases() {
        let before = snapshot(&home, c.spends_pin_of);
        let tries_before = c.spends_pin_of.map(|card| tries(&home, card));
        let mut cmd = if c.strict {
            cardvault_strict(&home)
        } else {
            cardvault(&home)
        };
        cmd.current_dir(&home).env("P", PIN).arg("--json").args(c.args);
        for (k, v) in c.env {
            cmd.env(k, v);
        }
        let o = run(&mut cmd);
        let what = format!("{} {:?}", c.family, c.args);
        assert_eq!(o.status.code(), Some(c.code), "{what}: {}{}", stdout(&o), stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON error object ({e}): {}", stdout(&o)));
        assert_eq!(v["error"]["kind"], c.kind, "{what}: {v}");
        assert_eq!(v["error"]["exit_code"], c.code, "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(c.words), "{what}: {message}");
        assert!(stderr(&o).contains(message), "{what}: stderr does not say it");
        assert_eq!(snapshot(&home, c.spends_pin_of), before, "{what} changed something");
        if let (Some(card), Some(t)) = (c.spends_pin_of, tries_before) {
            assert_eq!(tries(&home, card) + 1, t, "{what}: one try spent");
            // Give the try back for the next case.
            let o = run(cv(&home).args(["-r", &format!("sim:{card}"), "pin", "verify", "--pin", "env:P"]));
            assert!(o.status.success(), "{}", stderr(&o));
        }
        families.entry(c.family).or_default().push(c.code);
    }
    // Every family has its input-file error (2), and the table covers
    // every code of the README from 2 to 7.
    for (family, codes) in &families {
        assert!(codes.contains(&2), "{family}: no exit code 2 case");
    }
    let all: std::collections::BTreeSet<i32> = families.values().flatten().copied().collect();
    for code in 2..=7 {
        assert!(all.contains(&code), "no case for exit code {code}");
    }
}
