//! Through the real stack: pcscd + the vsmartcard vpcd driver + applet-sim,
//! driven by cardvault and by the peer tools (pcsc_scan, opensc-tool, scriptor).

mod common;

use cardvault::config::{Config, ExtendedMode};
use cardvault::reader::{self, ReaderOptions};
use common::claims::{BACKUP_KILL_RUNS, WRITE_KILL_ROUNDS};
use common::stack::*;
use common::*;
use std::process::Command;
use std::time::Duration;

fn opts(home: &std::path::Path, ext: Option<ExtendedMode>) -> ReaderOptions {
    ReaderOptions {
        data_dir: home.to_path_buf(),
        config: Config::default(),
        extended_flag: ext,
        wait: None,
    }
}

fn card_number_of(path: &std::path::Path) -> String {
    applet_sim::state::Store::peek(path).unwrap().card_number.clone()
}

#[test]
fn peer_tools_see_the_virtual_readers_and_the_applet() {
    let Some(stack) = PcscStack::start("peer_tools_see_the_virtual_readers_and_the_applet") else {
        return;
    };
    let dir = temp_dir("peers");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, "backup")]);

    if require_tool("peer_tools_see_the_virtual_readers_and_the_applet", "pcsc_scan") {
        let o = Command::new("pcsc_scan").arg("-r").output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(READER0) && out.contains(READER1), "pcsc_scan -r: {out}");
    }
    if require_tool("peer_tools_see_the_virtual_readers_and_the_applet", "opensc-tool") {
        let o = Command::new("opensc-tool").arg("-l").output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        for r in [READER0, READER1] {
            let line = out
                .lines()
                .find(|l| l.contains(r))
                .unwrap_or_else(|| panic!("opensc-tool -l: {out}"));
            assert!(line.contains("Yes"), "card not present per opensc-tool: {line}");
        }
    }
    if require_tool("peer_tools_see_the_virtual_readers_and_the_applet", "scriptor") {
        // The two APDUs docs/PROTOCOL.md gives for selecting the applet and reading the card number.
        let script = dir.join("read-number.txt");
        std::fs::write(&script, "00 A4 04 00 06 F0 43 56 4C 54 01 00\n00 CA DF 01 00\n").unwrap();
        let o = Command::new("scriptor")
            .args(["-r", READER0])
            .arg(&script)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout)
            .to_uppercase()
            .replace(['\n', ' '], "");
        let number_hex: String = card_number_of(&a).bytes().map(|b| format!("{b:02X}")).collect();
        assert!(
            out.contains(&number_hex),
            "scriptor did not read card number {number_hex}: {out}"
        );
        assert!(out.contains("9000:NORMALPROCESSING"), "{out}");
    }
}

