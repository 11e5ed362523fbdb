//! The PC/SC stack the round-trip and batch parts run on: pcscd with the
//! vsmartcard vpcd driver, virtual readers, and applet-sim processes serving
//! cards on the vpcd ports.
//!
//! By default the system's pcscd and its two vpcd readers ("Virtual PCD 00
//! 00" and "00 01", ports 35963 and 35964) are used, and only when nothing
//! else has a card in them. `--setup-readers` (root) instead starts a
//! private pcscd for this run: four vpcd entries (channels 0x8C7D, 0x8C7F,
//! 0x8C81 and 0x8C83, ports 35965 to 35972, eight readers) in a private mount namespace
//! whose /run/pcscd is a scratch directory, so the system's pcscd, its
//! socket, its pid file and /etc/reader.conf.d are never touched, and the
//! tests that use the system's readers keep running undisturbed. The
//! private pcscd is stopped when the run ends.
//!
//! Why not a second entry in /etc/reader.conf.d for the system's pcscd:
//! pcscd only adds readers at start (a rescan is refused once the
//! configuration changed), so it would have to be restarted under the
//! running tests; and vsmartcard-vpcd 3.3 keeps its slot state in static
//! arrays indexed by slot number, so a second entry loading the same driver
//! file shares the first one's state (the new "00 00" reader shows the card
//! on port 35963 and the old one the card on 35965). The private pcscd loads
//! a copy of the driver for every entry after the first.

use cardvault::error::{Error, Result};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where pcsc-lite clients find the service when it is not the default.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";

/// A vpcd reader and the TCP port its card connects to.
#[derive(Debug, Clone)]
pub struct VirtualReader {
    pub name: String,
    pub port: u16,
}

impl VirtualReader {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The two readers of the system's pcscd (the README's vpcd setup).
pub fn system_readers() -> Vec<VirtualReader> {
    vec![
        VirtualReader {
            name: "Virtual PCD 00 00".into(),
            port: 35963,
        },
        VirtualReader {
            name: "Virtual PCD 00 01".into(),
            port: 35964,
        },
    ]
}

/// Names of the readers the PC/SC service lists, or why there is none.
pub fn list_readers() -> std::result::Result<Vec<String>, String> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(|e| format!("no PC/SC service ({e})"))?;
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names.iter().map(|n| n.to_string_lossy().into_owned()).collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(vec![]),
        Err(e) => Err(format!("listing readers failed ({e})")),
    }
}

/// Whether a card is present in `reader`.
pub fn card_present(reader: &str) -> bool {
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return false;
    };
    let Ok(name) = CString::new(reader) else {
        return false;
    };
    let mut st = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    if ctx.get_status_change(Duration::from_millis(0), &mut st).is_err() {
        return false;
    }
    st[0].event_state().contains(pcsc::State::PRESENT)
}

