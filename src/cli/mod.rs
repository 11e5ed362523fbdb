//! The command line: argument definitions and dispatch. Each subcommand lives
//! in its own module and calls into the library.

mod apdu;
mod audit;
mod backup;
mod cert;
mod demo;
mod domain;
mod duplicate;
mod files;
mod holder;
mod issue;
mod issuer;
mod keygroup;
mod manual;
mod pin;
mod purse;
mod readers;
mod registrar;
mod replace;
mod revoke;
mod safe;
mod status;
mod store;
mod wallet;
mod watch;

use crate::card::{CardClient, SessionOptions};
use crate::config::{Config, ExtendedMode};
use crate::error::{Error, Result};
use crate::reader::ReaderOptions;
use crate::transport::Reader;
use crate::workflow::station::{StationEnv, StationEvent};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// cardvault: duplicate card keys onto backup cards, and back up cards into an
/// encrypted vault and restore them onto the same or a replacement card.
#[derive(Parser, Debug)]
#[command(name = "cardvault", version, propagate_version = true)]
pub struct Cli {
    /// Reader: an index from `cardvault readers`, a name substring, or sim:NAME for
    /// an embedded simulated card.
    #[arg(short, long, global = true, env = "CARDVAULT_READER", value_name = "READER")]
    pub reader: Option<String>,
    /// Configuration file (default: ~/.config/cardvault/config.toml if present).
    #[arg(long, global = true, env = "CARDVAULT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory for embedded cards (default: ~/.local/share/cardvault).
    #[arg(long, global = true, env = "CARDVAULT_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print every APDU with its timing and decoded status word (secrets masked) on stderr.
    #[arg(long, global = true)]
    pub trace: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars on stderr (errors still go there). Bars are also
    /// hidden under --json and when stderr is not a terminal.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Trust card issuers under this root certificate (PEM); repeatable. Also
    /// CARDVAULT_TRUST (a path list) or `trust = [...]` in config.toml. A card
    /// gets a PIN or a secret only once its certificate chain verifies under a
    /// trusted root; embedded sim: cards trust the built-in test issuer.
    #[arg(long, global = true, value_name = "ROOT.pem")]
    pub trust: Vec<PathBuf>,
    /// Trust blank cards' factory certificates under this factory CA (PEM)
    /// for issuance; repeatable. Also CARDVAULT_FACTORY_TRUST (a path list)
    /// or `factory_trust = [...]` in config.toml. Embedded sim: cards trust
    /// the built-in test factory.
    #[arg(long, global = true, value_name = "CA.pem")]
    pub factory_trust: Vec<PathBuf>,
    /// Wait up to SECS seconds (default 30) for a card in the reader.
    #[arg(long, global = true, value_name = "SECS", num_args = 0..=1, default_missing_value = "30")]
    pub wait: Option<u64>,
    /// Vault file (default: vault.sqlite in the data directory).
    #[arg(long, global = true, env = "CARDVAULT_VAULT", value_name = "PATH")]
    pub vault: Option<PathBuf>,
    /// Create a missing vault or embedded sim: card instead of refusing it (a
    /// typo otherwise stops with the closest names). Also CARDVAULT_CREATE=1.
    #[arg(long, global = true, env = "CARDVAULT_CREATE", value_parser = clap::builder::FalseyValueParser::new())]
    pub create: bool,
    /// Extended-length APDUs: auto (from the ATR), always, or never (short APDUs with
    /// chaining and GET RESPONSE).
    #[arg(long, global = true, value_enum, value_name = "MODE")]
    pub extended_length: Option<ExtendedMode>,
    /// Accept an http:// safe address that is not loopback. The safe's
    /// messages protect their content end to end (signed, wrapped to the
    /// card, owner answers single-use), but plain HTTP shows who deposits
    /// and withdraws what, when, and lets the path drop or delay requests:
    /// say so knowingly.
    #[arg(long, global = true)]
    pub plain_http_safe: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List readers, whether a card is present, and its ATR.
    Readers(readers::Args),
    /// Show the card number, role, PIN tries left and applet version.
    Status(status::Args),
    /// Send raw APDUs (hex) and print the responses, like scriptor.
    Apdu(apdu::Args),
    /// The card's certificate chain: show it (verified or not), export it.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Verify, change or unblock the holder PIN.
    #[command(subcommand)]
    Pin(pin::PinCommand),
    /// Issue cards to holders from a CSV file (personalize blank cards).
    Issue(issue::Args),
    /// Issuer keys: make a root and an SCP11a operator key (issuer init).
    #[command(subcommand)]
    Issuer(issuer::IssuerCommand),
    /// Key group and main key state, reset, and duplicate release.
    #[command(subcommand)]
    Keygroup(keygroup::KeygroupCommand),
    /// Duplicate the main card's keys onto the backup card.
    Duplicate(duplicate::Args),
    /// Encrypt a file to a card's encryption key (no card needed with --recipient).
    Encrypt(files::EncryptArgs),
    /// Decrypt a file with the card that holds its key.
    Decrypt(files::DecryptArgs),
    /// Re-encrypt files from the backup card to a new main card.
    Recover(files::RecoverArgs),
    /// Show or verify the audit trail of key take-outs, imports and issuance.
    Audit(audit::Args),
    /// Back up the card's application area, encrypted by the card, into the vault.
    Backup(backup::BackupArgs),
    /// Restore a backup chain onto the same card or a replacement card.
    Restore(backup::RestoreArgs),
    /// Issuer: sign a restore authorization request (after its checks).
    AuthorizeRestore(backup::AuthorizeArgs),
    /// Issuer: the domain key ceremony (init, verify).
    #[command(subcommand)]
    Domain(domain::DomainCommand),
    /// Holders the vault issued cards to: list, show, mark a main card lost.
    #[command(subcommand)]
    Holder(holder::HolderCommand),
    /// Issuer: card records (revoke a lost card).
    #[command(subcommand)]
    Card(revoke::CardCommand),
    /// Issuer: sign a load authorization request (`purse challenge`).
    AuthorizeLoad(purse::AuthorizeLoadArgs),
    /// List, show, verify, export and import vault backups.
    #[command(subcommand)]
    Vault(backup::VaultCommand),
    /// Value application (e-money purse): balance, load challenge, credit, debit.
    #[command(subcommand)]
    Purse(purse::PurseCommand),
    /// Electronic wallet: items of value on the card (list, load, spend).
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// Electronic safe: init, serve over HTTP, list, verify.
    #[command(subcommand)]
    Safe(safe::SafeCommand),
    /// Run the end-to-end demonstration on embedded simulated cards.
    Demo(demo::Args),
    /// Storing authorization: a card's request, the issuer's and the
    /// provider's signatures, applying it, and what is stored where.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Registrars of issuers and of data providers: init, certify.
    #[command(subcommand)]
    Registrar(registrar::RegistrarCommand),
    /// Data providers (and issuers) as storing parties: init.
    #[command(subcommand)]
    Provider(registrar::ProviderCommand),
    /// Replace a holder's lost or broken main card, step by step: mark it
    /// lost, restore its backup onto the new card, recover the holder's
    /// files, and report what was restored and what was not (--resume).
    Replace(Box<replace::Args>),
    /// Wait for cards in PC/SC readers and back each one up as it is inserted.
    Watch(watch::Args),
    /// Print shell completions for bash, zsh, fish, elvish or PowerShell.
    Completions(manual::CompletionsArgs),
    /// Write the man pages (cardvault.1 and one per subcommand) to a directory.
    Man(manual::ManArgs),
}

