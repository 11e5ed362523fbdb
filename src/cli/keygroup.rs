//! `cardvault keygroup status | reset | release | public-key`

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeygroupCommand {
    /// Key group elements written, check value, main key origin, export state.
    Status,
    /// Clear elements 2..n; this destroys the card's main keys with them.
    Reset {
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
        /// Confirm that the main keys on the card are to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Issuer: forget the pending (never confirmed) duplicate target of a main card.
    Release {
        #[arg(long, value_name = "SOURCE", required_unless_present = "issuer")]
        admin_key: Option<SecretSource>,
        /// Issuer operator credentials (`cardvault issuer init`): SCP11a instead of the admin key.
        #[arg(long, value_name = "DIR", conflicts_with = "admin_key")]
        issuer: Option<PathBuf>,
    },
    /// Key service variant: set a main key made outside the card (hex P-256 private
    /// key), sent wrapped to a transport key the card authenticates with the admin key.
    SetKey {
        #[arg(long, value_name = "SOURCE")]
        admin_key: SecretSource,
        /// The key service's private key (hex): prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE")]
        key: SecretSource,
    },
    /// Write the card's encryption (public) key to a file, for `encrypt --recipient`.
    PublicKey {
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

pub fn run(ctx: &Ctx, c: KeygroupCommand) -> Result<()> {
    match c {
        KeygroupCommand::Status => {
            let (st, ks) = ctx.with_card(|card| Ok((card.status()?, card.key_state()?)))?;
            if ctx.json {
                let mut v = serde_json::to_value(&ks).expect("serializable");
                v["card_number"] = st.card_number.into();
                v["role"] = st.role.as_str().into();
                print_json(&v);
            } else {
                println!("card number     {} ({})", st.card_number, st.role);
                println!(
                    "key group       {} of {} elements written{}",
                    ks.elements_written.len(),
                    ks.group_size,
                    if ks.group_complete { ", complete" } else { "" }
                );
                println!("check value     {}", ks.check_value.as_deref().unwrap_or("-"));
                println!("main key        {}", ks.key_origin.map_or("none", |o| o.as_str()));
                if let Some(p) = &ks.public_key {
                    println!("encryption key  {p}");
                }
                if let Some(s) = &ks.source_card {
                    println!("imported from   {s}");
                }
                println!(
                    "duplicate       {}{} ({} take-outs){}",
                    ks.export.state,
                    ks.export
                        .target
                        .as_deref()
                        .map(|t| format!(" to {t}"))
                        .unwrap_or_default(),
                    ks.export.take_outs,
                    if ks.export.no_export_after_backup {
                        ", no export once backed up"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        KeygroupCommand::Reset { pin, yes } => {
            if !yes {
                return Err(Error::Usage(
                    "resetting the key group destroys the card's main keys; add --yes to confirm".into(),
                ));
            }
            let pin = pin.read("PIN")?;
            let number = ctx.with_card(|card| {
                card.verify_pin(&pin)?;
                card.reset_key_group()?;
                card.card_number()
            })?;
            audit(ctx, "key-group-reset", &number)?;
            report(ctx, "key group reset; main keys destroyed")
        }
        KeygroupCommand::Release { admin_key, issuer } => {
            let auth = super::pin::issuer_auth(issuer.as_deref(), admin_key.as_ref())?;
            let number = ctx.with_card(|card| {
                let n = card.card_number()?;
                card.issuer_authenticate(&auth, &n)?;
                card.release_duplicate()?;
                Ok(n)
            })?;
            audit(ctx, "duplicate-released", &number)?;
            report(ctx, "pending duplicate released")
        }
        KeygroupCommand::SetKey { admin_key, key } => {
            let admin = super::pin::admin_key(&admin_key)?;
            let hex = key.read("key service private key (hex)")?;
            let d = std::str::from_utf8(&hex)
                .ok()
                .and_then(|s| cardvault_proto::from_hex(s.trim()))
                .filter(|k| k.len() == 32)
                .map(zeroize::Zeroizing::new)
                .ok_or_else(|| Error::Usage("the key must be a 32-byte P-256 private key in hex".into()))?;
            let (number, public) = ctx.with_card(|card| {
                let n = card.card_number()?;
                card.admin_authenticate(&admin, &n)?;
                let p = card.set_service_key(&admin, &n, &d)?;
                Ok((n, p))
            })?;
            audit(ctx, "key-service-set", &number)?;
            report(
                ctx,
                &format!("main key set; encryption key {}", cardvault_proto::to_hex(&public)),
            )
        }
        KeygroupCommand::PublicKey { output } => {
            let key = ctx.with_card(|card| card.public_key())?;
            let key = key.ok_or_else(|| Error::Refused("the card has no readable encryption key".into()))?;
            std::fs::write(&output, format!("{}\n", cardvault_proto::to_hex(&key)))
                .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
            report(ctx, &format!("encryption key written to {}", output.display()))
        }
    }
}

fn audit(ctx: &Ctx, event: &str, card: &str) -> Result<()> {
    ctx.vault_or_create()?
        .audit(crate::vault::AuditEvent {
            event,
            card,
            peer: None,
            result: "ok",
            details: serde_json::json!({}),
        })
        .map(|_| ())
}

fn report(ctx: &Ctx, msg: &str) -> Result<()> {
    if ctx.json {
        print_json(&serde_json::json!({ "result": msg }));
    } else {
        println!("{msg}");
    }
    Ok(())
}
