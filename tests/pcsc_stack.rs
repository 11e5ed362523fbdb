//! Through the real stack: pcscd + the vsmartcard vpcd driver + applet-sim,
//! driven by cardvault and by the peer tools (pcsc_scan, opensc-tool, scriptor).

mod common;

use cardvault::config::{Config, ExtendedMode};
use cardvault::reader::{self, ReaderOptions};
use common::claims::{BACKUP_KILL_RUNS, SIM_BACK_WITHIN, SIM_RESTARTS, WRITE_KILL_ROUNDS};
use common::stack::*;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// `cardvault` for PC/SC cards: they are trusted only when told, so every
/// run names the test issuer root the simulator's cards are certified under.
fn cv_pcsc(home: &std::path::Path) -> std::process::Command {
    let mut c = cardvault(home);
    c.arg("--trust").arg(common::test_root());
    c
}

fn opts(home: &std::path::Path, ext: Option<ExtendedMode>) -> ReaderOptions {
    ReaderOptions {
        data_dir: home.to_path_buf(),
        config: Config::default(),
        extended_flag: ext,
        wait: None,
        create_cards: true,
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
    run(cv_pcsc(&home).args(["-r", "sim:desk", "status"]));
    let o = run(cv_pcsc(&home).args(["--json", "readers"]));
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
        let o = run(cv_pcsc(&home).args(["--json", "-r", sel, "status"]));
        assert!(o.status.success(), "status -r {sel}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["card_number"], want.as_str());
        assert_eq!(v["role"], role);
        assert_eq!(v["pin_tries_left"], 3);
        assert_eq!(v["applet_version"], "1.0");
    }
    let o = run(cv_pcsc(&home)
        .env("CARDVAULT_READER", READER1)
        .args(["--json", "status"]));
    assert_eq!(json(&o)["card_number"], nb.as_str());

    // Two cards and no choice: a clear list, exit code 3, nothing sent.
    let o = run(cv_pcsc(&home).arg("status"));
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("0: {READER0}")) && e.contains(&format!("1: {READER1}")),
        "{e}"
    );

    // apdu by name: SELECT then GET DATA card number.
    let o = run(cv_pcsc(&home).args(["-r", READER0, "apdu", "00A4040006F043564C5401", "00CADF0100"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let number_hex: String = na.bytes().map(|b| format!("{b:02X}")).collect();
    assert!(out.contains(&number_hex) && out.contains("9000 ok"), "{out}");

    // A reader index that does not exist.
    let o = run(cv_pcsc(&home).args(["-r", "7", "status"]));
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
    std::fs::write(&short_profile, "role='main'\npin='123456'\nextended_length=false\n").unwrap();
    let (a, b) = (dir.join("ext.card"), dir.join("short.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, short_profile.to_str().unwrap())]);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8 ^ 0x5A).collect();

    // Extended-length card: one APDU.
    let (data, n) = read_4k(&home, READER0, None, &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, 1, "extended read should be one APDU");

    // Card limited to short APDUs: READ MEMORY + GET RESPONSE rounds for the
    // protected answer (after VERIFY the session is under SCP11: the 4 KiB
    // come padded, encrypted and with an R-MAC, 4120 bytes in 256-byte parts).
    let short = cardvault_proto::scp11::wrapped_len(4096).div_ceil(256) as u64;
    assert_eq!(short, 17);
    let (data, n) = read_4k(&home, READER1, None, &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, short, "short read should be 1 command + 16 GET RESPONSE");

    // An extended-capable card behind a reader configured for short APDUs only.
    let (data, n) = read_4k(&home, READER0, Some(ExtendedMode::Never), &pattern);
    assert_eq!(data, pattern);
    assert_eq!(n, short);
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
        run(cv_pcsc(&home)
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
    let o = run(cv_pcsc(&home).args(["--json", "-r", "0", "status"]));
    let v = json(&o);
    assert_eq!(v["pin_blocked"], true, "{v}");
    assert_eq!(v["pin_tries_left"], 0);
    assert_eq!(verify("123456").status.code(), Some(5));

    // Another issuer's operator does not unblock, and changes nothing.
    let other = dir.join("other-issuer");
    assert!(run(cv_pcsc(&home).args(["issuer", "init", "-o"]).arg(&other))
        .status
        .success());
    let o = run(cv_pcsc(&home)
        .args(["-r", "0", "pin", "unblock", "--issuer"])
        .arg(&other));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 0);
    // The issuer's operator (SCP11a) unblocks and sets a new PIN.
    let o = run(cv_pcsc(&home)
        .env("NEWPIN", "24680")
        .args(["-r", "0", "pin", "unblock", "--new-pin", "env:NEWPIN", "--issuer"])
        .arg(common::test_issuer_dir()));
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
        c.env("P", "2468")
            .env("E", format!("{}\n{}", "ab".repeat(32), "cd".repeat(32)));
    };
    let csv = dir.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\nalice,2468,M-9,2030-01\n").unwrap();

    // Issue the pair: main in reader 0, backup in reader 1.
    let mut c = cv_pcsc(&home);
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
    .arg("--no-domain")
    .arg("--issuer")
    .arg(common::test_issuer_dir())
    .arg("--factory-trust")
    .arg(common::test_factory_ca());
    let o = run(&mut c);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["issued"], 2);

    // Duplicate across the two readers.
    let mut c = cv_pcsc(&home);
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
        let o = run(cv_pcsc(&home)
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
    let mut c = cv_pcsc(&home);
    env(&mut c);
    c.args(["-r", "0", "issue", "--profile", "main", "--holders"])
        .arg(&csv)
        .arg("--no-domain")
        .arg("--issuer")
        .arg(common::test_issuer_dir())
        .arg("--factory-trust")
        .arg(common::test_factory_ca());
    assert!(run(&mut c).status.success());
    let mut c = cv_pcsc(&home);
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
        let mut c = cv_pcsc(&home);
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
        let mut c = cv_pcsc(&home);
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
        "--signer-cert",
        common::test_signer_cert().to_str().unwrap(),
        "--issuer-root",
        test_root().to_str().unwrap(),
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
        let o = run(cv_pcsc(&home)
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
        let mut child = cv_pcsc(&home)
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
        assert_no_panic(err.as_bytes());
        // Every card file stays whole (old or new); the vault stays consistent.
        applet_sim::state::Store::peek(&card).unwrap_or_else(|e| panic!("round {round}: card file broken: {e}"));
        let v = run(cv_pcsc(&home).args(["vault", "verify"]));
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
        let o = run(cv_pcsc(&home)
            .env("P", "123456")
            .args([
                "-r",
                "0",
                "restore",
                "--backup",
                &id.to_string(),
                "--pin",
                "env:P",
                "--allow-rollback",
                "--issuer",
            ])
            .arg(common::test_issuer_dir()));
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
    let o = run(cv_pcsc(&home).args(["-r", "0", "status"]));
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains(&format!("no card in reader '{READER0}'")), "{e}");
    // And no reader choice at all: the list of readers.
    let o = run(cv_pcsc(&home).arg("status"));
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
    let child = cv_pcsc(&home)
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
    let trust = cardvault::trust::Trust::from_files(&[common::repo_path("fixtures/issuer/test-root.pem")])?;
    let mut c = cardvault::card::CardClient::open(
        r,
        cardvault::card::SessionOptions {
            trace,
            trust,
            factory_trust: cardvault::trust::Trust::none(),
        },
    )?;
    f(&mut c)
}

#[test]
fn a_pcsc_card_gets_a_pin_only_under_a_root_it_was_told_to_trust() {
    let Some(stack) = PcscStack::start("a_pcsc_card_gets_a_pin_only_under_a_root_it_was_told_to_trust") else {
        return;
    };
    let dir = temp_dir("trust");
    let home = dir.join("home");
    let card = dir.join("t.card");
    let _sim = stack.one(&card, "main");
    // The simulator's card, behind pcscd, is certified by the test issuer, but
    // a PC/SC card is not trusted under the built-in test root.
    let o = run(cardvault(&home)
        .env("PIN", "123456")
        .args(["--trace", "-r", "0", "pin", "verify", "--pin", "env:PIN"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no issuer root is trusted") && err.contains("--trust"),
        "{err}"
    );
    assert!(
        !err.contains("[SCP11]") && !err.contains("> 0020") && !err.contains("> 0420"),
        "{err}"
    );
    let o = run(cardvault(&home).args(["--json", "-r", "0", "cert", "show"]));
    assert_eq!(json(&o)["verified"], false);
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 3);
    // Told: --trust, CARDVAULT_TRUST, or the configuration's trust list.
    let o = run(cv_pcsc(&home)
        .env("PIN", "123456")
        .args(["-r", "0", "pin", "verify", "--pin", "env:PIN"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cardvault(&home)
        .env("PIN", "123456")
        .env("CARDVAULT_TRUST", test_root())
        .args(["-r", "0", "pin", "verify", "--pin", "env:PIN"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("trust = [{:?}]\n", test_root().display().to_string())).unwrap();
    let o = run(cardvault(&home)
        .env("PIN", "123456")
        .arg("--config")
        .arg(&config)
        .args(["-r", "0", "pin", "verify", "--pin", "env:PIN"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The issue's first "done when": the whole flow (issue, duplicate, encrypt
/// and decrypt, backup, recover onto a new card, restore onto another card)
/// through pcscd with its APDU log on, as an attacker on the same host would
/// run it, and not one secret in that log: PIN, key group elements, file
/// keys, main private keys (what a take-out carries), card ECKA private
/// keys, card-unique and card-common keys, the issuer's root and operator
/// private keys. The secrets come
/// from the cards' state files and the test's inputs.
#[test]
fn the_whole_flow_through_pcscd_leaves_no_secret_in_its_apdu_log() {
    let name = "the_whole_flow_through_pcscd_leaves_no_secret_in_its_apdu_log";
    let Some(stack) = PcscStack::start_logging_apdus(name) else {
        return;
    };
    use applet_sim::state::Store;
    let dir = temp_dir("apdulog");
    let home = dir.join("home");
    let (main_card, backup_card, new_card) = (dir.join("main.card"), dir.join("backup.card"), dir.join("new.card"));
    const PIN: &str = "86420975";
    let (e2, e3) = ("5e".repeat(32), "c3".repeat(32));
    // The backup card has applications that only storing authorizations write.
    let mut sim = stack.sim(&[(0, &main_card, "blank"), (1, &backup_card, "blank-services")]);
    let cv = |args: &[&str]| {
        let mut c = cv_pcsc(&home);
        c.env("P", PIN).env("E", format!("{e2}\n{e3}")).args(args);
        let o = run(&mut c);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        o
    };
    let csv = dir.join("h.csv");
    std::fs::write(
        &csv,
        format!("holder,pin,member_number,expiry\nalice,{PIN},M-77,2030-01\n"),
    )
    .unwrap();
    let csv_s = csv.to_str().unwrap();
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    // The issuer domain's key ceremony: its key goes into every card in the
    // issuer's SCP11a session.
    std::fs::create_dir_all(&home).unwrap();
    let domain = dir.join("domain");
    let passphrases = domain_init(&home, &domain, 2, 3);
    let with_domain = domain_args(&domain, &passphrases, &[2, 3]);
    let factory_ca = common::test_factory_ca();
    let factory_ca = factory_ca.to_str().unwrap();
    let issue = |extra: &[&str]| {
        let mut a: Vec<&str> = vec!["-r", "0", "issue", "--holders", csv_s];
        a.extend_from_slice(extra);
        a.extend(with_domain.iter().map(String::as_str));
        a.extend(["--factory-trust", factory_ca]);
        cv(&a)
    };

    // Issue the pair from blank cards (each generates its signing key, which
    // the issuer certifies; both get the test registrar roots), duplicate,
    // encrypt two files to the main card and decrypt one, write memory and
    // back it up.
    let registrars = [
        common::repo_path("fixtures/registrars/test-issuer-registrar.pem"),
        common::repo_path("fixtures/registrars/test-data-registrar.pem"),
    ];
    let (ir, dr) = (registrars[0].to_str().unwrap(), registrars[1].to_str().unwrap());
    issue(&[
        "--profile",
        "pair",
        "--backup-reader",
        "1",
        "--issuer-registrar",
        ir,
        "--data-registrar",
        dr,
    ]);
    cv(&[
        "duplicate",
        "--main",
        READER0,
        "--backup",
        READER1,
        "--pin",
        "env:P",
        "--backup-pin",
        "env:P",
        "--elements",
        "env:E",
    ]);
    for i in 0..2 {
        std::fs::write(f(&format!("doc{i}")), vec![0x40 + i as u8; 3000]).unwrap();
        cv(&[
            "encrypt",
            "--to",
            "0",
            &f(&format!("doc{i}")),
            "-o",
            &f(&format!("doc{i}.cve")),
        ]);
    }
    cv(&[
        "-r",
        "0",
        "decrypt",
        "--pin",
        "env:P",
        &f("doc0.cve"),
        "-o",
        &f("doc0.out"),
    ]);
    assert_eq!(std::fs::read(f("doc0.out")).unwrap(), vec![0x40; 3000]);
    {
        let mut r = reader::open(Some(READER0), &opts(&home, None)).unwrap();
        with_selected(r.as_mut(), false, |c| {
            c.verify_pin(PIN.as_bytes())?;
            c.write_memory(FIRST_DATA_PAGE, &[0x77; 2048])
        })
        .unwrap();
    }
    cv(&["-r", "0", "backup", "--pin", "env:P"]);
    let old_main = Store::peek(&main_card).unwrap();
    let file_keys_old: Vec<Vec<u8>> = (0..2)
        .map(|i| file_key(&f(&format!("doc{i}.cve")), &old_main))
        .collect();

    // The main card breaks: a new blank card is issued as main, the files
    // are recovered onto it from the backup card.
    sim.kill();
    let mut sim = stack.sim(&[(0, &new_card, "blank"), (1, &backup_card, "blank")]);
    issue(&["--profile", "main"]);
    cv(&[
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
        &f("doc0.cve"),
        &f("doc1.cve"),
    ]);
    cv(&[
        "-r",
        "0",
        "decrypt",
        "--pin",
        "env:P",
        &f("doc1.cve"),
        "-o",
        &f("doc1.out"),
    ]);
    assert_eq!(std::fs::read(f("doc1.out")).unwrap(), vec![0x41; 3000]);

    // Restore the old main card's backup onto the new card (another card),
    // with the issuer's authorization.
    let (req, auth) = (f("req.json"), f("auth.json"));
    cv(&[
        "-r",
        "0",
        "restore",
        "--from-card",
        &old_main.card_number,
        "--pin",
        "env:P",
        "--request",
        &req,
    ]);
    let key = common::repo_path("fixtures/issuer/issuer-private.hex");
    cv(&["card", "revoke", &old_main.card_number]);
    cv(&[
        "authorize-restore",
        "--request",
        &req,
        "--issuer-key",
        &format!("file:{}", key.display()),
        "--signer-cert",
        common::test_signer_cert().to_str().unwrap(),
        "--issuer-root",
        test_root().to_str().unwrap(),
        "-o",
        &auth,
    ]);
    cv(&[
        "-r",
        "0",
        "restore",
        "--from-card",
        &old_main.card_number,
        "--pin",
        "env:P",
        "--authorization",
        &auth,
    ]);
    let new_main = Store::peek(&new_card).unwrap();
    assert_eq!(new_main.memory[1024..1024 + 2048], [0x77; 2048]);

    // A record stored on the backup card under the test issuer's and the
    // test provider's authorization (STORING REQUEST, STORE DATA UNDER
    // AUTHORIZATION), in the card's secure session.
    let record = b"stored under authorization, through pcscd";
    {
        use applet_sim::test_registrars as reg;
        use cardvault::workflow::storing::{self, PartyCredentials};
        use cardvault_proto::storing::{Party, RegistrarRoots};
        let sdi = storing::store_info(4, record, None).unwrap();
        let mut r = reader::open(Some(READER1), &opts(&home, None)).unwrap();
        let req = with_selected(r.as_mut(), false, |c| storing::request(c, PIN.as_bytes(), &sdi)).unwrap();
        let issuer = PartyCredentials::from_pem(Party::Issuer, reg::ISSUER_KEY_PEM, reg::ISSUER_PEM).unwrap();
        let provider = PartyCredentials::from_pem(Party::Provider, reg::PROVIDER_KEY_PEM, reg::PROVIDER_PEM).unwrap();
        let roots = RegistrarRoots {
            issuer_registrar: openssl::x509::X509::from_pem(reg::ISSUER_REGISTRAR_PEM).unwrap(),
            data_registrar: openssl::x509::X509::from_pem(reg::DATA_REGISTRAR_PEM).unwrap(),
        };
        let issuer_roots = [applet_sim::test_issuer::root()];
        let sar = storing::countersign(&req, &issuer, &issuer_roots).unwrap();
        let sa = storing::authorize(&sar, &provider, &roots, &issuer_roots).unwrap();
        let mut v = cardvault::vault::Vault::open(&dir.join("store.sqlite")).unwrap();
        with_selected(r.as_mut(), false, |c| {
            storing::apply(c, PIN.as_bytes(), &sa, Some(record), &mut v)
        })
        .unwrap();
    }
    let backup = Store::peek(&backup_card).unwrap();
    let app = backup.applications.iter().find(|a| a.id == 4).unwrap();
    let at = app.first_page as usize * backup.page_size as usize;
    assert_eq!(&backup.memory[at..at + record.len()], record);

    // The old main card comes back: the backup card destroys the key it
    // imported from it and signs the receipt (DESTROY KEY; its signing
    // certificate read from DF35), which releases the old main card's
    // duplicate (RELEASE DUPLICATE, the issuer's SCP11a session).
    sim.kill();
    let _sim = stack.sim(&[(0, &main_card, "blank"), (1, &backup_card, "blank")]);
    let counter = old_main.export.counter.to_string();
    cv(&[
        "-r",
        "1",
        "keygroup",
        "destroy",
        "--source",
        &old_main.card_number,
        "--counter",
        &counter,
        "--pin",
        "env:P",
        "-o",
        &f("destroyed.json"),
    ]);
    let issuer_dir = common::repo_path("fixtures/issuer");
    cv(&[
        "-r",
        "0",
        "keygroup",
        "release",
        "--issuer",
        issuer_dir.to_str().unwrap(),
        "--receipt",
        &f("destroyed.json"),
    ]);
    assert_eq!(Store::peek(&main_card).unwrap().export.target, "");
    assert!(Store::peek(&backup_card).unwrap().main_key.is_none());
    let file_keys_new: Vec<Vec<u8>> = (0..2)
        .map(|i| file_key(&f(&format!("doc{i}.cve")), &new_main))
        .collect();

    // A decoy secret sent in clear on purpose (the card refuses a plain
    // VERIFY, 6982): the log check must find it, or it finds nothing.
    let decoy = "d3c0ded3c0de5ec2e7";
    let o = cv(&[
        "--json",
        "-r",
        "0",
        "apdu",
        "00A4040006F043564C5401",
        &format!("0020008109{decoy}"),
    ]);
    assert_eq!(json(&o)["exchanges"][1]["sw"], "6982");

    // Every secret, as the bytes that would cross PC/SC.
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("PIN".into(), PIN.as_bytes().to_vec()),
        (
            "issuer root key".into(),
            pem_scalar(applet_sim::test_issuer::ROOT_KEY_PEM),
        ),
        (
            "issuer operator key".into(),
            pem_scalar(applet_sim::test_issuer::OCE_KEY_PEM),
        ),
    ];
    for (i, p) in passphrases.iter().enumerate() {
        let text = std::fs::read_to_string(p).unwrap();
        secrets.push((
            format!("custodian {} passphrase", i + 1),
            text.trim().as_bytes().to_vec(),
        ));
    }
    for (who, s) in [("old main", &old_main), ("backup", &backup), ("new main", &new_main)] {
        for (i, e) in s.key_group.elements.iter().enumerate() {
            secrets.push((format!("{who} key group element {}", i + 1), e.0.clone()));
        }
        if let Some(k) = &s.main_key {
            secrets.push((
                format!("{who} main private key (take-out plaintext)"),
                k.private.clone(),
            ));
        }
        secrets.push((format!("{who} ECKA private key"), s.ecka_private.clone()));
        secrets.push((format!("{who} signing private key"), s.storing.private_key.clone()));
        secrets.push((format!("{who} card-unique key"), s.unique_key.clone()));
        secrets.push((format!("{who} card-common key"), s.common_key.clone()));
    }
    for (i, k) in file_keys_old.iter().chain(&file_keys_new).enumerate() {
        secrets.push((format!("file key {i}"), k.clone()));
    }
    secrets.retain(|(_, s)| !s.is_empty());
    secrets.sort_by(|a, b| a.1.cmp(&b.1));
    secrets.dedup_by(|a, b| a.1 == b.1);

    let log = stack.log();
    let hay: String = log.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    let apdu_lines = log.lines().filter(|l| l.contains(" APDU: ")).count();
    let answer_lines = log.lines().filter(|l| l.contains(" SW: ")).count();
    println!("{name}: pcscd logged {apdu_lines} commands and {answer_lines} answers");
    // The flow takes about 200 APDUs (the handshakes included).
    assert!(
        apdu_lines >= 100,
        "the log holds too few APDUs: {}",
        &log[..log.len().min(2000)]
    );
    assert_eq!(answer_lines, apdu_lines, "every answer is logged too");
    // The log shows APDUs as the hex this check searches: the plain SELECT,
    // protected VERIFYs (CLA 04, Lc 18), and the decoy in clear.
    assert!(hay.contains("00a4040006f043564c5401"), "no SELECT in the log");
    assert!(hay.contains("0420008118"), "no protected VERIFY in the log");
    assert!(
        hay.contains(decoy),
        "the decoy sent in clear is not found: the check would be vacuous"
    );
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, s)| hay.contains(&cardvault_proto::to_hex(s)))
        .map(|(what, _)| what.as_str())
        .collect();
    println!("{name}: {} distinct secrets checked", secrets.len());
    // PIN, issuer root and operator keys, 3 key group elements (the same on every card of the
    // holder), 2 main private keys, 3 ECKA keys, 3 signing keys, 3 card-unique keys, the
    // domain's card-common key, 4 file keys (before and after recovery), and
    // the 3 custodians' passphrases of the key ceremony (which never go to a
    // card at all).
    let names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "PIN",
        "issuer root key",
        "element 3",
        "take-out plaintext",
        "ECKA",
        "signing",
        "card-unique",
        "card-common",
        "file key 3",
        "passphrase",
    ] {
        assert!(names.iter().any(|n| n.contains(kind)), "no {kind} among {names:?}");
    }
    assert_eq!(secrets.len(), 26, "{names:?}");
    assert!(leaked.is_empty(), "in pcscd's APDU log: {leaked:?}");
}

/// The file key of an encrypted file, opened with the card's main private key
/// taken from its state file (what UNWRAP FILE KEY answers).
fn file_key(path: &str, card: &applet_sim::CardState) -> Vec<u8> {
    let private = &card.main_key.as_ref().expect("main key").private;
    let me = cardvault_proto::crypto::KeyPair::from_private(private).unwrap();
    let mut header = [0u8; cardvault::fileenc::HEADER_LEN];
    std::io::Read::read_exact(&mut std::fs::File::open(path).unwrap(), &mut header).unwrap();
    let h = cardvault::fileenc::Header::parse(&header).unwrap();
    let k = cardvault_proto::crypto::unwrap_key(&me, &h.wrapped_key, h.aad()).unwrap();
    k.to_vec()
}

/// The electronic wallet through pcscd with its APDU log on: items loaded
/// onto one card, deposited into two safes (real `safe serve` processes),
/// withdrawn onto the same card, re-keyed, the wallet key escrowed under the
/// owner's password split across both safes, an item withdrawn onto the
/// replacement card under the issuer's authorization, and the rest
/// recovered onto it from the escrow. Not one secret in pcscd's log: PIN,
/// owner password, the escrow key derived from it and the two key parts the
/// card seals under it, the wallet keys (current, replaced, recovered),
/// the transport keys of every delivery (each wrapped to a card's ECKA
/// key), the cards' ECKA, signing, card-unique and card-common keys, the
/// safes' signing keys, and the issuer's signing, root and operator keys.
/// The secrets come from the cards' state files, the safes' files, the
/// test's inputs, and the deliveries the terminal's `--trace` shows inside
/// the SCP11 session.
#[test]
fn the_wallet_through_pcscd_leaves_no_secret_in_its_apdu_log() {
    use applet_sim::state::Store;
    use cardvault_proto::{crypto, safe as sf, to_hex};
    let name = "the_wallet_through_pcscd_leaves_no_secret_in_its_apdu_log";
    let Some(stack) = PcscStack::start_logging_apdus(name) else {
        return;
    };
    let dir = temp_dir("wallet-apdulog");
    let home = dir.join("home");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    const OWNER: &str = "owner's passphrase for the wallet escrow";
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, "replacement")]);
    let (d1, d2) = (init_safe(&home, "safe1"), init_safe(&home, "safe2"));
    let (s1, s2) = (SafeServer::start(&home, &d1), SafeServer::start(&home, &d2));
    let signer = test_signer_cert();
    let signer = signer.to_str().unwrap();
    // Every run traces its exchanges (stderr): the WITHDRAW commands in the
    // session show the deliveries whose transport keys are searched for.
    let traces = std::cell::RefCell::new(String::new());
    let cv = |args: &[&str]| {
        let mut c = cv_pcsc(&home);
        c.env("P", PIN)
            .env("OWNER", OWNER)
            .env("ISSUER", ISSUER_KEY_HEX.trim())
            .args(["--trace", "--json"])
            .args(args);
        let o = run(&mut c);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        traces.borrow_mut().push_str(&stderr(&o));
        json(&o)
    };
    // `wallet` on the card in `reader`, under the PIN.
    let wallet = |reader: &str, args: &[&str]| {
        let mut a = vec!["-r", reader, "wallet"];
        a.extend_from_slice(args);
        a.extend(["--pin", "env:P"]);
        cv(&a)
    };
    let load = |item: &str, price: &str| {
        wallet(
            "0",
            &[
                "load",
                "--issuer-key",
                "env:ISSUER",
                "--signer-cert",
                signer,
                "--kind",
                "ticket",
                "--name",
                item,
                "--unit-price",
                price,
                "--valid-until",
                "2027-06-30",
            ],
        )["item"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (x, y, z) = (load("Concert", "8000"), load("Museum", "1200"), load("Ferry", "450"));
    let (u1, u2) = (s1.url.as_str(), s2.url.as_str());

    // Card a deposits an item and withdraws it again (the delivery wrapped
    // to its own ECKA key, opened with its own wallet key), deposits it
    // again and moves to a new wallet key (ESCROW P1 = 02), which withdraws
    // the item and deposits it once more under the new key.
    wallet("0", &["deposit", &z, "--safe", u1]);
    let w = wallet("0", &["withdraw", &z, "--safe", u1]);
    assert_eq!(w["settled"], true, "{w}");
    wallet("0", &["deposit", &z, "--safe", u1]);
    let r = wallet("0", &["rekey", "--safe", u1]);
    assert_eq!(r["redeposited"], serde_json::json!([z.clone()]), "{r}");
    // The other two items go to one safe each, and the wallet key is
    // escrowed split across both under the owner's password.
    wallet("0", &["deposit", &x, "--safe", u1]);
    wallet("0", &["deposit", &y, "--safe", u2]);
    let e = wallet("0", &["escrow", "--safe", u1, "--safe", u2, "--password", "env:OWNER"]);
    assert_eq!(e["parts"].as_array().unwrap().len(), 2, "{e}");
    let card_a = Store::peek(&a).unwrap();
    assert!(card_a.wallet.items.is_empty());

    // Card a is lost. Card b takes one item by the vault's copy under the
    // issuer's authorization (the wallet key wrapped under the card-common
    // key), and the other two from the escrow (ESCROW P1 = 01, then the
    // deliveries the owner's answers release).
    let w = wallet(
        "1",
        &[
            "withdraw",
            &x,
            "--from-vault",
            "--safe",
            u1,
            "--issuer-key",
            "env:ISSUER",
            "--signer-cert",
            signer,
        ],
    );
    assert_eq!(w["settled"], true, "{w}");
    let lost = card_a.card_number.as_str();
    let rec = wallet(
        "1",
        &[
            "recover",
            "--from-card",
            lost,
            "--safe",
            u1,
            "--safe",
            u2,
            "--password",
            "env:OWNER",
        ],
    );
    assert_eq!(rec["withdrawn"].as_array().unwrap().len(), 2, "{rec}");
    let card_b = Store::peek(&b).unwrap();
    let mut held: Vec<String> = card_b
        .wallet
        .items
        .iter()
        .map(|h| to_hex(&cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap().id))
        .collect();
    held.sort();
    let mut want = vec![x.clone(), y.clone(), z.clone()];
    want.sort();
    assert_eq!(held, want);
    assert_eq!(card_b.wallet.recovered[0].key, card_a.wallet.key);
    assert_eq!(card_a.wallet.old_keys.len(), 1);

    // A decoy secret sent in clear on purpose (the card refuses a plain
    // VERIFY, 6982): the log check must find it, or it finds nothing.
    let decoy = "d3c0ded3c0de5ec2e7";
    let o = cv(&[
        "-r",
        "0",
        "apdu",
        "00A4040006F043564C5401",
        &format!("0020008109{decoy}"),
    ]);
    assert_eq!(o["exchanges"][1]["sw"], "6982");

    // Every secret, as the bytes that would cross PC/SC.
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("PIN".into(), PIN.as_bytes().to_vec()),
        ("owner password".into(), OWNER.as_bytes().to_vec()),
        ("issuer signing key".into(), issuer_key()),
        (
            "issuer root key".into(),
            pem_scalar(applet_sim::test_issuer::ROOT_KEY_PEM),
        ),
        (
            "issuer operator key".into(),
            pem_scalar(applet_sim::test_issuer::OCE_KEY_PEM),
        ),
    ];
    let owner = cardvault::workflow::escrow::OwnerSecret::derive(OWNER.as_bytes(), &card_a.card_number).unwrap();
    let escrow_key = owner.escrow_key().unwrap();
    secrets.push(("escrow key".into(), escrow_key.to_vec()));
    for (i, d) in [&d1, &d2].into_iter().enumerate() {
        let key = std::fs::read(d.join(cardvault::safe::KEY_FILE)).unwrap();
        secrets.push((format!("safe {} signing key", i + 1), pem_scalar(&key)));
        // The key part this safe keeps, opened: the pad or the key masked by it.
        let db = rusqlite::Connection::open(d.join("safe.sqlite")).unwrap();
        let part: Vec<u8> = db
            .query_row("SELECT part FROM escrow WHERE card_number = ?1", [lost], |r| r.get(0))
            .unwrap();
        let p = sf::EscrowPart::parse(&part).unwrap();
        let aad = sf::EscrowPart::aad(&p.card_number, p.index, p.count, &p.key_check);
        let (nonce, ct) = p.sealed.split_at(crypto::GCM_NONCE_LEN);
        let plain = crypto::open(&escrow_key, nonce, &aad, ct).unwrap();
        secrets.push((format!("escrowed key part {}", p.index), plain.to_vec()));
    }
    for (who, s) in [("card a", &card_a), ("card b", &card_b)] {
        let w = &s.wallet;
        secrets.push((format!("{who} wallet key"), w.key.clone()));
        for (i, k) in w.old_keys.iter().enumerate() {
            secrets.push((format!("{who} replaced wallet key {}", i + 1), k.0.clone()));
        }
        for r in &w.recovered {
            secrets.push((
                format!("{who} recovered wallet key of {}", r.card_number),
                r.key.clone(),
            ));
        }
        for (i, e) in s.key_group.elements.iter().enumerate() {
            secrets.push((format!("{who} key group element {}", i + 1), e.0.clone()));
        }
        if let Some(k) = &s.main_key {
            secrets.push((format!("{who} main private key"), k.private.clone()));
        }
        secrets.push((format!("{who} ECKA private key"), s.ecka_private.clone()));
        secrets.push((format!("{who} signing private key"), s.storing.private_key.clone()));
        secrets.push((format!("{who} card-unique key"), s.unique_key.clone()));
        secrets.push((format!("{who} card-common key"), s.common_key.clone()));
    }
    // The deliveries (WITHDRAW, inside the session): each transport key,
    // unwrapped with the target card's ECKA key.
    let withdraws: Vec<sf::WithdrawCommand> = traces
        .borrow()
        .lines()
        .filter_map(|l| l.strip_prefix("> [SCP11] 803C0000"))
        .map(|l| {
            let raw = cardvault_proto::from_hex(&format!("803C0000{l}")).unwrap();
            let c = cardvault_proto::apdu::CommandApdu::parse(&raw).unwrap();
            sf::WithdrawCommand::parse(&c.data).unwrap()
        })
        .collect();
    for (i, cmd) in withdraws.iter().enumerate() {
        let d = sf::Delivery::parse(&cmd.delivery).unwrap();
        let card = [&card_a, &card_b]
            .into_iter()
            .find(|c| c.card_number == d.target_card)
            .unwrap();
        let me = crypto::KeyPair::from_private(&card.ecka_private).unwrap();
        let aad = sf::Delivery::aad(&d.certificate, &d.target_card, &d.challenge);
        let tk = crypto::unwrap_key(&me, &d.wrapped_transport_key, &aad).unwrap();
        secrets.push((format!("delivery {} transport key", i + 1), tk.to_vec()));
    }
    secrets.retain(|(_, s)| !s.is_empty());
    secrets.sort_by(|a, b| a.1.cmp(&b.1));
    secrets.dedup_by(|a, b| a.1 == b.1);

    let log = stack.log();
    let hay: String = log.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    let apdu_lines = log.lines().filter(|l| l.contains(" APDU: ")).count();
    let answer_lines = log.lines().filter(|l| l.contains(" SW: ")).count();
    println!("{name}: pcscd logged {apdu_lines} commands and {answer_lines} answers");
    assert!(apdu_lines > 0, "no APDU in the log: {}", &log[..log.len().min(2000)]);
    assert_eq!(answer_lines, apdu_lines, "every answer is logged too");
    // The log shows APDUs as the hex this check searches: the plain SELECT,
    // every wallet command of the flow in the session (CLA 84): 3 LOAD ITEM,
    // 5 deposits of two DEPOSITs each, 5 WITHDRAWs (the deliveries above),
    // 3 ESCROWs (export, re-key, import); and the decoy in clear.
    assert!(hay.contains("00a4040006f043564c5401"), "no SELECT in the log");
    assert_eq!(withdraws.len(), 5, "the deliveries in the trace");
    for (what, ins, n) in [
        ("LOAD ITEM", "32", 3),
        ("DEPOSIT", "38", 10),
        ("WITHDRAW", "3c", 5),
        ("ESCROW", "31", 3),
    ] {
        assert_eq!(
            hay.matches(&format!("apdu:84{ins}")).count(),
            n,
            "protected {what} commands in the log"
        );
    }
    assert!(
        hay.contains(decoy),
        "the decoy sent in clear is not found: the check would be vacuous"
    );
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, s)| hay.contains(&to_hex(s)))
        .map(|(what, _)| what.as_str())
        .collect();
    // The password is text: not as text either.
    let password_text: String = OWNER.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        !hay.contains(&password_text),
        "the owner password as text in pcscd's log"
    );
    println!("{name}: {} distinct secrets checked", secrets.len());
    let names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "PIN",
        "owner password",
        "escrow key",
        "escrowed key part 1",
        "escrowed key part 2",
        "card a wallet key",
        "replaced wallet key",
        "delivery 5 transport key",
        "safe 2 signing key",
        "issuer signing key",
        "card b ECKA",
    ] {
        assert!(names.iter().any(|n| n.contains(kind)), "no {kind} among {names:?}");
    }
    // PIN, owner password, escrow key, 2 key parts, the issuer's signing,
    // root and operator keys, 2 safe keys, card a's wallet key (which card b
    // recovered) and the one it replaced, 5 transport keys, 2 ECKA keys, 2
    // signing keys, 2 card-unique keys, the card-common key (one for both
    // cards) and card a's key group element (card b has none).
    assert_eq!(secrets.len(), 25, "{names:?}");
    assert!(leaked.is_empty(), "in pcscd's APDU log: {leaked:?}");
}

#[test]
fn a_card_that_stops_answering_is_an_error_after_the_apdu_timeout() {
    let test = "a_card_that_stops_answering_is_an_error_after_the_apdu_timeout";
    let Some(stack) = PcscStack::start(test) else {
        return;
    };
    let dir = temp_dir("silent");
    let home = dir.join("home");
    // SELECT is answered; the card goes silent at the status GET DATA.
    let peer = common::hostile::VpcdPeer::start(&stack.addr(0), "main", |apdu| {
        if apdu[1] == 0xCA {
            common::hostile::Reply::Silence
        } else {
            common::hostile::Reply::Genuine
        }
    });
    wait_for("the hostile card", Duration::from_secs(10), || card_present(READER0));
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, "[apdu]\ntimeout = 2\n").unwrap();
    let start = std::time::Instant::now();
    let o = run(cardvault(&home)
        .arg("--config")
        .arg(&cfg)
        .args(["-r", READER0, "status"]));
    let took = start.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("did not answer within 2 s"), "{err}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(peer.apdus(), 2, "SELECT and the unanswered GET DATA");
    drop(peer);
}

/// The issue's hostile cards behind vpcd, driven by the cardvault binary
/// through the test's private pcscd: each ends in bounded APDUs with one
/// line on stderr and its documented exit code.
#[test]
fn hostile_cards_behind_vpcd_end_in_one_line_and_a_documented_exit_code() {
    use common::hostile::{Reply, VpcdPeer};
    let test = "hostile_cards_behind_vpcd_end_in_one_line_and_a_documented_exit_code";
    let Some(stack) = PcscStack::start(test) else {
        return;
    };
    let dir = temp_dir("hostile-vpcd");
    let home = dir.join("home");
    let nested = {
        let mut v = cardvault::transport::hostile::answers::nested_templates(16000);
        v.extend_from_slice(&[0x90, 0x00]);
        v
    };
    let select = |a: &[u8]| a[1] == 0xA4;
    // A genuine status template whose key group status claims 9 elements.
    let forged_status = {
        let mut card = applet_sim::Card::in_memory(&applet_sim::Profile::load("main").unwrap());
        let mut enc = Vec::new();
        for cmd in [
            cardvault::apdu::Command::select_aid(cardvault_proto::AID),
            cardvault::apdu::Command::card_status(),
        ] {
            cmd.encode_short(cmd.cla, &cmd.data, cmd.ne.min(256), &mut enc);
            enc = card.transmit(&enc);
        }
        let at = enc.windows(3).position(|w| w == [0xDF, 0x10, 0x02]).unwrap();
        enc[at + 3] = 9;
        enc[at + 4] = 0xFF;
        enc
    };
    type Case = (
        &'static str,
        Box<dyn FnMut(&[u8]) -> Reply + Send>,
        &'static [&'static str],
        i32,
        &'static str,
        u64,
    );
    let mut cases: Vec<Case> = vec![
        (
            "61 10 without data to every GET RESPONSE",
            Box::new(move |a: &[u8]| {
                if select(a) {
                    Reply::Genuine
                } else {
                    Reply::Bytes(vec![0x61, 0x10])
                }
            }),
            &["status"],
            6,
            "GET RESPONSE with no data",
            3,
        ),
        (
            "64 KiB of nested templates",
            Box::new(move |a: &[u8]| {
                if select(a) {
                    Reply::Genuine
                } else {
                    Reply::Bytes(nested.clone())
                }
            }),
            &["status"],
            6,
            "nested deeper than 4 levels",
            2,
        ),
        (
            "key group size 9",
            Box::new(move |a: &[u8]| {
                if a[1] == 0xCA {
                    // The genuine template would do; the forged one claims 9 elements.
                    Reply::Bytes(forged_status.clone())
                } else {
                    Reply::Genuine
                }
            }),
            &["keygroup", "status"],
            6,
            "key group size 9 is not 1 to 8",
            3,
        ),
        (
            "9000 without data to everything",
            Box::new(|_: &[u8]| Reply::Bytes(vec![0x90, 0x00])),
            &["status"],
            4,
            "is not a cardvault card",
            1,
        ),
    ];
    // The last card runs the secure channel correctly (a card that holds its
    // keys); its applet answers BACKUP DATA with 6310 and junk for ever.
    let mut hostile_applet = applet_sim::Card::in_memory(&applet_sim::Profile::load("main").unwrap());
    hostile_applet.set_hostile(Some(Box::new(|cmd| {
        (cmd.ins == 0xF1).then(|| (vec![0x33; 300], 0x6310))
    })));
    let mut cards: Vec<Option<applet_sim::Card>> = cases.iter().map(|_| None).collect();
    cases.push((
        "BACKUP DATA answering 6310 for ever",
        Box::new(|_: &[u8]| Reply::Genuine),
        &["backup", "--pin", "env:P"],
        6,
        "its header announces",
        42,
    ));
    cards.push(Some(hostile_applet));
    for ((what, reply, args, code, says, max_apdus), card) in cases.into_iter().zip(cards) {
        let peer = match card {
            Some(card) => VpcdPeer::start_card(&stack.addr(0), card, reply),
            None => VpcdPeer::start(&stack.addr(0), "main", reply),
        };
        wait_for(&format!("{what}: the card"), Duration::from_secs(10), || {
            card_present(READER0)
        });
        let start = std::time::Instant::now();
        let o = run(cv_pcsc(&home).env("P", "123456").args(["-r", READER0]).args(args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(peer.apdus() <= max_apdus, "{what}: {} APDUs", peer.apdus());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            start.elapsed()
        );
        drop(peer);
        wait_for(&format!("{what}: the card to leave"), Duration::from_secs(10), || {
            !card_present(READER0)
        });
    }
}

/// The card answers SELECT through pcscd.
fn answers_select(reader: &str) -> bool {
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return false;
    };
    let name = std::ffi::CString::new(reader).unwrap();
    let Ok(card) = ctx.connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY) else {
        return false;
    };
    let mut buf = [0u8; 300];
    let select = [0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01, 0x00];
    matches!(card.transmit(&select, &mut buf), Ok(r) if r.len() >= 2 && r[r.len() - 2..] == [0x90, 0x00])
}