#[test]
fn cardvault_reaches_cards_by_index_name_and_sim() {
    let Some(stack) = PcscStack::start("cardvault_reaches_cards_by_index_name_and_sim") else {
        return;
    };
    let dir = temp_dir("select");
    let home = dir.join("home");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, "backup")]);
    let (na, nb) = (card_number_of(&a), card_number_of(&b));

    // readers: both virtual readers with a card and an ATR, plus an embedded card.
    run(cardvault(&home).args(["-r", "sim:desk", "status"]));
    let o = run(cardvault(&home).args(["--json", "readers"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let rs = v["readers"].as_array().unwrap();
    for (name, idx) in [(READER0, 0), (READER1, 1)] {
        let r = rs.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{v}"));
        assert_eq!(r["card_present"], true);
        assert_eq!(r["index"], idx);
        assert!(r["atr"].as_str().unwrap().starts_with("3B"));
    }
    assert!(rs.iter().any(|r| r["name"] == "sim:desk" && r["kind"] == "embedded"));

    // status by index, by name substring and from CARDVAULT_READER.
    for (sel, want, role) in [("0", &na, "main"), ("Test 00 01", &nb, "backup")] {
        let o = run(cardvault(&home).args(["--json", "-r", sel, "status"]));
        assert!(o.status.success(), "status -r {sel}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["card_number"], want.as_str());
        assert_eq!(v["role"], role);
        assert_eq!(v["pin_tries_left"], 3);
        assert_eq!(v["applet_version"], "1.0");
    }
    let o = run(cardvault(&home)
        .env("CARDVAULT_READER", READER1)
        .args(["--json", "status"]));
    assert_eq!(json(&o)["card_number"], nb.as_str());

    // Two cards and no choice: a clear list, exit code 3, nothing sent.
    let o = run(cardvault(&home).arg("status"));
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("0: {READER0}")) && e.contains(&format!("1: {READER1}")),
        "{e}"
    );

    // apdu by name: SELECT then GET DATA card number.
    let o = run(cardvault(&home).args(["-r", READER0, "apdu", "00A4040006F043564C5401", "00CADF0100"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let number_hex: String = na.bytes().map(|b| format!("{b:02X}")).collect();
    assert!(out.contains(&number_hex) && out.contains("9000 ok"), "{out}");

    // A reader index that does not exist.
    let o = run(cardvault(&home).args(["-r", "7", "status"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("there is no reader 7"), "{}", stderr(&o));
}

/// Write 4 KiB, read it back through `reader`, and return (data, APDUs used for the read).
fn read_4k(home: &std::path::Path, reader_name: &str, ext: Option<ExtendedMode>, pattern: &[u8]) -> (Vec<u8>, u64) {
    let mut r = reader::open(Some(reader_name), &opts(home, ext)).unwrap();
    with_selected(r.as_mut(), false, |c| {
        c.verify_pin(b"123456")?;
        // Page 4: the first page after the purse, which no holder command writes.
        c.write_memory(4, pattern)?;
        let before = c.channel().stats().apdus;
        let data = c.read_memory(4, pattern.len())?;
        Ok((data, c.channel().stats().apdus - before))
    })
    .unwrap()
}

#[test]
fn a_4k_response_arrives_whole_extended_and_through_get_response() {
    let Some(stack) = PcscStack::start("a_4k_response_arrives_whole_extended_and_through_get_response") else {
        return;
    };
    let dir = temp_dir("4k");
    let home = dir.join("home");
    let short_profile = dir.join("short.toml");
    std::fs::write(
        &short_profile,
        format!("role='main'\npin='123456'\nadmin_key='{ADMIN_KEY}'\nextended_length=false\n"),
    )
    .unwrap();
    let (a, b) = (dir.join("ext.card"), dir.join("short.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, short_profile.to_str().unwrap())]);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8 ^ 0x5A).collect();

    // Extended-length card: one APDU.
    let (data, n) = read_4k(&home, READER0, None, &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, 1, "extended read should be one APDU");

    // Card limited to short APDUs: READ MEMORY + 15 GET RESPONSE.
    let (data, n) = read_4k(&home, READER1, None, &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, 16, "short read should be 1 command + 15 GET RESPONSE");

    // An extended-capable card behind a reader configured for short APDUs only.
    let (data, n) = read_4k(&home, READER0, Some(ExtendedMode::Never), &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, 16);
}

#[test]
fn three_wrong_pins_block_and_the_block_survives_a_restart() {
    let Some(stack) = PcscStack::start("three_wrong_pins_block_and_the_block_survives_a_restart") else {
        return;
    };
    let dir = temp_dir("pin");
    let home = dir.join("home");
    let card = dir.join("pin.card");
    let mut sim = stack.one(&card, "main");
    let verify = |pin: &str| {
        run(cardvault(&home)
            .env("PIN", pin)
            .args(["-r", "0", "pin", "verify", "--pin", "env:PIN"]))
    };

    for left in [2, 1] {
        let o = verify("999999");
        assert_eq!(o.status.code(), Some(5));
        assert!(stderr(&o).contains(&format!("{left} tries left")), "{}", stderr(&o));
    }
    let o = verify("999999");
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("PIN is blocked"), "{}", stderr(&o));
    // The right PIN no longer helps.
    let o = verify("123456");
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("PIN is blocked"));

    // Pull the card (kill the simulator) and put it back.
    sim.kill();
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 0);
    let _sim = stack.one(&card, "main");
    let o = run(cardvault(&home).args(["--json", "-r", "0", "status"]));
    let v = json(&o);
    assert_eq!(v["pin_blocked"], true, "{v}");
    assert_eq!(v["pin_tries_left"], 0);
    assert_eq!(verify("123456").status.code(), Some(5));

    // A wrong admin key does not unblock, and changes nothing.
    let bad = "ff".repeat(32);
    let o = run(cardvault(&home)
        .env("ADMIN", &bad)
        .args(["-r", "0", "pin", "unblock", "--admin-key", "env:ADMIN"]));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 0);
    // The issuer's admin key unblocks and sets a new PIN.
    let o = run(cardvault(&home).env("ADMIN", ADMIN_KEY).env("NEWPIN", "24680").args([
        "-r",
        "0",
        "pin",
        "unblock",
        "--admin-key",
        "env:ADMIN",
        "--new-pin",
        "env:NEWPIN",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(verify("24680").status.success());
}

#[test]
fn killing_the_simulator_during_writes_leaves_the_card_old_or_new() {
    let Some(stack) = PcscStack::start("killing_the_simulator_during_writes_leaves_the_card_old_or_new") else {
        return;
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = temp_dir("kill");
    let home = dir.join("home");
    let card = dir.join("kill.card");
    let mut rng = Rng::new(seed("killing_the_simulator_during_writes"));
    let mut total_acked = 0u64;
    for round in 0..WRITE_KILL_ROUNDS {
        let mut sim = stack.one(&card, "main");
        // Memory pages 4..20 hold one byte value everywhere: the last write.
        let start = applet_sim::state::Store::peek(&card).unwrap().memory[1024];
        let acked = Arc::new(AtomicU64::new(0));
        let (home2, acked2) = (home.clone(), acked.clone());
        let writer = std::thread::spawn(move || -> (u8, cardvault::Error) {
            let mut last = start;
            let mut r = reader::open(Some(READER0), &opts(&home2, None)).expect("open the reader");
            let err = with_selected(r.as_mut(), false, |c| -> cardvault::Result<()> {
                c.verify_pin(b"123456")?;
                loop {
                    let next = last.wrapping_add(1);
                    c.write_memory(4, &[next; 4096])?;
                    last = next;
                    acked2.fetch_add(1, Ordering::SeqCst);
                }
            })
            .unwrap_err();
            (last, err)
        });
        // Kill only once a write was acknowledged, at a random point after it.
        wait_for("an acknowledged write", Duration::from_secs(10), || {
            acked.load(Ordering::SeqCst) > 0
        });
        std::thread::sleep(Duration::from_millis(rng.below(100)));
        sim.kill();
        let (last, err) = writer.join().unwrap();
        let n = acked.load(Ordering::SeqCst);
        assert!(n >= 1, "round {round}: no write was acknowledged");
        total_acked += n;
        assert_eq!(
            err.exit_code(),
            3,
            "round {round}: the kill was reported as '{err}', not as a reader problem"
        );
        let st = applet_sim::state::Store::peek(&card)
            .unwrap_or_else(|e| panic!("round {round}: card file broken after kill: {e}"));
        let first = st.memory[1024];
        assert!(
            st.memory[1024..1024 + 4096].iter().all(|b| *b == first),
            "round {round}: a write was torn"
        );
        assert!(
            first == last || first == last.wrapping_add(1),
            "round {round}: card holds {first}, last acknowledged write was {last}"
        );
    }
    println!(
        "SIGKILL during writes through pcscd: {WRITE_KILL_ROUNDS} rounds, {total_acked} writes acknowledged, \
         every card file old or new, none torn"
    );
}

#[test]
fn two_readers_issue_duplicate_break_and_recover_through_pcscd() {
    let Some(stack) = PcscStack::start("two_readers_issue_duplicate_break_and_recover_through_pcscd") else {
        return;
    };
    let dir = temp_dir("tworeaders");
    let home = dir.join("home");
    let (main_card, backup_card) = (dir.join("main.card"), dir.join("backup.card"));
    let mut sim = stack.sim(&[(0, &main_card, "blank"), (1, &backup_card, "blank")]);
    let env = |c: &mut Command| {
        c.env("ADMIN", ADMIN_KEY)
            .env("P", "2468")
            .env("E", format!("{}\n{}", "ab".repeat(32), "cd".repeat(32)));
    };
    let csv = dir.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\nalice,2468,M-9,2030-01\n").unwrap();

    // Issue the pair: main in reader 0, backup in reader 1.
    let mut c = cardvault(&home);
    env(&mut c);
    c.args([
        "--json",
        "-r",
        "0",
        "issue",
        "--profile",
        "pair",
        "--backup-reader",
        "1",
        "--holders",
    ])
    .arg(&csv)
    .args(["--admin-key", "env:ADMIN"]);
    let o = run(&mut c);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["issued"], 2);

    // Duplicate across the two readers.
    let mut c = cardvault(&home);
    env(&mut c);
    c.args(["--json", "duplicate", "--main", READER0, "--backup", READER1]);
    c.args(["--pin", "env:P", "--backup-pin", "env:P", "--elements", "env:E"]);
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["end_to_end_check"], true);

    // Encrypt three files to the main card (through the reader).
    let files: Vec<std::path::PathBuf> = (0..3).map(|i| dir.join(format!("f{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, vec![i as u8 + 1; 5000 * (i + 1)]).unwrap();
        let o = run(cardvault(&home)
            .args(["encrypt", "--to", "0"])
            .arg(f)
            .arg("-o")
            .arg(f.with_extension("cve")));
        assert!(o.status.success(), "{}", stderr(&o));
    }

    // The main card breaks; a new blank card takes its place in reader 0.
    sim.kill();
    std::fs::remove_file(&main_card).unwrap();
    let new_card = dir.join("new-main.card");
    let _sim = stack.sim(&[(0, &new_card, "blank"), (1, &backup_card, "blank")]);
    let mut c = cardvault(&home);
    env(&mut c);
    c.args(["-r", "0", "issue", "--profile", "main", "--holders"])
        .arg(&csv)
        .args(["--admin-key", "env:ADMIN"]);
    assert!(run(&mut c).status.success());
    let mut c = cardvault(&home);
    env(&mut c);
    c.args([
        "recover",
        "--backup",
        "1",
        "--new",
        "0",
        "--backup-pin",
        "env:P",
        "--new-pin",
        "env:P",
        "--elements",
        "env:E",
    ]);
    for f in &files {
        c.arg(f.with_extension("cve"));
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));

    // All three decrypt with the new card.
    for f in &files {
        let out = f.with_extension("out");
        let mut c = cardvault(&home);
        env(&mut c);
        let o = run(c
            .args(["-r", "0", "decrypt", "--pin", "env:P"])
            .arg(f.with_extension("cve"))
            .arg("-o")
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(&out).unwrap());
    }
}

#[test]
fn backup_and_restore_onto_the_same_and_a_replacement_card_through_pcscd() {
    let Some(stack) = PcscStack::start("backup_and_restore_onto_the_same_and_a_replacement_card_through_pcscd") else {
        return;
    };
    let dir = temp_dir("backup");
    let home = dir.join("home");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, "replacement")]);
    let pattern: Vec<u8> = (0..32768u32).map(|i| (i * 13 % 256) as u8).collect();
    {
        let mut r = reader::open(Some(READER0), &opts(&home, None)).unwrap();
        with_selected(r.as_mut(), false, |c| {
            c.verify_pin(b"123456")?;
            c.write_memory(4, &pattern[1024..])?;
            c.write_memory(128, &pattern)
        })
        .unwrap();
    }
    let cv = |args: &[&str]| {
        let mut c = cardvault(&home);
        c.env("P", "123456").args(args);
        run(&mut c)
    };
    let o = cv(&["--json", "-r", "0", "backup", "--pin", "env:P"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = json(&o);
    assert_eq!(rep["kind"], "full");
    assert!(rep["apdus"].as_u64().unwrap() <= 3, "{rep}");
    let at_backup = applet_sim::state::Store::peek(&a).unwrap().memory.clone();
    {
        let mut r = reader::open(Some(READER0), &opts(&home, None)).unwrap();
        with_selected(r.as_mut(), false, |c| {
            c.verify_pin(b"123456")?;
            c.write_memory(7, &[0xEE; 1000])
        })
        .unwrap();
    }
    let o = cv(&["-r", "0", "restore", "--latest", "--pin", "env:P"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(applet_sim::state::Store::peek(&a).unwrap().memory, at_backup);

    // Onto the replacement card in reader 1, with the issuer's authorization.
    let number = card_number_of(&a);
    let req = dir.join("req.json");
    let auth = dir.join("auth.json");
    let o = cv(&[
        "-r",
        "1",
        "restore",
        "--from-card",
        &number,
        "--pin",
        "env:P",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/issuer/issuer-private.hex");
    let o = cv(&["card", "revoke", &number]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cv(&[
        "authorize-restore",
        "--request",
        req.to_str().unwrap(),
        "--issuer-key",
        &format!("file:{}", key.display()),
        "--issuer-root",
        issuer_root().to_str().unwrap(),
        "-o",
        auth.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cv(&[
        "-r",
        "1",
        "restore",
        "--from-card",
        &number,
        "--pin",
        "env:P",
        "--authorization",
        auth.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(applet_sim::state::Store::peek(&b).unwrap().memory, at_backup);
}

#[test]
fn sigkill_of_the_simulator_during_workflows_through_pcscd() {
    let Some(stack) = PcscStack::start("sigkill_of_the_simulator_during_workflows_through_pcscd") else {
        return;
    };
    use std::io::BufRead;
    let dir = temp_dir("sigkill");
    let home = dir.join("home");
    let card = dir.join("k.card");
    let mut rng = Rng::new(seed("sigkill_of_the_simulator_during_workflows"));
    let write = |byte: u8| {
        let mut r = reader::open(Some(READER0), &opts(&home, None)).unwrap();
        with_selected(r.as_mut(), false, |c| {
            c.verify_pin(b"123456")?;
            c.write_memory(4, &vec![byte; 32768 - 1024])
        })
        .unwrap();
    };
    // The APDUs of an uninterrupted full backup, from its trace.
    let apdus = {
        let _sim = stack.one(&card, "main");
        write(0x5A);
        let o = run(cardvault(&home)
            .env("P", "123456")
            .args(["--trace", "-r", "0", "backup", "--full", "--pin", "env:P"]));
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o).lines().filter(|l| l.starts_with("> ")).count()
    };
    assert!(apdus >= 4, "a full backup took {apdus} APDUs");
    // Every backup the vault gains in a run must restore that run's memory.
    let mut expected: Vec<(i64, Vec<u8>)> = Vec::new();
    let vault_ids = || -> Vec<i64> {
        cardvault::vault::Vault::open(&home.join("vault.sqlite"))
            .unwrap()
            .list_backups(None)
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect()
    };
    let (mut interrupted, mut completed) = (0, 0);
    for round in 0..BACKUP_KILL_RUNS {
        let mut sim = stack.one(&card, "main");
        write(0x60 + round as u8);
        let memory = applet_sim::state::Store::peek(&card).unwrap().memory.clone();
        let before = vault_ids();
        // Kill when the k-th APDU goes out (k random), plus up to 2 ms.
        let k = 1 + rng.below(apdus as u64 - 1) as usize;
        let mut child = cardvault(&home)
            .env("P", "123456")
            .args(["--trace", "-r", "0", "backup", "--full", "--pin", "env:P"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut sent = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            sent += line.starts_with("> ") as usize;
            err.push_str(&line);
            err.push('\n');
            if sent == k {
                break;
            }
        }
        assert_eq!(sent, k, "round {round}: the backup ended before its APDU {k}: {err}");
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
        sim.kill();
        for line in lines {
            err.push_str(&line.unwrap());
            err.push('\n');
        }
        let status = child.wait().unwrap();
        // Every card file stays whole (old or new); the vault stays consistent.
        applet_sim::state::Store::peek(&card).unwrap_or_else(|e| panic!("round {round}: card file broken: {e}"));
        let v = run(cardvault(&home).args(["vault", "verify"]));
        assert!(v.status.success(), "round {round}: {}", stdout(&v));
        if status.success() {
            completed += 1;
        } else {
            // A removed card is reported as such, with the reader exit code.
            assert_eq!(status.code(), Some(3), "round {round} (killed at APDU {k}): {err}");
            let last = err.lines().rfind(|l| l.starts_with("cardvault: ")).unwrap_or("");
            assert!(last.contains("removed"), "round {round} (killed at APDU {k}): {err}");
            interrupted += 1;
        }
        expected.extend(
            vault_ids()
                .into_iter()
                .filter(|id| !before.contains(id))
                .map(|id| (id, memory.clone())),
        );
    }
    assert_eq!(interrupted + completed, BACKUP_KILL_RUNS);
    assert!(
        interrupted >= 1,
        "no run was interrupted: the kill came too late every time"
    );
    // Every backup stored during the runs restores exactly that run's memory.
    let _sim = stack.one(&card, "main");
    for (id, memory) in &expected {
        let o = run(cardvault(&home).env("P", "123456").env("ADMIN", ADMIN_KEY).args([
            "-r",
            "0",
            "restore",
            "--backup",
            &id.to_string(),
            "--pin",
            "env:P",
            "--allow-rollback",
            "--admin-key",
            "env:ADMIN",
        ]));
        assert!(o.status.success(), "restore of backup {id}: {}", stderr(&o));
        let now = applet_sim::state::Store::peek(&card).unwrap().memory.clone();
        assert_eq!(now[..32768], memory[..32768], "backup {id} restored other content");
    }
    println!(
        "sigkill through pcscd: {BACKUP_KILL_RUNS} runs killed after their k-th APDU, {interrupted} interrupted \
         and reported (exit 3), {completed} completed; {} stored backups restore their run's content",
        expected.len()
    );
}

#[test]
fn a_reader_without_a_card_is_a_clear_error() {
    let Some(_stack) = PcscStack::start("a_reader_without_a_card_is_a_clear_error") else {
        return;
    };
    wait_for("empty readers", Duration::from_secs(10), || !card_present(READER0));
    let home = temp_dir("nocard");
    let o = run(cardvault(&home).args(["-r", "0", "status"]));
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains(&format!("no card in reader '{READER0}'")), "{e}");
    // And no reader choice at all: the list of readers.
    let o = run(cardvault(&home).arg("status"));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("no reader has a card"), "{}", stderr(&o));
}

#[test]
fn wait_for_a_card_that_arrives_later() {
    let Some(stack) = PcscStack::start("wait_for_a_card_that_arrives_later") else {
        return;
    };
    wait_for("empty readers", Duration::from_secs(10), || !card_present(READER0));
    let dir = temp_dir("wait");
    let home = dir.join("home");
    let card = dir.join("late.card");
    let child = cardvault(&home)
        .args(["--json", "--wait", "20", "-r", "0", "status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let _sim = stack.one(&card, "main");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["card_number"], card_number_of(&card).as_str());
}

#[test]
fn a_65535_byte_read_arrives_whole_through_vpcd() {
    let Some(stack) = PcscStack::start("a_65535_byte_read_arrives_whole_through_vpcd") else {
        return;
    };
    let dir = temp_dir("bigread");
    let home = dir.join("home");
    let card = dir.join("big.card");
    let _sim = stack.one(&card, "main");
    // The purse's pages (0..4) take no holder write: they stay zero.
    let pattern: Vec<u8> = (0..65535u32)
        .map(|i| if i < 1024 { 0 } else { (i * 7 % 253) as u8 })
        .collect();
    let mut r = reader::open(Some(READER0), &opts(&home, None)).unwrap();
    let back = with_selected(r.as_mut(), false, |c| {
        c.verify_pin(b"123456")?;
        c.write_memory(4, &pattern[1024..32768])?;
        c.write_memory(128, &pattern[32768..])?;
        c.read_memory(0, 65535)
    })
    .unwrap();
    assert_eq!(back, pattern);
}

/// Open a card session on `r` and run `f` with it.
fn with_selected<T>(
    r: &mut dyn cardvault::transport::Reader,
    trace: bool,
    f: impl FnOnce(&mut cardvault::card::CardClient<'_>) -> cardvault::Result<T>,
) -> cardvault::Result<T> {
    let mut c = cardvault::card::CardClient::open(r, cardvault::card::SessionOptions { trace })?;
    f(&mut c)
}
