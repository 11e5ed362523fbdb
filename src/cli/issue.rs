//! `cardvault issue`: batch issuance from a holder file (FIG. 11).

use super::{client, print_json, Ctx};
use crate::error::{Error, Result};
use crate::reader::ReaderSpec;
use crate::secret::SecretSource;
use crate::transport::sim::SimReader;
use crate::transport::Reader;
use crate::vault::AuditEvent;
use crate::workflow::issue::{self, Holder, IssueOptions, IssueProfile, IssueRecord};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

#[derive(clap::Args, Debug)]
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
    /// Reader for backup cards when issuing pairs (default: the same reader).
    #[arg(long, value_name = "READER")]
    backup_reader: Option<String>,
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
    fn next(&self, ctx: &Ctx, holder: &str, role: &str, used: &[String]) -> Result<Box<dyn Reader>> {
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
                    let number = client(r.as_mut(), false)?.card_number()?;
                    if !used.contains(&number) {
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

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.holders).map_err(|e| Error::io(format!("reading {}", a.holders.display()), e))?;
    let holders = issue::parse_holders(&text, a.profile)?;
    let spec = ctx.reader.clone().ok_or_else(|| {
        Error::Usage("issue needs -r READER (a PC/SC reader, or sim:PREFIX for embedded blank cards)".into())
    })?;
    let admin_key = super::pin::admin_key(&a.admin_key)?;
    let opts = IssueOptions {
        admin_key,
        key_group_size: a.key_group_size,
        no_export_after_backup: a.no_export_after_backup,
    };
    let main_feeder = Feeder::from_spec(&spec);
    let backup_feeder = a.backup_reader.as_deref().map(Feeder::from_spec);
    let roles: &[&str] = match a.profile {
        IssueProfile::Main => &["main"],
        IssueProfile::Backup => &["backup"],
        IssueProfile::Pair => &["main", "backup"],
    };
    let mut vault = ctx.vault()?;
    let total = (holders.len() * roles.len()) as u64;
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cards  {msg}").expect("progress template"),
    );
    let mut records = Vec::new();
    let mut used: Vec<String> = Vec::new();
    for h in &holders {
        // Key 1 from the record, or generated for this holder and stored nowhere.
        let key1 = match &h.key1 {
            Some(k) => k.clone(),
            None => Zeroizing::new(applet_sim::crypto::random::<32>().to_vec()),
        };
        for role in roles {
            bar.set_message(format!("{} ({role})", h.id));
            let feeder = match (*role, &backup_feeder) {
                ("backup", Some(f)) => f,
                _ => &main_feeder,
            };
            let rec = issue_card(ctx, feeder, h, role, &key1, &opts, &used);
            if let Some(n) = &rec.card_number {
                used.push(n.clone());
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
            records.push(rec);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
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
    used: &[String],
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
    let outcome = client(reader.as_mut(), ctx.trace).and_then(|mut c| {
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
