//! `cardvault backup | restore | authorize-restore | vault ... | purse ...`

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use crate::signer::IssuerKeySource;
use crate::workflow::backup::{self, RestoreAuthorization, RestoreJob, RestoreOutcome, RestoreRefusal, RestoreRequest};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Make a full backup (default: differential once a completed full backup exists).
    #[arg(long)]
    full: bool,
    /// Where the PIN comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").args(["from_card", "holder"])))]
pub struct RestoreArgs {
    /// Restore the chain ending at this vault backup id.
    #[arg(long, value_name = "ID", conflicts_with = "latest")]
    backup: Option<i64>,
    /// Restore the newest backup (the default).
    #[arg(long)]
    latest: bool,
    /// Restore another card's backup onto this one (replacement card).
    #[arg(long, value_name = "NUMBER")]
    from_card: Option<String>,
    /// As --from-card, for the holder's (lost) main card: member number,
    /// holder name or card number (`cardvault holder show`).
    #[arg(long, value_name = "HOLDER")]
    holder: Option<String>,
    /// The issuer's authorization file for --from-card or --holder.
    #[arg(long, value_name = "FILE", requires = "source", conflicts_with = "request")]
    authorization: Option<PathBuf>,
    /// Write a restore request (with a fresh challenge from this card) for the
    /// issuer (another card's backup) and for the data providers whose
    /// `authorized` applications it lists, and stop.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// A data provider's agreement (`cardvault provider authorize-restore`)
    /// to write its applications; repeat for several providers. Without one,
    /// a provider's `authorized` application is left out and reported.
    #[arg(long, value_name = "FILE", conflicts_with = "request")]
    agreement: Vec<PathBuf>,
    /// Issuer override of the rollback check (restoring an older backup); needs
    /// --issuer.
    #[arg(long)]
    allow_rollback: bool,
    /// Issuer operator credentials (`cardvault issuer init`): the SCP11a
    /// issuer session of --allow-rollback.
    #[arg(long, value_name = "DIR")]
    issuer: Option<PathBuf>,
    /// Show what would be restored (chain, pages, values reset) and every
    /// refusal the terminal foresees (rollback, domain, authorization), then
    /// stop: no PIN, nothing sent to the card but reads.
    #[arg(long, conflicts_with = "request")]
    dry_run: bool,
    /// Where the PIN comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
}

