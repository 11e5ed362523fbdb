//! Faults outside the card: a tampered vault, terminals side by side, secrets
//! hygiene, and wrong input at the edges. Each bad input gets a clear error,
//! a non-zero exit, and changes nothing.

mod common;

use common::claims::{SECRETS_CHECKED, SIDE_BY_SIDE, TAMPER_CASES};
use common::*;
use std::path::Path;

fn write(home: &Path, name: &str, page: u16, data: &[u8]) {
    let mut r = cardvault::transport::sim::SimReader::open(home, name, "main", None).unwrap();
    let mut c = client(&mut r, false).unwrap();
    c.verify_pin(PIN.as_bytes()).unwrap();
    c.write_memory(page, data).unwrap();
}

fn backup(home: &Path, name: &str) {
    let o = run(cv(home).args(["-r", &format!("sim:{name}"), "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A vault with a full backup and two differentials of card "t", plus audit entries.
fn vault_with_chain(tag: &str) -> TempDir {
    let home = temp_dir(tag);
    write(&home, "t", FIRST_DATA_PAGE, &vec![7u8; 20000]);
    backup(&home, "t");
    write(&home, "t", 5, &[8u8; 600]);
    backup(&home, "t");
    write(&home, "t", 50, &[9u8; 300]);
    backup(&home, "t");
    home
}

/// Flip one bit of a BLOB column in place. The edit is made on the bytes in
/// Rust, so the column stays a BLOB (SQL string concatenation would store
/// TEXT, and the vault would then fail on the column type, not on the check
/// under test).
fn flip_bit(conn: &rusqlite::Connection, table: &str, column: &str, row: &str, offset: usize) {
    let mut b: Vec<u8> = conn
        .query_row(&format!("SELECT {column} FROM {table} WHERE {row}"), [], |r| r.get(0))
        .unwrap();
    b[offset] ^= 0x01;
    let n = conn
        .execute(&format!("UPDATE {table} SET {column} = ?1 WHERE {row}"), [&b])
        .unwrap();
    assert_eq!(n, 1, "{table}.{column} WHERE {row}: no such row");
}

/// Every blob column of the vault still holds a BLOB (the tampering kept the types).
fn assert_columns_are_blobs(conn: &rusqlite::Connection, what: &str) {
    for (table, column) in [
        ("records", "data"),
        ("backups", "header"),
        ("backups", "wrapped_key"),
        ("backups", "control_info"),
        ("backups", "trailer"),
        ("backups", "digest"),
    ] {
        let not_blob: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE typeof({column}) != 'blob'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(not_blob, 0, "{what}: {table}.{column} is no longer a BLOB");
    }
}

/// A vault tampering: what is done, and the words `vault verify` must print.
type Tamper = (&'static str, fn(&rusqlite::Connection), &'static str);

/// The vault tampering cases of RELIABILITY.md, in its order.
const TAMPERING: &[Tamper] = &[
    (
        "a byte flipped in a record",
        |c| flip_bit(c, "records", "data", "backup_id = 1 AND idx = 0", 10),
        "backup 1",
    ),
    (
        "a byte changed in a header",
        |c| flip_bit(c, "backups", "header", "id = 2", 20),
        "backup 2",
    ),
    (
        "the copy of the wrapped key replaced",
        |c| {
            c.execute("UPDATE backups SET wrapped_key = zeroblob(60) WHERE id = 1", [])
                .unwrap();
        },
        "wrapped key or control information altered",
    ),
    (
        "control information shifted",
        |c| {
            let mut b: Vec<u8> = c
                .query_row("SELECT control_info FROM backups WHERE id = 3", [], |r| r.get(0))
                .unwrap();
            b.rotate_left(1);
            c.execute("UPDATE backups SET control_info = ?1 WHERE id = 3", [&b])
                .unwrap();
        },
        "backup 3",
    ),
    (
        "a trailer zeroed",
        |c| {
            c.execute("UPDATE backups SET trailer = zeroblob(36) WHERE id = 3", [])
                .unwrap();
        },
        "backup 3",
    ),
    (
        "a record deleted",
        |c| {
            c.execute("DELETE FROM records WHERE backup_id = 1 AND idx = 1", [])
                .unwrap();
        },
        "holds 1 of its 2 records",
    ),
    (
        "a base backup deleted",
        |c| {
            c.execute_batch("DELETE FROM records WHERE backup_id = 1; DELETE FROM backups WHERE id = 1")
                .unwrap();
        },
        "its base #1 is missing",
    ),
    (
        "a backup renumbered",
        |c| {
            c.execute("UPDATE backups SET counter = 7 WHERE id = 3", []).unwrap();
        },
        "columns disagree with the card's header",
    ),
    (
        "a backup re-labelled to another card",
        |c| {
            c.execute("UPDATE backups SET card_number = '0000' WHERE id = 2", [])
                .unwrap();
        },
        "backup 2",
    ),
];

#[test]
fn every_kind_of_vault_tampering_is_named_and_restore_refuses() {
    let mut passed = 0;
    for (what, tamper, words) in TAMPERING {
        let home = vault_with_chain("tamper");
        let before = state(&home, "t");
        write(&home, "t", 90, &[1u8; 256]);
        let changed = state(&home, "t");
        {
            let conn = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
            tamper(&conn);
            assert_columns_are_blobs(&conn, what);
        }
        let o = run(cv(&home).args(["vault", "verify"]));
        assert_eq!(o.status.code(), Some(6), "{what}: verify passed: {}", stdout(&o));
        assert!(
            stdout(&o).contains(words),
            "{what}: verify did not name it ({words}): {}",
            stdout(&o)
        );
        assert!(
            !stdout(&o).contains("Invalid column type"),
            "{what}: verify failed on a column type, not on the check: {}",
            stdout(&o)
        );
        let o = run(cv(&home).args(["--json", "-r", "sim:t", "restore", "--latest", "--pin", "env:P"]));
        assert_eq!(o.status.code(), Some(6), "{what}: restore: {}", stderr(&o));
        let err = &json(&o)["error"];
        assert_eq!(err["kind"], "data_integrity", "{what}: {err}");
        assert_eq!(err["exit_code"], 6, "{what}: {err}");
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{what}: not a one-line error: {}",
            stderr(&o)
        );
        let after = state(&home, "t");
        assert_eq!(after.memory, changed.memory, "{what}: the card was written");
        assert_ne!(after.memory, before.memory);
        passed += 1;
    }
    // The audit chain: edit an entry (the trigger refuses; drop it first, as an attacker would).
    let home = vault_with_chain("audit");
    {
        let conn = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
        assert!(
            conn.execute("UPDATE audit SET result = 'ok' WHERE id = 1", []).is_err(),
            "append-only not enforced"
        );
        conn.execute_batch("DROP TRIGGER audit_append_only_update; UPDATE audit SET result = 'forged' WHERE id = 2;")
            .unwrap();
    }
    let o = run(cv(&home).args(["vault", "verify"]));
    assert_eq!(o.status.code(), Some(6));
    assert!(stdout(&o).contains("audit: entry 2 was altered"), "{}", stdout(&o));
    passed += 1;
    assert_eq!(TAMPERING.len() + 1, TAMPER_CASES);
    assert_eq!(passed, TAMPER_CASES);
    println!("vault tampering: tried {TAMPER_CASES}, passed {passed}");
}

#[test]
fn four_terminals_back_up_side_by_side_while_a_fifth_lists() {
    let home = temp_dir("parallel");
    for i in 0..SIDE_BY_SIDE.0 {
        write(&home, &format!("p{i}"), FIRST_DATA_PAGE, &vec![i as u8 + 1; 30000]);
    }
    let vault_path = home.join("vault.sqlite");
    let mut children = Vec::new();
    let (processes, rounds, backups) = SIDE_BY_SIDE;
    for _round in 0..rounds {
        for i in 0..processes {
            children.push(
                cv(&home)
                    .args(["--json", "-r", &format!("sim:p{i}"), "backup", "--pin", "env:P"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        let lister = run(cv(&home).args(["--json", "vault", "list"]));
        assert!(
            lister.status.success(),
            "lister: {}",
            String::from_utf8_lossy(&lister.stderr)
        );
        for c in children.drain(..) {
            let o = c.wait_with_output().unwrap();
            assert_no_panic(&o.stderr);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "a backup failed: {err}");
            assert!(!err.contains("locked") && !err.contains("busy"), "{err}");
        }
    }
    let v = cardvault::vault::Vault::open(&vault_path).unwrap();
    assert_eq!(processes * rounds, backups);
    assert_eq!(v.list_backups(None).unwrap().len(), backups, "rows were lost");
    assert!(v.verify().unwrap().is_empty());
    println!("side by side: {backups} backups from {processes} processes with a concurrent lister, none lost");
}

#[test]
fn no_key_or_pin_appears_in_traces_logs_or_the_vault() {
    let home = temp_dir("hygiene");
    let holders = home.join("h.csv");
    std::fs::write(&holders, "holder,pin,member_number,expiry\nalice,864213,M-1,2030-01\n").unwrap();
    let elements = "a1".repeat(32) + "\n" + &"b2".repeat(32);
    // The cards get an issuer domain's key from a key ceremony.
    let domain = home.join("domain");
    let passphrases = domain_init(&home, &domain, 2, 3);
    let issue_domain = domain_args(&domain, &passphrases, &[1, 3]);
    let mut logs = String::new();
    let mut step = |args: &[&str]| {
        let o = run(cv(&home)
            .env("HP", "864213")
            .env("E", &elements)
            .arg("--trace")
            .args(args));
        logs.push_str(&stdout(&o));
        logs.push_str(&stderr(&o));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    let mut issue = vec![
        "-r",
        "sim:h",
        "issue",
        "--profile",
        "pair",
        "--holders",
        holders.to_str().unwrap(),
    ];
    issue.extend(issue_domain.iter().map(String::as_str));
    step(&issue);
    step(&[
        "duplicate",
        "--main",
        "sim:h-alice-main",
        "--backup",
        "sim:h-alice-backup",
        "--pin",
        "env:HP",
        "--backup-pin",
        "env:HP",
        "--elements",
        "env:E",
    ]);
    let f = home.join("doc.txt");
    std::fs::write(&f, "quarterly figures").unwrap();
    step(&[
        "encrypt",
        "--to",
        "sim:h-alice-main",
        f.to_str().unwrap(),
        "-o",
        home.join("doc.cve").to_str().unwrap(),
    ]);
    step(&[
        "-r",
        "sim:h-alice-backup",
        "decrypt",
        "--pin",
        "env:HP",
        home.join("doc.cve").to_str().unwrap(),
        "-o",
        home.join("doc.out").to_str().unwrap(),
    ]);
    step(&["-r", "sim:h-alice-main", "backup", "--pin", "env:HP"]);
    step(&["-r", "sim:h-alice-main", "restore", "--latest", "--pin", "env:HP"]);
    let issuer_dir = test_issuer_dir();
    step(&[
        "-r",
        "sim:h-alice-main",
        "pin",
        "unblock",
        "--issuer",
        issuer_dir.to_str().unwrap(),
    ]);
    // Every secret the simulator holds.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["h-alice-main", "h-alice-backup"] {
        let s = state(&home, name);
        secrets.push((format!("{name} ECKA key"), s.ecka_private.clone()));
        secrets.push((format!("{name} unique key"), s.unique_key.clone()));
        secrets.push((format!("{name} common key"), s.common_key.clone()));
        secrets.push((format!("{name} PIN hash"), s.pin.hash.clone()));
        for (i, e) in s.key_group.elements.iter().enumerate() {
            secrets.push((format!("{name} key group element {}", i + 1), e.0.clone()));
        }
        if let Some(k) = &s.main_key {
            secrets.push((format!("{name} main private key"), k.private.clone()));
        }
    }
    secrets.push(("holder PIN".into(), b"864213".to_vec()));
    for (i, p) in passphrases.iter().enumerate() {
        let text = std::fs::read_to_string(p).unwrap();
        secrets.push((
            format!("custodian {} passphrase", i + 1),
            text.trim().as_bytes().to_vec(),
        ));
    }
    let vault = std::fs::read(home.join("vault.sqlite")).unwrap();
    let wal = std::fs::read(home.join("vault.sqlite-wal")).unwrap_or_default();
    let logs_lower = logs.to_lowercase();
    let mut checked = 0;
    for (what, bytes) in &secrets {
        if bytes.is_empty() {
            continue;
        }
        checked += 1;
        let hex = cardvault_proto::to_hex(bytes);
        let spaced: String = bytes.iter().map(|b| format!("{b:02x} ")).collect();
        assert!(
            !logs_lower.contains(&hex) && !logs_lower.contains(spaced.trim()),
            "{what} appears in the output"
        );
        assert!(
            !vault.windows(bytes.len()).any(|w| w == &bytes[..]),
            "{what} is in the vault file"
        );
        assert!(
            !wal.windows(bytes.len()).any(|w| w == &bytes[..]),
            "{what} is in the vault WAL"
        );
    }
    // The PIN as text, as a word of its own: traces are full of random hex
    // (wrapped APDUs, signatures), in which any six digits turn up by chance.
    let pin_as_word = logs.match_indices("864213").any(|(i, m)| {
        let hexish = |c: Option<char>| c.is_some_and(|c| c.is_ascii_hexdigit());
        !hexish(logs[..i].chars().next_back()) && !hexish(logs[i + m.len()..].chars().next())
    });
    assert!(!pin_as_word, "the PIN appears in the output");
    assert!(logs.contains("secret bytes masked"), "the trace did not run");
    let names: Vec<&String> = secrets.iter().map(|s| &s.0).collect();
    assert_eq!(checked, SECRETS_CHECKED, "secrets checked: {names:?}");
    println!("secrets hygiene: {checked} secrets checked against traces, output and the vault");
}

#[test]
fn a_foreign_card_gets_one_clear_line_and_exit_code_4() {
    let home = temp_dir("foreign");
    let cfg = home.join("c.toml");
    std::fs::write(&cfg, "[sim]\nprofile = \"foreign\"\n").unwrap();
    let o = run(cv(&home).arg("--config").arg(&cfg).args(["-r", "sim:other", "status"]));
    assert_eq!(o.status.code(), Some(4));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("not a cardvault card") && e.contains("6A82"), "{e}");
    let o = run(cv(&home)
        .arg("--config")
        .arg(&cfg)
        .args(["-r", "sim:other", "backup", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(
        !home.join("vault.sqlite").exists()
            || cardvault::vault::Vault::open(&home.join("vault.sqlite"))
                .unwrap()
                .list_backups(None)
                .unwrap()
                .is_empty()
    );
}

#[test]
fn a_full_disk_for_the_vault_is_a_clear_error_and_loses_nothing() {
    use std::os::unix::process::CommandExt;
    let home = temp_dir("fulldisk");
    // A small card, so that only the vault needs room to grow.
    let profile = home.join("small.toml");
    std::fs::write(
        &profile,
        format!("role='main'\npin='{PIN}'\npage_size=256\npage_count=4\nissued=true\n"),
    )
    .unwrap();
    let cfg = home.join("c.toml");
    std::fs::write(&cfg, format!("[sim]\nprofile = \"{}\"\n", profile.display())).unwrap();
    let o = run(cv(&home)
        .arg("--config")
        .arg(&cfg)
        .args(["-r", "sim:s", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    write(&home, "s", 1, &[0x77; 512]);
    let before = state(&home, "s");
    // Files may not grow past 4 KiB: the card's state file (under 3 KiB) still
    // fits, the vault's write-ahead log does not.
    let limit: libc::rlim_t = 4096;
    let mut c = cv(&home);
    c.arg("--config")
        .arg(&cfg)
        .args(["-r", "sim:s", "backup", "--full", "--pin", "env:P"]);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = run(&mut c);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(7), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("vault"), "{e}");
    // Nothing lost: the card still has its change flags and its base, and the
    // vault holds only the first backup, intact.
    let after = state(&home, "s");
    assert_eq!(after.change_flags, before.change_flags);
    assert_eq!(after.backup.base, before.backup.base);
    let v = cardvault::vault::Vault::open(&home.join("vault.sqlite")).unwrap();
    assert_eq!(v.list_backups(None).unwrap().len(), 1);
    assert!(v.verify().unwrap().is_empty());
}

/// Open a card session on `r` (SELECT included).
fn client(r: &mut dyn cardvault::transport::Reader, trace: bool) -> cardvault::Result<cardvault::card::CardClient<'_>> {
    cardvault::card::CardClient::open(
        r,
        cardvault::card::SessionOptions {
            trace,
            ..Default::default()
        },
    )
}
