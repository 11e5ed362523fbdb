//! `cardvault issue`: batch issuance from a holder file (FIG. 11), on one
//! station or on several stations (reader pairs) working in parallel.

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use crate::workflow::issue::{self, IssueOptions, IssueProfile};
use crate::workflow::station::{CardSource, Station};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Stations: one station is -r READER (main cards) and --backup-reader READER (backup
cards; default: the same reader). Several stations issue in parallel, each taking
the next holder of the file: give one --main per station, and with --profile pair
one --backup per station, in the same order:

  cardvault issue --profile pair --holders h.csv --issuer ./issuer \\
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
    /// The issuer (`cardvault issuer init`): its operator key opens the SCP11a
    /// session on each blank card, its root key signs the cards' registration
    /// certificates, and its root is installed on them. Default for embedded
    /// sim: cards: the built-in test issuer.
    #[arg(long, value_name = "DIR")]
    issuer: Option<PathBuf>,
    /// The issuer domain (`cardvault domain init`) whose card-common key
    /// every card gets: rebuilt in memory from the shares of the custodians
    /// present (--share, --passphrase) and loaded in the issuer's SCP11a
    /// session. Required unless --no-domain.
    #[arg(long, value_name = "DIR", conflicts_with = "no_domain")]
    domain: Option<PathBuf>,
    /// A custodian present for --domain: the number of their share (repeat
    /// once per custodian, as many as the domain's threshold; default: asked
    /// on the terminal).
    #[arg(long, value_name = "INDEX", requires = "domain")]
    share: Vec<u8>,
    /// That custodian's passphrase, one per --share in order: prompt,
    /// env:VAR or file:PATH (file:/dev/fd/N reads a descriptor). Default: prompt.
    #[arg(long, value_name = "SOURCE", requires = "domain")]
    passphrase: Vec<SecretSource>,
    /// Issue cards without a domain key: they make no backups and restore
    /// no other card's backups, ever (the key is loaded only at issuance).
    #[arg(long)]
    no_domain: bool,
    /// The issuer whose root the factory installed on the blank cards, when
    /// it is not --issuer: it opens the session and installs --issuer's root.
    /// Default for embedded sim: cards: the built-in test issuer.
    #[arg(long, value_name = "DIR")]
    factory_issuer: Option<PathBuf>,
    /// The issuer registrar root (PEM) the cards trust for storing
    /// authorizations (`cardvault registrar init --kind issuer`), installed
    /// with --data-registrar. Default for embedded sim: cards: the built-in
    /// test registrars; PC/SC cards get none without these options.
    #[arg(long, value_name = "FILE.pem", requires = "data_registrar")]
    issuer_registrar: Option<PathBuf>,
    /// The data registrar root (PEM), installed with --issuer-registrar.
    #[arg(long, value_name = "FILE.pem", requires = "issuer_registrar")]
    data_registrar: Option<PathBuf>,
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
            main: Some(CardSource::from_spec(&spec)),
            backup: a.backup_reader.as_deref().map(CardSource::from_spec),
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
            main: a.main.get(i).map(|s| CardSource::from_spec(s)),
            backup: a.backup.get(i).map(|s| CardSource::from_spec(s)),
        })
        .collect())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.holders).map_err(|e| Error::input(format!("reading {}", a.holders.display()), e))?;
    let holders = issue::parse_holders(&text, a.profile)?;
    let stations = stations(ctx, &a)?;
    issue::check_stations(&stations, a.profile)?;
    let domain = match (&a.domain, a.no_domain) {
        (None, false) => {
            return Err(Error::Usage(
                "issue: cards get their issuer domain's card-common key at issuance; give --domain DIR \
                 (from `cardvault domain init`) with the custodians' --share/--passphrase, or --no-domain \
                 for cards that never make or take backups"
                    .into(),
            ))
        }
        (None, true) => None,
        (Some(dir), _) => {
            // Rebuilt before any card is touched: too few shares or a wrong
            // passphrase stop here, and no card gets anything.
            let given = super::domain::custodians_present(dir, &a.share, &a.passphrase)?;
            Some(std::sync::Arc::new(crate::domain::rebuild_key(dir, &given)?))
        }
    };
    let issuer = a.issuer.as_deref().map(super::pin::issuer_auth).transpose()?;
    let factory_issuer = a.factory_issuer.as_deref().map(super::pin::issuer_auth).transpose()?;
    let registrars = match (&a.issuer_registrar, &a.data_registrar) {
        (Some(i), Some(d)) => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::input(format!("reading {}", p.display()), e));
            Some(std::sync::Arc::new(issue::RegistrarRootsDer::from_pem(
                &read(i)?,
                &read(d)?,
            )?))
        }
        _ => None,
    };
    let opts = IssueOptions {
        registrars,
        issuer,
        factory_issuer,
        key_group_size: a.key_group_size,
        no_export_after_backup: a.no_export_after_backup,
        domain,
    };
    let total = (holders.len() * a.profile.roles().len()) as u64;
    let bar = super::progress(ctx, total, "cards");
    let events = super::station_events(ctx, &bar, &|_| {});
    // Issuing makes the blank embedded cards of a sim: feeder.
    let readers = crate::reader::ReaderOptions {
        create_cards: true,
        ..ctx.opts.clone()
    };
    let env = super::station_env(ctx, &readers, &events);
    let cards = issue::issue_batch(&env, &stations, &holders, a.profile, &opts);
    bar.finish_and_clear();
    let cards = cards?;
    let issued = cards.iter().filter(|c| c.is_issued()).count();
    let rejected = cards.len() - issued;
    // Which domain generation the issued cards carry (null: --no-domain).
    let domain = opts.domain.as_ref().map(|d| &d.info);
    if ctx.json {
        let domain = domain.map(|d| serde_json::json!({ "id": d.domain_id, "generation": d.generation }));
        print_json(&serde_json::json!({ "issued": issued, "rejected": rejected, "cards": cards, "domain": domain }));
    } else {
        for c in &cards {
            println!(
                "{:<9} {:<16} {:<7} {:<18} {}{}",
                c.result(),
                c.holder,
                c.role,
                c.card_number().unwrap_or("-"),
                c.reader,
                c.reason().map(|x| format!("  ({x})")).unwrap_or_default()
            );
        }
        match domain {
            Some(d) => println!(
                "{issued} issued, {rejected} rejected; domain {} generation {}",
                d.domain_id, d.generation
            ),
            None => println!("{issued} issued, {rejected} rejected; no domain key (--no-domain)"),
        }
    }
    if rejected > 0 {
        return Err(Error::Refused(format!("{rejected} card(s) rejected; see the report")));
    }
    Ok(())
}
