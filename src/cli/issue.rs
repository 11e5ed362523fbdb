//! `cardvault issue`: batch issuance from a holder file (FIG. 11), on one
//! station or on several stations (reader pairs) working in parallel.

use super::{print_json, Ctx};
use crate::card::{CardClient, SessionOptions};
use crate::error::{Error, Result};
use crate::reader::ReaderSpec;
use crate::secret::SecretSource;
use crate::transport::sim::SimReader;
use crate::transport::Reader;
use crate::vault::AuditEvent;
use crate::workflow::issue::{self, Holder, IssueOptions, IssueProfile, IssueRecord};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Stations: one station is -r READER (main cards) and --backup-reader READER (backup
cards; default: the same reader). Several stations issue in parallel, each taking
the next holder of the file: give one --main per station, and with --profile pair
one --backup per station, in the same order:

  cardvault issue --profile pair --holders h.csv --admin-key file:admin.hex \\
      --main 'Virtual PCD 00 00' --backup 'Virtual PCD 00 01' \\
      --main 'Virtual PCD 01 00' --backup 'Virtual PCD 01 01'

sim:PREFIX is a feeder of embedded blank cards named PREFIX-HOLDER-ROLE; stations
may share one prefix. The report lists the holders in file order.")]
pub struct Args {
    /// Which cards to issue per holder.
    #[arg(long, value_enum)]
    profile: IssueProfile,
    /// Holder file (CSV with a header: holder,pin,member_number,expiry,key1).
    #[arg(long, value_name = "FILE.csv")]
    holders: PathBuf,
    /// Issuer admin key (hex, 32 bytes) of the blank cards: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    admin_key: SecretSource,
    /// Number of key group elements (1 to 8).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    key_group_size: u8,
    /// Main cards refuse any key take-out once their backup exists.
    #[arg(long)]
    no_export_after_backup: bool,
    /// Reader for backup cards when issuing pairs on one station (default: the same reader).
    #[arg(long, value_name = "READER", conflicts_with_all = ["main", "backup"])]
    backup_reader: Option<String>,
    /// A station's reader for main cards (repeat once per station; replaces -r).
    #[arg(long = "main", value_name = "READER")]
    main: Vec<String>,
    /// A station's reader for backup cards (repeat, in the order of --main;
    /// default: the station's --main reader).
    #[arg(long = "backup", value_name = "READER")]
    backup: Vec<String>,
}

/// Where blank cards come from.
enum Feeder {
    /// Embedded: a fresh blank card per holder and role, named PREFIX-HOLDER-ROLE.
    Sim { prefix: String },
    /// A PC/SC reader: the operator (or a feeder) puts in the next blank card.
    Pcsc { spec: String },
}

impl Feeder {
    fn from_spec(spec: &str) -> Feeder {
        match ReaderSpec::parse(spec) {
            ReaderSpec::Sim(prefix) => Feeder::Sim { prefix },
            _ => Feeder::Pcsc { spec: spec.to_string() },
        }
    }

