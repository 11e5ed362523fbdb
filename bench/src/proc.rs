//! Timing helpers: child processes timed from spawn to exit with their peak
//! RSS and CPU time, medians over interleaved rounds.
//!
//! The peak RSS is the child's VmHWM, sampled from /proc while it runs. The
//! `ru_maxrss` that `wait4` reports is no use here: a child started with
//! vfork/posix_spawn inherits the parent's high-water mark at exec, so it
//! never reads below the benchmark process's own size.

use cardvault::error::{Error, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one child process went.
#[derive(Debug)]
pub struct ChildRun {
    pub wall: Duration,
    /// Peak resident set size (VmHWM) of the child, in bytes (0 if it exited
    /// before the first sample).
    pub max_rss: u64,
    /// User + system CPU time of the child, in seconds.
    pub cpu: f64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Run `cmd` to completion (stdin closed, stdout and stderr captured), timing
/// it from spawn to exit. A non-zero exit is an error naming the command.
pub fn run_child(cmd: &mut Command) -> Result<ChildRun> {
    run(cmd, false)
}

/// As [`run_child`], sampling the child's peak RSS every few milliseconds
/// (a thread of this process wakes for it; only where the RSS is reported).
pub fn run_child_rss(cmd: &mut Command) -> Result<ChildRun> {
    run(cmd, true)
}

fn run(cmd: &mut Command, sample_rss: bool) -> Result<ChildRun> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {what}"), e))?;
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        // Bound to this process, not its pid: reads fail once it is gone.
        let dir = sample_rss
            .then(|| std::fs::File::open(format!("/proc/{pid}")).ok())
            .flatten();
        std::thread::spawn(move || {
            let mut peak = 0;
            while let Some(d) = &dir {
                if let Some(kib) = vm_hwm_kib(d) {
                    peak = peak.max(kib);
                }
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak * 1024
        })
    };
    let mut stdout = Vec::new();
    let _ = out.read_to_end(&mut stdout);
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers. std's Child is
    // not waited on afterwards (dropping it does not reap).
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_rss = sampler.join().unwrap_or(0);
    if r != pid {
        return Err(Error::io(
            format!("waiting for {what}"),
            std::io::Error::last_os_error(),
        ));
    }
    let stderr = err_reader.join().unwrap_or_default();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        return Err(Error::Io {
            what: format!("{what} failed"),
            source: std::io::Error::other(format!(
                "exit status {status:#x}: {}{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            )),
        });
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(ChildRun {
        wall,
        max_rss,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        stdout,
        stderr,
    })
}

/// VmHWM (KiB) from the status file of the /proc directory `dir`.
fn vm_hwm_kib(dir: &std::fs::File) -> Option<u64> {
    use std::os::unix::io::AsRawFd;
    let name = c"status";
    // SAFETY: openat relative to a directory fd we hold, with a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a freshly opened descriptor that the File now owns.
    let mut f = unsafe { <std::fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Whether `tool` is on the PATH.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `cardvault` itself (the running binary), isolated from the user's setup:
/// its own data directory, no configuration file, no default reader. The
/// cards the benchmark serves through pcscd are the simulator's, certified
/// by the test issuer: the run trusts that root (`CARDVAULT_TRUST`), as an
/// operator would trust their issuer's, and blank cards' factory
/// certificates under the test factory CA (`CARDVAULT_FACTORY_TRUST`).
pub fn cardvault(exe: &Path, home: &Path) -> Command {
    let root = home.join("trusted-test-root.pem");
    let factory = home.join("trusted-test-factory-ca.pem");
    if !root.exists() || !factory.exists() {
        let _ = std::fs::create_dir_all(home);
        let _ = std::fs::write(&root, applet_sim::test_issuer::ROOT_PEM);
        let _ = std::fs::write(&factory, applet_sim::test_issuer::FACTORY_CA_PEM);
    }
    let mut c = Command::new(exe);
    c.env("CARDVAULT_TRUST", &root)
        .env("CARDVAULT_FACTORY_TRUST", &factory)
        .env("CARDVAULT_HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("CARDVAULT_READER")
        .env_remove("CARDVAULT_CONFIG")
        .env_remove("CARDVAULT_VAULT");
    c
}

/// The test issuer's directory (root and operator, keys included) under
/// `home`, written on first use: `--issuer` of the benchmark's issuance, as
/// an operator would name their issuer's.
pub fn test_issuer_dir(home: &Path) -> cardvault::Result<std::path::PathBuf> {
    use applet_sim::test_issuer as t;
    let dir = home.join("test-issuer");
    std::fs::create_dir_all(&dir).map_err(|e| cardvault::error::Error::io(format!("creating {}", dir.display()), e))?;
    for (name, pem) in [
        ("root.pem", t::ROOT_PEM),
        ("root-key.pem", t::ROOT_KEY_PEM),
        ("oce.pem", t::OCE_PEM),
        ("oce-key.pem", t::OCE_KEY_PEM),
    ] {
        super::write_file(&dir.join(name), pem)?;
    }
    Ok(dir)
}

/// Samples of one measurement (seconds, µs, ... as the caller decides).
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// Every sample times `k` (seconds to milliseconds, ...).
    pub fn scaled(&self, k: f64) -> Samples {
        Samples(self.0.iter().map(|x| x * k).collect())
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }

    /// "min–max over n" for the detail column.
    pub fn spread(&self, unit: super::Unit) -> String {
        let min = self.0.iter().copied().fold(f64::NAN, f64::min);
        format!(
            "{}–{} over {} rounds",
            unit.format(min),
            unit.format(self.max()),
            self.0.len()
        )
    }
}

/// Run side-by-side measurements in interleaved rounds: one warm-up pass
/// (discarded), then `rounds` passes, alternating the order every round so
/// that neither side always runs first on a noisy machine. Each closure
/// returns one sample.
pub fn interleave(rounds: usize, runs: &mut [&mut dyn FnMut() -> Result<f64>]) -> Result<Vec<Samples>> {
    let mut samples = vec![Samples::default(); runs.len()];
    for r in runs.iter_mut() {
        r()?;
    }
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..runs.len()).collect()
        } else {
            (0..runs.len()).rev().collect()
        };
        for i in order {
            let x = runs[i]()?;
            samples[i].push(x);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(Samples(vec![4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert!(Samples(vec![]).median().is_nan());
    }

    #[test]
    fn interleaves_with_a_warm_up() {
        let (mut a, mut b) = (0, 0);
        let mut fa = || -> Result<f64> {
            a += 1;
            Ok(1.0)
        };
        let mut fb = || -> Result<f64> {
            b += 1;
            Ok(2.0)
        };
        let s = interleave(3, &mut [&mut fa, &mut fb]).unwrap();
        assert_eq!((s[0].0.len(), s[1].median()), (3, 2.0));
        assert_eq!((a, b), (4, 4));
    }

    #[test]
    fn child_rss_and_failure() {
        let r = run_child_rss(Command::new("sh").args(["-c", "sleep 0.05; echo hi"])).unwrap();
        assert_eq!(r.stdout, b"hi\n");
        assert!(r.max_rss > 0 && r.max_rss < 64 << 20, "a shell is small: {}", r.max_rss);
        assert!(run_child(Command::new("sh").args(["-c", "exit 3"])).is_err());
    }
}