/// Wait until `reader` has a card (`present`) or is empty.
pub fn wait_card(reader: &str, present: bool, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    while card_present(reader) != present {
        if Instant::now() > end {
            return Err(Error::Reader(format!(
                "timed out waiting for {} in {reader}",
                if present { "a card" } else { "no card" }
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The readers to use: the private pcscd's, or the system's two when they
/// exist and are idle (no card: nothing else is serving them). `Err` says why
/// the PC/SC parts cannot run.
pub fn readers(private: Option<&PrivatePcscd>) -> std::result::Result<Vec<VirtualReader>, String> {
    if let Some(p) = private {
        return Ok(p.readers.clone());
    }
    let listed = list_readers()?;
    let want = system_readers();
    for r in &want {
        if !listed.contains(&r.name) {
            return Err(format!(
                "pcscd has no reader '{}' (the vsmartcard vpcd driver is not configured); readers: {listed:?}",
                r.name
            ));
        }
        if card_present(&r.name) {
            return Err(format!(
                "'{}' already holds a card: another simulator (a test?) is serving it; run again when it is idle, \
                 or use --setup-readers for private readers",
                r.name
            ));
        }
    }
    Ok(want)
}

/// The binary `bin` of workspace package `package` in directory `dir` (where
/// this benchmark's own binary lives). When this run was started by cargo
/// (`cargo run`, `cargo test`) from the source tree, cargo is asked to build it
/// first, so the benchmark never measures a stale CLI; otherwise it is built
/// only when missing.
pub fn workspace_bin(dir: &Path, package: &str, bin: &str) -> std::result::Result<PathBuf, String> {
    let path = dir.join(bin);
    let by_cargo = std::env::var_os("CARGO").is_some();
    if path.is_file() && !by_cargo {
        return Ok(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    if !manifest.is_file() {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} does not exist and there is no source tree to build it",
                path.display()
            ))
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-q", "-p", package, "--bin", bin, "--manifest-path"])
        .arg(&manifest);
    if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        c.arg("--release");
    }
    let ok = c.stdin(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if ok && path.is_file() {
        Ok(path)
    } else {
        Err(format!("could not build {}", path.display()))
    }
}

/// An applet-sim process serving cards; killed (the cards pulled) when dropped.
pub struct AppletSim {
    child: Child,
    readers: Vec<String>,
}

impl AppletSim {
    /// Serve `cards` = (reader, card file, profile) and wait until pcscd sees them.
    pub fn start(bin: &Path, cards: &[(&VirtualReader, &Path, &str)]) -> Result<AppletSim> {
        let mut c = Command::new(bin);
        c.arg("--quiet");
        for (r, path, profile) in cards {
            c.arg("--vpcd")
                .arg(r.addr())
                .arg("--card")
                .arg(path)
                .args(["--profile", profile]);
        }
        let child = c
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        let sim = AppletSim {
            child,
            readers: cards.iter().map(|c| c.0.name.clone()).collect(),
        };
        for r in &sim.readers {
            wait_card(r, true, Duration::from_secs(10))?;
        }
        Ok(sim)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AppletSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in &self.readers {
            let _ = wait_card(r, false, Duration::from_secs(5));
        }
    }
}

/// Where pcscd finds the vpcd driver.
fn vpcd_driver() -> Option<PathBuf> {
    [
        "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// A pcscd of our own with eight vpcd readers, on a private socket.
pub struct PrivatePcscd {
    child: Child,
    pub socket: PathBuf,
    pub readers: Vec<VirtualReader>,
}

impl PrivatePcscd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds pcscd has used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.pid()).unwrap_or(0.0)
    }
}

/// The pid of the pcscd this process talks to: the peer of a connection to
/// its client socket (`$PCSCLITE_CSOCK_NAME`, default
/// `/run/pcscd/pcscd.comm`; `SO_PEERCRED` names the process that listens),
/// else the pid file. The error says why neither gave a pid whose CPU time
/// is readable.
pub fn system_pcscd_pid() -> std::result::Result<u32, String> {
    use std::os::unix::io::AsRawFd;
    let socket = std::env::var_os(SOCKET_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/run/pcscd/pcscd.comm".into());
    let peer = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(conn) => {
            let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: getsockopt on a socket we own, into a ucred of the given size.
            let rc = unsafe {
                libc::getsockopt(
                    conn.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&mut cred as *mut libc::ucred).cast(),
                    &mut len,
                )
            };
            if rc == 0 && cred.pid > 0 {
                Ok(cred.pid as u32)
            } else {
                Err(format!("SO_PEERCRED on {} gave no pid", socket.display()))
            }
        }
        Err(e) => Err(format!("connecting to {}: {e}", socket.display())),
    };
    let pid = peer.or_else(|why| {
        std::fs::read_to_string("/run/pcscd/pcscd.pid")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("{why}, and no /run/pcscd/pcscd.pid"))
    })?;
    match process_cpu_seconds(pid) {
        Some(_) => Ok(pid),
        None => Err(format!("/proc/{pid}/stat (pcscd) is not readable")),
    }
}

/// CPU seconds (user + system, all threads) a process has used so far, from
/// /proc (clock-tick resolution: sum many samples).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((ticks(11)? + ticks(12)?) / hz)
}

/// CPU seconds the calling thread has used so far (precise).
pub fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and out-pointer.
    unsafe { libc::getrusage(who, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds this process has used so far (all its threads).
pub fn own_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// (friendly name, channel id); vpcd listens on ports channel and channel + 1.
const PRIVATE_CHANNELS: [(&str, u16); 4] = [
    ("CardVault Bench A", 0x8C7D),
    ("CardVault Bench B", 0x8C7F),
    ("CardVault Bench C", 0x8C81),
    ("CardVault Bench D", 0x8C83),
];

impl PrivatePcscd {
    /// Start it (needs root for the mount namespace) and point this process's
    /// PC/SC client, and every child it starts, at it.
    pub fn start(dir: &Path) -> Result<PrivatePcscd> {
        let fail = |why: String| Error::Reader(format!("--setup-readers: {why}"));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(fail("needs root (a private mount namespace for pcscd's socket)".into()));
        }
        for tool in ["pcscd", "unshare"] {
            if !super::proc::have_tool(tool) {
                return Err(fail(format!("{tool} is not installed")));
            }
        }
        let driver = vpcd_driver().ok_or_else(|| fail("the vsmartcard vpcd driver is not installed".into()))?;
        for (_, ch) in PRIVATE_CHANNELS {
            for port in [ch, ch + 1] {
                if std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
                    return Err(fail(format!("port {port} is in use (another vpcd reader?)")));
                }
            }
        }
        let conf = dir.join("reader.conf.d");
        let run = dir.join("run");
        for d in [&conf, &run] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        // vpcd keeps its per-slot state in static arrays indexed by slot
        // number, so two entries loading the same driver file share it (both
        // "00 00" readers show the card of either port). A copy of the file is
        // a separate dlopen with state of its own.
        let mut libs = vec![driver.clone()];
        for tag in ["b", "c", "d"] {
            let copy = dir.join(format!("libifdvpcd-bench-{tag}.so"));
            std::fs::copy(&driver, &copy).map_err(|e| Error::io(format!("copying {}", driver.display()), e))?;
            libs.push(copy);
        }
        let mut text = String::new();
        for ((name, ch), lib) in PRIVATE_CHANNELS.into_iter().zip(&libs) {
            text.push_str(&format!(
                "FRIENDLYNAME \"{name}\"\nDEVICENAME   /dev/null:0x{ch:04X}\nLIBPATH      {}\nCHANNELID    0x{ch:04X}\n\n",
                lib.display()
            ));
        }
        super::write_file(&conf.join("vpcd-bench"), text.as_bytes())?;
        let log = std::fs::File::create(dir.join("pcscd.log"))
            .map_err(|e| Error::io(format!("creating {}", dir.join("pcscd.log").display()), e))?;
        let script = format!(
            "mount --bind '{}' /run/pcscd && exec pcscd --foreground -c '{}'",
            run.display(),
            conf.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::io("pcscd log", e))?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io("starting the private pcscd", e))?;
        let socket = run.join("pcscd.comm");
        // Before any PC/SC call of this process: the client library reads it once.
        std::env::set_var(SOCKET_ENV, &socket);
        let mut p = PrivatePcscd {
            child,
            socket,
            readers: Vec::new(),
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(names) = list_readers() {
                let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("CardVault Bench")).collect();
                if ours.len() == 2 * PRIVATE_CHANNELS.len() {
                    p.readers = PRIVATE_CHANNELS
                        .iter()
                        .flat_map(|(name, ch)| {
                            [(0u16, "00 00"), (1, "00 01")].map(|(slot, suffix)| VirtualReader {
                                name: format!("{name} {suffix}"),
                                port: ch + slot,
                            })
                        })
                        .collect();
                    if p.readers.iter().all(|r| names.contains(&r.name)) {
                        return Ok(p);
                    }
                    return Err(fail(format!("unexpected reader names {names:?}")));
                }
            }
            if Instant::now() > end {
                return Err(fail(format!(
                    "the private pcscd did not come up; see {}",
                    dir.join("pcscd.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivatePcscd {
    fn drop(&mut self) {
        // SIGTERM lets pcscd close its readers (and vpcd its ports) cleanly.
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::env::remove_var(SOCKET_ENV);
    }
}
