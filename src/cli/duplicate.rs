//! `cardvault duplicate --main R --backup R` (FIG. 15): one pair of cards, or
//! with `--holders` a batch on one or several stations working in parallel.

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::secret::{Secret, SecretSource};
use crate::workflow::duplicate::{self, DuplicationOutcome, Elements, HolderDuplication};
use crate::workflow::issue;
use crate::workflow::station::{CardSource, Station};
use cardvault_proto::{from_hex, to_hex};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Batch: with --holders FILE (the holder file of `issue`), every holder's main card
is duplicated onto the holder's backup card, each with the PIN of the holder's
row. A station is one --main reader and one --backup reader; several stations
work in parallel:

  cardvault duplicate --holders h.csv --elements generate \\
      --main 'Virtual PCD 00 00' --backup 'Virtual PCD 00 01' \\
      --main 'Virtual PCD 01 00' --backup 'Virtual PCD 01 01'

At a PC/SC station, insert any pending holder's main card and backup card; the
station recognizes the holder by the main card's member number and waits for
the next pair (up to --wait seconds, default 60). With sim:PREFIX the station
takes the next holder and uses the embedded cards PREFIX-HOLDER-main and
PREFIX-HOLDER-backup that `issue -r sim:PREFIX` made. With --elements generate,
every holder gets fresh elements, appended to --elements-out FILE (one line per
holder: HOLDER ELEMENT2 ELEMENT3 ...) and synced before any card gets them; a
rerun takes the elements the file holds for a holder, so a holder cut mid-way
(even by SIGKILL or a power cut) resumes with the elements its cards hold.

Each holder is reported the moment it is finished (with --json: one JSON line
per holder, then a summary line). SIGINT or SIGTERM stops the batch after the
holders being served, prints the report so far and exits with code 130; some
holders failed: exit code 8.")]
pub struct Args {
    /// Reader holding the main card (repeat with --backup for more stations; needs --holders).
    #[arg(long = "main", value_name = "READER", required = true)]
    main: Vec<String>,
    /// Reader holding the backup card (one per --main, in the same order).
    #[arg(long = "backup", value_name = "READER", required = true)]
    backup: Vec<String>,
    /// Batch: duplicate the cards of every holder in this file; PINs from its pin column.
    #[arg(long, value_name = "FILE.csv")]
    holders: Option<PathBuf>,
    /// PIN of the main card: prompt, env:VAR or file:PATH [default: prompt].
    #[arg(long, value_name = "SOURCE", conflicts_with = "holders")]
    pin: Option<SecretSource>,
    /// PIN of the backup card (default: asked separately).
    #[arg(long, value_name = "SOURCE", conflicts_with = "holders")]
    backup_pin: Option<SecretSource>,
    /// Key group elements 2..n as hex (32 bytes each, separated by spaces, commas or
    /// newlines) from prompt, env:VAR or file:PATH; or `generate` to make them here
    /// and show them once. In a batch, given elements serve every holder.
    #[arg(long, value_name = "SOURCE|generate", default_value = "prompt")]
    elements: String,
    /// Batch with --elements generate: keep every holder's elements in FILE
    /// (mode 0600, written before any card gets them; a rerun reuses them).
    #[arg(long, value_name = "FILE", requires = "holders")]
    elements_out: Option<PathBuf>,
    /// Also give the backup card the encryption key (FIG. 26/27 variant).
    #[arg(long)]
    backup_gets_public_key: bool,
    /// The holder's backup card NUMBER is lost: record it revoked, rotate the
    /// main key (the lost card may hold it; files encrypted to the old key
    /// then open with neither card, so decrypt them first) and duplicate onto
    /// the new backup card in --backup. Needs --issuer.
    #[arg(long, value_name = "NUMBER", conflicts_with = "holders", requires = "issuer")]
    replace_backup: Option<String>,
    /// Issuer operator credentials (`cardvault issuer init`): the SCP11a
    /// issuer session that authorizes --replace-backup on the main card.
    #[arg(long, value_name = "DIR")]
    issuer: Option<PathBuf>,
}

