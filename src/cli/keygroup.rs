//! `cardvault keygroup status | reset | release | destroy | set-key | public-key`

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use crate::workflow::keygroup;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeygroupCommand {
    /// Key group elements written, check value, main key origin, export state.
    Status {
        /// The holder PIN: the card shows the check value only after VERIFY.
        #[arg(long, value_name = "SOURCE")]
        pin: Option<SecretSource>,
    },
    /// Clear elements 2..n; this destroys the card's main keys with them.
    Reset {
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
        /// Confirm that the main keys on the card are to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Issuer: forget the duplicate target of a main card. Once a take-out
    /// has left the card this needs the target's receipt (`keygroup destroy`
    /// on the backup card); for a lost backup card, rotate the main key
    /// (`keygroup reset`) instead.
    Release {
        /// Issuer operator credentials (`cardvault issuer init`): the SCP11a issuer session.
        #[arg(long, value_name = "DIR")]
        issuer: PathBuf,
        /// The backup card's signed DESTROY KEY receipt with its signing
        /// certificate (the file `keygroup destroy` wrote).
        #[arg(long, value_name = "FILE")]
        receipt: Option<PathBuf>,
    },
    /// Backup card: destroy the key imported from a main card and write the
    /// receipt the issuer presents to release that main card's duplicate.
    Destroy {
        /// The main card whose key goes.
        #[arg(
            long,
            value_name = "NUMBER",
            required_unless_present = "holder",
            conflicts_with = "holder"
        )]
        source: Option<String>,
        /// As --source, for the holder's newest main card (member number,
        /// name or card number).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
        /// The main card's take-out count (`keygroup status` on it).
        #[arg(long)]
        counter: u32,
        /// File to write the card's destruction receipt to (for `keygroup release --receipt`).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Key service variant: set a main key made outside the card (hex P-256 private
    /// key), sent wrapped to a transport key the card makes in the issuer's SCP11a session.
    SetKey {
        /// Issuer operator credentials (`cardvault issuer init`): the SCP11a issuer session.
        #[arg(long, value_name = "DIR")]
        issuer: PathBuf,
        /// The key service's private key (hex): prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE")]
        key: SecretSource,
    },
    /// Write the card's encryption (public) key to a file, for `encrypt --recipient`.
    PublicKey {
        /// File to write the public key to (hex, one line).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

pub fn run(ctx: &Ctx, c: KeygroupCommand) -> Result<()> {
    match c {
        KeygroupCommand::Status { pin } => {
            let pin = pin.map(|p| p.read("PIN")).transpose()?;
            let (st, ks) = ctx.with_card(|card| {
                if let Some(pin) = &pin {
                    card.verify_pin(pin)?;
                }
                Ok((card.status()?, card.key_state()?))
            })?;
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
                let hidden = if ks.group_complete && pin.is_none() {
                    "- (shown with --pin)"
                } else {
                    "-"
                };
                println!("check value     {}", ks.check_value.as_deref().unwrap_or(hidden));
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
            let mut vault = ctx.vault_or_create()?;
            ctx.with_card(|card| keygroup::reset(card, &mut vault, &pin))?;
            report(ctx, "key group reset; main keys destroyed")
        }
        KeygroupCommand::Release { issuer, receipt } => {
            let auth = super::pin::issuer_auth(&issuer)?;
            let receipt = receipt.as_deref().map(read_receipt).transpose()?;
            let mut vault = ctx.vault_or_create()?;
            ctx.with_card(|card| keygroup::release(card, &mut vault, &auth, receipt.as_ref()))?;
            report(ctx, "pending duplicate released")
        }
        KeygroupCommand::Destroy {
            source,
            holder,
            counter,
            output,
            pin,
        } => {
            let pin = pin.read("PIN")?;
            if output.exists() {
                return Err(Error::Usage(format!("{} already exists", output.display())));
            }
            let mut vault = ctx.vault_or_create()?;
            let source = match (source, holder) {
                (Some(s), _) => s,
                (None, Some(h)) => crate::workflow::holders::newest_card(&vault, &h, "main")?,
                (None, None) => unreachable!("clap requires one"),
            };
            let done = ctx.with_card(|card| keygroup::destroy(card, &mut vault, &pin, &source, counter))?;
            let v = serde_json::json!({
                "version": RECEIPT_FILE_VERSION,
                "backup_card": done.backup_card,
                "source_card": done.source_card,
                "counter": done.receipt.counter,
                "receipt": cardvault_proto::to_hex(&done.receipt.encode()),
                "certificate": cardvault_proto::to_hex(&done.certificate),
            });
            // The key is gone from the card now: the receipt must not be lost
            // half-written, nor replace a file that appeared meanwhile.
            let f = cardvault_proto::fsutil::AtomicFile::create(&output)
                .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
            std::io::Write::write_all(
                &mut f.file(),
                serde_json::to_string_pretty(&v).expect("json").as_bytes(),
            )
            .and_then(|_| f.commit_new())
            .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
            report(
                ctx,
                &format!(
                    "key from card {source} destroyed; receipt written to {}",
                    output.display()
                ),
            )
        }
        KeygroupCommand::SetKey { issuer, key } => {
            let auth = super::pin::issuer_auth(&issuer)?;
            let hex = key.read("key service private key (hex)")?;
            let d = std::str::from_utf8(&hex)
                .ok()
                .and_then(|s| cardvault_proto::from_hex(s.trim()))
                .filter(|k| k.len() == 32)
                .map(zeroize::Zeroizing::new)
                .ok_or_else(|| Error::Usage("the key must be a 32-byte P-256 private key in hex".into()))?;
            let mut vault = ctx.vault_or_create()?;
            let (_, public) = ctx.with_card(|card| keygroup::set_service_key(card, &mut vault, &auth, &d))?;
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

/// Version of the `keygroup destroy` receipt file (docs/FORMATS.md).
const RECEIPT_FILE_VERSION: u64 = 2;

/// The receipt and certificate of a `keygroup destroy` file.
fn read_receipt(path: &std::path::Path) -> Result<keygroup::DestroyReceipt> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let bad = |what: &str| Error::Usage(format!("{}: {what}", path.display()));
    if v["version"].as_u64() != Some(RECEIPT_FILE_VERSION) {
        return Err(bad(&format!(
            "not a version {RECEIPT_FILE_VERSION} destroy receipt (written by `keygroup destroy`)"
        )));
    }
    let text_field = |k: &str| {
        v[k].as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("no {k}")))
    };
    let receipt = v["receipt"]
        .as_str()
        .and_then(cardvault_proto::from_hex)
        .and_then(|r| cardvault_proto::takeout::DestroyReceipt::parse(&r))
        .ok_or_else(|| {
            bad(&format!(
                "no {}-byte receipt",
                cardvault_proto::takeout::DestroyReceipt::LEN
            ))
        })?;
    let certificate = v["certificate"]
        .as_str()
        .and_then(cardvault_proto::from_hex)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("no certificate"))?;
    Ok(keygroup::DestroyReceipt {
        backup_card: text_field("backup_card")?,
        source_card: text_field("source_card")?,
        receipt,
        certificate,
    })
}

fn report(ctx: &Ctx, msg: &str) -> Result<()> {
    if ctx.json {
        print_json(&serde_json::json!({ "result": msg }));
    } else {
        println!("{msg}");
    }
    Ok(())
}