#[derive(clap::Args, Debug)]
pub struct AuthorizeArgs {
    /// The request file written by `restore --request`.
    #[arg(long, value_name = "FILE")]
    request: PathBuf,
    /// Issuer signing key: a hex P-256 private scalar from prompt, env:VAR or
    /// file:PATH, or a key in a PKCS#11 token, pkcs11:token=LABEL;object=LABEL
    /// (PIN from pin-source= in the URI or CARDVAULT_PKCS11_PIN).
    #[arg(long, value_name = "SOURCE|URI")]
    issuer_key: IssuerKeySource,
    /// The signer certificate (PEM) of --issuer-key, under the issuer root
    /// installed on the cards (`signer.pem` of `cardvault issuer init`).
    #[arg(long, value_name = "FILE")]
    signer_cert: PathBuf,
    /// The issuer root certificate(s) (PEM) the target card's certificate
    /// must verify under.
    #[arg(long, value_name = "FILE")]
    issuer_root: PathBuf,
    /// File to write the signed restore authorization to.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// List backups.
    List {
        /// Only the backups of this card number.
        #[arg(long, value_name = "NUMBER", conflicts_with = "holder")]
        card: Option<String>,
        /// Only the backups of this holder's cards (member number, name or card number).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
    },
    /// Show one backup and the chain that restores it.
    Show {
        /// The backup's id (`vault list`).
        id: i64,
    },
    /// Check structure, blobs, record counts, chains and the audit hash chain.
    Verify,
    /// Copy backups into a new vault file (all, or one card's).
    Export {
        /// Only the backups of this card number.
        #[arg(long, value_name = "NUMBER", conflicts_with = "holder")]
        card: Option<String>,
        /// Only the backups of this holder's cards (member number, name or card number).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
        /// File to write the exported backups to.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Add the backups of an exported vault file that this vault lacks.
    Import {
        /// A file written by `vault export`.
        file: PathBuf,
    },
}

fn bar(ctx: &Ctx, what: &str) -> indicatif::ProgressBar {
    super::progress(ctx, 0, what)
}

pub fn run_backup(ctx: &Ctx, a: BackupArgs) -> Result<()> {
    let pin = a.pin.read("PIN")?;
    let mut vault = ctx.vault_or_create()?;
    let mut reader = ctx.open_reader()?;
    let mut card = CardClient::open(reader.as_mut(), ctx.session())?;
    card.verify_pin(&pin)?;
    let pb = bar(ctx, "pages");
    let rep = backup::backup(&mut card, &mut vault, a.full, &|n, t| {
        pb.set_length(t);
        pb.set_position(n);
    })?;
    pb.finish_and_clear();
    if ctx.json {
        print_json(&rep);
    } else {
        println!(
            "backup {} of card {}: #{} {} ({} pages{}), {} records, {} APDUs",
            rep.backup_id,
            rep.card_number,
            rep.counter,
            rep.kind,
            rep.pages,
            if rep.kind == cardvault_proto::backup::BackupKind::Differential {
                format!(" changed since #{}", rep.base_counter)
            } else {
                String::new()
            },
            rep.records,
            rep.apdus
        );
    }
    Ok(())
}

pub fn run_restore(ctx: &Ctx, a: RestoreArgs) -> Result<()> {
    // Files first: a bad authorization file costs no PIN try.
    let auth: Option<RestoreAuthorization> = match &a.authorization {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::input(format!("reading {}", p.display()), e))?;
            Some(serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    let mut agreements: Vec<backup::RestoreAgreement> = Vec::new();
    for p in &a.agreement {
        let text = std::fs::read_to_string(p).map_err(|e| Error::input(format!("reading {}", p.display()), e))?;
        agreements.push(serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?);
    }
    let rollback_issuer = match (a.allow_rollback, a.issuer.as_deref()) {
        (true, None) => return Err(Error::Usage("--allow-rollback needs --issuer DIR".into())),
        (true, Some(issuer)) => Some(super::pin::issuer_auth(issuer)?),
        (false, _) => None,
    };
    // The source card: given, or the holder's newest main card.
    let from_card = match &a.holder {
        Some(h) => Some(crate::workflow::holders::lost_main_card(&ctx.vault()?, h)?),
        None => a.from_card.clone(),
    };
    if a.dry_run {
        return dry_run(ctx, &a, from_card.as_deref(), auth.as_ref());
    }
    let pin = a.pin.read("PIN")?;
    let mut vault = ctx.vault()?;
    let mut reader = ctx.open_reader()?;
    let mut card = CardClient::open(reader.as_mut(), ctx.session())?;
    // The value applications and their balances, to announce a reset.
    let values_before: Vec<(crate::card::Application, u32)> = {
        let mut v = Vec::new();
        for app in card.applications()?.into_iter().filter(|x| x.value && !x.restored) {
            let balance = card.balance(app.id)?;
            v.push((app, balance));
        }
        v
    };
    let job = RestoreJob {
        from_card: from_card.as_deref(),
        backup_id: a.backup,
        authorization: auth.as_ref(),
        agreements: &agreements,
        request_only: a.request.is_some(),
        pin: &pin,
        rollback_issuer: rollback_issuer.as_ref(),
    };
    let pb = bar(ctx, "blocks");
    let outcome = backup::run_restore(&mut card, &mut vault, &job, &|n, t| {
        pb.set_length(t);
        pb.set_position(n);
    });
    pb.finish_and_clear();
    let outcome = outcome.map_err(|e| match e {
        Error::Restore(RestoreRefusal::SourceIsTarget) => {
            Error::Usage("--from-card names this very card; leave it out for a same-card restore".into())
        }
        Error::Restore(RestoreRefusal::NeedsAuthorization { source_card, target }) => Error::Usage(format!(
            "restoring card {source_card}'s backup onto card {target} needs an issuer authorization: \
             run with --request FILE, have the issuer sign it, then pass --authorization FILE"
        )),
        e => e,
    })?;
    let rep = match outcome {
        RestoreOutcome::Requested(req) => {
            let path = a.request.as_ref().expect("request_only comes from --request");
            std::fs::write(path, serde_json::to_string_pretty(&req).expect("json"))
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            if ctx.json {
                print_json(&req);
            } else {
                println!(
                    "restore request written to {} (card {} backup #{} onto card {}){}",
                    path.display(),
                    req.source_card,
                    req.counter,
                    req.target_card,
                    if req.source_card != req.target_card {
                        "; the issuer signs it with `cardvault authorize-restore`"
                    } else {
                        ""
                    }
                );
                for app in &req.authorized_applications {
                    println!(
                        "application {} ({}) is {}'s: written only if it agrees \
                         (`cardvault provider authorize-restore`), else left out",
                        app.application, app.name, app.provider
                    );
                }
            }
            return Ok(());
        }
        RestoreOutcome::Restored(rep) => rep,
    };
    // Value applications the restore touched: the card reset their value.
    let restored: Vec<u8> = card
        .applications()?
        .iter()
        .filter(|x| x.value && x.restored)
        .map(|x| x.id)
        .collect();
    let value_reset: Vec<serde_json::Value> = values_before
        .iter()
        .filter(|(app, _)| restored.contains(&app.id))
        .map(|(app, before)| serde_json::json!({ "app": app.id, "name": app.name, "before": before, "after": 0 }))
        .collect();
    // Wallet items are never in a backup either: the source card's deposited
    // items come back from their safes by a withdrawal.
    let in_safes: Vec<crate::vault::CertificateCopy> = if value_reset.is_empty() {
        Vec::new()
    } else {
        vault
            .wallet_certificates(Some(&rep.source_card))?
            .into_iter()
            .filter(|c| c.withdrawn_at.is_none())
            .collect()
    };
    if ctx.json {
        let mut v = serde_json::to_value(&rep).expect("report serializes");
        v["value_reset"] = value_reset.into();
        v["wallet_in_safes"] = in_safes
            .iter()
            .map(|c| serde_json::json!({ "item": c.item_id, "safe": c.safe_address }))
            .collect::<Vec<_>>()
            .into();
        print_json(&v);
    } else {
        println!(
            "restored card {}'s backup chain {:?} onto card {} ({}): {} pages written, {} APDUs{}",
            rep.source_card,
            rep.chain,
            rep.target_card,
            rep.mode,
            rep.pages_written,
            rep.apdus,
            if rep.rollback_override {
                " (rollback override by the issuer, audited)"
            } else {
                ""
            }
        );
        for (app, before) in values_before.iter().filter(|(app, _)| restored.contains(&app.id)) {
            println!(
                "value reset: {} (application {}) is never restored from a backup; the card reset it from {before} to 0 \
                 (the issuer loads the holder's value again)",
                app.name, app.id
            );
        }
        if !value_reset.is_empty() {
            if in_safes.is_empty() {
                println!(
                    "wallet: items are not restored from a backup either; items deposited into a safe come back \
                     by `cardvault wallet withdraw ITEM --from-vault --safe S`"
                );
            } else {
                println!(
                    "wallet: {} items deposited from card {} are in their safes; they come back by {}:",
                    in_safes.len(),
                    rep.source_card,
                    if rep.source_card == rep.target_card {
                        "`cardvault wallet withdraw ITEM --safe S`"
                    } else {
                        "`cardvault wallet withdraw ITEM --from-vault --safe S` (onto another card, with the issuer's \
                         authorization) or `cardvault replace --safe S`"
                    }
                );
                for c in &in_safes {
                    println!("  item {} in safe {}", c.item_id, c.safe_address);
                }
            }
        }
        for app in &rep.agreed {
            println!(
                "restored: application {} ({}) of {}, with its provider's agreement",
                app.application, app.name, app.provider
            );
        }
        for app in &rep.left_out {
            println!(
                "left out: application {} ({}) of {}: {}",
                app.application, app.name, app.provider, app.reason
            );
        }
    }
    Ok(())
}

/// `restore --dry-run`: what would be restored, and every refusal the
/// terminal foresees; reads only, no PIN.
fn dry_run(ctx: &Ctx, a: &RestoreArgs, from_card: Option<&str>, auth: Option<&RestoreAuthorization>) -> Result<()> {
    let vault = ctx.vault()?;
    let mut reader = ctx.open_reader()?;
    let mut card = CardClient::open(reader.as_mut(), ctx.session())?;
    let target = card.card_number()?;
    let source = from_card.unwrap_or(&target).to_string();
    let last = backup::choose_backup(&vault, &source, a.backup, auth)?;
    let chain = vault.chain_to(&last)?;
    let p = crate::workflow::restore_check::preview(&mut card, &vault, &chain, auth, a.allow_rollback)?;
    if ctx.json {
        print_json(&p);
    } else {
        let counters: Vec<String> = p.chain.iter().map(|b| format!("#{}", b.counter)).collect();
        println!(
            "would restore card {}'s backup {} onto card {} ({}): {} pages",
            p.source_card,
            counters.join(" + "),
            p.target_card,
            p.mode,
            p.pages
        );
        for b in &p.chain {
            println!(
                "  backup {:>4}  #{:<4} {:<12} {:>4} pages  {}",
                b.id, b.counter, b.kind, b.pages, b.created_at
            );
        }
        for v in &p.value_reset {
            println!(
                "  value reset: {} (application {}) would go from {} to 0 (value is never restored)",
                v.name, v.app, v.balance
            );
        }
        if p.refusals.is_empty() {
            println!("the card would accept it (dry run: nothing was sent)");
        } else {
            for r in &p.refusals {
                println!("  REFUSED: {r}");
            }
        }
    }
    if p.refusals.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "the restore would be refused ({} reason(s) above); nothing was sent",
            p.refusals.len()
        )))
    }
}

