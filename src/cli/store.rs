//! `cardvault store request | countersign | authorize | apply | list`: the
//! storing authorization exchange (workflow/storing.rs), one step per
//! command, each reading the file the step before wrote.

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::registrar::{self, DataCertificateFile};
use crate::secret::SecretSource;
use crate::workflow::storing::{self, StoringFile};
use cardvault_proto::storing::{Operation, Party};
use openssl::x509::X509;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// The holder's card signs a storing request for an application (with a
    /// fresh card challenge); the parties countersign the file it writes.
    Request {
        /// The application id.
        #[arg(long)]
        app: u8,
        /// Store or delete.
        #[arg(long, value_name = "OP")]
        op: Operation,
        /// The data to store (for a delete: the data to delete, when the vault
        /// has no record of it).
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// The data's certificate (SDCI, `registrar certify --data`): the
        /// data is checked against it first.
        #[arg(long, value_name = "FILE", requires = "data_registrar")]
        data_cert: Option<PathBuf>,
        /// The data registrar root that signed --data-cert.
        #[arg(long, value_name = "ROOT.pem")]
        data_registrar: Option<PathBuf>,
        /// Where to write the request (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// The first party checks the card's request and countersigns it (SAR).
    /// The card's certificate must be under a trusted issuer root (--trust).
    Countersign {
        /// Who countersigns: issuer or provider.
        #[arg(long = "as", value_name = "PARTY")]
        party: Party,
        /// The party's directory (`provider init`, certified by its registrar).
        #[arg(long, value_name = "DIR")]
        key: PathBuf,
        /// The request file (`store request`).
        #[arg(value_name = "REQUEST")]
        input: PathBuf,
        /// Where to write the SAR (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// The other party checks the SAR and signs the storing authorization (SA).
    Authorize {
        /// Who signs the authorization: the party that did not countersign.
        #[arg(long = "as", value_name = "PARTY")]
        party: Party,
        /// The party's directory (`provider init`, certified by its registrar).
        #[arg(long, value_name = "DIR")]
        key: PathBuf,
        /// The issuer registrar root (default: issuer-registrar.pem in --key DIR).
        #[arg(long, value_name = "ROOT.pem")]
        issuer_registrar: Option<PathBuf>,
        /// The data registrar root (default: data-registrar.pem in --key DIR).
        #[arg(long, value_name = "ROOT.pem")]
        data_registrar: Option<PathBuf>,
        /// The SAR file (`store countersign`).
        #[arg(value_name = "SAR")]
        input: PathBuf,
        /// Where to write the storing authorization (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Present the authorization (SA, or a provider's SAR where the
    /// application allows the provider alone) to the card, and record it.
    Apply {
        /// The storing authorization (SA), or the provider's SAR where it alone may authorize.
        #[arg(long, value_name = "FILE")]
        authorization: PathBuf,
        /// The data to store.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// What is stored on which card, by whom, under which authorization.
    List {
        /// Only this card (default with -r: the card in the reader).
        #[arg(long, value_name = "NUMBER", conflicts_with = "holder")]
        card: Option<String>,
        /// Only this holder's cards (member number, name or card number).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn read_file(path: &Path) -> Result<StoringFile> {
    serde_json::from_slice(&read(path)?).map_err(|e| {
        Error::Usage(format!(
            "{} is not a storing file (store request / countersign / authorize): {e}",
            path.display()
        ))
    })
}

fn write_new(path: &Path, f: &impl serde::Serialize) -> Result<()> {
    if path.exists() {
        return Err(Error::Usage(format!("{} already exists", path.display())));
    }
    let text = serde_json::to_string_pretty(f).expect("json");
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn credentials(dir: &Path, party: Party) -> Result<storing::PartyCredentials> {
    let c = registrar::load_party(dir)?;
    if c.party != party {
        return Err(Error::Usage(format!(
            "{} holds the {}'s key, not the {party}'s",
            dir.display(),
            c.party
        )));
    }
    Ok(c)
}

fn trusted(ctx: &Ctx) -> Result<Vec<X509>> {
    if ctx.trust.is_empty() {
        return Err(Error::Usage(
            "no trusted issuer root to check the card's certificate: give --trust ROOT.pem".into(),
        ));
    }
    Ok(ctx.trust.roots().to_vec())
}

fn written(ctx: &Ctx, f: &StoringFile, output: &Path, next: &str) {
    if ctx.json {
        print_json(f);
    } else {
        println!(
            "{} of card {}, application {}, {} {} bytes (SHA-256 {}) -> {}",
            f.step,
            f.card_number,
            f.application,
            f.operation,
            f.data_size,
            f.data_hash,
            output.display()
        );
        for s in &f.signers {
            println!("  signed by the {} '{}'", s.party, s.name);
        }
        println!("next: {next}");
    }
}

pub fn run(ctx: &Ctx, c: StoreCommand) -> Result<()> {
    match c {
        StoreCommand::Request {
            app,
            op,
            data,
            data_cert,
            data_registrar,
            output,
            pin,
        } => {
            if output.exists() {
                return Err(Error::Usage(format!("{} already exists", output.display())));
            }
            let data = data.map(|p| read(&p)).transpose()?;
            let sdi = match (op, &data) {
                (Operation::Store, None) => return Err(Error::Usage("storing needs the data (--data FILE)".into())),
                (Operation::Store, Some(d)) => {
                    let cert = match (&data_cert, &data_registrar) {
                        (Some(c), Some(r)) => {
                            let f: DataCertificateFile = serde_json::from_slice(&read(c)?)
                                .map_err(|e| Error::Usage(format!("{}: not a data certificate: {e}", c.display())))?;
                            let root =
                                X509::from_pem(&read(r)?).map_err(|e| Error::Usage(format!("{}: {e}", r.display())))?;
                            Some((f.certificate()?, root))
                        }
                        _ => None,
                    };
                    storing::store_info(app, d, cert.as_ref().map(|(c, r)| (c, r)))?
                }
                (Operation::Delete, Some(d)) => storing::delete_info_for(app, d)?,
                (Operation::Delete, None) => {
                    let vault = ctx.vault()?;
                    let number = ctx.with_card(|card| card.card_number())?;
                    storing::delete_info(&vault, &number, app)?
                }
            };
            let pin = pin.read("PIN")?;
            let f = ctx.with_card(|card| storing::request(card, &pin, &sdi))?;
            write_new(&output, &f)?;
            written(
                ctx,
                &f,
                &output,
                "the issuer or the provider runs `cardvault store countersign`",
            );
            Ok(())
        }
        StoreCommand::Countersign {
            party,
            key,
            input,
            output,
        } => {
            let me = credentials(&key, party)?;
            let f = storing::countersign(&read_file(&input)?, &me, &trusted(ctx)?)?;
            write_new(&output, &f)?;
            written(
                ctx,
                &f,
                &output,
                &format!(
                    "the {} runs `cardvault store authorize` (or, where the application allows the provider alone, `store apply`)",
                    party.other()
                ),
            );
            Ok(())
        }
        StoreCommand::Authorize {
            party,
            key,
            issuer_registrar,
            data_registrar,
            input,
            output,
        } => {
            let me = credentials(&key, party)?;
            let (ir, dr) = (
                issuer_registrar.unwrap_or_else(|| key.join("issuer-registrar.pem")),
                data_registrar.unwrap_or_else(|| key.join("data-registrar.pem")),
            );
            for (p, opt) in [(&ir, "--issuer-registrar"), (&dr, "--data-registrar")] {
                if !p.exists() {
                    return Err(Error::Usage(format!(
                        "no registrar root at {}: give it with {opt} ROOT.pem",
                        p.display()
                    )));
                }
            }
            let roots = registrar::load_roots(&ir, &dr)?;
            let f = storing::authorize(&read_file(&input)?, &me, &roots, &trusted(ctx)?)?;
            write_new(&output, &f)?;
            written(ctx, &f, &output, "the holder runs `cardvault store apply`");
            Ok(())
        }
        StoreCommand::Apply {
            authorization,
            data,
            pin,
        } => {
            let f = read_file(&authorization)?;
            let data = data.map(|p| read(&p)).transpose()?;
            let pin = pin.read("PIN")?;
            let mut vault = ctx.vault_or_create()?;
            let r = ctx.with_card(|card| storing::apply(card, &pin, &f, data.as_deref(), &mut vault))?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "card {} application {}: {} {} bytes (SHA-256 {}) done; recorded as storing {}",
                    r.card_number, r.application, r.operation, r.data_size, r.data_hash, r.record.id
                );
            }
            Ok(())
        }
        StoreCommand::List { card, holder } => {
            let rows = if let Some(h) = holder {
                let vault = ctx.vault()?;
                let cards = crate::workflow::holders::card_numbers(&vault, &h)?;
                let mut rows = vault.list_storing(None)?;
                rows.retain(|r| cards.contains(&r.card_number));
                rows
            } else {
                let card = match (card, &ctx.reader) {
                    (Some(c), _) => Some(c),
                    (None, Some(_)) => Some(ctx.with_card(|c| c.card_number())?),
                    (None, None) => None,
                };
                ctx.vault()?.list_storing(card.as_deref())?
            };
            if ctx.json {
                print_json(&rows);
                return Ok(());
            }
            if rows.is_empty() {
                println!("no storing records");
            }
            for r in rows {
                let signed: Vec<String> = [("issuer", &r.issuer), ("provider", &r.provider)]
                    .iter()
                    .filter_map(|(p, n)| n.as_ref().map(|n| format!("{p} '{n}'")))
                    .collect();
                println!(
                    "{}  card {}  app {}  {} {} bytes  sha256 {}  {}  signed by {} (first: {})  SA {}",
                    r.applied_at,
                    r.card_number,
                    r.application,
                    r.operation,
                    r.data_size,
                    &r.data_hash[..16.min(r.data_hash.len())],
                    r.data_cert_id.as_deref().unwrap_or("-"),
                    signed.join(" and "),
                    r.first_party,
                    r.sa_id
                        .as_deref()
                        .map(|s| &s[..16.min(s.len())])
                        .unwrap_or("none (provider alone)"),
                );
            }
            Ok(())
        }
    }
}