    /// The next blank card. `used` holds card numbers already handled in this batch.
    fn next(&self, ctx: &Ctx, holder: &str, role: &str, used: &Mutex<Vec<String>>) -> Result<Box<dyn Reader>> {
        match self {
            Feeder::Sim { prefix } => {
                let name = format!("{prefix}-{holder}-{role}");
                Ok(Box::new(SimReader::open(&ctx.opts.data_dir, &name, "blank", None)?))
            }
            Feeder::Pcsc { spec } => {
                let deadline = Instant::now() + ctx.opts.wait.unwrap_or(Duration::from_secs(60));
                let mut told = false;
                loop {
                    let mut r = ctx.open_named(spec)?;
                    let number = CardClient::open(r.as_mut(), SessionOptions::default())?.card_number()?;
                    if !used.lock().expect("lock").contains(&number) {
                        return Ok(r);
                    }
                    if Instant::now() > deadline {
                        return Err(Error::Reader(format!(
                            "no new card in '{spec}' for holder {holder} ({role}); card {number} was already handled"
                        )));
                    }
                    if !told && !ctx.json {
                        eprintln!(
                            "insert the next blank card for holder {holder} ({role}) into {}",
                            r.name()
                        );
                        told = true;
                    }
                    drop(r);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// One station: where its main and its backup cards come from.
struct Station {
    main: Option<Feeder>,
    backup: Option<Feeder>,
}

impl Station {
    fn feeder(&self, role: &str) -> Option<&Feeder> {
        match role {
            "backup" => self.backup.as_ref().or(self.main.as_ref()),
            _ => self.main.as_ref(),
        }
    }
}

/// The stations from the command line: -r [--backup-reader], or --main/--backup pairs.
fn stations(ctx: &Ctx, a: &Args) -> Result<Vec<Station>> {
    if a.main.is_empty() && a.backup.is_empty() {
        let spec = ctx.reader.clone().ok_or_else(|| {
            Error::Usage(
                "issue needs -r READER or --main READER (a PC/SC reader, or sim:PREFIX for embedded blank cards)"
                    .into(),
            )
        })?;
        return Ok(vec![Station {
            main: Some(Feeder::from_spec(&spec)),
            backup: a.backup_reader.as_deref().map(Feeder::from_spec),
        }]);
    }
    if !a.main.is_empty() && !a.backup.is_empty() && a.main.len() != a.backup.len() {
        return Err(Error::Usage(format!(
            "give one --backup per --main ({} --main, {} --backup): each station is a --main/--backup pair",
            a.main.len(),
            a.backup.len()
        )));
    }
    if a.profile == IssueProfile::Main && !a.backup.is_empty() {
        return Err(Error::Usage(
            "--profile main issues no backup cards; drop --backup".into(),
        ));
    }
    if a.profile == IssueProfile::Pair && a.main.is_empty() {
        return Err(Error::Usage("--profile pair needs a --main reader per station".into()));
    }
    let n = a.main.len().max(a.backup.len());
    Ok((0..n)
        .map(|i| Station {
            main: a.main.get(i).map(|s| Feeder::from_spec(s)),
            backup: a.backup.get(i).map(|s| Feeder::from_spec(s)),
        })
        .collect())
}

/// What the stations share while they work through the holder file.
struct Batch<'a> {
    ctx: &'a Ctx,
    holders: &'a [Holder],
    roles: &'a [&'a str],
    opts: &'a IssueOptions,
    bar: &'a indicatif::ProgressBar,
    /// Index of the next holder nobody has taken.
    next: AtomicUsize,
    /// Set when a station stopped on a vault error: the others stop too.
    abort: AtomicBool,
    /// Card numbers handled in this batch (a PC/SC feeder waits for a new card).
    used: Mutex<Vec<String>>,
    /// (holder index, role index, record).
    records: Mutex<Vec<(usize, usize, IssueRecord)>>,
}

impl Batch<'_> {
    /// One station's loop: take the next holder, issue its cards, record them.
    fn station(&self, st: &Station) -> Result<()> {
        let mut vault = self.ctx.vault()?;
        while !self.abort.load(Ordering::SeqCst) {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(h) = self.holders.get(i) else {
                break;
            };
            // Key 1 from the record, or generated for this holder and stored nowhere.
            let key1 = match &h.key1 {
                Some(k) => k.clone(),
                None => Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()),
            };
            for (ri, role) in self.roles.iter().enumerate() {
                self.bar.set_message(format!("{} ({role})", h.id));
                let feeder = st.feeder(role).expect("stations are checked for every role");
                let rec = issue_card(self.ctx, feeder, h, role, &key1, self.opts, &self.used);
                if let Some(n) = &rec.card_number {
                    self.used.lock().expect("lock").push(n.clone());
                }
                vault.audit(AuditEvent {
                    event: "issue",
                    card: rec.card_number.as_deref().unwrap_or("-"),
                    peer: None,
                    result: rec
                        .reason
                        .as_deref()
                        .map(|r| format!("rejected: {r}"))
                        .as_deref()
                        .unwrap_or("issued"),
                    details: serde_json::json!({ "holder": h.id, "role": role }),
                })?;
                if let Some(n) = &rec.card_number {
                    if rec.result == "issued" {
                        vault.note_card(n, role)?;
                    }
                }
                self.records.lock().expect("lock").push((i, ri, rec));
                self.bar.inc(1);
            }
        }
        Ok(())
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.holders).map_err(|e| Error::io(format!("reading {}", a.holders.display()), e))?;
    let holders = issue::parse_holders(&text, a.profile)?;
    let stations = stations(ctx, &a)?;
    let roles: &[&str] = match a.profile {
        IssueProfile::Main => &["main"],
        IssueProfile::Backup => &["backup"],
        IssueProfile::Pair => &["main", "backup"],
    };
    if stations.iter().any(|s| roles.iter().any(|r| s.feeder(r).is_none())) {
        return Err(Error::Usage(
            "every station needs a reader for the cards it issues".into(),
        ));
    }
    let admin_key = super::pin::admin_key(&a.admin_key)?;
    let opts = IssueOptions {
        admin_key,
        key_group_size: a.key_group_size,
        no_export_after_backup: a.no_export_after_backup,
    };
    // Create (and migrate) the vault once, before the stations open their own.
    drop(ctx.vault()?);
    let total = (holders.len() * roles.len()) as u64;
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cards  {msg}").expect("progress template"),
    );
    let batch = Batch {
        ctx,
        holders: &holders,
        roles,
        opts: &opts,
        bar: &bar,
        next: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
        used: Mutex::new(Vec::new()),
        records: Mutex::new(Vec::new()),
    };
    let failures: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = stations
            .iter()
            .map(|st| {
                let batch = &batch;
                s.spawn(move || {
                    let r = batch.station(st);
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
    records.sort_by_key(|(i, ri, _)| (*i, *ri));
    let records: Vec<IssueRecord> = records.into_iter().map(|(_, _, r)| r).collect();
    let issued = records.iter().filter(|r| r.result == "issued").count();
    let rejected = records.len() - issued;
    if ctx.json {
        print_json(&serde_json::json!({ "issued": issued, "rejected": rejected, "cards": records }));
    } else {
        for r in &records {
            println!(
                "{:<9} {:<16} {:<7} {:<18} {}{}",
                r.result,
                r.holder,
                r.role,
                r.card_number.as_deref().unwrap_or("-"),
                r.reader,
                r.reason.as_deref().map(|x| format!("  ({x})")).unwrap_or_default()
            );
        }
        println!("{issued} issued, {rejected} rejected");
    }
    if rejected > 0 {
        return Err(Error::Refused(format!("{rejected} card(s) rejected; see the report")));
    }
    Ok(())
}

fn issue_card(
    ctx: &Ctx,
    feeder: &Feeder,
    h: &Holder,
    role: &str,
    key1: &[u8],
    opts: &IssueOptions,
    used: &Mutex<Vec<String>>,
) -> IssueRecord {
    let mut rec = IssueRecord {
        holder: h.id.clone(),
        role: role.to_string(),
        reader: String::new(),
        card_number: None,
        result: "rejected".into(),
        reason: None,
    };
    let mut reader = match feeder.next(ctx, &h.id, role, used) {
        Ok(r) => r,
        Err(e) => {
            rec.reason = Some(e.to_string());
            return rec;
        }
    };
    rec.reader = reader.name().to_string();
    let outcome = CardClient::open(reader.as_mut(), ctx.session()).and_then(|mut c| {
        rec.card_number = c.card_number().ok();
        issue::personalize(&mut c, h, role, key1, opts)
    });
    match outcome {
        Ok(number) => {
            rec.card_number = Some(number);
            rec.result = "issued".into();
        }
        Err(e) => rec.reason = Some(e.to_string()),
    }
    rec
}
