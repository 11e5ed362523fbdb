//! `cardvault replace --holder H --new R`: the guided replacement of a lost
//! or broken main card (`workflow::replace`), resumable with `--resume`.

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::safe::SafeAddress;
use crate::secret::SecretSource;
use crate::signer::IssuerKeySource;
use crate::workflow::backup::RestoreAuthorization;
use crate::workflow::replace::{
    self, Event, FileRecovery, IssuerRights, ReplaceJob, ReplaceState, StateFile, StepState,
};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("start").args(["holder", "resume"]).required(true).multiple(true)))]
pub struct Args {
    /// The holder whose main card is lost or broken: member number, holder
    /// name or card number (`cardvault holder list`).
    #[arg(long, value_name = "HOLDER")]
    holder: Option<String>,
    /// Reader of the replacement main card (an index, a name substring or
    /// sim:NAME; default: --reader).
    #[arg(long, value_name = "READER")]
    new: Option<String>,
    /// Continue the replacement in progress (the holder's, or the only one
    /// there is) from the step where it stopped.
    #[arg(long)]
    resume: bool,
    /// Where the PIN of the replacement card comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
    /// Why the old card is replaced (lost, stolen, broken...), kept in the audit trail.
    #[arg(long, default_value = "lost")]
    reason: String,
    /// The replacement's state file (default: replace/HOLDER.json in the
    /// data directory), written with mode 0600 after every step.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where to write the restore request when the job waits for the issuer
    /// (default: beside the state file, HOLDER.request.json).
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// The authorization the issuer signed for the request (`cardvault
    /// authorize-restore`).
    #[arg(long, value_name = "FILE")]
    authorization: Option<PathBuf>,
    /// Issuer signing key, when this terminal holds the issuer's rights: the
    /// authorization is then signed here (as `authorize-restore` does).
    #[arg(long, value_name = "SOURCE|URI")]
    issuer_key: Option<IssuerKeySource>,
    /// The signer certificate (PEM) of --issuer-key (default: signer.pem in --issuer).
    #[arg(long, value_name = "FILE", requires = "issuer_key")]
    signer_cert: Option<PathBuf>,
    /// The issuer root (PEM) the replacement card's certificate must verify
    /// under (default: root.pem in --issuer).
    #[arg(long, value_name = "FILE", requires = "issuer_key")]
    issuer_root: Option<PathBuf>,
    /// Issuer directory (`cardvault issuer init`) holding signer.pem and root.pem.
    #[arg(long, value_name = "DIR", requires = "issuer_key")]
    issuer: Option<PathBuf>,
    /// Reader of the holder's backup card, to recover --files.
    #[arg(long, value_name = "READER", requires = "files")]
    backup: Option<String>,
    /// Where the backup card's PIN comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    backup_pin: SecretSource,
    /// Encrypted files (.cve) of the holder to re-encrypt to the replacement
    /// card with the backup card.
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "backup")]
    files: Vec<PathBuf>,
    /// Key group elements 2..n (hex, 32 bytes each) the replacement card
    /// gets when it has no key yet (file recovery, --new-backup): prompt,
    /// env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE")]
    elements: Option<SecretSource>,
    /// Reader of a fresh backup card for the replacement card (issued with
    /// its key 1): the job ends by duplicating onto it, so the holder has a
    /// working pair again. Needs --elements.
    #[arg(long, value_name = "READER", requires = "elements")]
    new_backup: Option<String>,
    /// Where the fresh backup card's PIN comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    new_backup_pin: SecretSource,
    /// A safe holding the lost card's deposited wallet items (a directory or
    /// an http:// address; repeat for several): they are withdrawn onto the
    /// replacement card (default: the `safe` of `[wallet.backup]` in config.toml).
    #[arg(long, value_name = "DIR|URL")]
    safe: Vec<SafeAddress>,
}

/// A state file name from the holder's member number or name.
fn file_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn state_dir(ctx: &Ctx) -> PathBuf {
    ctx.opts.data_dir.join("replace")
}