/// The issue's quick restart: applet-sim killed and started again on the
/// same vpcd port, at once or within a second or two, ten times in a row;
/// the card is back each time within `SIM_BACK_WITHIN` (it stayed absent
/// for 30 s and more before the simulator showed vpcd an empty slot first).
#[test]
fn a_quickly_restarted_simulator_comes_back_every_time() {
    let test = "a_quickly_restarted_simulator_comes_back_every_time";
    let Some(stack) = PcscStack::start(test) else {
        return;
    };
    let dir = temp_dir("restart");
    let card = dir.join("restart.card");
    let mut sim = stack.one(&card, "main");
    let reader = stack.reader(0);
    assert!(answers_select(reader));
    let mut times = Vec::new();
    for round in 1..=SIM_RESTARTS {
        sim.kill_now();
        // Started again at once, or within a second or two; pcscd may or may
        // not have polled the dead connection meanwhile.
        std::thread::sleep(Duration::from_millis([0, 300, 1000, 1700][round % 4]));
        sim = stack.start_sim_now(&card, "main");
        let start = Instant::now();
        while !answers_select(reader) {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "round {round}: the card never came back; times so far {times:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        times.push(start.elapsed());
        eprintln!("round {round}: back after {:?}", start.elapsed());
    }
    assert!(
        times.iter().all(|t| *t < SIM_BACK_WITHIN),
        "each restart must be back within {SIM_BACK_WITHIN:?}: {times:?}"
    );
}

#[test]
fn sigint_while_a_pcsc_station_waits_for_cards_stops_the_batch_with_its_report() {
    let Some(_stack) = PcscStack::start("sigint_while_a_pcsc_station_waits_for_cards_stops_the_batch_with_its_report")
    else {
        return;
    };
    wait_for("empty readers", Duration::from_secs(10), || !card_present(READER0));
    let home = temp_dir("station-sigint");
    let csv = home.join("h.csv");
    std::fs::write(
        &csv,
        "holder,pin,member_number,expiry\nalice,2468,M-1,2030-01\nbob,1357,M-2,2030-01\n",
    )
    .unwrap();
    // A station that would wait ten minutes for the holders' cards.
    let mut child = cv_pcsc(&home)
        .args([
            "--json",
            "--wait",
            "600",
            "duplicate",
            "--elements",
            "generate",
            "--main",
            "0",
            "--backup",
            "1",
        ])
        .arg("--holders")
        .arg(&csv)
        .arg("--elements-out")
        .arg(home.join("el.txt"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // It stops waiting: well before --wait (a hang fails the test here).
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < until,
            "SIGINT did not stop the waiting station"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert_no_panic(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let holders: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("holder").is_some()).collect();
    assert_eq!(holders.len(), 2, "{lines:?}");
    for h in holders {
        assert_eq!(h["result"], "failed", "{h}");
        assert!(h["reason"].as_str().unwrap().contains("interrupted"), "{h}");
    }
    assert_eq!(lines[lines.len() - 2]["interrupted"], true, "{lines:?}");
    assert_eq!(lines[lines.len() - 1]["error"]["kind"], "interrupted", "{lines:?}");
    // Nothing was written for anyone.
    assert_eq!(std::fs::read_to_string(home.join("el.txt")).unwrap_or_default(), "");
}

#[test]
fn watch_backs_up_each_card_as_it_is_inserted_and_stops_on_sigint() {
    let Some(stack) = PcscStack::start("watch_backs_up_each_card_as_it_is_inserted_and_stops_on_sigint") else {
        return;
    };
    wait_for("empty readers", Duration::from_secs(10), || !card_present(READER0));
    let dir = temp_dir("watch");
    let home = dir.join("home");
    let card = dir.join("watched.card");
    let mut child = cv_pcsc(&home)
        .env("P", "123456")
        .args(["--json", "watch", "0", "--pin", "env:P"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut next = || -> serde_json::Value {
        let l = lines.next().expect("a line from watch").unwrap();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    // Inserted: a full backup. Removed and inserted again: a differential one.
    let sim = stack.one(&card, "main");
    let first = next();
    assert_eq!(first["result"], "ok", "{first}");
    assert_eq!(first["backup"]["kind"], "full", "{first}");
    let number = card_number_of(&card);
    assert_eq!(first["card_number"], number.as_str());
    drop(sim);
    wait_for("the card to go", Duration::from_secs(10), || !card_present(READER0));
    let sim = stack.one(&card, "main");
    let second = next();
    assert_eq!(second["result"], "ok", "{second}");
    assert_eq!(second["backup"]["kind"], "differential", "{second}");
    // Ctrl-C: a summary line and exit 0.
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let summary = next();
    assert_eq!(summary["cards"], 2, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["stopped"], true, "{summary}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    drop(sim);
    // The vault holds both, a chain the card restores from.
    let o = run(cv_pcsc(&home).args(["--json", "vault", "list", "--card", &number]));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json(&o)["backups"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["state"] == "completed"), "{rows:?}");
}

/// The private scalar of a PEM key (what would cross PC/SC if it leaked).
fn pem_scalar(pem: &[u8]) -> Vec<u8> {
    cardvault_proto::crypto::KeyPair::from_pem(pem)
        .unwrap()
        .private_bytes()
        .to_vec()
}

/// Issuance through pcscd: a blank PC/SC card's factory certificate is
/// trusted only when told (`--factory-trust`); without it the card is
/// rejected before anything is sent to it and stays as it was. Told, a new
/// issuer (`issuer init`) issues it (the test issuer, whose root the
/// simulator's factory installed, opens the session as `--factory-issuer`
/// and installs the new root), and that issuer's operator then unblocks
/// the card's PIN.
#[test]
fn a_pcsc_blank_card_is_issued_under_a_trusted_factory_and_unblocked_by_its_issuer() {
    let Some(stack) =
        PcscStack::start("a_pcsc_blank_card_is_issued_under_a_trusted_factory_and_unblocked_by_its_issuer")
    else {
        return;
    };
    let dir = temp_dir("pcsc-issue");
    let home = dir.join("home");
    let card = dir.join("blank.card");
    let _sim = stack.one(&card, "blank");
    let issuer = dir.join("issuer");
    assert!(run(cv_pcsc(&home).args(["issuer", "init", "-o"]).arg(&issuer))
        .status
        .success());
    let csv = dir.join("h.csv");
    std::fs::write(&csv, "holder,pin,member_number,expiry\ndora,86420975,M-8,2031-01\n").unwrap();
    let issue = |factory_trust: bool| {
        let mut c = cv_pcsc(&home);
        c.args([
            "--json",
            "--trace",
            "-r",
            "0",
            "issue",
            "--profile",
            "main",
            "--no-domain",
            "--holders",
        ])
        .arg(&csv)
        .arg("--issuer")
        .arg(&issuer)
        .arg("--factory-issuer")
        .arg(common::test_issuer_dir());
        if factory_trust {
            c.arg("--factory-trust").arg(common::test_factory_ca());
        }
        run(&mut c)
    };

    let before = applet_sim::state::Store::peek(&card).unwrap();
    let o = issue(false);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let reason = json(&o)["cards"][0]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("factory"), "{reason}");
    let trace = stderr(&o);
    for sent in ["> 802A", "> 8082", "> 042C", "> 04DA"] {
        assert!(!trace.contains(sent), "{sent} sent to an untrusted blank card: {trace}");
    }
    assert_eq!(
        applet_sim::state::Store::peek(&card).unwrap(),
        before,
        "the card is unchanged"
    );

    let o = issue(true);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let st = applet_sim::state::Store::peek(&card).unwrap();
    assert!(st.issued);
    let root = openssl::x509::X509::from_pem(&std::fs::read(issuer.join("root.pem")).unwrap()).unwrap();
    assert_eq!(st.trust_anchor, root.to_der().unwrap());
    let cert = openssl::x509::X509::from_der(&st.certificate).unwrap();
    let subject = cardvault_proto::cert::card_subject(&cert).unwrap();
    assert_eq!(
        (
            subject.card_number.as_str(),
            subject.role.as_str(),
            subject.member_number.as_deref()
        ),
        (st.card_number.as_str(), "main", Some("M-8"))
    );

    // Blocked, then unblocked by the new issuer's operator, the card
    // trusted under the new root.
    let trust = issuer.join("root.pem");
    for _ in 0..3 {
        run(cardvault(&home)
            .env("P", "000000")
            .arg("--trust")
            .arg(&trust)
            .args(["-r", "0", "pin", "verify", "--pin", "env:P"]));
    }
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 0);
    let o = run(cardvault(&home)
        .arg("--trust")
        .arg(&trust)
        .args(["-r", "0", "pin", "unblock", "--issuer"])
        .arg(&issuer));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(applet_sim::state::Store::peek(&card).unwrap().pin.tries_left, 3);
}
