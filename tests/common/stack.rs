//! A PC/SC stack owned by the test: a private pcscd with two vpcd readers on
//! ports of its own, and applet-sim processes serving cards on them.
//!
//! The pcscd runs in a private mount namespace whose /run/pcscd is a scratch
//! directory (the approach of the benchmark's `--setup-readers`), so the
//! machine's pcscd, its socket, its pid file and its readers are never
//! touched, and two test runs side by side do not meet. This process and every
//! child it starts find it through `PCSCLITE_CSOCK_NAME`.
//!
//! A test that cannot get the stack fails. Only `CARDVAULT_SKIP_PCSC=1`
//! (outside CI: any value of `CI` makes it a failure again) skips, and says so.

use super::{applet_sim_bin, temp_dir, TempDir};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The two readers of the private pcscd (vpcd slots 0 and 1).
pub const READER0: &str = "CardVault Test 00 00";
pub const READER1: &str = "CardVault Test 00 01";
/// The opt-out: set to skip the PC/SC tests where no pcscd can be started.
pub const SKIP_ENV: &str = "CARDVAULT_SKIP_PCSC";
/// When set, every test that ran against the private pcscd appends its name
/// to this file (CI counts them).
pub const REPORT_ENV: &str = "CARDVAULT_PCSC_REPORT";

/// Where pcsc-lite clients find the service.
const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";

/// Whether a missing PC/SC stack (or peer tool) may skip a test: only with the
/// explicit opt-out, and never under CI.
pub fn skip_allowed() -> bool {
    let ci = std::env::var_os("CI").is_some();
    let opt_out = std::env::var(SKIP_ENV)
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false);
    opt_out && !ci
}

/// Fail with `why`, or, with the opt-out, say that the test is skipped.
fn unavailable(test: &str, why: &str) {
    if skip_allowed() {
        eprintln!("SKIPPED {test}: {why} ({SKIP_ENV} is set)");
        println!("SKIPPED {test}: {why}");
    } else {
        panic!(
            "{test}: the PC/SC stack is not available: {why}. Install pcscd and vsmartcard-vpcd (and run as root, \
             or where unprivileged user namespaces are allowed), or set {SKIP_ENV}=1 to skip the PC/SC tests \
             outside CI"
        );
    }
}

/// Whether `tool` is on PATH; if not, the test fails unless skipping is allowed.
pub fn require_tool(test: &str, tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        unavailable(test, &format!("{tool} is not installed"));
    }
    ok
}

/// This process's scratch directory for pcscd's /run/pcscd. The pcsc client
/// library reads the socket name once, so it is one path for the whole
/// process; the stacks of one process take turns (see [`PcscStack::start`]).
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("cvtest-pcscd-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let socket = d.join("pcscd.comm");
        // Before the first PC/SC call of this process, under the stack lock.
        std::env::set_var(SOCKET_ENV, &socket);
        d
    })
}

/// Where pcscd finds the vpcd driver.
fn vpcd_driver() -> Option<PathBuf> {
    [
        "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/lib/x86_64-linux-gnu/pcsc/drivers/serial/libifdvpcd.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Two consecutive free TCP ports (vpcd listens on channel and channel + 1),
/// away from the system's vpcd (35963) and the benchmark's (35965-35968).
fn free_port_pair() -> Option<u16> {
    let start = 36000 + (std::process::id() % 400) as u16 * 4;
    (0..200u16).map(|i| start + i * 2).find(|&p| {
        let a = std::net::TcpListener::bind(("0.0.0.0", p));
        let b = std::net::TcpListener::bind(("0.0.0.0", p + 1));
        a.is_ok() && b.is_ok()
    })
}

/// The names of the readers pcscd lists, or why it lists none.
pub fn list_readers() -> Result<Vec<String>, String> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(|e| e.to_string())?;
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names.iter().map(|n| n.to_string_lossy().into_owned()).collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(vec![]),
        Err(e) => Err(e.to_string()),
    }
}

/// Card presence in a PC/SC reader, and the reader's event counter (which
/// pcscd's poller advances when it sees a card come or go).
pub fn reader_state(reader: &str) -> Option<(bool, u32)> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).ok()?;
    let name = CString::new(reader).unwrap();
    let mut st = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::from_millis(0), &mut st).ok()?;
    Some((st[0].event_state().contains(pcsc::State::PRESENT), st[0].event_count()))
}