/// Resolved settings shared by every command.
pub struct Ctx {
    pub reader: Option<String>,
    pub vault_path: PathBuf,
    /// `--create`: a missing vault or embedded card is made, not refused.
    pub create: bool,
    pub trace: bool,
    pub json: bool,
    /// `--quiet`: no progress bars.
    pub quiet: bool,
    /// Trusted card issuer roots.
    pub trust: crate::trust::Trust,
    /// Trusted factory CAs (blank cards, issuance).
    pub factory_trust: crate::trust::Trust,
    pub opts: ReaderOptions,
}

impl Ctx {
    pub fn from_cli(cli: &Cli) -> Result<Ctx> {
        let (config, config_path) = Config::load(cli.config.as_deref())?;
        let trust_paths = crate::trust::configured_paths(
            &cli.trust,
            std::env::var_os("CARDVAULT_TRUST"),
            &config.trust,
            config_path.as_deref(),
        );
        let trust = crate::trust::Trust::from_files(&trust_paths)?;
        let factory_paths = crate::trust::configured_paths(
            &cli.factory_trust,
            std::env::var_os("CARDVAULT_FACTORY_TRUST"),
            &config.factory_trust,
            config_path.as_deref(),
        );
        let factory_trust = crate::trust::Trust::from_files(&factory_paths)?;
        let data_dir = cli
            .data_dir
            .clone()
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(crate::config::default_data_dir);
        let vault_path = cli
            .vault
            .clone()
            .or_else(|| config.vault.clone())
            .unwrap_or_else(|| data_dir.join("vault.sqlite"));
        Ok(Ctx {
            reader: cli.reader.clone().or_else(|| config.reader.clone()),
            vault_path,
            create: cli.create,
            trace: cli.trace,
            json: cli.json,
            quiet: cli.quiet,
            trust,
            factory_trust,
            opts: ReaderOptions {
                data_dir,
                config,
                extended_flag: cli.extended_length,
                wait: cli.wait.map(Duration::from_secs),
                create_cards: cli.create,
            },
        })
    }

