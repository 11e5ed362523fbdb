//! `cardvault purse balance | challenge | credit | debit` and `cardvault authorize-load`

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use crate::signer::IssuerKeySource;
use crate::workflow::purse::{self, LoadAuthorizationFile, LoadRequest};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PurseCommand {
    /// Show the balance of a value application.
    Balance {
        /// Value application id in the card's application table.
        #[arg(long, default_value_t = 1)]
        app: u8,
    },
    /// Ask the card for a load challenge and write the request the issuer
    /// signs with `cardvault authorize-load`.
    Challenge {
        /// Value application id in the card's application table.
        #[arg(long, default_value_t = 1)]
        app: u8,
        /// Amount in the purse's units.
        amount: u32,
        /// Where to write the load request (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Add value: with the issuer's load authorization (`--authorization`),
    /// or in one step when the issuer key is at hand (`--issuer-key`, AMOUNT).
    Credit {
        /// Value application id in the card's application table.
        #[arg(long, default_value_t = 1)]
        app: u8,
        /// The amount (one-step load with --issuer-key).
        #[arg(required_unless_present = "authorization")]
        amount: Option<u32>,
        /// The load authorization written by `cardvault authorize-load`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["issuer_key", "amount"])]
        authorization: Option<PathBuf>,
        /// Issuer signing key: hex P-256 private scalar from prompt, env:VAR or
        /// file:PATH, or pkcs11:token=LABEL;object=LABEL (a PKCS#11 token key).
        #[arg(
            long,
            value_name = "SOURCE|URI",
            required_unless_present = "authorization",
            requires = "signer_cert"
        )]
        issuer_key: Option<IssuerKeySource>,
        /// The signer certificate (PEM) of --issuer-key, under the issuer root
        /// installed on the card.
        #[arg(long, value_name = "FILE", requires = "issuer_key")]
        signer_cert: Option<PathBuf>,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Take value.
    Debit {
        /// Value application id in the card's application table.
        #[arg(long, default_value_t = 1)]
        app: u8,
        /// Amount in the purse's units.
        amount: u32,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
}

#[derive(clap::Args, Debug)]
pub struct AuthorizeLoadArgs {
    /// The request file written by `purse challenge`.
    #[arg(long, value_name = "FILE")]
    request: PathBuf,
    /// Issuer signing key: hex P-256 private scalar from prompt, env:VAR or
    /// file:PATH, or pkcs11:token=LABEL;object=LABEL (a PKCS#11 token key).
    #[arg(long, value_name = "SOURCE|URI")]
    issuer_key: IssuerKeySource,
    /// The signer certificate (PEM) of --issuer-key, under the issuer root
    /// installed on the cards (`signer.pem` of `cardvault issuer init`).
    #[arg(long, value_name = "FILE")]
    signer_cert: PathBuf,
    /// File to write the signed load authorization to.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        return Err(Error::Usage(format!("{} already exists", path.display())));
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

pub fn run(ctx: &Ctx, c: PurseCommand) -> Result<()> {
    let (v, what) = match c {
        PurseCommand::Balance { app } => (ctx.with_card(|card| purse::balance(card, app))?, "balance"),
        PurseCommand::Challenge {
            app,
            amount,
            output,
            pin,
        } => {
            let pin = pin.read("PIN")?;
            let req = ctx.with_card(|card| purse::request_load(card, &pin, app, amount))?;
            write_new(&output, &serde_json::to_string_pretty(&req).expect("json"))?;
            if ctx.json {
                print_json(&req);
            } else {
                println!(
                    "load request written to {} (card {}, application {}, amount {}); \
                     the issuer signs it with `cardvault authorize-load`",
                    output.display(),
                    req.card_number,
                    req.app,
                    req.amount
                );
            }
            return Ok(());
        }
        PurseCommand::Credit {
            app,
            amount,
            authorization,
            issuer_key,
            signer_cert,
            pin,
        } => {
            let v = match (authorization, issuer_key.zip(signer_cert), amount) {
                (Some(path), _, _) => {
                    let auth: LoadAuthorizationFile = read_json(&path)?;
                    let pin = pin.read("PIN")?;
                    ctx.with_card(|card| purse::credit(card, &pin, &auth))?
                }
                (None, Some((key, cert)), Some(amount)) => {
                    let signer = super::backup::read_issuer_signer(ctx, &key, &cert)?;
                    let pin = pin.read("PIN")?;
                    ctx.with_card(|card| purse::credit_with_issuer_key(card, &pin, app, amount, &signer))?
                }
                _ => {
                    return Err(Error::Usage(
                        "purse credit needs --authorization FILE, or AMOUNT with --issuer-key".into(),
                    ))
                }
            };
            (v, "credited; balance")
        }
        PurseCommand::Debit { app, amount, pin } => {
            let pin = pin.read("PIN")?;
            (
                ctx.with_card(|card| purse::debit(card, &pin, app, amount))?,
                "debited; balance",
            )
        }
    };
    if ctx.json {
        print_json(&serde_json::json!({ "balance": v }));
    } else {
        println!("{what} {v}");
    }
    Ok(())
}

pub fn run_authorize(ctx: &Ctx, a: AuthorizeLoadArgs) -> Result<()> {
    let req: LoadRequest = read_json(&a.request)?;
    let signer = super::backup::read_issuer_signer(ctx, &a.issuer_key, &a.signer_cert)?;
    let auth = purse::sign_load(&req, &signer)?;
    write_new(&a.output, &serde_json::to_string_pretty(&auth).expect("json"))?;
    if ctx.json {
        print_json(&auth);
    } else {
        println!(
            "authorized: load of {} onto card {} application {} -> {}",
            req.amount,
            req.card_number,
            req.app,
            a.output.display()
        );
    }
    Ok(())
}