/// Card presence in a PC/SC reader.
pub fn card_present(reader: &str) -> bool {
    reader_state(reader).map(|s| s.0).unwrap_or(false)
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private pcscd with two vpcd readers, stopped when dropped. One at a time
/// per test process: the value holds the process-wide lock.
pub struct PcscStack {
    pcscd: Child,
    port: u16,
    dir: TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl PcscStack {
    /// Start the stack for `test`. `None` only when the stack is missing and
    /// skipping is allowed; otherwise a missing stack fails the test.
    pub fn start(test: &str) -> Option<PcscStack> {
        Self::start_with(test, false)
    }

    /// As [`PcscStack::start`], with pcscd's APDU log on (`-a -d`, as an
    /// attacker on the host would run it): every APDU and answer lands in the
    /// log that [`PcscStack::log`] reads.
    pub fn start_logging_apdus(test: &str) -> Option<PcscStack> {
        Self::start_with(test, true)
    }

    /// What pcscd wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("pcscd.log")).unwrap_or_default()).into_owned()
    }

    fn start_with(test: &str, apdu_log: bool) -> Option<PcscStack> {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let run = run_dir();
        for tool in ["pcscd", "unshare"] {
            if !which(tool) {
                unavailable(test, &format!("{tool} is not installed"));
                return None;
            }
        }
        let Some(driver) = vpcd_driver() else {
            unavailable(test, "the vsmartcard vpcd driver (libifdvpcd.so) is not installed");
            return None;
        };
        let Some(port) = free_port_pair() else {
            unavailable(test, "no two free consecutive TCP ports for vpcd");
            return None;
        };
        let dir = temp_dir("pcscd");
        let conf = dir.join("reader.conf.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("vpcd-test"),
            format!(
                "FRIENDLYNAME \"CardVault Test\"\nDEVICENAME   /dev/null:0x{port:04X}\nLIBPATH      {}\nCHANNELID    0x{port:04X}\n",
                driver.display()
            ),
        )
        .unwrap();
        // Leftovers of an earlier stack of this process.
        for f in ["pcscd.comm", "pcscd.pid", "pcscd.pub"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let log = std::fs::File::create(dir.join("pcscd.log")).unwrap();
        let script = format!(
            "mount --bind '{}' /run/pcscd && exec pcscd --foreground {}-c '{}'",
            run.display(),
            if apdu_log { "--apdu --debug " } else { "" },
            conf.display()
        );
        let mut cmd = Command::new("unshare");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Without root: a user namespace of our own allows the bind mount.
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // pcscd must not outlive the test thread that started it, even if the
        // test process is killed.
        use std::os::unix::process::CommandExt;
        // SAFETY: only prctl, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        std::fs::create_dir_all("/run/pcscd").ok();
        let pcscd = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                unavailable(test, &format!("could not start pcscd: {e}"));
                return None;
            }
        };
        let mut stack = PcscStack {
            pcscd,
            port,
            dir,
            _lock: lock,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(names) = list_readers() {
                if [READER0, READER1].iter().all(|r| names.iter().any(|n| n == r)) {
                    break;
                }
            }
            let exited = stack.pcscd.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > end {
                let log = std::fs::read_to_string(stack.dir.join("pcscd.log")).unwrap_or_default();
                let why = format!("the private pcscd did not come up ({exited:?}); its log:\n{log}");
                unavailable(test, &why);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "{test}: running against a private pcscd (pid {}), vpcd ports {port} and {}",
            stack.pcscd.id(),
            port + 1
        );
        if let Some(report) = std::env::var_os(REPORT_ENV) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(report)
                .unwrap();
            writeln!(f, "{test}").unwrap();
        }
        Some(stack)
    }

    /// `host:port` of the vpcd slot (0 or 1).
    pub fn addr(&self, slot: u16) -> String {
        format!("127.0.0.1:{}", self.port + slot)
    }

    pub fn reader(&self, slot: u16) -> &'static str {
        [READER0, READER1][slot as usize]
    }

    /// Serve `cards` = [(slot, card file, profile)] from one applet-sim.
    pub fn sim(&self, cards: &[(u16, &Path, &str)]) -> Sim {
        for (slot, _, _) in cards {
            let r = self.reader(*slot);
            wait_for(&format!("{r} to be empty"), Duration::from_secs(10), || {
                !card_present(r)
            });
        }
        let mut cmd = Command::new(applet_sim_bin());
        if std::env::var_os("CV_SIM_VERBOSE").is_none() {
            cmd.arg("--quiet");
        }
        for (slot, path, profile) in cards {
            cmd.args(["--vpcd", &self.addr(*slot), "--card"])
                .arg(path)
                .args(["--profile", profile]);
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("start applet-sim");
        let mut sim = Sim {
            child: Some(child),
            readers: cards.iter().map(|c| (self.reader(c.0), 0)).collect(),
        };
        for (r, events) in &mut sim.readers {
            wait_for(
                &format!("a card in {r}"),
                Duration::from_secs(10),
                || match reader_state(r) {
                    Some((true, n)) => {
                        *events = n;
                        true
                    }
                    _ => false,
                },
            );
        }
        sim
    }

    /// One card in reader 0.
    pub fn one(&self, path: &Path, profile: &str) -> Sim {
        self.sim(&[(0, path, profile)])
    }

    /// Start applet-sim for one card in reader 0 and return at once: no wait
    /// for the reader to be empty before or for the card to appear after (a
    /// quick restart, as operators and CI do it).
    pub fn start_sim_now(&self, path: &Path, profile: &str) -> Sim {
        let mut cmd = Command::new(applet_sim_bin());
        if std::env::var_os("CV_SIM_VERBOSE").is_none() {
            cmd.arg("--quiet");
        }
        cmd.args(["--vpcd", &self.addr(0), "--card"])
            .arg(path)
            .args(["--profile", profile]);
        let child = cmd.stdin(Stdio::null()).spawn().expect("start applet-sim");
        Sim {
            child: Some(child),
            readers: vec![(self.reader(0), 0)],
        }
    }
}

impl Drop for PcscStack {
    fn drop(&mut self) {
        // SIGTERM lets pcscd close its readers and vpcd its ports.
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pcscd.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.pcscd.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.pcscd.kill();
        let _ = self.pcscd.wait();
    }
}

/// A running applet-sim process serving cards on the stack's vpcd ports.
pub struct Sim {
    child: Option<Child>,
    /// Each reader, with its event counter while the card was present.
    readers: Vec<(&'static str, u32)>,
}

impl Sim {
    /// SIGKILL the simulator (the card is pulled) and wait until pcscd's
    /// poller saw every card leave. A failed transmit marks the reader empty
    /// at once, but a card put back before the poller noticed (its event
    /// counter unchanged) is never powered up again.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (r, events) in &self.readers {
            wait_for(
                &format!("pcscd to see the card leave {r}"),
                Duration::from_secs(10),
                || matches!(reader_state(r), Some((false, n)) if n != *events),
            );
        }
    }

    /// SIGKILL the simulator and return at once, without waiting for pcscd
    /// to notice (a quick restart follows).
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.readers.clear();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}
