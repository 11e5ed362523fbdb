//! `cardvault safe init | serve | list | release | verify`: the electronic safe.

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::safe::{self, Safe, SafeAddress, SafeClient};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
// One command per run: the size of the largest variant (release's
// options) does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SafeCommand {
    /// Make a safe in a directory: its store (SQLite, WAL), its signing key
    /// (0600) and its certificate signed by the issuer root, so that cards
    /// of that issuer trust its registration certificates.
    Init {
        /// Directory of the new safe.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The issuer directory (`cardvault issuer init`): root.pem and root-key.pem.
        #[arg(long, value_name = "DIR")]
        issuer: PathBuf,
    },
    /// Serve a safe over HTTP until stopped; prints `listening on ADDR`.
    Serve {
        /// The safe's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Address to listen on (127.0.0.1:0 picks a free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7800")]
        listen: String,
    },
    /// The safe's ledger: every deposit by counter, with its state.
    List {
        /// A safe directory or an http:// address.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
    },
    /// Release a delivery its card never accepted (the card was lost
    /// first): the issuer signs a cancellation naming the item (the safe's
    /// counter), the card and the delivery's challenge; the safe stores the
    /// item again for another card, and refuses that delivery's receipt.
    Release {
        /// A safe directory or an http:// address.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
        /// The item's counter in the safe's ledger (`safe list`).
        #[arg(long, value_name = "N")]
        counter: u64,
        /// The card the stuck delivery is addressed to (must match the ledger).
        #[arg(
            long,
            value_name = "CARD",
            required_unless_present = "holder",
            conflicts_with = "holder"
        )]
        card: Option<String>,
        /// As --card, for the holder's newest lost main card (member number,
        /// name or card number; the vault's holder records).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
        /// The issuer's signing key (prompt, env:VAR, file:PATH or pkcs11: URI).
        #[arg(long, value_name = "SOURCE|URI")]
        issuer_key: crate::signer::IssuerKeySource,
        /// The signer certificate (PEM) of --issuer-key.
        #[arg(long, value_name = "FILE")]
        signer_cert: PathBuf,
    },
    /// Check every ledger row: certificates, stored deposits, receipts, counter.
    Verify {
        /// The safe's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(ctx: &Ctx, c: SafeCommand) -> Result<()> {
    match c {
        SafeCommand::Release {
            safe,
            counter,
            card,
            holder,
            issuer_key,
            signer_cert,
        } => {
            let card = match (card, holder) {
                (Some(c), _) => c,
                (None, Some(h)) => crate::workflow::holders::lost_main_card(&ctx.vault()?, &h)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let signer = super::backup::read_issuer_signer(ctx, &issuer_key, &signer_cert)?;
            let mut client = SafeClient::connect(&safe)?;
            let refused = |r| Error::SafeRefused(r);
            let info = client.info()?.map_err(refused)?;
            let rows = client.list()?.map_err(refused)?;
            let row = rows
                .iter()
                .find(|r| r.counter == counter)
                .ok_or(Error::SafeRefused(safe::SafeRefusal::UnknownItem(counter)))?;
            let challenge = match (&row.state[..], &row.target_card, &row.challenge) {
                ("delivering", Some(t), Some(c)) if *t == card => c.clone(),
                _ => return Err(Error::SafeRefused(safe::SafeRefusal::NotDelivering(counter, card))),
            };
            let (id, ch) = match (
                cardvault_proto::from_hex(&info.safe_id),
                cardvault_proto::from_hex(&challenge),
            ) {
                (Some(i), Some(c)) => (i, c),
                _ => return Err(Error::Data("the safe's id or challenge is not hex".into())),
            };
            let sig = signer.sign(&safe::release_message(&id, counter, &card, &ch))?;
            let entry = client
                .release(&safe::ReleaseRequest {
                    counter,
                    card_number: card,
                    challenge,
                    signature: cardvault_proto::to_hex(&sig),
                    signer_certificate: cardvault_proto::to_hex(signer.certificate_der()),
                })?
                .map_err(refused)?;
            if ctx.json {
                print_json(&entry);
            } else {
                println!(
                    "item {} (counter {}) is {} again",
                    entry.item_id, entry.counter, entry.state
                );
            }
        }
        SafeCommand::Init { dir, issuer } => {
            let r = safe::init(&dir, &issuer)?;
            if ctx.json {
                print_json(&r);
            } else {
                println!("safe {} in {}", r.safe_id, r.dir.display());
                println!("certificate {} (signed by the issuer root)", r.certificate.display());
            }
        }
        SafeCommand::Serve { dir, listen } => {
            let s = Safe::open(&dir)?;
            let json = ctx.json;
            safe::http::serve(s, &listen, |addr| {
                if json {
                    print_json(&serde_json::json!({ "listening": addr.to_string() }));
                } else {
                    println!("listening on {addr}");
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
            })?;
        }
        SafeCommand::List { safe } => {
            let mut client = SafeClient::connect(&safe)?;
            let rows = client.list()?.map_err(Error::SafeRefused)?;
            if ctx.json {
                print_json(&rows);
            } else {
                for r in &rows {
                    let to = r.target_card.as_deref().map(|t| format!(" to {t}")).unwrap_or_default();
                    println!(
                        "{:>6}  card {}  item {}  {} {} {}  {}{to}",
                        r.counter,
                        r.card_number,
                        r.item_id,
                        r.kind.as_deref().unwrap_or("-"),
                        r.name.as_deref().unwrap_or("-"),
                        r.amount.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                        r.state
                    );
                }
                println!("{} items", rows.len());
            }
        }
        SafeCommand::Verify { dir } => {
            let s = Safe::open(&dir)?;
            let problems = s.verify()?;
            if ctx.json {
                print_json(&serde_json::json!({ "ok": problems.is_empty(), "problems": problems }));
            } else if problems.is_empty() {
                println!(
                    "safe {} verified: every certificate, deposit and receipt checks",
                    dir.display()
                );
            } else {
                for p in &problems {
                    println!("{p}");
                }
            }
            if !problems.is_empty() {
                return Err(Error::Data(format!("the safe has {} problems", problems.len())));
            }
        }
    }
    Ok(())
}
