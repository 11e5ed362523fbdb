//! Shared test harness: the cardvault binary, embedded-card homes, and a real
//! pcscd + vpcd + applet-sim stack.
#![allow(dead_code)]

pub mod claims;
pub mod hostile;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The test issuer's signing key (restore and load authorizations), trusted
/// by the built-in profiles.
pub const ISSUER_KEY_HEX: &str = include_str!("../../fixtures/issuer/issuer-private.hex");
/// The first page after the purse (pages 0-3 of the built-in profiles, a
/// value application that no holder command writes).
pub const FIRST_DATA_PAGE: u16 = 4;

/// The test issuer's signing key, raw.
/// Issue `rows` (holder file rows) with `cardvault issue` as cards
/// `sim:PREFIX-HOLDER-ROLE` of the issuer domain `domain` (or
/// `--no-domain`), from the built-in `profile`.
pub fn issue_holders(home: &Path, prefix: &str, profile: &str, rows: &str, domain: &[String]) {
    let csv = home.join(format!("{prefix}.csv"));
    std::fs::write(&csv, format!("holder,pin,member_number,expiry\n{rows}")).unwrap();
    let o = run(cv(home)
        .args([
            "-r",
            &format!("sim:{prefix}"),
            "issue",
            "--profile",
            profile,
            "--holders",
        ])
        .arg(&csv)
        .args(domain));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

pub fn issuer_key() -> Vec<u8> {
    cardvault_proto::from_hex(ISSUER_KEY_HEX.trim()).expect("fixtures/issuer/issuer-private.hex")
}

/// The test issuer's authorization signer: its key and its certificate under
/// the test root (fixtures/issuer/test-signer.pem).
pub fn issuer_signer() -> cardvault::issuer::IssuerSigner {
    cardvault::issuer::IssuerSigner::new(&issuer_key(), &std::fs::read(test_signer_cert()).unwrap()).unwrap()
}

/// The test issuer's signer certificate (PEM): `--signer-cert` with
/// `--issuer-key env:ISSUER`.
pub fn test_signer_cert() -> PathBuf {
    repo_path("fixtures/issuer/test-signer.pem")
}

/// A fresh directory for one test, removed when dropped. A test that fails
/// keeps it (the path is printed) so that it can be looked at;
/// `CARDVAULT_KEEP_TEST_DIRS=1` keeps every one.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CARDVAULT_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh directory for one test.
pub fn temp_dir(tag: &str) -> TempDir {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("cvtest-{}-{}-{n}", tag, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// The seed of a randomized test: `CARDVAULT_TEST_SEED` when set, otherwise
/// drawn from the clock. Printed either way, so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CARDVAULT_TEST_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CARDVAULT_TEST_SEED={v}: not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("{test}: seed {seed} (replay with CARDVAULT_TEST_SEED={seed})");
    eprintln!("{test}: seed {seed} (replay with CARDVAULT_TEST_SEED={seed})");
    seed
}

/// `cardvault` with an isolated home and no user configuration. The tests'
/// cards and vaults are made on first use (`CARDVAULT_CREATE=1`, as `--create`);
/// [`cardvault_strict`] is the operator's default, which refuses a missing one.
pub fn cardvault(home: &Path) -> Command {
    let mut c = cardvault_strict(home);
    c.env("CARDVAULT_CREATE", "1");
    c
}

/// `cardvault` with an isolated home, no user configuration, and nothing
/// made on first use: a missing vault or `sim:` card is refused.
pub fn cardvault_strict(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cardvault"));
    c.env("CARDVAULT_HOME", home)
        .env_remove("CARDVAULT_CREATE")
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("CARDVAULT_READER")
        .env_remove("CARDVAULT_CONFIG")
        .stdin(Stdio::null());
    c
}

/// The PIN of the tests' cards, in `P` for `--pin env:P` (see [`cv`]).
pub const PIN: &str = "123456";

/// `cardvault` with an isolated home and [`PIN`] in `P` (for `env:P`).
pub fn cv(home: &Path) -> Command {
    let mut c = cardvault(home);
    c.env("P", PIN);
    c
}

/// Where embedded card `name` of a test home lives (the home is the data
/// directory; the file name is the terminal's own rule).
pub fn card_path(home: &Path, name: &str) -> PathBuf {
    cardvault::transport::sim::card_path(home, name)
}

/// The persistent state of embedded card `name`, read without opening it.
pub fn state(home: &Path, name: &str) -> applet_sim::CardState {
    applet_sim::state::Store::peek(&card_path(home, name))
        .unwrap_or_else(|e| panic!("card {name} is not readable: {e}"))
}

/// Run a command (cardvault, as every test does): its stderr must not show
/// a Rust panic, whatever the input or the card's answers.
/// Neither may it repeat a secret it was given (see [`assert_no_secret_echoed`]).
pub fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run cardvault");
    assert_no_panic(&o.stderr);
    assert_no_secret_echoed(cmd, &o);
    o
}

/// Options whose value is a secret source (`prompt`, `env:VAR`, `file:PATH`).
const SECRET_OPTIONS: &[&str] = &[
    "--pin",
    "--new-pin",
    "--backup-pin",
    "--issuer-key",
    "--key",
    "--elements",
    "--passphrase",
    "--new-passphrase",
];

/// The secrets a cardvault invocation was given: the values of the
/// variables its `env:VAR` sources name, the words of its `file:PATH`
/// sources, and any value typed after a secret option itself (refused, but
/// it must not be repeated either).
pub fn secrets_passed(cmd: &Command) -> Vec<String> {
    let env: std::collections::HashMap<String, String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut values = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let value = match a.split_once('=') {
            Some((opt, v)) if SECRET_OPTIONS.contains(&opt) => v.to_string(),
            _ if SECRET_OPTIONS.contains(&a.as_str()) => match args.get(i + 1) {
                Some(v) => v.clone(),
                None => continue,
            },
            _ => continue,
        };
        values.push(value);
    }
    let dir = cmd.get_current_dir().map(Path::to_path_buf);
    let mut secrets = Vec::new();
    // A PKCS#11 URI names a token key (not a secret); its PIN comes from
    // `pin-source=` or CARDVAULT_PKCS11_PIN, which are.
    let values: Vec<String> = values
        .into_iter()
        .map(|v| match v.strip_prefix("pkcs11:") {
            Some(uri) => uri
                .split(['?', ';', '&'])
                .find_map(|a| a.strip_prefix("pin-source="))
                .map(|p| {
                    if p.starts_with('/') {
                        format!("file:{p}")
                    } else {
                        p.to_string()
                    }
                })
                .unwrap_or_else(|| "env:CARDVAULT_PKCS11_PIN".into()),
            None => v,
        })
        .collect();
    for v in values {
        if v == "prompt" || v == "generate" {
            continue;
        }
        let text = if let Some(var) = v.strip_prefix("env:") {
            env.get(var).cloned().unwrap_or_default()
        } else if let Some(path) = v.strip_prefix("file:") {
            let p = match &dir {
                Some(d) => d.join(path),
                None => PathBuf::from(path),
            };
            std::fs::read_to_string(p).unwrap_or_default()
        } else {
            v
        };
        secrets.extend(
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| w.len() >= 6)
                .map(str::to_string),
        );
    }
    secrets
}

