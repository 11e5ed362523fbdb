//! SCP11b interoperability with an independent client: yubikit (PyPI package
//! `yubikey-manager`, `yubikit.core.smartcard.scp`) opens a session on the
//! simulated card and sends protected commands (tests/interop/scp11_yubikit.py).
//!
//! - `yubikit_scp11b_over_vpcd`: the script plays the vpcd driver and the
//!   card (applet_sim, in this process) connects to it: no pcscd needed.
//! - `yubikit_scp11b_through_pcscd`: pcscd + vpcd + applet-sim + pyscard, on
//!   the tests' private pcscd (tests/common/stack.rs).
//!
//! Needs python3 with yubikey-manager (and pyscard for the second test); .ci/run
//! installs them. Outside CI a missing piece skips the test with a message;
//! under CI it is a failure.

mod common;

use applet_sim::{Card, Profile};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn skip(msg: &str) {
    if ci() {
        panic!("{msg}; CI=true requires it");
    }
    eprintln!("SKIPPED: {msg}");
}

/// Whether python3 can import all of `modules`.
fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn script() -> Command {
    let mut c = Command::new("python3");
    c.arg(repo("tests/interop/scp11_yubikit.py"))
        .arg("--root")
        .arg(repo("fixtures/issuer/test-root.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Serve a fresh `main` card to the vpcd endpoint at `addr` until `stop`.
fn serve_card(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut card = Card::in_memory(&Profile::load("main").unwrap());
        applet_sim::vpcd::run(&mut card, &addr, stop, |m| eprintln!("applet-sim: {m}"));
    })
}

/// Wait for the script, with a deadline; return (success, stdout, stderr).
fn finish(mut child: std::process::Child, out: Arc<Mutex<String>>) -> (bool, String, String) {
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    std::thread::sleep(Duration::from_millis(50));
    let out = out.lock().unwrap().clone();
    (status.map(|s| s.success()).unwrap_or(false), out, err)
}

/// Collect the script's stdout on a thread; the first line is returned by `first`.
fn read_stdout(child: &mut std::process::Child) -> (Arc<Mutex<String>>, std::sync::mpsc::Receiver<String>) {
    let stdout = child.stdout.take().unwrap();
    let all = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (all, rx)
}

#[test]
fn yubikit_scp11b_over_vpcd() {
    if !python_has("yubikit.core.smartcard.scp, cryptography") {
        return skip("python3 with yubikit (pip install yubikey-manager) is not available");
    }
    let mut child = script()
        .args(["--vpcd-listen", "127.0.0.1:0"])
        .spawn()
        .expect("start python3");
    let (out, lines) = read_stdout(&mut child);
    let first = lines.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let port = first
        .strip_prefix("VPCD_PORT ")
        .unwrap_or_else(|| panic!("script did not announce its port: {first:?}"))
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let card = serve_card(format!("127.0.0.1:{port}"), stop.clone());
    let (ok, out, err) = finish(child, out);
    stop.store(true, Ordering::Relaxed);
    card.join().unwrap();
    assert!(ok, "yubikit interop failed\n--- stdout\n{out}--- stderr\n{err}");
    for check in [
        "SCP11b handshake",
        "protected VERIFY of the PIN succeeds",
        "a tampered C-MAC is refused with 6988",
        "all checks passed",
    ] {
        assert!(out.contains(check), "missing check {check:?}\n{out}");
    }
}

#[test]
fn yubikit_scp11b_through_pcscd() {
    // A private pcscd with the vpcd driver (tests/common/stack.rs), so the
    // machine's pcscd and its readers are never touched.
    let Some(stack) = common::stack::PcscStack::start("yubikit_scp11b_through_pcscd") else {
        return;
    };
    if !python_has("yubikit.core.smartcard.scp, smartcard.System") {
        return skip("python3 with yubikit and pyscard (pip install yubikey-manager) is not available");
    }
    let home = common::temp_dir("scp11-pcsc");
    let _card = stack.one(&home.join("interop.card"), "main");
    let mut child = script()
        .args(["--pcsc", stack.reader(0)])
        .spawn()
        .expect("start python3");
    let (out, _lines) = read_stdout(&mut child);
    let (ok, out, err) = finish(child, out);
    assert!(
        ok,
        "yubikit interop through pcscd failed\n--- stdout\n{out}--- stderr\n{err}"
    );
    assert!(out.contains("all checks passed"), "{out}");
}
