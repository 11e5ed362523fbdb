//! `cardvault duplicate --main R --backup R` (FIG. 15): one pair of cards, or
//! with `--holders` a batch on one or several stations working in parallel.

use super::{print_json, Ctx};
use crate::card::{CardClient, SessionOptions};
use crate::error::{Error, Result};
use crate::reader::ReaderSpec;
use crate::secret::{Secret, SecretSource};
use crate::transport::sim::{card_path, SimReader};
use crate::transport::Reader;
use crate::workflow::duplicate::{self, DuplicateOptions, DuplicateReport};
use crate::workflow::issue::{self, Holder, IssueProfile};
use cardvault_proto::{from_hex, to_hex};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
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

/// Key group elements 2..n for a card whose group has `size` elements.
fn generate_elements(size: u8) -> Vec<Secret> {
    (0..size.saturating_sub(1))
        .map(|_| Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()))
        .collect()
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
    let generate = a.elements == "generate";
    let elements = if generate {
        generate_elements(main.key_state()?.group_size)
    } else {
        let src: SecretSource = a.elements.parse().map_err(Error::Usage)?;
        parse_elements(&src.read_all("key group elements 2..n (hex)")?)?
    };
    let opts = DuplicateOptions {
        main_pin: a.pin.unwrap_or(SecretSource::Prompt).read("PIN of the main card")?,
        backup_pin: a
            .backup_pin
            .unwrap_or(SecretSource::Prompt)
            .read("PIN of the backup card")?,
        elements,
        backup_gets_public_key: a.backup_gets_public_key,
    };
    let mut vault = ctx.vault()?;
    let report = duplicate::duplicate(&mut main, &mut backup, &opts, &mut vault)?;
    let shown: Vec<String> = if generate {
        opts.elements.iter().map(|e| to_hex(e)).collect()
    } else {
        vec![]
    };
    if ctx.json {
        let mut v = serde_json::to_value(&report).expect("serializable");
        if generate {
            v["generated_elements"] = shown.into();
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
        if generate {
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

/// One side of a station.
enum Side {
    /// Embedded cards PREFIX-HOLDER-ROLE.
    Sim(String),
    /// A PC/SC reader the operator puts cards into.
    Pcsc(String),
}

impl Side {
    fn parse(spec: &str) -> Side {
        match ReaderSpec::parse(spec) {
            ReaderSpec::Sim(prefix) => Side::Sim(prefix),
            _ => Side::Pcsc(spec.to_string()),
        }
    }
}

/// The outcome for one holder of a batch.
#[derive(Debug, Clone, Serialize)]
struct HolderRecord {
    holder: String,
    /// 1-based station number, in the order of --main.
    station: Option<usize>,
    /// "duplicated" or "failed".
    result: String,
    reason: Option<String>,
    #[serde(flatten)]
    report: Option<DuplicateReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_elements: Option<Vec<String>>,
}

/// What the stations share.
struct Batch<'a> {
    ctx: &'a Ctx,
    holders: &'a [Holder],
    /// Elements given on the command line (None: generate per holder).
    elements: Option<&'a [Secret]>,
    backup_gets_public_key: bool,
    wait: Duration,
    bar: &'a indicatif::ProgressBar,
    /// Holders a station has taken.
    taken: Mutex<Vec<bool>>,
    /// Card numbers handled in this batch.
    used: Mutex<Vec<String>>,
    records: Mutex<Vec<(usize, HolderRecord)>>,
    abort: AtomicBool,
}

/// What a station's main side found next.
enum Next {
    Job(usize, Box<dyn Reader>),
    Failed(usize, String),
    Done,
}

impl Batch<'_> {
    fn claim(&self, i: usize) -> bool {
        let mut t = self.taken.lock().expect("lock");
        !std::mem::replace(&mut t[i], true)
    }

    fn claim_next(&self) -> Option<usize> {
        let mut t = self.taken.lock().expect("lock");
        let i = t.iter().position(|x| !x)?;
        t[i] = true;
        Some(i)
    }

    fn all_taken(&self) -> bool {
        self.taken.lock().expect("lock").iter().all(|x| *x)
    }

    fn is_used(&self, number: &str) -> bool {
        self.used.lock().expect("lock").iter().any(|n| n == number)
    }

    /// An embedded card of a holder, which issuance must have made.
    fn sim_card(&self, prefix: &str, holder: &str, role: &str) -> std::result::Result<Box<dyn Reader>, String> {
        let name = format!("{prefix}-{holder}-{role}");
        if !card_path(&self.ctx.opts.data_dir, &name).exists() {
            return Err(format!(
                "there is no embedded card sim:{name} (issue the holder's cards first)"
            ));
        }
        SimReader::open(&self.ctx.opts.data_dir, &name, "blank", None)
            .map(|r| Box::new(r) as Box<dyn Reader>)
            .map_err(|e| e.to_string())
    }

    /// The next holder and main card for a station.
    fn next_main(&self, side: &Side, station: usize) -> Result<Next> {
        let spec = match side {
            Side::Sim(prefix) => {
                let Some(i) = self.claim_next() else {
                    return Ok(Next::Done);
                };
                return Ok(match self.sim_card(prefix, &self.holders[i].id, "main") {
                    Ok(r) => Next::Job(i, r),
                    Err(why) => Next::Failed(i, why),
                });
            }
            Side::Pcsc(spec) => spec,
        };
        // A PC/SC station: wait for a main card of a pending holder.
        let deadline = Instant::now() + self.wait;
        let mut told = None;
        loop {
            if self.all_taken() || self.abort.load(Ordering::SeqCst) {
                return Ok(Next::Done);
            }
            match self.ctx.open_named(spec) {
                Ok(mut r) => {
                    let st = CardClient::open(r.as_mut(), SessionOptions::default())?.status()?;
                    if !self.is_used(&st.card_number) {
                        let holder = self
                            .holders
                            .iter()
                            .position(|h| h.member_number.is_some() && h.member_number == st.member_number);
                        if let Some(i) = holder.filter(|i| self.claim(*i)) {
                            return Ok(Next::Job(i, r));
                        }
                        if told.as_ref() != Some(&st.card_number) && !self.ctx.json {
                            eprintln!(
                                "station {station}: card {} (member number {}) in {spec} is no pending holder's \
                                 main card; insert another",
                                st.card_number,
                                st.member_number.as_deref().unwrap_or("none")
                            );
                            told = Some(st.card_number);
                        }
                    }
                }
                Err(Error::NoCard(_)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() > deadline {
                return Ok(Next::Done);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The backup card for holder `i` at a station.
    fn backup_card(&self, side: &Side, i: usize) -> std::result::Result<Box<dyn Reader>, String> {
        let spec = match side {
            Side::Sim(prefix) => return self.sim_card(prefix, &self.holders[i].id, "backup"),
            Side::Pcsc(spec) => spec,
        };
        let deadline = Instant::now() + self.wait;
        let mut told = false;
        loop {
            match self.ctx.open_named(spec) {
                Ok(mut r) => {
                    let number = CardClient::open(r.as_mut(), SessionOptions::default())
                        .and_then(|mut c| c.card_number())
                        .map_err(|e| e.to_string())?;
                    if !self.is_used(&number) {
                        return Ok(r);
                    }
                }
                Err(Error::NoCard(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            if Instant::now() > deadline {
                return Err(format!("no backup card for holder {} in {spec}", self.holders[i].id));
            }
            if !told && !self.ctx.json {
                eprintln!("insert the backup card of holder {} into {spec}", self.holders[i].id);
                told = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Duplicate holder `i`'s cards; a vault failure ends the batch.
    fn duplicate_one(
        &self,
        i: usize,
        main_reader: &mut dyn Reader,
        backup_side: &Side,
        vault: &mut crate::vault::Vault,
    ) -> Result<HolderRecord> {
        let h = &self.holders[i];
        let mut rec = HolderRecord {
            holder: h.id.clone(),
            station: None,
            result: "failed".into(),
            reason: None,
            report: None,
            generated_elements: None,
        };
        let mut backup_reader = match self.backup_card(backup_side, i) {
            Ok(r) => r,
            Err(why) => {
                rec.reason = Some(why);
                return Ok(rec);
            }
        };
        let outcome = (|| -> Result<(DuplicateReport, Option<Vec<Secret>>)> {
            let mut main = CardClient::open(main_reader, self.ctx.session())?;
            let mut backup = CardClient::open(backup_reader.as_mut(), self.ctx.session())?;
            let (elements, generated) = match self.elements {
                Some(e) => (e.to_vec(), None),
                None => {
                    let e = generate_elements(main.key_state()?.group_size);
                    (e.clone(), Some(e))
                }
            };
            let opts = DuplicateOptions {
                main_pin: h.pin.clone(),
                backup_pin: h.pin.clone(),
                elements,
                backup_gets_public_key: self.backup_gets_public_key,
            };
            Ok((duplicate::duplicate(&mut main, &mut backup, &opts, vault)?, generated))
        })();
        match outcome {
            Ok((report, generated)) => {
                let mut used = self.used.lock().expect("lock");
                used.push(report.main_card.clone());
                used.push(report.backup_card.clone());
                rec.result = "duplicated".into();
                rec.generated_elements = generated.map(|g| g.iter().map(|e| to_hex(e)).collect());
                rec.report = Some(report);
            }
            Err(e @ Error::Vault { .. }) => return Err(e),
            Err(e) => rec.reason = Some(e.to_string()),
        }
        Ok(rec)
    }

    /// One station's loop.
    fn station(&self, number: usize, (main_side, backup_side): &(Side, Side)) -> Result<()> {
        let mut vault = self.ctx.vault()?;
        while !self.abort.load(Ordering::SeqCst) {
            let (i, mut rec) = match self.next_main(main_side, number)? {
                Next::Done => break,
                Next::Failed(i, why) => (
                    i,
                    HolderRecord {
                        holder: self.holders[i].id.clone(),
                        station: None,
                        result: "failed".into(),
                        reason: Some(why),
                        report: None,
                        generated_elements: None,
                    },
                ),
                Next::Job(i, mut reader) => {
                    self.bar.set_message(self.holders[i].id.clone());
                    (i, self.duplicate_one(i, reader.as_mut(), backup_side, &mut vault)?)
                }
            };
            rec.station = Some(number);
            self.records.lock().expect("lock").push((i, rec));
            self.bar.inc(1);
        }
        Ok(())
    }
}

fn run_batch(ctx: &Ctx, a: Args) -> Result<()> {
    let path = a.holders.as_ref().expect("batch mode");
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let stations: Vec<(Side, Side)> = a
        .main
        .iter()
        .zip(&a.backup)
        .map(|(m, b)| (Side::parse(m), Side::parse(b)))
        .collect();
    // A PC/SC station recognizes holders by member number: the file must have them.
    let pcsc = stations.iter().any(|(m, _)| matches!(m, Side::Pcsc(_)));
    let holders = issue::parse_holders(&text, if pcsc { IssueProfile::Pair } else { IssueProfile::Backup })?;
    let given = if a.elements == "generate" {
        None
    } else {
        let src: SecretSource = a.elements.parse().map_err(Error::Usage)?;
        Some(parse_elements(&src.read_all("key group elements 2..n (hex)")?)?)
    };
    // Create (and migrate) the vault once, before the stations open their own.
    drop(ctx.vault()?);
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(holders.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} holders  {msg}").expect("progress template"),
    );
    let batch = Batch {
        ctx,
        holders: &holders,
        elements: given.as_deref(),
        backup_gets_public_key: a.backup_gets_public_key,
        wait: ctx.opts.wait.unwrap_or(Duration::from_secs(60)),
        bar: &bar,
        taken: Mutex::new(vec![false; holders.len()]),
        used: Mutex::new(Vec::new()),
        records: Mutex::new(Vec::new()),
        abort: AtomicBool::new(false),
    };
    let failures: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = stations
            .iter()
            .enumerate()
            .map(|(n, st)| {
                let batch = &batch;
                s.spawn(move || {
                    let r = batch.station(n + 1, st);
                    if r.is_err() {
                        batch.abort.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Usage("a station thread panicked".into())))
                    .err()
            })
            .collect()
    });
    bar.finish_and_clear();
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    let mut records = batch.records.into_inner().expect("lock");
    // Holders no station reached (their cards never came).
    let seen: Vec<usize> = records.iter().map(|(i, _)| *i).collect();
    for (i, h) in holders.iter().enumerate().filter(|(i, _)| !seen.contains(i)) {
        records.push((
            i,
            HolderRecord {
                holder: h.id.clone(),
                station: None,
                result: "failed".into(),
                reason: Some(format!(
                    "the holder's cards were not presented within {} s",
                    batch.wait.as_secs()
                )),
                report: None,
                generated_elements: None,
            },
        ));
    }
    records.sort_by_key(|(i, _)| *i);
    let records: Vec<HolderRecord> = records.into_iter().map(|(_, r)| r).collect();
    let done = records.iter().filter(|r| r.result == "duplicated").count();
    let failed = records.len() - done;
    if ctx.json {
        print_json(&serde_json::json!({ "duplicated": done, "failed": failed, "holders": records }));
    } else {
        for r in &records {
            match &r.report {
                Some(rep) => println!(
                    "duplicated {:<16} main {} backup {} check value {}",
                    r.holder, rep.main_card, rep.backup_card, rep.check_value
                ),
                None => println!("failed     {:<16} {}", r.holder, r.reason.as_deref().unwrap_or("")),
            }
            if let Some(e) = &r.generated_elements {
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