    /// Open the chosen reader.
    pub fn open_reader(&self) -> Result<Box<dyn Reader>> {
        crate::reader::open(self.reader.as_deref(), &self.opts)
    }

    /// Open a reader named by a command's own option (`--main`, `--backup`...).
    pub fn open_named(&self, spec: &str) -> Result<Box<dyn Reader>> {
        crate::reader::open(Some(spec), &self.opts)
    }

    /// Open the vault, which must exist unless `--create` was given: a
    /// command that reads the vault never makes an empty one from a typo.
    pub fn vault(&self) -> Result<crate::vault::Vault> {
        if !self.create && !self.vault_path.exists() {
            return Err(Error::NoVault(self.vault_path.clone()));
        }
        crate::vault::Vault::open(&self.vault_path)
    }

    /// Open the vault, creating it if it does not exist: for the commands that
    /// record what they did to a card (`backup`, `issue`, `duplicate`,
    /// `keygroup`, `recover`, `vault import`).
    pub fn vault_or_create(&self) -> Result<crate::vault::Vault> {
        crate::vault::Vault::open(&self.vault_path)
    }

    /// Open the reader, lock the card, SELECT the applet and run `f`.
    pub fn with_card<T>(&self, f: impl FnOnce(&mut CardClient<'_>) -> Result<T>) -> Result<T> {
        let mut reader = self.open_reader()?;
        let mut card = CardClient::open(reader.as_mut(), self.session())?;
        f(&mut card)
    }

    /// How this run opens card sessions.
    pub fn session(&self) -> SessionOptions {
        SessionOptions {
            trace: self.trace,
            trust: self.trust.clone(),
            factory_trust: self.factory_trust.clone(),
        }
    }
}

/// A progress bar for `len` `unit`s on stderr: hidden with --json or
/// --quiet, and by indicatif itself when stderr is not a terminal.
fn progress(ctx: &Ctx, len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = if ctx.json || ctx.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}"))
            .expect("progress template"),
    );
    bar
}

/// What a batch's stations report: progress on `bar`, notices for the
/// operator on stderr (not with --json), and each finished holder's
/// duplication to `holder_done` the moment it is finished.
fn station_events<'a>(
    ctx: &'a Ctx,
    bar: &'a indicatif::ProgressBar,
    holder_done: &'a (dyn Fn(&crate::workflow::duplicate::HolderDuplication) + Sync),
) -> impl Fn(StationEvent<'_>) + Sync + 'a {
    let json = ctx.json;
    move |e| match e {
        StationEvent::Started {
            holder,
            role: Some(role),
        } => bar.set_message(format!("{holder} ({role})")),
        StationEvent::Started { holder, role: None } => bar.set_message(holder.to_string()),
        StationEvent::Finished => bar.inc(1),
        StationEvent::Duplicated(record) => {
            holder_done(record);
            bar.inc(1);
        }
        StationEvent::Notice(n) => {
            if !json {
                bar.suspend(|| eprintln!("{n}"));
            }
        }
    }
}

/// Stop batches after their current holder on SIGINT and SIGTERM (instead
/// of dying mid-card), so that the report so far is printed.
fn stop_batches_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        crate::workflow::station::interrupt();
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe);
    // signal() with a valid function pointer has no other precondition.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// How a batch's stations reach readers (`readers`: the run's options, or
