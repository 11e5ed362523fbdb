//! `cardvault duplicate --main R --backup R` (FIG. 15): one pair of cards, or
//! with `--holders` a batch on one or several stations working in parallel.

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::secret::{Secret, SecretSource};
use crate::workflow::duplicate::{self, DuplicationOutcome, Elements};
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
every holder gets fresh elements, shown once in the report.")]
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
    /// Also give the backup card the encryption key (FIG. 26/27 variant).
    #[arg(long)]
    backup_gets_public_key: bool,
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
    let mut main_reader = ctx.open_named(&a.main[0])?;
    let mut backup_reader = ctx.open_named(&a.backup[0])?;
    let mut main = CardClient::open(main_reader.as_mut(), ctx.session())?;
    let mut backup = CardClient::open(backup_reader.as_mut(), ctx.session())?;
    let elements = elements(&a.elements)?;
    let main_pin = a.pin.unwrap_or(SecretSource::Prompt).read("PIN of the main card")?;
    let backup_pin = a
        .backup_pin
        .unwrap_or(SecretSource::Prompt)
        .read("PIN of the backup card")?;
    let mut vault = ctx.vault_or_create()?;
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

fn run_batch(ctx: &Ctx, a: Args) -> Result<()> {
    let path = a.holders.as_ref().expect("batch mode");
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
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
    let bar = super::progress(ctx, holders.len() as u64, "holders");
    let events = super::station_events(ctx, &bar);
    let records = duplicate::duplicate_batch(
        &super::station_env(ctx, &ctx.opts, &events),
        &stations,
        &holders,
        &elements,
        a.backup_gets_public_key,
    );
    bar.finish_and_clear();
    let records = records?;
    let done = records.iter().filter(|r| r.is_duplicated()).count();
    let failed = records.len() - done;
    if ctx.json {
        print_json(&serde_json::json!({ "duplicated": done, "failed": failed, "holders": records }));
    } else {
        for r in &records {
            match &r.outcome {
                DuplicationOutcome::Duplicated { report: rep, .. } => println!(
                    "duplicated {:<16} main {} backup {} check value {}",
                    r.holder, rep.main_card, rep.backup_card, rep.check_value
                ),
                DuplicationOutcome::Failed { reason } => println!("failed     {:<16} {reason}", r.holder),
            }
            if let Some(e) = r.generated_elements_hex() {
                println!(
                    "           key group elements 2..{} (shown once): {}",
                    e.len() + 1,
                    e.join(" ")
                );
            }
        }
        println!("{done} duplicated, {failed} failed");
    }
    if failed > 0 {
        return Err(Error::Refused(format!(
            "{failed} holder(s) not duplicated; see the report"
        )));
    }
    Ok(())
}