/// Parse key group elements: 32-byte hex values separated by whitespace or commas.
pub fn parse_elements(text: &[u8]) -> Result<Vec<Secret>> {
    let text = std::str::from_utf8(text).map_err(|_| Error::Usage("key group elements must be hex text".into()))?;
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            from_hex(t)
                .filter(|k| k.len() == 32)
                .map(Zeroizing::new)
                .ok_or_else(|| Error::Usage(format!("key group element {} is not 32 bytes of hex", i + 2)))
        })
        .collect()
}

/// `--elements`: `generate`, or where to read the given elements from.
fn elements(arg: &str) -> Result<Elements> {
    if arg == "generate" {
        return Ok(Elements::Generate);
    }
    let src: SecretSource = arg.parse().map_err(Error::Usage)?;
    Ok(Elements::Given(parse_elements(
        &src.read_all("key group elements 2..n (hex)")?,
    )?))
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    if a.main.len() != a.backup.len() {
        return Err(Error::Usage(format!(
            "give one --backup per --main ({} --main, {} --backup): each station is a --main/--backup pair",
            a.main.len(),
            a.backup.len()
        )));
    }
    if a.holders.is_some() {
        return run_batch(ctx, a);
    }
    if a.main.len() > 1 {
        return Err(Error::Usage(
            "several --main/--backup stations duplicate a batch: give the holder file with --holders".into(),
        ));
    }
    if a.main[0] == a.backup[0] {
        return Err(Error::Usage(format!(
            "--main and --backup name the same card ({}): the duplicate goes onto another card",
            a.main[0]
        )));
    }
    // Inputs first: nothing is read from a card before they are all there.
    let elements = elements(&a.elements)?;
    let main_pin = a.pin.unwrap_or(SecretSource::Prompt).read("PIN of the main card")?;
    let backup_pin = a
        .backup_pin
        .unwrap_or(SecretSource::Prompt)
        .read("PIN of the backup card")?;
    let mut main_reader = ctx.open_named(&a.main[0])?;
    let mut backup_reader = ctx.open_named(&a.backup[0])?;
    let mut main = CardClient::open(main_reader.as_mut(), ctx.session())?;
    let mut backup = CardClient::open(backup_reader.as_mut(), ctx.session())?;
    let mut vault = ctx.vault_or_create()?;
    if let Some(lost) = &a.replace_backup {
        return replace_backup(
            ctx,
            a.issuer.as_deref(),
            lost,
            (&mut main, &mut backup),
            elements,
            (main_pin, backup_pin),
            &mut vault,
        );
    }
    let done = duplicate::duplicate_pair(
        &mut main,
        &mut backup,
        &elements,
        (main_pin, backup_pin),
        a.backup_gets_public_key,
        &mut vault,
    )?;
    let report = &done.report;
    let shown: Option<Vec<String>> = done
        .generated_elements
        .as_ref()
        .map(|g| g.iter().map(|e| to_hex(e)).collect());
    if ctx.json {
        let mut v = serde_json::to_value(report).expect("serializable");
        if let Some(shown) = &shown {
            v["generated_elements"] = shown.clone().into();
        }
        print_json(&v);
    } else {
        println!("main card        {}", report.main_card);
        println!("backup card      {}", report.backup_card);
        println!("key group check  {}", report.check_value);
        println!(
            "main key         {}",
            if report.key_generated_now {
                "generated on the main card now"
            } else {
                "already on the main card"
            }
        );
        println!(
            "take-out         #{} imported on the backup card, receipt confirmed",
            report.take_out_counter
        );
        println!("end-to-end check ok: the backup card opens what is encrypted to the main card");
        if let Some(shown) = &shown {
            println!(
                "\nkey group elements 2..{} (shown once; keep them to redo a duplicate):",
                shown.len() + 1
            );
            for (i, e) in shown.iter().enumerate() {
                println!("  element {}: {e}", i + 2);
            }
        }
    }
    Ok(())
}

