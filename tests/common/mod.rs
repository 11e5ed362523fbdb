//! Shared test harness: the cardvault binary, embedded-card homes, and a real
//! pcscd + vpcd + applet-sim stack.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const READER0: &str = "Virtual PCD 00 00";
pub const READER1: &str = "Virtual PCD 00 01";
pub const PORT0: &str = "127.0.0.1:35963";
pub const PORT1: &str = "127.0.0.1:35964";
pub const ADMIN_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A fresh directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("cvtest-{}-{}-{n}", tag, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cardvault` with an isolated home and no user configuration.
pub fn cardvault(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cardvault"));
    c.env("CARDVAULT_HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("CARDVAULT_READER")
        .env_remove("CARDVAULT_CONFIG")
        .stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run cardvault")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// The `applet-sim` binary, built if this test run did not build it.
pub fn applet_sim_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_BIN_EXE_cardvault"))
            .parent()
            .unwrap()
            .to_path_buf();
        let bin = dir.join("applet-sim");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "applet-sim", "--bin", "applet-sim"]);
        if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            build.arg("--release");
        }
        let st = build.status().expect("cargo build applet-sim");
        assert!(st.success() && bin.exists(), "could not build applet-sim");
        bin
    })
    .clone()
}

/// One test at a time owns the vpcd ports.
pub fn vpcd_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether pcscd with the vpcd driver is reachable. Outside CI a missing
/// stack skips the test with a message; under CI=true it is a failure.
pub fn pcscd_ready() -> bool {
    let ok = pcsc::Context::establish(pcsc::Scope::User)
        .ok()
        .and_then(|ctx| ctx.list_readers_owned().ok())
        .map(|rs| rs.iter().any(|r| r.to_string_lossy().contains("Virtual PCD")))
        .unwrap_or(false);
    if !ok {
        let msg = "pcscd with the vsmartcard vpcd driver is not running (start: pcscd --foreground)";
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{msg}; CI=true requires it");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// Card presence in a PC/SC reader.
pub fn card_present(reader: &str) -> bool {
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return false;
    };
    let name = std::ffi::CString::new(reader).unwrap();
    let mut st = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    if ctx.get_status_change(Duration::from_millis(0), &mut st).is_err() {
        return false;
    }
    st[0].event_state().contains(pcsc::State::PRESENT)
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running applet-sim process serving cards on vpcd ports.
pub struct Sim {
    child: Option<Child>,
    readers: Vec<&'static str>,
}

impl Sim {
    /// Serve `cards` = [(port, reader name, card file, profile)].
    pub fn start(cards: &[(&str, &'static str, &Path, &str)]) -> Sim {
        for (_, reader, _, _) in cards {
            wait_for(&format!("{reader} to be empty"), Duration::from_secs(10), || {
                !card_present(reader)
            });
        }
        let mut cmd = Command::new(applet_sim_bin());
        if std::env::var_os("CV_SIM_VERBOSE").is_none() {
            cmd.arg("--quiet");
        }
        for (port, _, path, profile) in cards {
            cmd.args(["--vpcd", port, "--card"])
                .arg(path)
                .args(["--profile", profile]);
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("start applet-sim");
        let sim = Sim {
            child: Some(child),
            readers: cards.iter().map(|c| c.1).collect(),
        };
        for r in &sim.readers {
            wait_for(&format!("a card in {r}"), Duration::from_secs(10), || card_present(r));
        }
        sim
    }

    /// One card in reader 0.
    pub fn one(path: &Path, profile: &str) -> Sim {
        Sim::start(&[(PORT0, READER0, path, profile)])
    }

    /// SIGKILL the simulator (the card is pulled) and wait until pcscd sees it gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in &self.readers {
            wait_for(&format!("{r} to be empty"), Duration::from_secs(10), || {
                !card_present(r)
            });
        }
        // pcscd polls card presence every 400 ms. A card that comes back before
        // the poller saw it leave is never powered up again, so give it time.
        std::thread::sleep(Duration::from_millis(1200));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tiny deterministic PRNG (xorshift) for randomized-but-reproducible tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