/// The issuer's authorization signer: its certificate (PEM) read from
/// `cert` first, then its key from its secret source or the PKCS#11 token
/// opened and logged in (module from the URI, the environment or config.toml).
pub(crate) fn read_issuer_signer(
    ctx: &Ctx,
    source: &IssuerKeySource,
    cert: &std::path::Path,
) -> Result<crate::issuer::IssuerSigner> {
    let pem = std::fs::read(cert).map_err(|e| Error::input(format!("reading {}", cert.display()), e))?;
    let signer = source.open(ctx.opts.config.pkcs11.module.as_deref())?;
    crate::issuer::IssuerSigner::with_signer(signer, &pem)
}

pub fn run_authorize(ctx: &Ctx, a: AuthorizeArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.request).map_err(|e| Error::input(format!("reading {}", a.request.display()), e))?;
    let req: RestoreRequest =
        serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", a.request.display())))?;
    if req.version != backup::REQUEST_VERSION {
        return Err(Error::Usage(format!(
            "request version {} is not supported (version {} names the target card's certificate; make the request again)",
            req.version,
            backup::REQUEST_VERSION
        )));
    }
    let pem =
        std::fs::read(&a.issuer_root).map_err(|e| Error::input(format!("reading {}", a.issuer_root.display()), e))?;
    let roots = openssl::x509::X509::stack_from_pem(&pem)
        .ok()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::Usage(format!("{}: no PEM certificate", a.issuer_root.display())))?;
    // Check first (vault, revocation, target certificate), then sign.
    crate::workflow::authorize::check_restore_request(&ctx.vault()?, &req, &roots)?;
    let signer = read_issuer_signer(ctx, &a.issuer_key, &a.signer_cert)?;
    let auth = backup::sign_authorization(&req, &signer)?;
    if a.output.exists() {
        return Err(Error::Usage(format!("{} already exists", a.output.display())));
    }
    std::fs::write(&a.output, serde_json::to_string_pretty(&auth).expect("json"))
        .map_err(|e| Error::io(format!("writing {}", a.output.display()), e))?;
    if ctx.json {
        print_json(&auth);
    } else {
        println!(
            "authorized: card {} backup #{} onto card {} -> {}",
            req.source_card,
            req.counter,
            req.target_card,
            a.output.display()
        );
    }
    Ok(())
}