/// `issue`'s, which makes blank embedded cards) and the vault; a PC/SC
/// station waits `--wait` seconds (default 60) for the next card.
fn station_env<'a>(
    ctx: &'a Ctx,
    readers: &'a ReaderOptions,
    events: &'a (dyn Fn(StationEvent<'_>) + Sync),
) -> StationEnv<'a> {
    StationEnv {
        readers,
        session: ctx.session(),
        vault: &ctx.vault_path,
        wait: ctx.opts.wait.unwrap_or(Duration::from_secs(60)),
        events,
    }
}

static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Print a value as one JSON line on stdout (streamed reports: one line per
/// item as it finishes, then a summary line).
pub fn print_json_line<T: serde::Serialize>(v: &T) {
    JSON_PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
    println!("{}", serde_json::to_string(v).expect("serializable output"));
}

/// Print a value as pretty JSON on stdout. Each run prints one JSON document.
pub fn print_json<T: serde::Serialize>(v: &T) {
    JSON_PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
    println!("{}", serde_json::to_string_pretty(v).expect("serializable output"));
}

/// An error as the user reads it: the library's words, and what to do next
/// where that names a command or an option of this program (the library
/// names none).
pub fn error_message(e: &Error) -> String {
    use crate::reader::NoReaderChosen as N;
    if let Error::NoReaderChosen(n) = e {
        return match n {
            N::NoReaders(_) => format!("{n}; use -r sim:NAME for an embedded card"),
            N::Ambiguous { name, count, readers } => {
                format!("'{name}' matches {count} readers; pick one with -r INDEX or a longer name:{readers}")
            }
            N::NoCardAnywhere(readers) => match waited() {
                Some(secs) => format!(
                    "no reader has a card after waiting {secs} s; insert one, or use -r sim:NAME for an embedded card; readers:{readers}"
                ),
                None => format!(
                    "no reader has a card; insert one, use --wait, or use -r sim:NAME for an embedded card; readers:{readers}"
                ),
            },
            N::ManyCards { count, readers } => {
                format!("{count} readers have a card; choose one with -r INDEX, -r NAME or CARDVAULT_READER:{readers}")
            }
            N::NoSuchSimCard { .. } => format!("{n} (--create makes a new embedded card; cardvault readers lists them)"),
        };
    }
    let hint = match e {
        Error::NoPcsc(_) => ", or use an embedded card with -r sim:NAME",
        Error::NoCard(_) if waited().is_some() => {
            return format!("{e} after waiting {} s; insert a card", waited().unwrap_or_default())
        }
        Error::NoCard(_) => "; insert a card or use --wait",
        Error::PinBlocked => " (cardvault pin unblock)",
        Error::NoVault(_) => "; check --vault, or create one with cardvault backup or --create",
        _ => "",
    };
    format!("{e}{hint}")
}

/// `--wait SECS` of this run, so that an error's advice is true for it
/// ("use --wait" only when the run did not wait). 0: not given.
static WAITED_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long this run waited for a card (`--wait`), if it did.
fn waited() -> Option<u64> {
    match WAITED_SECS.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// Whether this run already printed its JSON report (an error then goes to stderr only).
pub fn json_printed() -> bool {
    JSON_PRINTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Completions need no configuration, reader or vault.
    if let Command::Completions(a) = cli.command {
        return manual::completions(a);
    }
    if let Some(secs) = cli.wait {
        WAITED_SECS.store(secs, std::sync::atomic::Ordering::SeqCst);
    }
    crate::safe::acknowledge_plain_http(cli.plain_http_safe);
    let ctx = Ctx::from_cli(&cli)?;
    match cli.command {
        Command::Readers(a) => readers::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Apdu(a) => apdu::run(&ctx, a),
        Command::Cert(c) => cert::run(&ctx, c),
        Command::Pin(c) => pin::run(&ctx, c),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Issue(a) => issue::run(&ctx, a),
        Command::Issuer(c) => issuer::run(&ctx, c),
        Command::Keygroup(c) => keygroup::run(&ctx, c),
        Command::Duplicate(a) => duplicate::run(&ctx, a),
        Command::Encrypt(a) => files::encrypt(&ctx, a),
        Command::Decrypt(a) => files::decrypt(&ctx, a),
        Command::Recover(a) => files::recover(&ctx, a),
        Command::Audit(a) => audit::run(&ctx, a),
        Command::Backup(a) => backup::run_backup(&ctx, a),
        Command::Restore(a) => backup::run_restore(&ctx, a),
        Command::AuthorizeRestore(a) => backup::run_authorize(&ctx, a),
        Command::Card(c) => revoke::run(&ctx, c),
        Command::Holder(c) => holder::run(&ctx, c),
        Command::Domain(c) => domain::run(&ctx, c),
        Command::AuthorizeLoad(a) => purse::run_authorize(&ctx, a),
        Command::Vault(c) => backup::run_vault(&ctx, c),
        Command::Purse(c) => purse::run(&ctx, c),
        Command::Wallet(c) => wallet::run(&ctx, c),
        Command::Safe(c) => safe::run(&ctx, c),
        Command::Store(c) => store::run(&ctx, c),
        Command::Registrar(c) => registrar::run_registrar(&ctx, c),
        Command::Provider(c) => registrar::run_provider(&ctx, c),
        Command::Man(a) => manual::man(&ctx, a),
        Command::Watch(a) => watch::run(&ctx, a),
        Command::Replace(a) => replace::run(&ctx, *a),
        Command::Completions(_) => unreachable!("handled before the configuration is read"),
    }
}

#[cfg(test)]
mod error_message_tests {
    use super::error_message;
    use crate::error::Error;
    use crate::workflow::duplicate::DuplicateRefusal;

    #[test]
    fn the_cli_adds_the_option_to_use_and_the_library_names_none() {
        let e = Error::NoCard("Virtual PCD 00 00".into());
        assert_eq!(e.to_string(), "no card in reader 'Virtual PCD 00 00'");
        assert_eq!(
            error_message(&e),
            "no card in reader 'Virtual PCD 00 00'; insert a card or use --wait"
        );
        assert_eq!(
            error_message(&Error::PinBlocked),
            "the PIN is blocked; the issuer must unblock it (cardvault pin unblock)"
        );
        assert!(!Error::NoPcsc("x".into()).to_string().contains("-r"));
        let many: Error = crate::reader::NoReaderChosen::ManyCards {
            count: 2,
            readers: "\n  0: A (card present)\n  1: B (card present)".into(),
        }
        .into();
        assert_eq!(
            many.to_string(),
            "2 readers have a card:\n  0: A (card present)\n  1: B (card present)"
        );
        assert_eq!(
            error_message(&many),
            "2 readers have a card; choose one with -r INDEX, -r NAME or CARDVAULT_READER:\n  0: A (card present)\n  1: B (card present)"
        );
        assert_eq!((many.exit_code(), many.kind()), (3, "reader"));
        assert_eq!(
            error_message(&crate::reader::NoReaderChosen::NoReaders(2).into()),
            "no PC/SC readers, so there is no reader 2; use -r sim:NAME for an embedded card"
        );
    }

    #[test]
    fn typed_refusals_keep_their_exit_codes_and_kinds() {
        let same: Error = DuplicateRefusal::SameCard.into();
        assert_eq!((same.exit_code(), same.kind()), (2, "usage"));
        let sizes: Error = DuplicateRefusal::GroupSizesDiffer { main: 3, backup: 2 }.into();
        assert_eq!((sizes.exit_code(), sizes.kind()), (4, "refused"));
        assert_eq!(
            sizes.to_string(),
            "key group sizes differ: main card 3 elements, backup card 2"
        );
        let unbound: Error = DuplicateRefusal::TakeOutNotBound.into();
        assert_eq!((unbound.exit_code(), unbound.kind()), (6, "data_integrity"));
    }
}