/// `--replace-backup`: the lost backup card revoked, the main key rotated,
/// the duplicate made onto the new backup card.
fn replace_backup(
    ctx: &Ctx,
    issuer: Option<&std::path::Path>,
    lost: &str,
    (main, backup): (&mut CardClient<'_>, &mut CardClient<'_>),
    elements: Elements,
    (main_pin, backup_pin): (Secret, Secret),
    vault: &mut crate::vault::Vault,
) -> Result<()> {
    let issuer =
        super::pin::issuer_auth(issuer.ok_or_else(|| Error::Usage("--replace-backup needs --issuer DIR".into()))?)?;
    let elements = match elements {
        Elements::Given(e) => e,
        _ => {
            return Err(Error::Usage(
                "--replace-backup takes the holder's elements (prompt, env:VAR or file:PATH), not generate".into(),
            ))
        }
    };
    let opts = duplicate::DuplicateOptions {
        main_pin,
        backup_pin,
        elements,
        backup_gets_public_key: false,
    };
    let rep = duplicate::replace_backup(main, backup, lost, &issuer, &opts, vault)?;
    if ctx.json {
        print_json(&rep);
    } else {
        println!("lost backup card {} recorded as revoked", rep.lost_backup);
        println!(
            "main key         {}",
            if rep.main_key_rotated {
                "rotated: the old key is destroyed (files encrypted to it open with neither card)"
            } else {
                "not bound to the lost card (already rotated, or never duplicated onto it)"
            }
        );
        println!("new backup card  {}", rep.duplicate.backup_card);
        println!("key group check  {}", rep.duplicate.check_value);
        println!("end-to-end check ok: the new backup card opens what is encrypted to the main card");
    }
    Ok(())
}

/// The operator's `--elements-out` file: one line per holder
/// (`HOLDER ELEMENT2 ELEMENT3 ...`), mode 0600. Opened and read before any
/// card is touched; a holder's new elements are appended and synced before
/// they go to its cards, and a rerun takes the elements kept for a holder, so
/// a holder cut mid-way resumes with what its cards already hold.
struct ElementsFile {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    kept: std::collections::HashMap<String, Vec<Secret>>,
    /// A write that failed: the batch stopped, and the run ends with this error.
    failed: std::sync::Mutex<Option<Error>>,
}

impl ElementsFile {
    fn open(path: &std::path::Path) -> Result<ElementsFile> {
        use std::io::Read;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mode = f
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "{} is readable by others (mode {:o}); key group elements go only to a file of mode 0600",
                path.display(),
                mode & 0o777
            )));
        }
        let mut text = Zeroizing::new(String::new());
        f.read_to_string(&mut text)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut kept = std::collections::HashMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let holder = words.next().unwrap_or_default();
            let rest = words.collect::<Vec<_>>().join(" ");
            let elements = parse_elements(rest.as_bytes())
                .map_err(|e| Error::Usage(format!("{} line {}: {e}", path.display(), i + 1)))?;
            if elements.is_empty() || kept.insert(holder.to_string(), elements).is_some() {
                return Err(Error::Usage(format!(
                    "{} line {}: holder {holder} has no elements or appears twice; the file is not one \
                     `duplicate --elements-out` wrote",
                    path.display(),
                    i + 1
                )));
            }
        }
        Ok(ElementsFile {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(f),
            kept,
            failed: std::sync::Mutex::new(None),
        })
    }
}

impl duplicate::ElementKeeper for ElementsFile {
    fn kept(&self, holder: &str) -> Option<Vec<Secret>> {
        self.kept.get(holder).cloned()
    }

    fn keep(&self, holder: &str, elements: &[Secret]) -> Result<()> {
        use std::io::Write;
        let mut line = Zeroizing::new(holder.to_string());
        for e in elements {
            line.push(' ');
            line.push_str(&to_hex(e));
        }
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.write_all(line.as_bytes()).and_then(|()| f.sync_data()).map_err(|e| {
            // Elements that cannot be kept go to no card, and the batch stops
            // with this error.
            let what = format!(
                "keeping the key group elements of holder {holder} in {} (no card got them; the batch stopped)",
                self.path.display()
            );
            *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Error::io(what.clone(), std::io::Error::new(e.kind(), e.to_string())));
            crate::workflow::station::interrupt();
            Error::io(what, e)
        })
    }
}