pub fn run_vault(ctx: &Ctx, c: VaultCommand) -> Result<()> {
    let mut vault = match c {
        VaultCommand::Import { .. } => ctx.vault_or_create()?,
        _ => ctx.vault()?,
    };
    match c {
        VaultCommand::List { card, holder } => {
            let rows = match holder {
                Some(h) => {
                    let h = crate::workflow::holders::find(&vault, &h)?;
                    let mut rows = Vec::new();
                    for c in &h.cards {
                        rows.extend(vault.list_backups(Some(&c.card_number))?);
                    }
                    rows
                }
                None => vault.list_backups(card.as_deref())?,
            };
            if ctx.json {
                print_json(&serde_json::json!({ "backups": rows }));
            } else {
                if rows.is_empty() {
                    println!("no backups");
                }
                for r in rows {
                    println!(
                        "{:>5}  card {:<18} #{:<5} {:<12} base #{:<5} {:>5} pages  {}  {}",
                        r.id, r.card_number, r.counter, r.kind, r.base_counter, r.pages, r.created_at, r.state
                    );
                }
            }
        }
        VaultCommand::Show { id } => {
            let row = vault
                .backup_row(id)?
                .ok_or_else(|| Error::Usage(format!("no backup {id} in the vault")))?;
            let chain = vault.chain_to(&row)?;
            // The issuer domain generation whose cards open it (the header says).
            let domain = cardvault_proto::backup::parse_header(&vault.backup_header(id)?).map(|h| h.domain);
            if ctx.json {
                let domain = domain
                    .map(|d| serde_json::json!({ "id": cardvault_proto::to_hex(&d.id), "generation": d.generation }));
                print_json(&serde_json::json!({ "backup": row, "chain": chain, "domain": domain }));
            } else {
                println!("backup           {}", row.id);
                println!("card             {}", row.card_number);
                println!("counter          {}", row.counter);
                println!("created          {}", row.created_at);
                if row.kind == cardvault_proto::backup::BackupKind::Differential {
                    println!(
                        "kind             {} (changes since backup #{})",
                        row.kind, row.base_counter
                    );
                } else {
                    println!("kind             {}", row.kind);
                }
                println!(
                    "pages            {} of {} ({} bytes each), {} records",
                    row.pages, row.page_count, row.page_size, row.record_count
                );
                println!(
                    "state            {}",
                    match row.state {
                        crate::vault::BackupState::Completed => "completed (the card acknowledged it)",
                        crate::vault::BackupState::Stored => "stored (the card has not acknowledged it)",
                    }
                );
                let counters: Vec<String> = chain.iter().map(|b| format!("#{}", b.counter)).collect();
                println!("restores as      {}", counters.join(" + "));
                if let Some(d) = domain {
                    println!("issuer domain    {d} (another card opens it only in this generation)");
                }
            }
        }
        VaultCommand::Verify => {
            let problems = vault.verify()?;
            if ctx.json {
                print_json(&serde_json::json!({ "ok": problems.is_empty(), "problems": problems }));
            } else if problems.is_empty() {
                println!("vault {} verifies", vault.path().display());
            } else {
                for p in &problems {
                    println!("{p}");
                }
            }
            if !problems.is_empty() {
                return Err(Error::Data(format!("the vault has {} problem(s)", problems.len())));
            }
        }
        VaultCommand::Export { card, holder, output } => {
            let cards = holder
                .map(|h| crate::workflow::holders::card_numbers(&vault, &h))
                .transpose()?;
            let ids: Vec<i64> = vault
                .list_backups(card.as_deref())?
                .iter()
                .filter(|b| cards.as_ref().is_none_or(|c| c.contains(&b.card_number)))
                .map(|b| b.id)
                .collect();
            let n = vault.export(&output, &ids)?;
            if ctx.json {
                print_json(&serde_json::json!({ "exported": n, "file": output }));
            } else {
                println!("{n} backup(s) exported to {}", output.display());
            }
        }
        VaultCommand::Import { file } => {
            let (n, present) = vault.import(&file)?;
            if ctx.json {
                print_json(&serde_json::json!({ "imported": n, "already_present": present }));
            } else {
                println!("{n} backup(s) imported, {present} already present");
            }
        }
    }
    Ok(())
}