/// A secret given to cardvault never comes back in its error output:
/// stderr of every run, and stdout of a run that failed (its JSON error).
pub fn assert_no_secret_echoed(cmd: &Command, o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    let out = if o.status.success() {
        String::new()
    } else {
        String::from_utf8_lossy(&o.stdout).to_lowercase()
    };
    for secret in secrets_passed(cmd) {
        let s = secret.to_lowercase();
        assert!(
            !repeats(&err, &s) && !repeats(&out, &s),
            "cardvault repeated a secret it was given ({} characters) in its error output:\n{err}{out}",
            s.len()
        );
    }
}

/// Whether `text` repeats `secret`. A short secret (a PIN) counts only as a
/// word of its own: six digits inside a longer run of hex in a trace are
/// chance, not an echo (one in 16^6 per position). A long one counts anywhere.
fn repeats(text: &str, secret: &str) -> bool {
    if secret.len() >= 16 {
        return text.contains(secret);
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(secret)
        .any(|(i, _)| !alnum(text[..i].chars().next_back()) && !alnum(text[i + secret.len()..].chars().next()))
}

/// A Rust panic printed by cardvault ("thread 'main' panicked at ..."): never,
/// for any input or card answer. Every CLI output a test captures passes here
/// (`run`, `stderr`, and the tests that read a child's stderr themselves).
pub fn assert_no_panic(stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "cardvault printed a Rust panic:\n{text}"
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    assert_no_panic(&o.stderr);
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

/// A path in the repository (fixtures, docs).
pub fn repo_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The test issuer root that simulated cards are certified under; PC/SC
/// tests pass it with `--trust`.
pub fn test_root() -> PathBuf {
    repo_path("fixtures/issuer/test-root.pem")
}

/// A test issuer domain made with `cardvault domain init` in `dir`:
/// `custodians` custodians, threshold `threshold`, each passphrase in a file
/// beside the domain (test passphrases). Returns the passphrase files, in
/// custodian order.
pub fn domain_init(home: &Path, dir: &Path, threshold: u8, custodians: u8) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = (1..=custodians)
        .map(|i| {
            let f = home.join(format!("{}-pass-{i}", dir.file_name().unwrap().to_string_lossy()));
            let word = format!(
                "{:016x}",
                cardvault_proto::crypto::random::<8>()
                    .iter()
                    .fold(0u64, |a, b| a << 8 | *b as u64)
            );
            std::fs::write(&f, format!("tp{i}-{word}\n")).unwrap();
            f
        })
        .collect();
    let mut c = cv(home);
    c.args(["domain", "init", "--custodians", &custodians.to_string()])
        .args(["--threshold", &threshold.to_string(), "-o"])
        .arg(dir);
    for f in &files {
        c.arg("--passphrase").arg(format!("file:{}", f.display()));
    }
    let o = run(&mut c);
    assert!(o.status.success(), "domain init: {}", stderr(&o));
    files
}

/// `issue` options for domain `dir` with the custodians `shares` present
/// (passphrases from `pass`) and the test issuer's operator (`--issuer`),
/// whose SCP11a session the domain key is loaded in.
pub fn domain_args(dir: &Path, pass: &[PathBuf], shares: &[u8]) -> Vec<String> {
    let mut a = vec![
        "--issuer".to_string(),
        repo_path("fixtures/issuer").display().to_string(),
        "--domain".to_string(),
        dir.display().to_string(),
    ];
    for i in shares {
        a.push("--share".into());
        a.push(i.to_string());
        a.push("--passphrase".into());
        a.push(format!("file:{}", pass[*i as usize - 1].display()));
    }
    a
}

/// The built-in test issuer's operator (`fixtures/issuer`): the SCP11a
/// issuer session that loads a domain key.
pub fn test_operator() -> cardvault::card::IssuerAuth {
    cardvault::card::IssuerAuth::Operator(std::sync::Arc::new(
        cardvault::issuer::IssuerCredentials::load(&repo_path("fixtures/issuer")).unwrap(),
    ))
}

/// A random issuer domain key for workflow-level tests (no ceremony: the
/// tests of the ceremony are in tests/domain.rs).
pub fn test_domain_key() -> std::sync::Arc<cardvault::domain::DomainKey> {
    let key = zeroize::Zeroizing::new(cardvault_proto::crypto::random::<32>());
    let info = cardvault::domain::DomainInfo {
        version: 1,
        domain_id: cardvault_proto::to_hex(&cardvault_proto::crypto::random::<16>()),
        generation: 1,
        threshold: 2,
        custodians: 2,
        check_value: cardvault_proto::to_hex(&cardvault::domain::check_value(&key[..]).unwrap()),
    };
    std::sync::Arc::new(cardvault::domain::DomainKey::new(info, key).unwrap())
}

/// The test issuer's directory (root, operator, signer): `--issuer` of the
/// commands that need the issuer's SCP11a session.
pub fn test_issuer_dir() -> PathBuf {
    repo_path("fixtures/issuer")
}

/// The test factory CA that blank simulated cards' factory certificates are
/// under; PC/SC tests pass it with `--factory-trust`.
pub fn test_factory_ca() -> PathBuf {
    repo_path("fixtures/factory/test-factory-ca.pem")
}

/// A real `cardvault safe serve` process on a free loopback port, stopped
/// (SIGKILL) when dropped.
pub struct SafeServer {
    child: std::process::Child,
    /// Its `http://127.0.0.1:PORT` address.
    pub url: String,
}

impl SafeServer {
    /// Serve the safe in `dir`; returns once it listens.
    pub fn start(home: &Path, dir: &Path) -> SafeServer {
        use std::io::BufRead;
        let mut child = cardvault(home)
            .args(["safe", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("safe serve said {line:?}"))
            .to_string();
        SafeServer {
            child,
            url: format!("http://{addr}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to end (after a kill).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for SafeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cardvault safe init` of a safe in `home/name` under the test issuer.
pub fn init_safe(home: &Path, name: &str) -> PathBuf {
    let dir = home.join(name);
    let o = run(cardvault(home)
        .args(["--json", "safe", "init", "--dir"])
        .arg(&dir)
        .arg("--issuer")
        .arg(test_issuer_dir()));
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}