/// One holder's line of the streamed report.
fn holder_line(r: &HolderDuplication, elements_out: Option<&std::path::Path>) -> String {
    let mut line = match &r.outcome {
        DuplicationOutcome::Duplicated { report: rep, .. } => format!(
            "duplicated {:<16} main {} backup {} check value {}",
            r.holder, rep.main_card, rep.backup_card, rep.check_value
        ),
        DuplicationOutcome::Failed { reason } => format!("failed     {:<16} {reason}", r.holder),
        DuplicationOutcome::AlreadyDuplicated { main_card, backup_card } => format!(
            "skipped    {:<16} already duplicated (main {main_card} backup {backup_card}), skipped",
            r.holder
        ),
    };
    if let (Some(e), Some(path)) = (r.generated_elements_hex(), elements_out) {
        line.push_str(&format!(
            "\n           key group elements 2..{} written to {}",
            e.len() + 1,
            path.display()
        ));
    }
    line
}

fn run_batch(ctx: &Ctx, a: Args) -> Result<()> {
    let path = a.holders.as_ref().expect("batch mode");
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
    let stations: Vec<Station> = a
        .main
        .iter()
        .zip(&a.backup)
        .map(|(m, b)| Station {
            main: Some(CardSource::from_spec(m)),
            backup: Some(CardSource::from_spec(b)),
        })
        .collect();
    let holders = issue::parse_holders(&text, duplicate::holder_profile(&stations))?;
    let elements = elements(&a.elements)?;
    let mut kept_in = None;
    let elements = match (elements, &a.elements_out) {
        (Elements::Generate, None) => {
            return Err(Error::Usage(
                "a batch with --elements generate needs --elements-out FILE: every holder's elements are \
                 kept there before any card gets them"
                    .into(),
            ))
        }
        (Elements::Generate, Some(p)) => {
            let file = std::sync::Arc::new(ElementsFile::open(p)?);
            kept_in = Some(file.clone());
            Elements::GenerateKept(file)
        }
        (_, Some(_)) => return Err(Error::Usage("--elements-out goes with --elements generate".into())),
        (e, None) => e,
    };
    let out_path = a.elements_out.as_deref();
    let bar = super::progress(ctx, holders.len() as u64, "holders");
    let holder_done = |r: &HolderDuplication| {
        if ctx.json {
            let mut v = serde_json::to_value(r).expect("serializable");
            if let Some(o) = v.as_object_mut() {
                o.remove("generated_elements");
            }
            println!("{v}");
        } else {
            bar.suspend(|| println!("{}", holder_line(r, out_path)));
        }
    };
    let events = super::station_events(ctx, &bar, &holder_done);
    super::stop_batches_on_signals();
    let records = duplicate::duplicate_batch(
        &super::station_env(ctx, &ctx.opts, &events),
        &stations,
        &holders,
        &elements,
        a.backup_gets_public_key,
    );
    bar.finish_and_clear();
    let records = records?;
    if let Some(e) = kept_in.and_then(|f| {
        f.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }) {
        return Err(e);
    }
    let skipped = records
        .iter()
        .filter(|r| matches!(r.outcome, DuplicationOutcome::AlreadyDuplicated { .. }))
        .count();
    let failed = records.iter().filter(|r| !r.is_duplicated()).count();
    let done = records.len() - failed - skipped;
    let interrupted = crate::workflow::station::interrupted();
    // Holders no station reached were not reported as they finished.
    for r in records.iter().filter(|r| r.station.is_none()) {
        if ctx.json {
            println!("{}", serde_json::to_value(r).expect("serializable"));
        } else {
            println!("{}", holder_line(r, out_path));
        }
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({ "duplicated": done, "skipped": skipped, "failed": failed, "interrupted": interrupted })
        );
    } else {
        println!(
            "{done} duplicated, {failed} failed{}",
            if interrupted { " (interrupted)" } else { "" }
        );
    }
    if interrupted {
        return Err(Error::Interrupted {
            done: records.iter().filter(|r| r.station.is_some()).count(),
            total: records.len(),
            what: "holders",
        });
    }
    if failed > 0 {
        return Err(Error::SomeFailed {
            failed,
            total: records.len(),
            what: "holders",
        });
    }
    Ok(())
}