/// The unfinished replacements in the default state directory.
fn in_progress(ctx: &Ctx) -> Vec<(PathBuf, ReplaceState)> {
    let Ok(dir) = std::fs::read_dir(state_dir(ctx)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, ReplaceState)> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.to_string_lossy().ends_with(".request.json"))
        .filter_map(|p| StateFile(p.clone()).load().ok().map(|s| (p, s)))
        .filter(|(_, s)| !s.finished)
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn first_of(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    // Files and secrets first: nothing is asked of a card before they read.
    let authorization: Option<RestoreAuthorization> = match &a.authorization {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::input(format!("reading {}", p.display()), e))?;
            Some(serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    let issuer = match &a.issuer_key {
        Some(key) => {
            let pick = |given: &Option<PathBuf>, names: &[&str], what: &str| -> Result<PathBuf> {
                given
                    .clone()
                    .or_else(|| a.issuer.as_deref().and_then(|d| first_of(d, names)))
                    .ok_or_else(|| Error::Usage(format!("--issuer-key needs --{what} (or --issuer DIR holding it)")))
            };
            let cert = pick(&a.signer_cert, &["signer.pem", "test-signer.pem"], "signer-cert")?;
            let root = pick(&a.issuer_root, &["root.pem", "test-root.pem"], "issuer-root")?;
            let pem = std::fs::read(&root).map_err(|e| Error::input(format!("reading {}", root.display()), e))?;
            let roots = openssl::x509::X509::stack_from_pem(&pem)
                .ok()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Error::Usage(format!("{}: no PEM certificate", root.display())))?;
            Some((super::backup::read_issuer_signer(ctx, key, &cert)?, roots))
        }
        None => None,
    };
    let mut vault = ctx.vault()?;
    // Which replacement: the holder's, or the only one in progress.
    let (file, existing) = match (&a.holder, &a.state) {
        (_, Some(p)) => (
            StateFile(p.clone()),
            p.exists().then(|| StateFile(p.clone()).load()).transpose()?,
        ),
        (Some(h), None) => {
            let holder = crate::workflow::holders::find(&vault, h)?;
            let key = holder.member_number.as_deref().unwrap_or(&holder.holder);
            let p = state_dir(ctx).join(format!("{}.json", file_name(key)));
            let s = p.exists().then(|| StateFile(p.clone()).load()).transpose()?;
            (StateFile(p), s)
        }
        (None, None) => {
            let mut open = in_progress(ctx);
            match open.len() {
                1 => {
                    let (p, s) = open.remove(0);
                    (StateFile(p), Some(s))
                }
                0 => {
                    return Err(Error::Usage(
                        "no replacement in progress; start one with --holder".into(),
                    ))
                }
                n => {
                    return Err(Error::Usage(format!(
                        "{n} replacements in progress ({}); name one with --holder",
                        open.iter()
                            .map(|(_, s)| s.holder_key().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    };
    if a.resume && existing.as_ref().is_none_or(|s| s.finished) && a.holder.is_some() {
        return Err(Error::Usage(format!(
            "no replacement in progress for holder {}; start one without --resume",
            a.holder.as_deref().unwrap_or_default()
        )));
    }
    let safes: Vec<SafeAddress> = if a.safe.is_empty() {
        ctx.opts
            .config
            .wallet
            .backup
            .safe
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|e| Error::Usage(format!("config.toml [wallet.backup] safe: {e}")))
            })
            .transpose()?
            .into_iter()
            .collect()
    } else {
        a.safe.clone()
    };
    let pin = a.pin.read("PIN of the replacement card")?;
    let backup_pin = match &a.backup {
        Some(_) => Some(a.backup_pin.read("PIN of the backup card")?),
        None => None,
    };
    let new_backup_pin = match &a.new_backup {
        Some(_) => Some(a.new_backup_pin.read("PIN of the new backup card")?),
        None => None,
    };
    let elements = match &a.elements {
        Some(src) => Some(super::duplicate::parse_elements(
            &src.read_all("key group elements 2..n (hex)")?,
        )?),
        None => None,
    };
    let mut nr = match &a.new {
        Some(spec) => ctx.open_named(spec)?,
        None => ctx.open_reader()?,
    };
    let mut new = CardClient::open(nr.as_mut(), ctx.session())?;
    let number = new.card_number()?;
    let state = match existing {
        // The same card again after the end: report, change nothing.
        Some(s) if !s.finished || s.new_card == number => s,
        _ => {
            let h = a.holder.as_deref().ok_or_else(|| {
                Error::Usage("no replacement in progress in that state file; start one with --holder".into())
            })?;
            replace::start(&vault, h, &number, &a.reason)?
        }
    };
    let mut br = match &a.backup {
        Some(spec) => Some(ctx.open_named(spec)?),
        None => None,
    };
    let mut backup = match br.as_mut() {
        Some(r) => Some(CardClient::open(r.as_mut(), ctx.session())?),
        None => None,
    };
    let mut nbr = match &a.new_backup {
        Some(spec) => Some(ctx.open_named(spec)?),
        None => None,
    };
    let mut new_backup = match nbr.as_mut() {
        Some(r) => Some(CardClient::open(r.as_mut(), ctx.session())?),
        None => None,
    };
    let job = ReplaceJob {
        pin: &pin,
        issuer: issuer.as_ref().map(|(signer, roots)| IssuerRights { signer, roots }),
        authorization: authorization.as_ref(),
        files: backup_pin.as_ref().map(|bp| FileRecovery {
            backup_pin: bp,
            files: &a.files,
            elements: elements.as_deref(),
        }),
        new_backup: match (&new_backup_pin, &elements) {
            (Some(pin), Some(el)) => Some(replace::NewBackup {
                backup_pin: pin,
                elements: el,
            }),
            _ => None,
        },
        safes: &safes,
    };
    let bar = super::progress(ctx, replace::Step::ALL.len() as u64, "steps");
    let events = |e: Event<'_>| match e {
        Event::Step(s, i) => {
            bar.set_position(i as u64 - 1);
            bar.set_message(s.to_string());
        }
        Event::Restore(n, t) => bar.set_message(format!("restore {n}/{t} blocks")),
        Event::File(p) => bar.set_message(format!("files: {}", p.display())),
    };
    let mut r = replace::Replacement { state, file };
    let result = replace::run(
        &mut new,
        backup.as_mut(),
        new_backup.as_mut(),
        &mut vault,
        &mut r,
        &job,
        &events,
    );
    let replace::Replacement { state, file } = r;
    bar.finish_and_clear();
    if let Err(e) = result {
        if !ctx.json {
            let at = state
                .steps
                .iter()
                .find(|r| r.state != StepState::Done && r.state != StepState::Skipped)
                .map_or("the end".to_string(), |r| r.step.to_string());
            eprintln!(
                "replacement of holder {} stopped at step {at}; `cardvault replace --resume` continues it (state {})",
                state.holder_key(),
                file.path().display()
            );
        }
        return Err(e);
    }
    let request_file = if state.waiting() {
        let p = a
            .request
            .clone()
            .unwrap_or_else(|| file.path().with_extension("request.json"));
        let req = state.request.as_ref().expect("waiting for a request's authorization");
        std::fs::write(&p, serde_json::to_string_pretty(req).expect("json"))
            .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        Some(p)
    } else {
        None
    };
    if ctx.json {
        let mut v = serde_json::to_value(&state).expect("state serializes");
        v["waiting"] = state.waiting().into();
        v["restored_summary"] = serde_json::json!(state.restored_summary());
        v["not_restored"] = serde_json::json!(state.not_restored());
        v["state_file"] = serde_json::json!(file.path());
        v["request_file"] = serde_json::json!(request_file);
        print_json(&v);
        return Ok(());
    }
    println!(
        "replacement of holder {} ({}): card {} -> card {}",
        state.holder_key(),
        state.holder,
        state.lost_card,
        state.new_card
    );
    for r in &state.steps {
        let s = match r.state {
            StepState::Pending => "pending",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Waiting => "WAITING",
        };
        println!("  {:<10} {:<8} {}", r.step, s, r.detail);
    }
    for b in &state.backups {
        println!(
            "  backup found   {:>4}  #{:<4} {:<12} {:>4} pages  {}  {}",
            b.id, b.counter, b.kind, b.pages, b.created_at, b.state
        );
    }
    if let Some(p) = &request_file {
        println!(
            "waiting for the issuer: the restore request is in {}; the issuer signs it with \
             `cardvault authorize-restore --request {} -o AUTH`, then `cardvault replace --resume --authorization AUTH`",
            p.display(),
            p.display()
        );
        return Ok(());
    }
    let restored = state.restored_summary();
    println!("restored:");
    if restored.is_empty() {
        println!("  nothing");
    }
    for l in restored {
        println!("  {l}");
    }
    let not = state.not_restored();
    if !not.is_empty() {
        println!("not restored:");
        for l in not {
            println!("  {l}");
        }
    }
    Ok(())
}
