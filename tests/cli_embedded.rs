//! The terminal on embedded simulated cards (no reader, no pcscd needed).

mod common;

use common::*;

#[test]
fn demo_runs_end_to_end() {
    let home = temp_dir("demo");
    let o = run(cardvault(&home).arg("demo"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("demo complete"), "{out}");
    assert!(out.contains("data identical"));
    // It ends with the help desk's guided replacement of a lost card.
    let tail = &out[out.find("13. The help desk").expect("the replacement is in the demo")..];
    assert!(
        tail.contains("replace: restore") && tail.contains("pages written onto card"),
        "{out}"
    );
    assert!(tail.contains("not restored") && tail.contains("e-money purse"), "{out}");
    // The voucher bob deposited comes back from the safe onto the new card.
    assert!(
        tail.contains("replace: wallet") && tail.contains("\"Bookshop voucher\" 500) withdrawn from safe"),
        "{out}"
    );
    let o = run(cardvault(&home).args(["--json", "demo"]));
    let v = json(&o);
    let steps = v["steps"].as_array().unwrap();
    assert!(steps.len() >= 8, "{v}");
    assert_eq!(steps.last().unwrap()["step"], "not restored", "{v}");
}

#[test]
fn status_of_an_embedded_card_persists_between_commands() {
    let home = temp_dir("status");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:alice", "status"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = json(&o);
    assert_eq!(first["role"], "main");
    assert_eq!(first["pin_tries_left"], 3);
    assert_eq!(first["reader"], "sim:alice");
    let number = first["card_number"].as_str().unwrap().to_string();
    assert_eq!(number.len(), 16);
    // Same card next time, also when named through CARDVAULT_READER.
    let o = run(cardvault(&home)
        .env("CARDVAULT_READER", "sim:alice")
        .args(["--json", "status"]));
    assert_eq!(json(&o)["card_number"], number.as_str());
    assert_eq!(state(&home, "alice").card_number, number);
}

#[test]
fn wrong_pin_counts_down_blocks_and_is_reported_with_exit_code_5() {
    let home = temp_dir("pin");
    run(cardvault(&home).args(["-r", "sim:bob", "status"]));
    let verify = |pin: &str| {
        run(cardvault(&home)
            .env("P", pin)
            .args(["-r", "sim:bob", "pin", "verify", "--pin", "env:P"]))
    };
    let o = verify("111111");
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("wrong PIN: 2 tries left"), "{}", stderr(&o));
    assert_eq!(state(&home, "bob").pin.tries_left, 2);
    assert!(verify("123456").status.success());
    assert_eq!(state(&home, "bob").pin.tries_left, 3);
    for _ in 0..3 {
        verify("111111");
    }
    assert_eq!(state(&home, "bob").pin.tries_left, 0);
    let o = run(cardvault(&home)
        .env("P", "123456")
        .args(["--json", "-r", "sim:bob", "pin", "verify", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(json(&o)["error"]["kind"], "pin_blocked");
}

#[test]
fn pin_on_the_command_line_is_refused_and_nothing_is_sent() {
    let home = temp_dir("argv");
    run(cardvault(&home).args(["-r", "sim:c", "status"]));
    let before = state(&home, "c");
    let o = run(cardvault(&home).args(["-r", "sim:c", "pin", "verify", "--pin", "123456"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("never given on the command line"), "{}", stderr(&o));
    assert_eq!(state(&home, "c"), before);
    // No terminal to prompt on: a clear error, not a hang.
    let o = run(cardvault(&home).args(["--json", "-r", "sim:c", "pin", "verify"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(json(&o)["error"]["kind"], "usage");
    assert!(stderr(&o).contains("no terminal to ask on"), "{}", stderr(&o));
    assert_eq!(state(&home, "c"), before);
}

#[test]
fn trace_shows_every_apdu_with_timing_and_masks_the_pin() {
    let home = temp_dir("trace");
    let o = run(cardvault(&home)
        .env("P", "864213")
        .args(["--trace", "-r", "sim:t", "pin", "verify", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(5)); // the card's PIN is 123456
    let err = stderr(&o);
    assert!(err.contains("> 00A4040006F043564C5401"), "{err}");
    assert!(err.contains("secret bytes masked"), "{err}");
    assert!(err.contains("63C2 verification failed, 2 tries left"), "{err}");
    assert!(err.contains(" ms]"), "{err}");
    assert!(
        !err.contains("383634323133") && !err.contains("864213"),
        "PIN leaked: {err}"
    );
}

#[test]
fn apdu_script_like_scriptor_with_decoded_status_words() {
    let home = temp_dir("apdu");
    let script = home.join("s.apdu");
    std::fs::write(
        &script,
        "# select the applet\n00 A4 04 00 06 F0 43 56 4C 54 01 00\n00CADF0101   # wrong Le, corrected\n00 20 00 81 06 31 32 33 34 35 36\n80 99 00 00\n",
    )
    .unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:s", "apdu", "--script"]).arg(&script));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("< 6F0F8406F043564C5401"), "{out}");
    assert!(out.contains("DF0110"), "6Cxx was not followed: {out}");
    assert!(out.contains("> 0020008106 <6 secret bytes masked>"), "{out}");
    assert!(out.contains("< 6D00 instruction not supported"), "{out}");
    assert!(!out.contains("313233343536"));

    // --raw shows 6Cxx as the card sent it; --strict fails on it with exit code 4.
    let o = run(cardvault(&home).args([
        "-r",
        "sim:s",
        "apdu",
        "--raw",
        "--strict",
        "00A4040006F043564C5401",
        "00CADF0101",
    ]));
    assert_eq!(o.status.code(), Some(4));
    // GET DATA DF01 answers DF 01 10 + 16 digits = 19 bytes.
    assert!(
        stdout(&o).contains("< 6C13 wrong Le, exact length is 19"),
        "{}",
        stdout(&o)
    );

    // A malformed line is refused before anything is sent.
    let before = state(&home, "s");
    std::fs::write(
        &script,
        "00 A4 04 00 06 F0 43 56 4C 54 01\n0020008106313233343536\nXYZ\n",
    )
    .unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:s", "apdu", "--script"]).arg(&script));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    assert_eq!(state(&home, "s"), before);

    // Hex that is no valid APDU: exit 2, one line saying what is wrong, nothing sent.
    for (apdu, why) in [
        ("80B000240004", "P3 = 00 followed by one byte"),
        ("80B00024000", "odd number"),
        ("00A404000601", "P3 = 06 announces 6 data bytes, but 1 bytes follow"),
        (
            "80D6000000000201",
            "extended Lc = 0002 announces 2 data bytes, but 1 bytes follow",
        ),
        ("80B0", "at least 4"),
    ] {
        let o = run(cardvault(&home).args(["--trace", "-r", "sim:s", "apdu", "00A4040006F043564C5401", apdu]));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{apdu}: {err}");
        assert_eq!(err.lines().count(), 1, "{apdu}: {err}");
        assert!(err.contains("argument 2") && err.contains(why), "{apdu}: {err}");
        assert!(!err.contains("> "), "{apdu}: something was sent: {err}");
        assert_eq!(state(&home, "s"), before);
    }
    // Longer than one argument may be: from a script.
    std::fs::write(&script, "00".repeat(65545)).unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:s", "apdu", "--script"]).arg(&script));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 1: '0000")
            && stderr(&o).contains("65545 bytes exceed the longest command APDU (65544 bytes)"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &script,
        "00 A4 04 00 06 F0 43 56 4C 54 01\n# comment\n80 B0 00 24 00 04\n",
    )
    .unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:s", "apdu", "--script"]).arg(&script));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 3: '80 B0 00 24 00 04' is not a command APDU: P3 = 00"),
        "{}",
        stderr(&o)
    );
    assert_eq!(state(&home, "s"), before);

    // JSON: stable field names.
    let o = run(cardvault(&home).args(["--json", "-r", "sim:s", "apdu", "00A4040006F043564C5401"]));
    let v = json(&o);
    assert_eq!(v["exchanges"][0]["sw"], "9000");
    assert_eq!(v["exchanges"][0]["sw_text"], "ok");
}

#[test]
fn short_apdus_only_still_move_long_data() {
    let home = temp_dir("short");
    let o = run(cardvault(&home).args(["--extended-length", "never", "--trace", "-r", "sim:x", "demo"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Reading 4 KiB through short APDUs uses GET RESPONSE (00C0...).
    assert!(stderr(&o).contains("> 00C0000000"), "no GET RESPONSE seen");
}

#[test]
fn bad_configuration_is_a_clear_error_with_exit_code_2() {
    let home = temp_dir("config");
    let cfg = home.join("bad.toml");
    std::fs::write(&cfg, "[apdu]\nextended_lenght = \"never\"\n").unwrap();
    let o = run(cardvault(&home)
        .arg("--config")
        .arg(&cfg)
        .args(["-r", "sim:z", "status"]));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("bad.toml") && e.contains("extended_lenght"), "{e}");
    assert!(
        !card_path(&home, "z").exists(),
        "a card was created despite the bad config"
    );
    // The shipped config.toml is valid and accepted as is.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let o = run(cardvault(&home)
        .arg("--config")
        .arg(shipped)
        .args(["-r", "sim:z", "status"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // A config that names the default reader.
    let cfg2 = home.join("reader.toml");
    std::fs::write(&cfg2, "reader = \"sim:z\"\n").unwrap();
    let o = run(cardvault(&home)
        .env("CARDVAULT_CONFIG", &cfg2)
        .args(["--json", "status"]));
    assert_eq!(json(&o)["reader"], "sim:z");
}

#[test]
fn bad_reader_names_are_refused() {
    let home = temp_dir("names");
    let o = run(cardvault(&home).args(["-r", "sim:../etc", "status"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!home.join("etc.card").exists());
    let o = run(cardvault(&home).args(["-r", "sim:nope", "--config", "/nonexistent.toml", "status"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_card_in_use_by_another_process_is_reported() {
    let home = temp_dir("locked");
    run(cardvault(&home).args(["-r", "sim:held", "status"]));
    let profile = applet_sim::Profile::load("main").unwrap();
    let (_held, _) = applet_sim::Card::open(&card_path(&home, "held"), &profile).unwrap();
    let o = run(cardvault(&home).args(["-r", "sim:held", "status"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("in use by another process"), "{}", stderr(&o));
}

/// The instructions whose command data is secret (docs/PROTOCOL.md).
const SECRET_INS: [u8; 5] = [0x20, 0x24, 0x2C, 0x82, 0xE1];

/// Every traced command with a secret instruction and a data field shows
/// its data masked; returns how many such commands the trace holds.
fn secret_commands_masked(trace: &str) -> usize {
    let mut n = 0;
    // A protected command is traced twice: its plaintext (`> [SCP11] ...`)
    // and the wrapped bytes on the wire; both must mask.
    for line in trace
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("> "))
        .map(|l| l.strip_prefix("[SCP11] ").unwrap_or(l))
    {
        let head = cardvault_proto::from_hex(&line[..line.len().min(10)]).unwrap_or_default();
        if head.len() == 5 && SECRET_INS.contains(&head[1]) && head[4] != 0 {
            assert!(
                line.contains("secret bytes masked"),
                "secret data in the clear: > {line}"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn secret_commands_are_masked_in_traces_whatever_the_class_byte() {
    let home = temp_dir("maskcla");
    run(cardvault(&home).args(["-r", "sim:m", "status"]));
    // The issue's example: VERIFY with CLA 01 carries the PIN 123456.
    let o = run(cardvault(&home).args(["--trace", "-r", "sim:m", "apdu", "0120008106313233343536"]));
    let all = stdout(&o) + &stderr(&o);
    assert!(!all.contains("313233343536"), "the PIN leaked: {all}");
    assert!(all.contains("0120008106 <6 secret bytes masked>"), "{all}");
    // Every secret instruction with any class byte, in `apdu` output and in the trace.
    let secret = "a5a5a5a5a5a5a5a5";
    for cla in ["00", "01", "0C", "10", "80", "84", "90", "FF"] {
        for ins in SECRET_INS {
            let apdu = format!("{cla}{ins:02X}0081 08 {secret}");
            let o = run(cardvault(&home).args(["--trace", "-r", "sim:m", "apdu", &apdu]));
            let all = (stdout(&o) + &stderr(&o)).to_lowercase();
            assert!(!all.contains(secret), "CLA {cla} INS {ins:02X}: {all}");
            assert_eq!(secret_commands_masked(&stderr(&o)), 1, "CLA {cla} INS {ins:02X}: {all}");
        }
    }
    // pin change (CHANGE REFERENCE DATA) and pin unblock (EXTERNAL
    // AUTHENTICATE, RESET RETRY COUNTER): old PIN, new PIN and cryptogram masked.
    let o = run(cardvault(&home).env("OLD", "123456").env("NEW", "975310").args([
        "--trace",
        "-r",
        "sim:m",
        "pin",
        "change",
        "--pin",
        "env:OLD",
        "--new-pin",
        "env:NEW",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = stderr(&o);
    assert!(
        trace.contains("> [SCP11] 0024") && trace.contains("> 0424"),
        "no protected CHANGE REFERENCE DATA traced: {trace}"
    );
    assert_eq!(secret_commands_masked(&trace), 2, "{trace}");
    for pin in ["123456", "975310"] {
        let hex: String = pin.bytes().map(|b| format!("{b:02X}")).collect();
        assert!(!trace.contains(pin) && !trace.contains(&hex), "{pin} leaked: {trace}");
    }
    let o = run(cardvault(&home)
        .env("NEW", "864200")
        .args([
            "--trace",
            "-r",
            "sim:m",
            "pin",
            "unblock",
            "--new-pin",
            "env:NEW",
            "--issuer",
        ])
        .arg(test_issuer_dir()));
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = stderr(&o);
    // The issuer's SCP11a handshake (its data masked with the rest of INS
    // 82), then RESET RETRY COUNTER with the new PIN, plaintext and wire.
    assert!(
        trace.contains("> 8082011153 <") && trace.contains("> [SCP11] 002C"),
        "{trace}"
    );
    assert_eq!(secret_commands_masked(&trace), 3, "{trace}");
    assert!(!trace.contains("383634323030") && !trace.contains("864200"), "{trace}");
}

/// Under `--json` every failure prints `{"error": {kind, message, exit_code}}`
/// on stdout and nothing else, with the exit code of the README's table.
fn json_error(o: &std::process::Output, code: i32, kind: &str, words: &str) {
    assert_eq!(o.status.code(), Some(code), "{}{}", stdout(o), stderr(o));
    let v = json(o);
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{v}");
    let e = v["error"].as_object().unwrap();
    let mut keys: Vec<&String> = e.keys().collect();
    keys.sort();
    assert_eq!(keys, ["exit_code", "kind", "message"], "{v}");
    assert_eq!(e["exit_code"], code, "{v}");
    assert_eq!(e["kind"], kind, "{v}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(words), "exit {code}: {message}");
    assert!(stderr(o).contains(message), "stderr does not say it: {}", stderr(o));
}

#[test]
fn every_exit_code_comes_as_a_json_error_under_json() {
    let home = temp_dir("jsonerr");
    // 1: unexpected failure: the data directory is a file.
    let file = home.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let o = run(cardvault(&file).args(["--json", "-r", "sim:x", "status"]));
    json_error(&o, 1, "embedded_card", "Not a directory");
    // 2: a command line clap refuses, from the first byte (a PIN in argv).
    run(cardvault(&home).args(["-r", "sim:c", "status"]));
    let before = state(&home, "c");
    let o = run(cardvault(&home).args(["--json", "-r", "sim:c", "pin", "verify", "--pin", "123456"]));
    json_error(&o, 2, "usage", "never given on the command line");
    assert_eq!(state(&home, "c"), before);
    let o = run(cardvault(&home).args(["--json", "no-such-command"]));
    json_error(&o, 2, "usage", "no-such-command");
    // 3: no PC/SC service (a socket that does not exist).
    let o = run(cardvault(&home)
        .env("PCSCLITE_CSOCK_NAME", home.join("no-pcscd.comm"))
        .args(["--json", "-r", "0", "status"]));
    json_error(&o, 3, "no_pcsc", "PC/SC service not available");
    // 4: not a cardvault card.
    let cfg = home.join("foreign.toml");
    std::fs::write(&cfg, "[sim]\nprofile = \"foreign\"\n").unwrap();
    let o = run(cardvault(&home)
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "-r", "sim:other", "status"]));
    json_error(&o, 4, "not_cardvault", "not a cardvault card");
    // 5: wrong PIN.
    let o = run(cardvault(&home)
        .env("P", "999999")
        .args(["--json", "-r", "sim:c", "pin", "verify", "--pin", "env:P"]));
    json_error(&o, 5, "wrong_pin", "2 tries left");
    // 6: a tampered vault under restore.
    let o = run(cardvault(&home)
        .env("P", "123456")
        .args(["-r", "sim:c", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    rusqlite::Connection::open(home.join("vault.sqlite"))
        .unwrap()
        .execute("UPDATE backups SET trailer = zeroblob(36)", [])
        .unwrap();
    let o = run(cardvault(&home)
        .env("P", "123456")
        .args(["--json", "-r", "sim:c", "restore", "--latest", "--pin", "env:P"]));
    json_error(&o, 6, "data_integrity", "backup");
    // 7: the vault cannot be opened.
    let o = run(cardvault(&home)
        .arg("--vault")
        .arg(&*home)
        .args(["--json", "vault", "list"]));
    json_error(&o, 7, "vault", "vault");
}

#[test]
fn purse_debit_takes_value_under_the_pin_and_never_below_zero() {
    let home = temp_dir("debit");
    let balance = |home: &std::path::Path| -> u64 {
        let o = run(cv(home).args(["--json", "-r", "sim:w", "purse", "balance"]));
        assert!(o.status.success(), "{}", stderr(&o));
        json(&o)["balance"].as_u64().unwrap()
    };
    let signer = test_signer_cert();
    let o = run(cv(&home).env("ISSUER", ISSUER_KEY_HEX.trim()).args([
        "--json",
        "-r",
        "sim:w",
        "purse",
        "credit",
        "100",
        "--issuer-key",
        "env:ISSUER",
        "--signer-cert",
        signer.to_str().unwrap(),
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv(&home).args(["--json", "-r", "sim:w", "purse", "debit", "30", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["balance"], 70);
    assert_eq!(balance(&home), 70);
    // More than the balance: the card refuses, nothing is taken.
    let before = state(&home, "w");
    let o = run(cv(&home).args(["-r", "sim:w", "purse", "debit", "71", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("DEBIT refused by the card: 6A80"), "{}", stderr(&o));
    assert_eq!(state(&home, "w"), before);
    // A wrong PIN: exit 5, and only the retry counter moves.
    let o = run(cv(&home)
        .env("P", "999999")
        .args(["-r", "sim:w", "purse", "debit", "1", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let after = state(&home, "w");
    assert_eq!(after.memory, before.memory);
    assert_eq!(after.pin.tries_left + 1, before.pin.tries_left);
    assert_eq!(balance(&home), 70);
}

/// A card whose ATR does not announce extended length (the main profile with
/// `extended_length = false`), as `--config` for embedded cards.
fn short_only_config(home: &std::path::Path) -> std::path::PathBuf {
    let main = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/applet-sim/profiles/main.toml")).unwrap();
    let profile = home.join("short.toml");
    std::fs::write(
        &profile,
        main.replace("extended_length = true", "extended_length = false"),
    )
    .unwrap();
    let cfg = home.join("short-config.toml");
    std::fs::write(&cfg, format!("[sim]\nprofile = {:?}\n", profile.display().to_string())).unwrap();
    cfg
}

/// The traced command APDUs that use extended length (Lc or Le in three bytes).
fn extended_apdus(trace: &str) -> usize {
    trace
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("> "))
        .filter(|l| {
            let b = cardvault_proto::from_hex(l.split(" <").next().unwrap()).unwrap_or_default();
            b.len() >= 7 && b[4] == 0
        })
        .count()
}

#[test]
fn extended_length_always_sends_extended_apdus_even_when_the_atr_does_not_announce_them() {
    let home = temp_dir("extalways");
    let cfg = short_only_config(&home);
    // sim:s is made from the short-only profile, sim:e from the built-in main one.
    let backup = |mode: &str, card: &str| {
        let mut c = cv(&home);
        if card == "sim:s" {
            c.arg("--config").arg(&cfg);
        }
        run(c.args([
            "--extended-length",
            mode,
            "--trace",
            "-r",
            card,
            "backup",
            "--pin",
            "env:P",
        ]))
    };
    // auto: this card gets short APDUs and GET RESPONSE only.
    let o = backup("auto", "sim:s");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(extended_apdus(&stderr(&o)), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("> 00C0"), "no GET RESPONSE: {}", stderr(&o));
    // always: the terminal sends extended APDUs; this card refuses the first
    // one (GET DATA of the certificate store, before the secure channel) with
    // 6700, exit 4, and neither the card nor the vault changes.
    let before = state(&home, "s");
    let listed = json(&run(cv(&home).args(["--json", "vault", "list"])));
    let o = backup("always", "sim:s");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("GET DATA refused by the card: 6700 wrong length"),
        "{}",
        stderr(&o)
    );
    assert!(extended_apdus(&stderr(&o)) >= 1, "{}", stderr(&o));
    assert_eq!(state(&home, "s"), before);
    assert_eq!(json(&run(cv(&home).args(["--json", "vault", "list"]))), listed);
    // always, on a card that takes them: the backup runs on extended APDUs
    // with no GET RESPONSE.
    let o = backup("always", "sim:e");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(extended_apdus(&stderr(&o)) >= 2, "{}", stderr(&o));
    assert!(!stderr(&o).contains("> 00C0"), "{}", stderr(&o));
}

#[test]
fn a_mistyped_card_name_is_refused_with_the_closest_names_and_no_card_is_made() {
    let home = temp_dir("simtypo");
    let holders = home.join("h.csv");
    std::fs::write(
        &holders,
        "holder,pin,member_number,expiry,key1\nalice,123456,M1,2030-12,00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:desk", "issue", "--profile", "pair", "--holders"])
        .arg(&holders)
        .args(["--no-domain"]));
    assert!(o.status.success(), "issue makes its blank cards: {}", stderr(&o));
    let o = run(cardvault_strict(&home).args(["-r", "sim:desk-alice-mian", "status"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("no embedded card 'sim:desk-alice-mian'"), "{e}");
    assert!(e.contains("did you mean sim:desk-alice-main?"), "{e}");
    assert!(!card_path(&home, "desk-alice-mian").exists());
    let o = run(cardvault_strict(&home).args(["--json", "-r", "sim:desk-alice-mian", "status"]));
    json_error(&o, 3, "reader", "did you mean sim:desk-alice-main?");
    // Far from every name: no suggestion, still refused.
    let o = run(cardvault_strict(&home).args(["-r", "sim:zzzzzzzzzzzz", "status"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(!stderr(&o).contains("did you mean"), "{}", stderr(&o));
    // A card named by another option is checked the same way.
    std::fs::write(home.join("x.txt"), "x").unwrap();
    let o = run(cardvault_strict(&home)
        .args(["encrypt", "--to", "sim:desk-alice-mian", "x.txt", "-o", "x.cve"])
        .current_dir(&*home));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did you mean sim:desk-alice-main?"),
        "{}",
        stderr(&o)
    );
    assert!(!card_path(&home, "desk-alice-mian").exists());
    // --create makes it.
    let o = run(cardvault_strict(&home).args(["--create", "-r", "sim:fresh", "status"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(card_path(&home, "fresh").exists());
    assert!(run(cardvault_strict(&home).args(["-r", "sim:fresh", "status"]))
        .status
        .success());
}

#[test]
fn a_mistyped_vault_path_is_refused_and_no_vault_is_made() {
    let home = temp_dir("vaulttypo");
    let typo = home.join("vaultt.sqlite");
    for args in [
        &["audit", "--verify"][..],
        &["vault", "verify"],
        &["vault", "list"],
        &["vault", "show", "1"],
    ] {
        let o = run(cardvault_strict(&home).arg("--vault").arg(&typo).args(args));
        assert_eq!(o.status.code(), Some(7), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("no vault at {}", typo.display())),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!typo.exists(), "{args:?} made a vault");
    }
    let o = run(cardvault_strict(&home)
        .arg("--vault")
        .arg(&typo)
        .args(["--json", "audit", "--verify"]));
    json_error(&o, 7, "vault", "no vault at");
    // The first backup makes one.
    run(cardvault(&home).args(["-r", "sim:c", "status"]));
    let o = run(cv(&home)
        .env_remove("CARDVAULT_CREATE")
        .arg("--vault")
        .arg(&typo)
        .args(["-r", "sim:c", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(typo.exists());
    let o = run(cardvault_strict(&home)
        .arg("--vault")
        .arg(&typo)
        .args(["vault", "verify"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Shown for people, not as a Rust debug dump.
    let o = run(cardvault_strict(&home)
        .arg("--vault")
        .arg(&typo)
        .args(["vault", "show", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("kind             full") && out.contains("restores as      #"),
        "{out}"
    );
    assert!(!out.contains("BackupRow") && !out.contains('{'), "{out}");
    // So does --create, for a command that only reads it.
    let other = home.join("other.sqlite");
    let o = run(cardvault_strict(&home)
        .arg("--vault")
        .arg(&other)
        .args(["--create", "audit", "--verify"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(other.exists());
}

#[test]
fn a_secret_typed_on_the_command_line_is_refused_without_being_repeated() {
    let home = temp_dir("echo");
    run(cardvault(&home).args(["-r", "sim:c", "status"]));
    let before = state(&home, "c");
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    for args in [
        vec!["pin", "unblock", "--issuer", "x", "--new-pin", key],
        vec!["pin", "unblock", "--issuer", "x", &format!("--new-pin={key}")],
        vec!["pin", "verify", "--pin", "123456"],
        vec!["pin", "verify", "123456"],
        vec!["keygroup", "set-key", "--issuer", "x", "--key", key],
        vec!["--json", "pin", "unblock", "--issuer", "x", "--new-pin", key],
        vec!["--json", "pin", "verify", "654321"],
    ] {
        let mut cmd = cardvault(&home);
        cmd.args(["-r", "sim:c"]).args(&args);
        let o = run(&mut cmd);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        for secret in [key, "123456", "654321", &key[..12]] {
            assert!(!all.contains(secret), "{args:?} repeated the secret:\n{all}");
        }
        assert!(all.contains("not shown"), "{args:?}: {all}");
    }
    assert_eq!(state(&home, "c"), before);
    // The harness's scan sees the secrets of a command like these.
    let mut cmd = cardvault(&home);
    cmd.env("K", key)
        .args(["pin", "unblock", "--new-pin", "env:K", "--pin", "999999"]);
    assert_eq!(secrets_passed(&cmd), [key, "999999"]);
}

#[test]
fn dash_as_output_means_standard_output_and_no_file_named_dash() {
    let home = temp_dir("dash");
    // A main card with its key: issued and duplicated.
    let holders = home.join("h.csv");
    std::fs::write(&holders, "holder,pin,member_number,expiry\nc,123456,M1,2030-12\n").unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:d", "issue", "--profile", "pair", "--no-domain", "--holders"])
        .arg(&holders));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv(&home)
        .env("E", format!("{} {}", "11".repeat(32), "22".repeat(32)))
        .args(["duplicate", "--main", "sim:d-c-main", "--backup", "sim:d-c-backup"])
        .args(["--pin", "env:P", "--backup-pin", "env:P", "--elements", "env:E"]));
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(home.join("in.txt"), "quarterly figures").unwrap();
    let o = run(cardvault(&home)
        .args(["encrypt", "--to", "sim:d-c-main", "in.txt", "-o", "-"])
        .current_dir(&*home));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!home.join("-").exists(), "a file named '-' was made");
    assert!(stderr(&o).contains("standard output"), "{}", stderr(&o));
    std::fs::write(home.join("in.cve"), &o.stdout).unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:d-c-main", "decrypt", "--pin", "env:P", "in.cve", "-o", "-"])
        .current_dir(&*home));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "quarterly figures");
    assert!(!home.join("-").exists());
    let o = run(cv(&home)
        .args([
            "--json",
            "-r",
            "sim:d-c-main",
            "decrypt",
            "--pin",
            "env:P",
            "in.cve",
            "-o",
            "-",
        ])
        .current_dir(&*home));
    assert_eq!(o.status.code(), Some(2));
}
